#include "inproc.h"

#include <criterion/criterion.h>
#include <curl/curl.h>
#include <mongoc/mongoc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tokenwatch/app.h"
#include "tokenwatch/clock.h"
#include "tokenwatch/follow.h"
#include "tokenwatch/guard.h"
#include "tokenwatch/monitor.h"
#include "tokenwatch/log.h"
#include "tokenwatch/run.h"
#include "tokenwatch/settings.h"

typedef struct {
    pthread_t owner;
    int64_t mono;    /* atomic: read by every thread */
    int64_t start;
    int64_t wall0;
    int64_t stop_at;
    volatile sig_atomic_t *stop;
} fake_t;

static int64_t fake_mono(void *ctx)
{
    return __atomic_load_n(&((fake_t *)ctx)->mono, __ATOMIC_SEQ_CST);
}

static int64_t fake_wall(void *ctx)
{
    fake_t *f = ctx;

    return f->wall0 + (fake_mono(f) - f->start);
}

static double fake_half(void *ctx)
{
    (void)ctx;
    return 0.5;
}

static void fake_sleep(void *ctx, int64_t ms)
{
    fake_t *f = ctx;
    struct timespec ts = {0, 0};

    if (!pthread_equal(pthread_self(), f->owner)) {
        ts.tv_nsec = (ms > 100 ? 100 : ms) * 1000000L;
        nanosleep(&ts, NULL);
        return;
    }
    if (__atomic_add_fetch(&f->mono, ms, __ATOMIC_SEQ_CST) >= f->stop_at)
        *f->stop = 1;
}

static void fake_init(fake_t *fake, tw_clock_t *clock, volatile sig_atomic_t *stop,
                      int64_t stop_after_ms)
{
    memset(fake, 0, sizeof *fake);
    fake->owner = pthread_self();
    fake->start = fake->mono = 1000000;
    fake->wall0 = (int64_t)time(NULL) * 1000;
    fake->stop_at = fake->start + stop_after_ms;
    fake->stop = stop;
    *stop = 0;
    clock->wall_ms = fake_wall;
    clock->mono_ms = fake_mono;
    clock->random01 = fake_half;
    clock->ctx = fake;
    clock->sleep_ms = fake_sleep;
}

static FILE *begin(fx_t *fx, const char *const extra[], tw_settings_t *s, char *log_path)
{
    const char *argv[64];
    size_t argc = fx_argv(fx, argv, 64, extra);
    tw_error_t err;
    FILE *log;

    memset(s, 0, sizeof *s);
    cr_assert(tw_settings_load(s, (int)argc - 2, argv + 2, NULL, &err), "%s", err.message);
    cr_assert(th_path(log_path, PATH_MAX, fx->dir, "inproc.log"));
    log = fopen(log_path, "w");
    cr_assert_not_null(log);
    mongoc_init();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    tw_log_configure(TW_LOG_INFO, TW_LOG_TEXT, s->name, s->environment, log);
    return log;
}

static char *end(FILE *log, tw_settings_t *s, const char *log_path)
{
    fclose(log);
    tw_log_configure(TW_LOG_INFO, TW_LOG_TEXT, "test", "test", NULL);
    tw_settings_release(s);
    curl_global_cleanup();
    mongoc_cleanup();
    return th_read_file(log_path);
}

void fx_inproc_run(fx_t *fx, const char *const extra[], int64_t stop_after_ms,
                   fx_inproc_t *out)
{
    static volatile sig_atomic_t stop;
    tw_settings_t s;
    fake_t fake;
    tw_clock_t clock;
    char log_path[PATH_MAX];
    FILE *log = begin(fx, extra, &s, log_path);

    fake_init(&fake, &clock, &stop, stop_after_ms);
    out->code = tw_run(&s, &clock, &stop, log);
    out->moved_ms = fake_mono(&fake) - fake.start;
    out->log = end(log, &s, log_path);
}

char *fx_inproc_guard(fx_t *fx, const char *const extra[], int rounds, int64_t step_ms)
{
    static volatile sig_atomic_t stop;
    tw_settings_t s;
    fake_t fake;
    tw_clock_t clock;
    char log_path[PATH_MAX];
    FILE *log = begin(fx, extra, &s, log_path);
    tw_app_opts_t app_opts;
    tw_app_t app;
    tw_monitor_opts_t opts;
    tw_monitor_t *m;
    tw_redis_url_t url;
    mongoc_client_pool_t *pool;
    tw_error_t err;

    fake_init(&fake, &clock, &stop, INT64_MAX / 2);
    tw_app_opts_from_settings(&s, &clock, &app_opts);
    app_opts.metrics_addr = "off";
    cr_assert(tw_app_start(&app, &app_opts, &err), "%s", err.message);
    cr_assert(tw_redis_url_load(s.redis_url, NULL, &url, &err), "%s", err.message);
    pool = tw_follow_pool_new(s.mongo_uri, &err);
    cr_assert_not_null(pool, "%s", err.message);
    tw_monitor_opts_from_settings(&s, &opts);
    opts.clock = &clock;
    opts.pool = pool;
    opts.redis_url = &url;
    opts.metrics = tw_app_metrics(&app);
    opts.notifiers = tw_app_notifiers(&app);
    opts.unknown_after = TW_GUARD_UNKNOWN_AFTER;
    opts.alerts = true;
    m = tw_monitor_new(&opts);
    tw_monitor_tick(m);
    for (int k = 0; k < rounds; k++) {
        fake_sleep(&fake, step_ms);
        tw_monitor_tick(m);
    }
    tw_app_flush_alerts(&app, 10000);
    tw_monitor_free(m);
    tw_app_stop(&app, 0);
    tw_app_free(&app);
    mongoc_client_pool_destroy(pool);
    tw_redis_url_release(&url);
    return end(log, &s, log_path);
}
