/*
 * harness.c - integration-test harness for tokenwatch. See harness.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pipe2, close_range, nftw, mkdtemp, setenv */
#endif
#include "harness.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <bson/bson.h>
#include <curl/curl.h>

extern char **environ;

#define TH_TMP_PREFIX "tokenwatch-test-"
#define TH_ENV_DROP_PREFIX "TOKENWATCH_"
#define TH_READ_MAX ((size_t)64 * 1024 * 1024)
#define TH_HTTP_MAX ((size_t)16 * 1024 * 1024)
#define TH_DUMP_TAIL ((size_t)64 * 1024)
#define TH_START_ATTEMPTS 5
#define TH_REDIS_READY_MS 5000
#define TH_STOP_MS 5000
#define TH_SIM_READY_MS 10000
#define TH_PYTHON "/usr/bin/python3"

#ifndef TW_SOURCE_DIR
#define TW_SOURCE_DIR NULL
#endif
#ifndef TW_BINARY
#define TW_BINARY NULL
#endif

/* ------------------------------------------------------------------ */
/* Small internals                                                      */

static void th__log(const char *fn, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static void th__log(const char *fn, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s: %s\n", fn, msg);
}

/* snprintf that reports truncation as failure. */
static bool th__fmt(char *out, size_t n, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static bool th__fmt(char *out, size_t n, const char *fmt, ...)
{
    va_list ap;
    int rc;

    if (out == NULL || n == 0)
        return false;
    va_start(ap, fmt);
    rc = vsnprintf(out, n, fmt, ap);
    va_end(ap);
    return rc >= 0 && (size_t)rc < n;
}

static bool th__is_dir(const char *path)
{
    struct stat st;

    return path != NULL && stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Creates DIR/PREFIX-k for the first k that does not exist yet. */
static bool th__mksubdir(const char *dir, const char *prefix, char *out,
                         size_t n)
{
    for (int k = 1; k < 1000; k++) {
        if (!th__fmt(out, n, "%s/%s-%d", dir, prefix, k))
            return false;
        if (mkdir(out, 0700) == 0)
            return true;
        if (errno != EEXIST)
            return false;
    }
    errno = EEXIST;
    return false;
}

/* ------------------------------------------------------------------ */
/* Files and directories                                               */

bool th_tmpdir(char *out, size_t n)
{
    const char *base = getenv("TMPDIR");

    if (base == NULL || *base == '\0' || !th__is_dir(base))
        base = "/tmp";
    if (!th__fmt(out, n, "%s/" TH_TMP_PREFIX "XXXXXX", base)) {
        th__log("th_tmpdir", "buffer too small");
        return false;
    }
    if (mkdtemp(out) == NULL) {
        th__log("th_tmpdir", "mkdtemp %s: %s", out, strerror(errno));
        out[0] = '\0';
        return false;
    }
    return true;
}

static int th__rm_entry(const char *path, const struct stat *st, int flag,
                        struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0 && errno != ENOENT)
        th__log("th_rmtree", "remove %s: %s", path, strerror(errno));
    return 0; /* keep going */
}

void th_rmtree(const char *dir)
{
    const char *slash;
    const char *base;
    const char *keep;

    if (dir == NULL || *dir == '\0')
        return;
    slash = strrchr(dir, '/');
    base = slash != NULL ? slash + 1 : dir;
    if (strncmp(base, TH_TMP_PREFIX, strlen(TH_TMP_PREFIX)) != 0) {
        th__log("th_rmtree", "refusing to remove %s (not a %s* dir)", dir,
                TH_TMP_PREFIX);
        return;
    }
    keep = getenv("TW_TEST_KEEP");
    if (keep != NULL && *keep != '\0' && strcmp(keep, "0") != 0) {
        fprintf(stderr, "th_rmtree: TW_TEST_KEEP set, keeping %s\n", dir);
        return;
    }
    if (!th__is_dir(dir))
        return;
    nftw(dir, th__rm_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

char *th_read_file_len(const char *path, size_t *len_out)
{
    char *buf = NULL;
    char *result = NULL;
    size_t len = 0;
    size_t cap = 0;
    int fd = -1;

    if (len_out != NULL)
        *len_out = 0;
    if (path == NULL || *path == '\0')
        return NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        goto out;
    for (;;) {
        ssize_t got;

        if (cap - len < 4096) {
            size_t ncap = cap == 0 ? 8192 : cap * 2;
            char *nbuf;

            if (ncap > TH_READ_MAX + 1) {
                th__log("th_read_file", "%s: larger than %zu bytes", path,
                        TH_READ_MAX);
                goto out_free_buf;
            }
            nbuf = realloc(buf, ncap);
            if (nbuf == NULL)
                goto out_free_buf;
            buf = nbuf;
            cap = ncap;
        }
        got = read(fd, buf + len, cap - len - 1);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            goto out_free_buf;
        }
        if (got == 0)
            break;
        len += (size_t)got;
    }
    if (buf == NULL) {
        buf = malloc(1);
        if (buf == NULL)
            goto out;
    }
    buf[len] = '\0';
    if (len_out != NULL)
        *len_out = len;
    result = buf;
    buf = NULL;
out_free_buf:
    free(buf);
out:
    if (fd >= 0)
        close(fd);
    return result;
}

char *th_read_file(const char *path)
{
    return th_read_file_len(path, NULL);
}

bool th_write_file(const char *path, const char *data, size_t len)
{
    char tmp[PATH_MAX];
    bool ok = false;
    size_t done = 0;
    int fd = -1;

    if (path == NULL || (data == NULL && len > 0))
        return false;
    if (!th__fmt(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid()))
        return false;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        th__log("th_write_file", "open %s: %s", tmp, strerror(errno));
        return false;
    }
    while (done < len) {
        ssize_t w = write(fd, data + done, len - done);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            th__log("th_write_file", "write %s: %s", tmp, strerror(errno));
            goto out_close;
        }
        done += (size_t)w;
    }
    if (close(fd) != 0) {
        fd = -1;
        goto out_unlink;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        th__log("th_write_file", "rename %s: %s", path, strerror(errno));
        goto out_unlink;
    }
    ok = true;
    goto out_close;
out_unlink:
    unlink(tmp);
out_close:
    if (fd >= 0) {
        close(fd);
        unlink(tmp);
    }
    return ok;
}

void th_dump_file(const char *path)
{
    size_t len = 0;
    char *data;
    const char *start;

    if (path == NULL)
        return;
    data = th_read_file_len(path, &len);
    if (data == NULL) {
        fprintf(stderr, "---- %s (missing) ----\n", path);
        return;
    }
    start = data;
    if (len > TH_DUMP_TAIL) {
        fprintf(stderr, "---- %s (last %zu of %zu bytes) ----\n", path,
                TH_DUMP_TAIL, len);
        start = data + (len - TH_DUMP_TAIL);
        len = TH_DUMP_TAIL;
    } else {
        fprintf(stderr, "---- %s ----\n", path);
    }
    fwrite(start, 1, len, stderr);
    if (len > 0 && start[len - 1] != '\n')
        fputc('\n', stderr);
    fprintf(stderr, "---- end of %s ----\n", path);
    free(data);
}

static bool th__looks_binary(const char *path)
{
    char buf[4096];
    ssize_t got;
    bool binary = false;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return true;
    got = read(fd, buf, sizeof buf);
    if (got > 0 && memchr(buf, '\0', (size_t)got) != NULL)
        binary = true;
    close(fd);
    return binary;
}

static int th__dump_entry(const char *path, const struct stat *st, int flag,
                          struct FTW *ftw)
{
    (void)ftw;
    if (flag != FTW_F || !S_ISREG(st->st_mode))
        return 0;
    /* AOF / RDB data is not a log; a scenario is printed by the test. */
    if (strstr(path, "/appendonlydir/") != NULL)
        return 0;
    if (st->st_size > 0 && th__looks_binary(path))
        return 0;
    th_dump_file(path);
    return 0;
}

void th_dump_dir(const char *dir)
{
    if (dir == NULL || *dir == '\0' || !th__is_dir(dir))
        return;
    fprintf(stderr, "==== files in %s ====\n", dir);
    nftw(dir, th__dump_entry, 16, FTW_PHYS | FTW_MOUNT);
}

static const char *th__env_or(const char *name, const char *fallback)
{
    const char *v = getenv(name);

    if (v != NULL && *v != '\0')
        return v;
    return fallback;
}

bool th_path(char *out, size_t n, const char *dir, const char *name)
{
    if (dir == NULL || name == NULL)
        return false;
    return th__fmt(out, n, "%s/%s", dir, name);
}

const char *th_source_dir(void)
{
    return th__env_or("TW_SOURCE_DIR", TW_SOURCE_DIR);
}

const char *th_binary(void)
{
    return th__env_or("TW_BINARY", TW_BINARY);
}

/* ------------------------------------------------------------------ */
/* Ports and time                                                       */

int th_free_port(void)
{
    struct sockaddr_in addr;
    socklen_t alen = sizeof addr;
    int port = -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0) {
        th__log("th_free_port", "socket: %s", strerror(errno));
        return -1;
    }
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        th__log("th_free_port", "bind: %s", strerror(errno));
        goto out_close;
    }
    if (getsockname(fd, (struct sockaddr *)&addr, &alen) != 0) {
        th__log("th_free_port", "getsockname: %s", strerror(errno));
        goto out_close;
    }
    port = ntohs(addr.sin_port);
out_close:
    close(fd);
    return port;
}

void th_sleep_ms(int ms)
{
    struct timespec ts;

    if (ms <= 0)
        return;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

long long th_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000LL + ts.tv_nsec / 1000000L;
}

bool th_wait_until(bool (*pred)(void *ctx), void *ctx, int timeout_ms)
{
    long long deadline = th_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);

    if (pred == NULL)
        return false;
    for (;;) {
        long long left;

        if (pred(ctx))
            return true;
        left = deadline - th_now_ms();
        if (left <= 0)
            return pred(ctx);
        th_sleep_ms(left < 20 ? (int)left : 20);
    }
}

/* ------------------------------------------------------------------ */
/* Processes                                                            */

/* Resolves argv0 to an absolute or PATH-found executable. */
static bool th__resolve_exe(const char *argv0, char *out, size_t n)
{
    const char *path;
    const char *p;

    if (strchr(argv0, '/') != NULL) {
        char cwd[PATH_MAX];

        if (argv0[0] == '/')
            return th__fmt(out, n, "%s", argv0);
        /* relative: the child runs in another cwd, so anchor it here */
        if (getcwd(cwd, sizeof cwd) == NULL)
            return false;
        return th__fmt(out, n, "%s/%s", cwd, argv0);
    }
    path = getenv("PATH");
    if (path == NULL || *path == '\0')
        path = "/usr/local/bin:/usr/bin:/bin";
    p = path;
    while (*p != '\0') {
        const char *colon = strchr(p, ':');
        size_t len = colon != NULL ? (size_t)(colon - p) : strlen(p);

        if (len > 0 && th__fmt(out, n, "%.*s/%s", (int)len, p, argv0) &&
            access(out, X_OK) == 0 && !th__is_dir(out))
            return true;
        if (colon == NULL)
            break;
        p = colon + 1;
    }
    return false;
}

static bool th__env_key_eq(const char *a, const char *b)
{
    /* compare the "K" of "K=V" */
    while (*a != '\0' && *a != '=' && *a == *b) {
        a++;
        b++;
    }
    return (*a == '=' || *a == '\0') && (*b == '=' || *b == '\0');
}

/* The child's environment: borrowed strings, array malloc'd. */
static char **th__build_env(const char *const env_extra[])
{
    size_t n_parent = 0;
    size_t n_extra = 0;
    size_t k = 0;
    char **envp;

    while (environ != NULL && environ[n_parent] != NULL)
        n_parent++;
    while (env_extra != NULL && env_extra[n_extra] != NULL)
        n_extra++;
    envp = calloc(n_parent + n_extra + 1, sizeof *envp);
    if (envp == NULL)
        return NULL;
    for (size_t i = 0; i < n_parent; i++) {
        bool drop = strncmp(environ[i], TH_ENV_DROP_PREFIX,
                            strlen(TH_ENV_DROP_PREFIX)) == 0;

        for (size_t j = 0; !drop && j < n_extra; j++)
            drop = th__env_key_eq(environ[i], env_extra[j]);
        if (!drop)
            envp[k++] = environ[i];
    }
    for (size_t j = 0; j < n_extra; j++)
        envp[k++] = (char *)env_extra[j];
    envp[k] = NULL;
    return envp;
}

struct th__child_err {
    int stage; /* 1 chdir, 2 dup2, 3 exec, 4 parent gone */
    int err;
};

/* Only async-signal-safe calls from here to execve: the test process may
 * have threads (Criterion's, libcurl's resolver). */
static void th__child(const char *dir, const char *exe,
                      const char *const argv[], char **envp, int in_fd,
                      int out_fd, int err_fd, int report_fd, pid_t parent,
                      int max_fd)
{
    struct th__child_err ce = {0, 0};
    struct sigaction dfl;
    sigset_t none;

    setpgid(0, 0);
    /* die with the test process, whatever happens to it */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) {
        ce.stage = 4;
        goto fail;
    }
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig != SIGKILL && sig != SIGSTOP)
            sigaction(sig, &dfl, NULL);
    }
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    if (chdir(dir) != 0) {
        ce.stage = 1;
        ce.err = errno;
        goto fail;
    }
    if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0) {
        ce.stage = 2;
        ce.err = errno;
        goto fail;
    }
    /* no inherited descriptors (Criterion's IPC sockets among them);
     * report_fd is closed by exec as well */
#ifdef CLOSE_RANGE_CLOEXEC
    if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0)
#endif
    {
        for (int fd = 3; fd < max_fd; fd++) {
            if (fd != report_fd)
                close(fd);
        }
    }
    execve(exe, (char *const *)argv, envp);
    ce.stage = 3;
    ce.err = errno;
fail:
    if (ce.err == 0)
        ce.err = errno;
    while (write(report_fd, &ce, sizeof ce) < 0 && errno == EINTR)
        ;
    _exit(127);
}

static bool th__spawn_fds(th_proc_t *p, const char *dir,
                          const char *const argv[],
                          const char *const env_extra[], int out_fd,
                          int err_fd)
{
    static const char *const stage_name[] = {
        "?", "chdir", "dup2", "exec", "parent gone",
    };
    char exe[PATH_MAX];
    struct th__child_err ce;
    char **envp = NULL;
    int report[2] = {-1, -1};
    int in_fd = -1;
    int max_fd;
    bool ok = false;
    pid_t parent = getpid();
    pid_t pid;
    ssize_t got;

    if (!th__resolve_exe(argv[0], exe, sizeof exe)) {
        th__log("th_proc_spawn", "%s: not found in PATH", argv[0]);
        return false;
    }
    envp = th__build_env(env_extra);
    if (envp == NULL)
        return false;
    in_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (in_fd < 0) {
        th__log("th_proc_spawn", "/dev/null: %s", strerror(errno));
        goto out_free_env;
    }
    if (pipe2(report, O_CLOEXEC) != 0) {
        th__log("th_proc_spawn", "pipe2: %s", strerror(errno));
        goto out_close_in;
    }
    max_fd = (int)sysconf(_SC_OPEN_MAX);
    if (max_fd <= 0 || max_fd > 65536)
        max_fd = 65536;

    pid = fork();
    if (pid < 0) {
        th__log("th_proc_spawn", "fork: %s", strerror(errno));
        goto out_close_pipe;
    }
    if (pid == 0)
        th__child(dir, exe, argv, envp, in_fd, out_fd, err_fd, report[1],
                  parent, max_fd);

    /* parent; also set the group here so it exists before we return */
    setpgid(pid, pid);
    close(report[1]);
    report[1] = -1;
    do {
        got = read(report[0], &ce, sizeof ce);
    } while (got < 0 && errno == EINTR);
    if (got == (ssize_t)sizeof ce) {
        int status;

        th__log("th_proc_spawn", "%s: %s failed: %s", exe,
                stage_name[ce.stage >= 1 && ce.stage <= 4 ? ce.stage : 0],
                strerror(ce.err));
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        goto out_close_pipe;
    }
    p->pid = pid;
    p->status = 0;
    p->exited = false;
    ok = true;
out_close_pipe:
    if (report[0] >= 0)
        close(report[0]);
    if (report[1] >= 0)
        close(report[1]);
out_close_in:
    close(in_fd);
out_free_env:
    free(envp);
    return ok;
}

static bool th__check_spawn_args(th_proc_t *p, const char *dir,
                                 const char *const argv[])
{
    if (p == NULL || argv == NULL || argv[0] == NULL || dir == NULL) {
        th__log("th_proc_spawn", "bad arguments");
        return false;
    }
    if (!th__is_dir(dir)) {
        th__log("th_proc_spawn", "%s: not a directory", dir);
        return false;
    }
    return true;
}

bool th_proc_spawn_to(th_proc_t *p, const char *dir, const char *const argv[],
                      const char *const env_extra[], const char *out_path,
                      const char *err_path)
{
    const int flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC;
    bool ok = false;
    int out_fd = -1;
    int err_fd = -1;

    if (p != NULL)
        memset(p, 0, sizeof *p);
    if (!th__check_spawn_args(p, dir, argv) || out_path == NULL ||
        err_path == NULL)
        return false;
    if (!th__fmt(p->out_path, sizeof p->out_path, "%s", out_path) ||
        !th__fmt(p->err_path, sizeof p->err_path, "%s", err_path))
        return false;
    out_fd = open(out_path, flags, 0644);
    if (out_fd < 0) {
        th__log("th_proc_spawn", "%s: %s", out_path, strerror(errno));
        goto out;
    }
    if (strcmp(out_path, err_path) == 0) {
        err_fd = out_fd;
    } else {
        err_fd = open(err_path, flags, 0644);
        if (err_fd < 0) {
            th__log("th_proc_spawn", "%s: %s", err_path, strerror(errno));
            goto out_close;
        }
    }
    ok = th__spawn_fds(p, dir, argv, env_extra, out_fd, err_fd);
out_close:
    if (err_fd >= 0 && err_fd != out_fd)
        close(err_fd);
    close(out_fd);
out:
    return ok;
}

/* Opens DIR/NAME-k.out and .err for the first k where both are new. */
static bool th__open_unique(const char *dir, const char *argv0,
                            th_proc_t *p, int *out_fd, int *err_fd)
{
    const int flags = O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC;
    const char *slash = strrchr(argv0, '/');
    char name[64];
    size_t j = 0;

    /* a file-name-safe short name from argv[0] */
    for (const char *c = slash != NULL ? slash + 1 : argv0;
         *c != '\0' && j + 1 < sizeof name; c++)
        name[j++] = (isalnum((unsigned char)*c) || *c == '-' || *c == '_' ||
                     *c == '.')
                        ? *c
                        : '_';
    if (j == 0)
        name[j++] = 'p';
    name[j] = '\0';

    for (int k = 1; k < 10000; k++) {
        if (!th__fmt(p->out_path, sizeof p->out_path, "%s/%s-%d.out", dir,
                     name, k) ||
            !th__fmt(p->err_path, sizeof p->err_path, "%s/%s-%d.err", dir,
                     name, k))
            return false;
        *out_fd = open(p->out_path, flags, 0644);
        if (*out_fd < 0) {
            if (errno == EEXIST)
                continue;
            th__log("th_proc_spawn", "%s: %s", p->out_path, strerror(errno));
            return false;
        }
        *err_fd = open(p->err_path, flags, 0644);
        if (*err_fd < 0) {
            int e = errno;

            close(*out_fd);
            *out_fd = -1;
            unlink(p->out_path);
            if (e == EEXIST)
                continue;
            th__log("th_proc_spawn", "%s: %s", p->err_path, strerror(e));
            return false;
        }
        return true;
    }
    return false;
}

bool th_proc_spawn(th_proc_t *p, const char *dir, const char *const argv[],
                   const char *const env_extra[])
{
    int out_fd = -1;
    int err_fd = -1;
    bool ok;

    if (p != NULL)
        memset(p, 0, sizeof *p);
    if (!th__check_spawn_args(p, dir, argv))
        return false;
    if (!th__open_unique(dir, argv[0], p, &out_fd, &err_fd))
        return false;
    ok = th__spawn_fds(p, dir, argv, env_extra, out_fd, err_fd);
    close(out_fd);
    close(err_fd);
    return ok;
}

/* The child has exited (zombie): kill what is left of its group, reap. */
static void th__reap(th_proc_t *p)
{
    int status = 0;
    pid_t got;

    kill(-p->pid, SIGKILL);
    do {
        got = waitpid(p->pid, &status, 0);
    } while (got < 0 && errno == EINTR);
    p->exited = true;
    p->status = got == p->pid ? status : -1;
}

bool th_proc_wait(th_proc_t *p, int timeout_ms)
{
    long long deadline;

    if (p == NULL || p->pid <= 0)
        return false;
    if (p->exited)
        return true;
    deadline = th_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        siginfo_t si;
        long long left;

        memset(&si, 0, sizeof si);
        if (waitid(P_PID, (id_t)p->pid, &si, WEXITED | WNOHANG | WNOWAIT) !=
            0) {
            if (errno == EINTR)
                continue;
            /* ECHILD: not ours to wait for any more (reaped elsewhere) */
            th__log("th_proc_wait", "pid %ld: %s", (long)p->pid,
                    strerror(errno));
            p->exited = true;
            p->status = -1;
            return true;
        }
        if (si.si_pid == p->pid) {
            th__reap(p);
            return true;
        }
        left = deadline - th_now_ms();
        if (timeout_ms >= 0 && left <= 0)
            return false;
        th_sleep_ms(timeout_ms < 0 || left > 5 ? 5 : (int)left);
    }
}

bool th_proc_running(th_proc_t *p)
{
    return p != NULL && p->pid > 0 && !p->exited && !th_proc_wait(p, 0);
}

int th_proc_exit_code(const th_proc_t *p)
{
    if (p == NULL || !p->exited || p->status == -1 ||
        !WIFEXITED(p->status))
        return -1;
    return WEXITSTATUS(p->status);
}

int th_proc_term_signal(const th_proc_t *p)
{
    if (p == NULL || !p->exited || p->status == -1 ||
        !WIFSIGNALED(p->status))
        return 0;
    return WTERMSIG(p->status);
}

void th_proc_signal(th_proc_t *p, int sig)
{
    if (p == NULL || p->pid <= 0 || p->exited)
        return;
    kill(p->pid, sig);
}

void th_proc_kill(th_proc_t *p)
{
    if (p == NULL || p->pid <= 0 || p->exited)
        return;
    kill(-p->pid, SIGKILL);
    kill(p->pid, SIGKILL);
    th__reap(p);
}

void th_proc_stop(th_proc_t *p, int timeout_ms)
{
    if (p == NULL || p->pid <= 0 || p->exited)
        return;
    th_proc_signal(p, SIGTERM);
    if (!th_proc_wait(p, timeout_ms)) {
        th__log("th_proc_stop", "pid %ld ignored SIGTERM for %d ms, killing",
                (long)p->pid, timeout_ms);
        th_proc_kill(p);
    }
}

char *th_proc_stdout(const th_proc_t *p)
{
    return p != NULL ? th_read_file(p->out_path) : NULL;
}

char *th_proc_stderr(const th_proc_t *p)
{
    return p != NULL ? th_read_file(p->err_path) : NULL;
}

static char *th__read_or_empty(const char *path)
{
    char *s = th_read_file(path);

    return s != NULL ? s : strdup("");
}

int th_run(const char *dir, const char *const argv[],
           const char *const env_extra[], int timeout_ms, char **out,
           char **err)
{
    th_proc_t p;
    int rc = -1;

    if (out != NULL)
        *out = NULL;
    if (err != NULL)
        *err = NULL;
    if (!th_proc_spawn(&p, dir, argv, env_extra))
        goto out_read;
    if (!th_proc_wait(&p, timeout_ms)) {
        th_proc_kill(&p);
        rc = -2;
        goto out_read;
    }
    rc = th_proc_exit_code(&p);
out_read:
    if (out != NULL)
        *out = th__read_or_empty(p.out_path);
    if (err != NULL)
        *err = th__read_or_empty(p.err_path);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Redis                                                                */

redisContext *th_redis_connect(const th_redis_t *r)
{
    struct timeval connect_tv = {1, 0};
    struct timeval cmd_tv = {5, 0};
    redisContext *c;

    if (r == NULL || r->port <= 0)
        return NULL;
    c = redisConnectWithTimeout("127.0.0.1", r->port, connect_tv);
    if (c == NULL)
        return NULL;
    if (c->err != 0 || redisSetTimeout(c, cmd_tv) != REDIS_OK) {
        redisFree(c);
        return NULL;
    }
    return c;
}

redisReply *th_redis_cmd(const th_redis_t *r, const char *fmt, ...)
{
    redisContext *c = th_redis_connect(r);
    redisReply *reply;
    va_list ap;

    if (c == NULL)
        return NULL;
    va_start(ap, fmt);
    reply = redisvCommand(c, fmt, ap);
    va_end(ap);
    if (reply == NULL)
        th__log("th_redis_cmd", "port %d: %s", r->port,
                c->errstr[0] != '\0' ? c->errstr : "no reply");
    redisFree(c);
    return reply;
}

static char *th__reply_string(redisReply *reply)
{
    char *s = NULL;

    if (reply != NULL && (reply->type == REDIS_REPLY_STRING ||
                          reply->type == REDIS_REPLY_STATUS)) {
        s = malloc(reply->len + 1);
        if (s != NULL) {
            memcpy(s, reply->str, reply->len);
            s[reply->len] = '\0';
        }
    }
    freeReplyObject(reply);
    return s;
}

char *th_redis_hget(const th_redis_t *r, const char *key, const char *field)
{
    return th__reply_string(th_redis_cmd(r, "HGET %s %s", key, field));
}

char *th_redis_get(const th_redis_t *r, const char *key)
{
    return th__reply_string(th_redis_cmd(r, "GET %s", key));
}

long long th_redis_xlen(const th_redis_t *r, const char *key)
{
    redisReply *reply = th_redis_cmd(r, "XLEN %s", key);
    long long n = -1;

    if (reply != NULL && reply->type == REDIS_REPLY_INTEGER)
        n = reply->integer;
    freeReplyObject(reply);
    return n;
}

bool th_redis_url(const th_redis_t *r, char *out, size_t n)
{
    if (r == NULL || r->port <= 0)
        return false;
    return th__fmt(out, n, "redis://127.0.0.1:%d/0", r->port);
}

/* 1: answers PING and INFO says it is our pid; 0: not (yet). */
static bool th__redis_is_ours(const th_redis_t *r)
{
    struct timeval tv = {0, 200000};
    redisContext *c;
    redisReply *reply = NULL;
    bool ours = false;
    const char *line;

    c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
    if (c == NULL || c->err != 0)
        goto out_free_ctx;
    if (redisSetTimeout(c, tv) != REDIS_OK)
        goto out_free_ctx;
    reply = redisCommand(c, "PING");
    if (reply == NULL || reply->type != REDIS_REPLY_STATUS ||
        strcmp(reply->str, "PONG") != 0)
        goto out_free_reply; /* e.g. -LOADING while the AOF loads */
    freeReplyObject(reply);
    reply = redisCommand(c, "INFO server");
    if (reply == NULL || reply->type != REDIS_REPLY_STRING)
        goto out_free_reply;
    line = strstr(reply->str, "\nprocess_id:");
    if (line != NULL) {
        char *end = NULL;
        long v;

        errno = 0;
        v = strtol(line + strlen("\nprocess_id:"), &end, 10);
        ours = errno == 0 && end != line && (pid_t)v == r->pid;
    }
out_free_reply:
    freeReplyObject(reply);
out_free_ctx:
    redisFree(c);
    return ours;
}

enum th__launch { TH_LAUNCH_OK, TH_LAUNCH_EXITED, TH_LAUNCH_FAILED };

/* Starts redis-server on r->port in r->dir and waits until it is ready. */
static enum th__launch th__redis_launch(th_redis_t *r)
{
    char exe[PATH_MAX];
    char port[16];
    char logfile[PATH_MAX];
    char outfile[PATH_MAX];
    th_proc_t p;
    long long deadline;
    const char *argv[32];
    int a = 0;

    if (!th__resolve_exe("redis-server", exe, sizeof exe))
        th__fmt(exe, sizeof exe, "%s", "/usr/bin/redis-server");
    if (!th__fmt(port, sizeof port, "%d", r->port) ||
        !th__fmt(logfile, sizeof logfile, "%s/redis.log", r->dir) ||
        !th__fmt(outfile, sizeof outfile, "%s/redis.out", r->dir))
        return TH_LAUNCH_FAILED;
    argv[a++] = exe;
    argv[a++] = "--port";
    argv[a++] = port;
    argv[a++] = "--bind";
    argv[a++] = "127.0.0.1";
    argv[a++] = "--dir";
    argv[a++] = r->dir;
    argv[a++] = "--save";
    argv[a++] = "";
    argv[a++] = "--appendonly";
    argv[a++] = r->aof ? "yes" : "no";
    if (r->aof) {
        argv[a++] = "--appendfsync";
        argv[a++] = "always";
    }
    argv[a++] = "--daemonize";
    argv[a++] = "no";
    argv[a++] = "--logfile";
    argv[a++] = logfile;
    argv[a++] = "--enable-debug-command";
    argv[a++] = "local";
    argv[a] = NULL;

    if (!th_proc_spawn_to(&p, r->dir, argv, NULL, outfile, outfile))
        return TH_LAUNCH_FAILED;
    r->pid = p.pid;
    deadline = th_now_ms() + TH_REDIS_READY_MS;
    while (th_now_ms() < deadline) {
        if (!th_proc_running(&p)) {
            r->pid = 0;
            return TH_LAUNCH_EXITED;
        }
        if (th__redis_is_ours(r))
            return TH_LAUNCH_OK;
        th_sleep_ms(20);
    }
    th__log("th_redis_start", "port %d: not ready after %d ms", r->port,
            TH_REDIS_READY_MS);
    th_dump_file(logfile);
    th_proc_kill(&p);
    r->pid = 0;
    return TH_LAUNCH_FAILED;
}

bool th_redis_start(th_redis_t *r, const char *dir, bool aof)
{
    char logfile[PATH_MAX];

    if (r == NULL)
        return false;
    memset(r, 0, sizeof *r);
    if (dir == NULL || !th__is_dir(dir)) {
        th__log("th_redis_start", "%s: not a directory",
                dir != NULL ? dir : "(null)");
        return false;
    }
    if (!th__mksubdir(dir, "redis", r->dir, sizeof r->dir)) {
        th__log("th_redis_start", "mkdir under %s: %s", dir, strerror(errno));
        r->dir[0] = '\0';
        return false;
    }
    r->aof = aof;
    for (int attempt = 0; attempt < TH_START_ATTEMPTS; attempt++) {
        enum th__launch rc;

        r->port = th_free_port();
        if (r->port <= 0)
            return false;
        rc = th__redis_launch(r);
        if (rc == TH_LAUNCH_OK)
            return true;
        if (rc == TH_LAUNCH_FAILED)
            return false;
        /* exited early: most likely someone took the port; next one */
    }
    th__log("th_redis_start", "redis-server exited early %d times",
            TH_START_ATTEMPTS);
    if (th__fmt(logfile, sizeof logfile, "%s/redis.log", r->dir))
        th_dump_file(logfile);
    return false;
}

static void th__stop_pid(pid_t *pid, bool graceful)
{
    th_proc_t p;

    if (pid == NULL || *pid <= 0)
        return;
    memset(&p, 0, sizeof p);
    p.pid = *pid;
    if (graceful)
        th_proc_stop(&p, TH_STOP_MS);
    else
        th_proc_kill(&p);
    *pid = 0;
}

void th_redis_stop(th_redis_t *r)
{
    if (r != NULL)
        th__stop_pid(&r->pid, true);
}

void th_redis_kill9(th_redis_t *r)
{
    if (r != NULL)
        th__stop_pid(&r->pid, false);
}

bool th_redis_restart(th_redis_t *r)
{
    long long deadline = th_now_ms() + TH_REDIS_READY_MS;
    char logfile[PATH_MAX];

    if (r == NULL || r->port <= 0 || r->dir[0] == '\0')
        return false;
    th_redis_stop(r);
    do {
        enum th__launch rc = th__redis_launch(r);

        if (rc == TH_LAUNCH_OK)
            return true;
        if (rc == TH_LAUNCH_FAILED)
            return false;
        th_sleep_ms(100); /* the port may be busy for a moment */
    } while (th_now_ms() < deadline);
    th__log("th_redis_restart", "could not restart on port %d", r->port);
    if (th__fmt(logfile, sizeof logfile, "%s/redis.log", r->dir))
        th_dump_file(logfile);
    return false;
}

/* ------------------------------------------------------------------ */
/* MongoDB simulator                                                    */

bool th_sim_script(char *out, size_t n)
{
    const char *src = th_source_dir();

    if (src == NULL) {
        th__log("th_sim_script", "set TW_SOURCE_DIR (env or -D macro)");
        return false;
    }
    return th__fmt(out, n, "%s/tests/sim/mongosim.py", src);
}

static bool th__json_int(const bson_t *doc, const char *key, long long lo,
                         long long hi, long long *out)
{
    bson_iter_t it;
    long long v;

    if (!bson_iter_init_find(&it, doc, key) ||
        !(BSON_ITER_HOLDS_INT32(&it) || BSON_ITER_HOLDS_INT64(&it) ||
          BSON_ITER_HOLDS_DOUBLE(&it)))
        return false;
    v = (long long)bson_iter_as_int64(&it);
    if (v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static void th__copy_utf8(const bson_t *doc, const char *key, char *out,
                          size_t n)
{
    bson_iter_t it;
    const char *v;

    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_UTF8(&it)) {
        v = bson_iter_utf8(&it, NULL);
        if (strlen(v) < n)
            memcpy(out, v, strlen(v) + 1);
    }
}

/* The port file's "uri" and "shards" (both optional). */
static void th__sim_read_uris(th_sim_t *s, const bson_t *doc)
{
    bson_iter_t it, shards;

    s->uri[0] = '\0';
    s->shard_count = 0;
    th__copy_utf8(doc, "uri", s->uri, sizeof s->uri);
    if (!bson_iter_init_find(&it, doc, "shards") || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &shards))
        return;
    while (bson_iter_next(&shards) && s->shard_count < TH_SIM_SHARDS_MAX) {
        th_sim_shard_t *sh = &s->shards[s->shard_count];
        const uint8_t *data;
        uint32_t len;
        long long port = 0;
        bson_t shard;

        if (!BSON_ITER_HOLDS_DOCUMENT(&shards))
            continue;
        bson_iter_document(&shards, &len, &data);
        if (!bson_init_static(&shard, data, len))
            continue;
        memset(sh, 0, sizeof *sh);
        th__copy_utf8(&shard, "name", sh->name, sizeof sh->name);
        th__copy_utf8(&shard, "uri", sh->uri, sizeof sh->uri);
        if (th__json_int(&shard, "port", 1, 65535, &port))
            sh->port = (int)port;
        if (sh->name[0] && sh->uri[0])
            s->shard_count++;
    }
}

const char *th_sim_shard_uri(const th_sim_t *s, const char *name)
{
    if (s == NULL || name == NULL)
        return NULL;
    for (int k = 0; k < s->shard_count; k++)
        if (strcmp(s->shards[k].name, name) == 0)
            return s->shards[k].uri;
    return NULL;
}

/* Reads the port file; false while it is missing or incomplete. */
static bool th__sim_read_ports(th_sim_t *s, const char *port_file)
{
    bson_error_t error;
    bson_t *doc = NULL;
    size_t len = 0;
    long long mongo = 0;
    long long control = 0;
    long long pid = 0;
    bool ok = false;
    char *text = th_read_file_len(port_file, &len);

    if (text == NULL || len == 0)
        goto out_free_text;
    doc = bson_new_from_json((const uint8_t *)text, (ssize_t)len, &error);
    if (doc == NULL)
        goto out_free_text;
    if (!th__json_int(doc, "mongo_port", 1, 65535, &mongo) ||
        !th__json_int(doc, "control_port", 1, 65535, &control))
        goto out_destroy_doc;
    if (th__json_int(doc, "pid", 1, INT32_MAX, &pid) && pid != s->pid)
        th__log("th_sim_start", "port file says pid %lld, we started %ld",
                pid, (long)s->pid);
    s->mongo_port = (int)mongo;
    s->control_port = (int)control;
    th__sim_read_uris(s, doc);
    ok = true;
out_destroy_doc:
    bson_destroy(doc);
out_free_text:
    free(text);
    return ok;
}

bool th_sim_start(th_sim_t *s, const char *dir, const char *scenario_json)
{
    char script[PATH_MAX];
    char port_file[PATH_MAX];
    char scenario[PATH_MAX];
    char out_path[PATH_MAX];
    char log_path[PATH_MAX];
    const char *argv[8];
    static const char *const env[] = {
        "PYTHONUNBUFFERED=1",
        "PYTHONDONTWRITEBYTECODE=1",
        NULL,
    };
    th_proc_t p;
    long long deadline;
    int a = 0;

    if (s == NULL)
        return false;
    memset(s, 0, sizeof *s);
    if (dir == NULL || !th__is_dir(dir)) {
        th__log("th_sim_start", "%s: not a directory",
                dir != NULL ? dir : "(null)");
        return false;
    }
    if (!th_sim_script(script, sizeof script))
        return false;
    if (access(script, R_OK) != 0) {
        th__log("th_sim_start", "%s: %s", script, strerror(errno));
        return false;
    }
    if (!th__mksubdir(dir, "sim", s->dir, sizeof s->dir)) {
        th__log("th_sim_start", "mkdir under %s: %s", dir, strerror(errno));
        s->dir[0] = '\0';
        return false;
    }
    if (!th__fmt(port_file, sizeof port_file, "%s/sim.port", s->dir) ||
        !th__fmt(scenario, sizeof scenario, "%s/scenario.json", s->dir) ||
        !th__fmt(out_path, sizeof out_path, "%s/sim.out", s->dir) ||
        !th__fmt(log_path, sizeof log_path, "%s/sim.log", s->dir))
        return false;
    argv[a++] = TH_PYTHON;
    argv[a++] = script;
    argv[a++] = "--port-file";
    argv[a++] = port_file;
    if (scenario_json != NULL) {
        if (!th_write_file(scenario, scenario_json, strlen(scenario_json)))
            return false;
        argv[a++] = "--scenario";
        argv[a++] = scenario;
    }
    argv[a] = NULL;

    if (!th_proc_spawn_to(&p, s->dir, argv, env, out_path, log_path))
        return false;
    s->pid = p.pid;
    deadline = th_now_ms() + TH_SIM_READY_MS;
    for (;;) {
        if (th__sim_read_ports(s, port_file))
            break;
        if (!th_proc_running(&p)) {
            th__log("th_sim_start", "mongosim exited (status %d) before "
                    "writing %s", th_proc_exit_code(&p), port_file);
            th_dump_file(log_path);
            s->pid = 0;
            return false;
        }
        if (th_now_ms() >= deadline) {
            th__log("th_sim_start", "no port file after %d ms",
                    TH_SIM_READY_MS);
            th_dump_file(log_path);
            th_proc_kill(&p);
            s->pid = 0;
            return false;
        }
        th_sleep_ms(20);
    }
    if (s->uri[0] == '\0' &&
        !th__fmt(s->uri, sizeof s->uri,
                 "mongodb://localhost:%d/?replicaSet=rs0", s->mongo_port)) {
        th_sim_stop(s);
        return false;
    }
    return true;
}

void th_sim_stop(th_sim_t *s)
{
    if (s != NULL)
        th__stop_pid(&s->pid, true);
}

struct th__buf {
    char *data;
    size_t len;
    size_t cap;
    bool too_big;
};

static size_t th__buf_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct th__buf *b = ud;
    size_t n = size * nmemb;

    if (n > TH_HTTP_MAX - b->len) {
        b->too_big = true;
        return 0;
    }
    if (b->len + n + 1 > b->cap) {
        size_t ncap = b->cap == 0 ? 4096 : b->cap;
        char *nd;

        while (ncap < b->len + n + 1)
            ncap *= 2;
        nd = realloc(b->data, ncap);
        if (nd == NULL)
            return 0;
        b->data = nd;
        b->cap = ncap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

char *th_sim_request(const th_sim_t *s, const char *method, const char *path,
                     const char *json_body, long *http_status)
{
    struct th__buf buf = {NULL, 0, 0, false};
    struct curl_slist *headers = NULL;
    char url[512];
    char *result = NULL;
    CURLcode rc;
    CURL *curl;

    if (http_status != NULL)
        *http_status = 0;
    if (s == NULL || s->control_port <= 0 || method == NULL || path == NULL)
        return NULL;
    if (!th__fmt(url, sizeof url, "http://127.0.0.1:%d%s%s", s->control_port,
                 path[0] == '/' ? "" : "/", path))
        return NULL;
    curl = curl_easy_init();
    if (curl == NULL)
        return NULL;
    headers = curl_slist_append(headers, "Content-Type: application/json");
    if (headers != NULL)
        headers = curl_slist_append(headers, "Expect:");
    if (headers == NULL)
        goto out_cleanup;
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, th__buf_write);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &buf);
    if (json_body != NULL || strcmp(method, "POST") == 0) {
        const char *body = json_body != NULL ? json_body : "";

        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    else if (strcmp(method, "GET") == 0 && json_body != NULL)
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, "GET");

    rc = curl_easy_perform(curl);
    if (rc != CURLE_OK) {
        th__log("th_sim_request", "%s %s: %s%s", method, url,
                curl_easy_strerror(rc),
                buf.too_big ? " (response too large)" : "");
        goto out_cleanup;
    }
    if (http_status != NULL)
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, http_status);
    result = buf.data != NULL ? buf.data : strdup("");
    buf.data = NULL;
out_cleanup:
    free(buf.data);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    return result;
}
