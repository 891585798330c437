/*
 * http.c - /metrics, /healthz and /readyz served with libmicrohttpd; the
 * connection limits and the flood log. What it serves comes from metrics.h
 * (render, last heartbeat, readiness), never from the registry's fields.
 */
#include "tokenwatch/http.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "tokenwatch/log.h"
#include "tokenwatch/mem.h"

#define READY_TEXT_MAX 512

#define CONTENT_TYPE_METRICS "text/plain; version=0.0.4; charset=utf-8"
#define CONTENT_TYPE_TEXT "text/plain; charset=utf-8"

/*
 * Idle or slow clients must not starve the liveness probe (README, /metrics).
 * One polling thread (epoll on Linux) serves every connection, so a
 * connection costs a descriptor and a small buffer, not a thread:
 * - a connection quiet for HTTP_CONNECTION_TIMEOUT_S is cut, so a probe
 *   queued behind a full server waits seconds, not forever;
 * - one client address holds at most HTTP_PER_IP_LIMIT connections, more are
 *   closed at once; a probe from another address always finds room among
 *   HTTP_CONNECTION_LIMIT, unless HTTP_CONNECTION_LIMIT / HTTP_PER_IP_LIMIT
 *   addresses flood together;
 * - the per-address limit is above what a test or a sidecar on the same
 *   loopback address opens by accident (100), far below the total;
 * - the total stays well under the usual 1024 descriptors a process gets.
 * Refusals are logged once per flood; a flood is over after
 * HTTP_FLOOD_QUIET_MS without one, which is logged once too (from
 * tw_http_tick when no connection comes).
 */
#define HTTP_CONNECTION_TIMEOUT_S 3u
#define HTTP_CONNECTION_LIMIT 512u
#define HTTP_PER_IP_LIMIT 128u
#define HTTP_FLOOD_QUIET_MS 30000

struct tw_http {
    struct MHD_Daemon *daemon;
    tw_metrics_t *metrics;
    const tw_clock_t *clock;
    int64_t stall_ms;
    int64_t started_ms;
    int port;
    /*
     * libmicrohttpd says why a bind failed only through its logger. While
     * tw_http_start runs, lines from the thread running it are kept here for
     * the error; `starting` is only touched by that thread.
     */
    pthread_t starter;
    bool starting;
    char start_message[512];
    /* A flood: refusals since the first one, logged once (flood_lock). */
    pthread_mutex_t flood_lock;
    bool flooding;
    int64_t last_refusal_ms;
    unsigned long long refused;
};

/* libmicrohttpd says this once per refused connection: counted instead.
 * Why, in our words, or NULL for another message. */
static const char *refusal_reason(const char *line)
{
    if (strstr(line, "reached connection limit"))
        return "a connection limit is reached";
    if (strstr(line, "resource limit"))
        return "out of descriptors";
    return NULL;
}

static void flood_refused(tw_http_t *h, const char *reason)
{
    int64_t now = tw_clock_mono_ms(h->clock);

    pthread_mutex_lock(&h->flood_lock);
    if (!h->flooding) {
        h->flooding = true;
        h->refused = 0;
        TW_WARN("metrics http: refusing connections, %s: at most %u at once, "
                "%u per client address, idle ones cut after %u s; further "
                "refusals are counted, not logged",
                reason, HTTP_CONNECTION_LIMIT, HTTP_PER_IP_LIMIT,
                HTTP_CONNECTION_TIMEOUT_S);
    }
    h->refused++;
    h->last_refusal_ms = now;
    pthread_mutex_unlock(&h->flood_lock);
}

/* Ends a flood once no connection was refused for HTTP_FLOOD_QUIET_MS:
 * when a connection comes or goes, and on tw_http_tick. */
static void flood_check(tw_http_t *h)
{
    int64_t now = tw_clock_mono_ms(h->clock);

    pthread_mutex_lock(&h->flood_lock);
    if (h->flooding && now - h->last_refusal_ms >= HTTP_FLOOD_QUIET_MS) {
        h->flooding = false;
        TW_INFO("metrics http: accepting connections again after refusing %llu",
                h->refused);
    }
    pthread_mutex_unlock(&h->flood_lock);
}

static void notify_connection(void *cls, struct MHD_Connection *conn,
                              void **socket_context,
                              enum MHD_ConnectionNotificationCode code)
{
    (void)conn;
    (void)socket_context;
    (void)code;
    flood_check(cls);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    tw_http_t *h = cls;
    char line[512];
    const char *reason;
    size_t len;

    vsnprintf(line, sizeof line, fmt, ap);
    len = strlen(line);
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        line[--len] = '\0';
    if (pthread_equal(pthread_self(), h->starter) && h->starting) {
        if (h->start_message[0] == '\0') /* the first is the cause */
            snprintf(h->start_message, sizeof h->start_message, "%s", line);
        return;
    }
    reason = refusal_reason(line);
    if (reason) {
        flood_refused(h, reason);
        return;
    }
    TW_WARN("metrics http: %s", line);
}

/* Queues a response; body is copied, or taken over (and freed) with
 * take_body. */
static enum MHD_Result respond(struct MHD_Connection *conn, unsigned int status,
                               const char *content_type, char *body,
                               bool take_body, const char *allow)
{
    struct MHD_Response *r;
    enum MHD_Result ret = MHD_NO;

    r = MHD_create_response_from_buffer(
        strlen(body), body,
        take_body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_MUST_COPY);
    if (!r) {
        if (take_body)
            free(body);
        goto out;
    }
    if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                                content_type) == MHD_NO ||
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL,
                                "no-store") == MHD_NO ||
        (allow && MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow) ==
                      MHD_NO))
        goto out_destroy;
    ret = MHD_queue_response(conn, status, r);
out_destroy:
    MHD_destroy_response(r);
out:
    return ret;
}

static enum MHD_Result serve_metrics(tw_http_t *h, struct MHD_Connection *conn)
{
    char *body = tw_metrics_render(h->metrics);
    char too_big[] = "metrics text over its size limit\n";

    /* NULL only when the text would pass the registry's cap. */
    if (!body)
        return respond(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, CONTENT_TYPE_TEXT,
                       too_big, false, NULL);
    return respond(conn, MHD_HTTP_OK, CONTENT_TYPE_METRICS, body, true, NULL);
}

static enum MHD_Result serve_healthz(tw_http_t *h, struct MHD_Connection *conn)
{
    char body[256];
    int64_t now = tw_clock_mono_ms(h->clock), since, age;
    bool has_beat;

    since = h->started_ms;
    has_beat = tw_metrics_last_heartbeat(h->metrics, &since);
    age = now - since;
    if (age < h->stall_ms) {
        snprintf(body, sizeof body, "ok\n");
        return respond(conn, MHD_HTTP_OK, CONTENT_TYPE_TEXT, body, false,
                       NULL);
    }
    snprintf(body, sizeof body,
             "stalled: %s for %lld ms (limit %lld ms)\n",
             has_beat ? "no heartbeat" : "no heartbeat since start",
             (long long)age, (long long)h->stall_ms);
    return respond(conn, MHD_HTTP_SERVICE_UNAVAILABLE, CONTENT_TYPE_TEXT, body,
                   false, NULL);
}

static enum MHD_Result serve_readyz(tw_http_t *h, struct MHD_Connection *conn)
{
    char missing[READY_TEXT_MAX];
    char body[READY_TEXT_MAX + 32];
    unsigned int status = MHD_HTTP_SERVICE_UNAVAILABLE;

    if (tw_metrics_standby(h->metrics)) {
        snprintf(body, sizeof body, "ready: standby (another process holds the lease)\n");
        status = MHD_HTTP_OK;
    } else if (!tw_metrics_readiness(h->metrics, missing, sizeof missing)) {
        snprintf(body, sizeof body, "not ready: nothing reported yet\n");
    } else if (missing[0]) {
        snprintf(body, sizeof body, "not ready: %s\n", missing);
    } else {
        snprintf(body, sizeof body, "ready\n");
        status = MHD_HTTP_OK;
    }
    return respond(conn, status, CONTENT_TYPE_TEXT, body, false, NULL);
}

/*
 * Answers on the first call for a request: these endpoints take no body, and
 * libmicrohttpd closes the connection after a response queued before a body
 * it did not read.
 */
static enum MHD_Result handle_request(void *cls, struct MHD_Connection *conn,
                                      const char *url, const char *method,
                                      const char *version,
                                      const char *upload_data,
                                      size_t *upload_data_size, void **con_cls)
{
    tw_http_t *h = cls;
    char not_allowed[] = "method not allowed\n";
    char not_found[] = "not found\n";

    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)con_cls;
    /* HEAD as well: libmicrohttpd sends the headers of the GET answer. */
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
        strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return respond(conn, MHD_HTTP_METHOD_NOT_ALLOWED, CONTENT_TYPE_TEXT,
                       not_allowed, false, "GET, HEAD");
    if (strcmp(url, "/metrics") == 0)
        return serve_metrics(h, conn);
    if (strcmp(url, "/healthz") == 0)
        return serve_healthz(h, conn);
    if (strcmp(url, "/readyz") == 0)
        return serve_readyz(h, conn);
    return respond(conn, MHD_HTTP_NOT_FOUND, CONTENT_TYPE_TEXT, not_found,
                   false, NULL);
}

/* Digits only (no sign, no spaces), 0..65535. */
static bool parse_port(const char *text, int *port)
{
    long v = 0;
    const char *p;

    if (*text == '\0' || strlen(text) > 5)
        return false;
    for (p = text; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        v = v * 10 + (*p - '0');
    }
    if (v > 65535)
        return false;
    *port = (int)v;
    return true;
}

bool tw_http_parse_addr(const char *addr, char *host, size_t host_size,
                        int *port, tw_error_t *err)
{
    char literal[TW_HTTP_HOST_MAX];
    unsigned char scratch[sizeof(struct in6_addr)];
    const char *host_start, *host_end, *colon;
    size_t len;
    bool v6 = addr[0] == '[';

    if (v6) {
        host_start = addr + 1;
        host_end = strchr(addr, ']');
        if (!host_end || host_end[1] != ':') {
            tw_error_set(err, TW_ERR_USAGE, 0,
                         "'%s' is not [IPv6]:PORT (e.g. [::1]:9470)", addr);
            return false;
        }
        colon = host_end + 1;
    } else {
        host_start = addr;
        colon = strrchr(addr, ':');
        if (!colon) {
            tw_error_set(err, TW_ERR_USAGE, 0,
                         "'%s' is not HOST:PORT (e.g. 127.0.0.1:9470)", addr);
            return false;
        }
        host_end = colon;
        if (memchr(addr, ':', (size_t)(colon - addr))) {
            tw_error_set(err, TW_ERR_USAGE, 0,
                         "'%s': an IPv6 address goes in brackets, as in "
                         "[::1]:9470",
                         addr);
            return false;
        }
    }
    len = (size_t)(host_end - host_start);
    if (len == 0) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "'%s' names no host: write 0.0.0.0:PORT to listen on "
                     "every interface, 127.0.0.1:PORT for this machine only",
                     addr);
        return false;
    }
    if (len >= sizeof literal || len >= host_size) {
        tw_error_set(err, TW_ERR_USAGE, 0, "'%s': the host is too long", addr);
        return false;
    }
    memcpy(literal, host_start, len);
    literal[len] = '\0';
    if (v6 ? inet_pton(AF_INET6, literal, scratch) != 1
           : strcmp(literal, "localhost") != 0 &&
                 inet_pton(AF_INET, literal, scratch) != 1) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "'%s': the host must be an IPv4 address, localhost or "
                     "an IPv6 address in brackets",
                     addr);
        return false;
    }
    if (!parse_port(colon + 1, port)) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "'%s': the port must be a number from 0 to 65535", addr);
        return false;
    }
    memcpy(host, literal, len + 1);
    return true;
}

/*
 * Starts h->daemon on the first address host resolves to that binds:
 * localhost may resolve to ::1 first on a host without IPv6. false, with a
 * message naming addr, when none does.
 */
static bool listen_first(tw_http_t *h, const char *addr, const char *host,
                         int port, tw_error_t *err)
{
    char service[8];
    struct addrinfo hints, *res = NULL;
    const struct addrinfo *ai;
    int rc;

    snprintf(service, sizeof service, "%d", port);
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    rc = getaddrinfo(host, service, &hints, &res);
    if (rc != 0) {
        tw_error_set(err, TW_ERR_SYSTEM, rc, "cannot resolve %s: %s", addr,
                     gai_strerror(rc));
        return false;
    }
    for (ai = res; ai && !h->daemon; ai = ai->ai_next) {
        unsigned int flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG;

        if (ai->ai_family == AF_INET6)
            flags |= MHD_USE_IPv6; /* else MHD reads a sockaddr_in */
        else if (ai->ai_family != AF_INET)
            continue;
        h->starting = true;
        h->daemon = MHD_start_daemon(
            /* The port only names the socket in MHD's messages. */
            flags, (uint16_t)port, NULL, NULL, handle_request, h,
            /* first, so that start-up messages already go through it */
            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h,
            MHD_OPTION_SOCK_ADDR, ai->ai_addr,
            MHD_OPTION_CONNECTION_TIMEOUT, HTTP_CONNECTION_TIMEOUT_S,
            MHD_OPTION_CONNECTION_LIMIT, HTTP_CONNECTION_LIMIT,
            MHD_OPTION_PER_IP_CONNECTION_LIMIT, HTTP_PER_IP_LIMIT,
            MHD_OPTION_NOTIFY_CONNECTION, notify_connection, h,
            MHD_OPTION_END);
        h->starting = false;
    }
    freeaddrinfo(res);
    if (!h->daemon) {
        tw_error_set(err, TW_ERR_SYSTEM, 0, "cannot listen on %s: %s", addr,
                     h->start_message[0] ? h->start_message
                                         : "libmicrohttpd did not start");
        return false;
    }
    return true;
}

tw_http_t *tw_http_start(tw_metrics_t *m, const char *addr,
                         const tw_clock_t *clock, int64_t stall_ms,
                         tw_error_t *err)
{
    char host[TW_HTTP_HOST_MAX];
    int port;
    const union MHD_DaemonInfo *info;
    tw_http_t *h;

    if (!tw_http_parse_addr(addr, host, sizeof host, &port, err))
        return NULL;
    if (!m || !clock || stall_ms <= 0) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "serving %s needs a registry, a clock and a positive "
                     "stall limit",
                     addr);
        return NULL;
    }
    h = tw_calloc(1, sizeof *h);
    h->metrics = m;
    h->clock = clock;
    h->stall_ms = stall_ms;
    h->started_ms = tw_clock_mono_ms(clock);
    h->starter = pthread_self();
    pthread_mutex_init(&h->flood_lock, NULL);
    if (!listen_first(h, addr, host, port, err))
        goto out_free_h;
    info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info && info->port ? info->port : port;
    TW_INFO("serving /metrics, /healthz and /readyz on %s (port %d)", addr,
            h->port);
    return h;

out_free_h:
    pthread_mutex_destroy(&h->flood_lock);
    free(h);
    return NULL;
}

int tw_http_port(const tw_http_t *h)
{
    return h ? h->port : 0;
}

void tw_http_tick(tw_http_t *h)
{
    if (h)
        flood_check(h);
}

void tw_http_free(tw_http_t *h)
{
    if (!h)
        return;
    MHD_stop_daemon(h->daemon);
    pthread_mutex_destroy(&h->flood_lock);
    free(h);
}
