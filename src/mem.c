#include "tokenwatch/mem.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Writes all of buf to stderr, retrying short writes; nothing to do about
 * a failure on the way to abort(). */
static void write_stderr(const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(STDERR_FILENO, buf, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        buf += n;
        len -= (size_t)n;
    }
}

/* Formats n in decimal into the end of buf[cap] without printf (which may
 * allocate); returns where the digits start. */
static char *format_size(char *buf, size_t cap, size_t n)
{
    char *p = buf + cap;

    do {
        *--p = (char)('0' + n % 10);
        n /= 10;
    } while (n > 0 && p > buf);
    return p;
}

__attribute__((noreturn)) static void out_of_memory(size_t n)
{
    static const char head[] = "tokenwatch: out of memory (";
    static const char tail[] = " bytes)\n";
    char digits[24];
    char *start = format_size(digits, sizeof digits, n);

    write_stderr(head, sizeof head - 1);
    write_stderr(start, (size_t)(digits + sizeof digits - start));
    write_stderr(tail, sizeof tail - 1);
    abort();
}

void tw_die(const char *what)
{
    static const char head[] = "tokenwatch: ";

    write_stderr(head, sizeof head - 1);
    write_stderr(what, strlen(what));
    write_stderr("\n", 1);
    abort();
}

/* No object may be larger than PTRDIFF_MAX: glibc refuses such a request
 * anyway, and refusing it here keeps a sanitizer's allocator out of it. */
static void check_size(size_t n)
{
    if (n > PTRDIFF_MAX)
        out_of_memory(n);
}

void *tw_malloc(size_t n)
{
    void *p;

    check_size(n);
    p = malloc(n ? n : 1);

    if (!p)
        out_of_memory(n);
    return p;
}

void *tw_calloc(size_t count, size_t size)
{
    void *p;

    if (size && count > SIZE_MAX / size)
        out_of_memory(SIZE_MAX);
    check_size(count * size);
    p = calloc(count && size ? count : 1, count && size ? size : 1);
    if (!p)
        out_of_memory(count * size);
    return p;
}

void *tw_realloc(void *p, size_t n)
{
    void *grown;

    check_size(n);
    grown = realloc(p, n ? n : 1);

    if (!grown)
        out_of_memory(n);
    return grown;
}

char *tw_strdup(const char *s)
{
    size_t len = strlen(s);
    char *copy = tw_malloc(len + 1);

    memcpy(copy, s, len + 1);
    return copy;
}

char *tw_strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *copy = tw_malloc(len + 1);

    memcpy(copy, s, len);
    copy[len] = '\0';
    return copy;
}

char *tw_asprintf(const char *fmt, ...)
{
    va_list ap;
    int len;
    char *out;

    va_start(ap, fmt);
    len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (len < 0)
        tw_die("tw_asprintf: bad format");
    out = tw_malloc((size_t)len + 1);
    va_start(ap, fmt);
    vsnprintf(out, (size_t)len + 1, fmt, ap);
    va_end(ap);
    return out;
}
