/*
 * The sink interface: what each kind keeps, what it adds to the commit, and
 * a stdout that fails and comes back (written to a stream that refuses
 * writes while told to).
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <string.h>

#include "tokenwatch/sink.h"

typedef struct {
    bool refuse;
    char data[4096];
    size_t len;
} pipe_t;

static ssize_t pipe_write(void *cookie, const char *buf, size_t n)
{
    pipe_t *p = cookie;

    if (p->refuse) {
        errno = ENOSPC;
        return -1;
    }
    if (n > sizeof p->data - p->len)
        n = sizeof p->data - p->len;
    memcpy(p->data + p->len, buf, n);
    p->len += n;
    return (ssize_t)n;
}

static void make_event(tw_event_t *e, const char *json)
{
    memset(e, 0, sizeof *e);
    e->json = bson_strdup(json);
    e->token_json = bson_strdup("{\"_data\": \"82\"}");
    e->op = bson_strdup("insert");
    e->ns = bson_strdup("shop.orders");
}

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;

    for (const char *at = hay; (at = strstr(at, needle)); at += strlen(needle))
        n++;
    return n;
}

Test(sink, none_keeps_nothing_and_adds_nothing)
{
    tw_sink_opts_t o = {TW_SINK_NONE, NULL, NULL, 0};
    tw_sink_t *s = tw_sink_new(&o);
    tw_sink_part_t part;
    tw_event_t e;

    make_event(&e, "{\"a\": 1}");
    tw_sink_put(s, &e);
    cr_expect_null(e.json, "the event was taken");
    cr_expect_eq(tw_sink_held(s), 0);
    cr_expect_not(tw_sink_wants_json(s));
    tw_sink_commit_part(s, &part);
    cr_expect_null(part.stream_key);
    cr_expect(tw_sink_flush(s, NULL));
    cr_expect_str_eq(tw_sink_name(s), "none");
    tw_sink_free(s);
}

Test(sink, redis_hands_its_batch_to_the_commit_until_committed)
{
    tw_sink_opts_t o = {TW_SINK_REDIS, NULL, "tokenwatch:{o}:events", 1000};
    tw_sink_t *s = tw_sink_new(&o);
    tw_sink_part_t part;
    tw_event_t e;

    for (int k = 0; k < 3; k++) {
        make_event(&e, "{\"a\": 1}");
        tw_sink_put(s, &e);
    }
    cr_expect(tw_sink_in_redis(s));
    tw_sink_commit_part(s, &part);
    cr_expect_str_eq(part.stream_key, "tokenwatch:{o}:events");
    cr_expect_eq(part.stream_maxlen, 1000);
    cr_assert_not_null(part.events);
    cr_expect_eq(part.events->count, 3);
    tw_sink_committed(s);
    cr_expect_eq(tw_sink_held(s), 0);
    tw_sink_free(s);
}

Test(sink, stdout_writes_at_once_and_again_after_a_failed_write)
{
    pipe_t p;
    cookie_io_functions_t io = {NULL, pipe_write, NULL, NULL};
    FILE *out;
    tw_sink_opts_t o = {TW_SINK_STDOUT, NULL, NULL, 0};
    tw_sink_t *s;
    tw_event_t e;
    tw_error_t err;

    memset(&p, 0, sizeof p);
    out = fopencookie(&p, "w", io);
    cr_assert_not_null(out);
    setvbuf(out, NULL, _IONBF, 0); /* each line reaches the stream at once */
    o.out = out;
    s = tw_sink_new(&o);
    make_event(&e, "{\"seq\": 1}");
    tw_sink_put(s, &e);
    cr_expect_str_eq(p.data, "{\"seq\": 1}\n", "written at once");
    p.refuse = true;
    make_event(&e, "{\"seq\": 2}");
    tw_sink_put(s, &e);
    cr_expect_not(tw_sink_flush(s, &err), "a failed write fails the flush");
    cr_expect(strstr(err.message, "cannot write events to stdout"), "%s", err.message);
    cr_expect(strstr(err.message, strerror(ENOSPC)), "%s", err.message);
    cr_expect_not(tw_sink_flush(s, &err), "and again while it lasts");
    p.refuse = false;
    cr_expect(tw_sink_flush(s, &err), "back: %s", err.message);
    cr_expect_eq(count(p.data, "{\"seq\": 2}\n"), 1, "seq 2 is written: %s", p.data);
    cr_expect_geq(count(p.data, "{\"seq\": 1}\n"), 1, "seq 1 may come twice: %s", p.data);
    tw_sink_committed(s);
    cr_expect_eq(tw_sink_held(s), 0);
    p.len = 0;
    memset(p.data, 0, sizeof p.data);
    cr_expect(tw_sink_flush(s, &err));
    cr_expect_eq(p.len, 0, "nothing written again once committed");
    tw_sink_free(s);
    fclose(out);
}
