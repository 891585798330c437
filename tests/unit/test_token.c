#include <criterion/criterion.h>
#include <string.h>

#include "tokenwatch/token.h"

typedef struct {
    const char *hex;
    bool ok;
    uint32_t t, i;
    const char *reason; /* a word the error must contain */
} decode_case_t;

static const decode_case_t decode_cases[] = {
    {"82612E8513000000012B022C0100296E5A1004", true, 1630438675, 1, NULL},
    {"82612e8513000000012b02", true, 1630438675, 1, NULL}, /* lower case */
    {"8265536F0000000007", true, 1699966720, 7, NULL},     /* exactly 18 */
    {"82FFFFFFFFFFFFFFFF2B", true, 4294967295u, 4294967295u, NULL},
    {"8265536F00000000", false, 0, 0, "truncated"},
    {"", false, 0, 0, "truncated"},
    {"8365536F000000000701", false, 0, 0, "type byte"},
    {"0065536F000000000701", false, 0, 0, "type byte"},
    {"8265536F0000000007012", false, 0, 0, "odd"},
    {"8265536F00000000070G", false, 0, 0, "not hex"},
    {"82 5536F000000000701", false, 0, 0, "not hex"},
};

Test(token, decodes_table)
{
    for (size_t k = 0; k < sizeof decode_cases / sizeof decode_cases[0]; k++) {
        const decode_case_t *c = &decode_cases[k];
        tw_ctime_t ct = {0, 0};
        tw_error_t err;
        bool ok = tw_token_decode_hex(c->hex, &ct, &err);

        cr_expect_eq(ok, c->ok, "case %zu (%s): ok=%d", k, c->hex, ok);
        if (c->ok) {
            cr_expect_eq(ct.t, c->t, "case %zu: t=%u", k, ct.t);
            cr_expect_eq(ct.i, c->i, "case %zu: i=%u", k, ct.i);
        } else {
            cr_expect(strstr(err.message, c->reason) != NULL,
                      "case %zu: '%s' lacks '%s'", k, err.message, c->reason);
            cr_expect_eq(err.domain, TW_ERR_USAGE);
        }
    }
}

Test(token, parses_json_and_bare_hex_alike)
{
    bson_t a, b;
    tw_ctime_t ta, tb;

    cr_assert(tw_token_parse("{\"_data\": \"8265536F00000000072B0229296E04\"}", &a, NULL));
    cr_assert(tw_token_parse("8265536F00000000072B0229296E04", &b, NULL));
    cr_assert(tw_token_cluster_time(&a, &ta, NULL));
    cr_assert(tw_token_cluster_time(&b, &tb, NULL));
    cr_expect_eq(tw_ctime_cmp(ta, tb), 0);
    cr_expect_eq(tw_token_cmp(&a, &b), 0);
    bson_destroy(&a);
    bson_destroy(&b);
}

Test(token, rejects_json_without_data)
{
    bson_t t;
    tw_error_t err;

    cr_expect_not(tw_token_parse("{\"x\": 1}", &t, &err));
    cr_expect(strstr(err.message, "_data") != NULL, "%s", err.message);
    cr_expect_not(tw_token_parse("{not json", &t, &err));
    cr_expect(strstr(err.message, "JSON") != NULL, "%s", err.message);
}

Test(token, json_round_trip_keeps_the_token)
{
    bson_t t, back;
    char *json;

    cr_assert(tw_token_parse("8265536F00000000072B022C0100296E5A1004", &t, NULL));
    json = tw_token_to_json(&t);
    cr_assert(tw_token_parse(json, &back, NULL), "%s", json);
    cr_expect(bson_equal(&t, &back));
    bson_free(json);
    bson_destroy(&t);
    bson_destroy(&back);
}

Test(token, orders_by_time_then_data)
{
    static const char *const ordered[] = {
        "8265536F00000000012B0229296E04",         /* HWM at (t, 1) */
        "8265536F00000000012B022C0100296E5A1004", /* event at (t, 1) */
        "8265536F00000000022B0229296E04",         /* (t, 2) */
        "8265536F01000000002B0229296E04",         /* (t+1, 0) */
    };
    bson_t tokens[4];

    for (size_t k = 0; k < 4; k++)
        cr_assert(tw_token_parse(ordered[k], &tokens[k], NULL));
    for (size_t a = 0; a < 4; a++)
        for (size_t b = 0; b < 4; b++) {
            int want = a < b ? -1 : (a > b ? 1 : 0);
            cr_expect_eq(tw_token_cmp(&tokens[a], &tokens[b]), want,
                         "cmp(%zu, %zu)", a, b);
        }
    for (size_t k = 0; k < 4; k++)
        bson_destroy(&tokens[k]);
}

Test(token, formats_cluster_time_and_utc)
{
    char ct[TW_CTIME_TEXT_MAX], utc[TW_UTC_TEXT_MAX];
    tw_ctime_t parsed;
    tw_error_t err;

    tw_ctime_format((tw_ctime_t){1700000000, 12}, ct);
    cr_expect_str_eq(ct, "1700000000:12");
    cr_expect(tw_ctime_parse("1700000000:12", &parsed, NULL));
    cr_expect_eq(parsed.t, 1700000000u);
    cr_expect_eq(parsed.i, 12u);
    cr_expect_not(tw_ctime_parse("1700000000", &parsed, &err));
    cr_expect_not(tw_ctime_parse("4294967296:0", &parsed, &err));
    cr_expect_not(tw_ctime_parse("1:-1", &parsed, &err));
    tw_utc_format(1700000000000LL, utc);
    cr_expect_str_eq(utc, "2023-11-14T22:13:20Z");
    tw_utc_format(1700000000123LL, utc);
    cr_expect_str_eq(utc, "2023-11-14T22:13:20.123Z");
}
