/*
 * guarded.h - guarded keys and /metrics in the guard's integration tests.
 */
#ifndef TOKENWATCH_TEST_GUARDED_H
#define TOKENWATCH_TEST_GUARDED_H

#include <stdbool.h>
#include <stdint.h>

#include "fixture.h"

/* SET key value in the fixture's Redis; a cluster time as "t:1". */
void fx_set_key(fx_t *fx, const char *key, const char *value);
void fx_set_key_time(fx_t *fx, const char *key, uint32_t t);

/* The watcher's own checkpoint, a hash as run writes it, at (t, 1). */
void fx_seed_own_time(fx_t *fx, uint32_t t);

/* The watcher's own checkpoint at the simulator's newest entry: a start
 * that finds it says nothing (no "started without a checkpoint" alert). */
void fx_seed_own_at_newest(fx_t *fx);

/* tokenwatch run guarding guard_key every 100 ms, /metrics on metrics_port,
 * alerts to webhook_url, plus more (NULL-terminated, may be NULL); the own
 * checkpoint is seeded first, so no "started without a checkpoint". */
void fx_spawn_guarding(fx_t *fx, th_proc_t *p, const char *guard_key, int metrics_port,
                       const char *webhook_url, const char *const more[]);

/* The value of one series ("name" or "name{labels}") on 127.0.0.1:port's
 * /metrics, or NAN when it is not there. */
double fx_metric(int port, const char *series);

/* Waits until the series has the value; false on timeout. */
bool fx_wait_metric(int port, const char *series, double want, int timeout_ms);

#endif
