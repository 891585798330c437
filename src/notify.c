#include "tokenwatch/notify.h"

#include <string.h>

#include "tokenwatch/log.h"

void tw_notify_list_init(tw_notify_list_t *list, tw_metrics_t *metrics)
{
    memset(list, 0, sizeof *list);
    list->metrics = metrics;
}

bool tw_notify_add(tw_notify_list_t *list, const char *name,
                   char *(*payload)(const tw_alert_t *a), tw_slack_t *sender)
{
    if (!sender)
        return true;
    if (list->count == TW_CHANNELS_MAX)
        return false;
    list->channels[list->count].name = name;
    list->channels[list->count].payload = payload;
    list->channels[list->count].sender = sender;
    list->count++;
    return true;
}

void tw_notify_list_slack(tw_notify_list_t *list, tw_metrics_t *metrics, tw_slack_t *slack)
{
    tw_notify_list_init(list, metrics);
    tw_notify_add(list, "Slack", tw_alert_slack_payload, slack);
}

bool tw_notify_any(const tw_notify_list_t *list)
{
    return list && list->count > 0;
}

size_t tw_notify(const tw_notify_list_t *list, const tw_alert_t *a, const char *summary)
{
    size_t took = 0;

    for (size_t k = 0; list && k < list->count; k++) {
        const tw_channel_t *c = &list->channels[k];
        char *payload = c->payload(a);

        if (!payload) {
            /* Never skipped in silence: logged and counted. */
            TW_ERROR("the %s alert '%s' could not be built (is some text in it not "
                     "UTF-8?): it is NOT sent; counted in tokenwatch_records_failed_total",
                     c->name, summary);
            tw_metrics_add(list->metrics, "tokenwatch_records_failed_total", NULL, 1);
            continue;
        }
        tw_slack_enqueue(c->sender, payload, summary);
        bson_free(payload);
        took++;
    }
    return took;
}
