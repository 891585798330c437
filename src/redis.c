#include "tokenwatch/redis.h"

#include "tokenwatch/mem.h"
#include "tokenwatch/redact.h"
#include "tokenwatch/secret.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <sys/un.h>

/* The longest path a socket address holds (its NUL aside): 107 on Linux. */
#define SOCKET_PATH_MAX ((int)sizeof(((struct sockaddr_un *)0)->sun_path) - 1)

void tw_redis_url_release(tw_redis_url_t *url)
{
    if (!url)
        return;
    free(url->host);
    free(url->socket);
    free(url->user);
    tw_secret_free(url->password);
    for (size_t k = 0; k < url->sentinel_count; k++)
        free(url->sentinel_host[k]);
    free(url->sentinel_host);
    free(url->sentinel_port);
    free(url->master_name);
    memset(url, 0, sizeof *url);
}

static char *dup_part(CURLU *u, CURLUPart part, unsigned flags)
{
    char *value = NULL;
    char *copy;

    if (curl_url_get(u, part, &value, flags) != CURLUE_OK || !value)
        return NULL;
    copy = value[0] ? tw_strdup(value) : NULL;
    if (part == CURLUPART_PASSWORD)
        explicit_bzero(value, strlen(value));
    curl_free(value);
    return copy;
}

static bool parse_db(const char *text, int *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(text, &end, 10);
    if (errno || end == text || *end != '\0' || v < 0 || v > 1000000)
        return false;
    *out = (int)v;
    return true;
}

/* What keeps an absolute path (len bytes) from naming a socket file, or
 * NULL: a directory (a trailing '/', ".", "..": unix:/// is the root), or
 * more than a socket address holds (hiredis would cut it short). */
static const char *socket_path_problem(const char *path, size_t len, char *buf, size_t size)
{
    size_t base = len;

    while (base > 0 && path[base - 1] != '/')
        base--;
    if (base == len || (len - base == 1 && path[base] == '.') ||
        (len - base == 2 && path[base] == '.' && path[base + 1] == '.'))
        return "names a directory, not a socket file";
    if (len > SOCKET_PATH_MAX) {
        snprintf(buf, size, "is %zu bytes, longer than the %d bytes a socket path can be", len,
                 SOCKET_PATH_MAX);
        return buf;
    }
    return NULL;
}

/* unix:///path.sock[?db=N]: a file path, which URL parsers read as a host. */
static bool parse_unix(const char *rest, tw_redis_url_t *out, tw_error_t *err)
{
    char buf[96];
    const char *problem;
    const char *query = strchr(rest, '?');
    size_t len = query ? (size_t)(query - rest) : strlen(rest);

    if (strchr(rest, '#')) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "unix:// takes no #fragment: its one option is ?db=N");
        return false;
    }

    if (len == 0 || rest[0] != '/') {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "unix:// needs an absolute socket path: "
                     "unix:///run/redis.sock");
        return false;
    }
    problem = socket_path_problem(rest, len, buf, sizeof buf);
    if (problem) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "unix:// socket path %.*s%s %s: give the socket's file, as in "
                     "unix:///run/redis.sock",
                     (int)(len < 64 ? len : 64), rest, len > 64 ? "..." : "", problem);
        return false;
    }
    if (query && (strncmp(query, "?db=", 4) != 0 || !parse_db(query + 4, &out->db))) {
        char shown[256];

        /* The query may hold a password: quote it redacted. */
        tw_redact_url(query, shown, sizeof shown);
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "unix:// takes one option, ?db=N, not '%s'", shown);
        return false;
    }
    out->socket = tw_strndup(rest, len);
    return true;
}

/* What curl would read past, checked on the text itself: "redis:///0" has
 * no host (curl takes "0", which connects to 0.0.0.0), and a query or a
 * fragment would be dropped without a word. Never quotes the URL. */
static bool check_redis_form(const char *text, tw_error_t *err)
{
    const char *authority = text + strlen("redis://");
    size_t len = strcspn(authority, "/?#");
    const char *host = authority;

    for (const char *at = authority; at < authority + len; at++)
        if (*at == '@')
            host = at + 1;
    if (host == authority + len || *host == ':') {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "the URL names no host: write redis://[user:password@]host:port/db");
        return false;
    }
    if (strpbrk(text, "?#")) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "redis:// takes no ?options or #fragment: the database is the "
                     "path (/0) and a '?' or '#' in the password is written %%3F or "
                     "%%23; only unix:// takes an option, ?db=N");
        return false;
    }
    return true;
}

/* A redis:// URL's host, port, user, password and database. */
static bool parse_redis_parts(CURLU *u, tw_redis_url_t *out, tw_error_t *err)
{
    char *path = dup_part(u, CURLUPART_PATH, CURLU_URLDECODE);
    char *port = dup_part(u, CURLUPART_PORT, 0);
    bool ok = false;

    out->host = dup_part(u, CURLUPART_HOST, 0);
    out->user = dup_part(u, CURLUPART_USER, CURLU_URLDECODE);
    out->password = dup_part(u, CURLUPART_PASSWORD, CURLU_URLDECODE);
    out->port = 6379;
    if (!out->host) {
        tw_error_set(err, TW_ERR_USAGE, 0, "the URL names no host");
        goto out;
    }
    /* curl keeps IPv6 brackets, which connect() does not want. */
    if (out->host[0] == '[') {
        size_t n = strlen(out->host);
        memmove(out->host, out->host + 1, n - 2);
        out->host[n - 2] = '\0';
    }
    if (port && (!parse_db(port, &out->port) || out->port < 1 || out->port > 65535)) {
        tw_error_set(err, TW_ERR_USAGE, 0, "port '%s' is not 1-65535", port);
        goto out;
    }
    if (path && strcmp(path, "/") != 0 && !parse_db(path + 1, &out->db)) {
        /* "redis://u:12/pa@h/0": a '/' in the password ends the host,
         * and the rest of the password is the path: never quote it. */
        tw_error_set(err, TW_ERR_USAGE, 0, "the path is not a database number (/0)%s",
                     strchr(path, '@') ? "; percent-encode a '/' in the password as %2F"
                                       : "");
        goto out;
    }
    ok = true;
out:
    free(path);
    free(port);
    return ok;
}

/* One sentinel, "host[:port]" or "[v6]:port" (len bytes of text). */
static bool add_sentinel(tw_redis_url_t *out, const char *text, size_t len, tw_error_t *err)
{
    char item[300], *host = item, *port_text = NULL;
    int port = 26379;

    if (len == 0 || len >= sizeof item || out->sentinel_count == TW_REDIS_SENTINELS_MAX) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     len == 0 ? "a sentinel names no host (two commas, or one at an end)"
                              : "too many sentinels, or a host name too long");
        return false;
    }
    memcpy(item, text, len);
    item[len] = '\0';
    if (item[0] == '[') {
        char *close = strchr(item, ']');

        if (!close || (close[1] && close[1] != ':')) {
            tw_error_set(err, TW_ERR_USAGE, 0, "a sentinel's IPv6 address is not [addr]:port");
            return false;
        }
        *close = '\0';
        host = item + 1;
        port_text = close[1] ? close + 2 : NULL;
    } else if ((port_text = strchr(item, ':')) != NULL) {
        *port_text++ = '\0';
    }
    if (!host[0] || (port_text && (!parse_db(port_text, &port) || port < 1 || port > 65535))) {
        tw_error_set(err, TW_ERR_USAGE, 0, "a sentinel is not host[:port] with a port 1-65535");
        return false;
    }
    out->sentinel_host[out->sentinel_count] = tw_strdup(host);
    out->sentinel_port[out->sentinel_count] = port;
    out->sentinel_count++;
    return true;
}

/*
 * redis-sentinel://[userinfo@]h1[:p1],h2[:p2][/db]#MASTER: the sentinels by
 * hand (a URL parser takes one host), the rest as a redis:// URL with the
 * first sentinel standing in for the host.
 */
static bool parse_sentinel(const char *text, tw_redis_url_t *out, tw_error_t *err)
{
    const char *rest = text + strlen("redis-sentinel://");
    const char *hash = strchr(rest, '#');
    size_t auth_len = strcspn(rest, "/?#");
    const char *hosts = rest, *at;
    tw_redis_url_t plain;
    char *synthetic;
    bool ok;

    if (!hash || !hash[1] || strpbrk(hash + 1, "/?#@ ")) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "a Sentinel URL ends with the master's name: "
                     "redis-sentinel://h1:26379,h2:26379/0#mymaster");
        return false;
    }
    for (at = rest; at < rest + auth_len; at++)
        if (*at == '@')
            hosts = at + 1;
    out->sentinel_host = tw_calloc(TW_REDIS_SENTINELS_MAX, sizeof *out->sentinel_host);
    out->sentinel_port = tw_calloc(TW_REDIS_SENTINELS_MAX, sizeof *out->sentinel_port);
    for (const char *h = hosts; h < rest + auth_len;) {
        size_t len = strcspn(h, ",/?#");

        if (!add_sentinel(out, h, len, err))
            return false;
        h += len + (h[len] == ',');
    }
    if (out->sentinel_count == 0) {
        tw_error_set(err, TW_ERR_USAGE, 0, "a Sentinel URL names no sentinel");
        return false;
    }
    /* redis:// + userinfo@ + a host + the path, without the fragment. */
    synthetic = tw_malloc(strlen(text) + 16);
    snprintf(synthetic, strlen(text) + 16, "redis://%.*slocalhost%.*s",
             (int)(hosts - rest), rest, (int)(hash - (rest + auth_len)), rest + auth_len);
    ok = tw_redis_url_parse(synthetic, &plain, err);
    explicit_bzero(synthetic, strlen(synthetic));
    free(synthetic);
    if (!ok)
        return false;
    out->user = plain.user;
    out->password = plain.password;
    out->db = plain.db;
    plain.user = plain.password = NULL;
    tw_redis_url_release(&plain);
    out->master_name = tw_strdup(hash + 1);
    return true;
}

bool tw_redis_url_parse(const char *text, tw_redis_url_t *out,
                        tw_error_t *err)
{
    CURLU *u = curl_url();
    char *scheme = NULL;
    bool ok = false;

    memset(out, 0, sizeof *out);
    if (!u)
        tw_die("out of memory (libcurl's URL handle)");
    if (strncasecmp(text, "unix://", 7) == 0) {
        ok = parse_unix(text + 7, out, err);
        goto out;
    }
    if (strncasecmp(text, "redis-sentinel://", 17) == 0) {
        ok = parse_sentinel(text, out, err);
        goto out;
    }
    if (strncasecmp(text, "rediss://", 9) == 0) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "rediss:// (TLS) is not supported by this build's "
                     "hiredis 0.14: reach Redis through a TLS proxy "
                     "(stunnel, a service mesh) with redis://");
        goto out;
    }
    /* curl also takes "redis:/host" (one slash), which would pass by the
     * form check: only redis:// is a Redis URL. */
    if (strncasecmp(text, "redis:", 6) == 0 && strncasecmp(text, "redis://", 8) != 0) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "a Redis URL starts with redis:// (two slashes): "
                     "redis://[user:password@]host:port/db");
        goto out;
    }
    if (strncasecmp(text, "redis://", 8) == 0 && !check_redis_form(text, err))
        goto out;
    if (curl_url_set(u, CURLUPART_URL, text, CURLU_NON_SUPPORT_SCHEME) !=
        CURLUE_OK) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "not a URL: write redis://[user:password@]host:port/db "
                     "or unix:///path.sock");
        goto out;
    }
    scheme = dup_part(u, CURLUPART_SCHEME, 0);
    if (!scheme || strcasecmp(scheme, "redis") != 0) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "scheme '%s' is not redis:// or unix://",
                     scheme ? scheme : "");
        goto out;
    }
    if (!parse_redis_parts(u, out, err))
        goto out;
    ok = true;
out:
    free(scheme);
    curl_url_cleanup(u);
    if (!ok)
        tw_redis_url_release(out);
    return ok;
}

bool tw_redis_url_load(const char *text, const char *password,
                       tw_redis_url_t *out, tw_error_t *err)
{
    char *copy;

    if (!tw_redis_url_parse(text, out, err))
        return false;
    if (!password) {
        /* AUTH goes out only with a password: without one the user would be
         * dropped and the connection made as the default user. */
        if (out->user && !out->password) {
            tw_error_set(err, TW_ERR_USAGE, 0,
                         "the Redis user '%s' has no password: give it in the URL "
                         "(redis://user:password@host) or with --redis-password-file",
                         out->user);
            tw_redis_url_release(out);
            return false;
        }
        return true;
    }
    copy = tw_strdup(password);
    tw_secret_free(out->password);
    out->password = copy;
    return true;
}

void tw_redis_error_from_context(const redisContext *c, tw_error_t *err,
                                 const char *what)
{
    tw_error_set(err, TW_ERR_REDIS, c ? c->err : 0, "%s: %s", what,
                 c && c->errstr[0] ? c->errstr : "connection failed");
}

redisReply *tw_redis_command(redisContext *c, tw_error_t *err,
                             const char *fmt, ...)
{
    redisReply *reply;
    va_list ap;

    va_start(ap, fmt);
    reply = redisvCommand(c, fmt, ap);
    va_end(ap);
    if (!reply) {
        tw_redis_error_from_context(c, err, "redis");
        return NULL;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        tw_error_set(err, TW_ERR_REDIS, TW_REDIS_REPLY_ERROR, "redis: %s",
                     reply->str);
        freeReplyObject(reply);
        return NULL;
    }
    return reply;
}

/* Connects to one node (host, or the URL's socket), logs in, selects. */
static redisContext *connect_node(const tw_redis_url_t *url, const char *host, int port,
                                  int timeout_ms, tw_error_t *err)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    redisContext *c;
    redisReply *reply = NULL;

    if (url->socket)
        c = redisConnectUnixWithTimeout(url->socket, tv);
    else
        c = redisConnectWithTimeout(host, port, tv);
    if (!c || c->err) {
        if (url->socket)
            tw_redis_error_from_context(c, err, url->socket);
        else {
            char where[300];
            snprintf(where, sizeof where, "redis %s:%d", host, port);
            tw_redis_error_from_context(c, err, where);
        }
        goto fail;
    }
    if (redisSetTimeout(c, tv) != REDIS_OK) {
        tw_redis_error_from_context(c, err, "redis: setting the timeout");
        goto fail;
    }
    if (url->password) {
        if (url->user)
            reply = tw_redis_command(c, err, "AUTH %s %s", url->user,
                                     url->password);
        else
            reply = tw_redis_command(c, err, "AUTH %s", url->password);
        if (!reply) {
            tw_error_prefix(err, "authentication failed");
            goto fail;
        }
        freeReplyObject(reply);
    }
    if (url->db != 0) {
        reply = tw_redis_command(c, err, "SELECT %d", url->db);
        if (!reply)
            goto fail;
        freeReplyObject(reply);
    }
    return c;
fail:
    redisFree(c);
    return NULL;
}

/* Asks sentinel k where the master is: host (n bytes) and port. */
static bool ask_sentinel(const tw_redis_url_t *url, size_t k, int timeout_ms, char *host,
                         size_t n, int *port, tw_error_t *err)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    redisContext *s = redisConnectWithTimeout(url->sentinel_host[k], url->sentinel_port[k], tv);
    redisReply *r = NULL;
    bool ok = false;
    char where[300];

    snprintf(where, sizeof where, "sentinel %s:%d", url->sentinel_host[k],
             url->sentinel_port[k]);
    if (!s || s->err || redisSetTimeout(s, tv) != REDIS_OK) {
        tw_redis_error_from_context(s, err, where);
        goto out;
    }
    r = tw_redis_command(s, err, "SENTINEL get-master-addr-by-name %s", url->master_name);
    if (!r) {
        tw_error_prefix(err, "%s", where);
        goto out;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING) {
        tw_error_set(err, TW_ERR_REDIS, 0, "%s knows no master named %s", where,
                     url->master_name);
        goto out;
    }
    snprintf(host, n, "%s", r->element[0]->str);
    ok = parse_db(r->element[1]->str, port);
    if (!ok)
        tw_error_set(err, TW_ERR_REDIS, 0, "%s answered a port that is not one", where);
out:
    freeReplyObject(r);
    redisFree(s);
    return ok;
}

/* Whether c is a master now (ROLE), not a replica mid-failover. */
static bool is_master(redisContext *c, tw_error_t *err)
{
    redisReply *r = tw_redis_command(c, err, "ROLE");
    bool master = r && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
                  r->element[0]->type == REDIS_REPLY_STRING &&
                  strcmp(r->element[0]->str, "master") == 0;

    if (r && !master)
        tw_error_set(err, TW_ERR_REDIS, 0, "not a master (a failover under way?)");
    freeReplyObject(r);
    return master;
}

static redisContext *connect_via_sentinels(const tw_redis_url_t *url, int timeout_ms,
                                           tw_error_t *err)
{
    for (size_t k = 0; k < url->sentinel_count; k++) {
        char host[256];
        int port;
        redisContext *c;

        if (!ask_sentinel(url, k, timeout_ms, host, sizeof host, &port, err))
            continue;
        c = connect_node(url, host, port, timeout_ms, err);
        if (c && is_master(c, err))
            return c;
        tw_error_prefix(err, "the master the sentinels name");
        redisFree(c);
    }
    tw_error_prefix(err, "no sentinel led to the master");
    return NULL;
}

redisContext *tw_redis_connect(const tw_redis_url_t *url, int timeout_ms,
                               tw_error_t *err)
{
    if (url->sentinel_count > 0)
        return connect_via_sentinels(url, timeout_ms, err);
    return connect_node(url, url->host, url->port, timeout_ms, err);
}

/* On a cluster node: the node that serves key's slot now (host, port), from
 * CLUSTER KEYSLOT and CLUSTER SLOTS. false with *clustered false on a node
 * that is not in cluster mode. */
static bool slot_owner(redisContext *c, const char *key, bool *clustered, char *host,
                       size_t n, int *port, tw_error_t *err)
{
    redisReply *slot = redisCommand(c, "CLUSTER KEYSLOT %s", key);
    redisReply *slots = NULL;
    bool found = false;

    *clustered = slot && slot->type == REDIS_REPLY_INTEGER;
    if (!*clustered)
        goto out;
    slots = tw_redis_command(c, err, "CLUSTER SLOTS");
    for (size_t k = 0; slots && slots->type == REDIS_REPLY_ARRAY && k < slots->elements; k++) {
        const redisReply *range = slots->element[k];

        if (range->type != REDIS_REPLY_ARRAY || range->elements < 3 ||
            range->element[2]->type != REDIS_REPLY_ARRAY ||
            range->element[2]->elements < 2 ||
            slot->integer < range->element[0]->integer ||
            slot->integer > range->element[1]->integer)
            continue;
        snprintf(host, n, "%s", range->element[2]->element[0]->str);
        *port = (int)range->element[2]->element[1]->integer;
        found = true;
    }
    if (slots && !found)
        tw_error_set(err, TW_ERR_REDIS, 0, "no cluster node serves the slot of %s", key);
out:
    freeReplyObject(slot);
    freeReplyObject(slots);
    return found;
}

redisContext *tw_redis_connect_for(const tw_redis_url_t *url, const char *key, int timeout_ms,
                                   tw_error_t *err)
{
    redisContext *c = tw_redis_connect(url, timeout_ms, err);
    char host[256];
    int port;
    bool clustered;

    if (!c || !key || url->socket)
        return c;
    if (!slot_owner(c, key, &clustered, host, sizeof host, &port, err)) {
        if (!clustered)
            return c;
        redisFree(c);
        return NULL;
    }
    if (c->tcp.port == port && c->tcp.host && strcmp(c->tcp.host, host) == 0)
        return c;
    redisFree(c);
    return connect_node(url, host, port, timeout_ms, err);
}

bool tw_redis_moved(const tw_error_t *err)
{
    return err->domain == TW_ERR_REDIS &&
           (strstr(err->message, ": MOVED ") != NULL || strstr(err->message, ": ASK ") != NULL);
}
