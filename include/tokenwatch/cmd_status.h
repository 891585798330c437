/*
 * cmd_status.h - `tokenwatch status [--json]`: one round of the guard, for
 * cron, Kubernetes CronJobs and Nagios/Icinga.
 *
 * Measures every guarded token now and prints a table (or, with --json, one
 * JSON document) on stdout: the keys and their states, the oplog window,
 * the shards, the clock and whether the Redis that holds the checkpoints can
 * lose them. Refusals go to stderr. Exits nothing: main() does.
 */
#ifndef TOKENWATCH_CMD_STATUS_H
#define TOKENWATCH_CMD_STATUS_H

#include "tokenwatch/settings.h"

/* The exit code: 0 OK, 1 WARN, 2 CRIT or LOST, 3 UNKNOWN; 2
 * (TW_EXIT_USAGE) too for an argument, a Redis URL or a MongoDB URI that
 * cannot be used. */
int tw_cmd_status(const tw_settings_t *s);

#endif
