#include <criterion/criterion.h>
#include <string.h>

#include "tokenwatch/store.h"

typedef struct {
    tw_fact_t aof, rdb, replica;
    const char *eviction;
    size_t risks;
    const char *has; /* in the text, or NULL */
    bool note;
} store_case_t;

Test(store, what_can_lose_a_checkpoint)
{
    static const store_case_t cases[] = {
        {TW_FACT_YES, TW_FACT_NO, TW_FACT_NO, "noeviction", 0, NULL, false},
        {TW_FACT_NO, TW_FACT_YES, TW_FACT_NO, "noeviction", 0, NULL, false},
        {TW_FACT_NO, TW_FACT_NO, TW_FACT_NO, "noeviction", 1, "no persistence", false},
        {TW_FACT_YES, TW_FACT_NO, TW_FACT_NO, "allkeys-lru", 1, "allkeys-lru", false},
        {TW_FACT_YES, TW_FACT_NO, TW_FACT_NO, "volatile-lru", 0, NULL, false},
        {TW_FACT_YES, TW_FACT_NO, TW_FACT_YES, "noeviction", 1, "a replica", false},
        {TW_FACT_NO, TW_FACT_NO, TW_FACT_YES, "allkeys-random", 3, "; ", false},
        /* INFO only: the save rules cannot be read. */
        {TW_FACT_NO, TW_FACT_UNKNOWN, TW_FACT_NO, "noeviction", 0, NULL, true},
    };

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        tw_store_facts_t f;
        tw_store_risks_t r;
        char text[600];

        memset(&f, 0, sizeof f);
        f.aof = cases[k].aof;
        f.rdb = cases[k].rdb;
        f.replica = cases[k].replica;
        snprintf(f.eviction, sizeof f.eviction, "%s", cases[k].eviction);
        tw_store_assess(&f, &r);
        tw_store_risks_text(&r, text, sizeof text);
        cr_expect_eq(r.count, cases[k].risks, "case %zu: %s", k, text);
        if (cases[k].has)
            cr_expect(strstr(text, cases[k].has) != NULL, "case %zu: %s", k, text);
        cr_expect_eq(r.note[0] != '\0', cases[k].note, "case %zu: note '%s'", k, r.note);
    }
}
