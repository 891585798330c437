/*
 * fuzz.h - what every libFuzzer target here shares: the input as a
 * NUL-terminated string (libFuzzer's bytes are not terminated).
 */
#ifndef TOKENWATCH_FUZZ_H
#define TOKENWATCH_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A copy of data with a terminator (free); an embedded NUL ends the string
 * early, as it would for any C caller. */
static inline char *fuzz_string(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);

    if (!s)
        abort();
    memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

#endif
