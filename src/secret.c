#include "tokenwatch/secret.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenwatch/mem.h"

#define SECRET_FILE_MAX 8192

void tw_secret_free(char *secret)
{
    if (!secret)
        return;
    explicit_bzero(secret, strlen(secret));
    free(secret);
}

bool tw_secret_read_file(const char *path, const char *what, char **out,
                         tw_error_t *err)
{
    char buf[SECRET_FILE_MAX + 1];
    FILE *f;
    size_t len;
    size_t start = 0;
    bool ok = false;

    *out = NULL;
    f = fopen(path, "r");
    if (!f) {
        tw_error_set(err, TW_ERR_USAGE, errno, "cannot read %s %s: %s", what, path,
                     strerror(errno));
        return false;
    }
    len = fread(buf, 1, sizeof buf, f);
    if (ferror(f)) {
        tw_error_set(err, TW_ERR_USAGE, errno, "cannot read %s %s: %s", what, path,
                     strerror(errno));
        goto out_close;
    }
    if (len > SECRET_FILE_MAX) {
        tw_error_set(err, TW_ERR_USAGE, 0, "%s %s is over %d bytes: expected one line",
                     what, path, SECRET_FILE_MAX);
        goto out_close;
    }
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' ||
                       buf[len - 1] == ' ' || buf[len - 1] == '\t'))
        len--;
    while (start < len && (buf[start] == ' ' || buf[start] == '\t'))
        start++;
    if (start == len) {
        tw_error_set(err, TW_ERR_USAGE, 0, "%s %s is empty", what, path);
        goto out_close;
    }
    /* Never quote the content: it is the secret. */
    if (memchr(buf + start, '\n', len - start) || memchr(buf + start, '\r', len - start) ||
        memchr(buf + start, '\0', len - start)) {
        tw_error_set(err, TW_ERR_USAGE, 0, "%s %s must hold one line and nothing else",
                     what, path);
        goto out_close;
    }
    *out = tw_malloc(len - start + 1);
    memcpy(*out, buf + start, len - start);
    (*out)[len - start] = '\0';
    ok = true;
out_close:
    fclose(f);
    explicit_bzero(buf, sizeof buf);
    return ok;
}
