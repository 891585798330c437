/* The config file parser (KEY=VALUE lines), from a buffer. */
#include "fuzz.h"
#include "tokenwatch/settings.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tw_settings_t s;

    memset(&s, 0, sizeof s);
    (void)tw_settings_load_text(&s, "fuzz.env", (const char *)data, size, NULL);
    tw_settings_release(&s);
    return 0;
}
