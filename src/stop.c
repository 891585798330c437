#include "tokenwatch/stop.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tokenwatch/clock.h"
#include "tokenwatch/log.h"
#include "tokenwatch/mem.h"

#define DEFAULT_POLL_MS 50

struct tw_stop_watch {
    tw_stop_watch_opts_t opts;
    pthread_t thread;
    pthread_mutex_t lock; /* the owner's, free only inside enter/leave */
    bool inside;          /* under lock: the owner is between enter and leave */
    bool timed;           /* under lock: ... in a call entered timed */
    bool slow_told;       /* under lock: on_slow ran for this call */
    uint64_t entries;     /* under lock: calls entered so far */
    /* The watcher's own: the call it saw the owner in, and since when (the
     * owner reads no clock per call: one per event was too many). */
    uint64_t seen_entry;
    int64_t seen_since_ms;
    pthread_mutex_t wlock; /* the watcher's own, for quit and its sleep */
    pthread_cond_t wake;
    bool quit; /* under wlock */
};

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleeps up to ms on the monotonic clock, or until tw_stop_watch_free. */
static void sleep_locked(tw_stop_watch_t *w, int64_t ms)
{
    struct timespec until;

    tw_mono_deadline(ms, &until);
    while (!w->quit && pthread_cond_timedwait(&w->wake, &w->wlock, &until) == 0)
        ;
}

/* Waits for the lock: it comes free when the owner enters a call (then take
 * over) or when it frees the watcher (then do nothing). */
static bool take_over_if_inside(tw_stop_watch_t *w)
{
    bool inside;

    pthread_mutex_lock(&w->lock);
    inside = w->inside;
    if (inside)
        w->opts.take_over(w->opts.ctx);
    pthread_mutex_unlock(&w->lock);
    return inside;
}

/* The lock is free only while the owner is inside a call: a try tells
 * whether it is, without waiting while it is not. */
static void check_slow(tw_stop_watch_t *w)
{
    if (!w->opts.on_slow || w->opts.slow_ms <= 0 || pthread_mutex_trylock(&w->lock) != 0)
        return;
    if (w->inside && w->timed && !w->slow_told) {
        int64_t now = mono_ms();

        if (w->entries != w->seen_entry) {
            /* A new call: timed from here, up to poll_ms late. */
            w->seen_entry = w->entries;
            w->seen_since_ms = now - w->opts.poll_ms / 2;
        } else if (now - w->seen_since_ms >= w->opts.slow_ms) {
            w->slow_told = true;
            w->opts.on_slow(w->opts.ctx, now - w->seen_since_ms);
        }
    }
    pthread_mutex_unlock(&w->lock);
}

static void *watch(void *arg)
{
    tw_stop_watch_t *w = arg;
    int64_t seen = -1;

    pthread_mutex_lock(&w->wlock);
    while (!w->quit) {
        sleep_locked(w, w->opts.poll_ms);
        if (w->quit)
            continue;
        if (!*w->opts.stop) {
            check_slow(w);
            continue;
        }
        if (seen < 0) {
            seen = mono_ms();
            if (w->opts.notice)
                TW_INFO("%s", w->opts.notice);
        }
        if (mono_ms() - seen < w->opts.grace_ms)
            continue;
        pthread_mutex_unlock(&w->wlock);
        if (take_over_if_inside(w))
            return NULL;
        pthread_mutex_lock(&w->wlock);
    }
    pthread_mutex_unlock(&w->wlock);
    return NULL;
}

tw_stop_watch_t *tw_stop_watch_start(const tw_stop_watch_opts_t *opts, tw_error_t *err)
{
    tw_stop_watch_t *w = tw_calloc(1, sizeof *w);
    pthread_condattr_t attr;

    w->opts = *opts;
    if (w->opts.poll_ms <= 0)
        w->opts.poll_ms = DEFAULT_POLL_MS;
    pthread_mutex_init(&w->lock, NULL);
    pthread_mutex_init(&w->wlock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&w->wake, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_lock(&w->lock);
    if (pthread_create(&w->thread, NULL, watch, w) != 0) {
        pthread_mutex_unlock(&w->lock);
        pthread_cond_destroy(&w->wake);
        pthread_mutex_destroy(&w->wlock);
        pthread_mutex_destroy(&w->lock);
        free(w);
        tw_error_set(err, TW_ERR_SYSTEM, 0, "cannot start the stop watcher thread");
        return NULL;
    }
    return w;
}

static void enter(tw_stop_watch_t *w, bool timed)
{
    if (!w)
        return;
    w->inside = true;
    w->timed = timed;
    w->slow_told = false;
    w->entries++;
    pthread_mutex_unlock(&w->lock);
}

void tw_stop_watch_enter(tw_stop_watch_t *w)
{
    enter(w, false);
}

void tw_stop_watch_enter_timed(tw_stop_watch_t *w)
{
    enter(w, true);
}

void tw_stop_watch_leave(tw_stop_watch_t *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->lock);
    w->inside = false;
}

void tw_stop_watch_free(tw_stop_watch_t *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->wlock);
    w->quit = true;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->wlock);
    /* A watcher waiting for the lock gets it, sees the owner outside any
     * call, and then sees quit. */
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->wlock);
    pthread_mutex_destroy(&w->lock);
    free(w);
}
