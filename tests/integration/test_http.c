/*
 * The metrics port under a connection flood: idle or slow clients must not
 * starve the liveness probe, and a flood is logged once, not per connection.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fixture.h"

#define MAX_IDLE 400

static fx_t fx;
static int idle[MAX_IDLE];
static size_t n_idle;

static void close_idle(void)
{
    for (size_t k = 0; k < n_idle; k++)
        close(idle[k]);
    n_idle = 0;
}

static void teardown(void)
{
    close_idle();
    fx_stop(&fx);
}

TestSuite(http, .fini = teardown, .timeout = 90);

/* Opens count TCP connections to 127.0.0.1:port that never send a byte.
 * Non-blocking connect: a full accept queue must not hang the test. */
static void open_idle(int port, size_t count)
{
    struct sockaddr_in sa;

    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (size_t k = 0; k < count && n_idle < MAX_IDLE; k++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);

        cr_assert(fd >= 0, "socket: %s", strerror(errno));
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
            cr_assert(errno == EINPROGRESS, "connect: %s", strerror(errno));
        idle[n_idle++] = fd;
    }
}

typedef struct {
    int port;
} probe_t;

static bool healthz_ok(void *ctx)
{
    long status = 0;
    char *body = fx_http(((probe_t *)ctx)->port, "GET", "/healthz", NULL, &status);

    free(body);
    return status == 200;
}

/* One probe; the milliseconds it took, or -1 when it did not answer 200. */
static long long probe_ms(int port)
{
    long long t0 = th_now_ms();
    long status = 0;
    char *body = fx_http(port, "GET", "/healthz", NULL, &status);

    free(body);
    return status == 200 ? th_now_ms() - t0 : -1;
}

static void spawn_serving(th_proc_t *p, int port)
{
    char addr[64];
    const char *extra[] = {"--metrics-addr", addr, NULL};
    probe_t probe = {port};

    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    fx_start(&fx, NULL);
    fx_spawn(&fx, p, extra);
    th_assert_dump(th_wait_until(healthz_ok, &probe, 10000), p->err_path,
                   "/healthz answers before the flood");
}

Test(http, healthz_answers_within_2s_past_100_idle_connections)
{
    th_proc_t p;
    int port = th_free_port();
    long long ms;

    spawn_serving(&p, port);
    open_idle(port, 100);
    th_sleep_ms(300); /* let the server accept what it will */
    ms = probe_ms(port);
    th_assert_dump(ms >= 0 && ms < 2000, p.err_path,
                   "/healthz answered 200 within 2 s past 100 idle connections "
                   "(took %lld ms, -1 = no answer)",
                   ms);
    th_proc_stop(&p, 10000);
    cr_expect_eq(th_proc_exit_code(&p), 0);
}

Test(http, idle_connections_are_cut_and_the_probe_answers_again)
{
    th_proc_t p;
    int port = th_free_port();
    probe_t probe = {port};
    long long t0;
    char *err;

    spawn_serving(&p, port);
    /* Far past the per-address limit: refused, and logged once. */
    open_idle(port, 300);
    th_sleep_ms(500);
    /* The idle ones are cut by the connection timeout, the attacker keeps
     * its sockets: the probe answers again within a few seconds. */
    t0 = th_now_ms();
    th_assert_dump(th_wait_until(healthz_ok, &probe, 8000), p.err_path,
                   "/healthz answers again once the idle connections time out");
    cr_expect_lt(th_now_ms() - t0, 8000);
    /* A second wave in the same outage is not logged again. */
    open_idle(port, 200);
    th_sleep_ms(500);
    th_proc_stop(&p, 10000);
    cr_expect_eq(th_proc_exit_code(&p), 0);
    err = th_proc_stderr(&p);
    cr_expect_eq(fx_count(err, "refusing connections"), 1,
                 "a flood is logged once, not per connection:\n%.4000s", err);
    cr_expect_eq(fx_count(err, "Closing inbound connection"), 0,
                 "libmicrohttpd's per-connection line is not repeated:\n%.4000s",
                 err);
    free(err);
}

/* As http.c's HTTP_FLOOD_QUIET_MS: a flood is over after this long
 * without a refusal. */
#define FLOOD_QUIET_MS 30000
#define FLOOD_OVER "metrics http: accepting connections again after refusing "

static bool flood_over_logged(void *ctx)
{
    char *err = th_read_file(((th_proc_t *)ctx)->err_path);
    bool found = err && strstr(err, FLOOD_OVER) != NULL;

    free(err);
    return found;
}

/* The end of a flood is logged once, when it ends: not only when the next
 * client happens to connect (nobody may, for a long while). */
Test(http, the_end_of_a_flood_is_logged_once, .timeout = 120)
{
    th_proc_t p;
    int port = th_free_port();
    probe_t probe = {port};
    const char *at;
    char *err;
    unsigned long long refused = 0;

    spawn_serving(&p, port);
    open_idle(port, 300);
    th_sleep_ms(500);
    close_idle();
    /* No client from here on until the line is there. */
    th_assert_dump(th_wait_until(flood_over_logged, &p, FLOOD_QUIET_MS + 15000), p.err_path,
                   "the end of the flood is logged within %d s of the last refusal, "
                   "with no client connecting",
                   FLOOD_QUIET_MS / 1000 + 15);
    th_assert_dump(th_wait_until(healthz_ok, &probe, 5000), p.err_path,
                   "/healthz answers after the flood");
    cr_expect(healthz_ok(&probe));
    th_proc_stop(&p, 10000);
    cr_expect_eq(th_proc_exit_code(&p), 0);
    err = th_proc_stderr(&p);
    cr_assert_not_null(err);
    cr_expect_eq(fx_count(err, "refusing connections"), 1, "%.4000s", err);
    cr_expect_eq(fx_count(err, FLOOD_OVER), 1, "%.4000s", err);
    at = strstr(err, FLOOD_OVER);
    if (at) {
        cr_expect_lt(strstr(err, "refusing connections") - err, at - err,
                     "the end is logged after the start");
        cr_expect_eq(sscanf(at + strlen(FLOOD_OVER), "%llu", &refused), 1, "%s", at);
        cr_expect_gt(refused, 0, "%s", at);
    }
    free(err);
}
