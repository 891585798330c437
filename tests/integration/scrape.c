#include "scrape.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"

double fx_metric(int port, const char *series)
{
    long status;
    char *text = fx_http(port, "GET", "/metrics", NULL, &status);
    double value = NAN;
    size_t len = strlen(series);

    for (char *line = text; line && *line;) {
        char *end = strchr(line, '\n');

        if (strncmp(line, series, len) == 0 && line[len] == ' ')
            value = strtod(line + len + 1, NULL);
        if (!end)
            break;
        line = end + 1;
    }
    free(text);
    return value;
}

typedef struct {
    int port;
    const char *series;
    double want;
} metric_wait_t;

static bool metric_is(void *ctx)
{
    metric_wait_t *w = ctx;

    return fx_metric(w->port, w->series) == w->want;
}

bool fx_wait_metric(int port, const char *series, double want, int timeout_ms)
{
    metric_wait_t w = {port, series, want};

    return th_wait_until(metric_is, &w, timeout_ms);
}
