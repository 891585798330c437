/*
 * stop.h - a stop request acted on within about a second, even while the
 * owner's thread is inside a call it cannot interrupt.
 *
 * The signal handler only sets the stop flag (main.c) and the owner's loop
 * reads it between calls. A MongoDB driver call cannot be interrupted: a
 * stalled reply waits for socketTimeoutMS (300 s by default), an outage for
 * the server selection timeout (the URI's, or tokenwatch's 1 s) more than
 * once per call, and libmongoc resumes a change stream whose getMore keeps
 * failing without ever returning. So a stop watcher, a thread of its own,
 * reads the flag every poll_ms, logs `notice` once it is set, and when the
 * owner has not stopped by itself within grace_ms and is still inside such
 * a call, calls take_over.
 *
 * The lock: the owner holds it at all times except between
 * tw_stop_watch_enter() and tw_stop_watch_leave(), around each call that
 * can block. The watcher can therefore take it only while the owner is
 * inside such a call, and the owner cannot come out (leave waits for the
 * lock) while the watcher has it: take_over may use everything the owner's
 * thread owns except what the blocked call itself is using.
 *
 * take_over runs once, on the watcher's thread, with the lock held. It is
 * meant to end the process with _exit: no library cleanup may run while the
 * owner is inside the library. If it returns, the watcher releases the lock
 * and stops watching.
 *
 * Nothing changes for a stop the owner sees in time: the watcher only logs
 * the notice.
 */
#ifndef TOKENWATCH_STOP_H
#define TOKENWATCH_STOP_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "tokenwatch/error.h"

typedef struct {
    volatile sig_atomic_t *stop; /* borrowed: the flag the signal handler sets */
    int64_t grace_ms;            /* from the stop being seen to the take-over */
    int64_t poll_ms;             /* how often the flag is read; 0: 50 */
    const char *notice;          /* borrowed; logged (info) when the stop is seen; NULL: none */
    void (*take_over)(void *ctx);
    void *ctx;
    /* A call entered with tw_stop_watch_enter_timed that has not come back
     * after slow_ms: on_slow (may be NULL) runs once for it, on the
     * watcher's thread with the lock held, as take_over does. 0: never. */
    int64_t slow_ms;
    void (*on_slow)(void *ctx, int64_t blocked_ms);
} tw_stop_watch_opts_t;

typedef struct tw_stop_watch tw_stop_watch_t;

/* Starts the watcher; the calling thread (the owner) holds the lock on
 * return. NULL with err filled when the thread cannot start. */
tw_stop_watch_t *tw_stop_watch_start(const tw_stop_watch_opts_t *opts, tw_error_t *err);

/* Before a call that can block: the lock is free until leave. NULL is fine. */
void tw_stop_watch_enter(tw_stop_watch_t *w);

/* The same, for a call whose taking longer than slow_ms is worth saying
 * (a getMore that awaits at most a second, not a shutdown). */
void tw_stop_watch_enter_timed(tw_stop_watch_t *w);

/* After it. Never returns once the watcher has taken over (take_over ends
 * the process meanwhile). NULL is fine. */
void tw_stop_watch_leave(tw_stop_watch_t *w);

/* Stops the watcher and frees it. From the owner, outside enter/leave, so
 * never during a take-over. NULL is fine. */
void tw_stop_watch_free(tw_stop_watch_t *w);

#endif
