/*
 * redact.h - secrets made fit to print: the one place that decides what
 * of a connection string, an endpoint URL or a text from outside may be
 * shown.
 *
 * Pure functions: no I/O, no allocation. Used wherever a URI, a webhook
 * URL or a reply that may quote one can reach a log line, an error message
 * or any other output.
 */
#ifndef TOKENWATCH_REDACT_H
#define TOKENWATCH_REDACT_H

#include <stdbool.h>
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

/*
 * An endpoint URL whose path and query are the secret (a Slack or generic
 * webhook, a heartbeat URL with its token) reduced to scheme, host and the
 * port written in it, for logs:
 * "https://hooks.slack.com/services/T/B/X" -> "https://hooks.slack.com/…".
 * Any user name or password is left out; the scheme is shown in lower
 * case. What does not start with scheme://host becomes "…". Cut at a
 * UTF-8 character boundary to fit out_size bytes (NUL included); NULL url
 * gives "…".
 */
void tw_redact_endpoint(const char *url, char *out, size_t out_size);

/* Where the part of url that tw_redact_endpoint hides starts: its path (or
 * query, or fragment); the end of url when it has none. NULL gives NULL. */
const char *tw_redact_endpoint_secret(const char *url);

/*
 * Cuts text (NUL-terminated, in a buffer of size bytes) where secret first
 * occurs and puts "…" there when it fits: for what comes back from the
 * network (a library's message, a server's reply), which might quote a
 * secret it was sent. A secret NULL or shorter than 2 bytes is ignored.
 * Returns whether anything was cut.
 */
bool tw_redact_scrub(char *text, size_t size, const char *secret);

#endif
