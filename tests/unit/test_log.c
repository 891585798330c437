#include <bson/bson.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenwatch/log.h"

/* Logs one message through the real emitter and returns what it wrote. */
static char *emit(tw_log_format_t format, const char *value)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);

    cr_assert_not_null(f);
    tw_log_configure(TW_LOG_DEBUG, format, "orders-cdc", "prod", f);
    TW_ERROR("server said: %s", value);
    tw_log_configure(TW_LOG_INFO, TW_LOG_TEXT, "default", "dev", NULL);
    fclose(f);
    return out;
}

static size_t lines(const char *s)
{
    size_t n = 0;

    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static const char *const forged =
    "no such key\n2026-01-01T00:00:00.000Z info  [orders-cdc/prod] all is well";

Test(log, a_newline_in_a_value_does_not_forge_a_text_line)
{
    char *out = emit(TW_LOG_TEXT, forged);

    cr_expect_eq(lines(out), 1, "%s", out);
    cr_expect(strstr(out, "server said: no such key\\n2026-01-01T00:00:00.000Z info ") != NULL,
              "%s", out);
    free(out);
}

Test(log, control_bytes_in_text_lines_are_shown_escaped)
{
    static const struct {
        const char *in, *shown;
    } cases[] = {
        {"a\rb", "server said: a\\rb\n"},
        {"a\tb", "server said: a\\tb\n"},
        {"a\x1b[31mred", "server said: a\\x1b[31mred\n"},
        {"a\x7f" "b", "server said: a\\x7fb\n"},
        {"caf\xc3\xa9", "server said: caf\xc3\xa9\n"},
        {"bad \xff", "server said: bad ?\n"},
    };

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char *out = emit(TW_LOG_TEXT, cases[k].in);
        size_t n = strlen(out), m = strlen(cases[k].shown);

        cr_expect(n >= m && strcmp(out + n - m, cases[k].shown) == 0, "case %zu: %s", k, out);
        cr_expect_eq(lines(out), 1, "case %zu", k);
        free(out);
    }
}

Test(log, json_lines_escape_newlines_and_stay_json)
{
    char *out = emit(TW_LOG_JSON, forged);
    bson_t doc;
    bson_iter_t it;

    cr_expect_eq(lines(out), 1, "%s", out);
    cr_assert(bson_init_from_json(&doc, out, -1, NULL), "%s", out);
    cr_expect(bson_iter_init_find(&it, &doc, "msg") &&
              strncmp(bson_iter_utf8(&it, NULL), "server said: no such key\n2026", 29) == 0,
              "%s", out);
    bson_destroy(&doc);
    free(out);
}

Test(log, json_lines_keep_a_message_with_bytes_that_are_not_utf8)
{
    char *out = emit(TW_LOG_JSON, "bad \xff byte");

    cr_expect(strstr(out, "\"msg\":\"server said: bad ? byte\"") != NULL, "%s", out);
    free(out);
}

Test(log, a_long_line_is_cut_on_a_character_boundary)
{
    char value[6000];
    char *out;

    /* Both parities, so some cap falls inside a character. */
    for (size_t odd = 0; odd < 2; odd++) {
        memset(value, 'x', odd);
        for (size_t k = odd; k + 3 < sizeof value; k += 2)
            memcpy(value + k, "\xc3\xa9", 2);
        value[sizeof value - 3 + odd] = '\0';
        out = emit(TW_LOG_JSON, value);
        cr_expect_eq(lines(out), 1);
        cr_expect(bson_utf8_validate(out, strlen(out), false), "valid UTF-8 (%zu)", odd);
        free(out);
        out = emit(TW_LOG_TEXT, value);
        cr_expect_eq(lines(out), 1);
        cr_expect(bson_utf8_validate(out, strlen(out), false), "valid UTF-8 (%zu)", odd);
        free(out);
    }
}
