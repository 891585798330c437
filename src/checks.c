/*
 * checks.c - the settings' checks that need a library or another module: a
 * MongoDB URI parsed by libmongoc, a Redis URL and login, the metrics
 * address, a webhook URL (libcurl's URL API). settings.c calls them through
 * checks.h, which names no library, so the settings table stays pure.
 */
#include "tokenwatch/checks.h"

#include <mongoc/mongoc.h>
#include <string.h>

#include "tokenwatch/http.h"
#include "tokenwatch/redact.h"
#include "tokenwatch/redis.h"
#include "tokenwatch/shards.h"
#include "tokenwatch/sources.h"
#include "tokenwatch/webhook.h"

bool tw_check_mongo_uri(const char *value, tw_error_t *err)
{
    bson_error_t berr;
    mongoc_uri_t *uri = mongoc_uri_new_with_error(value, &berr);
    char shown[512];

    if (uri) {
        mongoc_uri_destroy(uri);
        return true;
    }
    tw_redact_url(value, shown, sizeof shown);
    /* libmongoc's message may quote the URI: do not pass it on. */
    tw_error_set(err, TW_ERR_USAGE, 0,
                 "'%s' is not a MongoDB connection string (mongodb://host:port/"
                 "?replicaSet=NAME or mongodb+srv://...)",
                 shown);
    return false;
}


bool tw_check_shard_uri(const char *value, tw_error_t *err)
{
    const char *eq = strchr(value, '=');
    char name[TW_SHARD_NAME_MAX];

    size_t name_len = eq ? (size_t)(eq - value) : 0;

    if (!eq || name_len == 0 || name_len >= sizeof name ||
        strcspn(value, ":/?@") < name_len) {
        char shown[512];

        tw_redact_url(value, shown, sizeof shown);
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "'%s' is not NAME=URI (a shard's name as listShards gives "
                     "it, then its connection string)",
                     shown);
        return false;
    }
    return tw_check_mongo_uri(eq + 1, err);
}


bool tw_check_redis_url(const char *value, tw_error_t *err)
{
    tw_redis_url_t url;
    bool ok = tw_redis_url_parse(value, &url, err);

    tw_redis_url_release(&url);
    return ok;
}


bool tw_check_redis_login(const char *redis_url, const char *password, tw_error_t *err)
{
    tw_redis_url_t url;
    bool ok = tw_redis_url_load(redis_url, password, &url, err);

    tw_redis_url_release(&url);
    return ok;
}

bool tw_check_metrics_addr(const char *value, tw_error_t *err)
{
    char host[256];
    int port;

    return strcmp(value, "off") == 0 ||
           tw_http_parse_addr(value, host, sizeof host, &port, err);
}


bool tw_check_webhook_url(const char *value, tw_error_t *err)
{
    return tw_webhook_check_url(value, err);
}

bool tw_check_guard(const char *value, tw_error_t *err)
{
    tw_source_t source;
    bool ok = tw_source_parse(value, &source, err);

    if (ok)
        tw_source_release(&source);
    return ok;
}
