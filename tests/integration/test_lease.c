/*
 * One writer per --name: two live tokenwatch processes on one Redis. The
 * leader follows; the other stands by, takes over when the leader dies, is
 * paused past its lease or stops; a leader that wakes after a takeover is
 * fenced. The lease is short here (2 s, looked at every 250 ms).
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "guarded.h"
#include "tokenwatch/checkpoint.h"
#include "tokenwatch/lease.h"
#include "tokenwatch/token.h"

static fx_t fx;

static void teardown(void)
{
    fx_stop(&fx);
}

TestSuite(lease, .fini = teardown, .timeout = 90);

#define LEASE "--lease-ttl", "2s", "--lease-renew", "250ms"

static const char *const follow[] = {"--sink", "redis", "--checkpoint-every", "5", LEASE,
                                     NULL};

typedef struct {
    const th_proc_t *p;
    const char *text;
} logged_t;

static bool has_logged(void *ctx)
{
    const logged_t *l = ctx;
    char *err = th_read_file(l->p->err_path);
    bool yes = err && strstr(err, l->text);

    free(err);
    return yes;
}

static bool wait_logged(const th_proc_t *p, const char *text, int timeout_ms)
{
    logged_t l = {p, text};

    return th_wait_until(has_logged, &l, timeout_ms);
}

/* Every seq 1..last is in the stream; how many come twice or more. */
static size_t duplicates_up_to(int64_t last)
{
    int64_t *seqs;
    size_t n = fx_stream_seqs(&fx, &seqs);
    unsigned char *seen = calloc((size_t)last + 1, 1);
    size_t dups = 0;

    cr_assert(seen);
    for (size_t k = 0; k < n; k++)
        if (seqs[k] >= 1 && seqs[k] <= last && seen[seqs[k]]++)
            dups++;
    for (int64_t s = 1; s <= last; s++)
        cr_expect(seen[s], "seq %lld is missing", (long long)s);
    free(seen);
    free(seqs);
    return dups;
}

typedef struct {
    int64_t last;
} upto_t;

static bool stream_reaches(void *ctx)
{
    int64_t *seqs;
    size_t n = fx_stream_seqs(&fx, &seqs);
    bool yes = false;

    for (size_t k = 0; k < n; k++)
        yes = yes || seqs[k] == ((upto_t *)ctx)->last;
    free(seqs);
    return yes;
}

static void leader_and_standby_with(th_proc_t *a, th_proc_t *b, const char *const b_args[])
{
    fx_spawn(&fx, a, follow);
    th_assert_dump(fx_wait_checkpoint(&fx, 10000), a->err_path, "the first one leads");
    th_assert_dump(wait_logged(a, "leading default (lease epoch 1", 5000), a->err_path,
                   "epoch 1");
    fx_spawn(&fx, b, b_args);
    th_assert_dump(wait_logged(b, "standby: default is led by", 10000), b->err_path,
                   "the second stands by");
}

static void leader_and_standby(th_proc_t *a, th_proc_t *b)
{
    leader_and_standby_with(a, b, follow);
}

Test(lease, the_standby_does_not_follow_and_says_who_leads)
{
    int port = th_free_port();
    char addr[64];
    const char *b_args[] = {"--sink", "redis", "--checkpoint-every", "5", LEASE,
                            "--metrics-addr", addr, NULL};
    th_proc_t a, b;
    long status;
    char *err, *body;

    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    fx_start(&fx, "{\"rate\": 0}");
    leader_and_standby_with(&a, &b, b_args);
    body = fx_http(port, "GET", "/readyz", NULL, &status);
    cr_expect_eq(status, 200, "a standby is ready: %s", body);
    cr_expect(body && strstr(body, "ready: standby"), "%s", body);
    free(body);
    cr_expect_eq(fx_metric(port, "tokenwatch_lease_leader"), 0);
    cr_expect_eq(fx_metric(port, "tokenwatch_lease_epoch"), 1, "%f", fx_metric(port, "tokenwatch_lease_epoch"));
    bson_free(fx_post_events(&fx, 10));
    th_assert_dump(fx_wait_checkpoint_events(&fx, 10, 10000), a.err_path, "the leader");
    th_sleep_ms(500);
    cr_expect_eq(duplicates_up_to(10), 0, "one writer: no event twice");
    err = th_proc_stderr(&b);
    cr_expect(strstr(err, "following ") == NULL, "the standby does not follow:\n%s", err);
    free(err);
    {
        const char *argv[] = {th_binary(), "status", "--mongo-uri", fx.sim.uri,
                              "--redis-url", fx.redis_url, "--json", NULL};
        char *out = NULL;

        th_run(fx.dir, argv, NULL, 15000, &out, &err);
        cr_expect(strstr(out, "\"lease\" : { \"leader\" : \""), "status names the leader:\n%s",
                  out);
        cr_expect(strstr(out, "\"epoch\" : 1"), "%s", out);
        free(out);
        free(err);
    }
    th_proc_stop(&a, 10000);
    th_proc_stop(&b, 10000);
}

Test(lease, kill_9_the_leader_and_the_standby_takes_over_with_nothing_missing)
{
    th_proc_t a, b;
    long long killed;
    upto_t upto = {40};

    fx_start(&fx, "{\"rate\": 0}");
    leader_and_standby(&a, &b);
    bson_free(fx_post_events(&fx, 20));
    th_assert_dump(fx_wait_checkpoint_events(&fx, 20, 10000), a.err_path, "20 events");
    th_proc_kill(&a);
    killed = th_now_ms();
    bson_free(fx_post_events(&fx, 20));
    th_assert_dump(wait_logged(&b, "leading default (lease epoch 2", 10000), b.err_path,
                   "takes over");
    cr_log_info("lease: the standby led %lld ms after kill -9 (lease 2 s)",
                th_now_ms() - killed);
    th_assert_dump(th_wait_until(stream_reaches, &upto, 15000), b.err_path, "catches up");
    cr_expect_leq(duplicates_up_to(40), 5, "at most one batch again");
    th_proc_stop(&b, 10000);
    cr_expect_eq(th_proc_exit_code(&b), 0);
}

Test(lease, a_leader_paused_past_its_lease_is_fenced_when_it_wakes)
{
    th_proc_t a, b;
    char *before, *after, *err;
    upto_t upto = {30};

    fx_start(&fx, "{\"rate\": 0}");
    leader_and_standby(&a, &b);
    bson_free(fx_post_events(&fx, 10));
    th_assert_dump(fx_wait_checkpoint_events(&fx, 10, 10000), a.err_path, "10 events");
    th_proc_signal(&a, SIGSTOP);
    th_assert_dump(wait_logged(&b, "leading default (lease epoch 2", 10000), b.err_path,
                   "takes over from the paused one");
    bson_free(fx_post_events(&fx, 20));
    th_assert_dump(th_wait_until(stream_reaches, &upto, 15000), b.err_path, "the new leader");
    th_assert_dump(fx_wait_checkpoint_events(&fx, 30, 10000), b.err_path, "30 events");
    before = fx_checkpoint(&fx, "cluster_time");
    th_proc_signal(&a, SIGCONT);
    th_assert_dump(wait_logged(&a, "standing by", 10000), a.err_path,
                   "the old leader stops following when it wakes");
    th_sleep_ms(500);
    after = fx_checkpoint(&fx, "cluster_time");
    cr_expect_str_eq(after, before, "the checkpoint never moves back");
    cr_expect_leq(duplicates_up_to(30), 5, "at most one batch of duplicates");
    err = th_proc_stderr(&a);
    cr_expect(strstr(err, "another tokenwatch took the lease over") ||
                  strstr(err, "was taken over by"),
              "says why:\n%s", err);
    free(err);
    free(before);
    free(after);
    th_proc_stop(&a, 10000);
    th_proc_stop(&b, 10000);
}

Test(lease, sigterm_hands_over_within_a_second)
{
    th_proc_t a, b;
    long long stopped;

    fx_start(&fx, "{\"rate\": 0}");
    leader_and_standby(&a, &b);
    th_proc_signal(&a, SIGTERM);
    stopped = th_now_ms();
    th_assert_dump(wait_logged(&b, "leading default (lease epoch 2", 5000), b.err_path,
                   "takes over at once");
    cr_log_info("lease: handed over %lld ms after SIGTERM", th_now_ms() - stopped);
    cr_assert(th_proc_wait(&a, 10000));
    cr_expect_eq(th_proc_exit_code(&a), 0);
    th_assert_dump(wait_logged(&a, "lease of default released", 100), a.err_path,
                   "released");
    th_proc_stop(&b, 10000);
}

/* A key of the wrong type where the lease lives: a clear error, exit 2. */
Test(lease, a_lease_key_of_the_wrong_type_is_exit_2)
{
    char *err = NULL;

    fx_start(&fx, "{\"rate\": 0}");
    freeReplyObject(th_redis_cmd(&fx.redis, "HSET tokenwatch:{default}:lease a b"));
    cr_expect_eq(fx_run(&fx, follow, 15000, &err), 2, "%s", err);
    cr_expect(strstr(err, "tokenwatch:{default}:lease holds a hash"), "%s", err);
    free(err);
}

/* The fence itself, in-process: a commit of epoch 1 after a takeover to
 * epoch 2 is refused and writes nothing; epoch 2's lands. */
static bool commit_at(redisContext *c, uint32_t t, long long epoch, tw_error_t *err)
{
    tw_checkpoint_t cp;
    tw_commit_t commit;
    tw_commit_result_t result;
    bson_t token;
    char json[96];
    bool ok;

    snprintf(json, sizeof json, "{\"_data\": \"82%08X000000012B0229296E04\"}", t);
    cr_assert(tw_token_parse(json, &token, NULL));
    tw_checkpoint_init(&cp);
    tw_checkpoint_set_position(&cp, &token, (tw_ctime_t){t, 1}, TW_TIME_TOKEN);
    snprintf(cp.source, sizeof cp.source, "event");
    cp.scope = strdup("test");
    bson_destroy(&token);
    memset(&commit, 0, sizeof commit);
    commit.checkpoint_key = "tokenwatch:{default}:checkpoint";
    commit.history_key = "tokenwatch:{default}:history";
    commit.gaps_key = "tokenwatch:{default}:gaps";
    commit.epoch_key = "tokenwatch:{default}:epoch";
    commit.epoch = epoch;
    commit.record = &cp;
    ok = tw_checkpoint_commit(c, &commit, &result, err);
    tw_checkpoint_release(&cp);
    return ok;
}

Test(lease, a_commit_from_an_older_epoch_is_fenced_and_writes_nothing)
{
    redisContext *c;
    tw_lease_t first, second;
    tw_lease_state_t st;
    tw_error_t err;
    char *ct;

    fx_start(&fx, "{\"rate\": 0}");
    c = th_redis_connect(&fx.redis);
    cr_assert(c);
    tw_lease_init(&first, "default", NULL, 500);
    tw_lease_init(&second, "default", "another:1:0001", 500);
    cr_assert(tw_lease_take(c, &first, &st, &err), "%s", err.message);
    cr_expect(st.held);
    cr_expect_eq(st.epoch, 1);
    cr_assert(commit_at(c, 1700000000, 1, &err), "%s", err.message);
    cr_assert(tw_lease_take(c, &second, &st, &err), "%s", err.message);
    cr_expect_not(st.held, "held by the first");
    cr_expect_str_eq(st.holder, first.owner);
    th_sleep_ms(700); /* the first one's lease lapses */
    cr_assert(tw_lease_take(c, &second, &st, &err), "%s", err.message);
    cr_expect(st.held);
    cr_expect_eq(st.epoch, 2);
    cr_expect_not(commit_at(c, 1700000100, 1, &err), "epoch 1 is fenced");
    cr_expect_eq(err.code, TW_CHECKPOINT_FENCED, "%s", err.message);
    cr_expect(strstr(err.message, "epoch 2"), "%s", err.message);
    ct = th_redis_hget(&fx.redis, "tokenwatch:{default}:checkpoint", "cluster_time");
    cr_expect_str_eq(ct, "1700000000:1", "nothing was written");
    free(ct);
    cr_assert(commit_at(c, 1700000200, 2, &err), "epoch 2 writes: %s", err.message);
    cr_assert(tw_lease_release(c, &first, &err), "%s", err.message);
    cr_assert(tw_lease_take(c, &first, &st, &err), "%s", err.message);
    cr_expect_not(st.held, "releasing another's lease does nothing");
    cr_assert(tw_lease_release(c, &second, &err), "%s", err.message);
    cr_assert(tw_lease_take(c, &first, &st, &err), "%s", err.message);
    cr_expect(st.held, "free once released");
    cr_expect_eq(st.epoch, 3);
    redisFree(c);
}
