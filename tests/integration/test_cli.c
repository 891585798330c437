/*
 * The command line outside `run`: decode, checkpoint show, usage errors.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"

static int run_cli(const char *const argv[], char **out, char **err)
{
    char dir[PATH_MAX];
    int code;

    cr_assert(th_tmpdir(dir, sizeof dir));
    code = th_run(dir, argv, NULL, 10000, out, err);
    th_rmtree(dir);
    return code;
}

Test(cli, decode_prints_cluster_time_and_date)
{
    const char *argv[] = {th_binary(), "decode",
                          "{\"_data\":\"82612E8513000000012B022C0100296E5A1004\"}", NULL};
    char *out, *err;

    cr_assert_eq(run_cli(argv, &out, &err), 0, "%s", err);
    cr_expect(strstr(out, "1630438675:1") != NULL, "%s", out);
    cr_expect(strstr(out, "2021-08-31T19:37:55Z") != NULL, "%s", out);
    free(out);
    free(err);
}

/* Tokens are opaque: one of no known layout is a token all the same. */
Test(cli, decode_names_the_layout)
{
    static const struct {
        const char *token;
        const char *want;
    } cases[] = {
        {"015daf94f600000002010000000200009025", "documentdb"},
        {"015daf94f600000002010000000200009025", "1571788022:2"},
        {"82612E8513000000012B022C0100296E5A1004", "mongodb"},
        {"83612E8513000000012B", "opaque"},
        {"{\"_data\": \"AeARBpQ/AAAA\"}", "opaque"},
    };

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const char *argv[] = {th_binary(), "decode", cases[k].token, NULL};
        char *out, *err;

        cr_expect_eq(run_cli(argv, &out, &err), 0, "%s: %s", cases[k].token, err);
        cr_expect(strstr(out, cases[k].want) != NULL, "%s: %s", cases[k].token, out);
        free(out);
        free(err);
    }
}

Test(cli, decode_rejects_malformed_tokens_with_exit_2)
{
    static const struct {
        const char *token;
        const char *reason;
    } cases[] = {{"8261", "truncated"}, {"8361 2E8513000000012B", "not hex"},
                 {"0161", "truncated"}, {"82612E851300000001F", "odd"}};

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const char *argv[] = {th_binary(), "decode", cases[k].token, NULL};
        char *out, *err;

        cr_expect_eq(run_cli(argv, &out, &err), 2, "%s", cases[k].token);
        cr_expect(strstr(err, cases[k].reason) != NULL, "%s: %s", cases[k].token, err);
        free(out);
        free(err);
    }
}

Test(cli, usage_errors_exit_2_and_name_the_setting)
{
    const char *bad_flag[] = {th_binary(), "run", "--checkpoint-every", "0", NULL};
    const char *unknown[] = {th_binary(), "--no-such-flag", NULL};
    const char *command[] = {th_binary(), "frobnicate", NULL};
    char *out, *err;

    cr_expect_eq(run_cli(bad_flag, &out, &err), 2);
    cr_expect(strstr(err, "--checkpoint-every") != NULL, "%s", err);
    free(out);
    free(err);
    cr_expect_eq(run_cli(unknown, &out, &err), 2);
    cr_expect(strstr(err, "--no-such-flag") != NULL, "%s", err);
    free(out);
    free(err);
    cr_expect_eq(run_cli(command, &out, &err), 2);
    cr_expect(strstr(err, "frobnicate") != NULL, "%s", err);
    free(out);
    free(err);
}

Test(cli, help_comes_from_the_settings_table)
{
    const char *argv[] = {th_binary(), "--help", NULL};
    char *out, *err;

    cr_assert_eq(run_cli(argv, &out, &err), 0);
    cr_expect(strstr(out, "--checkpoint-interval DUR") != NULL, "%s", out);
    cr_expect(strstr(out, "TOKENWATCH_REDIS_URL") != NULL);
    cr_expect(strstr(out, "Exit codes") != NULL);
    free(out);
    free(err);
}

Test(cli, checkpoint_show_prints_the_record)
{
    fx_t fx;
    char *data = fx_hwm_data(1700000000, 3);
    char *out, *err;

    fx_start(&fx, NULL);
    fx_seed_checkpoint(&fx, data, "rs=rs0 db=shop coll=orders pipeline=sha256:abc");
    {
        const char *argv[] = {th_binary(), "checkpoint", "show", "--redis-url",
                              fx.redis_url, NULL};
        cr_expect_eq(th_run(fx.dir, argv, NULL, 10000, &out, &err), 0, "%s", err);
        cr_expect(strstr(out, "1700000000:3") != NULL, "%s", out);
        cr_expect(strstr(out, "2023-11-14T22:13:20Z") != NULL, "%s", out);
        cr_expect(strstr(out, data) != NULL, "%s", out);
        cr_expect(strstr(out, "rs=rs0 db=shop") != NULL, "%s", out);
        free(out);
        free(err);
    }
    {
        const char *argv[] = {th_binary(), "checkpoint", "show", "--name", "other",
                              "--redis-url", fx.redis_url, NULL};
        cr_expect_eq(th_run(fx.dir, argv, NULL, 10000, &out, &err), 1);
        cr_expect(strstr(err, "no checkpoint at tokenwatch:{other}:checkpoint") != NULL,
                  "%s", err);
        free(out);
        free(err);
    }
    fx_stop(&fx);
    bson_free(data);
}

Test(cli, the_redis_password_never_reaches_the_output)
{
    fx_t fx;
    char url[300], *out, *err;
    redisReply *r;

    fx_start(&fx, NULL);
    r = th_redis_cmd(&fx.redis, "CONFIG SET requirepass hunter2secret");
    freeReplyObject(r);
    snprintf(url, sizeof url, "redis://:wrongpass@127.0.0.1:%d/0", fx.redis.port);
    {
        const char *argv[] = {th_binary(), "checkpoint", "show", "--redis-url", url,
                              NULL};
        cr_expect_eq(th_run(fx.dir, argv, NULL, 10000, &out, &err), 1);
        cr_expect(strstr(err, "wrongpass") == NULL, "%s", err);
        cr_expect(strstr(out, "wrongpass") == NULL, "%s", out);
        free(out);
        free(err);
    }
    r = th_redis_cmd(&fx.redis, "CONFIG SET requirepass ''");
    freeReplyObject(r);
    fx_stop(&fx);
}
