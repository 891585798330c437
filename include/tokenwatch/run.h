/*
 * run.h - `tokenwatch run`: follow, hand on, checkpoint; ride out outages.
 */
#ifndef TOKENWATCH_RUN_H
#define TOKENWATCH_RUN_H

#include <signal.h>
#include <stdio.h>

#include "tokenwatch/clock.h"
#include "tokenwatch/settings.h"

enum {
    TW_EXIT_OK = 0,      /* stopped by a signal, --until or --max-events */
    TW_EXIT_FAILURE = 1, /* a failure it cannot ride out */
    TW_EXIT_USAGE = 2,   /* bad settings, or a checkpoint of another scope */
    TW_EXIT_LOST = 3     /* the resume point is gone */
};

/*
 * Runs until *stop is set (SIGTERM/SIGINT/SIGHUP), --until or --max-events,
 * or a failure; returns the exit code. Events go to out for --sink stdout.
 * When a MongoDB call keeps the run from acting on *stop for a second, its
 * stop watcher writes the last checkpoint and ends the process itself with
 * _exit and that exit code: then tw_run does not return.
 */
int tw_run(const tw_settings_t *settings, tw_clock_t *clock,
           volatile sig_atomic_t *stop, FILE *out);

#endif
