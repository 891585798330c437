/*
 * mem.h - allocation that never returns NULL.
 *
 * One out-of-memory policy, as libbson's bson_malloc: when the system has
 * no memory left for a request, these write one line to stderr
 * ("tokenwatch: out of memory (N bytes)") and abort(). There is no error
 * path to take: a process that cannot allocate a few hundred bytes cannot
 * log, alert or write a checkpoint either, and the supervisor restarts it
 * from the last checkpoint. Callers never check the result for NULL.
 *
 * The message goes straight to stderr with write(2), not through the
 * logger (which may itself allocate), and quotes nothing but the size.
 * A cap on a growable buffer (the metrics text, the Slack queue, a log
 * line) is not an out-of-memory path: keep checking those caps.
 *
 * Memory from these is released with free(). libbson's own allocations
 * (bson_malloc, bson_strdup_printf) already abort and are left to it.
 */
#ifndef TOKENWATCH_MEM_H
#define TOKENWATCH_MEM_H

#include <stddef.h>

/* malloc(n); n == 0 gives a unique pointer to free() (never NULL). */
void *tw_malloc(size_t n);

/* calloc(count, size), zeroed; a count * size that overflows is treated as
 * a request the system cannot meet. count or size 0 gives a unique pointer. */
void *tw_calloc(size_t count, size_t size);

/* realloc(p, n); p may be NULL. n == 0 keeps a valid (unique) pointer
 * instead of freeing p. On failure p is not freed, as the process aborts. */
void *tw_realloc(void *p, size_t n);

/* A copy of the NUL-terminated s (s must not be NULL). */
char *tw_strdup(const char *s);

/* A copy of at most n bytes of s, stopped at its NUL, always terminated. */
char *tw_strndup(const char *s, size_t n);

/* printf into a new string. */
char *tw_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Writes "tokenwatch: <what>" and a newline to stderr, without allocating,
 * then abort()s. For an assertion of a programming error (a table not kept
 * up to date), never for a condition the input can cause. */
void tw_die(const char *what) __attribute__((noreturn));

#endif
