/* tw_http_*: the address parser and the server of /metrics, /healthz and
 * /readyz (src/http.c). */
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tokenwatch/http.h"
#include "tokenwatch/log.h"
#include "tokenwatch/metrics.h"

#define EVENTS "tokenwatch_events_total"
#define LEFT "tokenwatch_token_time_left_seconds"

static void quiet_logs(void)
{
    tw_log_configure(TW_LOG_ERROR, TW_LOG_TEXT, "test", "test", NULL);
}

static size_t count_lines_with(const char *text, const char *needle)
{
    size_t n = 0;

    for (const char *p = text; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

/* -------------------------------------------------------------- HTTP */

static _Atomic int64_t fake_now;

static int64_t fake_ms(void *ctx)
{
    (void)ctx;
    return atomic_load(&fake_now);
}

static double fake_random01(void *ctx)
{
    (void)ctx;
    return 0;
}

static tw_clock_t fake_clock = {fake_ms, fake_ms, fake_random01, NULL, NULL};

static void http_setup(void)
{
    quiet_logs();
    atomic_store(&fake_now, 1000000);
    cr_assert_eq(curl_global_init(CURL_GLOBAL_DEFAULT), CURLE_OK);
}

static void http_teardown(void)
{
    curl_global_cleanup();
}

TestSuite(http, .init = http_setup, .fini = http_teardown, .timeout = 30);

typedef struct {
    long status;
    char body[8192];
    size_t len;
    char content_type[128];
    char allow[64];
} reply_t;

static size_t collect(char *data, size_t size, size_t count, void *arg)
{
    reply_t *r = arg;
    size_t n = size * count;

    if (n >= sizeof r->body - r->len)
        return 0; /* fails the transfer: bodies here are small */
    memcpy(r->body + r->len, data, n);
    r->len += n;
    r->body[r->len] = '\0';
    return n;
}

static void header_value(CURL *curl, const char *name, char *out, size_t n)
{
    struct curl_header *h;

    out[0] = '\0';
    if (curl_easy_header(curl, name, 0, CURLH_HEADER, -1, &h) == CURLHE_OK)
        snprintf(out, n, "%s", h->value);
}

/* method "GET", "HEAD" or "POST"; the reply is cleared first. */
static void fetch(const char *host, int port, const char *method,
                  const char *path, reply_t *r)
{
    char url[256];
    CURL *curl = curl_easy_init();
    CURLcode rc;

    memset(r, 0, sizeof *r);
    cr_assert(curl);
    snprintf(url, sizeof url, "http://%s:%d%s", host, port, path);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    else if (strcmp(method, "POST") == 0)
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, "a=1");
    rc = curl_easy_perform(curl);
    cr_assert_eq(rc, CURLE_OK, "%s %s: %s", method, url, curl_easy_strerror(rc));
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r->status);
    header_value(curl, "Content-Type", r->content_type, sizeof r->content_type);
    header_value(curl, "Allow", r->allow, sizeof r->allow);
    curl_easy_cleanup(curl);
}

static void get(int port, const char *path, reply_t *r)
{
    fetch("127.0.0.1", port, "GET", path, r);
}

static tw_http_t *start_local(tw_metrics_t *m, int64_t stall_ms)
{
    tw_error_t err;
    tw_http_t *h;

    tw_error_clear(&err);
    h = tw_http_start(m, "127.0.0.1:0", &fake_clock, stall_ms, &err);
    cr_assert(h, "start: %s", err.message);
    cr_assert_gt(tw_http_port(h), 0);
    return h;
}

Test(http, serves_metrics)
{
    tw_metrics_t *m = tw_metrics_new();
    tw_http_t *h;
    reply_t r;
    char *rendered;

    cr_assert(tw_metrics_declare(m, EVENTS, TW_METRIC_COUNTER, "Events."));
    cr_assert(tw_metrics_declare(m, LEFT, TW_METRIC_GAUGE, "Left."));
    cr_assert(tw_metrics_add(m, EVENTS, NULL, 7));
    cr_assert(tw_metrics_set(m, LEFT, "key=\"a\\\"b\"", 1.5));
    h = start_local(m, 1000);
    get(tw_http_port(h), "/metrics", &r);
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(r.content_type, "text/plain; version=0.0.4; charset=utf-8");
    cr_expect_str_eq(r.body,
                     "# HELP tokenwatch_events_total Events.\n"
                     "# TYPE tokenwatch_events_total counter\n"
                     "tokenwatch_events_total 7\n"
                     "# HELP tokenwatch_token_time_left_seconds Left.\n"
                     "# TYPE tokenwatch_token_time_left_seconds gauge\n"
                     "tokenwatch_token_time_left_seconds{key=\"a\\\"b\"} 1.5\n");
    rendered = tw_metrics_render(m);
    cr_expect_str_eq(r.body, rendered);
    free(rendered);

    /* Later updates show in the next scrape; a query string is ignored. */
    cr_assert(tw_metrics_add(m, EVENTS, NULL, 1));
    get(tw_http_port(h), "/metrics?name[]=x", &r);
    cr_expect_eq(r.status, 200);
    cr_expect(strstr(r.body, "tokenwatch_events_total 8\n") != NULL, "%s",
              r.body);

    fetch("127.0.0.1", tw_http_port(h), "HEAD", "/metrics", &r);
    cr_expect_eq(r.status, 200);
    cr_expect_eq(r.len, 0);
    tw_http_free(h);
    tw_metrics_free(m);
}

Test(http, empty_registry_is_an_empty_scrape)
{
    tw_metrics_t *m = tw_metrics_new();
    tw_http_t *h = start_local(m, 1000);
    reply_t r;

    get(tw_http_port(h), "/metrics", &r);
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(r.body, "");
    tw_http_free(h);
    tw_metrics_free(m);
}

Test(http, healthz_follows_the_heartbeat)
{
    tw_metrics_t *m = tw_metrics_new();
    tw_http_t *h = start_local(m, 1000);
    int port = tw_http_port(h);
    reply_t r;

    get(port, "/healthz", &r);
    cr_expect_eq(r.status, 200, "young server, no heartbeat yet: %s", r.body);
    cr_expect_str_eq(r.content_type, "text/plain; charset=utf-8");
    atomic_fetch_add(&fake_now, 1000);
    get(port, "/healthz", &r);
    cr_expect_eq(r.status, 503);
    cr_expect_str_eq(r.body,
                     "stalled: no heartbeat since start for 1000 ms (limit 1000 ms)\n");

    tw_metrics_heartbeat(m, atomic_load(&fake_now));
    get(port, "/healthz", &r);
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(r.body, "ok\n");
    atomic_fetch_add(&fake_now, 999);
    get(port, "/healthz", &r);
    cr_expect_eq(r.status, 200, "999 ms is younger than 1000");
    atomic_fetch_add(&fake_now, 1);
    get(port, "/healthz", &r);
    cr_expect_eq(r.status, 503);
    cr_expect_str_eq(r.body, "stalled: no heartbeat for 1000 ms (limit 1000 ms)\n");
    atomic_fetch_add(&fake_now, 60000);
    get(port, "/healthz", &r);
    cr_expect_str_eq(r.body, "stalled: no heartbeat for 61000 ms (limit 1000 ms)\n");

    tw_metrics_heartbeat(m, atomic_load(&fake_now));
    get(port, "/healthz", &r);
    cr_expect_eq(r.status, 200, "recovers with the next heartbeat");
    tw_http_free(h);
    tw_metrics_free(m);
}

Test(http, readyz_lists_parts_not_ready)
{
    static const struct {
        const char *part; /* NULL: no change */
        bool ready;
        long status;
        const char *body;
    } steps[] = {
        {NULL, false, 503, "not ready: nothing reported yet\n"},
        {"mongo", false, 503, "not ready: mongo\n"},
        {"redis", false, 503, "not ready: mongo, redis\n"},
        {"mongo", true, 503, "not ready: redis\n"},
        {"redis", true, 200, "ready\n"},
        {"redis", true, 200, "ready\n"},
        {"redis", false, 503, "not ready: redis\n"},
        {"redis", true, 200, "ready\n"},
    };
    tw_metrics_t *m = tw_metrics_new();
    tw_http_t *h = start_local(m, 1000);
    reply_t r;

    for (size_t k = 0; k < sizeof steps / sizeof steps[0]; k++) {
        if (steps[k].part)
            tw_metrics_set_ready(m, steps[k].part, steps[k].ready);
        get(tw_http_port(h), "/readyz", &r);
        cr_expect_eq(r.status, steps[k].status, "step %zu: %ld", k, r.status);
        cr_expect_str_eq(r.body, steps[k].body, "step %zu", k);
    }
    tw_http_free(h);
    tw_metrics_free(m);
}

Test(http, unknown_paths_and_methods)
{
    static const struct {
        const char *method;
        const char *path;
        long status;
    } cases[] = {
        {"GET", "/", 404},
        {"GET", "/metricsx", 404},
        {"GET", "/metrics/", 404},
        {"GET", "/favicon.ico", 404},
        {"POST", "/metrics", 405},
        {"POST", "/healthz", 405},
        {"POST", "/nowhere", 405},
    };
    tw_metrics_t *m = tw_metrics_new();
    tw_http_t *h = start_local(m, 1000);
    reply_t r;

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        fetch("127.0.0.1", tw_http_port(h), cases[k].method, cases[k].path, &r);
        cr_expect_eq(r.status, cases[k].status, "%s %s: %ld", cases[k].method,
                     cases[k].path, r.status);
        if (cases[k].status == 405)
            cr_expect_str_eq(r.allow, "GET, HEAD", "%s %s", cases[k].method,
                             cases[k].path);
    }
    tw_http_free(h);
    tw_metrics_free(m);
}

Test(http, taken_port_names_the_address)
{
    tw_metrics_t *m = tw_metrics_new();
    tw_http_t *first = start_local(m, 1000), *second;
    char addr[64];
    tw_error_t err;

    snprintf(addr, sizeof addr, "127.0.0.1:%d", tw_http_port(first));
    tw_error_clear(&err);
    second = tw_http_start(m, addr, &fake_clock, 1000, &err);
    cr_expect_null(second);
    cr_expect_eq(err.domain, TW_ERR_SYSTEM);
    cr_expect(strstr(err.message, addr) != NULL, "names %s: %s", addr,
              err.message);
    cr_expect(strstr(err.message, "in use") != NULL, "says why: %s",
              err.message);
    tw_http_free(second);
    tw_http_free(first);
    tw_metrics_free(m);
}

Test(http, start_refuses_bad_arguments)
{
    tw_metrics_t *m = tw_metrics_new();
    tw_error_t err;

    tw_error_clear(&err);
    cr_expect_null(tw_http_start(m, "nonsense", &fake_clock, 1000, &err));
    cr_expect_eq(err.domain, TW_ERR_USAGE);
    cr_expect(strstr(err.message, "nonsense") != NULL, "%s", err.message);
    tw_error_clear(&err);
    cr_expect_null(tw_http_start(m, "127.0.0.1:0", &fake_clock, 0, &err));
    cr_expect_eq(err.domain, TW_ERR_USAGE);
    cr_expect_null(tw_http_start(m, "127.0.0.1:0", &fake_clock, 0, NULL));
    cr_expect_null(tw_http_start(NULL, "127.0.0.1:0", &fake_clock, 1000, NULL));
    cr_expect_null(tw_http_start(m, "127.0.0.1:0", NULL, 1000, NULL));
    tw_http_free(NULL);
    tw_metrics_free(m);
}

Test(http, listens_on_localhost)
{
    tw_metrics_t *m = tw_metrics_new();
    tw_error_t err;
    tw_http_t *h = tw_http_start(m, "localhost:0", &fake_clock, 1000, &err);
    reply_t r;

    cr_assert(h, "%s", err.message);
    fetch("localhost", tw_http_port(h), "GET", "/healthz", &r);
    cr_expect_eq(r.status, 200);
    tw_http_free(h);
    tw_metrics_free(m);
}

static bool ipv6_loopback_works(void)
{
    struct sockaddr_in6 sa;
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    bool ok;

    if (fd < 0)
        return false;
    memset(&sa, 0, sizeof sa);
    sa.sin6_family = AF_INET6;
    sa.sin6_addr = in6addr_loopback;
    ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

Test(http, listens_on_ipv6_loopback)
{
    tw_metrics_t *m;
    tw_error_t err;
    tw_http_t *h;
    reply_t r;

    if (!ipv6_loopback_works())
        cr_skip_test("no IPv6 loopback here");
    m = tw_metrics_new();
    h = tw_http_start(m, "[::1]:0", &fake_clock, 1000, &err);
    cr_assert(h, "%s", err.message);
    fetch("[::1]", tw_http_port(h), "GET", "/healthz", &r);
    cr_expect_eq(r.status, 200);
    tw_http_free(h);
    tw_metrics_free(m);
}

/* -------------------------------------------------------- parse_addr */

typedef struct {
    const char *addr;
    bool ok;
    const char *host;
    int port;
} addr_case_t;

static const addr_case_t addr_cases[] = {
    {"127.0.0.1:9470", true, "127.0.0.1", 9470},
    {"0.0.0.0:0", true, "0.0.0.0", 0},
    {"localhost:8080", true, "localhost", 8080},
    {"[::1]:9470", true, "::1", 9470},
    {"[::]:65535", true, "::", 65535},
    {"10.1.2.3:00080", true, "10.1.2.3", 80},
    {"", false, NULL, 0},
    {"9470", false, NULL, 0},
    {":9470", false, NULL, 0},
    {"127.0.0.1", false, NULL, 0},
    {"127.0.0.1:", false, NULL, 0},
    {"127.0.0.1:65536", false, NULL, 0},
    {"127.0.0.1:-1", false, NULL, 0},
    {"127.0.0.1:+80", false, NULL, 0},
    {"127.0.0.1: 80", false, NULL, 0},
    {"127.0.0.1:80x", false, NULL, 0},
    {"127.0.0.1:999999", false, NULL, 0},
    {"256.0.0.1:80", false, NULL, 0},
    {"example.com:80", false, NULL, 0},
    {"::1:9470", false, NULL, 0},
    {"[::1]9470", false, NULL, 0},
    {"[::1]", false, NULL, 0},
    {"[::1:9470", false, NULL, 0},
    {"[127.0.0.1]:80", false, NULL, 0},
    {"[]:80", false, NULL, 0},
    {"off:80", false, NULL, 0},
};

Test(http, parse_addr_table)
{
    for (size_t k = 0; k < sizeof addr_cases / sizeof addr_cases[0]; k++) {
        const addr_case_t *c = &addr_cases[k];
        char host[TW_HTTP_HOST_MAX] = "";
        int port = -1;
        tw_error_t err;
        bool ok;

        tw_error_clear(&err);
        ok = tw_http_parse_addr(c->addr, host, sizeof host, &port, &err);
        cr_expect_eq(ok, c->ok, "'%s': ok=%d (%s)", c->addr, ok, err.message);
        if (c->ok) {
            cr_expect_str_eq(host, c->host, "'%s'", c->addr);
            cr_expect_eq(port, c->port, "'%s': port %d", c->addr, port);
        } else {
            cr_expect_eq(err.domain, TW_ERR_USAGE, "'%s'", c->addr);
            cr_expect(strstr(err.message, c->addr) != NULL,
                      "the error names '%s': %s", c->addr, err.message);
        }
    }
}

Test(http, parse_addr_small_host_buffer)
{
    char host[4];
    int port;
    tw_error_t err;

    cr_expect_not(tw_http_parse_addr("127.0.0.1:80", host, sizeof host, &port,
                                     &err));
    cr_expect(strstr(err.message, "127.0.0.1:80") != NULL, "%s", err.message);
    cr_expect(tw_http_parse_addr("[::]:80", host, sizeof host, &port, NULL));
    cr_expect_str_eq(host, "::");
}

/* The whole log written to path so far (malloc'd). */
static char *read_log(const char *path)
{
    FILE *f = fopen(path, "r");
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    char buf[4096];
    size_t n;

    cr_assert(f && mem);
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        fwrite(buf, 1, n, mem);
    fclose(mem);
    fclose(f);
    return text;
}

/* A flood ends after 30 s without a refusal: tw_http_tick notices it with
 * no connection coming, and logs it once. */
Test(http, a_flood_ends_on_tick_once_quiet)
{
    enum { CLIENTS = 200 };
    char path[] = "/tmp/tw-flood-log-XXXXXX";
    int fds[CLIENTS], opened = 0;
    struct sockaddr_in sa;
    tw_metrics_t *m = tw_metrics_new();
    tw_http_t *h = start_local(m, 1000);
    FILE *log = fdopen(mkstemp(path), "w");
    char *text = NULL;

    cr_assert(log);
    tw_log_configure(TW_LOG_INFO, TW_LOG_TEXT, "test", "test", log);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)tw_http_port(h));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int k = 0; k < CLIENTS; k++) {
        fds[k] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[k] >= 0 && connect(fds[k], (struct sockaddr *)&sa, sizeof sa) == 0)
            opened++;
    }
    for (int wait = 0; wait < 100; wait++) {
        free(text);
        text = read_log(path);
        if (strstr(text, "refusing connections"))
            break;
        usleep(50000);
    }
    cr_assert(strstr(text, "refusing connections"), "%d connections, no flood:\n%s", opened,
              text);
    for (int k = 0; k < CLIENTS; k++)
        if (fds[k] >= 0)
            close(fds[k]);
    /* Let the server thread take in every connection (a refusal after the
     * clock moves would restart the quiet period). */
    usleep(300000);
    atomic_fetch_add(&fake_now, 29999);
    tw_http_tick(h);
    free(text);
    text = read_log(path);
    cr_expect_null(strstr(text, "accepting connections again"), "too soon:\n%s", text);
    atomic_fetch_add(&fake_now, 1);
    tw_http_tick(h);
    tw_http_tick(h);
    tw_http_tick(NULL);
    free(text);
    text = read_log(path);
    cr_expect_eq(count_lines_with(text, "accepting connections again after refusing "), 1, "%s",
                 text);
    tw_http_free(h);
    quiet_logs();
    fclose(log);
    unlink(path);
    free(text);
    tw_metrics_free(m);
}
