/*
 * sources.c - guard values: what each names (pure), and reading Redis keys
 * and patterns. Kafka Connect is source_connect.c's, Monstache
 * source_monstache.c's.
 */
#include "tokenwatch/sources.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sources_int.h"
#include "tokenwatch/checkpoint.h"
#include "tokenwatch/log.h"
#include "tokenwatch/mem.h"
#include "tokenwatch/redact.h"
#include "tokenwatch/redis.h"
#include "tokenwatch/spec.h"
#include "tokenwatch/utf8.h"

#define SHOWN_MAX 1024
#define NAME_MAX_BYTES 512

static bool is_url(const char *spec)
{
    return strncasecmp(spec, "http://", 7) == 0 || strncasecmp(spec, "https://", 8) == 0;
}

static bool parse_connect(const char *spec, tw_source_t *out, tw_error_t *err)
{
    char shown[SHOWN_MAX];
    const char *path = strstr(spec, "/connectors/");
    size_t len = strlen(spec);

    tw_redact_url(spec, shown, sizeof shown);
    while (len > 0 && spec[len - 1] == '/')
        len--;
    if (!path || path + strlen("/connectors/") >= spec + len ||
        memchr(path + strlen("/connectors/"), '/', (size_t)(spec + len - path) - 12)) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "--guard %s: a Kafka Connect guard is http(s)://HOST:PORT/connectors/NAME",
                     shown);
        return false;
    }
    out->kind = TW_SOURCE_CONNECT;
    out->spec = tw_strndup(spec, len);
    tw_redact_url(out->spec, shown, sizeof shown);
    out->shown = tw_strdup(shown);
    return true;
}

static bool parse_monstache(const char *spec, tw_source_t *out, tw_error_t *err)
{
    const char *rest = spec + strlen("monstache:");
    const char *slash = strchr(rest, '/');

    out->kind = TW_SOURCE_MONSTACHE;
    out->db = slash ? tw_strndup(rest, (size_t)(slash - rest)) : tw_strdup("monstache");
    out->name = tw_strdup(slash ? slash + 1 : rest);
    if (!out->db[0] || !out->name[0] || strchr(out->name, '/')) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "--guard %s: a Monstache guard is monstache:NAME or monstache:DB/NAME",
                     spec);
        tw_source_release(out);
        return false;
    }
    out->spec = tw_strdup(spec);
    out->shown = tw_strdup(spec);
    return true;
}

bool tw_source_parse(const char *spec, tw_source_t *out, tw_error_t *err)
{
    memset(out, 0, sizeof *out);
    if (!spec || !spec[0]) {
        tw_error_set(err, TW_ERR_USAGE, 0, "--guard: an empty value");
        return false;
    }
    if (is_url(spec))
        return parse_connect(spec, out, err);
    if (strncmp(spec, "monstache:", 10) == 0)
        return parse_monstache(spec, out, err);
    out->kind = strpbrk(spec, "*?[") ? TW_SOURCE_GLOB : TW_SOURCE_KEY;
    out->spec = tw_strdup(spec);
    out->shown = tw_strdup(spec);
    return true;
}

void tw_source_release(tw_source_t *s)
{
    if (!s)
        return;
    free(s->spec);
    free(s->shown);
    free(s->db);
    free(s->name);
    memset(s, 0, sizeof *s);
}

bool tw_source_in_redis(const tw_source_t *s)
{
    return s->kind == TW_SOURCE_KEY || s->kind == TW_SOURCE_GLOB;
}

/* A tokenwatch hash, read exactly as a guarded checkpoint always was. */
static bool read_tokenwatch_hash(redisContext *c, const char *key, tw_positions_t *out,
                                 tw_error_t *err)
{
    tw_ctime_t ct;
    bool found = false;
    tw_error_t e;
    tw_position_t *p;

    tw_error_clear(&e);
    if (!tw_checkpoint_read_position(c, key, &ct, &found, &e) && !tw_checkpoint_unusable(&e)) {
        *err = e;
        return false;
    }
    p = tw_positions_add(out, key, "", TW_CONSUMER_TOKENWATCH);
    if (e.domain != TW_ERR_NONE) {
        p->kind = TW_POSITION_BAD;
        snprintf(p->reason, sizeof p->reason, "%s", e.message);
    } else if (!found) {
        p->kind = TW_POSITION_MISSING;
    } else {
        p->kind = TW_POSITION_TIME;
        p->time = ct;
    }
    return true;
}

static void read_string(const char *key, const char *value, size_t len, tw_positions_t *out)
{
    tw_position_t *p = tw_positions_add(out, key, "", TW_CONSUMER_TOKENWATCH);
    tw_spec_t spec;

    if (tw_consumers_oplogtoredis_key(key) || tw_consumers_oplogtoredis_value(value, len)) {
        tw_consumers_oplogtoredis(value, len, p);
        return;
    }
    if (strlen(value) == len && tw_spec_parse(value, &spec, NULL)) {
        if (spec.kind == TW_SPEC_TOKEN || spec.kind == TW_SPEC_TIME) {
            p->kind = TW_POSITION_TIME;
            p->time = spec.time;
        }
        tw_spec_clear(&spec);
        if (p->kind == TW_POSITION_TIME)
            return;
    }
    if (len > 0 && value[strspn(value, " \t\r\n")] == '{') {
        tw_consumers_offset_json(value, len, p);
        if (p->kind != TW_POSITION_BAD)
            return;
    }
    p->consumer = TW_CONSUMER_TOKENWATCH;
    p->kind = TW_POSITION_BAD;
    tw_utf8_format(p->reason, sizeof p->reason,
                   "%s holds neither a resume token nor a cluster time", key);
}

static bool is_tokenwatch_hash(const redisReply *r)
{
    for (size_t k = 0; k + 1 < r->elements; k += 2) {
        const char *f = r->element[k]->str;

        if (f && (strcmp(f, "token") == 0 || strcmp(f, "cluster_time") == 0))
            return true;
    }
    return false;
}

/* An offset store: a position per field. All garbage is one for the key. */
static void read_offset_hash(const char *key, const redisReply *r, tw_positions_t *out)
{
    size_t first = out->count, usable = 0;
    char name[NAME_MAX_BYTES];

    for (size_t k = 0; k + 1 < r->elements && out->count - first < TW_SOURCES_POSITIONS_MAX;
         k += 2) {
        const redisReply *f = r->element[k], *v = r->element[k + 1];
        tw_position_t *p;

        tw_consumers_field_name(f->str, f->len, name, sizeof name);
        p = tw_positions_add(out, key, name, TW_CONSUMER_DEBEZIUM);
        tw_consumers_offset_json(v->str, v->len, p);
        usable += p->kind != TW_POSITION_BAD;
    }
    if (usable == 0 && out->count > first) {
        char reason[TW_ERROR_MESSAGE_MAX];

        tw_utf8_format(reason, sizeof reason,
                       "%s holds a hash that is neither a tokenwatch checkpoint nor an offset "
                       "store (%s)",
                       key, out->items[first].reason);
        tw_sources_truncate(out, first);
        {
            tw_position_t *p = tw_positions_add(out, key, "", TW_CONSUMER_TOKENWATCH);

            p->kind = TW_POSITION_BAD;
            snprintf(p->reason, sizeof p->reason, "%s", reason);
        }
    }
    if (r->elements / 2 > TW_SOURCES_POSITIONS_MAX)
        TW_WARN("guard: %s has %zu fields; guarding the first %d", key, r->elements / 2,
                TW_SOURCES_POSITIONS_MAX);
}

static bool read_hash(redisContext *c, const char *key, tw_positions_t *out, tw_error_t *err)
{
    redisReply *r = tw_redis_command(c, err, "HGETALL %s", key);
    bool ok = true;

    if (!r)
        return false;
    if (r->type != REDIS_REPLY_ARRAY) {
        tw_error_set(err, TW_ERR_REDIS, 0, "redis: HGETALL answered with no list");
        ok = false;
    } else if (r->elements == 0) {
        /* Gone between TYPE and HGETALL. */
    } else if (is_tokenwatch_hash(r)) {
        ok = read_tokenwatch_hash(c, key, out, err);
    } else {
        read_offset_hash(key, r, out);
    }
    freeReplyObject(r);
    return ok;
}

static bool read_get(redisContext *c, const char *key, tw_positions_t *out, tw_error_t *err)
{
    redisReply *r = tw_redis_command(c, err, "GET %s", key);

    if (!r)
        return false;
    if (r->type == REDIS_REPLY_STRING)
        read_string(key, r->str, r->len, out);
    freeReplyObject(r);
    return true;
}

bool tw_sources_read_key(redisContext *c, const char *key, bool from_glob,
                         tw_positions_t *out, tw_error_t *err)
{
    redisReply *type = tw_redis_command(c, err, "TYPE %s", key);
    const char *t;
    bool ok = true;

    if (!type)
        return false;
    t = type->type == REDIS_REPLY_STATUS ? type->str : "?";
    if (strcmp(t, "string") == 0) {
        ok = read_get(c, key, out, err);
    } else if (strcmp(t, "hash") == 0) {
        ok = read_hash(c, key, out, err);
    } else if (from_glob) {
        /* A pattern's other keys (a schema history stream, ...) are not positions. */
    } else if (strcmp(t, "none") == 0) {
        tw_positions_add(out, key, "", TW_CONSUMER_TOKENWATCH)->kind = TW_POSITION_MISSING;
    } else {
        tw_position_t *p = tw_positions_add(out, key, "", TW_CONSUMER_TOKENWATCH);

        p->kind = TW_POSITION_BAD;
        tw_utf8_format(p->reason, sizeof p->reason,
                       "%s is a %s, not a checkpoint hash or a token string", key, t);
    }
    freeReplyObject(type);
    return ok;
}

void tw_sources_truncate(tw_positions_t *list, size_t count)
{
    while (list->count > count) {
        list->count--;
        free(list->items[list->count].key);
        free(list->items[list->count].name);
    }
}

bool tw_source_read(tw_source_t *s, const tw_source_io_t *io, tw_positions_t *out,
                    tw_error_t *err)
{
    size_t first = out->count;
    bool ok = false;

    switch (s->kind) {
    case TW_SOURCE_KEY:
        ok = tw_sources_read_key(io->redis, s->spec, false, out, err);
        break;
    case TW_SOURCE_GLOB:
        ok = tw_sources_read_glob(s, io->redis, out, err);
        break;
    case TW_SOURCE_CONNECT:
        ok = tw_sources_read_connect(s, io->timeout_ms, out, err);
        break;
    case TW_SOURCE_MONSTACHE:
        ok = tw_sources_read_monstache(s, io->mongo, out, err);
        break;
    }
    if (!ok)
        tw_sources_truncate(out, first);
    else
        tw_positions_sort(out, first);
    return ok;
}
