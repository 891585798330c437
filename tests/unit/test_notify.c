#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "tokenwatch/log.h"
#include "tokenwatch/notify.h"

static char *no_payload(const tw_alert_t *a)
{
    (void)a;
    return NULL;
}

/* Never dereferenced: a channel whose payload cannot be built is not sent. */
#define UNUSED_SENDER ((tw_slack_t *)(uintptr_t)0x1)

Test(notify, a_payload_that_cannot_be_built_is_counted_not_sent)
{
    tw_metrics_t *m = tw_metrics_new();
    tw_notify_list_t list;
    tw_alert_t a;

    memset(&a, 0, sizeof a);
    a.key = "tokenwatch:{x}:checkpoint";
    cr_assert(tw_metrics_declare(m, "tokenwatch_records_failed_total", TW_METRIC_COUNTER,
                                 "failed"));
    tw_notify_list_init(&list, m);
    cr_assert(tw_notify_add(&list, "Broken", no_payload, UNUSED_SENDER));
    cr_expect(tw_notify_any(&list));
    cr_expect_eq(tw_notify(&list, &a, "x WARN"), 0, "no channel took it");
    cr_expect_eq(tw_metrics_get(m, "tokenwatch_records_failed_total", NULL), 1.0);
    tw_metrics_free(m);
}

Test(notify, no_sender_no_channel_and_a_full_list_says_so)
{
    tw_notify_list_t list;

    tw_notify_list_slack(&list, NULL, NULL);
    cr_expect_not(tw_notify_any(&list), "no webhook: alerts are only logged");
    cr_expect_not(tw_notify_any(NULL));
    cr_expect_eq(tw_notify(NULL, NULL, "x"), 0);
    for (int k = 0; k < TW_CHANNELS_MAX; k++)
        cr_expect(tw_notify_add(&list, "c", no_payload, UNUSED_SENDER));
    cr_expect_not(tw_notify_add(&list, "one too many", no_payload, UNUSED_SENDER));
    cr_expect_eq(list.count, (size_t)TW_CHANNELS_MAX);
}
