/*
 * The webhook broken while tokenwatch follows: 500s, 429 with Retry-After,
 * hanging, refused. The alert (here "started without a checkpoint", sent at
 * a first start) arrives once when it can, following never waits for it,
 * and a stop never waits more than the alert grace (3 s) for it.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faults.h"

static fx_t fx;
static fx_webhook_t hook;

static void teardown(void)
{
    fx_webhook_stop(&hook);
    fx_stop(&fx);
}

TestSuite(webhook, .fini = teardown, .timeout = 120);

/* Follows 2 s of writes with the webhook scripted (or a refused URL). */
static void follow_while(const char *name, const char *script, const char *url,
                         long long *stop_ms)
{
    th_proc_t p;
    ft_writer_t w;
    ft_tally_t t;
    int64_t last;
    char more[64];
    const char *extra[] = {"--slack-webhook", url ? url : hook.url, NULL};

    fx_start(&fx, NULL);
    fx_webhook_start(&fx, &hook);
    if (script)
        fx_webhook_script(&hook, script);
    extra[1] = url ? url : hook.url;
    ft_spawn(&fx, &p, extra);
    th_assert_dump(fx_wait_checkpoint(&fx, 10000), p.err_path, "a first checkpoint");
    ft_writer_start(&w, &fx, 5, 10);
    th_sleep_ms(2000);
    last = ft_writer_stop(&w);
    th_assert_dump(ft_wait_seq(&fx, last, 10000), p.err_path, "following did not wait");
    *stop_ms = ft_stop(&p, SIGTERM, 10000);
    cr_assert_neq(*stop_ms, -1, "stops");
    th_assert_dump(th_proc_exit_code(&p) == 0, p.err_path, "exit 0");
    t = ft_tally(&fx, last, NULL, 0);
    snprintf(more, sizeof more, "stopped in %lld ms", *stop_ms);
    ft_report(name, &t, more);
    cr_expect_eq(t.missing, 0);
    cr_expect_eq(t.duplicates, 0);
}

static int delivered(const char *needle)
{
    char **texts;
    size_t n = fx_webhook_texts(&hook, &texts);
    int found = 0;

    for (size_t k = 0; k < n; k++) {
        found += strstr(texts[k], needle) != NULL;
        free(texts[k]);
    }
    free(texts);
    return found;
}

Test(webhook, answering_500_twice)
{
    long long stop_ms;

    follow_while("webhook 500, 500, then 200",
                 "{\"responses\": [{\"status\": 500}, {\"status\": 500}], \"then\": 200}",
                 NULL, &stop_ms);
    cr_expect_eq(fx_webhook_count(&hook), 3, "two failures, one delivery");
    cr_expect_eq(delivered("started without a checkpoint"), 1, "delivered once");
}

Test(webhook, answering_429_with_retry_after)
{
    long long stop_ms;
    bson_t got;
    bson_iter_t it, item;
    double times[2] = {0, 0};
    int n = 0;

    follow_while("webhook 429 (Retry-After: 1), then 200",
                 "{\"responses\": [{\"status\": 429, \"retry_after\": 1}], \"then\": 200}",
                 NULL, &stop_ms);
    cr_expect_eq(delivered("started without a checkpoint"), 1, "delivered once");
    fx_webhook_received(&hook, &got);
    cr_assert(bson_iter_init_find(&it, &got, "a") && bson_iter_recurse(&it, &it));
    while (bson_iter_next(&it) && n < 2)
        if (bson_iter_recurse(&it, &item) && bson_iter_find(&item, "time"))
            times[n++] = bson_iter_as_double(&item);
    bson_destroy(&got);
    cr_assert_eq(n, 2);
    cr_expect_geq(times[1] - times[0], 0.95, "waited as told: %.3f s", times[1] - times[0]);
}

Test(webhook, hanging)
{
    long long stop_ms;

    follow_while("webhook hanging", "{\"responses\": [{\"hang\": 60}], \"then\": 200}", NULL,
                 &stop_ms);
    cr_expect_leq(stop_ms, 3000 + 1500, "the alert grace, no more: %lld ms", stop_ms);
}

Test(webhook, refused)
{
    long long stop_ms;
    char url[128];

    snprintf(url, sizeof url, "http://127.0.0.1:%d/services/T0/B0/%s", th_free_port(),
             FX_WEBHOOK_SECRET);
    follow_while("webhook refused", NULL, url, &stop_ms);
    cr_expect_leq(stop_ms, 3000 + 1500, "the alert grace, no more: %lld ms", stop_ms);
}
