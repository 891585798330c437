/*
 * cmd_decode.c - `tokenwatch decode TOKEN`: the layout, cluster time and
 * date inside a resume token.
 */
#include "tokenwatch/cmd_decode.h"

#include <bson/bson.h>
#include <stdio.h>
#include <string.h>

#include "tokenwatch/run.h"
#include "tokenwatch/token.h"

int tw_cmd_decode(const tw_settings_t *s)
{
    bson_t token;
    tw_ctime_t ct;
    tw_error_t err;
    tw_token_layout_t layout;
    const char *data;
    char ct_text[TW_CTIME_TEXT_MAX], date[TW_UTC_TEXT_MAX];

    if (s->positional_count != 1) {
        fprintf(stderr, "tokenwatch decode: give exactly one token "
                        "({\"_data\":\"82...\"} or the bare hex)\n");
        return TW_EXIT_USAGE;
    }
    if (!tw_token_parse(s->positional[0], &token, &err)) {
        fprintf(stderr, "tokenwatch decode: %s\n", err.message);
        return TW_EXIT_USAGE;
    }
    layout = tw_token_layout(&token, &ct);
    if (layout == TW_LAYOUT_OPAQUE && tw_token_data(&token, &data, NULL) &&
        (strncmp(data, "82", 2) == 0 || strncmp(data, "01", 2) == 0) &&
        !tw_token_decode_hex(data, &ct, &err)) {
        /* A known type byte, but broken: say how. */
        fprintf(stderr, "tokenwatch decode: %s\n", err.message);
        bson_destroy(&token);
        return TW_EXIT_USAGE;
    }
    bson_destroy(&token);
    if (layout == TW_LAYOUT_OPAQUE) {
        printf("layout        opaque (no known layout: the token holds no cluster "
               "time tokenwatch can read; a checkpoint takes its time from the "
               "event or the server)\n");
        return TW_EXIT_OK;
    }
    tw_ctime_format(ct, ct_text);
    tw_utc_format(tw_ctime_wall_ms(ct), date);
    printf("layout        %s\ncluster_time  %s\ndate          %s\n",
           layout == TW_LAYOUT_MONGODB ? "mongodb (82: MongoDB KeyString)"
                                       : "documentdb (01: Amazon DocumentDB, as in AWS's examples)",
           ct_text, date);
    return TW_EXIT_OK;
}
