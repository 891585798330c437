/*
 * secret.h - secrets from mounted files (Kubernetes and compose secrets):
 * the webhook URL, the Redis password, the MongoDB connection string.
 *
 * Errors name the file, never its content, and a secret is zeroed before
 * its memory is given back.
 */
#ifndef TOKENWATCH_SECRET_H
#define TOKENWATCH_SECRET_H

#include <stdbool.h>

#include "tokenwatch/error.h"

/*
 * Reads the one line a secret file holds. Blanks around it and the final
 * newline (echo, editors and Kubernetes add them) are dropped; an empty
 * file, more than one line or more than 8 KiB is refused. `what` names the
 * file in messages ("the Slack webhook file"). *out is the caller's: free it
 * with tw_secret_free.
 */
bool tw_secret_read_file(const char *path, const char *what, char **out,
                         tw_error_t *err);

/* Zeroes a secret, then frees it; NULL is fine. */
void tw_secret_free(char *secret);

#endif
