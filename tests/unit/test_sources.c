/* What a --guard value names (tw_source_parse is pure). */
#include <criterion/criterion.h>
#include <string.h>

#include "tokenwatch/sources.h"

typedef struct {
    const char *spec;
    bool ok;
    tw_source_kind_t kind;
    const char *shown; /* NULL: the spec */
} source_case_t;

Test(sources, parse_table)
{
    static const source_case_t cases[] = {
        {"billing:resume-token", true, TW_SOURCE_KEY, NULL},
        {"tokenwatch:{orders}:checkpoint", true, TW_SOURCE_KEY, NULL},
        {"metadata:debezium:*", true, TW_SOURCE_GLOB, NULL},
        {"oplogtoredis::lastProcessedEntry.?", true, TW_SOURCE_GLOB, NULL},
        {"http://connect:8083/connectors/orders", true, TW_SOURCE_CONNECT, NULL},
        {"http://connect:8083/connectors/orders/", true, TW_SOURCE_CONNECT,
         "http://connect:8083/connectors/orders"},
        {"HTTPS://admin:s3cr3t@connect:8443/connectors/orders", true, TW_SOURCE_CONNECT,
         "HTTPS://admin:***@connect:8443/connectors/orders"},
        {"http://connect:8083/", false, TW_SOURCE_KEY, NULL},
        {"http://connect:8083/connectors/", false, TW_SOURCE_KEY, NULL},
        {"http://connect:8083/connectors/a/b", false, TW_SOURCE_KEY, NULL},
        {"monstache:default", true, TW_SOURCE_MONSTACHE, NULL},
        {"monstache:cfg/default", true, TW_SOURCE_MONSTACHE, NULL},
        {"monstache:", false, TW_SOURCE_KEY, NULL},
        {"monstache:cfg/", false, TW_SOURCE_KEY, NULL},
        {"", false, TW_SOURCE_KEY, NULL},
    };

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        tw_source_t s;
        tw_error_t err;
        bool ok = tw_source_parse(cases[k].spec, &s, &err);

        cr_expect_eq(ok, cases[k].ok, "case %zu (%s)", k, cases[k].spec);
        if (ok) {
            cr_expect_eq(s.kind, cases[k].kind, "case %zu", k);
            cr_expect_str_eq(s.shown, cases[k].shown ? cases[k].shown : cases[k].spec,
                             "case %zu", k);
        } else {
            cr_expect(strstr(err.message, "s3cr3t") == NULL, "never the password");
        }
        tw_source_release(&s);
    }
}

Test(sources, a_monstache_guard_names_its_database)
{
    tw_source_t s;

    cr_assert(tw_source_parse("monstache:cfg/app", &s, NULL));
    cr_expect_str_eq(s.db, "cfg");
    cr_expect_str_eq(s.name, "app");
    tw_source_release(&s);
    cr_assert(tw_source_parse("monstache:app", &s, NULL));
    cr_expect_str_eq(s.db, "monstache");
    tw_source_release(&s);
    tw_source_release(NULL);
}

Test(sources, a_refused_url_never_shows_its_password)
{
    tw_source_t s;
    tw_error_t err;

    cr_expect(!tw_source_parse("http://u:hunter2@h/nothing", &s, &err));
    cr_expect(strstr(err.message, "hunter2") == NULL, "%s", err.message);
    cr_expect(strstr(err.message, "***") != NULL, "%s", err.message);
}
