/* Redis URLs, and the redaction of any URL for the logs. */
#include "fuzz.h"
#include "tokenwatch/redact.h"
#include "tokenwatch/redis.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_string(data, size);
    tw_redis_url_t url;
    char out[512];
    char small[8];

    memset(&url, 0, sizeof url);
    (void)tw_redis_url_parse(text, &url, NULL);
    tw_redis_url_release(&url);
    tw_redact_url(text, out, sizeof out);
    tw_redact_url(text, small, sizeof small);
    tw_redact_url(text, small, 1);
    free(text);
    return 0;
}
