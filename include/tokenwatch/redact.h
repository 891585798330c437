/*
 * redact.h - connection strings made fit to print.
 *
 * A pure function: no I/O, no allocation. Used wherever a URI may reach a
 * log line, an error message or any other output.
 */
#ifndef TOKENWATCH_REDACT_H
#define TOKENWATCH_REDACT_H

#include <stddef.h>

/* At most this many secret spans are told apart in one URL; past it,
 * everything from the first secret left over to the end is hidden. */
#define TW_REDACT_SPANS_MAX 32

/*
 * Copies url into out (out_size bytes, always NUL-terminated when out_size
 * > 0) with every secret replaced by "***":
 *  - the password of the userinfo. The userinfo runs from after
 *    "scheme://" (or the start, when there is no valid scheme) to the LAST
 *    '@' before the first '?' or '#' (a password may hold '/', '@', ':');
 *    if no '@' comes before them, to the first '@' after them (a password
 *    with an unescaped '?' or '#'). The password is what follows the first
 *    ':' of the userinfo; the user name is kept.
 *  - the value of every query option whose key (percent-decoded, any case)
 *    contains "password", "secret" or "token", and the whole value of
 *    authMechanismProperties (AWS_SESSION_TOKEN:...). Options are separated
 *    by '&' or ';'; the query ends at '#'.
 * "mongodb://cdc:p/w@h/?tlsCertificateKeyFilePassword=k" ->
 * "mongodb://cdc:***@h/?tlsCertificateKeyFilePassword=***".
 * Output that does not fit is cut at a UTF-8 character boundary. NULL url
 * gives "".
 */
void tw_redact_url(const char *url, char *out, size_t out_size);

#endif
