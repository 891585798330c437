/*
 * The one check of a webhook URL (tw_webhook_check_url), as a table, and
 * the places that use it: the settings load (--slack-webhook,
 * --webhook-url, --pagerduty-url, --heartbeat-url and their files) and the
 * sender (tw_webhook_start).
 */
#include <criterion/criterion.h>
#include <string.h>

#include "tokenwatch/settings.h"
#include "tokenwatch/webhook.h"

static const struct {
    const char *url;
    bool ok;
} url_cases[] = {
    {"https://hooks.slack.com/services/T0/B0/Sec", true},
    {"http://127.0.0.1:8080/services/T0/B0/Sec", true}, /* a local stand-in */
    {"http://hooks.example.com/services/Sec", true},    /* any host: not only loopback */
    {"HTTPS://hooks.slack.com/services/Sec", true},     /* the scheme in any case */
    {"https://user:Sec@hooks.slack.com/services/x", true},
    {"https://[::1]:8443/services/Sec", true},
    {"https://hooks.slack.com:443/services/Sec?x=1", true},
    {"https://hooks.slack.com", true},
    {"", false},
    {"https://", false},
    {"hooks.slack.com/services/Sec", false},
    {"//hooks.slack.com/services/Sec", false},
    {"https:hooks.slack.com/services/Sec", false},
    {"ftp://hooks.slack.com/services/Sec", false},
    {"file:///etc/Sec", false},
    {"ws://hooks.slack.com/services/Sec", false},
    {"mailto:Sec@hooks.slack.com", false},
    {"https://:443/services/Sec", false},           /* no host */
    {"https://user@/services/Sec", false},          /* no host */
    {"https://hooks.slack.com:99999/services/Sec", false},
    {"https://hooks slack.com/services/Sec", false},
    {"https://hooks.slack.com/services/Sec x", false},
    {"https://hooks.slack.com/services/Sec\n", false},
};

#define N_CASES (sizeof url_cases / sizeof url_cases[0])

Test(webhook, check_url_table)
{
    for (size_t k = 0; k < N_CASES; k++) {
        tw_error_t err;
        bool ok;

        tw_error_clear(&err);
        ok = tw_webhook_check_url(url_cases[k].url, &err);
        cr_expect_eq(ok, url_cases[k].ok, "case %zu '%s': %s", k, url_cases[k].url,
                     ok ? "accepted" : "refused");
        if (!ok) {
            cr_expect_eq(err.domain, TW_ERR_USAGE, "case %zu", k);
            cr_expect_gt(strlen(err.message), 0, "case %zu", k);
            cr_expect_null(strstr(err.message, "Sec"), "case %zu quotes the URL: %s", k,
                           err.message);
        }
    }
}

/* The settings load refuses exactly what the check refuses, and names the
 * setting: every setting that takes a webhook URL. */
static void settings_case(const char *flag)
{
    const char *envp[] = {NULL};

    for (size_t k = 0; k < N_CASES; k++) {
        const char *argv[] = {flag, url_cases[k].url, NULL};
        tw_settings_t s;
        tw_error_t err;
        bool ok;

        memset(&s, 0, sizeof s);
        tw_error_clear(&err);
        ok = tw_settings_load(&s, 2, argv, envp, &err);
        cr_expect_eq(ok, url_cases[k].ok, "case %zu '%s': settings %s", k,
                     url_cases[k].url, ok ? "accepted" : "refused");
        if (!ok) {
            cr_expect(strstr(err.message, flag) != NULL, "%s", err.message);
            cr_expect_null(strstr(err.message, "Sec"), "case %zu: %s", k, err.message);
        }
        tw_settings_release(&s);
    }
}

Test(webhook, settings_use_the_check)
{
    settings_case("--slack-webhook");
}

Test(webhook, every_url_setting_uses_the_check)
{
    settings_case("--webhook-url");
    settings_case("--pagerduty-url");
    settings_case("--heartbeat-url");
}

/* The sender refuses the same URLs before it sets anything up. */
Test(webhook, sender_uses_the_check)
{
    for (size_t k = 0; k < N_CASES; k++) {
        tw_webhook_opts_t o;
        tw_error_t err;

        if (url_cases[k].ok)
            continue;
        memset(&o, 0, sizeof o);
        o.url = url_cases[k].url;
        tw_error_clear(&err);
        cr_expect_null(tw_webhook_start(&o, &err), "case %zu '%s' accepted", k,
                       url_cases[k].url);
        cr_expect_eq(err.domain, TW_ERR_USAGE, "case %zu", k);
        cr_expect_null(strstr(err.message, "Sec"), "case %zu: %s", k, err.message);
    }
}
