/*
 * A TLS-only Redis through a local TLS proxy, the way the README says to
 * reach one with hiredis 0.14 (no TLS of its own): redis-server with only a
 * tls-port and a certificate made here, stunnel in client mode checking it
 * on loopback, and tokenwatch given stunnel's plain side.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"

static fx_t fx;
static th_proc_t tls_redis, proxy;

static void teardown(void)
{
    th_proc_stop(&proxy, 5000);
    th_proc_stop(&tls_redis, 5000);
    fx_stop(&fx);
}

TestSuite(tls, .fini = teardown, .timeout = 90);

static void make_certificate(char *cert, char *key)
{
    const char *argv[] = {"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                          "-keyout", key, "-out", cert, "-days", "1", "-subj",
                          "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1", NULL};
    char *out = NULL, *err = NULL;

    cr_assert_eq(th_run(fx.dir, argv, NULL, 30000, &out, &err), 0, "openssl: %s", err);
    free(out);
    free(err);
}

typedef struct {
    int port;
} port_wait_t;

static bool answers(void *ctx)
{
    th_redis_t at;
    redisReply *r;
    bool yes;

    memset(&at, 0, sizeof at);
    at.port = ((port_wait_t *)ctx)->port;
    r = th_redis_cmd(&at, "PING");
    yes = r && r->type == REDIS_REPLY_STATUS;
    if (r)
        freeReplyObject(r);
    return yes;
}

Test(tls, a_tls_only_redis_through_stunnel)
{
    char cert[PATH_MAX], key[PATH_MAX], conf[PATH_MAX], text[3 * PATH_MAX];
    char tls_port[16], url[64];
    int plain_port;
    port_wait_t wait;
    th_redis_t through;
    th_proc_t p;
    char *events;

    fx_start(&fx, "{\"rate\": 0}");
    cr_assert(th_path(cert, sizeof cert, fx.dir, "cert.pem"));
    cr_assert(th_path(key, sizeof key, fx.dir, "key.pem"));
    make_certificate(cert, key);
    snprintf(tls_port, sizeof tls_port, "%d", th_free_port());
    {
        const char *argv[] = {"redis-server", "--port", "0", "--tls-port", tls_port,
                              "--bind", "127.0.0.1", "--tls-cert-file", cert,
                              "--tls-key-file", key, "--tls-ca-cert-file", cert,
                              "--tls-auth-clients", "no", "--save", "", "--appendonly",
                              "no", NULL};
        cr_assert(th_proc_spawn(&tls_redis, fx.dir, argv, NULL), "redis-server (TLS only)");
    }
    plain_port = th_free_port();
    cr_assert(th_path(conf, sizeof conf, fx.dir, "stunnel.conf"));
    snprintf(text, sizeof text,
             "foreground = yes\npid =\n[redis]\nclient = yes\naccept = 127.0.0.1:%d\n"
             "connect = 127.0.0.1:%s\nverifyPeer = yes\nCAfile = %s\ncheckIP = 127.0.0.1\n",
             plain_port, tls_port, cert);
    cr_assert(th_write_file(conf, text, strlen(text)));
    {
        const char *argv[] = {"stunnel4", conf, NULL};
        cr_assert(th_proc_spawn(&proxy, fx.dir, argv, NULL), "stunnel");
    }
    wait.port = plain_port;
    th_assert_dump(th_wait_until(answers, &wait, 10000), proxy.err_path,
                   "Redis answers through the proxy");
    snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", plain_port);
    {
        const char *extra[] = {"--sink", "redis", "--checkpoint-every", "5", "--redis-url",
                               url, NULL};
        fx_spawn(&fx, &p, extra);
    }
    memset(&through, 0, sizeof through);
    through.port = plain_port;
    th_sleep_ms(1000);
    bson_free(fx_post_events(&fx, 10));
    for (int k = 0; k < 100; k++) {
        events = th_redis_hget(&through, "tokenwatch:{default}:checkpoint", "events");
        if (events && strcmp(events, "10") == 0)
            break;
        free(events);
        events = NULL;
        th_sleep_ms(100);
    }
    th_assert_dump(events != NULL, p.err_path, "10 events checkpointed over TLS");
    free(events);
    cr_expect_eq(th_redis_xlen(&through, "tokenwatch:{default}:events"), 10);
    th_proc_signal(&p, SIGTERM);
    cr_assert(th_proc_wait(&p, 15000));
    cr_expect_eq(th_proc_exit_code(&p), 0);
}
