/*
 * Stored records that are not what they should be: one reader shared by
 * every command, which names a bad record and skips it where it can, and
 * never leaves an operator with only a manual DEL.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"

#define T0 1700000000u
#define HISTORY "tokenwatch:{default}:history"
#define HOUR_OF_OPLOG "{\"rate\": 0, \"retention\": 3600, \"initial_oplog_span\": 3600}"

static fx_t fx;

static void teardown(void)
{
    fx_stop(&fx);
}

TestSuite(records, .fini = teardown, .timeout = 60);

/* A history entry as the commit script writes it, for a token at (t, 1). */
static void push_entry(uint32_t t)
{
    char *data = fx_hwm_data(t, 1);
    char entry[512];

    snprintf(entry, sizeof entry,
             "{\"token\": \"{ \\\"_data\\\" : \\\"%s\\\" }\", \"cluster_time\": \"%u:1\", "
             "\"events\": \"7\", \"source\": \"event\", \"pushed_ms\": \"1\", "
             "\"reason\": \"periodic\"}",
             data, t);
    freeReplyObject(th_redis_cmd(&fx.redis, "LPUSH %s %s", HISTORY, entry));
    bson_free(data);
}

Test(records, a_string_own_checkpoint_is_refused_by_status_as_by_run)
{
    static const char *const status[] = {"status", NULL};
    char *out, *err = NULL;
    int code;

    fx_start(&fx, HOUR_OF_OPLOG);
    freeReplyObject(th_redis_cmd(&fx.redis, "SET " FX_CHECKPOINT " 1700000000:1"));
    code = fx_run(&fx, NULL, 20000, &err);
    cr_expect_eq(code, 2, "run refuses it: %s", err);
    free(err);
    code = fx_cli(&fx, status, &out, &err);
    cr_expect_eq(code, 3, "status agrees: UNKNOWN, not OK: %s", out);
    cr_expect(strstr(out, "UNKNOWN") != NULL && strstr(out, "not a checkpoint hash") != NULL,
              "%s", out);
    free(out);
    free(err);
}

Test(records, a_junk_history_entry_is_named_and_skipped)
{
    static const char *const history[] = {"checkpoint", "history", NULL};
    static const char *const rollback2[] = {"checkpoint", "rollback", "2", NULL};
    static const char *const rollback1[] = {"checkpoint", "rollback", "1", NULL};
    char *current = fx_hwm_data(T0 - 60, 1);
    char *out, *err, *data, *want = fx_hwm_data(T0 - 600, 1);

    fx_start(&fx, HOUR_OF_OPLOG);
    fx_seed_checkpoint(&fx, current, NULL);
    push_entry(T0 - 600);
    freeReplyObject(th_redis_cmd(&fx.redis, "LPUSH %s %s", HISTORY, "{junk"));
    cr_expect_eq(fx_cli(&fx, history, &out, &err), 0, "%s", err);
    cr_expect(strstr(out, "1    (unreadable:") != NULL, "the bad entry is named: %s", out);
    cr_expect(strstr(out, "2    1699999400:1") != NULL, "the good one is listed: %s", out);
    free(out);
    free(err);
    cr_expect_eq(fx_cli(&fx, rollback1, &out, &err), 2, "entry 1 cannot be used");
    cr_expect(strstr(err, "entry 1") != NULL, "%s", err);
    free(out);
    free(err);
    cr_expect_eq(fx_cli(&fx, rollback2, &out, &err), 0, "entry 2 can: %s", err);
    free(out);
    free(err);
    data = fx_checkpoint_data(&fx);
    cr_expect_str_eq(data, want);
    free(data);
    bson_free(want);
    bson_free(current);
}

Test(records, a_garbage_checkpoint_can_be_shown_replaced_and_recovered_from)
{
    static const char *const show[] = {"checkpoint", "show", NULL};
    static const char *const rollback[] = {"checkpoint", "rollback", "1", NULL};
    static const char *const resume[] = {"--resume-from", "now", NULL};
    char *out, *err, *data, *want = fx_hwm_data(T0 - 600, 1);
    th_proc_t p;

    fx_start(&fx, HOUR_OF_OPLOG);
    freeReplyObject(th_redis_cmd(&fx.redis, "HSET " FX_CHECKPOINT " token garbage events 3"));
    cr_expect_eq(fx_cli(&fx, show, &out, &err), 2, "malformed: exit 2 as documented");
    cr_expect(strstr(err, FX_CHECKPOINT) != NULL, "%s", err);
    free(out);
    free(err);

    push_entry(T0 - 600);
    cr_expect_eq(fx_cli(&fx, rollback, &out, &err), 0, "rollback replaces it: %s", err);
    free(out);
    free(err);
    data = fx_checkpoint_data(&fx);
    cr_expect_str_eq(data, want);
    free(data);

    freeReplyObject(th_redis_cmd(&fx.redis, "HSET " FX_CHECKPOINT " token garbage"));
    fx_spawn(&fx, &p, resume);
    th_assert_dump(fx_wait_checkpoint(&fx, 10000), p.err_path, "started");
    th_sleep_ms(500);
    th_proc_stop(&p, 10000);
    cr_expect_eq(th_proc_exit_code(&p), 0, "--resume-from replaces a garbage checkpoint");
    data = fx_checkpoint_data(&fx);
    cr_expect(data && strcmp(data, "garbage") != 0, "%s", data ? data : "(none)");
    free(data);
    bson_free(want);
}

/* A checkpoint key that is not a hash at all (a string): rollback said it
 * kept it in the history and then failed on WRONGTYPE (exit 1), and
 * --resume-from said it replaced it and then exited 2 on the commit's type
 * check. Both replace it; the history keeps what it held. */
Test(records, a_string_checkpoint_is_replaced_by_rollback_and_by_resume_from)
{
    static const char *const history[] = {"checkpoint", "history", NULL};
    static const char *const rollback[] = {"checkpoint", "rollback", "1", NULL};
    static const char *const resume[] = {"--resume-from", "now", NULL};
    char *out, *err, *data, *want = fx_hwm_data(T0 - 600, 1);
    th_proc_t p;

    fx_start(&fx, HOUR_OF_OPLOG);
    push_entry(T0 - 600);
    freeReplyObject(th_redis_cmd(&fx.redis, "SET " FX_CHECKPOINT " 1700000000:1"));
    cr_expect_eq(fx_cli(&fx, rollback, &out, &err), 0, "rollback replaces it: %s", err);
    free(out);
    free(err);
    data = fx_checkpoint_data(&fx);
    cr_expect(data && strcmp(data, want) == 0, "the entry's token: %s", data ? data : "(none)");
    free(data);
    cr_expect_eq(fx_cli(&fx, history, &out, &err), 0, "%s", err);
    cr_expect(strstr(out, "1    (unreadable:") != NULL, "what it held is kept, named: %s", out);
    cr_expect(strstr(out, "2    1699999400:1") != NULL, "the entry rolled back to: %s", out);
    free(out);
    free(err);

    freeReplyObject(th_redis_cmd(&fx.redis, "DEL " FX_CHECKPOINT));
    freeReplyObject(th_redis_cmd(&fx.redis, "SET " FX_CHECKPOINT " 1700000000:1"));
    fx_spawn(&fx, &p, resume);
    th_assert_dump(fx_wait_checkpoint(&fx, 10000), p.err_path, "started");
    th_sleep_ms(500);
    th_proc_stop(&p, 10000);
    cr_expect_eq(th_proc_exit_code(&p), 0, "--resume-from replaces a string checkpoint");
    data = fx_checkpoint_data(&fx);
    cr_expect(data != NULL, "a checkpoint hash again");
    free(data);
    bson_free(want);
}

/* A history key of the wrong type: named, exit 2, by every command that
 * reads it (it was Redis's bare WRONGTYPE and exit 1). */
Test(records, a_history_key_of_the_wrong_type_is_named)
{
    static const char *const history[] = {"checkpoint", "history", NULL};
    static const char *const rollback[] = {"checkpoint", "rollback", "1", "--dry-run", NULL};
    const char *const *commands[] = {history, rollback};
    char *out, *err, *current = fx_hwm_data(T0 - 60, 1);

    fx_start(&fx, HOUR_OF_OPLOG);
    fx_seed_checkpoint(&fx, current, NULL);
    freeReplyObject(th_redis_cmd(&fx.redis, "SET %s junk", HISTORY));
    for (size_t k = 0; k < 2; k++) {
        cr_expect_eq(fx_cli(&fx, commands[k], &out, &err), 2, "%s %s: %s", commands[k][0],
                     commands[k][1], err);
        cr_expect(strstr(err, HISTORY " holds a string") != NULL, "%s", err);
        free(out);
        free(err);
    }
    bson_free(current);
}
