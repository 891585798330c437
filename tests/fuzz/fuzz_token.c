/* Resume tokens: JSON or hex text, their layout and cluster time, and back. */
#include <bson/bson.h>
#include <stdio.h>

#include "fuzz.h"
#include "tokenwatch/token.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_string(data, size);
    bson_t token;
    tw_ctime_t ct;
    char ctext[TW_CTIME_TEXT_MAX];
    bson_t raw;

    (void)tw_token_decode_hex(text, &ct, NULL);
    if (tw_ctime_parse(text, &ct, NULL))
        tw_ctime_format(ct, ctext);
    if (tw_token_parse(text, &token, NULL)) {
        const char *hex;
        char *json;

        (void)tw_token_layout(&token, &ct);
        (void)tw_token_data(&token, &hex, NULL);
        (void)tw_token_cluster_time(&token, &ct, NULL);
        (void)tw_token_cmp(&token, &token);
        json = tw_token_to_json(&token);
        /* What the checkpoint stores reads back as the same token. */
        if (json) {
            bson_t again;

            if (!tw_token_parse(json, &again, NULL)) {
                fprintf(stderr, "'%s' reads, its JSON '%s' does not\n", text, json);
                abort();
            }
            if (!bson_equal(&token, &again)) {
                fprintf(stderr, "'%s' changes through its JSON '%s'\n", text, json);
                abort();
            }
            bson_destroy(&again);
        }
        bson_free(json);
        bson_destroy(&token);
    }
    /* The same bytes as a BSON token document (BinData _data and all). */
    if (bson_init_static(&raw, data, size) && bson_validate(&raw, 0, NULL)) {
        (void)tw_token_layout(&raw, &ct);
        (void)tw_token_cluster_time(&raw, &ct, NULL);
        (void)tw_token_cmp(&raw, &raw);
    }
    free(text);
    return 0;
}
