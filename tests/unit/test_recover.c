#include <criterion/criterion.h>

#include "tokenwatch/recover.h"

typedef struct {
    uint32_t refused, accepted; /* the bounds the search starts with */
    uint32_t oldest;            /* the server accepts a start at or after this */
    uint32_t want;              /* the answer: the first whole second accepted */
    unsigned max_probes;
} bisect_case_t;

static const bisect_case_t bisect_cases[] = {
    /* DocumentDB: a 3 h retention that keeps 3 h 15 min; lost 5 h ago. */
    {1700000000u - 5 * 3600, 1700000000u - 3 * 3600, 1700000000u - 3 * 3600 - 900,
     1700000000u - 3 * 3600 - 900, 14},
    /* Thirty days down to one second. */
    {1700000000u - 30 * 86400, 1700000000u, 1700000000u - 12345, 1700000000u - 12345, 22},
    /* Already one second apart: nothing to ask. */
    {1700000000u, 1700000001u, 1700000001u, 1700000001u, 0},
    /* The oldest right after the refused bound. */
    {1000, 2000, 1001, 1001, 10},
};

Test(recover, bisection_finds_the_oldest_accepted_second)
{
    for (size_t k = 0; k < sizeof bisect_cases / sizeof bisect_cases[0]; k++) {
        const bisect_case_t *c = &bisect_cases[k];
        tw_bisect_t b;
        uint32_t probe;

        tw_bisect_init(&b, c->refused, c->accepted);
        while (tw_bisect_next(&b, &probe)) {
            cr_assert(probe > b.refused_t && probe < b.accepted_t, "case %zu", k);
            tw_bisect_answer(&b, probe, probe >= c->oldest);
        }
        cr_expect_eq(b.accepted_t, c->want, "case %zu: %u", k, b.accepted_t);
        cr_expect_leq(b.probes, c->max_probes, "case %zu: %u probes", k, b.probes);
    }
}

Test(recover, bisection_is_bounded)
{
    tw_bisect_t b;
    uint32_t probe;

    /* A server whose answers make no sense still ends the search. */
    tw_bisect_init(&b, 0, UINT32_MAX);
    while (tw_bisect_next(&b, &probe))
        tw_bisect_answer(&b, probe, b.probes % 2 == 0);
    cr_expect_leq(b.probes, TW_PROBE_MAX);
}

Test(recover, protected_environments_match_without_case)
{
    char prod[] = "prod", production[] = "production", live[] = "live", off[] = "none";
    char *list[] = {prod, production, live};
    char *none[] = {off};
    tw_error_t err;

    cr_expect(tw_env_protected("prod", list, 3));
    cr_expect(tw_env_protected("PROD", list, 3), "--environment PROD is still prod");
    cr_expect(tw_env_protected("Live", list, 3));
    cr_expect_not(tw_env_protected("stage", list, 3));
    cr_expect_not(tw_env_protected("none", none, 1), "--protect none protects nothing");
    cr_expect_not(tw_recover_confirmed("PROD", list, 3, NULL, &err));
    cr_expect(tw_recover_confirmed("PROD", list, 3, "PROD", &err));
}

Test(recover, the_missing_checkpoint_policy_defaults_by_environment)
{
    char prod[] = "prod";
    char *list[] = {prod};

    cr_expect_str_eq(tw_missing_checkpoint_policy(NULL, "prod", list, 1), "fail");
    cr_expect_str_eq(tw_missing_checkpoint_policy(NULL, "dev", list, 1), "now");
    cr_expect_str_eq(tw_missing_checkpoint_policy("oldest", "prod", list, 1), "oldest");
    cr_expect_str_eq(tw_missing_checkpoint_policy("now", "prod", list, 1), "now");
}

/* tw_start_resolve: each SPEC kind against what is known of the deployment. */
typedef struct {
    const char *spec;
    bool window_known;
    uint32_t oldest_t;
    bool probed;
    uint32_t probed_t;
    bool ok;
    bool resume_after;
    uint32_t at_t;
    bool clamped;
    bool was_probed;
} start_case_t;

Test(recover, a_spec_resolves_to_a_start_the_server_still_has)
{
    /* The deployment's cluster time is 5000:1 in every case. */
    static const start_case_t cases[] = {
        {"oldest", true, 1000, false, 0, true, false, 1000, false, false},
        {"oldest", false, 0, true, 1200, true, false, 1200, false, true},
        {"oldest", false, 0, false, 0, false, false, 0, false, false},
        {"now", true, 1000, false, 0, true, false, 5000, false, false},
        {"now", false, 0, false, 0, true, false, 5000, false, false},
        {"1970-01-01T00:33:20Z", true, 1000, false, 0, true, false, 2000, false, false},
        {"1970-01-01T00:08:20Z", true, 1000, false, 0, true, false, 1000, true, false},
        {"1970-01-01T00:08:20Z", false, 0, false, 0, true, false, 500, false, false},
        {"82000007D0000000012B0229296E04", true, 1000, false, 0, true, true, 2000, false,
         false},
        {"82000001F4000000012B0229296E04", true, 1000, false, 0, true, false, 1000, true,
         false},
        {"82000001F4000000012B0229296E04", false, 0, false, 0, true, true, 500, false,
         false},
        {"checkpoint", true, 1000, false, 0, false, false, 0, false, false},
    };

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const start_case_t *c = &cases[k];
        tw_spec_t spec;
        tw_start_facts_t facts = {c->window_known, {c->oldest_t, 1}, {5000, 1}, c->probed,
                                  {c->probed_t, 0}};
        tw_start_choice_t got;
        tw_error_t err;
        bool ok;

        cr_assert(tw_spec_parse(c->spec, &spec, &err), "%s: %s", c->spec, err.message);
        ok = tw_start_resolve(&spec, &facts, &got, &err);
        tw_spec_clear(&spec);
        cr_expect_eq(ok, c->ok, "case %zu (%s): %s", k, c->spec, ok ? "" : err.message);
        if (!ok || !c->ok)
            continue;
        cr_expect_eq(got.resume_after, c->resume_after, "case %zu: resumeAfter", k);
        cr_expect_eq(got.at.t, c->at_t, "case %zu: at %u", k, got.at.t);
        cr_expect_eq(got.clamped, c->clamped, "case %zu: clamped", k);
        cr_expect_eq(got.probed, c->was_probed, "case %zu: probed", k);
        cr_expect(got.has_time, "case %zu", k);
    }
}
