/*
 * duration.h - "500ms", "30s", "15m", "6h", "7d" (and sums like "1h30m"),
 * and LIMITs: a share of the oplog window ("20%") or a duration ("2h").
 */
#ifndef TOKENWATCH_DURATION_H
#define TOKENWATCH_DURATION_H

#include <stdbool.h>
#include <stdint.h>

#include "tokenwatch/error.h"

bool tw_duration_parse(const char *text, int64_t *out_ms, tw_error_t *err);

#define TW_DURATION_TEXT_MAX 48
/* The shortest exact form: 1500 -> "1500ms", 90000 -> "1m30s", 0 -> "0s". */
void tw_duration_format(int64_t ms, char out[TW_DURATION_TEXT_MAX]);

/* For people, two largest units: "2h 14m", "3d 4h", "45s", "0s". */
void tw_duration_words(int64_t ms, char out[TW_DURATION_TEXT_MAX]);

typedef enum { TW_LIMIT_SHARE, TW_LIMIT_DURATION } tw_limit_kind_t;

typedef struct {
    tw_limit_kind_t kind;
    double share; /* 0..1, for TW_LIMIT_SHARE */
    int64_t ms;   /* for TW_LIMIT_DURATION */
} tw_limit_t;

bool tw_limit_parse(const char *text, tw_limit_t *out, tw_error_t *err);

#endif
