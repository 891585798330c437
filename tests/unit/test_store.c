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

/* CONFIG GET and INFO both refused (an ACL user without @dangerous): nothing
 * can be told, and that is the one risk, worded as such. */
Test(store, nothing_told_is_a_risk_of_its_own)
{
    tw_store_facts_t f;
    tw_store_risks_t r;
    char text[600];

    memset(&f, 0, sizeof f);
    f.from_info = true;
    f.refused = true;
    snprintf(f.refusal, sizeof f.refusal, "NOPERM this user has no permissions to run the "
                                          "'info' command");
    tw_store_assess(&f, &r);
    tw_store_risks_text(&r, text, sizeof text);
    cr_expect_eq(r.count, 1);
    cr_expect(r.unknown);
    cr_expect_str_eq(text, "CONFIG GET and INFO are both refused (NOPERM this user has no "
                           "permissions to run the 'info' command)");
    cr_expect_str_eq(tw_store_risks_headline(&r),
                     "cannot tell whether the Redis that holds the checkpoints keeps them");
    cr_expect(strstr(tw_store_risks_remedy(&r), "INFO") != NULL);
}

/* CONFIG answers but INFO is refused: the role is not known, which is said. */
Test(store, an_unread_role_is_a_note)
{
    tw_store_facts_t f;
    tw_store_risks_t r;

    memset(&f, 0, sizeof f);
    f.aof = TW_FACT_YES;
    f.rdb = TW_FACT_YES;
    snprintf(f.eviction, sizeof f.eviction, "noeviction");
    tw_store_assess(&f, &r);
    cr_expect_eq(r.count, 0);
    cr_expect(!r.unknown);
    cr_expect(strstr(r.note, "role cannot be read") != NULL, "%s", r.note);
    cr_expect_str_eq(tw_store_risks_headline(&r),
                     "the Redis that holds the checkpoints can lose them");
}
