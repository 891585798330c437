#include <criterion/criterion.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>

#include "tokenwatch/mem.h"

Test(mem, malloc_zero_gives_a_pointer)
{
    void *p = tw_malloc(0);
    void *q = tw_calloc(0, 8);
    void *r = tw_calloc(8, 0);

    cr_assert_not_null(p);
    cr_assert_not_null(q);
    cr_assert_not_null(r);
    free(p);
    free(q);
    free(r);
}

Test(mem, calloc_zeroes)
{
    unsigned char *p = tw_calloc(64, 4);

    for (size_t i = 0; i < 256; i++)
        cr_assert_eq(p[i], 0);
    free(p);
}

Test(mem, strdup_copies)
{
    char *s = tw_strdup("token");
    char *e = tw_strdup("");

    cr_assert_str_eq(s, "token");
    cr_assert_str_eq(e, "");
    free(s);
    free(e);
}

Test(mem, strndup_cuts_and_stops_at_nul)
{
    static const struct {
        const char *s;
        size_t n;
        const char *want;
    } cases[] = {
        {"abcdef", 3, "abc"},
        {"abcdef", 6, "abcdef"},
        {"abc", 10, "abc"},    /* stops at the NUL */
        {"abc", 0, ""},
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *got = tw_strndup(cases[i].s, cases[i].n);

        cr_assert_str_eq(got, cases[i].want, "case %zu", i);
        free(got);
    }
}

Test(mem, realloc_grows_and_keeps_content)
{
    char *p = tw_realloc(NULL, 4);

    memcpy(p, "abc", 4);
    p = tw_realloc(p, 1 << 20);
    cr_assert_str_eq(p, "abc");
    p[(1 << 20) - 1] = 'x';
    p = tw_realloc(p, 0);
    cr_assert_not_null(p);
    free(p);
}

Test(mem, asprintf_formats)
{
    char *s = tw_asprintf("%s=%d", "n", 42);

    cr_assert_str_eq(s, "n=42");
    free(s);
}

Test(mem, malloc_huge_aborts, .signal = SIGABRT)
{
    volatile size_t n = SIZE_MAX - 16;

    free(tw_malloc(n));
}

Test(mem, calloc_overflow_aborts, .signal = SIGABRT)
{
    volatile size_t n = SIZE_MAX / 2;

    free(tw_calloc(n, 4));
}

Test(mem, realloc_huge_aborts, .signal = SIGABRT)
{
    volatile size_t n = SIZE_MAX - 16;
    char *p = tw_malloc(8);

    p = tw_realloc(p, n);
    free(p);
}

Test(mem, die_aborts, .signal = SIGABRT)
{
    tw_die("a table was not kept up to date");
}
