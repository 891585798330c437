/*
 * Stored records: a checkpoint hash as HGETALL returns it, and a history
 * entry (the hash as JSON). The first byte picks which; for a hash, the
 * rest is "name\0value\0name\0value...".
 */
#include <stdio.h>

#include "fuzz.h"
#include "tokenwatch/record.h"

#define MAX_FIELDS 16

static void decode_hash(char *text, size_t size)
{
    const char *names[MAX_FIELDS], *values[MAX_FIELDS];
    size_t count = 0, at = 0;
    tw_checkpoint_t cp;

    while (at < size && count < MAX_FIELDS) {
        const char *name = text + at;

        at += strlen(name) + 1;
        if (at > size)
            break;
        names[count] = name;
        values[count++] = text + at;
        at += strlen(text + at) + 1;
    }
    tw_checkpoint_init(&cp);
    if (tw_record_decode(names, values, count, &cp, NULL)) {
        tw_record_fields_t fields;

        /* A record written back reads as the same record. */
        if (tw_record_encode(&cp, &fields, NULL)) {
            tw_checkpoint_t again;

            if (!tw_record_decode(fields.names, (const char *const *)fields.values,
                                  TW_RECORD_FIELDS, &again, NULL)) {
                fprintf(stderr, "a decoded record does not read back\n");
                abort();
            }
            if (tw_ctime_cmp(cp.cluster_time, again.cluster_time) != 0 ||
                cp.events != again.events || cp.wall_ms != again.wall_ms ||
                cp.has_token != again.has_token ||
                (cp.has_token && !bson_equal(&cp.token, &again.token))) {
                fprintf(stderr, "a record changes when written back\n");
                abort();
            }
            tw_checkpoint_release(&again);
            tw_record_fields_release(&fields);
        }
    }
    tw_checkpoint_release(&cp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text;

    if (size == 0)
        return 0;
    text = fuzz_string(data + 1, size - 1);
    if (data[0] & 1) {
        tw_history_entry_t entry;

        (void)tw_record_history_decode(text, &entry, NULL);
        tw_checkpoint_release(&entry.checkpoint);
    } else {
        decode_hash(text, size - 1);
    }
    free(text);
    return 0;
}
