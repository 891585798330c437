/*
 * store.h - can the Redis that holds the checkpoints lose them?
 *
 * Three ways it can: no persistence (AOF off and no RDB save rules: a
 * restart comes back empty), an eviction policy that may evict keys without
 * a TTL (allkeys-*), and a replica (writes refused, or lost at the next
 * resync). The facts come from CONFIG GET where it is allowed and from INFO
 * where it is not (managed Redis); what INFO cannot tell is said as such.
 * When both are refused (an ACL user without @dangerous) nothing can be
 * told, and that is a risk like the others. The assessment is pure; the
 * probe is a thin shell.
 */
#ifndef TOKENWATCH_STORE_H
#define TOKENWATCH_STORE_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>

#include "tokenwatch/error.h"

#define TW_STORE_TEXT_MAX 64

typedef enum { TW_FACT_UNKNOWN = 0, TW_FACT_NO, TW_FACT_YES } tw_fact_t;

typedef struct {
    tw_fact_t aof;                /* appendonly */
    tw_fact_t rdb;                /* any save rule */
    char eviction[TW_STORE_TEXT_MAX]; /* maxmemory-policy, "" unknown */
    tw_fact_t replica;            /* role: slave */
    bool from_info;               /* CONFIG was refused: INFO only */
    bool refused;                 /* CONFIG and INFO both refused: nothing known */
    char refusal[96];             /* INFO's refusal as Redis words it, or "" */
} tw_store_facts_t;

#define TW_STORE_RISKS_MAX 3

typedef struct {
    size_t count;
    char text[TW_STORE_RISKS_MAX][160];
    char note[160]; /* what could not be told, or "" */
    bool unknown;   /* the one risk is that nothing could be told */
} tw_store_risks_t;

/* What could lose a checkpoint, in words. Pure. */
void tw_store_assess(const tw_store_facts_t *facts, tw_store_risks_t *out);

/* One line: "no persistence (...); ..." into out. */
void tw_store_risks_text(const tw_store_risks_t *risks, char *out, size_t size);

/* What the risks amount to, to go before their text: "the Redis that holds
 * the checkpoints can lose them", or when nothing could be told "cannot
 * tell whether the Redis that holds the checkpoints keeps them". Static. */
const char *tw_store_risks_headline(const tw_store_risks_t *risks);

/* What to do about them, before "or accept it with --accept-store-risk". */
const char *tw_store_risks_remedy(const tw_store_risks_t *risks);

/* Reads the facts: CONFIG GET, else INFO; both refused is facts->refused.
 * False only when Redis does not answer at all (err says why). */
bool tw_store_probe(redisContext *c, tw_store_facts_t *out, tw_error_t *err);

#endif
