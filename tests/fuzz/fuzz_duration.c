/* Durations ("90s", "1h30m") and limits ("25%", "2h"), and their formatting. */
#include <stdio.h>

#include "fuzz.h"
#include "tokenwatch/duration.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_string(data, size);
    char out[TW_DURATION_TEXT_MAX];
    int64_t ms;
    tw_limit_t limit;

    if (tw_duration_parse(text, &ms, NULL)) {
        int64_t again = -1;

        /* "The shortest exact form": it reads back as the same duration. */
        tw_duration_format(ms, out);
        if (ms >= 0 && (!tw_duration_parse(out, &again, NULL) || again != ms)) {
            fprintf(stderr, "'%s' = %lld ms formats as '%s', which reads as %lld\n",
                    text, (long long)ms, out, (long long)again);
            abort();
        }
        tw_duration_words(ms, out);
    }
    if (tw_limit_parse(text, &limit, NULL) && limit.kind == TW_LIMIT_DURATION) {
        tw_duration_format(limit.ms, out);
        tw_duration_words(limit.ms, out);
    }
    /* Any 8 bytes as a number of milliseconds. */
    if (size >= sizeof ms) {
        memcpy(&ms, data, sizeof ms);
        tw_duration_format(ms, out);
        tw_duration_words(ms, out);
    }
    free(text);
    return 0;
}
