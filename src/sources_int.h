/*
 * sources_int.h - what sources.c shares with the readers of its other
 * stores (source_connect.c, source_monstache.c, and the pattern reader).
 */
#ifndef TOKENWATCH_SOURCES_INT_H
#define TOKENWATCH_SOURCES_INT_H

#include "tokenwatch/sources.h"

/* Drops the positions past count. */
void tw_sources_truncate(tw_positions_t *list, size_t count);

/* SCAN MATCH the pattern, then each key as tw_sources_read_key(from_glob). */
bool tw_sources_read_glob(tw_source_t *s, redisContext *c, tw_positions_t *out,
                          tw_error_t *err);

/* GET {url}/offsets with libcurl; a 4xx is a position at fault, not a failure. */
bool tw_sources_read_connect(tw_source_t *s, int64_t timeout_ms, tw_positions_t *out,
                             tw_error_t *err);

/* DB.monstache {_id: NAME} and DB.tokens {resumeName: NAME}. */
bool tw_sources_read_monstache(tw_source_t *s, mongoc_client_t *client, tw_positions_t *out,
                               tw_error_t *err);

#endif
