/*
 * kill -9 at random points of a long stream, restarting each time: nothing
 * missing, at most one batch again per restart.
 *
 * TW_FAULT_KILLS sets the number of kills (default 60), TW_FAULT_SEED the
 * random seed (default: the time; printed, so a failure can be replayed).
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "faults.h"

static fx_t fx;

static void teardown(void)
{
    fx_stop(&fx);
}

TestSuite(kill, .fini = teardown, .timeout = 300);

static long env_long(const char *name, long fallback)
{
    const char *v = getenv(name);

    return v && *v ? strtol(v, NULL, 10) : fallback;
}

/* Without the lease: a run killed by -9 holds it until it lapses, and each
 * restart would stand by for that long, never reaching a commit to be
 * killed in. The lease has runs of its own (tests/integration/test_lease.c). */
static const char *const no_lease[] = {"--lease-ttl", "0s", NULL};

/* Kills at 0..600 ms after exec: before the first connection, while the
 * stream opens, while a batch is read, while a commit runs. */
static int kill_delay_ms(unsigned *seed)
{
    return (int)(rand_r(seed) % 601);
}

Test(kill, kill_9_at_random_points_of_a_long_stream)
{
    long kills = env_long("TW_FAULT_KILLS", 60);
    unsigned seed = (unsigned)env_long("TW_FAULT_SEED", (long)(th_now_ms() % 100000));
    long long *marks = calloc((size_t)kills, sizeof *marks);
    long long started = th_now_ms();
    ft_writer_t writer;
    th_proc_t p;
    int64_t last;
    ft_tally_t t;
    char more[160];
    long wrote = 0;

    cr_assert(marks);
    fprintf(stderr, "faults: kill -9: %ld kills, TW_FAULT_SEED=%u\n", kills, seed);
    fx_start(&fx, "{\"batch_size\": 50}");
    /* The first start writes the first checkpoint, from now. */
    ft_spawn(&fx, &p, no_lease);
    th_assert_dump(fx_wait_checkpoint(&fx, 10000), p.err_path, "a first checkpoint");
    th_proc_kill(&p);
    ft_writer_start(&writer, &fx, 5, 10);
    for (long k = 0; k < kills; k++) {
        ft_spawn(&fx, &p, no_lease);
        th_sleep_ms(kill_delay_ms(&seed));
        th_proc_kill(&p);
        marks[k] = th_redis_xlen(&fx.redis, FX_STREAM);
        cr_assert_geq(marks[k], 0);
        wrote += k > 0 && marks[k] > marks[k - 1];
    }
    last = ft_writer_stop(&writer);
    cr_assert_gt(last, 1000, "a long stream: %lld events", (long long)last);
    ft_spawn(&fx, &p, no_lease);
    t = ft_finish(&fx, &p, last, marks, (size_t)kills);
    snprintf(more, sizeof more, "%ld kills (%ld after the run had written), %lld events, %.1f s",
             kills, wrote, (long long)last, (double)(th_now_ms() - started) / 1000.0);
    ft_report("kill -9", &t, more);
    cr_expect_eq(t.missing, 0, "seq %lld and %zu more missing", (long long)t.first_missing,
                 t.missing);
    cr_expect_leq(t.worst_run, FT_BATCH, "at most one batch again per restart: %zu",
                  t.worst_run);
    free(marks);
}
