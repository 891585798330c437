/*
 * cmd_decode.h - `tokenwatch decode TOKEN`.
 */
#ifndef TOKENWATCH_CMD_DECODE_H
#define TOKENWATCH_CMD_DECODE_H

#include "tokenwatch/settings.h"

/*
 * Prints the layout, cluster time and date inside the one token in
 * s->positional ({"_data":"82..."} or the bare hex), or says that its
 * layout is opaque. The exit code: 0, or 2 (TW_EXIT_USAGE) for no token,
 * more than one, or one that cannot be read. Exits nothing: main() does.
 */
int tw_cmd_decode(const tw_settings_t *s);

#endif
