/*
 * source_glob.c - a --guard pattern: Redis SCAN MATCH every round (never
 * KEYS, which blocks the server), each key found read as a --guard KEY.
 */
#include <stdlib.h>
#include <string.h>

#include "sources_int.h"
#include "tokenwatch/log.h"
#include "tokenwatch/mem.h"
#include "tokenwatch/redis.h"

typedef struct {
    char **keys;
    size_t count;
    size_t cap;
} key_list_t;

static void keys_add(key_list_t *l, const char *key, size_t len)
{
    if (l->count == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->keys = tw_realloc(l->keys, l->cap * sizeof *l->keys);
    }
    l->keys[l->count++] = tw_strndup(key, len);
}

static void keys_free(key_list_t *l)
{
    for (size_t k = 0; k < l->count; k++)
        free(l->keys[k]);
    free(l->keys);
}

static int key_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* SCAN may return a key twice: sorted and made unique. */
static void keys_unique(key_list_t *l)
{
    size_t out = 0;

    qsort(l->keys, l->count, sizeof *l->keys, key_cmp);
    for (size_t k = 0; k < l->count; k++) {
        if (out > 0 && strcmp(l->keys[out - 1], l->keys[k]) == 0) {
            free(l->keys[k]);
            continue;
        }
        l->keys[out++] = l->keys[k];
    }
    l->count = out;
}

/* One SCAN step: the keys into l, the next cursor into cursor. */
static bool scan_step(redisContext *c, const char *pattern, char *cursor, size_t size,
                      key_list_t *l, bool *capped, tw_error_t *err)
{
    redisReply *r = tw_redis_command(c, err, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
    const redisReply *list;

    if (!r)
        return false;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY) {
        tw_error_set(err, TW_ERR_REDIS, 0, "redis: SCAN answered in an unknown shape");
        freeReplyObject(r);
        return false;
    }
    snprintf(cursor, size, "%s", r->element[0]->str);
    list = r->element[1];
    for (size_t k = 0; k < list->elements; k++) {
        if (l->count >= TW_SOURCES_SCAN_MAX) {
            *capped = true;
            break;
        }
        if (list->element[k]->type == REDIS_REPLY_STRING)
            keys_add(l, list->element[k]->str, list->element[k]->len);
    }
    freeReplyObject(r);
    return true;
}

static void say_cap(tw_source_t *s, bool capped)
{
    if (capped && !s->told_cap)
        TW_WARN("guard: %s matches more than %d keys; guarding the first %d found this round "
                "(narrow the pattern or split it)",
                s->shown, TW_SOURCES_SCAN_MAX, TW_SOURCES_SCAN_MAX);
    else if (!capped && s->told_cap)
        TW_INFO("guard: %s matches at most %d keys again", s->shown, TW_SOURCES_SCAN_MAX);
    s->told_cap = capped;
}

bool tw_sources_read_glob(tw_source_t *s, redisContext *c, tw_positions_t *out,
                          tw_error_t *err)
{
    key_list_t keys = {NULL, 0, 0};
    char cursor[32] = "0";
    bool capped = false, ok = true;

    do {
        ok = scan_step(c, s->spec, cursor, sizeof cursor, &keys, &capped, err);
    } while (ok && !capped && strcmp(cursor, "0") != 0);
    if (ok) {
        keys_unique(&keys);
        say_cap(s, capped);
    }
    for (size_t k = 0; ok && k < keys.count; k++)
        ok = tw_sources_read_key(c, keys.keys[k], true, out, err);
    keys_free(&keys);
    return ok;
}
