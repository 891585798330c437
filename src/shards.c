#include "tokenwatch/shards.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tokenwatch/mem.h"
#include "tokenwatch/utf8.h"

/* Probing a shard must not stall the guard for the driver's 30 s default. */
#define SHARD_TIMEOUT_MS 5000

bool tw_shard_host_split(const char *host, char *set_name, size_t set_size,
                         char *hosts, size_t hosts_size, tw_error_t *err)
{
    const char *slash = strchr(host, '/');
    size_t set_len = slash ? (size_t)(slash - host) : 0;
    const char *list = slash ? slash + 1 : host;

    if (set_len >= set_size || strlen(list) >= hosts_size || !*list ||
        (slash && set_len == 0)) {
        tw_error_set(err, TW_ERR_MONGO, 0,
                     "listShards gave a host that is not \"set/host:port,...\" "
                     "(%zu characters)",
                     strlen(host));
        return false;
    }
    memcpy(set_name, host, set_len);
    set_name[set_len] = '\0';
    memcpy(hosts, list, strlen(list) + 1);
    return true;
}

const char *tw_shard_override(const char *const *overrides, size_t count, const char *name)
{
    size_t len = strlen(name);

    for (size_t k = 0; k < count; k++)
        if (strncmp(overrides[k], name, len) == 0 && overrides[k][len] == '=')
            return overrides[k] + len + 1;
    return NULL;
}

/* Every option of the router's URI but replicaSet, onto the shard's. */
static void copy_options(const mongoc_uri_t *from, mongoc_uri_t *to)
{
    const bson_t *opts = mongoc_uri_get_options(from);
    bson_iter_t it;

    if (!opts || !bson_iter_init(&it, opts))
        return;
    while (bson_iter_next(&it)) {
        const char *key = bson_iter_key(&it);

        if (strcasecmp(key, MONGOC_URI_REPLICASET) == 0)
            continue;
        if (BSON_ITER_HOLDS_UTF8(&it))
            mongoc_uri_set_option_as_utf8(to, key, bson_iter_utf8(&it, NULL));
        else if (BSON_ITER_HOLDS_BOOL(&it))
            mongoc_uri_set_option_as_bool(to, key, bson_iter_bool(&it));
        else if (BSON_ITER_HOLDS_INT32(&it))
            mongoc_uri_set_option_as_int32(to, key, bson_iter_int32(&it));
        else if (BSON_ITER_HOLDS_INT64(&it))
            mongoc_uri_set_option_as_int64(to, key, bson_iter_int64(&it));
    }
}

static void copy_credentials(const mongoc_uri_t *from, mongoc_uri_t *to)
{
    const bson_t *cred = mongoc_uri_get_credentials(from);
    bson_iter_t it;
    bson_t props;

    if (mongoc_uri_get_username(from))
        mongoc_uri_set_username(to, mongoc_uri_get_username(from));
    if (mongoc_uri_get_password(from))
        mongoc_uri_set_password(to, mongoc_uri_get_password(from));
    if (mongoc_uri_get_auth_mechanism(from))
        mongoc_uri_set_auth_mechanism(to, mongoc_uri_get_auth_mechanism(from));
    if (cred && bson_iter_init_find_case(&it, cred, MONGOC_URI_AUTHSOURCE) &&
        BSON_ITER_HOLDS_UTF8(&it))
        mongoc_uri_set_auth_source(to, bson_iter_utf8(&it, NULL));
    if (mongoc_uri_get_mechanism_properties(from, &props)) {
        mongoc_uri_set_mechanism_properties(to, &props);
        bson_destroy(&props);
    }
}

static void default_timeouts(mongoc_uri_t *uri)
{
    const bson_t *opts = mongoc_uri_get_options(uri);
    bson_iter_t it;

    if (!opts || !bson_iter_init_find_case(&it, opts, MONGOC_URI_SERVERSELECTIONTIMEOUTMS))
        mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS,
                                       SHARD_TIMEOUT_MS);
    if (!opts || !bson_iter_init_find_case(&it, opts, MONGOC_URI_CONNECTTIMEOUTMS))
        mongoc_uri_set_option_as_int32(uri, MONGOC_URI_CONNECTTIMEOUTMS, SHARD_TIMEOUT_MS);
}

mongoc_uri_t *tw_shard_uri(const char *router_uri, const char *set_name, const char *hosts,
                           tw_error_t *err)
{
    bson_error_t berr;
    mongoc_uri_t *router = mongoc_uri_new_with_error(router_uri, &berr);
    mongoc_uri_t *uri = NULL;
    const char *db;
    char *text;

    if (!router) {
        tw_error_set(err, TW_ERR_USAGE, 0, "--mongo-uri is not a connection string");
        return NULL;
    }
    db = mongoc_uri_get_database(router);
    text = bson_strdup_printf("mongodb://%s/%s", hosts, db ? db : "");
    uri = mongoc_uri_new_with_error(text, &berr);
    if (!uri) {
        tw_error_set(err, TW_ERR_MONGO, 0, "shard %s: hosts %s give no URI: %s", set_name,
                     hosts, berr.message);
        goto out;
    }
    copy_options(router, uri);
    copy_credentials(router, uri);
    if (set_name[0])
        mongoc_uri_set_option_as_utf8(uri, MONGOC_URI_REPLICASET, set_name);
    default_timeouts(uri);
out:
    bson_free(text);
    mongoc_uri_destroy(router);
    return uri;
}

bool tw_shards_edge(const tw_shard_t *shards, size_t count, size_t *edge)
{
    bool found = false;

    for (size_t k = 0; k < count; k++) {
        const tw_shard_t *s = &shards[k];
        int cmp;

        if (!s->readable)
            continue;
        if (!found) {
            *edge = k;
            found = true;
            continue;
        }
        cmp = tw_ctime_cmp(s->window.oldest, shards[*edge].window.oldest);
        if (cmp > 0 || (cmp == 0 && tw_oplog_window_seconds(&s->window) <
                                        tw_oplog_window_seconds(&shards[*edge].window)))
            *edge = k;
    }
    return found;
}

bool tw_shards_is_router(mongoc_client_t *router, bool *is_router, tw_error_t *err)
{
    bson_error_t berr;
    mongoc_server_description_t *sd = mongoc_client_select_server(router, false, NULL, &berr);

    if (!sd) {
        tw_error_set(err, TW_ERR_MONGO, 0, "no server to ask: %s", berr.message);
        return false;
    }
    *is_router = strcmp(mongoc_server_description_type(sd), "Mongos") == 0;
    mongoc_server_description_destroy(sd);
    return true;
}

/* Adds a shard reached with uri (taken over), or gives it up with err. */
static bool add_shard(tw_shards_t *out, const char *name, const char *hosts, bool overridden,
                      mongoc_uri_t *uri, tw_error_t *err)
{
    tw_shard_t *grown, *s;
    bson_error_t berr;

    if (out->count >= TW_SHARDS_MAX) {
        mongoc_uri_destroy(uri);
        return true; /* said by the caller */
    }
    grown = tw_realloc(out->shards, (out->count + 1) * sizeof *grown);
    out->shards = grown;
    s = &grown[out->count];
    memset(s, 0, sizeof *s);
    tw_utf8_format(s->name, sizeof s->name, "%s", name);
    snprintf(s->hosts, sizeof s->hosts, "%s", hosts);
    s->overridden = overridden;
    s->client = mongoc_client_new_from_uri_with_error(uri, &berr);
    mongoc_uri_destroy(uri);
    if (!s->client) {
        tw_error_set(err, TW_ERR_MONGO, 0, "shard %s: no client: %s", name, berr.message);
        return false;
    }
    mongoc_client_set_error_api(s->client, MONGOC_ERROR_API_VERSION_2);
    mongoc_client_set_appname(s->client, "tokenwatch");
    out->count++;
    return true;
}

/* The client of one shard: its override, else the router's credentials. */
static bool discover_one(tw_shards_t *out, const char *router_uri, const char *id,
                         const char *host, const char *const *overrides, size_t override_count,
                         tw_error_t *err)
{
    const char *own = tw_shard_override(overrides, override_count, id);
    char set_name[TW_SHARD_NAME_MAX], hosts[TW_SHARD_HOSTS_MAX];
    mongoc_uri_t *uri;
    bson_error_t berr;

    if (own) {
        uri = mongoc_uri_new_with_error(own, &berr);
        if (!uri) {
            tw_error_set(err, TW_ERR_USAGE, 0, "--shard-uri %s=...: not a connection string",
                         id);
            return false;
        }
        default_timeouts(uri);
        return add_shard(out, id, "--shard-uri", true, uri, err);
    }
    if (!tw_shard_host_split(host, set_name, sizeof set_name, hosts, sizeof hosts, err))
        return false;
    uri = tw_shard_uri(router_uri, set_name, hosts, err);
    return uri && add_shard(out, id, host, false, uri, err);
}

/* The overrides listShards did not name (or all, when it was refused). */
static bool discover_overrides(tw_shards_t *out, const char *const *overrides,
                               size_t override_count, tw_error_t *err)
{
    for (size_t k = 0; k < override_count; k++) {
        char name[TW_SHARD_NAME_MAX];
        size_t len = strcspn(overrides[k], "=");
        bool known = false;

        snprintf(name, sizeof name, "%.*s", (int)len, overrides[k]);
        for (size_t j = 0; j < out->count; j++)
            known = known || strcmp(out->shards[j].name, name) == 0;
        if (!known && !discover_one(out, NULL, name, NULL, overrides, override_count, err))
            return false;
    }
    return true;
}

bool tw_shards_discover(mongoc_client_t *router, const char *router_uri,
                        const char *const *overrides, size_t override_count,
                        tw_shards_t *out, tw_error_t *err)
{
    bson_t cmd = BSON_INITIALIZER, reply;
    bson_error_t berr;
    bson_iter_t it, list;
    bool ok = false;

    memset(out, 0, sizeof *out);
    BSON_APPEND_INT32(&cmd, "listShards", 1);
    if (!mongoc_client_command_simple(router, "admin", &cmd, NULL, &reply, &berr)) {
        if (override_count > 0) {
            ok = discover_overrides(out, overrides, override_count, err);
            goto out;
        }
        tw_error_set(err, TW_ERR_MONGO, (int)berr.code,
                     "cannot list the shards (%s): grant clusterMonitor, or name "
                     "each shard with --shard-uri NAME=URI",
                     berr.message);
        goto out;
    }
    if (bson_iter_init_find(&it, &reply, "shards") && bson_iter_recurse(&it, &list)) {
        while (bson_iter_next(&list)) {
            bson_iter_t id, host;

            if (!BSON_ITER_HOLDS_DOCUMENT(&list) || !bson_iter_recurse(&list, &id) ||
                !bson_iter_find(&id, "_id") || !BSON_ITER_HOLDS_UTF8(&id) ||
                !bson_iter_recurse(&list, &host) || !bson_iter_find(&host, "host") ||
                !BSON_ITER_HOLDS_UTF8(&host))
                continue;
            if (!discover_one(out, router_uri, bson_iter_utf8(&id, NULL),
                              bson_iter_utf8(&host, NULL), overrides, override_count, err))
                goto failed;
        }
    }
    ok = discover_overrides(out, overrides, override_count, err);
failed:
    bson_destroy(&reply);
out:
    bson_destroy(&cmd);
    if (ok && out->count == 0) {
        tw_error_set(err, TW_ERR_MONGO, 0, "listShards named no shard");
        ok = false;
    }
    if (!ok)
        tw_shards_release(out);
    return ok;
}

/* "shard0: ...; shard1: ..." for the shards that could not be read. */
static void unreadable_message(const tw_shards_t *s, tw_error_t *err)
{
    char text[TW_ERROR_MESSAGE_MAX] = "";
    size_t used = 0, bad = 0;
    int code = 0;

    for (size_t k = 0; k < s->count && used < sizeof text; k++) {
        if (s->shards[k].readable)
            continue;
        code = code ? code : s->shards[k].error.code;
        used += (size_t)snprintf(text + used, sizeof text - used, "%s%s (%s): %s",
                                 bad++ ? "; " : "", s->shards[k].name, s->shards[k].hosts,
                                 s->shards[k].error.message);
    }
    tw_error_set(err, TW_ERR_MONGO, code,
                 "%zu of %zu shards cannot be read: %s", bad, s->count, text);
}

bool tw_shards_probe(tw_shards_t *s, tw_oplog_window_t *edge, tw_ctime_t *newest,
                     tw_error_t *err)
{
    bool all = s->count > 0;

    for (size_t k = 0; k < s->count; k++) {
        tw_shard_t *shard = &s->shards[k];

        tw_error_clear(&shard->error);
        shard->readable = tw_oplog_probe(shard->client, &shard->window, &shard->error);
        all = all && shard->readable;
        if (shard->readable && tw_ctime_cmp(shard->window.newest, *newest) > 0)
            *newest = shard->window.newest;
    }
    s->has_edge = tw_shards_edge(s->shards, s->count, &s->edge);
    if (!all) {
        unreadable_message(s, err);
        return false;
    }
    *edge = s->shards[s->edge].window;
    return true;
}

void tw_shards_release(tw_shards_t *s)
{
    if (!s)
        return;
    for (size_t k = 0; k < s->count; k++)
        mongoc_client_destroy(s->shards[k].client);
    free(s->shards);
    memset(s, 0, sizeof *s);
}
