#include <criterion/criterion.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenwatch/metrics.h"
#include "tokenwatch/monitor.h"

/* config/prometheus-rules.yml may only use metrics tokenwatch declares. */
Test(rules, every_metric_in_the_alert_rules_exists)
{
    char path[512];
    FILE *f;
    char line[1024];
    tw_metrics_t *m = tw_metrics_new();
    char *rendered;
    int used = 0;

    tw_monitor_declare_metrics(m);
    rendered = tw_metrics_render(m);
    snprintf(path, sizeof path, "%s/config/prometheus-rules.yml", TW_SOURCE_DIR);
    f = fopen(path, "r");
    cr_assert(f, "%s", path);
    while (fgets(line, sizeof line, f)) {
        for (char *p = strstr(line, "tokenwatch_"); p; p = strstr(p + 1, "tokenwatch_")) {
            char name[128], type_line[160];
            size_t n = 0;

            while ((isalnum((unsigned char)p[n]) || p[n] == '_') && n < sizeof name - 1) {
                name[n] = p[n];
                n++;
            }
            name[n] = '\0';
            snprintf(type_line, sizeof type_line, "# TYPE %s ", name);
            cr_expect(strstr(rendered, type_line) != NULL, "%s uses undeclared %s", path, name);
            used++;
        }
    }
    fclose(f);
    cr_expect_gt(used, 5);
    free(rendered);
    tw_metrics_free(m);
}
