/*
 * faults.h - what the fault runs (make test-faults) share: a writer that keeps
 * appending events while things break, a tally of the stream against what was
 * written, and a timed stop.
 */
#ifndef TOKENWATCH_TEST_FAULTS_H
#define TOKENWATCH_TEST_FAULTS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "fixture.h"

/* Events per commit in every fault run: "at most one batch again". */
#define FT_BATCH 20
#define FT_BATCH_TEXT "20"

/* Appends `per_post` events every `every_ms` until stopped. */
typedef struct {
    th_sim_t *sim;
    pthread_t thread;
    volatile int stop;
    int per_post;
    int every_ms;
    int64_t last_seq; /* the newest seq the simulator confirmed */
    int failures;
} ft_writer_t;

void ft_writer_start(ft_writer_t *w, fx_t *fx, int per_post, int every_ms);
/* Joins the writer; returns the newest seq written. */
int64_t ft_writer_stop(ft_writer_t *w);

/* The stream against 1..last. Runs end at marks[k] (stream lengths, in
 * order): a run's duplicates are its seqs that an earlier run wrote. */
typedef struct {
    size_t entries;
    size_t missing;
    size_t duplicates;
    size_t worst_run; /* most duplicates one run wrote */
    int64_t first_missing;
} ft_tally_t;

ft_tally_t ft_tally(fx_t *fx, int64_t last, const long long *marks, size_t nmarks);

/* The seq of the stream's newest entry, or 0. */
int64_t ft_newest_seq(fx_t *fx);
/* Waits until the stream's newest entry is seq `last` or later. */
bool ft_wait_seq(fx_t *fx, int64_t last, int timeout_ms);

/* tokenwatch run with the redis sink, a batch of FT_BATCH, a 500 ms Redis
 * timeout, plus extra (NULL-terminated, may be NULL). */
void ft_spawn(fx_t *fx, th_proc_t *p, const char *const extra[]);

/* Sends sig and waits up to timeout_ms; the milliseconds it took to exit,
 * or -1 when it is still running (then it is killed). */
long long ft_stop(th_proc_t *p, int sig, int timeout_ms);

/* Waits for last, stops with SIGTERM, asserts exit 0; the tally. */
ft_tally_t ft_finish(fx_t *fx, th_proc_t *p, int64_t last, const long long *marks,
                     size_t nmarks);

/* A simulator control request that must succeed. */
void ft_sim(fx_t *fx, const char *method, const char *path, const char *body);

/* A Redis command that must not fail (a reply of any other type is fine). */
void ft_redis(fx_t *fx, const char *fmt, ...);

/* Removes a directory inside the test's own directory, and what it holds. */
void ft_remove_tree(const char *path);

/* One line for the README's figures: "faults: NAME: ..." on stderr. */
void ft_report(const char *name, const ft_tally_t *t, const char *more);

#endif
