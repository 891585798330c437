#include "guarded.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"

void fx_set_key(fx_t *fx, const char *key, const char *value)
{
    freeReplyObject(th_redis_cmd(&fx->redis, "SET %s %s", key, value));
}

void fx_set_key_time(fx_t *fx, const char *key, uint32_t t)
{
    char value[32];

    snprintf(value, sizeof value, "%u:1", t);
    fx_set_key(fx, key, value);
}

void fx_seed_own_time(fx_t *fx, uint32_t t)
{
    char *data = fx_hwm_data(t, 1);

    fx_seed_checkpoint(fx, data, NULL);
    bson_free(data);
}

void fx_seed_own_at_newest(fx_t *fx)
{
    bson_t state;
    bson_iter_t t, i;
    char *data;

    fx_sim(fx, "GET", "/state", NULL, &state);
    cr_assert(bson_iter_init(&t, &state) && bson_iter_find_descendant(&t, "newest.t", &t));
    cr_assert(bson_iter_init(&i, &state) && bson_iter_find_descendant(&i, "newest.i", &i));
    data = fx_hwm_data((uint32_t)bson_iter_as_int64(&t), (uint32_t)bson_iter_as_int64(&i));
    fx_seed_checkpoint(fx, data, NULL);
    bson_free(data);
    bson_destroy(&state);
}

void fx_spawn_guarding(fx_t *fx, th_proc_t *p, const char *guard_key, int metrics_port,
                       const char *webhook_url, const char *const more[])
{
    char addr[64];
    const char *extra[32];
    size_t n = 0;

    snprintf(addr, sizeof addr, "127.0.0.1:%d", metrics_port);
    extra[n++] = "--guard";
    extra[n++] = guard_key;
    extra[n++] = "--monitor-interval";
    extra[n++] = "100ms";
    extra[n++] = "--metrics-addr";
    extra[n++] = addr;
    extra[n++] = "--slack-webhook";
    extra[n++] = webhook_url;
    for (size_t k = 0; more && more[k]; k++) {
        cr_assert_lt(n, sizeof extra / sizeof extra[0] - 1, "too many arguments");
        extra[n++] = more[k];
    }
    extra[n] = NULL;
    fx_seed_own_at_newest(fx);
    fx_spawn(fx, p, extra);
}

double fx_metric(int port, const char *series)
{
    long status;
    char *text = fx_http(port, "GET", "/metrics", NULL, &status);
    double value = NAN;
    size_t len = strlen(series);

    for (char *line = text; line && *line;) {
        char *end = strchr(line, '\n');

        if (strncmp(line, series, len) == 0 && line[len] == ' ')
            value = strtod(line + len + 1, NULL);
        if (!end)
            break;
        line = end + 1;
    }
    free(text);
    return value;
}

typedef struct {
    int port;
    const char *series;
    double want;
} metric_wait_t;

static bool metric_is(void *ctx)
{
    metric_wait_t *w = ctx;

    return fx_metric(w->port, w->series) == w->want;
}

bool fx_wait_metric(int port, const char *series, double want, int timeout_ms)
{
    metric_wait_t w = {port, series, want};

    return th_wait_until(metric_is, &w, timeout_ms);
}
