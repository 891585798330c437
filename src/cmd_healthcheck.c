/*
 * cmd_healthcheck.c - `tokenwatch healthcheck`: the container HEALTHCHECK,
 * a GET of the running watcher's /healthz with libcurl.
 */
#include "tokenwatch/cmd_healthcheck.h"

#include <curl/curl.h>
#include <stdio.h>
#include <string.h>

#include "tokenwatch/http.h"
#include "tokenwatch/run.h"

static size_t discard_body(char *data, size_t size, size_t n, void *ctx)
{
    (void)data;
    (void)ctx;
    return size * n;
}

/*
 * The container HEALTHCHECK: asks the running watcher's /healthz, so the
 * image needs no curl. A wildcard listen address is reached on loopback.
 */
int tw_cmd_healthcheck(const tw_settings_t *s)
{
    char host[TW_HTTP_HOST_MAX], url[TW_HTTP_HOST_MAX + 32];
    tw_error_t err;
    int port;
    long status = 0;
    CURL *curl;
    CURLcode rc;

    if (strcmp(s->metrics_addr, "off") == 0) {
        fprintf(stderr, "tokenwatch healthcheck: --metrics-addr is off: nothing to ask\n");
        return TW_EXIT_USAGE;
    }
    if (!tw_http_parse_addr(s->metrics_addr, host, sizeof host, &port, &err)) {
        fprintf(stderr, "tokenwatch healthcheck: %s\n", err.message);
        return TW_EXIT_USAGE;
    }
    if (strcmp(host, "0.0.0.0") == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    else if (strcmp(host, "::") == 0)
        snprintf(host, sizeof host, "::1");
    snprintf(url, sizeof url, strchr(host, ':') ? "http://[%s]:%d/healthz" : "http://%s:%d/healthz",
             host, port);
    curl = curl_easy_init();
    if (!curl)
        return TW_EXIT_FAILURE;
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard_body);
    rc = curl_easy_perform(curl);
    if (rc == CURLE_OK)
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(curl);
    if (rc != CURLE_OK) {
        fprintf(stderr, "tokenwatch healthcheck: %s: %s\n", url, curl_easy_strerror(rc));
        return TW_EXIT_FAILURE;
    }
    if (status != 200) {
        fprintf(stderr, "tokenwatch healthcheck: %s answered %ld\n", url, status);
        return TW_EXIT_FAILURE;
    }
    printf("healthy\n");
    return TW_EXIT_OK;
}
