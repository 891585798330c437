/*
 * What reaches the server and the log: scopes, pipeline, fullDocument,
 * JSON log lines, and secrets kept out of them.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"

static fx_t fx;

static void teardown(void)
{
    fx_stop(&fx);
}

TestSuite(options, .fini = teardown, .timeout = 60);

/* Runs one scope until its first checkpoint; returns the aggregate sent. */
static void run_scope(const char *const argv[], bson_t *command, char *db, size_t n)
{
    char dir[PATH_MAX];
    th_proc_t p;

    cr_assert(th_tmpdir(dir, sizeof dir));
    cr_assert(th_proc_spawn(&p, dir, argv, NULL));
    th_assert_dump(fx_wait_checkpoint(&fx, 10000), p.err_path, "checkpoint");
    th_proc_stop(&p, 10000);
    cr_expect_eq(th_proc_exit_code(&p), 0);
    cr_assert(fx_last_aggregate(&fx, command, db, n));
    th_rmtree(dir);
}

Test(options, each_scope_watches_what_it_names)
{
    const char *bin = th_binary();
    bson_t command;
    bson_iter_t it;
    char db[64];
    char *scope;

    fx_start(&fx, NULL);
    {
        const char *argv[] = {bin, "--mongo-uri", fx.sim.uri, "--redis-url", fx.redis_url,
                              "--db", "shop", "--metrics-addr", "off", NULL};
        run_scope(argv, &command, db, sizeof db);
        cr_expect_str_eq(db, "shop");
        cr_expect(bson_iter_init_find(&it, &command, "aggregate") &&
                      BSON_ITER_HOLDS_NUMBER(&it) && bson_iter_as_int64(&it) == 1,
                  "a database stream aggregates on 1");
        scope = fx_checkpoint(&fx, "scope");
        cr_expect(strncmp(scope, "rs=rs0 db=shop coll=* ", 22) == 0, "%s", scope);
        free(scope);
        bson_destroy(&command);
    }
    freeReplyObject(th_redis_cmd(&fx.redis, "DEL %s", FX_CHECKPOINT));
    {
        const char *argv[] = {bin, "--mongo-uri", fx.sim.uri, "--redis-url", fx.redis_url,
                              "--metrics-addr", "off", NULL};
        bson_t stage;
        bson_iter_t all;

        run_scope(argv, &command, db, sizeof db);
        cr_expect_str_eq(db, "admin", "the whole deployment is watched from admin");
        cr_assert(fx_last_change_stream(&fx, &stage));
        cr_expect(bson_iter_init_find(&all, &stage, "allChangesForCluster") &&
                  bson_iter_as_bool(&all));
        scope = fx_checkpoint(&fx, "scope");
        cr_expect(strncmp(scope, "rs=rs0 db=* coll=* ", 19) == 0, "%s", scope);
        free(scope);
        bson_destroy(&stage);
        bson_destroy(&command);
    }
}

Test(options, pipeline_and_full_document_reach_the_server)
{
    static const char *const extra[] = {
        "--pipeline", "[{\"$match\": {\"operationType\": \"insert\"}}]",
        "--full-document", "updateLookup", "--max-events", "1", NULL};
    bson_t command, stage;
    bson_iter_t it;
    char *err = NULL;

    fx_start(&fx, NULL);
    {
        th_proc_t p;
        fx_spawn(&fx, &p, extra);
        cr_assert(fx_wait_checkpoint(&fx, 10000));
        bson_free(fx_post_events(&fx, 1));
        th_assert_dump(th_proc_wait(&p, 10000), p.err_path, "stops after one event");
        err = th_proc_stderr(&p);
    }
    cr_assert(fx_last_aggregate(&fx, &command, NULL, 0));
    cr_expect(bson_iter_init(&it, &command) &&
                  bson_iter_find_descendant(&it, "pipeline.1.$match.operationType", &it) &&
                  strcmp(bson_iter_utf8(&it, NULL), "insert") == 0,
              "the --pipeline stages follow $changeStream");
    cr_assert(fx_last_change_stream(&fx, &stage));
    cr_expect(bson_iter_init_find(&it, &stage, "fullDocument") &&
              strcmp(bson_iter_utf8(&it, NULL), "updateLookup") == 0);
    cr_expect(fx_count_commands(&fx, "getMore") >= 1);
    bson_destroy(&command);
    bson_destroy(&stage);
    free(err);
}

Test(options, json_logs_are_one_object_per_line_without_secrets)
{
    static const char secret[] = "s3cret-pass";
    char url[300], *err, *line, *save = NULL;
    th_proc_t p;
    redisReply *r;
    int lines = 0;

    fx_start(&fx, NULL);
    r = th_redis_cmd(&fx.redis, "CONFIG SET requirepass %s", secret);
    cr_assert(r);
    freeReplyObject(r);
    snprintf(url, sizeof url, "redis://:%s@127.0.0.1:%d/0", secret, fx.redis.port);
    {
        const char *argv[] = {th_binary(), "--mongo-uri", fx.sim.uri, "--redis-url", url,
                              "--log-format", "json", "--log-level", "debug",
                              "--environment", "stage", "--name", "orders",
                              "--metrics-addr", "off", NULL};
        cr_assert(th_proc_spawn(&p, fx.dir, argv, NULL));
    }
    th_sleep_ms(1500);
    th_proc_stop(&p, 10000);
    cr_expect_eq(th_proc_exit_code(&p), 0);
    err = th_proc_stderr(&p);
    cr_expect(strstr(err, secret) == NULL, "the password leaked:\n%s", err);
    cr_expect(strstr(err, ":***@") != NULL, "the URL is shown redacted:\n%s", err);
    for (line = strtok_r(err, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        bson_t doc;
        bson_iter_t it;

        cr_assert(bson_init_from_json(&doc, line, -1, NULL), "not JSON: %s", line);
        cr_expect(bson_iter_init_find(&it, &doc, "level"));
        cr_expect(bson_iter_init_find(&it, &doc, "time"));
        cr_expect(bson_iter_init_find(&it, &doc, "msg"));
        cr_expect(bson_iter_init_find(&it, &doc, "environment") &&
                  strcmp(bson_iter_utf8(&it, NULL), "stage") == 0);
        cr_expect(bson_iter_init_find(&it, &doc, "name") &&
                  strcmp(bson_iter_utf8(&it, NULL), "orders") == 0);
        bson_destroy(&doc);
        lines++;
    }
    cr_expect_geq(lines, 3, "start, follow, checkpoints at debug, stop");
    free(err);
    r = th_redis_cmd(&fx.redis, "CONFIG SET requirepass ''");
    freeReplyObject(r);
}
