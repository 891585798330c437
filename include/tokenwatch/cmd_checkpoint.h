/*
 * cmd_checkpoint.h - `tokenwatch checkpoint show | history | rollback [N]`.
 *
 * Each reads the settings (the name, Redis, --dry-run, --confirm), prints
 * its result on stdout and refusals on stderr, and returns the exit code
 * (TW_EXIT_*, run.h): 0 done, 1 Redis could not be reached or failed, 2 a
 * bad argument, an unconfirmed protected environment or a record that
 * cannot be used. Exits nothing: main() does.
 */
#ifndef TOKENWATCH_CMD_CHECKPOINT_H
#define TOKENWATCH_CMD_CHECKPOINT_H

#include "tokenwatch/clock.h"
#include "tokenwatch/settings.h"

/* The stored checkpoint: key, token, cluster time and its age (clock's
 * wall time), when it was updated, events, source and scope. */
int tw_cmd_checkpoint_show(const tw_settings_t *s, tw_clock_t *clock);

/* The earlier checkpoints, newest first, one line each. */
int tw_cmd_checkpoint_history(const tw_settings_t *s);

/* Makes history entry N (positional[1], 1 by default) the checkpoint, the
 * one it replaces becoming entry 1; --dry-run prints the plan only. */
int tw_cmd_checkpoint_rollback(const tw_settings_t *s, tw_clock_t *clock);

#endif
