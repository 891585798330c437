#include "tokenwatch/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenwatch/mem.h"
#include "tokenwatch/redis.h"

static void add_risk(tw_store_risks_t *out, const char *text)
{
    if (out->count < TW_STORE_RISKS_MAX)
        snprintf(out->text[out->count++], sizeof out->text[0], "%s", text);
}

void tw_store_assess(const tw_store_facts_t *f, tw_store_risks_t *out)
{
    memset(out, 0, sizeof *out);
    if (f->refused) {
        char text[sizeof out->text[0]];

        snprintf(text, sizeof text, "CONFIG GET and INFO are both refused%s%s%s",
                 f->refusal[0] ? " (" : "", f->refusal, f->refusal[0] ? ")" : "");
        add_risk(out, text);
        out->unknown = true;
        return;
    }
    if (f->aof == TW_FACT_NO && f->rdb == TW_FACT_NO)
        add_risk(out, "no persistence (AOF off, no RDB save rules): a restart comes back "
                      "without any checkpoint");
    else if (f->aof == TW_FACT_NO && f->rdb == TW_FACT_UNKNOWN)
        snprintf(out->note, sizeof out->note,
                 "AOF is off and the RDB save rules cannot be read (CONFIG refused): "
                 "make sure snapshots are on");
    if (strncmp(f->eviction, "allkeys-", 8) == 0) {
        char text[160];

        snprintf(text, sizeof text,
                 "maxmemory-policy %.40s may evict keys without a TTL, checkpoints "
                 "included",
                 f->eviction);
        add_risk(out, text);
    }
    if (f->replica == TW_FACT_YES)
        add_risk(out, "a replica: writes are refused, or lost at its next resync");
    else if (f->replica == TW_FACT_UNKNOWN && !out->note[0])
        snprintf(out->note, sizeof out->note,
                 "its role cannot be read from INFO: make sure it is not a replica");
}

const char *tw_store_risks_headline(const tw_store_risks_t *risks)
{
    return risks->unknown
               ? "cannot tell whether the Redis that holds the checkpoints keeps them"
               : "the Redis that holds the checkpoints can lose them";
}

const char *tw_store_risks_remedy(const tw_store_risks_t *risks)
{
    return risks->unknown ? "let its user run INFO (or CONFIG GET)" : "fix Redis";
}

void tw_store_risks_text(const tw_store_risks_t *risks, char *out, size_t size)
{
    size_t used = 0;

    out[0] = '\0';
    for (size_t k = 0; k < risks->count && used < size; k++)
        used += (size_t)snprintf(out + used, size - used, "%s%s", k ? "; " : "",
                                 risks->text[k]);
}

/* CONFIG GET name: the value, or NULL when refused (managed Redis). */
static char *config_get(redisContext *c, const char *name, bool *refused)
{
    redisReply *r = redisCommand(c, "CONFIG GET %s", name);
    char *value = NULL;

    *refused = !r || r->type == REDIS_REPLY_ERROR;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[1]->type == REDIS_REPLY_STRING)
        value = tw_strdup(r->element[1]->str);
    freeReplyObject(r);
    return value;
}

static bool probe_config(redisContext *c, tw_store_facts_t *out)
{
    bool refused = false;
    char *aof = config_get(c, "appendonly", &refused);
    char *save = refused ? NULL : config_get(c, "save", &refused);
    char *policy = refused ? NULL : config_get(c, "maxmemory-policy", &refused);

    if (!refused) {
        out->aof = aof && strcmp(aof, "yes") == 0 ? TW_FACT_YES : TW_FACT_NO;
        out->rdb = save && save[0] ? TW_FACT_YES : TW_FACT_NO;
        snprintf(out->eviction, sizeof out->eviction, "%s", policy ? policy : "");
    }
    free(aof);
    free(save);
    free(policy);
    return !refused;
}

/* "name:value" from an INFO section's text, into out. */
static bool info_field(const char *info, const char *name, char *out, size_t size)
{
    size_t len = strlen(name);

    for (const char *line = info; line && *line;) {
        if (strncmp(line, name, len) == 0 && line[len] == ':') {
            size_t n = strcspn(line + len + 1, "\r\n");

            snprintf(out, size, "%.*s", (int)(n < size ? n : size - 1), line + len + 1);
            return true;
        }
        line = strchr(line, '\n');
        line = line ? line + 1 : NULL;
    }
    return false;
}

/* INFO's facts; an error reply is no answer to this probe, not an outage. */
static bool probe_info(redisContext *c, tw_store_facts_t *out, tw_error_t *err)
{
    redisReply *r = redisCommand(c, "INFO");
    char value[TW_STORE_TEXT_MAX];

    if (!r) {
        tw_redis_error_from_context(c, err, "redis");
        return false;
    }
    if (r->type == REDIS_REPLY_ERROR && out->from_info) {
        out->refused = true;
        snprintf(out->refusal, sizeof out->refusal, "%s", r->str);
    }
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) {
        if (info_field(r->str, "aof_enabled", value, sizeof value))
            out->aof = strcmp(value, "1") == 0 ? TW_FACT_YES : TW_FACT_NO;
        if (info_field(r->str, "maxmemory_policy", value, sizeof value))
            snprintf(out->eviction, sizeof out->eviction, "%s", value);
        if (info_field(r->str, "role", value, sizeof value))
            out->replica = strcmp(value, "slave") == 0 ? TW_FACT_YES : TW_FACT_NO;
    }
    freeReplyObject(r);
    return true;
}

bool tw_store_probe(redisContext *c, tw_store_facts_t *out, tw_error_t *err)
{
    memset(out, 0, sizeof *out);
    if (!probe_config(c, out))
        out->from_info = true;
    /* The role (and, without CONFIG, the rest) comes from INFO. */
    return probe_info(c, out, err);
}
