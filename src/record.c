#include "tokenwatch/record.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenwatch/mem.h"
#include "tokenwatch/redis.h" /* TW_REDIS_REPLY_ERROR only: no I/O here */

/*
 * The commit script. KEYS: the checkpoint hash, its history list, its gaps
 * list, the lease's epoch counter, and (redis sink) the event stream. ARGV:
 * token JSON, t, i, _data, wall_ms, updated_ms, events, source, scope, mode,
 * now_ms, history_every_ms, history_reason, gap JSON ("" for none), layout,
 * time_source, the stream's MAXLEN, the number of events, the writer's
 * epoch, then five values per event.
 *
 * Fencing: a writer holding the lease of epoch E (ARGV[19]) is refused
 * (TWFENCED, with the current epoch) once the counter has moved past E: a
 * leader paused past its lease, whose successor has taken over, cannot
 * write. Epoch 0 is a writer without a lease (checked by nothing).
 *
 * mode "advance" writes only when the new position is not behind the
 * stored one: by cluster_time (a record from before that field has it in
 * its 82 token); at equal times by _data, which is token order, but only
 * when both tokens have the same known layout. It returns {0, stored cluster time}
 * when the stored token is ahead. Every history_every_ms it also keeps the
 * checkpoint it replaces in the history.
 *
 * mode "force" (resume-from, fallback) always writes: the checkpoint it
 * replaces goes to the history first (a key that is not a hash at all as
 * {"type", "raw"}, then deleted; once: a recovery tried again does not
 * push the same checkpoint twice and crowd out what a rollback needs), and
 * the gap, when there is one, to the gaps list, unless the newest gap
 * already starts there (a recovery that had to be tried twice).
 *
 * The events of the batch are appended by the script itself, after it has
 * checked the type of every key it writes: a key of the wrong type is
 * refused (TWTYPE, naming it) before anything is written, so events and
 * checkpoint land together or not at all. A commit whose position is
 * already stored (a retry after a timeout whose first try did run) writes
 * nothing: its events went in with that first try. (Redis does not roll back a
 * MULTI/EXEC whose commands fail when they run, nor a script that fails
 * half way: checking first is what makes it one step.)
 *
 * A write returns {1, prior}: the cluster_time it replaced, "" when the hash
 * had none, "-" when there was no hash at all, so the caller can tell when
 * Redis lost what it had committed (restarted empty, flushed, failed over).
 */
static const char commit_script[] =
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    "local function wrong(key, want)\n"
    "  local t = redis.call('TYPE', key)['ok']\n"
    "  if t ~= want and t ~= 'none' then\n"
    "    return redis.error_reply('TWTYPE ' .. key .. ' holds a ' .. t ..\n"
    "                             ', not a ' .. want)\n"
    "  end\n"
    "end\n"
    "local ckind = redis.call('TYPE', KEYS[1])['ok']\n"
    "local set_aside = ckind ~= 'hash' and ckind ~= 'none' and ARGV[10] == 'force'\n"
    "local bad = (not set_aside and wrong(KEYS[1], 'hash')) or\n"
    "            wrong(KEYS[2], 'list') or\n"
    "            wrong(KEYS[3], 'list') or wrong(KEYS[4], 'string') or\n"
    "            (KEYS[5] and wrong(KEYS[5], 'stream'))\n"
    "if bad then return bad end\n"
    "local mine = tonumber(ARGV[19])\n"
    "local epoch = tonumber(redis.call('GET', KEYS[4]) or '0') or 0\n"
    "if mine > 0 and epoch > mine then\n"
    "  return redis.error_reply('TWFENCED ' .. epoch)\n"
    "end\n"
    "if ckind == 'hash' and redis.call('HGET', KEYS[1], 'token') == ARGV[1] and\n"
    "   redis.call('HGET', KEYS[1], 'cluster_time') == ARGV[2] .. ':' .. ARGV[3] then\n"
    "  return {1}\n"
    "end\n"
    "local prior = '-'\n"
    "if ckind == 'hash' then\n"
    "  prior = redis.call('HGET', KEYS[1], 'cluster_time') or ''\n"
    "elseif set_aside then\n"
    "  prior = ''\n"
    "end\n"
    "if KEYS[5] then\n"
    "  for k = 0, tonumber(ARGV[18]) - 1 do\n"
    "    local b = 20 + k * 5\n"
    "    redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[17], '*', 'event', ARGV[b],\n"
    "               'token', ARGV[b + 1], 'cluster_time', ARGV[b + 2], 'op',\n"
    "               ARGV[b + 3], 'ns', ARGV[b + 4])\n"
    "  end\n"
    "end\n"
    "local function snapshot(reason)\n"
    "  local t = {}\n"
    "  if set_aside then\n"
    "    t['type'] = ckind\n"
    "    if ckind == 'string' then t['raw'] = redis.call('GET', KEYS[1]) end\n"
    "  else\n"
    "    local h = redis.call('HGETALL', KEYS[1])\n"
    "    if #h == 0 then return nil end\n"
    "    for k = 1, #h, 2 do t[h[k]] = h[k + 1] end\n"
    "  end\n"
    "  t['pushed_ms'] = ARGV[11]\n"
    "  t['reason'] = reason\n"
    "  return cjson.encode(t)\n"
    "end\n"
    "local function kept_already()\n"
    "  if set_aside then return false end\n"
    "  local newest = redis.call('LINDEX', KEYS[2], 0)\n"
    "  if not newest then return false end\n"
    "  local ok, e = pcall(cjson.decode, newest)\n"
    "  return ok and type(e) == 'table' and\n"
    "         e['token'] == redis.call('HGET', KEYS[1], 'token') and\n"
    "         e['cluster_time'] == redis.call('HGET', KEYS[1], 'cluster_time')\n"
    "end\n"
    "local function keep(reason)\n"
    "  local snap = snapshot(reason)\n"
    "  if snap and not kept_already() then\n"
    "    redis.call('LPUSH', KEYS[2], snap)\n"
    "    redis.call('LTRIM', KEYS[2], 0, " TW_STR(TW_HISTORY_MAX) " - 1)\n"
    "  end\n"
    "end\n"
    "if ARGV[10] == 'force' then\n"
    "  keep(ARGV[13])\n"
    "  if ARGV[14] ~= '' then\n"
    "    local newest = redis.call('LINDEX', KEYS[3], 0)\n"
    "    local same = false\n"
    "    if newest then\n"
    "      local ok, g = pcall(cjson.decode, newest)\n"
    "      local ng = cjson.decode(ARGV[14])\n"
    "      same = ok and type(g) == 'table' and g['from'] == ng['from']\n"
    "    end\n"
    "    if not same then\n"
    "      redis.call('LPUSH', KEYS[3], ARGV[14])\n"
    "      redis.call('LTRIM', KEYS[3], 0, " TW_STR(TW_GAPS_MAX) " - 1)\n"
    "    end\n"
    "  end\n"
    "else\n"
    "  local ct, ci, cdata\n"
    "  local cur = redis.call('HGET', KEYS[1], 'cluster_time') or ''\n"
    "  local a, b = string.match(cur, '^(%d+):(%d+)$')\n"
    "  ct = tonumber(a); ci = tonumber(b)\n"
    "  local layout = redis.call('HGET', KEYS[1], 'layout')\n"
    "  local ok, doc = pcall(cjson.decode,\n"
    "                        redis.call('HGET', KEYS[1], 'token') or '')\n"
    "  if ok and type(doc) == 'table' and type(doc['_data']) == 'string' then\n"
    "    cdata = string.upper(doc['_data'])\n"
    "    if not layout and string.match(cdata, '^82%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x') then\n"
    "      layout = 'mongodb'\n"
    "      if not ct then\n"
    "        ct = tonumber(string.sub(cdata, 3, 10), 16)\n"
    "        ci = tonumber(string.sub(cdata, 11, 18), 16)\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  if ct then\n"
    "    local nt = tonumber(ARGV[2]); local ni = tonumber(ARGV[3])\n"
    "    local stored = string.format('%d:%d', ct, ci)\n"
    "    if nt < ct or (nt == ct and ni < ci) then return {0, stored} end\n"
    "    if nt == ct and ni == ci and cdata and layout == ARGV[15]\n"
    "       and layout ~= 'opaque' and string.upper(ARGV[4]) < cdata then\n"
    "      return {0, stored}\n"
    "    end\n"
    "  end\n"
    "  local last = redis.call('LINDEX', KEYS[2], 0)\n"
    "  local due = true\n"
    "  if last then\n"
    "    local okl, l = pcall(cjson.decode, last)\n"
    "    if okl and type(l) == 'table' and tonumber(l['pushed_ms']) then\n"
    "      due = tonumber(ARGV[11]) - tonumber(l['pushed_ms']) >= tonumber(ARGV[12])\n"
    "    end\n"
    "  end\n"
    "  if due then keep('periodic') end\n"
    "end\n"
    "if set_aside then redis.call('DEL', KEYS[1]) end\n"
    "redis.call('HSET', KEYS[1], 'token', ARGV[1], 'cluster_time',\n"
    "           ARGV[2] .. ':' .. ARGV[3], 'wall_ms', ARGV[5], 'updated_ms',\n"
    "           ARGV[6], 'events', ARGV[7], 'source', ARGV[8], 'scope', ARGV[9],\n"
    "           'layout', ARGV[15], 'time_source', ARGV[16])\n"
    "return {1, prior}\n";

void tw_checkpoint_init(tw_checkpoint_t *cp)
{
    memset(cp, 0, sizeof *cp);
}

void tw_checkpoint_release(tw_checkpoint_t *cp)
{
    if (!cp)
        return;
    if (cp->has_token)
        bson_destroy(&cp->token);
    free(cp->scope);
    memset(cp, 0, sizeof *cp);
}

void tw_checkpoint_set_position(tw_checkpoint_t *cp, const bson_t *token,
                                tw_ctime_t ct, tw_time_source_t source)
{
    /* Once per event: one copy (a token is small enough to be held inline),
     * and its layout read only when the record is written. */
    if (token != &cp->token) {
        if (cp->has_token)
            bson_destroy(&cp->token);
        bson_copy_to(token, &cp->token);
    }
    cp->has_token = true;
    cp->cluster_time = ct;
    cp->time_source = source;
    cp->wall_ms = tw_ctime_wall_ms(ct);
}

bool tw_checkpoint_set_token(tw_checkpoint_t *cp, const bson_t *token,
                             tw_error_t *err)
{
    tw_ctime_t ct;

    if (!tw_token_cluster_time(token, &ct, err))
        return false;
    tw_checkpoint_set_position(cp, token, ct, TW_TIME_TOKEN);
    return true;
}

tw_token_layout_t tw_checkpoint_layout(const tw_checkpoint_t *cp)
{
    return cp->has_token ? tw_token_layout(&cp->token, NULL) : TW_LAYOUT_OPAQUE;
}

void tw_checkpoint_copy_position(tw_checkpoint_t *dst, const tw_checkpoint_t *src)
{
    if (!src->has_token)
        return;
    tw_checkpoint_set_position(dst, &src->token, src->cluster_time, src->time_source);
    dst->wall_ms = src->wall_ms;
}

void tw_checkpoint_key(const char *name, const char *what, char out[TW_KEY_MAX])
{
    /* The {NAME} hash tag keeps a stream's keys in one Redis Cluster slot. */
    snprintf(out, TW_KEY_MAX, "tokenwatch:{%s}:%s", name, what);
}

static char *format_i64(int64_t v)
{
    return bson_strdup_printf("%" PRId64, v);
}

bool tw_record_encode(const tw_checkpoint_t *cp, tw_record_fields_t *out,
                      tw_error_t *err)
{
    static const char *const names[TW_RECORD_FIELDS] = {
        "token", "cluster_time", "wall_ms",  "updated_ms", "events",
        "source", "scope", "layout", "time_source"};
    char ct[TW_CTIME_TEXT_MAX];

    memset(out, 0, sizeof *out);
    if (!cp->has_token) {
        tw_error_set(err, TW_ERR_USAGE, 0, "a checkpoint needs a token");
        return false;
    }
    tw_ctime_format(cp->cluster_time, ct);
    memcpy(out->names, names, sizeof names);
    out->values[0] = tw_token_to_json(&cp->token);
    out->values[1] = bson_strdup(ct);
    out->values[2] = format_i64(cp->wall_ms);
    out->values[3] = format_i64(cp->updated_ms);
    out->values[4] = format_i64(cp->events);
    out->values[5] = bson_strdup(cp->source);
    out->values[6] = bson_strdup(cp->scope ? cp->scope : "");
    out->values[7] = bson_strdup(tw_token_layout_name(tw_checkpoint_layout(cp)));
    out->values[8] = bson_strdup(tw_time_source_name(cp->time_source));
    return true;
}

void tw_record_fields_release(tw_record_fields_t *fields)
{
    if (!fields)
        return;
    for (size_t k = 0; k < TW_RECORD_FIELDS; k++)
        bson_free(fields->values[k]);
    memset(fields, 0, sizeof *fields);
}

static bool parse_i64(const char *name, const char *text, int64_t *out,
                      tw_error_t *err)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(text, &end, 10);
    if (errno || end == text || *end != '\0') {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "checkpoint field %s is not a number: '%s'", name, text);
        return false;
    }
    *out = v;
    return true;
}

/* The stored cluster_time, or the token's; and where it came from. */
static bool decode_time(tw_checkpoint_t *out, const char *ct_text,
                        const char *source_text, tw_error_t *err)
{
    tw_ctime_t in_token;
    char shown[TW_CTIME_TEXT_MAX];
    tw_token_layout_t layout = tw_token_layout(&out->token, &in_token);

    if (!ct_text) {
        out->cluster_time = in_token;
        out->time_source = layout == TW_LAYOUT_OPAQUE ? TW_TIME_UNKNOWN : TW_TIME_TOKEN;
        return true;
    }
    if (!tw_ctime_parse(ct_text, &out->cluster_time, err))
        return false;
    /* MongoDB's layout is documented: a disagreement is a broken record. */
    if (layout == TW_LAYOUT_MONGODB && tw_ctime_cmp(in_token, out->cluster_time) != 0) {
        tw_ctime_format(in_token, shown);
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "the checkpoint's cluster_time %s disagrees with its "
                     "token's %s",
                     ct_text, shown);
        return false;
    }
    if (!source_text || !tw_time_source_parse(source_text, &out->time_source))
        out->time_source = layout == TW_LAYOUT_OPAQUE ? TW_TIME_UNKNOWN : TW_TIME_TOKEN;
    return true;
}

bool tw_record_decode(const char *const names[], const char *const values[],
                      size_t count, tw_checkpoint_t *out, tw_error_t *err)
{
    const char *token = NULL, *ct_text = NULL, *wall = NULL, *updated = NULL,
               *events = NULL, *source = NULL, *scope = NULL, *time_source = NULL;

    tw_checkpoint_init(out);
    for (size_t k = 0; k < count; k++) {
        const char *n = names[k];
        if (strcmp(n, "token") == 0) token = values[k];
        else if (strcmp(n, "cluster_time") == 0) ct_text = values[k];
        else if (strcmp(n, "wall_ms") == 0) wall = values[k];
        else if (strcmp(n, "updated_ms") == 0) updated = values[k];
        else if (strcmp(n, "events") == 0) events = values[k];
        else if (strcmp(n, "source") == 0) source = values[k];
        else if (strcmp(n, "scope") == 0) scope = values[k];
        else if (strcmp(n, "time_source") == 0) time_source = values[k];
    }
    if (!token) {
        tw_error_set(err, TW_ERR_USAGE, 0, "the checkpoint has no token field");
        return false;
    }
    if (!tw_token_parse(token, &out->token, err)) {
        tw_error_prefix(err, "the checkpoint's token");
        return false;
    }
    out->has_token = true;
    if (!decode_time(out, ct_text, time_source, err))
        goto fail;
    out->wall_ms = tw_ctime_wall_ms(out->cluster_time);
    if ((wall && !parse_i64("wall_ms", wall, &out->wall_ms, err)) ||
        (updated && !parse_i64("updated_ms", updated, &out->updated_ms, err)) ||
        (events && !parse_i64("events", events, &out->events, err)))
        goto fail;
    snprintf(out->source, sizeof out->source, "%s", source ? source : "");
    if (scope && scope[0])
        out->scope = tw_strdup(scope);
    return true;
fail:
    tw_checkpoint_release(out);
    return false;
}

bool tw_record_history_decode(const char *json, tw_history_entry_t *out,
                              tw_error_t *err)
{
    /* Every field of the hash the entry was taken from (TW_RECORD_FIELDS). */
    static const char *const fields[] = {"token",  "cluster_time", "wall_ms",
                                         "updated_ms", "events", "source",
                                         "scope",  "layout",       "time_source"};
    const size_t nfields = sizeof fields / sizeof fields[0];
    const char *names[sizeof fields / sizeof fields[0]];
    const char *values[sizeof fields / sizeof fields[0]];
    bson_t doc;
    bson_iter_t it;
    size_t n = 0;
    bool ok;

    memset(out, 0, sizeof *out);
    if (!bson_init_from_json(&doc, json, -1, NULL)) {
        tw_error_set(err, TW_ERR_USAGE, 0, "a history entry is not JSON");
        return false;
    }
    for (size_t k = 0; k < nfields; k++) {
        if (bson_iter_init_find(&it, &doc, fields[k]) && BSON_ITER_HOLDS_UTF8(&it)) {
            names[n] = fields[k];
            values[n++] = bson_iter_utf8(&it, NULL);
        }
    }
    ok = tw_record_decode(names, values, n, &out->checkpoint, err);
    if (ok && bson_iter_init_find(&it, &doc, "pushed_ms") && BSON_ITER_HOLDS_UTF8(&it))
        out->pushed_ms = strtoll(bson_iter_utf8(&it, NULL), NULL, 10);
    if (ok && bson_iter_init_find(&it, &doc, "reason") && BSON_ITER_HOLDS_UTF8(&it))
        snprintf(out->reason, sizeof out->reason, "%s", bson_iter_utf8(&it, NULL));
    bson_destroy(&doc);
    return ok;
}

/* The five values of one event, for the script's XADD. */
static void event_args(const tw_event_t *e, char ct[TW_CTIME_TEXT_MAX], const char **argv)
{
    tw_ctime_format(e->cluster_time, ct);
    argv[0] = e->json;
    argv[1] = e->token_json;
    argv[2] = ct;
    argv[3] = e->op;
    argv[4] = e->ns;
}

/* The numbers among the script's values, formatted into cmd. */
static void format_numbers(const tw_commit_t *commit, size_t nevents,
                           tw_record_command_t *cmd)
{
    const tw_checkpoint_t *record = commit->record;

    snprintf(cmd->t, sizeof cmd->t, "%" PRIu32, record->cluster_time.t);
    snprintf(cmd->i, sizeof cmd->i, "%" PRIu32, record->cluster_time.i);
    snprintf(cmd->now, sizeof cmd->now, "%" PRId64, record->updated_ms);
    snprintf(cmd->every, sizeof cmd->every, "%d", TW_HISTORY_EVERY_MS);
    snprintf(cmd->maxlen, sizeof cmd->maxlen, "%lld", commit->sink.stream_maxlen);
    snprintf(cmd->count, sizeof cmd->count, "%zu", nevents);
    snprintf(cmd->epoch, sizeof cmd->epoch, "%lld", commit->epoch);
}

bool tw_record_commit_command(const tw_commit_t *commit, tw_record_command_t *out,
                              tw_error_t *err)
{
    const tw_event_batch_t *events = commit->sink.stream_key ? commit->sink.events : NULL;
    size_t nevents = events ? events->count : 0;
    const tw_record_fields_t *fields = &out->fields;
    const char *data = "";
    /* EVAL, the script, the key count, 5 keys, then the values. */
    const size_t fixed = 3 + 5 + TW_RECORD_COMMIT_VALUES;
    const char **argv;
    size_t k = 0;

    memset(out, 0, sizeof *out);
    if (!tw_record_encode(commit->record, &out->fields, err))
        return false;
    argv = tw_calloc(fixed + TW_RECORD_EVENT_VALUES * nevents, sizeof *argv);
    if (nevents)
        out->times = tw_calloc(nevents, sizeof *out->times);
    tw_token_data(&commit->record->token, &data, NULL);
    format_numbers(commit, nevents, out);
    argv[k++] = "EVAL";
    argv[k++] = commit_script;
    argv[k++] = nevents ? "5" : "4";
    argv[k++] = commit->checkpoint_key;
    argv[k++] = commit->history_key;
    argv[k++] = commit->gaps_key;
    argv[k++] = commit->epoch_key;
    if (nevents)
        argv[k++] = commit->sink.stream_key;
    argv[k++] = fields->values[0];
    argv[k++] = out->t;
    argv[k++] = out->i;
    argv[k++] = data;
    argv[k++] = fields->values[2];
    argv[k++] = fields->values[3];
    argv[k++] = fields->values[4];
    argv[k++] = fields->values[5];
    argv[k++] = fields->values[6];
    argv[k++] = commit->force ? "force" : "advance";
    argv[k++] = out->now;
    argv[k++] = out->every;
    argv[k++] = commit->history_reason ? commit->history_reason : "";
    argv[k++] = commit->gap_json ? commit->gap_json : "";
    argv[k++] = fields->values[7];
    argv[k++] = fields->values[8];
    argv[k++] = out->maxlen;
    argv[k++] = out->count;
    argv[k++] = out->epoch;
    if (k > fixed)
        tw_die("record: the commit command's table was not kept up to date");
    for (size_t e = 0; e < nevents; e++, k += TW_RECORD_EVENT_VALUES)
        event_args(&events->items[e], out->times[e], &argv[k]);
    out->argv = argv;
    out->argc = k;
    return true;
}

void tw_record_command_release(tw_record_command_t *cmd)
{
    if (!cmd)
        return;
    tw_record_fields_release(&cmd->fields);
    free(cmd->times);
    free(cmd->argv);
    memset(cmd, 0, sizeof *cmd);
}

void tw_record_commit_error(const char *message, tw_error_t *err)
{
    if (strncmp(message, "TWTYPE ", 7) == 0)
        tw_error_set(err, TW_ERR_REDIS, TW_CHECKPOINT_WRONG_TYPE,
                     "nothing was written: %s", message + 7);
    else if (strncmp(message, "CROSSSLOT", 9) == 0)
        tw_error_set(err, TW_ERR_REDIS, TW_CHECKPOINT_WRONG_TYPE,
                     "nothing was written: on Redis Cluster every key of a commit must "
                     "share one hash tag, and --stream-key does not share the name's "
                     "{NAME} (write it as tokenwatch:{NAME}:events or with that {NAME})");
    else if (strncmp(message, "TWFENCED ", 9) == 0)
        tw_error_set(err, TW_ERR_REDIS, TW_CHECKPOINT_FENCED,
                     "nothing was written: another tokenwatch took the lease over "
                     "(epoch %.20s)",
                     message + 9);
    else
        tw_error_set(err, TW_ERR_REDIS, TW_REDIS_REPLY_ERROR, "checkpoint script: %s",
                     message);
}

void tw_record_commit_reply(long long flag, const char *text,
                            tw_commit_result_t *result)
{
    memset(result, 0, sizeof *result);
    result->written = flag == 1;
    if (result->written && text) {
        result->stored_absent = strcmp(text, "-") == 0;
        result->has_prior = !result->stored_absent &&
                            tw_ctime_parse(text, &result->prior_time, NULL);
    }
    if (!result->written && text)
        tw_ctime_parse(text, &result->stored_time, NULL);
}
