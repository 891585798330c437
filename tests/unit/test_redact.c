/*
 * tw_redact_url: every secret-bearing form of a connection string, with the
 * exact text that may be shown and the secret that must not be.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "tokenwatch/redact.h"

static const struct {
    const char *in;
    const char *out;
    const char *secret; /* NULL: nothing to hide */
} cases[] = {
    /* MongoDB: a password may hold '/', '@', ':' and escapes. */
    {"mongodb://cdc:M0ngo/Passw0rd@host/", "mongodb://cdc:***@host/", "Passw0rd"},
    {"mongodb://cdc:p@ss:w/rd@h1:27017/?replicaSet=rs0",
     "mongodb://cdc:***@h1:27017/?replicaSet=rs0", "ss:w/rd"},
    {"mongodb://cdc:pa%2Fss%40wd@h1:27017,h2:27018,h3/?replicaSet=rs0",
     "mongodb://cdc:***@h1:27017,h2:27018,h3/?replicaSet=rs0", "pa%2Fss"},
    {"mongodb+srv://cdc:Srv/P@ss@cluster0.example.net/shop?retryWrites=true",
     "mongodb+srv://cdc:***@cluster0.example.net/shop?retryWrites=true", "Srv/P"},
    {"mongodb://cdc:@h/", "mongodb://cdc:***@h/", NULL},
    {"mongodb://cdc@h1/?authSource=admin", "mongodb://cdc@h1/?authSource=admin", NULL},
    {"mongodb://h1:27017,h2:27018/?replicaSet=rs0",
     "mongodb://h1:27017,h2:27018/?replicaSet=rs0", NULL},
    {"mongodb://cdc:V6pw@[::1]:27017,[fe80::1%25eth0]:27018/?replicaSet=rs0",
     "mongodb://cdc:***@[::1]:27017,[fe80::1%25eth0]:27018/?replicaSet=rs0", "V6pw"},
    {"mongodb://[::1]:27017/", "mongodb://[::1]:27017/", NULL},
    /* A password with an unescaped '?' or '#' (libmongoc refuses it, and
     * then the error shows it): still hidden. */
    {"mongodb://cdc:Qu?est@h/", "mongodb://cdc:***@h/", "est"},
    {"mongodb://cdc:Ha#sh@h/", "mongodb://cdc:***@h/", "sh"},
    /* Query secrets, keys in any case, '&' or ';' between options. */
    {"mongodb://h/?tls=true&tlsCertificateKeyFilePassword=K3yPw&replicaSet=rs0",
     "mongodb://h/?tls=true&tlsCertificateKeyFilePassword=***&replicaSet=rs0", "K3yPw"},
    {"mongodb://u:P4ss@h/?PASSWORD=Q1&Secret=Q2&apiToken=Q3&w=1",
     "mongodb://u:***@h/?PASSWORD=***&Secret=***&apiToken=***&w=1", "Q"},
    {"mongodb://h/?authMechanism=MONGODB-AWS&authMechanismProperties="
     "AWS_SESSION_TOKEN:FQoGZXIvYXdz,SERVICE_NAME:x",
     "mongodb://h/?authMechanism=MONGODB-AWS&authMechanismProperties=***", "FQoG"},
    {"mongodb://u:pw1@h/db?w=majority;password=Q4#frag",
     "mongodb://u:***@h/db?w=majority;password=***#frag", "Q4"},
    {"mongodb://h/?pass%77ord=Q5", "mongodb://h/?pass%77ord=***", "Q5"},
    {"mongodb://h/?password=", "mongodb://h/?password=***", NULL},
    {"mongodb://h/?pass%00word=Q6", "mongodb://h/?pass%00word=***", "Q6"},
    /* Redis: user:password, password only, TLS, query, unix socket. */
    {"redis://:R3dis@h:6379/0", "redis://:***@h:6379/0", "R3dis"},
    {"redis://app:R3/dis@h/0", "redis://app:***@h/0", "R3/dis"},
    {"rediss://app:R3dis@h:6380/1", "rediss://app:***@h:6380/1", "R3dis"},
    {"redis://h:6379/0?password=R3dis", "redis://h:6379/0?password=***", "R3dis"},
    {"unix:///run/redis.sock?db=1&password=R3dis", "unix:///run/redis.sock?db=1&password=***",
     "R3dis"},
    {"unix:///run/redis.sock", "unix:///run/redis.sock", NULL},
    /* Not a URL at all: a userinfo is still a userinfo. */
    {"cdc:NoScheme@host", "cdc:***@host", "NoScheme"},
    {"shard0=mongodb://tw:Sh/rd@a:1/", "shard0=mongodb:***@a:1/", "Sh/rd"},
    {"https://hooks.example/x", "https://hooks.example/x", NULL},
    {"", "", NULL},
};

Test(redact, hides_every_secret_bearing_form)
{
    char out[512];

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        tw_redact_url(cases[k].in, out, sizeof out);
        cr_expect_str_eq(out, cases[k].out, "case %zu: %s", k, cases[k].in);
        if (cases[k].secret)
            cr_expect(strstr(out, cases[k].secret) == NULL, "case %zu leaks: %s", k, out);
    }
}

Test(redact, caps_output_and_never_cuts_a_character)
{
    static const struct {
        const char *in;
        size_t size;
        const char *out;
    } capped[] = {
        {"mongodb://h/?appName=a\xc3\xa9z", 24, "mongodb://h/?appName=a"},
        {"mongodb://h/?appName=a\xc3\xa9z", 25, "mongodb://h/?appName=a\xc3\xa9"},
        {"mongodb://h/?appName=a\xe2\x82\xac", 25, "mongodb://h/?appName=a"},
        {"mongodb://u:pw@h", 8, "mongodb"},
        {"mongodb://u:Secret@h", 15, "mongodb://u:**"},
        {"mongodb://u:pw@h", 1, ""},
    };
    char out[64];

    for (size_t k = 0; k < sizeof capped / sizeof capped[0]; k++) {
        memset(out, 'X', sizeof out);
        tw_redact_url(capped[k].in, out, capped[k].size);
        cr_expect_str_eq(out, capped[k].out, "case %zu", k);
    }
    tw_redact_url(NULL, out, sizeof out);
    cr_expect_str_eq(out, "");
}

Test(redact, many_secret_options_are_all_hidden)
{
    char in[4096] = "mongodb://h/?";
    char out[8192];

    for (int k = 0; k < 100; k++) {
        char opt[32];
        snprintf(opt, sizeof opt, "%stoken%d=Tk%d", k ? "&" : "", k, k);
        strcat(in, opt);
    }
    tw_redact_url(in, out, sizeof out);
    cr_expect(strstr(out, "=Tk") == NULL, "%s", out);
    cr_expect(strncmp(out, "mongodb://h/?token0=***", 23) == 0, "%s", out);
}

/* tw_redact_endpoint: a webhook or heartbeat URL reduced to scheme, host
 * and port (moved here from the Slack sender's tests when the redaction of
 * every secret became one module). */
Test(redact, endpoints_show_scheme_host_and_port)
{
    static const struct {
        const char *url;
        const char *shown;
    } ecases[] = {
        {"https://hooks.slack.com/services/T0/B0/XXXX",
         "https://hooks.slack.com/\xe2\x80\xa6"},
        {"http://127.0.0.1:8080/services/T0/B0/XXXX?x=1",
         "http://127.0.0.1:8080/\xe2\x80\xa6"},
        {"https://user:pw@hooks.example.com/x", "https://hooks.example.com/\xe2\x80\xa6"},
        {"https://[::1]:9/services/x", "https://[::1]:9/\xe2\x80\xa6"},
        {"not a url /services/T0/B0/XXXX", "\xe2\x80\xa6"},
        {"", "\xe2\x80\xa6"},
        {NULL, "\xe2\x80\xa6"},
        /* Added with the generic channels. */
        {"HTTPS://hc-ping.com/5f1c0a2e-SECRET?rid=1", "https://hc-ping.com/\xe2\x80\xa6"},
        {"https://events.pagerduty.com/v2/enqueue",
         "https://events.pagerduty.com/\xe2\x80\xa6"},
        {"https://example.com?token=SECRET", "https://example.com/\xe2\x80\xa6"},
        {"https://hooks slack.com/SECRET", "\xe2\x80\xa6"},
        {"https://h:99x/SECRET", "\xe2\x80\xa6"},
        {"https://:443/SECRET", "\xe2\x80\xa6"},
    };
    char out[128];
    char tiny[27]; /* "https://hooks.slack.com/" and 2 of the 3 bytes of … */

    for (size_t k = 0; k < sizeof ecases / sizeof ecases[0]; k++) {
        tw_redact_endpoint(ecases[k].url, out, sizeof out);
        cr_expect_str_eq(out, ecases[k].shown, "case %zu", k);
        cr_expect_null(strstr(out, "SECRET"), "case %zu", k);
    }
    tw_redact_endpoint(ecases[0].url, tiny, sizeof tiny);
    cr_expect_str_eq(tiny, "https://hooks.slack.com/", "never half a character");
    tw_redact_endpoint(ecases[0].url, out, 0);
}

Test(redact, the_endpoint_secret_is_the_path_and_query)
{
    static const struct {
        const char *url;
        const char *secret;
    } ecases[] = {
        {"https://hooks.slack.com/services/T/B/X", "/services/T/B/X"},
        {"https://hc-ping.com/uuid?rid=1", "/uuid?rid=1"},
        {"https://example.com?token=x", "?token=x"},
        {"https://example.com", ""},
        {"https://u:p@h.example/x", "/x"},
    };

    for (size_t k = 0; k < sizeof ecases / sizeof ecases[0]; k++)
        cr_expect_str_eq(tw_redact_endpoint_secret(ecases[k].url), ecases[k].secret, "case %zu",
                         k);
    cr_expect_null(tw_redact_endpoint_secret(NULL));
}

Test(redact, scrub_cuts_text_where_a_secret_starts)
{
    static const struct {
        const char *text;
        const char *secret;
        const char *out;
        bool cut;
    } ecases[] = {
        {"HTTP 404 (no_service /services/T0/SECRET)", "/services/T0/SECRET",
         "HTTP 404 (no_service \xe2\x80\xa6", true},
        {"{\"message\":\"bad key R0utingK3y\"}", "R0utingK3y", "{\"message\":\"bad key \xe2\x80\xa6",
         true},
        {"nothing here", "R0utingK3y", "nothing here", false},
        {"a", "a", "a", false}, /* one byte is no secret to hunt for */
        {"abc", NULL, "abc", false},
    };

    for (size_t k = 0; k < sizeof ecases / sizeof ecases[0]; k++) {
        char buf[128];

        snprintf(buf, sizeof buf, "%s", ecases[k].text);
        cr_expect_eq(tw_redact_scrub(buf, sizeof buf, ecases[k].secret), ecases[k].cut,
                     "case %zu", k);
        cr_expect_str_eq(buf, ecases[k].out, "case %zu", k);
    }
    {
        /* No room for the ellipsis: just cut. */
        char small[8] = "ab/SECR";

        cr_expect(tw_redact_scrub(small, 4, "/SECR"));
        cr_expect_str_eq(small, "ab");
    }
}
