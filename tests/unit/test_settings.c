#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tokenwatch/settings.h"

static char config_path[64];

static void write_config(const char *text)
{
    FILE *f;

    snprintf(config_path, sizeof config_path, "/tmp/tw-settings-XXXXXX");
    close(mkstemp(config_path));
    f = fopen(config_path, "w");
    cr_assert(f);
    fputs(text, f);
    fclose(f);
}

static void remove_config(void)
{
    if (config_path[0])
        unlink(config_path);
}

static bool load(tw_settings_t *s, const char *const argv[], int argc,
                 const char *const envp[], tw_error_t *err)
{
    memset(s, 0, sizeof *s);
    return tw_settings_load(s, argc, argv, envp, err);
}

Test(settings, defaults_match_the_contract)
{
    tw_settings_t s;
    const char *argv[] = {NULL};
    const char *envp[] = {NULL};

    cr_assert(load(&s, argv, 0, envp, NULL));
    cr_expect_str_eq(s.name, "default");
    cr_expect_str_eq(s.environment, "dev");
    cr_expect_str_eq(s.mongo_uri, "mongodb://127.0.0.1:27017/?replicaSet=rs0");
    cr_expect_str_eq(s.redis_url, "redis://127.0.0.1:6379/0");
    cr_expect_str_eq(s.pipeline, "[]");
    cr_expect_eq(s.sink, TW_SINK_NONE);
    cr_expect_str_eq(s.stream_key, "tokenwatch:{default}:events");
    cr_expect_eq(s.stream_maxlen, 1000000);
    cr_expect_eq(s.checkpoint_interval_ms, 1000);
    cr_expect_eq(s.checkpoint_every, 1000);
    cr_expect_eq(s.max_events, 0);
    cr_expect_null(s.db);
    cr_expect_null(s.collection);
    cr_expect_null(s.full_document);
    cr_expect_null(s.until);
    tw_settings_release(&s);
}

Test(settings, precedence_default_file_env_flag, .fini = remove_config)
{
    tw_settings_t s;
    char flag_config[96];

    write_config("# a comment\n"
                 "TOKENWATCH_NAME=from-file\n"
                 "TOKENWATCH_ENVIRONMENT=from-file\n"
                 "TOKENWATCH_CHECKPOINT_EVERY=10\n"
                 "\n"
                 "TOKENWATCH_SINK=stdout\n");
    snprintf(flag_config, sizeof flag_config, "--config=%s", config_path);
    {
        /* Each source wins over the one before it, setting by setting. */
        const char *argv[] = {flag_config, "--name", "from-flag"};
        const char *envp[] = {"TOKENWATCH_NAME=from-env",
                        "TOKENWATCH_ENVIRONMENT=from-env", "HOME=/root", NULL};

        cr_assert(load(&s, argv, 3, envp, NULL));
        cr_expect_str_eq(s.name, "from-flag");
        cr_expect_str_eq(s.environment, "from-env");
        cr_expect_eq(s.checkpoint_every, 10);
        cr_expect_eq(s.sink, TW_SINK_STDOUT);
        cr_expect_str_eq(s.log_format == 0 ? "text" : "json", "text");
        cr_expect_eq(tw_settings_source_of(&s, "name"), TW_SOURCE_FLAG);
        cr_expect_eq(tw_settings_source_of(&s, "environment"), TW_SOURCE_ENV);
        cr_expect_eq(tw_settings_source_of(&s, "checkpoint-every"), TW_SOURCE_FILE);
        cr_expect_eq(tw_settings_source_of(&s, "log-format"), TW_SOURCE_DEFAULT);
        /* The stream key follows the final name. */
        cr_expect_str_eq(s.stream_key, "tokenwatch:{from-flag}:events");
        tw_settings_release(&s);
    }
}

Test(settings, config_file_from_environment, .fini = remove_config)
{
    tw_settings_t s;
    char env_config[96];
    const char *argv[] = {NULL};

    write_config("TOKENWATCH_DB=shop\nTOKENWATCH_COLLECTION=orders\n");
    snprintf(env_config, sizeof env_config, "TOKENWATCH_CONFIG=%s", config_path);
    {
        const char *envp[] = {env_config, NULL};
        cr_assert(load(&s, argv, 0, envp, NULL));
        cr_expect_str_eq(s.db, "shop");
        cr_expect_str_eq(s.collection, "orders");
        tw_settings_release(&s);
    }
}

typedef struct {
    const char *file;     /* config file text, or NULL */
    const char *env;      /* one K=V, or NULL */
    const char *flags[6]; /* NULL-terminated */
    const char *must_name; /* the message must name this */
} bad_case_t;

static const bad_case_t bad_cases[] = {
    {"TOKENWATCH_NAMME=x\n", NULL, {NULL}, "TOKENWATCH_NAMME"},
    {"TOKENWATCH_NAME\n", NULL, {NULL}, "line 1"},
    {"TOKENWATCH_CHECKPOINT_EVERY=lots\n", NULL, {NULL}, "TOKENWATCH_CHECKPOINT_EVERY"},
    {NULL, "TOKENWATCH_CHECKPOINT_INTERVAL=5", {NULL}, "TOKENWATCH_CHECKPOINT_INTERVAL"},
    {NULL, "TOKENWATCH_SINK=kafka", {NULL}, "kafka"},
    {NULL, NULL, {"--checkpoint-every", "0", NULL}, "--checkpoint-every"},
    {NULL, NULL, {"--checkpoint-every", "12x", NULL}, "--checkpoint-every"},
    {NULL, NULL, {"--colection", "x", NULL}, "--colection"},
    {NULL, NULL, {"-x", NULL}, "-x"},
    {NULL, NULL, {"--name", NULL}, "--name"},
    {NULL, NULL, {"--name", "a{b}", NULL}, "--name"},
    {NULL, NULL, {"--pipeline", "{\"$match\": {}}", NULL}, "--pipeline"},
    {NULL, NULL, {"--pipeline", "[1]", NULL}, "--pipeline"},
    {NULL, NULL, {"--full-document", "always", NULL}, "--full-document"},
    {NULL, NULL, {"--until", "oldest", NULL}, "--until"},
    {NULL, NULL, {"--until", "soon", NULL}, "--until"},
    {NULL, NULL, {"--mongo-uri", "http://x", NULL}, "--mongo-uri"},
    {NULL, NULL, {"--redis-url", "rediss://h:6379", NULL}, "TLS"},
    {NULL, NULL, {"--redis-url", "redis://h:99999/0", NULL}, "--redis-url"},
    {NULL, NULL, {"--collection", "orders", NULL}, "--db"},
    {NULL, NULL, {"--max-events", "-3", NULL}, "--max-events"},
    {NULL, NULL, {"--log-level", "loud", NULL}, "--log-level"},
    {NULL, NULL, {"--guard", "http://connect:8083/", NULL}, "/connectors/NAME"},
    {NULL, NULL, {"--guard", "monstache:", NULL}, "--guard"},
    {NULL, NULL, {"--lease-ttl", "300ms", NULL}, "--lease-ttl"},
    {NULL, NULL, {"--lease-ttl", "2s", "--lease-renew", "1500ms", NULL}, "--lease-renew"},
};

Test(settings, bad_values_name_the_setting, .fini = remove_config)
{
    for (size_t k = 0; k < sizeof bad_cases / sizeof bad_cases[0]; k++) {
        const bad_case_t *c = &bad_cases[k];
        tw_settings_t s;
        tw_error_t err;
        char flag_config[96];
        const char *argv[8];
        const char *envp[2] = {c->env, NULL};
        int argc = 0;

        if (c->file) {
            write_config(c->file);
            snprintf(flag_config, sizeof flag_config, "--config=%s", config_path);
            argv[argc++] = flag_config;
        }
        for (size_t f = 0; c->flags[f]; f++)
            argv[argc++] = c->flags[f];
        argv[argc] = NULL;
        memset(&err, 0, sizeof err);
        cr_expect_not(load(&s, argv, argc, envp, &err), "case %zu accepted", k);
        cr_expect(strstr(err.message, c->must_name) != NULL,
                  "case %zu: '%s' does not name '%s'", k, err.message, c->must_name);
        tw_settings_release(&s);
        remove_config();
    }
}

Test(settings, secrets_stay_out_of_errors)
{
    tw_settings_t s;
    tw_error_t err;
    const char *argv[] = {"--mongo-uri", "mongodb://u:hunter2@h:1/?bogusOption=%%"};
    const char *argv2[] = {"--redis-url", "redis://:hunter2@h:99999/0"};
    const char *envp[] = {NULL};

    if (load(&s, argv, 2, envp, &err))
        cr_log_warn("libmongoc accepted the URI; nothing to check");
    else
        cr_expect(strstr(err.message, "hunter2") == NULL, "%s", err.message);
    tw_settings_release(&s);
    cr_expect_not(load(&s, argv2, 2, envp, &err));
    cr_expect(strstr(err.message, "hunter2") == NULL, "%s", err.message);
    tw_settings_release(&s);
}

Test(settings, unknown_environment_variables_warn)
{
    tw_settings_t s;
    const char *argv[] = {NULL};
    /* Kubernetes sets these for a Service named tokenwatch. */
    const char *envp[] = {"TOKENWATCH_PORT=tcp://10.0.0.1:9470",
                    "TOKENWATCH_SERVICE_HOST=10.0.0.1", NULL};

    cr_assert(load(&s, argv, 0, envp, NULL));
    cr_expect_eq(s.warning_count, 2);
    cr_expect(strstr(s.warnings[0], "TOKENWATCH_PORT") != NULL);
    tw_settings_release(&s);
}

Test(settings, positionals_help_and_version)
{
    tw_settings_t s;
    const char *argv[] = {"show", "--help", "--", "--version"};
    const char *envp[] = {NULL};

    cr_assert(load(&s, argv, 4, envp, NULL));
    cr_expect(s.help);
    cr_expect_not(s.version);
    cr_assert_eq(s.positional_count, 2);
    cr_expect_str_eq(s.positional[0], "show");
    cr_expect_str_eq(s.positional[1], "--version");
    tw_settings_release(&s);
}

Test(settings, help_lists_every_setting)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    static const char *const names[] = {
        "--config", "--name", "--environment", "--mongo-uri", "--db",
        "--collection", "--pipeline", "--full-document", "--redis-url",
        "--redis-password-file", "--sink", "--stream-key", "--stream-maxlen",
        "--checkpoint-interval", "--checkpoint-every", "--max-events",
        "--until", "--log-format", "--log-level", "TOKENWATCH_STREAM_MAXLEN"};

    tw_settings_print_help(out);
    fclose(out);
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
        cr_expect(strstr(text, names[k]) != NULL, "help lacks %s", names[k]);
    free(text);
}

/* config/tokenwatch.env documents every setting; it must stay equal to the
 * table: every key is a setting, every setting is there (commented or not). */
Test(settings, the_example_file_matches_the_table)
{
    char path[512];
    char *text = NULL;
    size_t len = 0;
    FILE *f;

    snprintf(path, sizeof path, "%s/config/tokenwatch.env", TW_SOURCE_DIR);
    f = fopen(path, "r");
    cr_assert(f, "%s", path);
    {
        char buf[4096];
        size_t n;
        FILE *mem = open_memstream(&text, &len);
        while ((n = fread(buf, 1, sizeof buf, f)) > 0)
            fwrite(buf, 1, n, mem);
        fclose(mem);
    }
    fclose(f);
    for (size_t k = 0; k < tw_settings_count(); k++) {
        const char *env = tw_settings_env_name(k);
        char key[96];

        if (!env || strcmp(env, "TOKENWATCH_CONFIG") == 0)
            continue;
        snprintf(key, sizeof key, "%s=", env);
        cr_expect(strstr(text, key) != NULL, "%s is missing from %s", env, path);
    }
    {
        /* The uncommented lines load as a config file. */
        tw_settings_t s;
        tw_error_t err;
        char flag[600];
        const char *argv[] = {flag};
        const char *envp[] = {NULL};

        snprintf(flag, sizeof flag, "--config=%s", path);
        cr_expect(load(&s, argv, 1, envp, &err), "%s", err.message);
        tw_settings_release(&s);
    }
    free(text);
}

Test(settings, the_mongo_uri_can_come_from_a_file, .fini = remove_config)
{
    tw_settings_t s;
    tw_error_t err;
    char flag[96];
    const char *argv[] = {flag};
    const char *envp[] = {NULL};

    write_config("mongodb://cdc:s3cret@db1,db2/?replicaSet=rs0\n");
    snprintf(flag, sizeof flag, "--mongo-uri-file=%s", config_path);
    cr_assert(load(&s, argv, 1, envp, &err), "%s", err.message);
    cr_expect_str_eq(s.mongo_uri, "mongodb://cdc:s3cret@db1,db2/?replicaSet=rs0");
    tw_settings_release(&s);

    write_config("not a uri with s3cret\n");
    snprintf(flag, sizeof flag, "--mongo-uri-file=%s", config_path);
    cr_expect_not(load(&s, argv, 1, envp, &err));
    cr_expect(strstr(err.message, config_path) != NULL, "%s", err.message);
    cr_expect(strstr(err.message, "s3cret") == NULL, "the content is never quoted: %s",
              err.message);
    tw_settings_release(&s);
}

/* The README's settings table is the configuration reference: every flag and
 * every environment variable of the table must be in it. */
Test(settings, the_readme_documents_every_setting)
{
    char path[512];
    char *text = NULL;
    size_t len = 0;
    FILE *f, *mem;
    char buf[4096];
    size_t n;
    char *help = NULL;
    size_t help_len = 0;
    FILE *help_out = open_memstream(&help, &help_len);

    snprintf(path, sizeof path, "%s/README.md", TW_SOURCE_DIR);
    f = fopen(path, "r");
    cr_assert(f, "%s", path);
    mem = open_memstream(&text, &len);
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        fwrite(buf, 1, n, mem);
    fclose(mem);
    fclose(f);
    for (size_t k = 0; k < tw_settings_count(); k++) {
        const char *env = tw_settings_env_name(k);
        if (env)
            cr_expect(strstr(text, env) != NULL, "README lacks %s", env);
    }
    /* Flags: every "--name" at the start of a help line. */
    tw_settings_print_help(help_out);
    fclose(help_out);
    char *save = NULL;

    for (char *line = strtok_r(help, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char flag[64];
        if (sscanf(line, " %63s", flag) == 1 && strncmp(flag, "--", 2) == 0) {
            char quoted[80];
            snprintf(quoted, sizeof quoted, "`%s", flag);
            cr_expect(strstr(text, quoted) != NULL, "README lacks %s", flag);
        }
    }
    free(help);
    free(text);
}

Test(settings, shard_uris_are_space_separated_and_checked)
{
    tw_settings_t s;
    tw_error_t err;
    const char *envp[] = {"TOKENWATCH_SHARD_URI=shard0=mongodb://tw:pw@a:1,b:2/?replicaSet=shard0 "
                          " shard1=mongodb://c:3/?replicaSet=shard1",
                          NULL};
    const char *bad[] = {"--shard-uri", "mongodb://tw:hunter2@a:1/?replicaSet=shard0"};
    const char *none[] = {NULL};

    cr_assert(load(&s, NULL, 0, envp, &err), "%s", err.message);
    cr_assert_eq(s.shard_uri_count, 2);
    cr_expect_str_eq(s.shard_uri[0], "shard0=mongodb://tw:pw@a:1,b:2/?replicaSet=shard0");
    cr_expect_str_eq(s.shard_uri[1], "shard1=mongodb://c:3/?replicaSet=shard1");
    tw_settings_release(&s);
    cr_expect_not(load(&s, bad, 2, none, &err), "no NAME=");
    cr_expect(strstr(err.message, "NAME=URI") != NULL, "%s", err.message);
    cr_expect(strstr(err.message, "hunter2") == NULL, "%s", err.message);
    tw_settings_release(&s);
}

Test(settings, an_empty_list_is_refused_and_protection_is_turned_off_by_name)
{
    tw_settings_t s;
    tw_error_t err;
    const char *empty_protect[] = {"--protect", ""};
    const char *empty_guard[] = {"--guard", ""};
    const char *none[] = {"--protect", "none"};
    const char *bad_policy[] = {"--on-missing-checkpoint", "sometimes"};
    const char *envp[] = {NULL};

    cr_expect_not(load(&s, empty_protect, 2, envp, &err), "--protect '' must not turn it off");
    cr_expect(strstr(err.message, "--protect none") != NULL, "%s", err.message);
    tw_settings_release(&s);
    cr_expect_not(load(&s, empty_guard, 2, envp, &err), "--guard ''");
    tw_settings_release(&s);
    cr_expect(load(&s, none, 2, envp, &err), "%s", err.message);
    cr_expect_eq(s.protect_count, 1);
    tw_settings_release(&s);
    cr_expect_not(load(&s, bad_policy, 2, envp, &err));
    cr_expect(strstr(err.message, "now, oldest, fail or a SPEC") != NULL, "%s", err.message);
    tw_settings_release(&s);
}

/* The list parser: blanks around each item are no part of it (" b" was a key
 * of its own); an item left empty is refused, wherever the list came from. */
static const struct {
    const char *env;   /* the variable, also the config file key */
    const char *flag;  /* NULL: the list comes from the environment */
    const char *value;
    const char *items[3]; /* NULL-ended; none: refused */
    const char *error;    /* a substring of the message, when refused */
} list_cases[] = {
    {"TOKENWATCH_GUARD", "--guard", "a,b", {"a", "b"}, NULL},
    {"TOKENWATCH_GUARD", "--guard", "a, b", {"a", "b"}, NULL},
    {"TOKENWATCH_GUARD", "--guard", " a , b ", {"a", "b"}, NULL},
    {"TOKENWATCH_GUARD", "--guard", "a,\tb\r\n", {"a", "b"}, NULL},
    {"TOKENWATCH_GUARD", "--guard", "\va\f,b", {"a", "b"}, NULL},
    {"TOKENWATCH_GUARD", "--guard", "  billing:resume-token  ", {"billing:resume-token"}, NULL},
    {"TOKENWATCH_GUARD", "--guard", "a b,c", {"a b", "c"}, NULL}, /* inside: kept */
    {"TOKENWATCH_GUARD", NULL, " a ,b", {"a", "b"}, NULL},
    {"TOKENWATCH_GUARD", "--guard", "a, ,b", {NULL}, "item 2 of the list is empty"},
    {"TOKENWATCH_GUARD", "--guard", "a,\t", {NULL}, "item 2 of the list is empty"},
    {"TOKENWATCH_GUARD", "--guard", " ,a", {NULL}, "item 1 of the list is empty"},
    {"TOKENWATCH_GUARD", NULL, "a,\v", {NULL}, "item 2 of the list is empty"},
    {"TOKENWATCH_GUARD", "--guard", "\t\v", {NULL}, "the value is empty"},
    {"TOKENWATCH_PROTECT", "--protect", "prod, live", {"prod", "live"}, NULL},
    {"TOKENWATCH_PROTECT", "--protect", " none ", {"none"}, NULL},
    {"TOKENWATCH_PROTECT", NULL, "stage ,\tprod", {"stage", "prod"}, NULL},
    {"TOKENWATCH_PROTECT", "--protect", "prod,, live", {NULL}, "item 2 of the list is empty"},
    {"TOKENWATCH_SHARD_URI", "--shard-uri", " s0=mongodb://a:1/ \t s1=mongodb://b:2/ ",
     {"s0=mongodb://a:1/", "s1=mongodb://b:2/"}, NULL},
};

static char **list_field(tw_settings_t *s, const char *env, size_t *count)
{
    if (strcmp(env, "TOKENWATCH_GUARD") == 0) {
        *count = s->guard_count;
        return s->guard;
    }
    if (strcmp(env, "TOKENWATCH_PROTECT") == 0) {
        *count = s->protect_count;
        return s->protect;
    }
    *count = s->shard_uri_count;
    return s->shard_uri;
}

static void expect_list(size_t k, bool ok, tw_settings_t *s, const tw_error_t *err,
                        const char *source)
{
    size_t want = 0, count;
    char **items;

    while (want < 3 && list_cases[k].items[want])
        want++;
    cr_expect_eq(ok, want > 0, "case %zu (%s) '%s': %s", k, source, list_cases[k].value,
                 ok ? "accepted" : err->message);
    if (!ok) {
        cr_expect(strstr(err->message, list_cases[k].error) != NULL, "case %zu (%s): %s", k,
                  source, err->message);
        return;
    }
    items = list_field(s, list_cases[k].env, &count);
    cr_expect_eq(count, want, "case %zu (%s): %zu items", k, source, count);
    for (size_t n = 0; n < count && n < want; n++)
        cr_expect_str_eq(items[n], list_cases[k].items[n], "case %zu (%s) item %zu", k, source,
                         n);
}

Test(settings, list_items_are_trimmed_and_empty_ones_refused)
{
    for (size_t k = 0; k < sizeof list_cases / sizeof list_cases[0]; k++) {
        char env_entry[256];
        const char *envp[] = {env_entry, NULL};
        const char *none[] = {NULL};
        const char *argv[] = {list_cases[k].flag, list_cases[k].value, NULL};
        tw_settings_t s;
        tw_error_t err;
        bool ok;

        tw_error_clear(&err);
        snprintf(env_entry, sizeof env_entry, "%s=%s", list_cases[k].env, list_cases[k].value);
        if (list_cases[k].flag)
            ok = load(&s, argv, 2, none, &err);
        else
            ok = load(&s, NULL, 0, envp, &err);
        expect_list(k, ok, &s, &err, list_cases[k].flag ? "flag" : "environment");
        tw_settings_release(&s);
        /* The config file takes the value literally: the same list. */
        memset(&s, 0, sizeof s);
        tw_error_clear(&err);
        ok = tw_settings_load_text(&s, "t.env", env_entry, strlen(env_entry), &err);
        expect_list(k, ok, &s, &err, "config file");
        tw_settings_release(&s);
    }
}

/* Every way a secret-bearing value can be refused: the message names the
 * setting and never holds the secret. */
Test(settings, refused_secrets_never_reach_the_message)
{
    static const struct {
        const char *flag;
        const char *value;
        const char *secret;
    } cases[] = {
        {"--mongo-uri", "mongodb://cdc:M0ngo/Passw0rd@host/", "Passw0rd"},
        {"--mongo-uri", "mongodb://cdc:Pw@h/?tlsCertificateKeyFilePassword=K3yPw&bogus=%%",
         "K3yPw"},
        {"--mongo-uri", "cdc:NoScheme@host", "NoScheme"},
        {"--shard-uri", "shard0=mongodb://tw:Sh4rd/pw@a:1/", "Sh4rd"},
        {"--shard-uri", "mongodb://tw:Sh4rd/pw@a:1/", "Sh4rd"},
        {"--shard-uri", "=mongodb://tw:Sh4rd/pw@a:1/", "Sh4rd"},
        {"--redis-url", "redis://app:R3/dis@h/0", "R3/d"},
        {"--redis-url", "redis://app:12/R3dis@h/0", "R3dis"},
        {"--redis-url", "redis://:R3dis@h:99999/0", "R3dis"},
        {"--redis-url", "unix:///run/redis.sock?password=R3dis", "R3dis"},
        {"--redis-url", "redis://h/0?password=R3dis", "R3dis"},
        {"-mongo-uri=mongodb://cdc:Typo@h/", NULL, "Typo"},
    };
    const char *envp[] = {NULL};

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const char *argv[] = {cases[k].flag, cases[k].value};
        tw_settings_t s;
        tw_error_t err;
        bool ok = load(&s, argv, cases[k].value ? 2 : 1, envp, &err);

        cr_expect_not(ok, "case %zu accepted", k);
        if (!ok)
            cr_expect(strstr(err.message, cases[k].secret) == NULL, "case %zu: %s", k,
                      err.message);
        tw_settings_release(&s);
    }
}

/* Issue 9, "input that is accepted but wrong": each of these must be refused
 * with a message that names the setting and says what is wrong. */
static void write_config_bytes(const char *bytes, size_t len)
{
    FILE *f;

    snprintf(config_path, sizeof config_path, "/tmp/tw-settings-XXXXXX");
    close(mkstemp(config_path));
    f = fopen(config_path, "w");
    cr_assert(f);
    cr_assert_eq(fwrite(bytes, 1, len, f), len);
    fclose(f);
}

static const struct {
    const char *flag;
    const char *value;
    const char *must_name[2];
} wrong_cases[] = {
    {"--config", "/tmp", {"--config", "directory"}},
    {"--warn-at", "0x10%", {"--warn-at", "0x10%"}},
    {"--warn-at", "1e1%", {"--warn-at", "1e1%"}},
    {"--warn-at", "+5%", {"--warn-at", "share"}},
    {"--warn-at", " 5%", {"--warn-at", "share"}},
    {"--warn-at", "5.%", {"--warn-at", "share"}},
    {"--warn-at", ".5%", {"--warn-at", "share"}},
    {"--crit-at", "inf%", {"--crit-at", "share"}},
    {"--crit-at", "nan%", {"--crit-at", "share"}},
    {"--crit-at", "5 %", {"--crit-at", "share"}},
    {"--monitor-interval", "0x10s", {"--monitor-interval", "duration"}},
    {"--monitor-interval", "1e3ms", {"--monitor-interval", "duration"}},
    {"--monitor-interval", "+5s", {"--monitor-interval", "duration"}},
    {"--monitor-interval", " 5s", {"--monitor-interval", "duration"}},
    {"--checkpoint-every", "0x10", {"--checkpoint-every", "whole number"}},
    {"--checkpoint-every", "1e3", {"--checkpoint-every", "whole number"}},
    {"--guard", " ", {"--guard", "empty"}},
    {"--guard", "a,,b", {"--guard", "empty"}},
    {"--guard", "a, ,b", {"--guard", "empty"}},
    {"--guard", ",a", {"--guard", "empty"}},
    {"--guard", "a,", {"--guard", "empty"}},
    {"--redis-url", "redis:///0", {"--redis-url", "host"}},
    {"--redis-url", "redis://h:6379/0?db=1", {"--redis-url", "?db=N"}},
    {"--redis-url", "redis://h:6379/0#frag", {"--redis-url", "fragment"}},
    {"--redis-url", "unix:///", {"--redis-url", "names a directory"}},
    {"--resume-from", "2026-11-21T05:00:00+99:99", {"--resume-from", "offset"}},
    {"--slack-webhook-file", "/nonexistent/webhook", {"--slack-webhook-file", "/nonexistent/webhook"}},
    {"--slack-webhook-file", "/tmp", {"--slack-webhook-file", "/tmp"}},
    {"--redis-password-file", "/nonexistent/pw", {"--redis-password-file", "/nonexistent/pw"}},
    {"--redis-password-file", "/tmp", {"--redis-password-file", "/tmp"}},
};

Test(settings, accepted_but_wrong_input_is_refused)
{
    const char *envp[] = {NULL};

    for (size_t k = 0; k < sizeof wrong_cases / sizeof wrong_cases[0]; k++) {
        const char *argv[] = {wrong_cases[k].flag, wrong_cases[k].value, NULL};
        tw_settings_t s;
        tw_error_t err;

        memset(&err, 0, sizeof err);
        cr_expect_not(load(&s, argv, 2, envp, &err), "%s '%s' accepted", argv[0], argv[1]);
        for (size_t n = 0; n < 2; n++)
            cr_expect(strstr(err.message, wrong_cases[k].must_name[n]) != NULL,
                      "%s '%s': '%s' does not name '%s'", argv[0], argv[1], err.message,
                      wrong_cases[k].must_name[n]);
        tw_settings_release(&s);
    }
}

Test(settings, a_config_directory_from_the_environment_is_refused)
{
    const char *envp[] = {"TOKENWATCH_CONFIG=/tmp", NULL};
    tw_settings_t s;
    tw_error_t err;

    cr_expect_not(load(&s, NULL, 0, envp, &err));
    cr_expect(strstr(err.message, "TOKENWATCH_CONFIG") != NULL, "%s", err.message);
    cr_expect(strstr(err.message, "directory") != NULL, "%s", err.message);
    tw_settings_release(&s);
}

Test(settings, a_nul_byte_in_a_config_value_is_refused, .fini = remove_config)
{
    static const char text[] = "TOKENWATCH_NAME=ab\0cd\n";
    const char *envp[] = {NULL};
    char flag[96];
    const char *argv[] = {flag, NULL};
    tw_settings_t s;
    tw_error_t err;

    write_config_bytes(text, sizeof text - 1);
    snprintf(flag, sizeof flag, "--config=%s", config_path);
    cr_expect_not(load(&s, argv, 1, envp, &err), "name read as '%s'", s.name);
    cr_expect(strstr(err.message, "TOKENWATCH_NAME") != NULL, "%s", err.message);
    cr_expect(strstr(err.message, "line 1") != NULL, "%s", err.message);
    cr_expect(strstr(err.message, "NUL") != NULL, "%s", err.message);
    tw_settings_release(&s);
}

/* A byte order mark (Windows editors write one) is refused, naming the file
 * and what to do: it is not skipped, nor read as part of the first key. */
Test(settings, a_utf8_bom_at_the_start_of_the_config_file_is_refused, .fini = remove_config)
{
    const char *envp[] = {NULL};
    char flag[96];
    const char *argv[] = {flag, NULL};
    tw_settings_t s;
    tw_error_t err;

    write_config("\xEF\xBB\xBFTOKENWATCH_NAME=bom\nTOKENWATCH_ENVIRONMENT=stage\n");
    snprintf(flag, sizeof flag, "--config=%s", config_path);
    cr_expect_not(load(&s, argv, 1, envp, &err), "name read as '%s'", s.name);
    cr_expect_eq(err.domain, TW_ERR_USAGE);
    cr_expect(strstr(err.message, config_path) != NULL, "%s", err.message);
    cr_expect(strstr(err.message, "starts with a UTF-8 byte order mark") != NULL, "%s",
              err.message);
    cr_expect(strstr(err.message, "save it without one") != NULL, "%s", err.message);
    tw_settings_release(&s);
    /* Only at the start: a BOM on a later line is a key of its own. */
    remove_config();
    write_config("TOKENWATCH_NAME=bom\n\xEF\xBB\xBFTOKENWATCH_ENVIRONMENT=stage\n");
    snprintf(flag, sizeof flag, "--config=%s", config_path);
    cr_expect_not(load(&s, argv, 1, envp, &err));
    cr_expect(strstr(err.message, "line 2") != NULL, "%s", err.message);
    tw_settings_release(&s);
}

/* The webhook file is read with the settings, so a bad one is a usage error
 * (exit 2) naming the file; its content is never quoted. */
Test(settings, a_bad_slack_webhook_file_is_refused_naming_it, .fini = remove_config)
{
    static const char *const contents[] = {"", "\n", "https://hooks.example/a\nhttps://hooks.example/b\n",
                                           "not a url S3cret\n"};
    const char *envp[] = {NULL};

    for (size_t k = 0; k < sizeof contents / sizeof contents[0]; k++) {
        const char *argv[] = {"--slack-webhook-file", config_path, NULL};
        tw_settings_t s;
        tw_error_t err;

        write_config(contents[k]);
        cr_expect_not(load(&s, argv, 2, envp, &err), "case %zu accepted", k);
        cr_expect(strstr(err.message, "--slack-webhook-file") != NULL, "%s", err.message);
        cr_expect(strstr(err.message, config_path) != NULL, "%s", err.message);
        cr_expect(strstr(err.message, "hooks.example") == NULL, "%s", err.message);
        cr_expect(strstr(err.message, "S3cret") == NULL, "%s", err.message);
        tw_settings_release(&s);
        remove_config();
    }
}

Test(settings, a_good_slack_webhook_file_is_read_once_at_load, .fini = remove_config)
{
    const char *envp[] = {NULL};
    const char *argv[] = {"--slack-webhook-file", config_path, NULL};
    tw_settings_t s;
    tw_error_t err;

    write_config("https://hooks.slack.com/services/T/B/x\n");
    cr_assert(load(&s, argv, 2, envp, &err), "%s", err.message);
    cr_expect_str_eq(s.slack_webhook, "https://hooks.slack.com/services/T/B/x");
    tw_settings_release(&s);
}

/* Read with the settings too (it was read only when Redis was reached, so a
 * bad file ended `run` with exit 1 and passed unnoticed elsewhere). */
Test(settings, a_bad_redis_password_file_is_refused_naming_it, .fini = remove_config)
{
    static const char *const contents[] = {"", " \n", "Pw0ne\nPwTw0\n", "a\0b\n"};
    static const size_t lens[] = {0, 2, 12, 4};
    const char *envp[] = {NULL};

    for (size_t k = 0; k < sizeof contents / sizeof contents[0]; k++) {
        const char *argv[] = {"--redis-password-file", config_path, NULL};
        char env_entry[128];
        const char *env_only[] = {env_entry, NULL};
        tw_settings_t s;
        tw_error_t err;

        write_config_bytes(contents[k], lens[k]);
        cr_expect_not(load(&s, argv, 2, envp, &err), "case %zu accepted", k);
        cr_expect(strstr(err.message, "--redis-password-file") != NULL, "%s", err.message);
        cr_expect(strstr(err.message, config_path) != NULL, "%s", err.message);
        cr_expect(strstr(err.message, "Pw0ne") == NULL && strstr(err.message, "PwTw0") == NULL,
                  "%s", err.message); /* the content, not the random file name */
        cr_expect_null(s.redis_password, "case %zu", k);
        tw_settings_release(&s);
        snprintf(env_entry, sizeof env_entry, "TOKENWATCH_REDIS_PASSWORD_FILE=%s", config_path);
        cr_expect_not(load(&s, NULL, 0, env_only, &err), "case %zu accepted", k);
        cr_expect(strstr(err.message, "TOKENWATCH_REDIS_PASSWORD_FILE") != NULL, "%s",
                  err.message);
        tw_settings_release(&s);
        remove_config();
    }
}

Test(settings, a_good_redis_password_file_is_read_once_at_load, .fini = remove_config)
{
    const char *envp[] = {NULL};
    const char *argv[] = {"--redis-url", "redis://app@cache/0", "--redis-password-file",
                          config_path, NULL};
    tw_settings_t s;
    tw_error_t err;

    write_config("  s3cret-pw \n");
    cr_assert(load(&s, argv, 4, envp, &err), "%s", err.message);
    cr_expect_str_eq(s.redis_password, "s3cret-pw");
    tw_settings_release(&s);
}

Test(settings, good_lists_and_limits_still_load)
{
    const char *envp[] = {NULL};
    const char *argv[] = {"--guard", "a,b", "--warn-at", "12.5%", "--crit-at", "0%", NULL};
    tw_settings_t s;
    tw_error_t err;

    cr_assert(load(&s, argv, 6, envp, &err), "%s", err.message);
    cr_expect_eq(s.guard_count, 2);
    cr_expect_float_eq(s.warn_at.share, 0.125, 1e-9);
    tw_settings_release(&s);
}

Test(settings, a_redis_user_needs_a_password, .fini = remove_config)
{
    const char *envp[] = {NULL};
    const char *argv[] = {"--redis-url", "redis://app@cache/0", NULL};
    const char *with_file[] = {"--redis-url", "redis://app@cache/0", "--redis-password-file",
                               config_path, NULL};
    tw_settings_t s;
    tw_error_t err;

    write_config("pw\n");
    cr_expect_not(load(&s, argv, 2, envp, &err));
    cr_expect(strstr(err.message, "--redis-url") != NULL, "%s", err.message);
    cr_expect(strstr(err.message, "password") != NULL, "%s", err.message);
    tw_settings_release(&s);
    cr_expect(load(&s, with_file, 4, envp, &err), "%s", err.message);
    tw_settings_release(&s);
}

/* The config file parser without a file (tw_settings_load_text). */
static const struct {
    const char *text;
    size_t len; /* 0: strlen */
    bool ok;
    const char *name;  /* the name after, when ok */
    const char *error; /* a substring of the message, when not */
} text_cases[] = {
    {"TOKENWATCH_NAME=orders\n", 0, true, "orders", NULL},
    {"TOKENWATCH_NAME=crlf\r\n", 0, true, "crlf", NULL},
    {"TOKENWATCH_NAME=no-newline", 0, true, "no-newline", NULL},
    {"  # comment\n\n   \nTOKENWATCH_NAME=after-blank\n", 0, true, "after-blank", NULL},
    {"TOKENWATCH_NAME=a=b\n", 0, false, NULL, "'a=b' is not a valid name"}, /* first = */
    {"", 0, true, NULL, NULL},
    {"\n\nNOPE\n", 0, false, NULL, "line 3: expected KEY=VALUE"},
    {"TOKENWATCH_NOPE=1\n", 0, false, NULL, "line 1: unknown key TOKENWATCH_NOPE"},
    {"TOKENWATCH_CONFIG=/x\n", 0, false, NULL, "unknown key TOKENWATCH_CONFIG"},
    {"TOKENWATCH_NAME=a\0b\n", 20, false, NULL, "line 1: contains a NUL byte"},
};

Test(settings, parses_config_text_from_a_buffer)
{
    for (size_t k = 0; k < sizeof text_cases / sizeof text_cases[0]; k++) {
        tw_settings_t s;
        tw_error_t err;
        size_t len = text_cases[k].len ? text_cases[k].len : strlen(text_cases[k].text);
        bool ok;

        memset(&s, 0, sizeof s);
        tw_error_clear(&err);
        ok = tw_settings_load_text(&s, "t.env", text_cases[k].text, len, &err);
        cr_expect_eq(ok, text_cases[k].ok, "case %zu: %s", k, err.message);
        if (ok && text_cases[k].name)
            cr_expect_str_eq(s.name, text_cases[k].name, "case %zu", k);
        if (!ok && text_cases[k].error)
            cr_expect(strstr(err.message, text_cases[k].error) != NULL,
                      "case %zu: %s", k, err.message);
        tw_settings_release(&s);
    }
}

/*
 * Issue 10: secrets are zeroed before their memory is given back. The unit
 * binary is linked with -Wl,--wrap=tw_secret_free (Makefile), so every call
 * lands here first and the test can list what went through the wipe.
 */
void __real_tw_secret_free(char *secret);
void __wrap_tw_secret_free(char *secret);

#define WIPED_MAX 64
static char *wiped[WIPED_MAX];
static size_t wiped_count;

void __wrap_tw_secret_free(char *secret)
{
    if (secret && wiped_count < WIPED_MAX)
        wiped[wiped_count++] = strdup(secret);
    __real_tw_secret_free(secret);
}

static bool was_wiped(const char *secret)
{
    for (size_t k = 0; k < wiped_count; k++)
        if (strcmp(wiped[k], secret) == 0)
            return true;
    return false;
}

static void temp_file(char path[64], const char *text)
{
    FILE *f;

    snprintf(path, 64, "/tmp/tw-secret-XXXXXX");
    close(mkstemp(path));
    f = fopen(path, "w");
    cr_assert(f);
    fputs(text, f);
    fclose(f);
}

/* A value for every secret setting of the table, and what each leaves in
 * tw_settings_t that must be wiped. */
static const struct {
    const char *env;
    const char *value;
    const char *kept[2];
} secret_cases[] = {
    {"TOKENWATCH_MONGO_URI", "mongodb://tw:MongoPw1@db1/?replicaSet=rs0",
     {"mongodb://tw:MongoPw1@db1/?replicaSet=rs0"}},
    {"TOKENWATCH_REDIS_URL", "redis://app:RedisPw1@cache:6379/0",
     {"redis://app:RedisPw1@cache:6379/0"}},
    {"TOKENWATCH_SHARD_URI",
     "shard0=mongodb://tw:ShardPw1@a:1/?replicaSet=shard0 "
     "shard1=mongodb://tw:ShardPw2@b:2/?replicaSet=shard1",
     {"shard0=mongodb://tw:ShardPw1@a:1/?replicaSet=shard0",
      "shard1=mongodb://tw:ShardPw2@b:2/?replicaSet=shard1"}},
    {"TOKENWATCH_SLACK_WEBHOOK", "https://hooks.slack.com/services/T/B/HookEnv1",
     {"https://hooks.slack.com/services/T/B/HookEnv1"}},
    {"TOKENWATCH_WEBHOOK_URL", "https://bots.example.com/hook/JsonEnv4",
     {"https://bots.example.com/hook/JsonEnv4"}},
    {"TOKENWATCH_PAGERDUTY_ROUTING_KEY", "R0utingKeyEnv5", {"R0utingKeyEnv5"}},
    {"TOKENWATCH_HEARTBEAT_URL", "https://hc-ping.com/BeatEnv6", {"https://hc-ping.com/BeatEnv6"}},
};

Test(settings, release_wipes_every_secret_value)
{
    char config[64], webhook[64], password[64];
    char env[sizeof secret_cases / sizeof secret_cases[0] + 1][256];
    const char *envp[sizeof env / sizeof env[0] + 1] = {NULL};
    const char *argv[] = {"--config", config, "--slack-webhook-file", webhook,
                          "--redis-password-file", password};
    size_t n = sizeof secret_cases / sizeof secret_cases[0];
    tw_settings_t s;
    tw_error_t err;

    /* Every secret setting of the table has a case here. */
    for (size_t k = 0; k < tw_settings_count(); k++) {
        bool covered = false;

        if (!tw_settings_is_secret(k))
            continue;
        for (size_t c = 0; c < n; c++)
            covered = covered || strcmp(tw_settings_env_name(k), secret_cases[c].env) == 0;
        cr_expect(covered, "secret setting %s has no case", tw_settings_env_name(k));
    }
    for (size_t c = 0; c < n; c++) {
        snprintf(env[c], sizeof env[c], "%s=%s", secret_cases[c].env, secret_cases[c].value);
        envp[c] = env[c];
    }
    /* Copies the settings make: a file value the environment replaces, the
     * webhook and the password read from their files. */
    temp_file(config, "TOKENWATCH_MONGO_URI=mongodb://tw:FilePw0@db0/?replicaSet=rs0\n");
    temp_file(webhook, "https://hooks.slack.com/services/T/B/HookFile2\n");
    temp_file(password, "RedisFilePw3\n");

    wiped_count = 0;
    memset(&s, 0, sizeof s);
    cr_assert(tw_settings_load(&s, 6, argv, envp, &err), "%s", err.message);
    tw_settings_release(&s);
    unlink(config);
    unlink(webhook);
    unlink(password);

    for (size_t c = 0; c < n; c++)
        for (size_t k = 0; k < 2 && secret_cases[c].kept[k]; k++)
            cr_expect(was_wiped(secret_cases[c].kept[k]), "%s: %s freed without a wipe",
                      secret_cases[c].env, secret_cases[c].kept[k]);
    cr_expect(was_wiped("mongodb://tw:FilePw0@db0/?replicaSet=rs0"),
              "the config file's Mongo URI, replaced, freed without a wipe");
    cr_expect(was_wiped("https://hooks.slack.com/services/T/B/HookFile2"),
              "the webhook read from its file freed without a wipe");
    cr_expect(was_wiped("RedisFilePw3"), "the Redis password freed without a wipe");
    for (size_t k = 0; k < wiped_count; k++)
        free(wiped[k]);
}

/* settings.c stays pure: the checks that need a library live in checks.c,
 * so the table can be loaded and tested without curl, libmongoc, metrics,
 * HTTP or Redis. */
Test(settings, the_table_includes_no_library_of_io)
{
    static const char *const banned[] = {"<curl/", "<mongoc/", "<hiredis/", "<microhttpd",
                                         "tokenwatch/metrics.h", "tokenwatch/http.h",
                                         "tokenwatch/redis.h", "tokenwatch/webhook.h",
                                         "tokenwatch/shards.h"};
    char path[512], line[512];
    FILE *f;

    snprintf(path, sizeof path, "%s/src/settings.c", TW_SOURCE_DIR);
    f = fopen(path, "r");
    cr_assert(f, "%s", path);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "#include", 8) == 0)
            for (size_t k = 0; k < sizeof banned / sizeof banned[0]; k++)
                cr_expect(strstr(line, banned[k]) == NULL, "settings.c: %s", line);
    fclose(f);
}
