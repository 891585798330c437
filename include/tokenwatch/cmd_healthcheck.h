/*
 * cmd_healthcheck.h - `tokenwatch healthcheck`: the container HEALTHCHECK.
 */
#ifndef TOKENWATCH_CMD_HEALTHCHECK_H
#define TOKENWATCH_CMD_HEALTHCHECK_H

#include "tokenwatch/settings.h"

/*
 * Asks the running watcher's /healthz at s->metrics_addr (a wildcard
 * address is reached on loopback), so the image needs no curl. The exit
 * code: 0 when it answers 200, 1 when it answers otherwise or not at all,
 * 2 (TW_EXIT_USAGE) when --metrics-addr is off or unusable. Needs
 * curl_global_init. Exits nothing: main() does.
 */
int tw_cmd_healthcheck(const tw_settings_t *s);

#endif
