/*
 * bench_source - a change-stream source that is never the bottleneck.
 *
 * It speaks just enough of the MongoDB wire protocol for libmongoc 1.23: the
 * legacy OP_QUERY handshake, then OP_MSG for hello, ping, buildInfo, find
 * (the oplog window), aggregate ($changeStream), getMore, killCursors and
 * endSessions. Every getMore is answered with one pre-built batch of insert
 * events: the reply is encoded once per connection, and each answer only
 * writes the fields that change (the token's hex, clusterTime, wallTime, the
 * document's _id and seq, the postBatchResumeToken, the request id), so the
 * source's CPU per event is a few dozen bytes of stores. The stream has no
 * end: the readers stop at their own count.
 *
 *   bench_source --doc-bytes B [--batch-bytes N] [--port-file F]
 *
 * It listens on 127.0.0.1 (an ephemeral port, written to F, or printed),
 * serves each connection on a thread of its own, and exits on SIGTERM or
 * SIGINT after printing its own CPU time to stderr.
 *
 * Not part of tokenwatch: make bench builds it.
 */
#include <bson/bson.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define OP_REPLY 1
#define OP_QUERY 2004
#define OP_MSG 2013
#define MAX_MESSAGE (48 * 1000 * 1000)
#define TOKEN_HEX_LEN 56
#define CURSOR_ID 4242

/* Markers written where a value changes per event; found once by search. */
#define MARK_TOKEN "82MMMMMMMMMMMMMMMM2B022C0100296E5A1004SSSSSSSSSSSSSSSS04"
#define MARK_SEQ INT64_C(0x5E0C5E0C5E0C5E0C)
#define MARK_T 0x7E7E7E7Eu
#define MARK_I 0x6E6E6E6Eu
#define MARK_WALL INT64_C(0x3A3A3A3A3A3A3A3A)

typedef struct {
    size_t doc_bytes;   /* size of fullDocument */
    size_t batch_bytes; /* a getMore reply holds events up to this size */
    int port;
} source_opts_t;

/* Where, in the encoded getMore reply, each per-event value lives. */
typedef struct {
    uint8_t *msg; /* the whole OP_MSG, header included */
    size_t len;
    int events;
    size_t *token; /* offset of each event's 56 hex digits */
    size_t *ts;    /* each event's clusterTime (8 bytes) */
    size_t *wall;  /* each event's wallTime */
    size_t *seq;   /* three per event: documentKey._id, fullDocument _id, seq */
    size_t pbrt;   /* the postBatchResumeToken's hex */
    size_t op_time;
} batch_t;

static source_opts_t g_opts;
static volatile sig_atomic_t g_stop;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
/* The stream's position: one stream, shared by every cursor. */
static uint64_t g_seq;
static uint32_t g_t, g_i;
static size_t g_event_bytes;
static int g_batch_events;

static void die(const char *what)
{
    fprintf(stderr, "bench_source: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static void put_le64(uint8_t *p, uint64_t v)
{
    put_le32(p, (uint32_t)v);
    put_le32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static void put_hex(char *out, uint64_t v, int digits)
{
    static const char hex[] = "0123456789ABCDEF";

    for (int k = digits - 1; k >= 0; k--) {
        out[k] = hex[v & 15];
        v >>= 4;
    }
}

static void append_event(bson_t *array, const char *key, const char *pad)
{
    bson_t ev, child;

    bson_append_document_begin(array, key, -1, &ev);
    bson_append_document_begin(&ev, "_id", -1, &child);
    BSON_APPEND_UTF8(&child, "_data", MARK_TOKEN);
    bson_append_document_end(&ev, &child);
    BSON_APPEND_UTF8(&ev, "operationType", "insert");
    BSON_APPEND_TIMESTAMP(&ev, "clusterTime", MARK_T, MARK_I);
    BSON_APPEND_DATE_TIME(&ev, "wallTime", MARK_WALL);
    bson_append_document_begin(&ev, "fullDocument", -1, &child);
    BSON_APPEND_INT64(&child, "_id", MARK_SEQ);
    BSON_APPEND_INT64(&child, "seq", MARK_SEQ);
    BSON_APPEND_UTF8(&child, "note", "bench");
    BSON_APPEND_UTF8(&child, "pad", pad);
    bson_append_document_end(&ev, &child);
    bson_append_document_begin(&ev, "ns", -1, &child);
    BSON_APPEND_UTF8(&child, "db", "bench");
    BSON_APPEND_UTF8(&child, "coll", "events");
    bson_append_document_end(&ev, &child);
    bson_append_document_begin(&ev, "documentKey", -1, &child);
    BSON_APPEND_INT64(&child, "_id", MARK_SEQ);
    bson_append_document_end(&ev, &child);
    bson_append_document_end(array, &ev);
}

/* fullDocument is 4+1 + (_id 14) + (seq 14) + (note 17) + pad (11 + n). */
static char *make_pad(size_t doc_bytes)
{
    size_t fixed = 5 + 14 + 14 + 17 + 11, n = doc_bytes > fixed ? doc_bytes - fixed : 1;
    char *pad = malloc(n + 1);

    if (!pad)
        die("malloc");
    for (size_t k = 0; k < n; k++)
        pad[k] = (char)('a' + k % 26);
    pad[n] = '\0';
    return pad;
}

/* Offsets of every occurrence of a marker, in order. */
static size_t find_all(const uint8_t *buf, size_t len, const void *mark, size_t mlen,
                       size_t *out, size_t cap)
{
    size_t n = 0;
    const uint8_t *p = buf, *end = buf + len;

    while (p < end) {
        const uint8_t *hit = memmem(p, (size_t)(end - p), mark, mlen);

        if (!hit)
            break;
        if (n == cap) {
            fprintf(stderr, "bench_source: marker found too often\n");
            exit(1);
        }
        out[n++] = (size_t)(hit - buf);
        p = hit + mlen;
    }
    return n;
}

static void reply_doc(bson_t *doc, int events, const char *pad)
{
    bson_t cursor, array;
    char key[16];

    bson_init(doc);
    bson_append_document_begin(doc, "cursor", -1, &cursor);
    bson_append_array_begin(&cursor, "nextBatch", -1, &array);
    for (int k = 0; k < events; k++) {
        snprintf(key, sizeof key, "%d", k);
        append_event(&array, key, pad);
    }
    bson_append_array_end(&cursor, &array);
    BSON_APPEND_INT64(&cursor, "id", CURSOR_ID);
    BSON_APPEND_UTF8(&cursor, "ns", "bench.events");
    bson_append_document_begin(&cursor, "postBatchResumeToken", -1, &array);
    BSON_APPEND_UTF8(&array, "_data", MARK_TOKEN);
    bson_append_document_end(&cursor, &array);
    bson_append_document_end(doc, &cursor);
    BSON_APPEND_DOUBLE(doc, "ok", 1.0);
    BSON_APPEND_TIMESTAMP(doc, "operationTime", MARK_T, MARK_I);
}

static void wrap_msg(const bson_t *doc, uint8_t **msg, size_t *len)
{
    *len = 16 + 4 + 1 + doc->len;
    *msg = malloc(*len);
    if (!*msg)
        die("malloc");
    put_le32(*msg, (uint32_t)*len);
    put_le32(*msg + 4, 0);
    put_le32(*msg + 8, 0);
    put_le32(*msg + 12, OP_MSG);
    put_le32(*msg + 16, 0);
    (*msg)[20] = 0;
    memcpy(*msg + 21, bson_get_data(doc), doc->len);
}

static void batch_build(batch_t *b, const source_opts_t *opts)
{
    char *pad = make_pad(opts->doc_bytes);
    bson_t one, doc;
    uint8_t ts_mark[8];
    uint64_t seq_mark = (uint64_t)MARK_SEQ, wall_mark = (uint64_t)MARK_WALL;
    size_t n, ts_n, cap;

    /* One event's size decides how many fit the batch. */
    reply_doc(&one, 1, pad);
    reply_doc(&doc, 0, pad);
    g_event_bytes = one.len - doc.len;
    bson_destroy(&one);
    bson_destroy(&doc);
    b->events = (int)(opts->batch_bytes / g_event_bytes);
    if (b->events < 1)
        b->events = 1;
    g_batch_events = b->events;
    reply_doc(&doc, b->events, pad);
    wrap_msg(&doc, &b->msg, &b->len);
    bson_destroy(&doc);
    free(pad);

    cap = (size_t)b->events * 3 + 2;
    b->token = calloc(cap, sizeof *b->token);
    b->ts = calloc(cap, sizeof *b->ts);
    b->wall = calloc(cap, sizeof *b->wall);
    b->seq = calloc(cap, sizeof *b->seq);
    if (!b->token || !b->ts || !b->wall || !b->seq)
        die("calloc");
    put_le32(ts_mark, MARK_I);
    put_le32(ts_mark + 4, MARK_T);
    n = find_all(b->msg, b->len, MARK_TOKEN, TOKEN_HEX_LEN, b->token, cap);
    ts_n = find_all(b->msg, b->len, ts_mark, 8, b->ts, cap);
    if (n != (size_t)b->events + 1 || ts_n != (size_t)b->events + 1 ||
        find_all(b->msg, b->len, &wall_mark, 8, b->wall, cap) != (size_t)b->events ||
        find_all(b->msg, b->len, &seq_mark, 8, b->seq, cap) != (size_t)b->events * 3) {
        fprintf(stderr, "bench_source: markers not where expected\n");
        exit(1);
    }
    b->pbrt = b->token[b->events];
    b->op_time = b->ts[b->events];
}

/* Takes the next `count` positions of the stream: (t, i) follow the wall
 * clock, i counting within a second. */
static void take_positions(int count, uint64_t *seq0, uint32_t *t0, uint32_t *i0)
{
    uint32_t now = (uint32_t)time(NULL);

    pthread_mutex_lock(&g_lock);
    if (now > g_t) {
        g_t = now;
        g_i = 0;
    }
    *seq0 = g_seq + 1;
    *t0 = g_t;
    *i0 = g_i + 1;
    g_seq += (uint64_t)count;
    g_i += (uint32_t)count;
    pthread_mutex_unlock(&g_lock);
}

static void write_position(uint8_t *tok, uint8_t *ts, uint32_t t, uint32_t i, uint64_t seq)
{
    put_hex((char *)tok + 2, t, 8);
    put_hex((char *)tok + 10, i, 8);
    put_hex((char *)tok + 38, seq, 16);
    put_le32(ts, i);
    put_le32(ts + 4, t);
}

static void batch_fill(batch_t *b, int32_t response_to)
{
    uint64_t seq0;
    uint32_t t, i;
    int64_t wall;

    take_positions(b->events, &seq0, &t, &i);
    wall = (int64_t)t * 1000;
    for (int k = 0; k < b->events; k++) {
        uint64_t seq = seq0 + (uint64_t)k;

        write_position(b->msg + b->token[k], b->msg + b->ts[k], t, i + (uint32_t)k, seq);
        put_le64(b->msg + b->wall[k], (uint64_t)wall);
        for (int j = 0; j < 3; j++)
            put_le64(b->msg + b->seq[3 * k + j], seq);
    }
    write_position(b->msg + b->pbrt, b->msg + b->op_time, t,
                   i + (uint32_t)b->events - 1, seq0 + (uint64_t)b->events - 1);
    put_le32(b->msg + 4, (uint32_t)seq0);
    put_le32(b->msg + 8, (uint32_t)response_to);
}

static bool read_full(int fd, uint8_t *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = read(fd, buf, len);

        if (n <= 0) {
            if (n < 0 && errno == EINTR)
                continue;
            return false;
        }
        buf += n;
        len -= (size_t)n;
    }
    return true;
}

static bool write_full(int fd, const uint8_t *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);

        if (n <= 0) {
            if (n < 0 && errno == EINTR)
                continue;
            return false;
        }
        buf += n;
        len -= (size_t)n;
    }
    return true;
}

static void append_now(bson_t *doc, const char *key)
{
    uint32_t t, i;

    pthread_mutex_lock(&g_lock);
    t = g_t ? g_t : (uint32_t)time(NULL);
    i = g_i;
    pthread_mutex_unlock(&g_lock);
    BSON_APPEND_TIMESTAMP(doc, key, t, i);
}

static void hello_reply(const bson_t *cmd, bson_t *out)
{
    char host[32];
    bson_t hosts;

    snprintf(host, sizeof host, "127.0.0.1:%d", g_opts.port);
    BSON_APPEND_BOOL(out, "ismaster", true);
    BSON_APPEND_BOOL(out, "isWritablePrimary", true);
    if (bson_has_field(cmd, "helloOk"))
        BSON_APPEND_BOOL(out, "helloOk", true);
    BSON_APPEND_UTF8(out, "setName", "bench");
    bson_append_array_begin(out, "hosts", -1, &hosts);
    BSON_APPEND_UTF8(&hosts, "0", host);
    bson_append_array_end(out, &hosts);
    BSON_APPEND_UTF8(out, "primary", host);
    BSON_APPEND_UTF8(out, "me", host);
    BSON_APPEND_INT32(out, "maxBsonObjectSize", 16 * 1024 * 1024);
    BSON_APPEND_INT32(out, "maxMessageSizeBytes", MAX_MESSAGE);
    BSON_APPEND_INT32(out, "maxWriteBatchSize", 100000);
    BSON_APPEND_DATE_TIME(out, "localTime", (int64_t)time(NULL) * 1000);
    BSON_APPEND_INT32(out, "logicalSessionTimeoutMinutes", 30);
    BSON_APPEND_INT32(out, "minWireVersion", 0);
    BSON_APPEND_INT32(out, "maxWireVersion", 21); /* MongoDB 7.0 */
    BSON_APPEND_BOOL(out, "readOnly", false);
}

/* find on local.oplog.rs: one entry, a day old going forward, now going
 * backward, so the guard sees a day's window. */
static void find_reply(const bson_t *cmd, bson_t *out)
{
    bson_iter_t it;
    bson_t cursor, batch, entry;
    bool newest = false;
    uint32_t now = (uint32_t)time(NULL);

    if (bson_iter_init_find(&it, cmd, "sort") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
        bson_iter_t sort;

        if (bson_iter_recurse(&it, &sort) && bson_iter_next(&sort))
            newest = bson_iter_as_int64(&sort) < 0;
    }
    bson_append_document_begin(out, "cursor", -1, &cursor);
    bson_append_array_begin(&cursor, "firstBatch", -1, &batch);
    bson_append_document_begin(&batch, "0", -1, &entry);
    if (newest)
        append_now(&entry, "ts");
    else
        BSON_APPEND_TIMESTAMP(&entry, "ts", now - 86400, 1);
    BSON_APPEND_DATE_TIME(&entry, "wall", (int64_t)(newest ? now : now - 86400) * 1000);
    BSON_APPEND_UTF8(&entry, "op", "n");
    bson_append_document_end(&batch, &entry);
    bson_append_array_end(&cursor, &batch);
    BSON_APPEND_INT64(&cursor, "id", 0);
    BSON_APPEND_UTF8(&cursor, "ns", "local.oplog.rs");
    bson_append_document_end(out, &cursor);
}

static void aggregate_reply(bson_t *out)
{
    bson_t cursor, batch, pbrt;
    char token[TOKEN_HEX_LEN + 1] = MARK_TOKEN;
    uint64_t seq;
    uint32_t t, i;

    take_positions(0, &seq, &t, &i);
    put_hex(token + 2, t, 8);
    put_hex(token + 10, i - 1, 8);
    put_hex(token + 38, seq - 1, 16);
    bson_append_document_begin(out, "cursor", -1, &cursor);
    bson_append_array_begin(&cursor, "firstBatch", -1, &batch);
    bson_append_array_end(&cursor, &batch);
    BSON_APPEND_INT64(&cursor, "id", CURSOR_ID);
    BSON_APPEND_UTF8(&cursor, "ns", "bench.events");
    bson_append_document_begin(&cursor, "postBatchResumeToken", -1, &pbrt);
    BSON_APPEND_UTF8(&pbrt, "_data", token);
    bson_append_document_end(&cursor, &pbrt);
    bson_append_document_end(out, &cursor);
}

/* The reply to any command but getMore. */
static void command_reply(const char *name, const bson_t *cmd, bson_t *out)
{
    bson_init(out);
    if (!strcasecmp(name, "hello") || !strcasecmp(name, "ismaster"))
        hello_reply(cmd, out);
    else if (!strcasecmp(name, "buildinfo"))
        BSON_APPEND_UTF8(out, "version", "7.0.0");
    else if (!strcmp(name, "find"))
        find_reply(cmd, out);
    else if (!strcmp(name, "aggregate"))
        aggregate_reply(out);
    BSON_APPEND_DOUBLE(out, "ok", 1.0);
    append_now(out, "operationTime");
}

typedef struct {
    int fd;
    batch_t batch;
    bool have_batch;
    uint8_t *in;
    size_t in_cap;
} conn_t;

static bool send_doc(conn_t *c, int32_t request_id, int32_t opcode, const bson_t *doc)
{
    uint8_t head[36];
    size_t head_len = opcode == OP_MSG ? 21 : 36;

    put_le32(head, (uint32_t)(head_len + doc->len));
    put_le32(head + 4, 1);
    put_le32(head + 8, (uint32_t)request_id);
    put_le32(head + 12, (uint32_t)opcode);
    if (opcode == OP_MSG) {
        put_le32(head + 16, 0);
        head[20] = 0;
    } else { /* OP_REPLY: flags, cursor id, starting from, number returned */
        memset(head + 16, 0, 16);
        put_le32(head + 32, 1);
    }
    return write_full(c->fd, head, head_len) &&
           write_full(c->fd, bson_get_data(doc), doc->len);
}

/* The command document of a request, and the opcode to answer with. */
static bool parse_request(const uint8_t *msg, size_t len, bson_t *cmd, int32_t *reply_op)
{
    int32_t opcode = (int32_t)get_le32(msg + 12);
    const uint8_t *p;
    size_t left;

    if (opcode == OP_MSG) {
        if (len < 21 || msg[20] != 0)
            return false;
        p = msg + 21;
        *reply_op = OP_MSG;
    } else if (opcode == OP_QUERY) {
        const uint8_t *name = msg + 20;
        const uint8_t *nul = memchr(name, 0, len - 20);

        if (!nul)
            return false;
        p = nul + 1 + 8;
        *reply_op = OP_REPLY;
    } else {
        return false;
    }
    left = (size_t)(msg + len - p);
    if (left < 5 || get_le32(p) > left)
        return false;
    return bson_init_static(cmd, p, get_le32(p));
}

static bool serve_one(conn_t *c, size_t len)
{
    bson_t cmd, reply;
    bson_iter_t it;
    int32_t reply_op, request_id = (int32_t)get_le32(c->in + 4);
    const char *name;
    bool ok;

    if (!parse_request(c->in, len, &cmd, &reply_op) || !bson_iter_init(&it, &cmd) ||
        !bson_iter_next(&it))
        return false;
    name = bson_iter_key(&it);
    if (!strcmp(name, "getMore")) {
        if (!c->have_batch) {
            batch_build(&c->batch, &g_opts);
            c->have_batch = true;
        }
        batch_fill(&c->batch, request_id);
        return write_full(c->fd, c->batch.msg, c->batch.len);
    }
    command_reply(name, &cmd, &reply);
    ok = send_doc(c, request_id, reply_op, &reply);
    bson_destroy(&reply);
    return ok;
}

static void *serve(void *arg)
{
    conn_t *c = arg;
    uint8_t head[4];

    while (!g_stop && read_full(c->fd, head, 4)) {
        size_t len = get_le32(head);

        if (len < 16 || len > MAX_MESSAGE)
            break;
        if (len > c->in_cap) {
            free(c->in);
            c->in = malloc(len);
            if (!c->in)
                break;
            c->in_cap = len;
        }
        memcpy(c->in, head, 4);
        if (!read_full(c->fd, c->in + 4, len - 4) || !serve_one(c, len))
            break;
    }
    close(c->fd);
    free(c->in);
    if (c->have_batch) {
        free(c->batch.msg);
        free(c->batch.token);
        free(c->batch.ts);
        free(c->batch.wall);
        free(c->batch.seq);
    }
    free(c);
    return NULL;
}

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static int listen_on(int *port)
{
    struct sockaddr_in addr = {.sin_family = AF_INET};
    socklen_t alen = sizeof addr;
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

    if (fd < 0)
        die("socket");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons((uint16_t)*port);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 64) < 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &alen) < 0)
        die("listen");
    *port = ntohs(addr.sin_port);
    return fd;
}

static void report_cpu(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    fprintf(stderr, "bench_source: cpu %.3f s, events %llu, event %zu bytes, %d a batch\n",
            (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6,
            (unsigned long long)g_seq, g_event_bytes, g_batch_events);
}

static void parse_args(int argc, char **argv, const char **port_file)
{
    g_opts.doc_bytes = 100;
    g_opts.batch_bytes = 4 * 1024 * 1024;
    for (int k = 1; k + 1 < argc; k += 2) {
        if (!strcmp(argv[k], "--doc-bytes"))
            g_opts.doc_bytes = strtoul(argv[k + 1], NULL, 10);
        else if (!strcmp(argv[k], "--batch-bytes"))
            g_opts.batch_bytes = strtoul(argv[k + 1], NULL, 10);
        else if (!strcmp(argv[k], "--port-file"))
            *port_file = argv[k + 1];
        else if (!strcmp(argv[k], "--port"))
            g_opts.port = atoi(argv[k + 1]);
        else {
            fprintf(stderr, "usage: bench_source [--doc-bytes B] [--batch-bytes N] "
                            "[--port P] [--port-file F]\n");
            exit(2);
        }
    }
}

int main(int argc, char **argv)
{
    const char *port_file = NULL;
    struct sigaction sa = {.sa_handler = on_signal};
    int lfd;

    parse_args(argc, argv, &port_file);
    signal(SIGPIPE, SIG_IGN);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    lfd = listen_on(&g_opts.port);
    if (port_file) {
        FILE *f = fopen(port_file, "w");

        if (!f || fprintf(f, "%d\n", g_opts.port) < 0 || fclose(f) != 0)
            die(port_file);
    } else {
        printf("%d\n", g_opts.port);
        fflush(stdout);
    }
    while (!g_stop) {
        int fd = accept(lfd, NULL, NULL), one = 1;
        pthread_t th;
        conn_t *c;

        if (fd < 0)
            continue; /* EINTR on a stop */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c = calloc(1, sizeof *c);
        if (!c)
            die("calloc");
        c->fd = fd;
        if (pthread_create(&th, NULL, serve, c) != 0)
            die("pthread_create");
        pthread_detach(th);
    }
    report_cpu();
    return 0;
}
