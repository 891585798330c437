/*
 * checks.h - settings checks that need a library or another module (see
 * checks.c). Each takes the value as given and fills err with a message
 * that never quotes a secret.
 */
#ifndef TOKENWATCH_CHECKS_H
#define TOKENWATCH_CHECKS_H

#include <stdbool.h>

#include "tokenwatch/error.h"

/* A MongoDB connection string libmongoc accepts (printed redacted). */
bool tw_check_mongo_uri(const char *value, tw_error_t *err);

/* --shard-uri's NAME=URI. */
bool tw_check_shard_uri(const char *value, tw_error_t *err);

/* A Redis URL (redis://[user:password@]host[:port][/db]). */
bool tw_check_redis_url(const char *value, tw_error_t *err);

/* The URL with the password the file gave (may be NULL): a user needs one. */
bool tw_check_redis_login(const char *redis_url, const char *password, tw_error_t *err);

/* HOST:PORT for the metrics server ("off" is the caller's). */
bool tw_check_metrics_addr(const char *value, tw_error_t *err);

/* A webhook URL (Slack, generic, PagerDuty, heartbeat): the sender's own check. */
bool tw_check_webhook_url(const char *value, tw_error_t *err);

/* A --guard value: a key, a pattern, a Kafka Connect connector's URL
 * (naming /connectors/NAME), monstache:NAME (sources.h). */
bool tw_check_guard(const char *value, tw_error_t *err);

#endif
