/*
 * consumers.c - the positions other consumers store, recognised by their
 * content (see consumers.h for the formats and where each comes from).
 */
#include "tokenwatch/consumers.h"

#include <ctype.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenwatch/mem.h"
#include "tokenwatch/utf8.h"

/* A base64 resume token document: BSON's 16 MB is far more than one needs. */
#define TOKEN_BSON_MAX 4096

const char *tw_consumer_name(tw_consumer_t consumer)
{
    switch (consumer) {
    case TW_CONSUMER_DEBEZIUM:
        return "debezium";
    case TW_CONSUMER_MONGO_KAFKA:
        return "mongo-kafka";
    case TW_CONSUMER_OPLOGTOREDIS:
        return "oplogtoredis";
    case TW_CONSUMER_MONSTACHE:
        return "monstache";
    case TW_CONSUMER_TOKENWATCH:
    default:
        return "tokenwatch";
    }
}

void tw_positions_init(tw_positions_t *list)
{
    memset(list, 0, sizeof *list);
}

void tw_positions_clear(tw_positions_t *list)
{
    for (size_t k = 0; k < list->count; k++) {
        free(list->items[k].key);
        free(list->items[k].name);
    }
    free(list->items);
    tw_positions_init(list);
}

tw_position_t *tw_positions_add(tw_positions_t *list, const char *key, const char *name,
                                tw_consumer_t consumer)
{
    tw_position_t *p;

    if (list->count == list->cap) {
        list->cap = list->cap ? list->cap * 2 : 8;
        list->items = tw_realloc(list->items, list->cap * sizeof *list->items);
    }
    p = &list->items[list->count++];
    memset(p, 0, sizeof *p);
    p->key = tw_strdup(key);
    p->name = tw_strdup(name ? name : "");
    p->consumer = consumer;
    return p;
}

static int position_cmp(const void *a, const void *b)
{
    const tw_position_t *pa = a, *pb = b;
    int c = strcmp(pa->key, pb->key);

    return c ? c : strcmp(pa->name, pb->name);
}

void tw_positions_sort(tw_positions_t *list, size_t from)
{
    if (from < list->count)
        qsort(list->items + from, list->count - from, sizeof *list->items, position_cmp);
}

static void set_bad(tw_position_t *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_bad(tw_position_t *p, const char *fmt, ...)
{
    va_list ap;

    p->kind = TW_POSITION_BAD;
    va_start(ap, fmt);
    vsnprintf(p->reason, sizeof p->reason, fmt, ap);
    va_end(ap);
    tw_utf8_fix(p->reason);
}

static void set_none(tw_position_t *p, const char *note)
{
    p->kind = TW_POSITION_NONE;
    snprintf(p->note, sizeof p->note, "%s", note);
}

static void set_time(tw_position_t *p, tw_ctime_t ct, const char *note)
{
    p->kind = TW_POSITION_TIME;
    p->time = ct;
    snprintf(p->note, sizeof p->note, "%s", note);
}

/* An integral number, as JSON parsing gives it (int32, int64 or double). */
static bool find_int(const bson_t *doc, const char *key, int64_t *out, bool *wrong)
{
    bson_iter_t it;

    if (!bson_iter_init_find(&it, doc, key))
        return false;
    if (BSON_ITER_HOLDS_INT32(&it) || BSON_ITER_HOLDS_INT64(&it)) {
        *out = bson_iter_as_int64(&it);
        return true;
    }
    if (BSON_ITER_HOLDS_DOUBLE(&it) && bson_iter_double(&it) == (double)(int64_t)bson_iter_double(&it)) {
        *out = (int64_t)bson_iter_double(&it);
        return true;
    }
    *wrong = true;
    return false;
}

static const char *find_utf8(const bson_t *doc, const char *key, bool *present)
{
    bson_iter_t it;

    if (!bson_iter_init_find(&it, doc, key))
        return NULL;
    if (present)
        *present = true;
    return BSON_ITER_HOLDS_UTF8(&it) ? bson_iter_utf8(&it, NULL) : NULL;
}

static bool is_true(const bson_t *doc, const char *key)
{
    bson_iter_t it;
    const char *text;

    if (!bson_iter_init_find(&it, doc, key))
        return false;
    if (BSON_ITER_HOLDS_BOOL(&it))
        return bson_iter_bool(&it);
    text = BSON_ITER_HOLDS_UTF8(&it) ? bson_iter_utf8(&it, NULL) : NULL;
    return text && strcmp(text, "true") == 0;
}

static bool all_hex(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!isxdigit((unsigned char)*s))
            return false;
    return true;
}

/* Base64 (RFC 4648, padded, as java.util.Base64 writes it) of a BSON token
 * document: its cluster time. */
static bool base64_token(const char *text, tw_ctime_t *out, char *why, size_t size)
{
    size_t len = strlen(text), pad = 0;
    unsigned char bytes[TOKEN_BSON_MAX];
    int n;
    bson_t doc;

    if (len == 0 || len % 4 != 0 || len / 4 * 3 > sizeof bytes ||
        strspn(text, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") != len) {
        snprintf(why, size, "neither _data hex nor base64 of a token document");
        return false;
    }
    pad = (text[len - 1] == '=') + (len > 1 && text[len - 2] == '=');
    n = EVP_DecodeBlock(bytes, (const unsigned char *)text, (int)len);
    if (n < 0 || (size_t)n < pad || !bson_init_static(&doc, bytes, (size_t)n - pad) ||
        !bson_validate(&doc, BSON_VALIDATE_NONE, NULL)) {
        snprintf(why, size, "base64 that is not a BSON document");
        return false;
    }
    if (tw_token_layout(&doc, out) == TW_LAYOUT_OPAQUE) {
        snprintf(why, size, "a token document of no known layout");
        return false;
    }
    return true;
}

/* Debezium's resume_token: _data hex (1.8-2.6) or base64 BSON (2.7+). */
static bool resume_token_time(const char *text, tw_ctime_t *out, char *why, size_t size)
{
    tw_error_t err;

    if (all_hex(text)) {
        if (tw_token_decode_hex(text, out, &err))
            return true;
        tw_utf8_format(why, size, "%s", err.message);
        return false;
    }
    return base64_token(text, out, why, size);
}

static bool ctime_from(int64_t sec, int64_t ord, tw_ctime_t *out)
{
    if (sec < 0 || sec > (int64_t)UINT32_MAX || ord < 0 || ord > (int64_t)UINT32_MAX)
        return false;
    out->t = (uint32_t)sec;
    out->i = (uint32_t)ord;
    return true;
}

static void debezium(const bson_t *o, tw_position_t *p)
{
    int64_t sec = 0, ord = 0;
    bool wrong = false, has_rt = false;
    bool has_sec = find_int(o, "sec", &sec, &wrong);
    bool has_ord = find_int(o, "ord", &ord, &wrong);
    const char *rt = find_utf8(o, "resume_token", &has_rt);
    char why[256];
    tw_ctime_t ct = {0, 0};

    p->consumer = TW_CONSUMER_DEBEZIUM;
    if (wrong || (has_rt && !rt)) {
        set_bad(p, "a Debezium offset whose sec, ord or resume_token is of the wrong type");
        return;
    }
    if (has_sec && sec == -1) {
        set_none(p, "heartbeat offset: no position stored");
        return;
    }
    if (is_true(o, "initsync")) {
        if (has_sec && sec > 0 && ctime_from(sec, ord, &ct))
            set_time(p, ct, "snapshot: streaming starts here");
        else
            set_none(p, "snapshot in progress: no position yet");
        return;
    }
    if (rt) {
        if (resume_token_time(rt, &ct, why, sizeof why))
            set_time(p, ct, "");
        else
            set_bad(p, "a Debezium resume_token that cannot be read: %s", why);
        return;
    }
    if (!has_sec || !ctime_from(sec, has_ord ? ord : 0, &ct)) {
        set_bad(p, "a Debezium offset with neither a resume_token nor a sec in range");
        return;
    }
    if (ct.t == 0 && ct.i == 0)
        set_none(p, "no position yet");
    else
        set_time(p, ct, "sec/ord (no resume_token)");
}

static void mongo_kafka(const bson_t *o, tw_position_t *p)
{
    const char *id = find_utf8(o, "_id", NULL);
    bool heartbeat = is_true(o, "HEARTBEAT");
    bson_t token;
    bson_error_t error;
    tw_ctime_t ct;

    p->consumer = TW_CONSUMER_MONGO_KAFKA;
    if (!id) {
        set_bad(p, "a mongo-kafka offset whose _id is not a string");
        return;
    }
    if (!bson_init_from_json(&token, id, -1, &error)) {
        set_bad(p, "a mongo-kafka _id that is not a JSON document");
        return;
    }
    if (is_true(&token, "copyingData") || (is_true(o, "copy") && !bson_has_field(&token, "_data")))
        set_none(p, "copying existing data: no position yet");
    else if (!bson_has_field(&token, "_data"))
        set_bad(p, "a mongo-kafka _id that holds no resume token");
    else if (tw_token_layout(&token, &ct) == TW_LAYOUT_OPAQUE)
        set_bad(p, "a mongo-kafka resume token of no known layout");
    else
        set_time(p, ct, heartbeat ? "heartbeat" : is_true(o, "copy") ? "copy" : "");
    bson_destroy(&token);
}

void tw_consumers_offset(const bson_t *offset, tw_position_t *p)
{
    if (bson_has_field(offset, "_id"))
        mongo_kafka(offset, p);
    else if (bson_has_field(offset, "resume_token") || bson_has_field(offset, "sec") ||
             bson_has_field(offset, "initsync"))
        debezium(offset, p);
    else
        set_bad(p, "neither a Debezium offset (sec, ord, resume_token) nor a mongo-kafka "
                   "one (_id)");
}

void tw_consumers_offset_json(const char *json, size_t len, tw_position_t *p)
{
    bson_t doc;
    bson_error_t error;

    if (len > TW_CONSUMERS_VALUE_MAX) {
        set_bad(p, "an offset of %zu bytes, over the %d read", len, TW_CONSUMERS_VALUE_MAX);
        return;
    }
    if (!bson_utf8_validate(json, len, false)) {
        set_bad(p, "an offset that is not UTF-8");
        return;
    }
    if (len == 0 || json[strspn(json, " \t\r\n")] != '{' ||
        !bson_init_from_json(&doc, json, (ssize_t)len, &error)) {
        set_bad(p, "an offset that is not a JSON object");
        return;
    }
    tw_consumers_offset(&doc, p);
    bson_destroy(&doc);
}

static void copy_text(char *out, size_t size, const char *text, size_t len)
{
    size_t n = len < size - 1 ? len : size - 1;

    memcpy(out, text, n);
    out[n] = '\0';
    tw_utf8_cut(out, n);
    tw_utf8_scrub(out);
}

void tw_consumers_partition_name(const bson_t *partition, const char *fallback, char *out,
                                 size_t size)
{
    const char *server = partition ? find_utf8(partition, "server_id", NULL) : NULL;
    const char *rs = partition ? find_utf8(partition, "rs", NULL) : NULL;
    const char *ns = partition ? find_utf8(partition, "ns", NULL) : NULL;

    if (server && rs)
        tw_utf8_format(out, size, "%s/%s", server, rs);
    else if (server || ns)
        tw_utf8_format(out, size, "%s", server ? server : ns);
    else
        copy_text(out, size, fallback, strlen(fallback));
}

void tw_consumers_field_name(const char *field, size_t len, char *out, size_t size)
{
    bson_t doc, partition;
    bson_iter_t it;
    char *wrapped;
    bool parsed = false;

    copy_text(out, size, field, len);
    if (len > TW_CONSUMERS_VALUE_MAX || !bson_utf8_validate(field, len, false))
        return;
    wrapped = tw_malloc(len + 8);
    memcpy(wrapped, "{\"f\":", 5);
    memcpy(wrapped + 5, field, len);
    memcpy(wrapped + 5 + len, "}", 2);
    if (bson_init_from_json(&doc, wrapped, -1, NULL)) {
        parsed = true;
        if (bson_iter_init(&it, &doc) && bson_iter_find_descendant(&it, "f.1", &it) &&
            BSON_ITER_HOLDS_DOCUMENT(&it)) {
            const uint8_t *data;
            uint32_t n;

            bson_iter_document(&it, &n, &data);
            if (bson_init_static(&partition, data, n))
                tw_consumers_partition_name(&partition, out, out, size);
        }
    }
    if (parsed)
        bson_destroy(&doc);
    free(wrapped);
}

bool tw_consumers_oplogtoredis_key(const char *key)
{
    return strstr(key, "lastProcessedEntry") != NULL;
}

static bool parse_u64(const char *text, size_t len, uint64_t *out)
{
    uint64_t v = 0;

    if (len == 0 || len > 20)
        return false;
    for (size_t k = 0; k < len; k++) {
        unsigned d;

        if (!isdigit((unsigned char)text[k]))
            return false;
        d = (unsigned)(text[k] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

bool tw_consumers_oplogtoredis_value(const char *value, size_t len)
{
    uint64_t v;

    return parse_u64(value, len, &v) && v > UINT32_MAX;
}

void tw_consumers_oplogtoredis(const char *value, size_t len, tw_position_t *p)
{
    uint64_t v;
    tw_ctime_t ct;

    p->consumer = TW_CONSUMER_OPLOGTOREDIS;
    if (!parse_u64(value, len, &v)) {
        set_bad(p, "not oplogtoredis's decimal timestamp (T<<32|I)");
        return;
    }
    if (v == 0) {
        set_none(p, "no entry processed yet");
        return;
    }
    ct.t = (uint32_t)(v >> 32);
    ct.i = (uint32_t)(v & 0xffffffffu);
    set_time(p, ct, "");
}

void tw_consumers_monstache(const bson_t *doc, tw_position_t *p)
{
    bson_iter_t it;
    tw_ctime_t ct;

    p->consumer = TW_CONSUMER_MONSTACHE;
    if (bson_iter_init_find(&it, doc, "ts")) {
        if (!BSON_ITER_HOLDS_TIMESTAMP(&it)) {
            set_bad(p, "a Monstache ts that is not a Timestamp");
            return;
        }
        bson_iter_timestamp(&it, &ct.t, &ct.i);
        set_time(p, ct, "");
        return;
    }
    if (bson_iter_init_find(&it, doc, "token") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
        const uint8_t *data;
        uint32_t n;
        bson_t token;

        bson_iter_document(&it, &n, &data);
        if (bson_init_static(&token, data, n) && tw_token_layout(&token, &ct) != TW_LAYOUT_OPAQUE)
            set_time(p, ct, "resume token");
        else
            set_bad(p, "a Monstache token of no known layout");
        return;
    }
    set_bad(p, "a Monstache document with neither ts nor token");
}

static const char *doc_field(bson_iter_t *entry, const char *key, bson_t *out)
{
    bson_iter_t it;
    const uint8_t *data;
    uint32_t n;

    if (!bson_iter_recurse(entry, &it) || !bson_iter_find(&it, key))
        return "missing";
    if (BSON_ITER_HOLDS_NULL(&it))
        return "null";
    if (!BSON_ITER_HOLDS_DOCUMENT(&it))
        return "not an object";
    bson_iter_document(&it, &n, &data);
    return bson_init_static(out, data, n) ? NULL : "not an object";
}

static void connect_entry(bson_iter_t *entry, const char *key, size_t index,
                          tw_positions_t *out)
{
    bson_t partition, offset;
    char name[512], fallback[32];
    const char *bad_partition = doc_field(entry, "partition", &partition);
    const char *bad_offset;
    tw_position_t *p;

    snprintf(fallback, sizeof fallback, "partition %zu", index);
    tw_consumers_partition_name(bad_partition ? NULL : &partition, fallback, name, sizeof name);
    p = tw_positions_add(out, key, name, TW_CONSUMER_DEBEZIUM);
    bad_offset = doc_field(entry, "offset", &offset);
    if (bad_offset && strcmp(bad_offset, "null") == 0)
        set_none(p, "no offset committed yet");
    else if (bad_offset)
        set_bad(p, "a Kafka Connect offset that is %s", bad_offset);
    else
        tw_consumers_offset(&offset, p);
}

bool tw_consumers_connect_offsets(const char *json, size_t len, const char *key,
                                  tw_positions_t *out, tw_error_t *err)
{
    bson_t doc;
    bson_iter_t it, entry;
    size_t index = 0;

    if (!bson_utf8_validate(json, len, false) || !bson_init_from_json(&doc, json, (ssize_t)len, NULL)) {
        tw_error_set(err, TW_ERR_HTTP, 0, "Kafka Connect answered with something not JSON");
        return false;
    }
    if (!bson_iter_init_find(&it, &doc, "offsets") || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &entry)) {
        tw_error_set(err, TW_ERR_HTTP, 0,
                     "Kafka Connect answered without an \"offsets\" list (KIP-875, Kafka 3.5+)");
        bson_destroy(&doc);
        return false;
    }
    while (bson_iter_next(&entry)) {
        if (!BSON_ITER_HOLDS_DOCUMENT(&entry))
            continue;
        connect_entry(&entry, key, index++, out);
    }
    bson_destroy(&doc);
    return true;
}
