#include <criterion/criterion.h>
#include <string.h>

#include "tokenwatch/redact.h"
#include "tokenwatch/redis.h"

typedef struct {
    const char *url;
    bool ok;
    const char *host;
    int port;
    const char *socket;
    const char *user;
    const char *password;
    int db;
} url_case_t;

static const url_case_t url_cases[] = {
    {"redis://127.0.0.1:6379/0", true, "127.0.0.1", 6379, NULL, NULL, NULL, 0},
    {"redis://cache", true, "cache", 6379, NULL, NULL, NULL, 0},
    {"redis://:s3cr%40t@cache:7000/3", true, "cache", 7000, NULL, NULL, "s3cr@t", 3},
    {"redis://app:pw@cache/1", true, "cache", 6379, NULL, "app", "pw", 1},
    {"redis://[::1]:6380", true, "::1", 6380, NULL, NULL, NULL, 0},
    {"unix:///run/redis.sock?db=2", true, NULL, 0, "/run/redis.sock", NULL, NULL, 2},
    {"rediss://cache:6379", false, NULL, 0, NULL, NULL, NULL, 0},
    {"http://cache", false, NULL, 0, NULL, NULL, NULL, 0},
    {"redis://cache:0", false, NULL, 0, NULL, NULL, NULL, 0},
    {"redis://cache/x", false, NULL, 0, NULL, NULL, NULL, 0},
    {"unix://", false, NULL, 0, NULL, NULL, NULL, 0},
    {"not a url", false, NULL, 0, NULL, NULL, NULL, 0},
};

static void expect_str(const char *got, const char *want, const char *what,
                       const char *url)
{
    if (!want)
        cr_expect_null(got, "%s: %s should be unset", url, what);
    else
        cr_expect(got && strcmp(got, want) == 0, "%s: %s is %s", url, what,
                  got ? got : "(null)");
}

Test(redis_url, parses_table)
{
    for (size_t k = 0; k < sizeof url_cases / sizeof url_cases[0]; k++) {
        const url_case_t *c = &url_cases[k];
        tw_redis_url_t u;
        tw_error_t err;
        bool ok = tw_redis_url_parse(c->url, &u, &err);

        cr_expect_eq(ok, c->ok, "%s: ok=%d %s", c->url, ok, ok ? "" : err.message);
        if (ok && c->ok) {
            expect_str(u.host, c->host, "host", c->url);
            expect_str(u.socket, c->socket, "socket", c->url);
            expect_str(u.user, c->user, "user", c->url);
            expect_str(u.password, c->password, "password", c->url);
            cr_expect_eq(u.port, c->port, "%s: port %d", c->url, u.port);
            cr_expect_eq(u.db, c->db, "%s: db %d", c->url, u.db);
        }
        tw_redis_url_release(&u);
    }
}

Test(redis_url, errors_never_quote_the_password)
{
    static const char *const bad[] = {"redis://:hunter2@cache:99999/0",
                                      "redis://:hunter2@cache/notadb",
                                      "rediss://:hunter2@cache"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        tw_redis_url_t u;
        tw_error_t err;

        cr_expect_not(tw_redis_url_parse(bad[k], &u, &err));
        cr_expect(strstr(err.message, "hunter2") == NULL, "%s", err.message);
    }
}

Test(redis_url, redaction_hides_passwords_only)
{
    static const struct {
        const char *in;
        const char *out;
    } cases[] = {
        {"redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"},
        {"redis://app:s3cret@h/0", "redis://app:***@h/0"},
        {"mongodb://u:p@ss@h1,h2/?replicaSet=rs0", "mongodb://u:***@h1,h2/?replicaSet=rs0"},
        {"mongodb://h1:27017/?replicaSet=rs0", "mongodb://h1:27017/?replicaSet=rs0"},
        {"mongodb://user@h1/", "mongodb://user@h1/"},
        {"https://hooks.example/x", "https://hooks.example/x"},
    };
    char out[256];

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        tw_redact_url(cases[k].in, out, sizeof out);
        cr_expect_str_eq(out, cases[k].out);
    }
}
