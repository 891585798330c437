#include <criterion/criterion.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenwatch/metrics.h"
#include "tokenwatch/monitor.h"

/* Every tokenwatch_* name in config/NAME must be a metric tokenwatch declares;
 * returns how many names it found. */
static int expect_declared_metrics(const char *name)
{
    char path[512];
    FILE *f;
    char line[1024];
    tw_metrics_t *m = tw_metrics_new();
    char *rendered;
    int used = 0;

    tw_monitor_declare_metrics(m);
    rendered = tw_metrics_render(m);
    snprintf(path, sizeof path, "%s/config/%s", TW_SOURCE_DIR, name);
    f = fopen(path, "r");
    cr_assert(f, "%s", path);
    while (fgets(line, sizeof line, f)) {
        for (char *p = strstr(line, "tokenwatch_"); p; p = strstr(p + 1, "tokenwatch_")) {
            char metric[128], type_line[160];
            size_t n = 0;

            while ((isalnum((unsigned char)p[n]) || p[n] == '_') && n < sizeof metric - 1) {
                metric[n] = p[n];
                n++;
            }
            metric[n] = '\0';
            snprintf(type_line, sizeof type_line, "# TYPE %s ", metric);
            cr_expect(strstr(rendered, type_line) != NULL, "%s uses undeclared %s", path, metric);
            used++;
        }
    }
    fclose(f);
    free(rendered);
    tw_metrics_free(m);
    return used;
}

/* config/prometheus-rules.yml may only use metrics tokenwatch declares. */
Test(rules, every_metric_in_the_alert_rules_exists)
{
    cr_expect_gt(expect_declared_metrics("prometheus-rules.yml"), 5);
}

/* Their tests (promtool test rules, make deploy-check) feed only those too. */
Test(rules, every_metric_in_the_rule_tests_exists)
{
    cr_expect_gt(expect_declared_metrics("prometheus-rules.test.yml"), 20);
}
