/*
 * fixture.h - one test's world: a Redis, the scripted replica set, and
 * tokenwatch runs against them, all in the test's own temporary directory.
 * Every helper asserts: a broken fixture fails the test that uses it.
 */
#ifndef TOKENWATCH_TEST_FIXTURE_H
#define TOKENWATCH_TEST_FIXTURE_H

#include <bson/bson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "harness.h"

#define FX_CHECKPOINT "tokenwatch:{default}:checkpoint"
#define FX_STREAM "tokenwatch:{default}:events"

typedef struct {
    char dir[PATH_MAX];
    th_redis_t redis;
    th_sim_t sim;
    char redis_url[256];
} fx_t;

/* Starts Redis (with AOF) and the simulator with scenario (JSON or NULL). */
void fx_start(fx_t *fx, const char *scenario);
void fx_stop(fx_t *fx);

/*
 * tokenwatch run against the fixture, watching shop.orders, with a 100ms
 * checkpoint interval, plus extra (NULL-terminated, may be NULL).
 */
void fx_spawn(fx_t *fx, th_proc_t *p, const char *const extra[]);
/* Its argument list (argv[0] the binary, argv[1] "run"), NULL-ended; the count. */
size_t fx_argv(fx_t *fx, const char *argv[], size_t max, const char *const extra[]);
/* The same with its stdout and stderr in the files given. */
void fx_spawn_to(fx_t *fx, th_proc_t *p, const char *const extra[], const char *out_path,
                 const char *err_path);
int fx_run(fx_t *fx, const char *const extra[], int timeout_ms, char **err_out);

/* A control request; the reply as BSON (arrays come wrapped as {"a": [...]}). */
void fx_sim(fx_t *fx, const char *method, const char *path, const char *body,
            bson_t *reply);

/* Appends count events to shop.orders; returns the last token's _data (bson_free). */
char *fx_post_events(fx_t *fx, int count);

/* A shard's direct URI (mongos profile; borrowed), asserting it exists. */
const char *fx_shard_uri(fx_t *fx, const char *name);

/* A checkpoint field, or NULL (free). */
char *fx_checkpoint(fx_t *fx, const char *field);
long long fx_checkpoint_events(fx_t *fx);
bool fx_wait_checkpoint(fx_t *fx, int timeout_ms);
bool fx_wait_checkpoint_events(fx_t *fx, long long at_least, int timeout_ms);

/* The _data inside a checkpoint's token field (free), or NULL. */
char *fx_checkpoint_data(fx_t *fx);

/* fullDocument.seq of every entry in the event stream, in order (free). */
size_t fx_stream_seqs(fx_t *fx, int64_t **seqs);

/* Whether every seq 1..last is in the event stream on the Redis at port
 * (another node than the fixture's: a promoted replica, a cluster master). */
bool fx_stream_complete_at(int port, int64_t last);

/* The newest aggregate the simulator received, and the database it ran on. */
bool fx_last_aggregate(fx_t *fx, bson_t *command, char *db, size_t db_size);

/* The $changeStream stage of the newest aggregate the simulator received. */
bool fx_last_change_stream(fx_t *fx, bson_t *stage);
int fx_count_commands(fx_t *fx, const char *command);

/* Replaces the checkpoint with a hand-written one: a token, and a scope or none. */
void fx_seed_checkpoint(fx_t *fx, const char *data, const char *scope);

/* A token's _data for a cluster time, as the simulator writes high-water marks. */
char *fx_hwm_data(uint32_t t, uint32_t i);

/* A local Slack stand-in (tests/support/webhook.py). */
typedef struct {
    th_proc_t proc;
    int port;
    char url[256]; /* with a secret path, which must never be printed */
} fx_webhook_t;

#define FX_WEBHOOK_SECRET "SeCrEtWeBhOoKpAtH"

void fx_webhook_start(fx_t *fx, fx_webhook_t *w);
void fx_webhook_stop(fx_webhook_t *w);
/* Scripts the answers: a JSON object for POST /control/script. */
void fx_webhook_script(fx_webhook_t *w, const char *script);
/* The deliveries so far, as {"a": [...]}. */
void fx_webhook_received(fx_webhook_t *w, bson_t *out);
/* The `text` of each delivery answered 2xx, in order (free each and the array). */
size_t fx_webhook_texts(fx_webhook_t *w, char ***texts);
/* Every delivery, whatever its answer. */
size_t fx_webhook_count(fx_webhook_t *w);

/* An HTTP request to 127.0.0.1:port; the body (free) and the status. */
char *fx_http(int port, const char *method, const char *path, const char *body,
              long *status);

/* Every tokenwatch:* key and its content, sorted, as text (free): two
 * snapshots are equal when nothing changed. The lease's keys are left out. */
char *fx_redis_state(fx_t *fx);

/* The tokenwatch binary against the fixture with the given arguments only
 * (no defaults but --mongo-uri and --redis-url). */
int fx_cli(fx_t *fx, const char *const args[], char **out, char **err);

/* Counts occurrences of needle in haystack. */
int fx_count(const char *haystack, const char *needle);

#endif
