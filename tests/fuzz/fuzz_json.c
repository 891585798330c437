/*
 * The event JSON writer against libbson: any bytes that make a BSON
 * document (the length prefix fixed up to the input's size) must be written
 * byte for byte as bson_as_relaxed_extended_json writes them, NULL included.
 */
#include <bson/bson.h>
#include <stdio.h>

#include "fuzz.h"
#include "tokenwatch/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *copy;
    bson_t doc;
    char *ours, *theirs;
    size_t len = 0;

    if (size < 5 || size > 1024 * 1024)
        return 0;
    copy = malloc(size);
    if (!copy)
        abort();
    memcpy(copy, data, size);
    /* A document's first four bytes are its length, little-endian. */
    copy[0] = (uint8_t)(size & 0xff);
    copy[1] = (uint8_t)((size >> 8) & 0xff);
    copy[2] = (uint8_t)((size >> 16) & 0xff);
    copy[3] = 0;
    copy[size - 1] = 0;
    if (bson_init_static(&doc, copy, size)) {
        ours = tw_json_relaxed(&doc, &len);
        theirs = bson_as_relaxed_extended_json(&doc, NULL);
        if ((ours == NULL) != (theirs == NULL) ||
            (ours && (strcmp(ours, theirs) != 0 || len != strlen(theirs)))) {
            fprintf(stderr, "tw_json_relaxed differs from libbson:\nours:   %s\nlibbson: %s\n",
                    ours ? ours : "(null)", theirs ? theirs : "(null)");
            abort();
        }
        bson_free(ours);
        bson_free(theirs);
    }
    free(copy);
    return 0;
}
