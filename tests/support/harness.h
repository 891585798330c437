/*
 * harness.h - integration-test harness for tokenwatch (prefix th_).
 *
 * Starts and stops the real processes an integration test needs: a
 * redis-server, the scripted MongoDB (tests/sim/mongosim.py), and the
 * tokenwatch binary itself. Each test owns its processes: every server
 * listens on a free loopback port picked at start, keeps its files in the
 * test's own temporary directory, and is stopped by its process id.
 *
 * Conventions
 *  - Functions that can fail return bool (or NULL / a negative number where
 *    stated) and print one line prefixed with the function name to stderr;
 *    Criterion shows it next to the failing test.
 *  - Every stop/kill/free function is idempotent and a no-op on a zeroed
 *    struct or NULL, so it can sit in a Criterion .fini hook unconditionally.
 *  - Strings returned as `char *` are malloc'd and owned by the caller
 *    (free()); `const char *` results are borrowed.
 *  - Children run in their own process group, with cwd = the given dir,
 *    stdin = /dev/null, no inherited file descriptors beyond 0-2, default
 *    signal dispositions, and PR_SET_PDEATHSIG=SIGKILL: if the test process
 *    dies without cleaning up (crash, timeout), the kernel kills them.
 *  - Not thread-safe; call from the test's thread.
 *
 * Locations: th_source_dir() is $TW_SOURCE_DIR, else the compile-time macro
 * TW_SOURCE_DIR; th_binary() is $TW_BINARY, else the macro TW_BINARY.
 * Setting TW_TEST_KEEP=1 makes th_rmtree() keep (and print) the directory.
 */
#ifndef TOKENWATCH_TESTS_HARNESS_H
#define TOKENWATCH_TESTS_HARNESS_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <hiredis/hiredis.h>

#ifndef PATH_MAX
#define PATH_MAX 4096
#endif

/* ------------------------------------------------------------------ */
/* Files and directories                                               */

/* Creates $TMPDIR/tokenwatch-test-XXXXXX (or /tmp/...) and writes its path
 * to out (n bytes). */
bool th_tmpdir(char *out, size_t n);

/* Removes dir recursively. Refuses anything whose last component does not
 * start with "tokenwatch-test-" (so a zeroed path is harmless). Keeps the
 * directory when TW_TEST_KEEP is set in the environment. NULL/"" ok. */
void th_rmtree(const char *dir);

/* Whole file, NUL-terminated (embedded NULs are kept, use len_out).
 * NULL if missing or unreadable. len_out may be NULL. Files over 64 MiB
 * are refused. */
char *th_read_file_len(const char *path, size_t *len_out);
char *th_read_file(const char *path);

/* Writes len bytes atomically (temp file + rename). */
bool th_write_file(const char *path, const char *data, size_t len);

/* Prints "---- path ----" and the file's last 64 KiB to stderr. */
void th_dump_file(const char *path);

/* th_dump_file() for each regular file directly in dir (logs, captured
 * output), skipping binary-looking files. */
void th_dump_dir(const char *dir);

/* DIR/NAME into out; false if it does not fit. */
bool th_path(char *out, size_t n, const char *dir, const char *name);

/* Locations, see above. Borrowed; NULL if neither env nor macro is set. */
const char *th_source_dir(void);
const char *th_binary(void);

/* ------------------------------------------------------------------ */
/* Ports and time                                                       */

/* A port that was free on 127.0.0.1 a moment ago (bind :0, read, close);
 * -1 on error. Another process may take it before the server binds it:
 * the starters below retry with a new port. */
int th_free_port(void);

void th_sleep_ms(int ms);

/* Monotonic milliseconds. */
long long th_now_ms(void);

/* Calls pred(ctx) at once and then every 20 ms until it returns true
 * (-> true) or timeout_ms has passed (-> false, after one last call). */
bool th_wait_until(bool (*pred)(void *ctx), void *ctx, int timeout_ms);

/* ------------------------------------------------------------------ */
/* Processes                                                            */

typedef struct {
    pid_t pid;                /* > 0 once spawned; kept after exit */
    char out_path[PATH_MAX];  /* captured stdout */
    char err_path[PATH_MAX];  /* captured stderr */
    int status;               /* waitpid status, valid when exited */
    bool exited;              /* reaped */
} th_proc_t;

/* fork + exec argv (argv[0] searched in PATH unless it contains '/').
 * stdout/stderr go to fresh files DIR/<name>-<k>.out / .err (unique within
 * dir), stdin is /dev/null, cwd is dir, the child leads its own process
 * group. Environment: the parent's minus every TOKENWATCH_* variable and
 * minus the keys that env_extra sets, plus env_extra ("K=V", NULL-ended,
 * may be NULL). Returns false (nothing left running) if exec fails. */
bool th_proc_spawn(th_proc_t *p, const char *dir, const char *const argv[],
                   const char *const env_extra[]);

/* Same, with explicit output files (opened O_APPEND, created if needed);
 * err_path may equal out_path. */
bool th_proc_spawn_to(th_proc_t *p, const char *dir, const char *const argv[],
                      const char *const env_extra[], const char *out_path,
                      const char *err_path);

/* true once the process has exited (within timeout_ms; 0 = just check;
 * < 0 = wait forever). On exit, what is left of its process group is
 * SIGKILLed, then it is reaped and status/exited filled. true at once if
 * already reaped; false for a zeroed struct. */
bool th_proc_wait(th_proc_t *p, int timeout_ms);

/* true while spawned and not yet exited (reaps it if it just exited). */
bool th_proc_running(th_proc_t *p);

/* Exit code; -1 if killed by a signal or not exited. */
int th_proc_exit_code(const th_proc_t *p);

/* Signal number that killed it; 0 otherwise. */
int th_proc_term_signal(const th_proc_t *p);

/* kill(pid, sig) if it is still ours and not reaped. Not the group. */
void th_proc_signal(th_proc_t *p, int sig);

/* SIGTERM, wait up to timeout_ms, then th_proc_kill(). Idempotent. */
void th_proc_stop(th_proc_t *p, int timeout_ms);

/* SIGKILL to its process group and reap. Idempotent; zeroed struct ok. */
void th_proc_kill(th_proc_t *p);

/* Captured output (malloc'd; NULL if missing). */
char *th_proc_stdout(const th_proc_t *p);
char *th_proc_stderr(const th_proc_t *p);

/* Runs argv to completion in dir. Returns the exit code; -1 if it could
 * not be started or was killed by a signal; -2 if it was still running
 * after timeout_ms (then it is killed). out/err (may be NULL) receive the
 * captured output (malloc'd, "" if empty) whatever the result. */
int th_run(const char *dir, const char *const argv[],
           const char *const env_extra[], int timeout_ms, char **out,
           char **err);

/* ------------------------------------------------------------------ */
/* Redis                                                                */

typedef struct {
    pid_t pid;           /* 0 when not running */
    int port;
    char dir[PATH_MAX];  /* its own DIR/redis-<k>: redis.log, redis.out,
                            appendonlydir/ */
    bool aof;
} th_redis_t;

/* Makes a fresh subdirectory DIR/redis-<k> (so several servers can share a
 * test's dir) and starts redis-server (PATH, else /usr/bin/redis-server)
 * in it on a free port:
 * --bind 127.0.0.1 --dir r->dir --save '' --appendonly yes|no
 * (--appendfsync always with aof) --logfile DIR/redis.log
 * --enable-debug-command local, and waits (5 s) until it answers PING and
 * its INFO process_id is the pid we started. Retries up to 5 ports. */
bool th_redis_start(th_redis_t *r, const char *dir, bool aof);

/* SIGTERM (Redis fsyncs the AOF and exits), wait up to 5 s, else SIGKILL.
 * Idempotent; zeroed struct ok. port/dir/aof are kept for restart. */
void th_redis_stop(th_redis_t *r);

/* SIGKILL now (a crash: no shutdown work). Keeps port/dir/aof. */
void th_redis_kill9(th_redis_t *r);

/* Stops it if running, then starts it again on the same port and dir (AOF
 * data comes back). Retries for ~5 s if the port is momentarily taken. */
bool th_redis_restart(th_redis_t *r);

/* "redis://127.0.0.1:PORT/0" into out. */
bool th_redis_url(const th_redis_t *r, char *out, size_t n);

/* New connection (1 s connect timeout, 5 s command timeout); caller
 * redisFree()s. NULL on failure. */
redisContext *th_redis_connect(const th_redis_t *r);

/* One command on a fresh connection. The reply (may be an error reply) is
 * the caller's: freeReplyObject(). NULL if no reply came. */
redisReply *th_redis_cmd(const th_redis_t *r, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* HGET as a malloc'd string; NULL if missing or on error. */
char *th_redis_hget(const th_redis_t *r, const char *key, const char *field);

/* GET as a malloc'd string; NULL if missing or on error. */
char *th_redis_get(const th_redis_t *r, const char *key);

/* XLEN; -1 on error. */
long long th_redis_xlen(const th_redis_t *r, const char *key);

/* ------------------------------------------------------------------ */
/* MongoDB simulator (tests/sim/mongosim.py)                           */

#define TH_SIM_SHARDS_MAX 4

/* One shard of a simulated sharded cluster (profile "mongos"). */
typedef struct {
    char name[64];       /* "shard0" */
    int port;
    char uri[256];       /* mongodb://localhost:PORT/?replicaSet=NAME */
} th_sim_shard_t;

typedef struct {
    pid_t pid;           /* 0 when not running */
    int mongo_port;
    int control_port;
    char dir[PATH_MAX];  /* its own DIR/sim-<k>: scenario.json, sim.port,
                            sim.log (stderr), sim.out (stdout) */
    char uri[256];       /* the port file's "uri": mongodb://localhost:PORT/
                            ?replicaSet=rs0, or mongodb://localhost:PORT/ for
                            a mongos; the former if the file has none */
    int shard_count;     /* mongos: the first TH_SIM_SHARDS_MAX shards */
    th_sim_shard_t shards[TH_SIM_SHARDS_MAX];
} th_sim_t;

/* Path of mongosim.py under th_source_dir() into out. */
bool th_sim_script(char *out, size_t n);

/* Makes DIR/sim-<k> (s->dir), writes scenario_json (may be NULL) to
 * s->dir/scenario.json, runs /usr/bin/python3 SRC/tests/sim/mongosim.py
 * --port-file s->dir/sim.port [--scenario s->dir/scenario.json] with cwd
 * s->dir, and waits up to 10 s for the port file
 * {"mongo_port":N,"control_port":M,"pid":P,"uri":U,"shards":[...]} ("uri"
 * and "shards" optional). On failure sim.log is dumped
 * to stderr and nothing is left running. */
bool th_sim_start(th_sim_t *s, const char *dir, const char *scenario_json);

/* SIGTERM, wait up to 5 s, else SIGKILL. Idempotent; zeroed struct ok. */
void th_sim_stop(th_sim_t *s);

/* The direct URI of the shard called name (borrowed), or NULL. */
const char *th_sim_shard_uri(const th_sim_t *s, const char *name);

/* HTTP request to the control API (http://127.0.0.1:control_port PATH).
 * json_body may be NULL (sent as application/json otherwise). Returns the
 * response body (malloc'd, "" if empty) whatever the HTTP status, which
 * goes to *http_status (may be NULL; 0 on transport failure -> NULL). */
char *th_sim_request(const th_sim_t *s, const char *method, const char *path,
                     const char *json_body, long *http_status);

/* ------------------------------------------------------------------ */
/* Criterion helpers (need <criterion/criterion.h> at the point of use)  */

/* Asserts cond; on failure first dumps the file at path to stderr. */
#define th_assert_dump(cond, path, ...)        \
    do {                                       \
        bool th_ok_ = (cond);                  \
        if (!th_ok_)                           \
            th_dump_file(path);                \
        cr_assert(th_ok_, __VA_ARGS__);        \
    } while (0)

/* Asserts cond; on failure first dumps every file of dir to stderr. */
#define th_assert_dump_dir(cond, dir, ...)     \
    do {                                       \
        bool th_ok_ = (cond);                  \
        if (!th_ok_)                           \
            th_dump_dir(dir);                  \
        cr_assert(th_ok_, __VA_ARGS__);        \
    } while (0)

#endif /* TOKENWATCH_TESTS_HARNESS_H */
