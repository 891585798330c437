/*
 * The command line outside `run`: decode, checkpoint show, usage errors.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* Issue 9, "input that is accepted but wrong": exit 2, naming the argument. */
Test(cli, decode_refuses_json_that_is_not_one_token)
{
    static const struct {
        const char *token;
        const char *reason;
    } cases[] = {
        {"{\"_data\":\"82612E8513000000012B\",\"_data\":\"82612E8513000000022B\"}", "twice"},
        {"{\"_data\":\"82612E85\\u000013000000012B\"}", "NUL"},
    };

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const char *argv[] = {th_binary(), "decode", cases[k].token, NULL};
        char *out, *err;

        cr_expect_eq(run_cli(argv, &out, &err), 2, "%s: %s", cases[k].token, out);
        cr_expect(strstr(err, cases[k].reason) != NULL, "%s: %s", cases[k].token, err);
        cr_expect(strstr(err, "_data") != NULL, "%s: %s", cases[k].token, err);
        free(out);
        free(err);
    }
}

/* Checked before Redis is reached: no server runs here. */
Test(cli, rollback_takes_only_a_history_number)
{
    static const char *const bad[] = {"1abc", "0", "-1", "+1", " 1", "1 ", "0x1", "",
                                      "99999999999999999999", "101"};

    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        const char *argv[] = {th_binary(), "checkpoint", "rollback", bad[k], "--dry-run",
                              "--redis-url", "redis://127.0.0.1:1/0", NULL};
        char *out, *err;

        cr_expect_eq(run_cli(argv, &out, &err), 2, "'%s': %s", bad[k], err);
        /* "-1" reads as an unknown option, which names it just as well. */
        cr_expect(strstr(err, bad[k][0] == '-' ? "unknown option -1" : "N is a history entry") !=
                      NULL,
                  "'%s': %s", bad[k], err);
        free(out);
        free(err);
    }
}

Test(cli, bad_settings_files_exit_2_naming_them)
{
    char dir[PATH_MAX], empty[PATH_MAX + 16], two[PATH_MAX + 16];
    const char *paths[4];
    FILE *f;

    cr_assert(th_tmpdir(dir, sizeof dir));
    snprintf(empty, sizeof empty, "%s/empty", dir);
    snprintf(two, sizeof two, "%s/two", dir);
    f = fopen(empty, "w");
    cr_assert(f);
    fclose(f);
    f = fopen(two, "w");
    cr_assert(f);
    fputs("https://hooks.slack.com/services/T/B/one\nhttps://hooks.slack.com/services/T/B/two\n", f);
    fclose(f);
    paths[0] = "/nonexistent/webhook";
    paths[1] = dir;
    paths[2] = empty;
    paths[3] = two;
    for (size_t k = 0; k < 4; k++) {
        const char *argv[] = {th_binary(), "run", "--slack-webhook-file", paths[k],
                              "--metrics-addr", "off", NULL};
        char *out, *err;

        cr_expect_eq(run_cli(argv, &out, &err), 2, "%s: %s", paths[k], err);
        cr_expect(strstr(err, "--slack-webhook-file") != NULL, "%s: %s", paths[k], err);
        cr_expect(strstr(err, paths[k]) != NULL, "%s: %s", paths[k], err);
        cr_expect(strstr(err, "hooks.slack.com") == NULL, "%s: %s", paths[k], err);
        free(out);
        free(err);
    }
    {
        const char *argv[] = {th_binary(), "run", "--config", dir, NULL};
        char *out, *err;

        cr_expect_eq(run_cli(argv, &out, &err), 2, "--config DIR: %s", err);
        cr_expect(strstr(err, "--config") != NULL && strstr(err, "directory") != NULL, "%s",
                  err);
        free(out);
        free(err);
    }
    f = fopen(empty, "w");
    cr_assert(f);
    fputs("\xEF\xBB\xBFTOKENWATCH_NAME=bom\n", f);
    fclose(f);
    {
        const char *argv[] = {th_binary(), "run", "--config", empty, "--metrics-addr", "off",
                              NULL};
        char *out, *err;

        cr_expect_eq(run_cli(argv, &out, &err), 2, "--config with a BOM: %s", err);
        cr_expect(strstr(err, empty) != NULL && strstr(err, "byte order mark") != NULL, "%s",
                  err);
        free(out);
        free(err);
    }
    th_rmtree(dir);
}

Test(cli, a_redis_url_without_a_host_or_with_options_exits_2)
{
    static const char *const urls[] = {"redis:///0", "redis://127.0.0.1:1/0?db=1",
                                       "redis://127.0.0.1:1/0#x", "unix:///",
                                       "unix:///tmp/", "redis:/127.0.0.1:1/0?db=1"};

    for (size_t k = 0; k < sizeof urls / sizeof urls[0]; k++) {
        const char *argv[] = {th_binary(), "checkpoint", "show", "--redis-url", urls[k], NULL};
        char *out, *err;

        cr_expect_eq(run_cli(argv, &out, &err), 2, "%s: %s", urls[k], err);
        cr_expect(strstr(err, "--redis-url") != NULL, "%s: %s", urls[k], err);
        free(out);
        free(err);
    }
}

Test(cli, guard_lists_with_empty_items_exit_2)
{
    static const char *const lists[] = {"", " ", "a,,b", "a, ,b"};

    for (size_t k = 0; k < sizeof lists / sizeof lists[0]; k++) {
        const char *argv[] = {th_binary(), "status", "--guard", lists[k], NULL};
        char *out, *err;

        cr_expect_eq(run_cli(argv, &out, &err), 2, "'%s': %s", lists[k], err);
        cr_expect(strstr(err, "--guard") != NULL, "'%s': %s", lists[k], err);
        free(out);
        free(err);
    }
}

/* Issue 9: the Redis password file is read with the settings, so every
 * command refuses a bad one with exit 2 naming the setting and the path,
 * never the content, before anything is reached. */
#define PW_SECRET "S3cretRedisPw"

/* root reads a file whatever its mode: as root, the unreadable case runs
 * the binary as nobody. */
static const char *const as_nobody[] = {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534",
                                        "--clear-groups", NULL};

static void check_bad_password_file(const char *path, const char *const env[],
                                    const char *const prefix[])
{
    char metrics[64];
    const char *setting = env ? "TOKENWATCH_REDIS_PASSWORD_FILE" : "--redis-password-file";
    const char *commands[][3] = {{"run", NULL, NULL},
                                 {"status", NULL, NULL},
                                 {"checkpoint", "show", NULL},
                                 {"checkpoint", "history", NULL},
                                 {"checkpoint", "rollback", "--dry-run"},
                                 {"healthcheck", NULL, NULL},
                                 {"decode", "82612E8513000000012B022C0100296E5A1004", NULL}};

    snprintf(metrics, sizeof metrics, "127.0.0.1:%d", th_free_port());
    for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++) {
        const char *argv[16];
        size_t n = 0;
        char dir[PATH_MAX], *out, *err;
        int code;

        for (size_t a = 0; prefix && prefix[a]; a++)
            argv[n++] = prefix[a];
        argv[n++] = th_binary();
        for (size_t a = 0; a < 3 && commands[k][a]; a++)
            argv[n++] = commands[k][a];
        argv[n++] = "--redis-url";
        argv[n++] = "redis://127.0.0.1:1/0";
        argv[n++] = "--metrics-addr";
        argv[n++] = metrics;
        if (!env) {
            argv[n++] = "--redis-password-file";
            argv[n++] = path;
        }
        argv[n] = NULL;
        cr_assert(th_tmpdir(dir, sizeof dir));
        code = th_run(dir, argv, env, 10000, &out, &err);
        th_rmtree(dir);
        cr_expect_eq(code, 2, "%s, %s %s: exit %d: %s", path, setting, commands[k][0], code,
                     err);
        cr_expect(strstr(err, setting) != NULL, "%s %s: %s", path, commands[k][0], err);
        cr_expect(strstr(err, path) != NULL, "%s %s: %s", path, commands[k][0], err);
        cr_expect(strstr(err, PW_SECRET) == NULL && strstr(out, PW_SECRET) == NULL,
                  "%s %s leaks the password:\n%s\n%s", path, commands[k][0], out, err);
        free(out);
        free(err);
    }
}

Test(cli, bad_redis_password_files_exit_2_for_every_command, .timeout = 120)
{
    char dir[PATH_MAX], empty[PATH_MAX + 16], blank[PATH_MAX + 16], two[PATH_MAX + 16],
        locked[PATH_MAX + 16], env_entry[PATH_MAX + 48];
    const char *paths[6];
    size_t n = 0;
    bool root;

    cr_assert(th_tmpdir(dir, sizeof dir));
    snprintf(empty, sizeof empty, "%s/empty", dir);
    snprintf(blank, sizeof blank, "%s/blank", dir);
    snprintf(two, sizeof two, "%s/two", dir);
    snprintf(locked, sizeof locked, "%s/locked", dir);
    cr_assert(th_write_file(empty, "", 0));
    cr_assert(th_write_file(blank, " \n", 2));
    cr_assert(th_write_file(two, PW_SECRET "\n" PW_SECRET "2\n", strlen(PW_SECRET) * 2 + 3));
    cr_assert(th_write_file(locked, PW_SECRET "\n", strlen(PW_SECRET) + 1));
    cr_assert_eq(chmod(locked, 0), 0);
    root = access(locked, R_OK) == 0;
    paths[n++] = "/nonexistent/redis-password";
    paths[n++] = dir;
    paths[n++] = empty;
    paths[n++] = blank;
    paths[n++] = two;
    for (size_t k = 0; k < n; k++)
        check_bad_password_file(paths[k], NULL, NULL);
    if (!root)
        check_bad_password_file(locked, NULL, NULL);
    else if (access(as_nobody[0], X_OK) == 0)
        check_bad_password_file(locked, NULL, as_nobody);
    else
        cr_log_warn("running as root without setpriv: the unreadable file case is skipped");
    snprintf(env_entry, sizeof env_entry, "TOKENWATCH_REDIS_PASSWORD_FILE=%s", two);
    {
        const char *env[] = {env_entry, NULL};

        check_bad_password_file(two, env, NULL);
    }
    th_rmtree(dir);
}
