#include "tokenwatch/recover.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tokenwatch/duration.h"
#include "tokenwatch/mem.h"
#include "tokenwatch/record.h"
#include "tokenwatch/redis.h"
#include "tokenwatch/utf8.h"

int64_t tw_plan_delta_s(const tw_plan_t *plan)
{
    return plan->has_current ? (int64_t)plan->start.t - (int64_t)plan->current.t : 0;
}

bool tw_plan_inside(const tw_plan_t *plan)
{
    return !plan->window_known || tw_ctime_cmp(plan->start, plan->oldest) >= 0;
}

static void print_time(FILE *out, const char *label, tw_ctime_t ct)
{
    char text[TW_CTIME_TEXT_MAX], date[TW_UTC_TEXT_MAX];

    tw_ctime_format(ct, text);
    tw_utc_format(tw_ctime_wall_ms(ct), date);
    fprintf(out, "  %-18s %s (%s)", label, text, date);
}

void tw_plan_print(const tw_plan_t *plan, const char *name, const char *source,
                   FILE *out)
{
    char checkpoint[TW_KEY_MAX], history[TW_KEY_MAX], gaps[TW_KEY_MAX];
    char words[TW_DURATION_TEXT_MAX];
    int64_t delta = tw_plan_delta_s(plan);

    tw_checkpoint_key(name, "checkpoint", checkpoint);
    tw_checkpoint_key(name, "history", history);
    tw_checkpoint_key(name, "gaps", gaps);
    fprintf(out, "plan (%s) for %s:\n", source, checkpoint);
    if (plan->has_current) {
        print_time(out, "current checkpoint", plan->current);
        fputc('\n', out);
    } else {
        fprintf(out, "  %-18s none\n", "current checkpoint");
    }
    print_time(out, "new start", plan->start);
    fprintf(out, ", %s\n", plan->start_how);
    if (plan->clamped)
        fprintf(out, "  %-18s the asked-for start is older than the oldest oplog "
                     "entry: starting at the oldest entry instead\n", "note");
    tw_duration_words((delta < 0 ? -delta : delta) * 1000, words);
    if (!plan->has_current)
        fprintf(out, "  %-18s nothing to compare with\n", "effect");
    else if (delta > 0)
        fprintf(out, "  %-18s a gap: %s of history skipped, recorded in %s\n", "effect",
                words, gaps);
    else if (delta < 0)
        fprintf(out, "  %-18s an overlap: %s of history handed on again\n", "effect", words);
    else
        fprintf(out, "  %-18s none: the same cluster time\n", "effect");
    if (!plan->window_known)
        fprintf(out, "  %-18s unknown (the oplog could not be read)\n", "oplog");
    else {
        print_time(out, "oldest oplog entry", plan->oldest);
        fprintf(out, ": the start is %s\n",
                tw_plan_inside(plan) ? "inside the oplog"
                                     : "NOT in the oplog any more: the server would refuse it");
    }
    fprintf(out, "  %-18s %s (written at the first token after the start, source=%s)\n",
            "keys that change", checkpoint, source);
    if (plan->has_current)
        fprintf(out, "  %-18s %s (the current checkpoint is kept)\n", "", history);
    if (plan->has_current && delta > 0)
        fprintf(out, "  %-18s %s (the gap)\n", "", gaps);
}

bool tw_start_resolve(const tw_spec_t *spec, const tw_start_facts_t *facts,
                      tw_start_choice_t *out, tw_error_t *err)
{
    memset(out, 0, sizeof *out);
    out->has_time = true;
    switch (spec->kind) {
    case TW_SPEC_OLDEST:
        if (facts->window_known) {
            out->at = facts->oldest;
        } else if (facts->has_probed_oldest) {
            out->at = facts->probed_oldest;
            out->probed = true;
        } else {
            tw_error_set(err, TW_ERR_USAGE, 0, "the oldest start the server accepts is "
                                               "not known: the oplog could not be read");
            return false;
        }
        break;
    case TW_SPEC_NOW:
        out->at = facts->now;
        break;
    case TW_SPEC_TIME:
        out->at = spec->time;
        break;
    case TW_SPEC_TOKEN:
        out->resume_after = true;
        out->at = spec->time;
        out->has_time = spec->has_time;
        break;
    case TW_SPEC_CHECKPOINT:
    default:
        tw_error_set(err, TW_ERR_USAGE, 0, "'checkpoint' is where a normal start begins");
        return false;
    }
    if (facts->window_known && out->has_time && tw_ctime_cmp(out->at, facts->oldest) < 0) {
        out->clamped = true;
        out->resume_after = false;
        out->at = facts->oldest;
    }
    return true;
}

char *tw_gap_json(tw_ctime_t from, tw_ctime_t to, const char *reason,
                  int64_t detected_ms)
{
    bson_t doc = BSON_INITIALIZER;
    char f[TW_CTIME_TEXT_MAX], t[TW_CTIME_TEXT_MAX];
    char *json;
    char *why = bson_strdup(reason ? reason : "");

    /* libbson makes no JSON of text that is not UTF-8. */
    tw_utf8_fix(why);
    tw_ctime_format(from, f);
    tw_ctime_format(to, t);
    BSON_APPEND_UTF8(&doc, "from", f);
    BSON_APPEND_UTF8(&doc, "to", t);
    BSON_APPEND_UTF8(&doc, "reason", why);
    BSON_APPEND_INT64(&doc, "detected_ms", detected_ms);
    json = bson_as_relaxed_extended_json(&doc, NULL);
    bson_destroy(&doc);
    bson_free(why);
    return json;
}

bool tw_env_protected(const char *environment, char *const *protect, size_t protect_count)
{
    for (size_t k = 0; k < protect_count; k++)
        if (strcasecmp(protect[k], "none") != 0 && strcasecmp(protect[k], environment) == 0)
            return true;
    return false;
}

const char *tw_missing_checkpoint_policy(const char *setting, const char *environment,
                                         char *const *protect, size_t protect_count)
{
    if (setting)
        return setting;
    return tw_env_protected(environment, protect, protect_count) ? "fail" : "now";
}

bool tw_recover_confirmed(const char *environment, char *const *protect,
                          size_t protect_count, const char *confirm,
                          tw_error_t *err)
{
    bool protected_env = tw_env_protected(environment, protect, protect_count);

    if (confirm && strcmp(confirm, environment) != 0) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "--confirm %s does not match --environment %s: nothing was "
                     "changed",
                     confirm, environment);
        return false;
    }
    if (protected_env && !confirm) {
        tw_error_set(err, TW_ERR_USAGE, 0,
                     "environment %s is protected (--protect): moving its "
                     "checkpoint needs --confirm %s; nothing was changed (try "
                     "--dry-run first)",
                     environment, environment);
        return false;
    }
    return true;
}

/* After a WRONGTYPE reply: the key named, with what it holds. */
static void name_wrong_type(redisContext *c, const char *key, const char *want,
                            tw_error_t *err)
{
    redisReply *type;

    if (!err || err->code != TW_REDIS_REPLY_ERROR || !strstr(err->message, "WRONGTYPE"))
        return;
    type = redisCommand(c, "TYPE %s", key);
    tw_error_set(err, TW_ERR_REDIS, TW_CHECKPOINT_WRONG_TYPE, "%s holds a %s, not %s", key,
                 type && type->type == REDIS_REPLY_STATUS ? type->str : "value of another type",
                 want);
    freeReplyObject(type);
}

bool tw_history_list(redisContext *c, const char *name,
                     tw_history_entry_t **entries, size_t *count,
                     tw_error_t *err)
{
    char key[TW_KEY_MAX];
    redisReply *reply;
    bool ok = true;

    *entries = NULL;
    *count = 0;
    tw_checkpoint_key(name, "history", key);
    reply = tw_redis_command(c, err, "LRANGE %s 0 -1", key);
    if (!reply) {
        name_wrong_type(c, key, "a list", err);
        return false;
    }
    if (reply->elements > 0)
        *entries = tw_calloc(reply->elements, sizeof **entries);
    for (size_t k = 0; k < reply->elements; k++) {
        tw_history_entry_t *e = &(*entries)[k];
        tw_error_t bad;

        if (reply->element[k]->type != REDIS_REPLY_STRING ||
            !tw_record_history_decode(reply->element[k]->str, e, &bad)) {
            if (reply->element[k]->type != REDIS_REPLY_STRING)
                tw_error_set(&bad, TW_ERR_USAGE, 0, "not a string");
            tw_checkpoint_release(&e->checkpoint);
            memset(e, 0, sizeof *e);
            e->bad = true;
            snprintf(e->problem, sizeof e->problem, "%s", bad.message);
        }
        (*count)++;
    }
    freeReplyObject(reply);
    return ok;
}

void tw_history_free(tw_history_entry_t *entries, size_t count)
{
    if (!entries)
        return;
    for (size_t k = 0; k < count; k++)
        tw_checkpoint_release(&entries[k].checkpoint);
    free(entries);
}

/* KEYS: checkpoint, history. ARGV: n, now_ms. An invalidate's token keeps
 * source=invalidate (it must be resumed with startAfter); any other is
 * marked rollback. A checkpoint key that is not a hash at all is kept in
 * the history as {"type", "raw"} and replaced. */
static const char rollback_script[] =
    "local entry = redis.call('LINDEX', KEYS[2], tonumber(ARGV[1]) - 1)\n"
    "if not entry then\n"
    "  return redis.error_reply('there is no history entry ' .. ARGV[1])\n"
    "end\n"
    "local e = cjson.decode(entry)\n"
    "if type(e['token']) ~= 'string' then\n"
    "  return redis.error_reply('history entry ' .. ARGV[1] .. ' has no token')\n"
    "end\n"
    "local kind = redis.call('TYPE', KEYS[1])['ok']\n"
    "local t = nil\n"
    "if kind == 'hash' then\n"
    "  local h = redis.call('HGETALL', KEYS[1])\n"
    "  if #h > 0 then t = {} end\n"
    "  for k = 1, #h, 2 do t[h[k]] = h[k + 1] end\n"
    "elseif kind ~= 'none' then\n"
    "  t = {type = kind}\n"
    "  if kind == 'string' then t['raw'] = redis.call('GET', KEYS[1]) end\n"
    "end\n"
    "if t then\n"
    "  t['pushed_ms'] = ARGV[2]\n"
    "  t['reason'] = 'rollback'\n"
    "  redis.call('LPUSH', KEYS[2], cjson.encode(t))\n"
    "  redis.call('LTRIM', KEYS[2], 0, " TW_STR(TW_HISTORY_MAX) " - 1)\n"
    "end\n"
    "redis.call('DEL', KEYS[1])\n"
    "local source = 'rollback'\n"
    "if e['source'] == 'invalidate' then source = 'invalidate' end\n"
    "redis.call('HSET', KEYS[1], 'token', e['token'], 'updated_ms', ARGV[2],\n"
    "           'source', source)\n"
    "for _, f in ipairs({'cluster_time', 'wall_ms', 'events', 'scope', 'layout',\n"
    "                    'time_source'}) do\n"
    "  if type(e[f]) == 'string' then redis.call('HSET', KEYS[1], f, e[f]) end\n"
    "end\n"
    "return 1\n";

bool tw_history_rollback(redisContext *c, const char *name, unsigned n,
                         int64_t now_ms, tw_error_t *err)
{
    char checkpoint[TW_KEY_MAX], history[TW_KEY_MAX], nth[16], now[24];
    const char *argv[] = {"EVAL", rollback_script, "2", checkpoint, history, nth, now};
    redisReply *reply;

    tw_checkpoint_key(name, "checkpoint", checkpoint);
    tw_checkpoint_key(name, "history", history);
    snprintf(nth, sizeof nth, "%u", n);
    snprintf(now, sizeof now, "%" PRId64, now_ms);
    reply = redisCommandArgv(c, 7, argv, NULL);
    if (!reply) {
        tw_redis_error_from_context(c, err, "redis");
        return false;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        /* The script's own message comes after Redis's prefix. */
        const char *msg = strstr(reply->str, "there is no") ? strstr(reply->str, "there is no")
                                                            : reply->str;
        tw_error_set(err, TW_ERR_USAGE, TW_REDIS_REPLY_ERROR, "rollback: %s", msg);
        freeReplyObject(reply);
        return false;
    }
    freeReplyObject(reply);
    return true;
}

void tw_bisect_init(tw_bisect_t *b, uint32_t refused_t, uint32_t accepted_t)
{
    b->refused_t = refused_t;
    b->accepted_t = accepted_t;
    b->probes = 0;
}

bool tw_bisect_next(const tw_bisect_t *b, uint32_t *probe_t)
{
    if (b->accepted_t <= b->refused_t + 1 || b->probes >= TW_PROBE_MAX)
        return false;
    *probe_t = b->refused_t + (b->accepted_t - b->refused_t) / 2;
    return true;
}

void tw_bisect_answer(tw_bisect_t *b, uint32_t probe_t, bool accepted)
{
    b->probes++;
    if (accepted)
        b->accepted_t = probe_t;
    else
        b->refused_t = probe_t;
}
