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
    /* A path that names no file: a directory, or the root itself. */
    {"unix:///", false, NULL, 0, NULL, NULL, NULL, 0},
    {"unix:///?db=1", false, NULL, 0, NULL, NULL, NULL, 0},
    {"unix:////", false, NULL, 0, NULL, NULL, NULL, 0},
    {"unix:///run/", false, NULL, 0, NULL, NULL, NULL, 0},
    {"unix:///run/redis/.", false, NULL, 0, NULL, NULL, NULL, 0},
    {"unix:///run/redis/..", false, NULL, 0, NULL, NULL, NULL, 0},
    {"unix:///run/redis/.sock", true, NULL, 0, "/run/redis/.sock", NULL, NULL, 0},
    {"unix:///r", true, NULL, 0, "/r", NULL, NULL, 0},
    {"not a url", false, NULL, 0, NULL, NULL, NULL, 0},
    /* No host: curl reads "redis:///0" as host 0, which is 0.0.0.0. */
    {"redis:///0", false, NULL, 0, NULL, NULL, NULL, 0},
    {"redis://", false, NULL, 0, NULL, NULL, NULL, 0},
    {"redis://:pw@/0", false, NULL, 0, NULL, NULL, NULL, 0},
    {"redis://:6379/0", false, NULL, 0, NULL, NULL, NULL, 0},
    /* Options a redis:// URL does not take are refused, not ignored. */
    {"redis://cache/0?db=1", false, NULL, 0, NULL, NULL, NULL, 0},
    {"redis://cache/0?", false, NULL, 0, NULL, NULL, NULL, 0},
    {"redis://cache/0#frag", false, NULL, 0, NULL, NULL, NULL, 0},
    {"redis://cache#frag", false, NULL, 0, NULL, NULL, NULL, 0},
    /* One slash: curl reads it as redis://, but the checks above would be
     * passed by (found by fuzz_redis_url: the ?db=1 was ignored). */
    {"redis:/cache/0?db=1", false, NULL, 0, NULL, NULL, NULL, 0},
    {"redis:/cache/0#frag", false, NULL, 0, NULL, NULL, NULL, 0},
    {"Redis:/cache:6379/0", false, NULL, 0, NULL, NULL, NULL, 0},
    {"redis:/:pw@cache/0", false, NULL, 0, NULL, NULL, NULL, 0},
    {"redis:cache", false, NULL, 0, NULL, NULL, NULL, 0},
    {"REDIS://cache:6379/0", true, "cache", 6379, NULL, NULL, NULL, 0},
    {"unix:///run/redis.sock#frag", false, NULL, 0, NULL, NULL, NULL, 0},
    {"unix:///run/redis.sock?db=2#frag", false, NULL, 0, NULL, NULL, NULL, 0},
    /* A Redis 6 ACL user is kept, with or without a password. */
    {"redis://app@cache/1", true, "cache", 6379, NULL, "app", NULL, 1},
    {"redis://app:p%3Aw@cache:7000/2", true, "cache", 7000, NULL, "app", "p:w", 2},
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

Test(redis_url, refused_options_say_which_exist)
{
    static const char *const urls[] = {"redis://cache/0?db=1", "redis://cache/0#frag",
                                       "redis://cache/0?password=R3dis"};
    tw_redis_url_t u;
    tw_error_t err;

    for (size_t k = 0; k < sizeof urls / sizeof urls[0]; k++) {
        cr_expect_not(tw_redis_url_parse(urls[k], &u, &err), "%s", urls[k]);
        cr_expect(strstr(err.message, "unix://") != NULL, "%s", err.message);
        cr_expect(strstr(err.message, "?db=N") != NULL, "%s", err.message);
        cr_expect(strstr(err.message, "R3dis") == NULL, "%s", err.message);
    }
    cr_expect_not(tw_redis_url_parse("redis:///0", &u, &err));
    cr_expect(strstr(err.message, "host") != NULL, "%s", err.message);
    cr_expect_not(tw_redis_url_parse("redis:/:R3dis@cache/0?db=1", &u, &err));
    cr_expect(strstr(err.message, "redis://") != NULL, "%s", err.message);
    cr_expect(strstr(err.message, "R3dis") == NULL, "%s", err.message);
}

/* A socket path that names no file, or one longer than a socket address
 * holds (hiredis would cut it and connect elsewhere), is refused when the
 * URL is read, saying what is wrong with it. */
Test(redis_url, a_socket_path_that_cannot_be_one_is_named)
{
    static const struct {
        const char *url;
        const char *says;
    } cases[] = {
        {"unix:///", "names a directory, not a socket file"},
        {"unix:///run/?db=2", "names a directory, not a socket file"},
        {"unix:///run/redis/..", "names a directory, not a socket file"},
        {"unix:///run/redis/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock",
         "longer than the 107 bytes"},
    };
    tw_redis_url_t u;
    tw_error_t err;

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        cr_expect_not(tw_redis_url_parse(cases[k].url, &u, &err), "%s", cases[k].url);
        cr_expect_eq(err.domain, TW_ERR_USAGE, "%s", cases[k].url);
        cr_expect(strstr(err.message, cases[k].says) != NULL, "%s: %s", cases[k].url,
                  err.message);
        cr_expect(strstr(err.message, "unix:///run/redis.sock") != NULL, "%s", err.message);
        tw_redis_url_release(&u);
    }
}

/* The password (from the password file) replaces the URL's and keeps its
 * user. */
Test(redis_url, the_password_file_keeps_the_acl_user)
{
    tw_redis_url_t u;
    tw_error_t err;

    cr_assert(tw_redis_url_load("redis://app:inurl@cache/0", "fromfile", &u, &err), "%s",
              err.message);
    cr_expect_str_eq(u.user, "app");
    cr_expect_str_eq(u.password, "fromfile");
    tw_redis_url_release(&u);
    cr_assert(tw_redis_url_load("redis://app@cache/0", "fromfile", &u, &err), "%s", err.message);
    cr_expect_str_eq(u.user, "app");
    cr_expect_str_eq(u.password, "fromfile");
    tw_redis_url_release(&u);
}

/* AUTH is sent only with a password: a user without one would be dropped and
 * the connection made as the default user. */
Test(redis_url, a_user_without_a_password_is_refused)
{
    tw_redis_url_t u;
    tw_error_t err;

    cr_expect_not(tw_redis_url_load("redis://app@cache/0", NULL, &u, &err));
    cr_expect(strstr(err.message, "app") != NULL, "%s", err.message);
    cr_expect(strstr(err.message, "password") != NULL, "%s", err.message);
}

typedef struct {
    const char *url;
    bool ok;
    size_t count;
    const char *first_host;
    int first_port;
    const char *last_host;
    int last_port;
    const char *master;
    const char *password;
    int db;
} sentinel_case_t;

static const sentinel_case_t sentinel_cases[] = {
    {"redis-sentinel://h1:26379,h2:26380/0#mymaster", true, 2, "h1", 26379, "h2", 26380,
     "mymaster", NULL, 0},
    {"redis-sentinel://:s3cr%40t@h1,h2,h3/2#orders", true, 3, "h1", 26379, "h3", 26379,
     "orders", "s3cr@t", 2},
    {"redis-sentinel://[::1]:26379,10.0.0.2#m", true, 2, "::1", 26379, "10.0.0.2", 26379, "m",
     NULL, 0},
    {"redis-sentinel://h1:26379/0", false, 0, NULL, 0, NULL, 0, NULL, NULL, 0},
    {"redis-sentinel://h1:26379/0#", false, 0, NULL, 0, NULL, 0, NULL, NULL, 0},
    {"redis-sentinel://h1,,h2/0#m", false, 0, NULL, 0, NULL, 0, NULL, NULL, 0},
    {"redis-sentinel://h1:0/0#m", false, 0, NULL, 0, NULL, 0, NULL, NULL, 0},
    {"redis-sentinel://h1:x/0#m", false, 0, NULL, 0, NULL, 0, NULL, NULL, 0},
    {"redis-sentinel:///0#m", false, 0, NULL, 0, NULL, 0, NULL, NULL, 0},
    {"redis-sentinel://h1/x#m", false, 0, NULL, 0, NULL, 0, NULL, NULL, 0},
};

Test(redis_url, parses_sentinel_urls)
{
    for (size_t k = 0; k < sizeof sentinel_cases / sizeof sentinel_cases[0]; k++) {
        const sentinel_case_t *c = &sentinel_cases[k];
        tw_redis_url_t url;
        tw_error_t err;
        bool ok = tw_redis_url_parse(c->url, &url, &err);

        cr_expect_eq(ok, c->ok, "%s: %s", c->url, ok ? "parsed" : err.message);
        if (ok && c->ok) {
            cr_expect_eq(url.sentinel_count, c->count, "%s", c->url);
            cr_expect_str_eq(url.sentinel_host[0], c->first_host, "%s", c->url);
            cr_expect_eq(url.sentinel_port[0], c->first_port, "%s", c->url);
            cr_expect_str_eq(url.sentinel_host[c->count - 1], c->last_host, "%s", c->url);
            cr_expect_eq(url.sentinel_port[c->count - 1], c->last_port, "%s", c->url);
            cr_expect_str_eq(url.master_name, c->master, "%s", c->url);
            cr_expect_null(url.host, "%s: the master is asked for", c->url);
            if (c->password)
                cr_expect_str_eq(url.password, c->password, "%s", c->url);
            else
                cr_expect_null(url.password, "%s", c->url);
            cr_expect_eq(url.db, c->db, "%s", c->url);
        }
        if (!ok)
            cr_expect_null(strstr(err.message, "s3cr"), "%s: %s", c->url, err.message);
        tw_redis_url_release(&url);
    }
}
