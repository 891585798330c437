#include <criterion/criterion.h>
#include <string.h>

#include "tokenwatch/spec.h"

typedef struct {
    const char *text;
    bool ok;
    tw_spec_kind_t kind;
    uint32_t t, i;
} spec_case_t;

static const spec_case_t spec_cases[] = {
    {"{\"_data\":\"8265536F00000000072B022C0100296E5A1004\"}", true, TW_SPEC_TOKEN,
     1699966720, 7},
    {"8265536F00000000072B022C0100296E5A1004", true, TW_SPEC_TOKEN, 1699966720, 7},
    {"8263A1F2C4000000012B", true, TW_SPEC_TOKEN, 0x63A1F2C4, 1},
    /* Amazon DocumentDB, bare and as JSON; any token as JSON. */
    {"015daf94f600000002010000000200009025", true, TW_SPEC_TOKEN, 0x5daf94f6, 2},
    {"{\"_data\":\"0167c8cbe60000000004\"}", true, TW_SPEC_TOKEN, 0x67c8cbe6, 0},
    {"{\"_data\":\"AeARBpQ/AAAA\"}", true, TW_SPEC_TOKEN, 0, 0},
    {"1700000000:1", true, TW_SPEC_TIME, 1700000000, 1},
    {"1700000000", true, TW_SPEC_TIME, 1700000000, 0},
    {"0", true, TW_SPEC_TIME, 0, 0},
    {"2026-11-21T05:00:00Z", true, TW_SPEC_TIME, 1795237200, 0},
    {"2026-11-21T05:00:00.750Z", true, TW_SPEC_TIME, 1795237200, 0},
    {"2026-11-21T06:00:00+01:00", true, TW_SPEC_TIME, 1795237200, 0},
    {"2026-11-21T04:30:00-00:30", true, TW_SPEC_TIME, 1795237200, 0},
    {"oldest", true, TW_SPEC_OLDEST, 0, 0},
    {"NOW", true, TW_SPEC_NOW, 0, 0},
    {"checkpoint", true, TW_SPEC_CHECKPOINT, 0, 0},
    {"", false, 0, 0, 0},
    {"yesterday", false, 0, 0, 0},
    {"2026-02-30T00:00:00Z", false, 0, 0, 0},
    {"2026-11-21", false, 0, 0, 0},
    {"2026-11-21T05:00:00", false, 0, 0, 0}, /* no zone: ambiguous */
    {"1700000000:", false, 0, 0, 0},
    {"99999999999", false, 0, 0, 0},
    {"-1", false, 0, 0, 0},
    {"8265536F", false, 0, 0, 0},
    {"{\"_data\": 5}", false, 0, 0, 0},
    {"{broken", false, 0, 0, 0},
    /* Every field of an RFC 3339 date within its range. */
    {"2026-11-21T05:00:00+99:99", false, 0, 0, 0},
    {"2026-11-21T05:00:00+24:00", false, 0, 0, 0},
    {"2026-11-21T05:00:00-05:60", false, 0, 0, 0},
    {"2026-11-21T05:00:00+23:59", true, TW_SPEC_TIME, 1795237200 - 86340, 0},
    {"2026-11-21T24:00:00Z", false, 0, 0, 0},
    {"2026-11-21T05:60:00Z", false, 0, 0, 0},
    {"2026-11-21T05:00:61Z", false, 0, 0, 0},
    {"2026-02-29T00:00:00Z", false, 0, 0, 0},
    {"2028-02-29T00:00:00Z", true, TW_SPEC_TIME, 1835395200, 0},
    {"2026-04-31T00:00:00Z", false, 0, 0, 0},
    {"2026-13-01T00:00:00Z", false, 0, 0, 0},
    {"2026-00-10T00:00:00Z", false, 0, 0, 0},
    {"2026-11-00T00:00:00Z", false, 0, 0, 0},
};

Test(spec, parses_every_form)
{
    for (size_t k = 0; k < sizeof spec_cases / sizeof spec_cases[0]; k++) {
        const spec_case_t *c = &spec_cases[k];
        tw_spec_t spec;
        tw_error_t err;
        bool ok = tw_spec_parse(c->text, &spec, &err);

        cr_expect_eq(ok, c->ok, "'%s': ok=%d (%s)", c->text, ok,
                     ok ? "" : err.message);
        if (!ok || !c->ok)
            continue;
        cr_expect_eq(spec.kind, c->kind, "'%s': kind %s", c->text,
                     tw_spec_kind_name(spec.kind));
        cr_expect_eq(spec.time.t, c->t, "'%s': t=%u", c->text, spec.time.t);
        cr_expect_eq(spec.time.i, c->i, "'%s': i=%u", c->text, spec.time.i);
        tw_spec_clear(&spec);
    }
}

Test(spec, garbage_lists_the_forms)
{
    tw_spec_t spec;
    tw_error_t err;

    cr_assert_not(tw_spec_parse("last tuesday", &spec, &err));
    cr_expect(strstr(err.message, "last tuesday") != NULL, "%s", err.message);
    cr_expect(strstr(err.message, "T:I") != NULL, "%s", err.message);
    cr_expect(strstr(err.message, "RFC 3339") != NULL, "%s", err.message);
    cr_expect(strstr(err.message, "oldest") != NULL, "%s", err.message);
}

/* A date with a field out of range says which field, not "not a SPEC". */
Test(spec, a_date_out_of_range_names_the_field)
{
    static const struct {
        const char *text;
        const char *field;
    } cases[] = {
        {"2026-11-21T05:00:00+99:99", "offset"}, {"2026-11-21T05:00:00-05:60", "offset"},
        {"2026-11-21T24:00:00Z", "hour"},        {"2026-11-21T05:60:00Z", "minute"},
        {"2026-11-21T05:00:61Z", "second"},      {"2026-02-30T00:00:00Z", "day"},
        {"2026-13-01T00:00:00Z", "month"},
    };

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        tw_spec_t spec;
        tw_error_t err;

        cr_expect_not(tw_spec_parse(cases[k].text, &spec, &err), "%s", cases[k].text);
        cr_expect(strstr(err.message, cases[k].field) != NULL, "%s: %s", cases[k].text,
                  err.message);
        cr_expect(strstr(err.message, cases[k].text) != NULL, "%s", err.message);
    }
}

/* Found by fuzz_spec: a zeroed spec, or one whose parse failed, reads as
 * kind TW_SPEC_TOKEN (0), and tw_spec_clear destroyed a token never made. */
Test(spec, clear_is_safe_after_a_failed_parse_and_when_zeroed)
{
    static const char *const bad[] = {"", "garbage", "{not json", "82zz", NULL};
    tw_spec_t spec;

    for (size_t k = 0; bad[k]; k++) {
        cr_expect_not(tw_spec_parse(bad[k], &spec, NULL), "%s", bad[k]);
        tw_spec_clear(&spec);
    }
    memset(&spec, 0, sizeof spec);
    tw_spec_clear(&spec);
    tw_spec_clear(NULL);
}
