/*
 * utf8.h - text that stays UTF-8 when it is capped or comes from outside.
 *
 * Server messages, Redis keys and shard names may hold any bytes, and a
 * fixed-size buffer filled by snprintf may end inside a multi-byte
 * character. libbson refuses to turn such text into JSON (the record or
 * alert built from it would be NULL), so every capped or outside text goes
 * through here. Pure: no allocation, no globals.
 */
#ifndef TOKENWATCH_UTF8_H
#define TOKENWATCH_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* The length (1-4) of the well-formed character at s[0..n), or 0 when the
 * bytes there are not one (a stray continuation byte, an overlong form, a
 * surrogate, a code point past U+10FFFF, or a character cut short by n). */
size_t tw_utf8_char_len(const char *s, size_t n);

/* Drops an incomplete character at the end of buf[0..len) (what a cap left
 * of it), writes the NUL there and returns the new length. Whole characters
 * and bytes that are invalid for other reasons are left to tw_utf8_scrub. */
size_t tw_utf8_cut(char *buf, size_t len);

/* Replaces, in place, each byte that is not part of a well-formed
 * character with '?'; returns how many were replaced. */
size_t tw_utf8_scrub(char *s);

/* Makes s (NUL-terminated) valid UTF-8 in place: an incomplete character at
 * the end is dropped, anything else invalid becomes '?'. */
void tw_utf8_fix(char *s);

/* snprintf into buf[cap] that, when the text does not fit, cuts it on a
 * character boundary instead of inside one. Returns the length written. */
size_t tw_utf8_format(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
