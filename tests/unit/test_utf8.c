#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "tokenwatch/utf8.h"

#define E_ACUTE "\xc3\xa9"         /* é, 2 bytes */
#define NICHI "\xe6\x97\xa5"       /* 日, 3 bytes */
#define EMOJI "\xf0\x9f\x98\x80"   /* U+1F600, 4 bytes */

Test(utf8, char_len_table)
{
    static const struct {
        const char *s;
        size_t n, len;
    } cases[] = {
        {"a", 1, 1},
        {E_ACUTE, 2, 2},
        {NICHI, 3, 3},
        {EMOJI, 4, 4},
        {E_ACUTE, 1, 0},       /* cut short */
        {NICHI, 2, 0},
        {EMOJI, 3, 0},
        {"\x80", 1, 0},        /* stray continuation */
        {"\xc0\xaf", 2, 0},    /* overlong '/' */
        {"\xe0\x80\xaf", 3, 0},/* overlong */
        {"\xed\xa0\x80", 3, 0},/* surrogate */
        {"\xf4\x90\x80\x80", 4, 0}, /* past U+10FFFF */
        {"\xff", 1, 0},
        {"\xc3(", 2, 0},
    };

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        cr_expect_eq(tw_utf8_char_len(cases[k].s, cases[k].n), cases[k].len, "case %zu", k);
}

Test(utf8, cut_table)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"", ""},
        {"abc", "abc"},
        {"ab" E_ACUTE, "ab" E_ACUTE},
        {"ab\xc3", "ab"},
        {"ab" NICHI, "ab" NICHI},
        {"ab\xe6\x97", "ab"},
        {"ab\xe6", "ab"},
        {"ab" EMOJI, "ab" EMOJI},
        {"ab\xf0\x9f\x98", "ab"},
        {"ab\xf0", "ab"},
        {"ab\xff", "ab\xff"},      /* not a cut: left to scrub */
        {"ab\x80", "ab\x80"},
        {"\xe6\x97", ""},
    };

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char buf[32];
        size_t n;

        snprintf(buf, sizeof buf, "%s", cases[k].in);
        n = tw_utf8_cut(buf, strlen(buf));
        cr_expect_str_eq(buf, cases[k].out, "case %zu", k);
        cr_expect_eq(n, strlen(cases[k].out), "case %zu", k);
    }
}

Test(utf8, fix_table)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"ok " NICHI E_ACUTE, "ok " NICHI E_ACUTE},
        {"a\xff" "b", "a?b"},
        {"a\xc3(b", "a?(b"},
        {"a\xed\xa0\x80" "b", "a???b"},
        {"tail " NICHI "\xe6\x97", "tail " NICHI},
        {"mid\xe6\x97 tail\xe6", "mid?? tail"},
    };

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char buf[32];

        snprintf(buf, sizeof buf, "%s", cases[k].in);
        tw_utf8_fix(buf);
        cr_expect_str_eq(buf, cases[k].out, "case %zu", k);
    }
}

Test(utf8, format_cuts_on_a_character_boundary)
{
    char buf[8];

    /* "ab" + 3 × 日 = 11 bytes; 7 fit, and the 7th is inside the second 日. */
    cr_expect_eq(tw_utf8_format(buf, sizeof buf, "ab%s", NICHI NICHI NICHI), 5);
    cr_expect_str_eq(buf, "ab" NICHI);
    cr_expect_eq(tw_utf8_format(buf, sizeof buf, "%s", "short"), 5);
    cr_expect_str_eq(buf, "short");
    for (size_t cap = 1; cap < 16; cap++) {
        char big[16];
        tw_utf8_format(big, cap, "%s", E_ACUTE E_ACUTE E_ACUTE E_ACUTE E_ACUTE);
        cr_expect_eq(strlen(big) % 2, 0, "cap %zu: only whole characters", cap);
    }
}
