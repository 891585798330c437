/*
 * inproc.h - tokenwatch run inside the test process, on a fake clock.
 *
 * The clock's time moves only when the run sleeps on it (a backoff, a
 * pause): seconds of retries take milliseconds, and what happens in them
 * is exact. It belongs to the thread that calls fx_inproc_run; another
 * thread sleeping on it (the guard between rounds) really sleeps, up to
 * 100 ms, without moving it. Its jitter is always one half. The run is
 * stopped (as by SIGTERM) once the clock has moved stop_after_ms.
 */
#ifndef TOKENWATCH_TEST_INPROC_H
#define TOKENWATCH_TEST_INPROC_H

#include <stdint.h>

#include "fixture.h"

typedef struct {
    int code;       /* tw_run's exit code */
    char *log;      /* everything it logged (free) */
    int64_t moved_ms; /* how far the clock moved */
} fx_inproc_t;

/* Runs `tokenwatch run` with the fixture's arguments plus extra. */
void fx_inproc_run(fx_t *fx, const char *const extra[], int64_t stop_after_ms,
                   fx_inproc_t *out);

/*
 * The guard's rounds inside the test process: the monitor of `tokenwatch
 * run` with the fixture's arguments plus extra, one round, then `rounds`
 * more with the fake clock moved step_ms before each. Alerts go to the
 * channels the arguments name, and are waited for (up to 10 s). What was
 * logged (free).
 */
char *fx_inproc_guard(fx_t *fx, const char *const extra[], int rounds, int64_t step_ms);

#endif
