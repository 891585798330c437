/*
 * faults.c - the writer, the tally and the timed stop of the fault runs.
 */
#include "faults.h"

#include <criterion/criterion.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *writer_main(void *arg)
{
    ft_writer_t *w = arg;
    char body[64];

    snprintf(body, sizeof body, "{\"count\": %d}", w->per_post);
    while (!w->stop) {
        long status = 0;
        char *text = th_sim_request(w->sim, "POST", "/events", body, &status);
        const char *at = text ? strstr(text, "\"last_seq\"") : NULL;

        if (status == 200 && at && (at = strchr(at, ':')))
            w->last_seq = strtoll(at + 1, NULL, 10);
        else if (++w->failures >= 20)
            w->stop = 1; /* the fixture is gone: a failed test */
        free(text);
        th_sleep_ms(w->every_ms);
    }
    return NULL;
}

void ft_writer_start(ft_writer_t *w, fx_t *fx, int per_post, int every_ms)
{
    memset(w, 0, sizeof *w);
    w->sim = &fx->sim;
    w->per_post = per_post;
    w->every_ms = every_ms;
    cr_assert_eq(pthread_create(&w->thread, NULL, writer_main, w), 0);
}

int64_t ft_writer_stop(ft_writer_t *w)
{
    w->stop = 1;
    pthread_join(w->thread, NULL);
    cr_assert_eq(w->failures, 0, "the simulator took every write");
    return w->last_seq;
}

/* The seq of one XRANGE entry, or -1. */
static int64_t entry_seq(const redisReply *entry)
{
    const redisReply *fields = entry->element[1];
    int64_t seq = -1;

    for (size_t f = 0; f + 1 < fields->elements; f += 2) {
        bson_t doc;
        bson_iter_t it;

        if (strcmp(fields->element[f]->str, "event") != 0 ||
            !bson_init_from_json(&doc, fields->element[f + 1]->str, -1, NULL))
            continue;
        if (bson_iter_init(&it, &doc) &&
            bson_iter_find_descendant(&it, "fullDocument.seq", &it))
            seq = bson_iter_as_int64(&it);
        bson_destroy(&doc);
    }
    return seq;
}

ft_tally_t ft_tally(fx_t *fx, int64_t last, const long long *marks, size_t nmarks)
{
    int64_t *seqs;
    size_t n = fx_stream_seqs(fx, &seqs);
    unsigned char *seen = calloc((size_t)last + 1, 1);
    ft_tally_t t = {.entries = n};
    size_t run = 0, run_dups = 0;

    cr_assert(seen);
    for (size_t k = 0; k < n; k++) {
        while (run < nmarks && (long long)k >= marks[run]) {
            run++;
            run_dups = 0;
        }
        cr_assert(seqs[k] >= 1 && seqs[k] <= last, "seq %lld out of 1..%lld",
                  (long long)seqs[k], (long long)last);
        if (seen[seqs[k]]++) {
            t.duplicates++;
            if (++run_dups > t.worst_run)
                t.worst_run = run_dups;
        }
    }
    for (int64_t s = 1; s <= last; s++)
        if (!seen[s] && t.missing++ == 0)
            t.first_missing = s;
    free(seen);
    free(seqs);
    return t;
}

int64_t ft_newest_seq(fx_t *fx)
{
    redisReply *r = th_redis_cmd(&fx->redis, "XREVRANGE %s + - COUNT 1", FX_STREAM);
    int64_t seq = 0;

    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 1)
        seq = entry_seq(r->element[0]);
    if (r)
        freeReplyObject(r);
    return seq;
}

typedef struct {
    fx_t *fx;
    int64_t last;
} wait_seq_t;

static bool reached(void *ctx)
{
    wait_seq_t *w = ctx;

    return ft_newest_seq(w->fx) >= w->last;
}

bool ft_wait_seq(fx_t *fx, int64_t last, int timeout_ms)
{
    wait_seq_t w = {fx, last};

    return th_wait_until(reached, &w, timeout_ms);
}

void ft_spawn(fx_t *fx, th_proc_t *p, const char *const extra[])
{
    const char *argv[48];
    size_t n = 0;
    static const char *const base[] = {"--sink", "redis", "--checkpoint-every",
                                       FT_BATCH_TEXT, "--redis-timeout", "500ms"};

    for (size_t k = 0; k < sizeof base / sizeof base[0]; k++)
        argv[n++] = base[k];
    for (size_t k = 0; extra && extra[k]; k++) {
        cr_assert_lt(n, 47u);
        argv[n++] = extra[k];
    }
    argv[n] = NULL;
    fx_spawn(fx, p, argv);
}

long long ft_stop(th_proc_t *p, int sig, int timeout_ms)
{
    long long started = th_now_ms();

    th_proc_signal(p, sig);
    if (th_proc_wait(p, timeout_ms))
        return th_now_ms() - started;
    th_proc_kill(p);
    return -1;
}

static bool following(void *ctx)
{
    const th_proc_t *p = ctx;
    char *err = th_read_file(p->err_path);
    bool yes = err && strstr(err, "following ");

    free(err);
    return yes;
}

ft_tally_t ft_finish(fx_t *fx, th_proc_t *p, int64_t last, const long long *marks,
                     size_t nmarks)
{
    /* Earlier runs may have written up to last already: a SIGTERM before
     * this one has even set up its signal handling would kill it. */
    th_assert_dump(th_wait_until(following, p, 30000), p->err_path, "follows");
    th_assert_dump(ft_wait_seq(fx, last, 30000), p->err_path, "catches up to seq %lld",
                   (long long)last);
    cr_assert_neq(ft_stop(p, SIGTERM, 15000), -1, "stops on SIGTERM");
    th_assert_dump(th_proc_exit_code(p) == 0, p->err_path, "exit 0, got %d",
                   th_proc_exit_code(p));
    return ft_tally(fx, last, marks, nmarks);
}

void ft_sim(fx_t *fx, const char *method, const char *path, const char *body)
{
    bson_t reply;

    fx_sim(fx, method, path, body, &reply);
    bson_destroy(&reply);
}

void ft_redis(fx_t *fx, const char *fmt, ...)
{
    redisContext *c = th_redis_connect(&fx->redis);
    redisReply *r;
    va_list ap;

    cr_assert(c, "connects to Redis");
    va_start(ap, fmt);
    r = redisvCommand(c, fmt, ap);
    va_end(ap);
    cr_assert(r && r->type != REDIS_REPLY_ERROR, "%s: %s", fmt, r ? r->str : c->errstr);
    freeReplyObject(r);
    redisFree(c);
}

void ft_report(const char *name, const ft_tally_t *t, const char *more)
{
    fprintf(stderr,
            "faults: %s: %zu entries, %zu missing, %zu duplicates, at most %zu in one "
            "run%s%s\n",
            name, t->entries, t->missing, t->duplicates, t->worst_run, more ? "; " : "",
            more ? more : "");
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void ft_remove_tree(const char *path)
{
    cr_assert(strstr(path, "tokenwatch-test-"), "only inside a test's directory: %s", path);
    cr_assert_eq(nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS), 0, "removes %s", path);
}
