/* SPECs: a token, a cluster time, a date or a duration ago. */
#include "fuzz.h"
#include "tokenwatch/spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_string(data, size);
    tw_spec_t spec;

    memset(&spec, 0, sizeof spec);
    if (tw_spec_parse(text, &spec, NULL))
        (void)tw_spec_kind_name(spec.kind);
    tw_spec_clear(&spec);
    free(text);
    return 0;
}
