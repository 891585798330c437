/*
 * http.h - the metrics registry served over HTTP.
 *
 * tw_http_t serves a tw_metrics_t with libmicrohttpd on one internal thread:
 * GET (or HEAD) /metrics, /healthz and /readyz; other paths 404, other
 * methods 405. It reads the registry only through metrics.h's functions
 * (tw_metrics_render, tw_metrics_last_heartbeat, tw_metrics_readiness).
 */
#ifndef TOKENWATCH_HTTP_H
#define TOKENWATCH_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenwatch/clock.h"
#include "tokenwatch/error.h"
#include "tokenwatch/metrics.h"

typedef struct tw_http tw_http_t;

#define TW_HTTP_HOST_MAX 256

/*
 * Parses "HOST:PORT" where HOST is an IPv4 address (0.0.0.0 for every
 * interface), "localhost" or an IPv6 address in brackets ("[::1]:9470"),
 * and PORT is 0..65535 (0: any free port). host receives the address
 * without brackets. false, with a message naming the value, on anything
 * else.
 */
bool tw_http_parse_addr(const char *addr, char *host, size_t host_size,
                        int *port, tw_error_t *err);

/*
 * Starts serving m on addr, on a thread of its own. m and clock are
 * borrowed and must outlive the server (until tw_http_free returns); clock
 * is read from the server thread, so its mono_ms must be safe to call from
 * there.
 *
 * /healthz is 200 while the last heartbeat is younger than stall_ms (> 0),
 * 503 naming the age otherwise; before the first heartbeat the age counts
 * from this call. /readyz is 200 when every part is ready, 503 listing
 * those that are not.
 *
 * NULL on error: a bad addr (TW_ERR_USAGE) or one that cannot be bound, a
 * port in use (TW_ERR_SYSTEM); the message names the address.
 */
tw_http_t *tw_http_start(tw_metrics_t *m, const char *addr,
                         const tw_clock_t *clock, int64_t stall_ms,
                         tw_error_t *err);

/* The port bound (useful after asking for port 0). */
int tw_http_port(const tw_http_t *h);

/*
 * Logs the end of a connection flood once it has been quiet long enough.
 * libmicrohttpd calls back only when a connection comes or goes, and after
 * a flood none may come for a long while: call this now and then (the run
 * loop does, with its heartbeat). Cheap; safe from any thread; NULL is fine.
 */
void tw_http_tick(tw_http_t *h);

/* Stops the server thread, closes the socket and frees the server. NULL is fine. */
void tw_http_free(tw_http_t *h);

#endif
