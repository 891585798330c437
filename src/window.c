#include "tokenwatch/window.h"

#include <string.h>

#include "tokenwatch/follow.h"
#include "tokenwatch/log.h"

void tw_window_reader_init(tw_window_reader_t *r, const tw_window_opts_t *opts)
{
    memset(r, 0, sizeof *r);
    r->opts = *opts;
    if (!r->opts.who)
        r->opts.who = "";
}

void tw_window_reader_release(tw_window_reader_t *r)
{
    if (!r)
        return;
    tw_shards_release(&r->shards);
    memset(r, 0, sizeof *r);
}

static bool read_shards(tw_window_reader_t *r, mongoc_client_t *client, tw_oplog_window_t *w,
                        tw_ctime_t *newest, tw_error_t *err)
{
    if (r->rediscover)
        tw_shards_release(&r->shards);
    r->rediscover = false;
    if (r->shards.count == 0 &&
        !tw_shards_discover(client, r->opts.mongo_uri, (const char *const *)r->opts.shard_uri,
                            r->opts.shard_uri_count, &r->shards, err))
        return false;
    if (tw_shards_probe(&r->shards, w, newest, err))
        return true;
    r->rediscover = true;
    return false;
}

bool tw_window_read(tw_window_reader_t *r, mongoc_client_t *client, tw_oplog_window_t *w,
                    tw_ctime_t *newest, tw_error_t *err)
{
    if (r->opts.read_shards && !r->topology_known) {
        if (!tw_shards_is_router(client, &r->sharded, err))
            return false;
        r->topology_known = true;
    }
    if (r->sharded)
        return read_shards(r, client, w, newest, err);
    if (!tw_oplog_probe(client, w, err))
        return false;
    *newest = w->newest;
    return true;
}

tw_ctime_t tw_window_cluster_time(tw_window_reader_t *r, mongoc_client_t *client,
                                  tw_ctime_t newest, int64_t now_wall_ms, bool *from_server)
{
    tw_error_t err;

    *from_server = newest.t != 0 ||
                   (client && tw_follow_cluster_time(client, &newest, &err));
    if (*from_server)
        return newest;
    if (!r->told_local_clock)
        TW_WARN("%sthe server reports no cluster time (%s): the local clock stands in",
                r->opts.who, client ? err.message : "not connected");
    r->told_local_clock = true;
    newest.t = (uint32_t)(now_wall_ms / 1000);
    newest.i = 0;
    return newest;
}

bool tw_window_sharded(const tw_window_reader_t *r)
{
    return r->sharded;
}

const tw_shards_t *tw_window_shards(const tw_window_reader_t *r)
{
    return r->sharded && r->shards.count > 0 ? &r->shards : NULL;
}
