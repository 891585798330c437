/*
 * source_connect.c - a Kafka Connect connector's offsets over its REST API:
 * GET /connectors/{name}/offsets (KIP-875, Kafka 3.5+), with libcurl. The
 * URL may hold a login: it is used as given and only ever shown redacted.
 */
#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

#include "sources_int.h"
#include "tokenwatch/mem.h"
#include "tokenwatch/utf8.h"

typedef struct {
    char *data;
    size_t len;
    bool too_big;
} body_t;

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
    body_t *b = arg;
    size_t n = size * nmemb;

    if (b->len + n > TW_SOURCES_HTTP_MAX) {
        b->too_big = true;
        return 0; /* aborts the transfer */
    }
    b->data = tw_realloc(b->data, b->len + n + 1);
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

/* Connect's error body: {"error_code": 404, "message": "..."}. */
static void error_message(const body_t *b, char *out, size_t size)
{
    bson_t doc;
    bson_iter_t it;

    snprintf(out, size, "no message");
    if (!b->data || !bson_utf8_validate(b->data, b->len, false) ||
        !bson_init_from_json(&doc, b->data, (ssize_t)b->len, NULL))
        return;
    if (bson_iter_init_find(&it, &doc, "message") && BSON_ITER_HOLDS_UTF8(&it))
        tw_utf8_format(out, size, "%s", bson_iter_utf8(&it, NULL));
    bson_destroy(&doc);
}

static bool fetch(CURL *curl, const char *url, int64_t timeout_ms, body_t *b, long *status,
                  char *why, size_t size)
{
    CURLcode rc;

    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "tokenwatch");
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, b);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    rc = curl_easy_perform(curl);
    if (rc != CURLE_OK) {
        /* curl_easy_strerror names the failure, never the URL. */
        snprintf(why, size, "%s", b->too_big ? "the reply is over 8 MiB" : curl_easy_strerror(rc));
        return false;
    }
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, status);
    return true;
}

static void refused(tw_source_t *s, long status, const body_t *b, tw_positions_t *out)
{
    tw_position_t *p = tw_positions_add(out, s->shown, "", TW_CONSUMER_DEBEZIUM);
    char message[256];

    error_message(b, message, sizeof message);
    p->kind = TW_POSITION_BAD;
    tw_utf8_format(p->reason, sizeof p->reason, "Kafka Connect answered %ld: %s", status,
                   message);
}

bool tw_sources_read_connect(tw_source_t *s, int64_t timeout_ms, tw_positions_t *out,
                             tw_error_t *err)
{
    CURL *curl = curl_easy_init();
    size_t len = strlen(s->spec);
    char *url = tw_malloc(len + sizeof "/offsets");
    body_t body = {NULL, 0, false};
    char why[CURL_ERROR_SIZE];
    long status = 0;
    bool ok = false;

    memcpy(url, s->spec, len);
    memcpy(url + len, "/offsets", sizeof "/offsets");
    if (!curl) {
        tw_error_set(err, TW_ERR_HTTP, 0, "%s: cannot start libcurl", s->shown);
    } else if (!fetch(curl, url, timeout_ms > 0 ? timeout_ms : 5000, &body, &status, why,
                      sizeof why)) {
        tw_error_set(err, TW_ERR_HTTP, 0, "%s: %s", s->shown, why);
    } else if (status >= 400 && status < 500) {
        refused(s, status, &body, out); /* a connector unknown, a login refused: UNKNOWN at once */
        ok = true;
    } else if (status != 200) {
        tw_error_set(err, TW_ERR_HTTP, (int)status, "%s: Kafka Connect answered %ld", s->shown,
                     status);
    } else {
        ok = tw_consumers_connect_offsets(body.data ? body.data : "", body.len, s->shown, out,
                                          err);
        if (!ok)
            tw_error_prefix(err, "%s", s->shown);
    }
    free(body.data);
    free(url);
    curl_easy_cleanup(curl);
    return ok;
}
