#include "fixture.h"

#include <criterion/criterion.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fx_start(fx_t *fx, const char *scenario)
{
    memset(fx, 0, sizeof *fx);
    cr_assert(th_tmpdir(fx->dir, sizeof fx->dir), "temporary directory");
    cr_assert(th_redis_start(&fx->redis, fx->dir, true), "redis-server starts");
    cr_assert(th_redis_url(&fx->redis, fx->redis_url, sizeof fx->redis_url));
    cr_assert(th_sim_start(&fx->sim, fx->dir, scenario), "simulator starts");
}

void fx_stop(fx_t *fx)
{
    th_sim_stop(&fx->sim);
    th_redis_stop(&fx->redis);
    th_rmtree(fx->dir);
}

size_t fx_argv(fx_t *fx, const char *argv[], size_t max, const char *const extra[])
{
    /* Tests run side by side: no fixed metrics port unless a test asks. */
    static const char *const base[] = {"run", "--db", "shop", "--collection",
                                       "orders", "--checkpoint-interval", "100ms",
                                       "--metrics-addr", "off"};
    size_t n = 0;

    argv[n++] = th_binary();
    for (size_t k = 0; k < sizeof base / sizeof base[0]; k++)
        argv[n++] = base[k];
    argv[n++] = "--mongo-uri";
    argv[n++] = fx->sim.uri;
    argv[n++] = "--redis-url";
    argv[n++] = fx->redis_url;
    for (size_t k = 0; extra && extra[k]; k++) {
        cr_assert_lt(n, max - 1, "too many arguments");
        argv[n++] = extra[k];
    }
    argv[n] = NULL;
    return n;
}

void fx_spawn(fx_t *fx, th_proc_t *p, const char *const extra[])
{
    const char *argv[64];

    fx_argv(fx, argv, 64, extra);
    cr_assert(th_proc_spawn(p, fx->dir, argv, NULL), "tokenwatch starts");
}

void fx_spawn_to(fx_t *fx, th_proc_t *p, const char *const extra[], const char *out_path,
                 const char *err_path)
{
    const char *argv[64];

    fx_argv(fx, argv, 64, extra);
    cr_assert(th_proc_spawn_to(p, fx->dir, argv, NULL, out_path, err_path),
              "tokenwatch starts");
}

int fx_run(fx_t *fx, const char *const extra[], int timeout_ms, char **err_out)
{
    const char *argv[64];
    char *out = NULL;
    int code;

    fx_argv(fx, argv, 64, extra);
    code = th_run(fx->dir, argv, NULL, timeout_ms, &out, err_out);
    free(out);
    return code;
}

void fx_sim(fx_t *fx, const char *method, const char *path, const char *body,
            bson_t *reply)
{
    long status = 0;
    char *text = th_sim_request(&fx->sim, method, path, body, &status);
    bson_error_t berr;
    char *json;

    cr_assert(text, "simulator %s %s answered", method, path);
    cr_assert_eq(status, 200, "simulator %s %s: %ld %s", method, path, status, text);
    json = text[0] == '[' ? bson_strdup_printf("{\"a\": %s}", text) : bson_strdup(text);
    cr_assert(bson_init_from_json(reply, json, -1, &berr), "%s: %s", berr.message, text);
    bson_free(json);
    free(text);
}

char *fx_post_events(fx_t *fx, int count)
{
    char body[64];
    bson_t reply;
    bson_iter_t it;
    char *data;

    snprintf(body, sizeof body, "{\"count\": %d}", count);
    fx_sim(fx, "POST", "/events", body, &reply);
    cr_assert(bson_iter_init(&it, &reply) &&
              bson_iter_find_descendant(&it, "last_token._data", &it));
    data = bson_strdup(bson_iter_utf8(&it, NULL));
    bson_destroy(&reply);
    return data;
}

const char *fx_shard_uri(fx_t *fx, const char *name)
{
    const char *uri = th_sim_shard_uri(&fx->sim, name);

    cr_assert(uri, "the simulator has a shard %s", name);
    return uri;
}

char *fx_checkpoint(fx_t *fx, const char *field)
{
    return th_redis_hget(&fx->redis, FX_CHECKPOINT, field);
}

long long fx_checkpoint_events(fx_t *fx)
{
    char *v = fx_checkpoint(fx, "events");
    long long n = v ? strtoll(v, NULL, 10) : -1;

    free(v);
    return n;
}

static bool has_checkpoint(void *ctx)
{
    char *v = fx_checkpoint(ctx, "token");
    bool ok = v != NULL;

    free(v);
    return ok;
}

bool fx_wait_checkpoint(fx_t *fx, int timeout_ms)
{
    return th_wait_until(has_checkpoint, fx, timeout_ms);
}

typedef struct {
    fx_t *fx;
    long long at_least;
} events_wait_t;

static bool has_events(void *ctx)
{
    events_wait_t *w = ctx;

    return fx_checkpoint_events(w->fx) >= w->at_least;
}

bool fx_wait_checkpoint_events(fx_t *fx, long long at_least, int timeout_ms)
{
    events_wait_t w = {fx, at_least};

    return th_wait_until(has_events, &w, timeout_ms);
}

char *fx_checkpoint_data(fx_t *fx)
{
    char *token = fx_checkpoint(fx, "token");
    bson_t doc;
    bson_iter_t it;
    char *data = NULL;

    if (token && bson_init_from_json(&doc, token, -1, NULL)) {
        if (bson_iter_init_find(&it, &doc, "_data") && BSON_ITER_HOLDS_UTF8(&it))
            data = strdup(bson_iter_utf8(&it, NULL));
        bson_destroy(&doc);
    }
    free(token);
    return data;
}

size_t fx_stream_seqs(fx_t *fx, int64_t **seqs)
{
    redisReply *r = th_redis_cmd(&fx->redis, "XRANGE %s - +", FX_STREAM);
    size_t n = 0;

    cr_assert(r && r->type == REDIS_REPLY_ARRAY, "XRANGE");
    *seqs = calloc(r->elements + 1, sizeof **seqs);
    for (size_t k = 0; k < r->elements; k++) {
        redisReply *fields = r->element[k]->element[1];
        for (size_t f = 0; f + 1 < fields->elements; f += 2) {
            bson_t doc;
            bson_iter_t it;

            if (strcmp(fields->element[f]->str, "event") != 0)
                continue;
            cr_assert(bson_init_from_json(&doc, fields->element[f + 1]->str, -1, NULL));
            cr_assert(bson_iter_init(&it, &doc) &&
                      bson_iter_find_descendant(&it, "fullDocument.seq", &it),
                      "event has fullDocument.seq");
            (*seqs)[n++] = bson_iter_as_int64(&it);
            bson_destroy(&doc);
        }
    }
    freeReplyObject(r);
    return n;
}

static bool find_change_stream(const bson_t *command, bson_t *stage)
{
    bson_iter_t it, pipeline, first;
    const uint8_t *data;
    uint32_t len;
    bson_t view;

    if (!bson_iter_init_find(&it, command, "pipeline") || !bson_iter_recurse(&it, &pipeline) ||
        !bson_iter_next(&pipeline) || !bson_iter_recurse(&pipeline, &first) ||
        !bson_iter_find(&first, "$changeStream"))
        return false;
    bson_iter_document(&first, &len, &data);
    bson_init_static(&view, data, len);
    bson_copy_to(&view, stage);
    return true;
}

bool fx_last_aggregate(fx_t *fx, bson_t *command, char *db, size_t db_size)
{
    bson_t reply;
    bson_iter_t it, entries;
    bool found = false;

    fx_sim(fx, "GET", "/log", NULL, &reply);
    cr_assert(bson_iter_init_find(&it, &reply, "a") && bson_iter_recurse(&it, &entries));
    while (bson_iter_next(&entries)) {
        bson_iter_t entry, field;
        const uint8_t *data;
        uint32_t len;
        bson_t view;

        bson_iter_recurse(&entries, &entry);
        if (!bson_iter_find(&entry, "command") ||
            strcmp(bson_iter_utf8(&entry, NULL), "aggregate") != 0)
            continue;
        bson_iter_recurse(&entries, &field);
        if (!bson_iter_find(&field, "doc") || !BSON_ITER_HOLDS_DOCUMENT(&field))
            continue;
        bson_iter_document(&field, &len, &data);
        bson_init_static(&view, data, len);
        if (found)
            bson_destroy(command);
        bson_copy_to(&view, command);
        found = true;
        bson_iter_recurse(&entries, &field);
        if (db && bson_iter_find(&field, "db") && BSON_ITER_HOLDS_UTF8(&field))
            snprintf(db, db_size, "%s", bson_iter_utf8(&field, NULL));
    }
    bson_destroy(&reply);
    return found;
}

bool fx_last_change_stream(fx_t *fx, bson_t *stage)
{
    bson_t command;
    bool found;

    if (!fx_last_aggregate(fx, &command, NULL, 0))
        return false;
    found = find_change_stream(&command, stage);
    bson_destroy(&command);
    return found;
}

int fx_count_commands(fx_t *fx, const char *command)
{
    bson_t reply;
    bson_iter_t it, entries;
    int n = 0;

    fx_sim(fx, "GET", "/log", NULL, &reply);
    cr_assert(bson_iter_init_find(&it, &reply, "a") && bson_iter_recurse(&it, &entries));
    while (bson_iter_next(&entries)) {
        bson_iter_t entry;
        bson_iter_recurse(&entries, &entry);
        if (bson_iter_find(&entry, "command") &&
            strcmp(bson_iter_utf8(&entry, NULL), command) == 0)
            n++;
    }
    bson_destroy(&reply);
    return n;
}

void fx_seed_checkpoint(fx_t *fx, const char *data, const char *scope)
{
    char token[256];
    redisReply *r;

    snprintf(token, sizeof token, "{\"_data\": \"%s\"}", data);
    r = th_redis_cmd(&fx->redis, "DEL %s", FX_CHECKPOINT);
    cr_assert(r);
    freeReplyObject(r);
    r = th_redis_cmd(&fx->redis, "HSET %s token %s", FX_CHECKPOINT, token);
    cr_assert(r);
    freeReplyObject(r);
    if (scope) {
        r = th_redis_cmd(&fx->redis, "HSET %s scope %s", FX_CHECKPOINT, scope);
        cr_assert(r);
        freeReplyObject(r);
    }
}

char *fx_hwm_data(uint32_t t, uint32_t i)
{
    return bson_strdup_printf("82%08X%08X2B0229296E04", t, i);
}

int fx_count(const char *haystack, const char *needle)
{
    int n = 0;

    for (const char *p = haystack; p && (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static size_t collect(char *data, size_t size, size_t n, void *ctx)
{
    FILE *out = ctx;

    return fwrite(data, size, n, out) * size;
}

char *fx_http(int port, const char *method, const char *path, const char *body,
              long *status)
{
    CURL *curl = curl_easy_init();
    char url[256];
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    CURLcode rc;

    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    if (body)
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, out);
    rc = curl_easy_perform(curl);
    fclose(out);
    *status = 0;
    if (rc == CURLE_OK)
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    return text;
}

void fx_webhook_start(fx_t *fx, fx_webhook_t *w)
{
    static int started;
    char script[PATH_MAX], port_file[PATH_MAX], name[64];
    const char *argv[] = {"/usr/bin/python3", script, "--port-file", port_file, NULL};
    char *ports = NULL;
    long long deadline = th_now_ms() + 10000;

    memset(w, 0, sizeof *w);
    snprintf(script, sizeof script, "%s/tests/support/webhook.py", th_source_dir());
    /* Several stand-ins may share a test's directory: a port file each. */
    snprintf(name, sizeof name, "webhook-port-%d.json", ++started);
    cr_assert(th_path(port_file, sizeof port_file, fx->dir, name));
    cr_assert(th_proc_spawn(&w->proc, fx->dir, argv, NULL), "webhook.py starts");
    while (!(ports = th_read_file(port_file)) && th_now_ms() < deadline)
        th_sleep_ms(20);
    cr_assert(ports, "webhook.py wrote its port");
    {
        bson_t doc;
        bson_iter_t it;
        cr_assert(bson_init_from_json(&doc, ports, -1, NULL));
        cr_assert(bson_iter_init_find(&it, &doc, "port"));
        w->port = (int)bson_iter_as_int64(&it);
        bson_destroy(&doc);
    }
    free(ports);
    snprintf(w->url, sizeof w->url, "http://127.0.0.1:%d/services/T0/B0/%s", w->port,
             FX_WEBHOOK_SECRET);
}

void fx_webhook_stop(fx_webhook_t *w)
{
    th_proc_stop(&w->proc, 5000);
}

void fx_webhook_script(fx_webhook_t *w, const char *script)
{
    long status;
    char *reply = fx_http(w->port, "POST", "/control/script", script, &status);

    cr_assert_eq(status, 200, "%s", reply ? reply : "");
    free(reply);
}

void fx_webhook_received(fx_webhook_t *w, bson_t *out)
{
    long status;
    char *reply = fx_http(w->port, "GET", "/control/received", NULL, &status);
    char *json;

    cr_assert_eq(status, 200);
    json = bson_strdup_printf("{\"a\": %s}", reply);
    cr_assert(bson_init_from_json(out, json, -1, NULL), "%s", reply);
    bson_free(json);
    free(reply);
}

size_t fx_webhook_texts(fx_webhook_t *w, char ***texts)
{
    bson_t got;
    bson_iter_t it, list;
    size_t n = 0;

    fx_webhook_received(w, &got);
    *texts = NULL;
    cr_assert(bson_iter_init_find(&it, &got, "a") && bson_iter_recurse(&it, &list));
    while (bson_iter_next(&list)) {
        bson_iter_t field;
        int64_t status = 0;

        bson_iter_recurse(&list, &field);
        if (bson_iter_find(&field, "status"))
            status = bson_iter_as_int64(&field);
        if (status < 200 || status >= 300)
            continue;
        bson_iter_recurse(&list, &field);
        if (!bson_iter_find_descendant(&field, "body.text", &field))
            continue;
        *texts = realloc(*texts, (n + 1) * sizeof **texts);
        (*texts)[n++] = strdup(bson_iter_utf8(&field, NULL));
    }
    bson_destroy(&got);
    return n;
}

size_t fx_webhook_count(fx_webhook_t *w)
{
    bson_t got;
    bson_iter_t it, list;
    size_t n = 0;

    fx_webhook_received(w, &got);
    cr_assert(bson_iter_init_find(&it, &got, "a") && bson_iter_recurse(&it, &list));
    while (bson_iter_next(&list))
        n++;
    bson_destroy(&got);
    return n;
}

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void append_reply(FILE *out, const redisReply *r)
{
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
        fprintf(out, "%s\n", r->str);
        break;
    case REDIS_REPLY_INTEGER:
        fprintf(out, "%lld\n", r->integer);
        break;
    case REDIS_REPLY_ARRAY:
        for (size_t k = 0; k < r->elements; k++)
            append_reply(out, r->element[k]);
        break;
    default:
        fprintf(out, "(nil)\n");
    }
}

/* The lease's own keys (its owner and epoch counter) are written by every
 * start that gets as far as Redis, refused or not: they are not the state a
 * refusal must leave alone. */
static bool is_lease_key(const char *name)
{
    size_t n = strlen(name);

    return (n > 7 && strcmp(name + n - 7, "}:lease") == 0) ||
           (n > 7 && strcmp(name + n - 7, "}:epoch") == 0);
}

char *fx_redis_state(fx_t *fx)
{
    redisReply *keys = th_redis_cmd(&fx->redis, "KEYS tokenwatch:*");
    char **names;
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);

    cr_assert(keys && keys->type == REDIS_REPLY_ARRAY);
    names = calloc(keys->elements + 1, sizeof *names);
    for (size_t k = 0; k < keys->elements; k++)
        names[k] = keys->element[k]->str;
    qsort(names, keys->elements, sizeof *names, compare_strings);
    for (size_t k = 0; k < keys->elements; k++) {
        redisReply *type;

        if (is_lease_key(names[k]))
            continue;
        type = th_redis_cmd(&fx->redis, "TYPE %s", names[k]);
        redisReply *content = NULL;

        fprintf(out, "== %s (%s)\n", names[k], type->str);
        if (strcmp(type->str, "hash") == 0) {
            /* HGETALL order is not stable across rewrites: sort the pairs. */
            redisReply *fields = th_redis_cmd(&fx->redis, "HKEYS %s", names[k]);
            char **f = calloc(fields->elements + 1, sizeof *f);
            for (size_t i = 0; i < fields->elements; i++)
                f[i] = fields->element[i]->str;
            qsort(f, fields->elements, sizeof *f, compare_strings);
            for (size_t i = 0; i < fields->elements; i++) {
                redisReply *v = th_redis_cmd(&fx->redis, "HGET %s %s", names[k], f[i]);
                fprintf(out, "%s=%s\n", f[i], v->str);
                freeReplyObject(v);
            }
            free(f);
            freeReplyObject(fields);
        } else if (strcmp(type->str, "list") == 0) {
            content = th_redis_cmd(&fx->redis, "LRANGE %s 0 -1", names[k]);
        } else if (strcmp(type->str, "stream") == 0) {
            content = th_redis_cmd(&fx->redis, "XRANGE %s - +", names[k]);
        } else {
            content = th_redis_cmd(&fx->redis, "GET %s", names[k]);
        }
        if (content)
            append_reply(out, content);
        freeReplyObject(content);
        freeReplyObject(type);
    }
    fclose(out);
    free(names);
    freeReplyObject(keys);
    return text;
}

int fx_cli(fx_t *fx, const char *const args[], char **out, char **err)
{
    const char *argv[48];
    size_t n = 0;

    argv[n++] = th_binary();
    for (size_t k = 0; args[k]; k++)
        argv[n++] = args[k];
    argv[n++] = "--mongo-uri";
    argv[n++] = fx->sim.uri;
    argv[n++] = "--redis-url";
    argv[n++] = fx->redis_url;
    argv[n] = NULL;
    return th_run(fx->dir, argv, NULL, 30000, out, err);
}

bool fx_stream_complete_at(int port, int64_t last)
{
    th_redis_t at;
    redisReply *r;
    unsigned char *seen = calloc((size_t)last + 1, 1);
    bool all;

    memset(&at, 0, sizeof at);
    at.port = port;
    r = th_redis_cmd(&at, "XRANGE %s - +", "tokenwatch:{default}:events");
    all = seen && r && r->type == REDIS_REPLY_ARRAY;
    for (size_t k = 0; all && k < r->elements; k++) {
        redisReply *fields = r->element[k]->element[1];
        for (size_t f = 0; f + 1 < fields->elements; f += 2)
            if (strcmp(fields->element[f]->str, "event") == 0) {
                const char *p = strstr(fields->element[f + 1]->str, "\"seq\" : ");
                long long seq = p ? atoll(p + 8) : 0;
                if (seq >= 1 && seq <= last)
                    seen[seq] = 1;
            }
    }
    for (int64_t s = 1; all && s <= last; s++)
        all = seen[s];
    free(seen);
    if (r)
        freeReplyObject(r);
    return all;
}
