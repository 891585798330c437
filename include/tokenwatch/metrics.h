/*
 * metrics.h - Prometheus metrics, liveness and readiness.
 *
 * A tw_metrics_t is a registry of metric families (counters and gauges),
 * each holding series keyed by their label set, plus the state /healthz and
 * /readyz report. One mutex guards all of it: the follower, guard and alert
 * threads update it while the HTTP thread renders it. An update is a lock, a
 * few string compares and an unlock, so calling tw_metrics_add once per
 * change event is fine.
 *
 * Every tw_metrics_* call accepts m == NULL and does nothing (get gives
 * NAN, render NULL), so a module can be handed "no metrics".
 *
 * Misuse (an undeclared family, a counter set or decreased, a malformed
 * label set) is a bug in the caller, not an operator's problem: the update
 * is dropped, the call returns false and a warning is logged once per
 * family, so a hot path cannot flood the log.
 *
 * http.h serves the registry: it calls tw_metrics_render,
 * tw_metrics_last_heartbeat and tw_metrics_readiness.
 */
#ifndef TOKENWATCH_METRICS_H
#define TOKENWATCH_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { TW_METRIC_COUNTER = 0, TW_METRIC_GAUGE } tw_metric_type_t;

/* A label value longer than this once escaped is shortened (tw_metrics_label). */
#define TW_METRICS_VALUE_MAX 1024
/* Room for a label set: one value of up to TW_METRICS_VALUE_MAX, escaped,
 * and a few short labels (state="UNKNOWN"). */
#define TW_METRICS_LABELS_MAX 2048

typedef struct tw_metrics tw_metrics_t;

/* NULL only if the lock cannot be created. */
tw_metrics_t *tw_metrics_new(void);
/* NULL is fine. Stop any tw_http_t serving m first. */
void tw_metrics_free(tw_metrics_t *m);

/*
 * Declares a family before any update to it; render lists families in the
 * order they were declared. name must match [a-zA-Z_:][a-zA-Z0-9_:]*; name
 * and help are copied. Declaring the same name again with the same type is
 * harmless (the help text is replaced); with another type it is refused.
 */
bool tw_metrics_declare(tw_metrics_t *m, const char *name,
                        tw_metric_type_t type, const char *help);

/*
 * labels: NULL or "" for the series without labels, else the body of a
 * Prometheus label set, `key="tokenwatch:{a}:checkpoint",state="OK"`, built
 * with tw_metrics_label / tw_metrics_label_append so values are escaped. The
 * string is copied when the series is created and then compared byte for
 * byte: write the labels of a family in the same order every time.
 */

/* Counter or gauge: adds delta (>= 0 for a counter). A delta of 0 creates the
 * series at 0, so it shows in a scrape before the first event. */
bool tw_metrics_add(tw_metrics_t *m, const char *name, const char *labels,
                    double delta);
/* Gauge only. */
bool tw_metrics_set(tw_metrics_t *m, const char *name, const char *labels,
                    double value);
/* Drops one series (a key no longer guarded); false when there was none. */
bool tw_metrics_remove(tw_metrics_t *m, const char *name, const char *labels);
/* The series' value; NAN when the family or the series does not exist. */
double tw_metrics_get(tw_metrics_t *m, const char *name, const char *labels);

/*
 * Writes `name="value"` into out (n bytes), the value escaped as the
 * exposition format wants (\\, \", \n). A value over TW_METRICS_VALUE_MAX
 * bytes once escaped (a Redis key can be any length) is shortened, stably:
 * its first 128 bytes (never cut inside a UTF-8 character), "…" (U+2026)
 * and the first 16 hex digits of the SHA-256 of the whole value, so each
 * key keeps a series of its own. A value already ending in "…" and 16 hex
 * digits is shortened too, so no key can take another's series. false (and
 * out "") when name is not a valid label name or the result does not fit:
 * a cut label would merge series or break the scrape, so nothing partial is
 * ever written.
 */
bool tw_metrics_label(char *out, size_t n, const char *name,
                      const char *value);
/* Whether tw_metrics_label shows value shortened. */
bool tw_metrics_label_shortened(const char *value);
/* The same, appended to the label set already in out, after a comma when
 * out is not empty. On false, out is left as it was. */
bool tw_metrics_label_append(char *out, size_t n, const char *name,
                             const char *value);

/*
 * The whole registry in the Prometheus text format 0.0.4: per family, in
 * declaration order, `# HELP`, `# TYPE`, then one line per series in the
 * order they were created. Integral values print without a decimal point,
 * others in the shortest form that reads back exactly, and non-finite ones
 * as +Inf, -Inf, NaN. The caller frees the result with free(); NULL when the
 * text would pass its cap (8 MiB).
 */
char *tw_metrics_render(tw_metrics_t *m);

/* The main loop calls this often, with tw_clock_mono_ms(). */
void tw_metrics_heartbeat(tw_metrics_t *m, int64_t mono_ms);
/* The mono_ms of the last heartbeat into *mono_ms; false (and *mono_ms left
 * as it was) before the first one. What /healthz reads. */
bool tw_metrics_last_heartbeat(tw_metrics_t *m, int64_t *mono_ms);

/*
 * Readiness is the AND of named parts ("mongo", "redis"); part is copied.
 * Declare every part (as false) at start-up: /readyz is not ready while no
 * part has been reported at all.
 */
void tw_metrics_set_ready(tw_metrics_t *m, const char *part, bool ready);
/*
 * What /readyz reads: the parts not ready, in the order first reported and
 * separated by ", ", into out (n bytes; "" when all are ready, cut if it
 * does not fit). false when no part was ever reported.
 */
bool tw_metrics_readiness(tw_metrics_t *m, char *out, size_t n);

/* A standby (lease.h) is ready as it is: it follows nothing, and stands in
 * when the leader goes. /readyz then answers "ready: standby". */
void tw_metrics_set_standby(tw_metrics_t *m, bool standby);
bool tw_metrics_standby(tw_metrics_t *m);

#endif
