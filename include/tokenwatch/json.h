/*
 * json.h - a document as relaxed extended JSON, fast.
 *
 * tw_json_relaxed writes what libbson 1.23's bson_as_relaxed_extended_json
 * writes, byte for byte (its spacing, "{ \"a\" : 1 }", "{  }" for an empty
 * nested document, its escapes, its double and date forms), and returns
 * NULL where it returns NULL. libbson escapes a string one character at a
 * time through a growing bson_string_t; this copies each run of bytes that
 * need no escape with one memcpy, and writes the common types (strings,
 * numbers, booleans, null, documents, arrays, ObjectIds, dates, timestamps,
 * binary, decimal128, min/max keys) itself.
 *
 * The rest goes to libbson: regular expressions, code, symbols and
 * DBPointers one value at a time (the value alone in a document, libbson's
 * text of it spliced in), and the whole document whenever anything is not
 * plain: invalid or overlong UTF-8 (libbson's rules for it are its own), a
 * corrupt document, nesting past TW_JSON_DEPTH, a date before 1970 or
 * after 9999 written as text. Those are rare in change events, and libbson
 * then decides, so the answer stays the same.
 *
 * The text is capped at TW_JSON_MAX bytes: past it the result is NULL
 * (libbson has no cap). A change event is at most 16 MB of BSON, and the
 * widest BSON-to-JSON growth (a MinKey, 2 bytes, as 24 characters) keeps
 * its text under 12 x 16 MB, below the cap.
 *
 * An exception to leaving JSON to libbson, for the event path only: a
 * profile of the redis sink put half its CPU in libbson's escaping (see
 * bench/json_bench.c). Everything else keeps calling libbson.
 *
 * Pure: no I/O, no globals.
 */
#ifndef TOKENWATCH_JSON_H
#define TOKENWATCH_JSON_H

#include <bson/bson.h>
#include <stdbool.h>
#include <stddef.h>

#define TW_JSON_MAX ((size_t)256 * 1024 * 1024)

/* Deeper than this, the whole document is written by libbson (which writes
 * "{ ... }" past 200 levels). */
#define TW_JSON_DEPTH 100

/*
 * doc as relaxed extended JSON, identical to bson_as_relaxed_extended_json;
 * its length into len (may be NULL). NULL when libbson gives NULL (invalid
 * UTF-8, corrupt BSON) or past TW_JSON_MAX. Free with bson_free.
 */
char *tw_json_relaxed(const bson_t *doc, size_t *len);

/*
 * Whether tw_json_relaxed(doc) would give text, and its length into len
 * (may be NULL), without keeping the text: a small document is written
 * into a buffer on the stack, with no allocation.
 */
bool tw_json_relaxed_size(const bson_t *doc, size_t *len);

#endif
