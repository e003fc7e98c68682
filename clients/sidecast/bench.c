/* bench.c - `sidecast bench MODE`: many WebSocket connections from a few processes, against
 * the edge (sidecast.v1), nats-server's WebSocket listener (NATS protocol in WebSocket
 * frames) or a Node `ws` broadcast server (bench/peers/ws-broadcast.js); every server is fed
 * by the same NATS publisher. Modes (usage below and docs/CLI.md):
 *
 *   connect  open N connections as fast as they are accepted: handshakes/s (and per server
 *            CPU second), handshake latency
 *   idle     open N connections subscribed to a topic, hold them: server RSS per connection
 *   fanout   N subscribers of one or K topics, R messages/s published through NATS for S
 *            seconds: deliveries/s, loss and order, latency percentiles, server CPU/delivery
 *   publish  the publisher alone; tokens: mint distinct access tokens with a signing key
 *
 * Design (it replaces bench/wsbench.c): the parent forks --procs children before any thread
 * exists; each child runs --threads workers, each with its own epoll over non-blocking
 * sockets, a shared read buffer, and client frames built once (masked) where they do not
 * vary. Frames go through the ws library's codec (common/ws/ws_frame.h: ws_frame_decode with
 * a client's rules, the header encoder and masking; ws_deflate.h's ws_pmd_inflate for
 * compressed messages). Children report progress, "ready" and their final counts plus a
 * latency histogram through a pipe; the parent drives the phases through another (G: connect, S: stop), reads
 * the servers' CPU and RSS from /proc (--pid) at the edges of the window, runs the publisher,
 * prints a progress line on stderr about once a second and the result on stdout.
 * Publisher events are {"t":CLOCK_MONOTONIC ns,"i":per-topic counter,"pad":"x..."}: receivers
 * compute latency from t and loss/duplicates/order from i, twice: to the client's read (what
 * an application sees, including the load generator's own queueing behind the sockets it
 * reads first) and to the kernel's receipt of the frame in the client's socket (SO_TIMESTAMPNS:
 * what the server delivered when; a read that takes several frames dates them all by its last
 * segment). Loopback only; every wait has a deadline. */
#include "bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include <jansson.h>

#include "procstat.h" /* proc_cpu_s: the capacity tools read /proc the same way */
#include "bus.h"
#include "log.h"
#include "token.h"
#include "ws/ws_deflate.h"
#include "ws/ws_frame.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define MAX_CONNS_PROC 19000    /* per process: the open-file limit is 20,000 */
#define MAX_CONNS 200000
#define MAX_PROCS 32
#define MAX_THREADS 16
#define MAX_TOPICS 256
#define MAX_SOURCES 64
#define MAX_PIDS 16
#define MAX_STEPS 16
#define RBUF_SIZE (64 * 1024)   /* one read buffer per thread, reused by every connection */
#define PART_MAX (1024 * 1024)  /* largest server frame (nats-server coalesces MSGs) */
#define FRAME_PAYLOAD_MAX (PART_MAX - 16) /* largest server frame payload accepted */
#define NATS_PART_MAX (72 * 1024) /* an unfinished NATS message (max_payload 64 KiB) */
#define HEAD_MAX 4096
#define TOKEN_MAX 4096
#define TOPIC_MAX 100
#define MAX_EVENTS 512
#define TICK_MS 20
#define CLOSE_TIMEOUT_S 5.0
#define MAX_SECONDS 3600
#define ERR_PRINT_MAX 3
#define HIST_FINE 10000         /* latency: 10 µs buckets up to 100 ms ... */
#define HIST_COARSE 9900        /* ... then 1 ms buckets up to 10 s, then one overflow */
#define HIST_LEN (HIST_FINE + HIST_COARSE + 1)
/* Two histograms in one array: latency to the client's read, then (fan-out) latency to the
 * kernel's receipt of the frame in the client's socket (SO_TIMESTAMPNS). */
#define HIST_ALL (2 * HIST_LEN)
#define PUB_SIZE_MIN 48
#define PUB_SIZE_MAX 8192
#define PUB_RATE_MAX 1000000
#define PUB_TOTAL_MAX 20000000

enum target { T_SIDECAST, T_NATS, T_WS };
enum mode { M_CONNECT, M_IDLE, M_FANOUT };
static const char *const target_names[] = {"sidecast", "nats", "ws"};
static const char *const mode_names[] = {"connect", "idle", "fanout"};

/* ---- time and /proc ----------------------------------------------------------------------- */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double ns_s(int64_t ns) { return (double)ns / 1e9; }

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* VmRSS of pid in KiB, or -1 */
static long proc_rss_kib(long pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long v = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) v = strtol(line + 6, NULL, 10);
    fclose(f);
    return v;
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int raise_nofile(long need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
    if (rl.rlim_cur >= (rlim_t)need) return 0;
    if (rl.rlim_max < (rlim_t)need) return -1;
    rl.rlim_cur = (rlim_t)need;
    return setrlimit(RLIMIT_NOFILE, &rl);
}

/* ---- frames and fields (pure) ------------------------------------------------------------ */

/* A masked client frame of op with payload (len < 65536) into out (len + 8 bytes): the key's
 * bytes, most significant first, are the mask. */
static size_t cframe_build(uint8_t *out, uint8_t op, const void *payload, size_t len, uint32_t key)
{
    uint8_t mask[4] = {(uint8_t)(key >> 24), (uint8_t)(key >> 16), (uint8_t)(key >> 8),
                       (uint8_t)key};
    size_t h = ws_frame_header_encode(out, op, true, 0, len, mask);
    if (len) memcpy(out + h, payload, len);
    ws_frame_unmask(out + h, len, mask, 0);
    return h + len;
}

/* The unsigned decimal right after key in [p, p+n): 0 and *out, or -1. */
static int field_u64(const uint8_t *p, size_t n, const char *key, size_t kl, uint64_t *out)
{
    const uint8_t *k = memmem(p, n, key, kl);
    if (!k) return -1;
    const uint8_t *d = k + kl, *end = p + n;
    if (d >= end || *d < '0' || *d > '9') return -1;
    uint64_t v = 0;
    for (int i = 0; d < end && *d >= '0' && *d <= '9' && i < 20; d++, i++)
        v = v * 10 + (uint64_t)(*d - '0');
    *out = v;
    return 0;
}

static bool has_prefix(const uint8_t *p, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    return n >= l && memcmp(p, lit, l) == 0;
}

static size_t hist_bucket(int64_t lat_ns)
{
    int64_t us = lat_ns / 1000;
    size_t b = us < HIST_FINE * 10 ? (size_t)(us / 10)
               : us < 10000000     ? HIST_FINE + (size_t)((us - 100000) / 1000)
                                   : HIST_LEN - 1;
    return b >= HIST_LEN ? HIST_LEN - 1 : b;
}

static double hist_upper_ms(size_t b)
{
    if (b < HIST_FINE) return (double)(b + 1) * 0.01;
    if (b < HIST_LEN - 1) return 100.0 + (double)(b - HIST_FINE + 1);
    return 10000.0;
}

/* The latency (ms) at quantile q (bucket upper bounds). */
static double hist_quantile(const uint64_t *h, uint64_t total, double q)
{
    if (total == 0) return 0;
    uint64_t want = (uint64_t)(q * (double)total), seen = 0;
    if (want >= total) want = total - 1;
    for (size_t b = 0; b < HIST_LEN; b++) {
        seen += h[b];
        if (seen > want) return hist_upper_ms(b);
    }
    return 10000.0;
}

/* ---- options ------------------------------------------------------------------------------ */

/* One run's command line, checked. tokens (and the strings they point to) are cli_bench's;
 * nats and hist_file point into argv. Filled once, then passed down read-only: after the
 * fork each child keeps its own copy in its bench_proc. */
typedef struct bench_opts {
    int mode, target;
    char host[64];
    int port;
    char path[128];
    struct sockaddr_in addr; /* host:port, loopback */
    char **tokens;
    long ntokens;
    long conns, procs, threads, concurrency, ntopics, rate, size;
    double seconds, setup_timeout, drain;
    char topic[TOPIC_MAX + 1];
    char prefix[32]; /* NATS subject prefix of a topic ("events.") */
    const char *nats;
    long pids[MAX_PIDS];
    int npids;
    struct in_addr sources[MAX_SOURCES];
    int nsources;
    bool json, quiet, fast_close, deflate;
    const char *hist_file;
    long steps[MAX_STEPS]; /* idle: connection counts to stop at, ascending; the last is conns */
    int nsteps;
} bench_opts;

/* ---- the client (one child process) ------------------------------------------------------- */

enum cstate {
    C_IDLE, C_CONNECTING, C_UPGRADE,
    C_WELCOME,     /* sidecast, ws: waiting for "welcome"; nats: for INFO */
    C_SUBSCRIBING, /* waiting for "subscribed" (nats: the PONG after SUB) */
    C_READY, C_CLOSING, C_DONE,
};

typedef struct conn {
    int fd;
    uint8_t state, topic;
    bool settled, failed, lost, clean, deflate; /* deflate: permessage-deflate agreed */
    uint32_t plen, pcap, nlen, ncap;
    uint8_t *part; /* carried-over bytes of an unfinished frame or head */
    uint8_t *nbuf; /* nats: carried-over bytes of an unfinished protocol line or message */
    uint32_t events, gaps, disorder;
    uint64_t last_i, last_seq;
    long gindex;   /* global connection number: token and source address */
    int64_t t_open;
} conn;

typedef struct crec { /* child -> parent */
    uint32_t type;    /* R_PROGRESS, R_READY, R_FINAL (a histogram follows) */
    int32_t conns, settled, ready, failed, lost, unclean, complete;
    uint64_t events, gaps, disorder, other, error_frames, bad_frames, send_errors, pings;
    uint64_t lat_n, min_ev, max_ev, deflate_conns, compressed;
    int64_t lat_max, t_first_open, t_last_ready, t_first_event, t_last_event;
    double cpu_s;
    uint64_t lat_kn; /* samples in the socket-receipt histogram */
} crec;
enum { R_PROGRESS = 1, R_READY = 2, R_FINAL = 3 };

enum phase { PH_WAIT, PH_SETUP, PH_MEASURE, PH_CLOSE, PH_STOP };

/* The client frames every connection sends the same, built once per process, masked. */
typedef struct bench_frames {
    uint8_t sub_frame[MAX_TOPICS][TOPIC_MAX * 2 + 96]; /* subscribe (nats: CONNECT+SUB+PING) */
    uint16_t sub_len[MAX_TOPICS];
    char topic_field[MAX_TOPICS][TOPIC_MAX + 24]; /* "topic":"<topic>" */
    uint8_t close_frame[8];
    size_t close_len;
} bench_frames;

/* What a child's threads share: its options, frames, phase and counts. */
typedef struct bench_proc {
    bench_opts o;
    bench_frames fr;
    int64_t hard_deadline;
    _Atomic int phase; /* enum phase, set by the child's main thread */
    _Atomic int settled, failed, workers_closed;
} bench_proc;

typedef struct worker {
    bench_proc *p;
    int epfd;
    conn *conns;
    int n, next, inflight, max_inflight;
    _Atomic int limit; /* connections to open by now (idle steps) */
    bool close_started, closed_reported;
    int open_after_close;
    uint8_t *rbuf, *nscratch;
    uint32_t rng;
    uint64_t *hist; /* HIST_ALL */
    uint64_t lat_kn;
    int64_t t_sock;   /* the last read's kernel receipt time (monotonic ns), 0: none */
    int64_t real_off; /* CLOCK_REALTIME - CLOCK_MONOTONIC, ns */
    _Atomic uint64_t events;
    _Atomic int ready;
    uint64_t other, error_frames, bad_frames, send_errors, pings, lat_n, compressed;
    int64_t lat_max, t_first_open, t_last_ready, t_first_event, t_last_event;
    int printed;
    /* permessage-deflate (--deflate): one inflate stream per thread, reset per message (the
     * server takes no context over), and its output buffer */
    z_stream zi;
    bool zi_ready;
    uint8_t *ibuf;
    size_t icap;
    pthread_t th;
} worker;


static uint32_t rng_next(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

/* Topic k of o's ntopics into out: TOPIC, or TOPIC.k when there are several. */
static void bench_topic_name(const bench_opts *o, int k, char *out, size_t cap)
{
    if (o->ntopics > 1) snprintf(out, cap, "%s.%d", o->topic, k);
    else snprintf(out, cap, "%s", o->topic);
}

static void settle(worker *w, conn *c, bool ok)
{
    if (c->settled) return;
    c->settled = true;
    w->inflight--;
    if (!ok) {
        c->failed = true;
        atomic_fetch_add(&w->p->failed, 1);
    } else {
        int64_t t = now_ns();
        if (t > w->t_last_ready) w->t_last_ready = t;
        atomic_fetch_add(&w->ready, 1);
        if (w->p->o.mode == M_CONNECT && c->t_open) { /* handshake latency */
            w->hist[hist_bucket(t - c->t_open)]++;
            w->lat_n++;
            if (t - c->t_open > w->lat_max) w->lat_max = t - c->t_open;
        }
    }
    atomic_fetch_add(&w->p->settled, 1);
}

static void conn_close_fd(worker *w, conn *c)
{
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->state = C_DONE;
    free(c->part);
    free(c->nbuf);
    c->part = c->nbuf = NULL;
    c->plen = c->pcap = 0;
    c->nlen = c->ncap = 0;
    if (w->close_started) w->open_after_close--;
}

static void conn_fail(worker *w, conn *c, const char *why)
{
    if (c->state == C_DONE) return;
    bool closing = c->state == C_CLOSING;
    if (!c->settled) settle(w, c, false);
    else if (!closing) c->lost = true;
    if (!closing && w->printed < ERR_PRINT_MAX && !w->p->o.quiet) {
        w->printed++;
        fprintf(stderr, "bench: connection %ld: %s\n", c->gindex, why);
    }
    conn_close_fd(w, c);
}

static int send_raw(worker *w, conn *c, const uint8_t *buf, size_t n)
{
    ssize_t r = write(c->fd, buf, n);
    if (r != (ssize_t)n) { /* tiny frames on a drained socket: a short write is a failure */
        w->send_errors++;
        return -1;
    }
    return 0;
}

static int send_frame(worker *w, conn *c, uint8_t op, const void *payload, size_t len)
{
    uint8_t out[256];
    if (len > sizeof out - 16) return -1;
    size_t n = cframe_build(out, op, payload, len, rng_next(&w->rng));
    return send_raw(w, c, out, n);
}

/* A delivered event's data {"t":T,"i":I,...} at p: latency, loss and order. */
static void on_data(worker *w, conn *c, const uint8_t *p, size_t n, int64_t t_read)
{
    uint64_t t, i;
    if (field_u64(p, n, "{\"t\":", 5, &t) != 0 || field_u64(p, n, ",\"i\":", 5, &i) != 0) {
        w->bad_frames++;
        return;
    }
    if (c->events == 0) {
        if (i > 0) c->gaps += (uint32_t)i; /* the publisher counts from 0 after "ready" */
    } else if (i <= c->last_i) {
        c->disorder++;
    } else if (i > c->last_i + 1) {
        c->gaps += (uint32_t)(i - c->last_i - 1);
    }
    if (c->events == 0 || i > c->last_i) c->last_i = i;
    c->events++;
    atomic_fetch_add_explicit(&w->events, 1, memory_order_relaxed);
    if (w->t_first_event == 0) w->t_first_event = t_read;
    w->t_last_event = t_read;
    if ((int64_t)t <= t_read) {
        int64_t lat = t_read - (int64_t)t;
        w->hist[hist_bucket(lat)]++;
        w->lat_n++;
        if (lat > w->lat_max) w->lat_max = lat;
    }
    if (w->t_sock && (int64_t)t <= w->t_sock) {
        w->hist[HIST_LEN + hist_bucket(w->t_sock - (int64_t)t)]++;
        w->lat_kn++;
    }
}

static void become_ready(worker *w, conn *c)
{
    c->state = C_READY;
    settle(w, c, true);
}

static void send_subscribe(worker *w, conn *c)
{
    const bench_frames *fr = &w->p->fr;
    if (send_raw(w, c, fr->sub_frame[c->topic], fr->sub_len[c->topic]) != 0) {
        conn_fail(w, c, "subscribe not sent");
        return;
    }
    c->state = C_SUBSCRIBING;
}

/* sidecast.v1 and the Node server's JSON text messages */
static void on_text(worker *w, conn *c, const uint8_t *p, size_t n, int64_t t_read)
{
    const bench_opts *o = &w->p->o;
    if (o->target == T_WS && has_prefix(p, n, "{\"t\":")) {
        if (c->state == C_READY) on_data(w, c, p, n, t_read);
        else w->other++;
    } else if (has_prefix(p, n, "{\"type\":\"event\"")) {
        const char *tf = w->p->fr.topic_field[c->topic];
        if (c->state != C_READY || !memmem(p, n, tf, strlen(tf))) {
            w->other++;
            return;
        }
        uint64_t seq;
        if (field_u64(p, n, "\"seq\":", 6, &seq) == 0) {
            if (c->last_seq && seq <= c->last_seq) c->disorder++;
            c->last_seq = seq;
        }
        const uint8_t *d = memmem(p, n, "\"data\":{", 8);
        if (!d) {
            w->bad_frames++;
            return;
        }
        on_data(w, c, d + 7, n - (size_t)(d + 7 - p), t_read);
    } else if (has_prefix(p, n, "{\"type\":\"welcome\"")) {
        if (c->state != C_WELCOME) return;
        if (o->mode == M_CONNECT) become_ready(w, c);
        else send_subscribe(w, c);
    } else if (has_prefix(p, n, "{\"type\":\"subscribed\"")) {
        if (c->state == C_SUBSCRIBING) become_ready(w, c);
    } else if (has_prefix(p, n, "{\"type\":\"error\"")) {
        w->error_frames++;
        if (w->printed < ERR_PRINT_MAX && !o->quiet) {
            w->printed++;
            fprintf(stderr, "bench: error frame: %.*s\n", (int)(n > 300 ? 300 : n), p);
        }
        if (c->state == C_SUBSCRIBING) conn_fail(w, c, "subscribe refused");
    } else {
        w->other++;
    }
}

/* ---- nats-server's WebSocket listener: the NATS protocol in frames ------------------------ */

#define NATS_CONNECT "CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1}\r\n"

/* One operation of the NATS server protocol. */
typedef enum bench_nats_kind {
    BN_MSG,   /* data, len: the message's payload */
    BN_INFO,  /* data, len: the line, without its CRLF (so for the rest) */
    BN_PING,
    BN_PONG,
    BN_ERR,   /* -ERR */
    BN_OTHER, /* +OK and anything else: ignored */
} bench_nats_kind;

typedef struct bench_nats_op {
    bench_nats_kind kind;
    const uint8_t *data; /* points into the input */
    size_t len;
} bench_nats_op;

/* Pure: the first operation in p[0..n). Returns its length (line and payload with their
 * CRLFs, > 0) with *op; SC_EINCOMPLETE when not all of it is there (call again with the same
 * bytes and more); SC_ETOOLARGE for a MSG whose announced payload is over NATS_PART_MAX - 512
 * (known from its line alone). Nothing is kept between calls. */
static int bench_nats_next(const uint8_t *p, size_t n, bench_nats_op *op)
{
    const uint8_t *eol = memmem(p, n, "\r\n", 2);
    if (!eol) return SC_EINCOMPLETE;
    size_t ll = (size_t)(eol - p);
    if (has_prefix(p, ll, "MSG ")) {
        /* MSG <subject> <sid> [reply] <#bytes> */
        const uint8_t *sp = eol;
        while (sp > p && sp[-1] != ' ') sp--;
        uint64_t len = 0;
        for (const uint8_t *d = sp; d < eol && *d >= '0' && *d <= '9'; d++)
            len = len * 10 + (uint64_t)(*d - '0');
        if (len > NATS_PART_MAX - 512) return SC_ETOOLARGE;
        size_t need = ll + 2 + (size_t)len + 2;
        if (n < need) return SC_EINCOMPLETE;
        op->kind = BN_MSG;
        op->data = eol + 2;
        op->len = (size_t)len;
        return (int)need;
    }
    op->kind = has_prefix(p, ll, "INFO ") ? BN_INFO
               : has_prefix(p, ll, "PING") ? BN_PING
               : has_prefix(p, ll, "PONG") ? BN_PONG
               : has_prefix(p, ll, "-ERR") ? BN_ERR
                                           : BN_OTHER;
    op->data = p;
    op->len = ll;
    return (int)(ll + 2);
}

/* The operations in p[0, n) on c. Returns the bytes consumed (whole operations). */
static size_t nats_ops(worker *w, conn *c, const uint8_t *p, size_t n, int64_t t_read)
{
    const bench_opts *o = &w->p->o;
    size_t off = 0;
    while (off < n && c->state != C_DONE) {
        bench_nats_op op;
        int k = bench_nats_next(p + off, n - off, &op);
        if (k == SC_EINCOMPLETE) break;
        if (k < 0) {
            conn_fail(w, c, "nats message too big");
            return n;
        }
        off += (size_t)k;
        switch (op.kind) {
        case BN_MSG:
            if (c->state == C_READY) on_data(w, c, op.data, op.len, t_read);
            else w->other++;
            break;
        case BN_INFO:
            if (c->state != C_WELCOME) break;
            if (o->mode == M_CONNECT) {
                static const char cp[] = NATS_CONNECT "PING\r\n";
                if (send_frame(w, c, WS_OP_BINARY, cp, sizeof cp - 1) != 0) {
                    conn_fail(w, c, "CONNECT not sent");
                    return n;
                }
                c->state = C_SUBSCRIBING;
            } else {
                send_subscribe(w, c);
            }
            break;
        case BN_PING:
            w->pings++;
            if (send_frame(w, c, WS_OP_BINARY, "PONG\r\n", 6) != 0)
                conn_fail(w, c, "PONG not sent");
            break;
        case BN_PONG:
            if (c->state == C_SUBSCRIBING) become_ready(w, c);
            break;
        case BN_ERR:
            w->error_frames++;
            if (w->printed < ERR_PRINT_MAX && !o->quiet) {
                w->printed++;
                fprintf(stderr, "bench: nats: %.*s\n", (int)(op.len > 200 ? 200 : op.len),
                        op.data);
            }
            break;
        case BN_OTHER:
            break;
        }
    }
    return off;
}

/* The text of the subscribe frame for topic (CONNECT, SUB prefix+topic, PING) into out:
 * snprintf's result. */
static int bench_nats_subscribe_text(char *out, size_t cap, const char *prefix, const char *topic)
{
    return snprintf(out, cap, NATS_CONNECT "SUB %s%s 1\r\nPING\r\n", prefix, topic);
}

static void on_nats_payload(worker *w, conn *c, const uint8_t *p, size_t n, int64_t t_read)
{
    if (c->nlen == 0) {
        size_t used = nats_ops(w, c, p, n, t_read);
        if (c->state == C_DONE || used == n) return;
        p += used;
        n -= used;
        if (n > NATS_PART_MAX) {
            conn_fail(w, c, "nats line too long");
            return;
        }
        if (n > c->ncap) {
            uint8_t *b = realloc(c->nbuf, n + 256);
            if (!b) {
                conn_fail(w, c, "out of memory");
                return;
            }
            c->nbuf = b;
            c->ncap = (uint32_t)n + 256;
        }
        memcpy(c->nbuf, p, n);
        c->nlen = (uint32_t)n;
        return;
    }
    /* carried-over bytes first: join them with this payload in the thread's scratch */
    uint8_t *s = w->nscratch;
    size_t total = c->nlen + n;
    if (total > NATS_PART_MAX + PART_MAX) {
        conn_fail(w, c, "nats message too big");
        return;
    }
    memcpy(s, c->nbuf, c->nlen);
    memcpy(s + c->nlen, p, n);
    c->nlen = 0;
    size_t used = nats_ops(w, c, s, total, t_read);
    if (c->state == C_DONE || used == total) return;
    if (total - used > NATS_PART_MAX) {
        conn_fail(w, c, "nats message too big");
        return;
    }
    if (total - used > c->ncap) {
        uint8_t *b = realloc(c->nbuf, total - used + 256);
        if (!b) {
            conn_fail(w, c, "out of memory");
            return;
        }
        c->nbuf = b;
        c->ncap = (uint32_t)(total - used) + 256;
    }
    memmove(c->nbuf, s + used, total - used);
    c->nlen = (uint32_t)(total - used);
}

/* Inflates one permessage-deflate message (RFC 7692 §7.2.2) into w->ibuf with the library's
 * ws_pmd_inflate: its length, or -1 (corrupt, or PART_MAX bytes or more once inflated). */
static long inflate_message(worker *w, const uint8_t *p, size_t n)
{
    size_t out_len;
    if (!w->zi_ready) {
        if (ws_pmd_inflate_init(&w->zi) != 0) return -1;
        w->zi_ready = true;
    }
    if (ws_pmd_inflate(&w->zi, p, n, PART_MAX - 1, &w->ibuf, &w->icap, &out_len) != 0) return -1;
    return (long)out_len;
}

/* The server frames in buf[0, len), decoded by ws_frame_decode with every RFC 6455 rule a
 * client checks. Returns the bytes consumed: whole frames only (the rest is carried over). */
static size_t on_frames(worker *w, conn *c, const uint8_t *buf, size_t len, int64_t t_read)
{
    const ws_frame_rules rules = {.from_client = false,
                                  .rsv_allowed = c->deflate ? WS_PMD_RSV1 : 0,
                                  .max_payload = FRAME_PAYLOAD_MAX};
    size_t off = 0;
    while (off < len && c->state != C_DONE) {
        ws_frame_header h;
        ws_frame_err err;
        int hl = ws_frame_decode(buf + off, len - off, &rules, &h, &err);
        if (hl == SC_EINCOMPLETE) break;
        if (hl < 0) {
            w->bad_frames++;
            conn_fail(w, c, err == WS_ERR_OPCODE ? "unexpected opcode" : "bad frame");
            return len;
        }
        if (h.len > len - off - (size_t)hl) break; /* the payload is not all here yet */
        const uint8_t *payload = buf + off + hl;
        size_t plen = (size_t)h.len;
        off += (size_t)hl + plen;
        switch (h.opcode) {
        case WS_OP_TEXT:
        case WS_OP_BINARY:
        case WS_OP_CONT:
            if (h.rsv & WS_PMD_RSV1) { /* compressed (permessage-deflate): into w->ibuf */
                long n = inflate_message(w, payload, plen);
                if (n < 0 || !h.fin) {
                    w->bad_frames++;
                    conn_fail(w, c, n < 0 ? "bad compressed message" : "fragmented message");
                    return len;
                }
                w->compressed++;
                payload = w->ibuf;
                plen = (size_t)n;
            }
            if (w->p->o.target == T_NATS) {
                on_nats_payload(w, c, payload, plen, t_read);
            } else if (!h.fin || h.opcode == WS_OP_CONT) {
                w->bad_frames++;
                conn_fail(w, c, "fragmented message");
                return len;
            } else {
                on_text(w, c, payload, plen, t_read);
            }
            break;
        case WS_OP_PING:
            w->pings++;
            if (send_frame(w, c, WS_OP_PONG, payload, plen) != 0) conn_fail(w, c, "pong not sent");
            break;
        case WS_OP_CLOSE:
            if (c->state == C_CLOSING) {
                c->clean = true;
                conn_close_fd(w, c);
            } else {
                send_frame(w, c, WS_OP_CLOSE, payload, plen >= 2 ? 2 : 0);
                char why[64];
                snprintf(why, sizeof why, "closed by the server (%u)",
                         plen >= 2 ? (unsigned)((payload[0] << 8) | payload[1]) : 1005);
                conn_fail(w, c, why);
            }
            return len;
        case WS_OP_PONG:
            break;
        default: /* ws_frame_decode refuses reserved opcodes: not reached */
            w->bad_frames++;
            conn_fail(w, c, "unexpected opcode");
            return len;
        }
    }
    return off;
}

static int keep_part(conn *c, const uint8_t *buf, size_t n)
{
    if (n > PART_MAX) return -1;
    if (n > c->pcap) {
        size_t cap = c->pcap ? c->pcap : 256;
        while (cap < n) cap *= 2;
        uint8_t *p = realloc(c->part, cap);
        if (!p) return -1;
        c->part = p;
        c->pcap = (uint32_t)cap;
    }
    memmove(c->part, buf, n);
    c->plen = (uint32_t)n;
    return 0;
}

/* CLOCK_REALTIME - CLOCK_MONOTONIC: the smallest of a few readings (the one least delayed
 * between its two clock reads). */
static int64_t realtime_offset(void)
{
    int64_t best = 0;
    for (int i = 0; i < 5; i++) {
        struct timespec m0, r, m1;
        clock_gettime(CLOCK_MONOTONIC, &m0);
        clock_gettime(CLOCK_REALTIME, &r);
        clock_gettime(CLOCK_MONOTONIC, &m1);
        int64_t mono = ((int64_t)m0.tv_sec * 1000000000 + m0.tv_nsec +
                        (int64_t)m1.tv_sec * 1000000000 + m1.tv_nsec) / 2;
        int64_t off = (int64_t)r.tv_sec * 1000000000 + r.tv_nsec - mono;
        if (i == 0 || off < best) best = off;
    }
    return best;
}

/* read(), or in fan-out recvmsg() with the kernel's receipt time of the data read
 * (SO_TIMESTAMPNS; for TCP the time of the last segment the read took) into w->t_sock. */
static ssize_t read_stamped(worker *w, int fd, uint8_t *buf, size_t n)
{
    w->t_sock = 0;
    if (w->p->o.mode != M_FANOUT) return read(fd, buf, n);
    struct iovec iov = {.iov_base = buf, .iov_len = n};
    union {
        char b[CMSG_SPACE(sizeof(struct timespec))];
        struct cmsghdr align;
    } cb;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb.b,
                        .msg_controllen = sizeof cb.b};
    ssize_t r = recvmsg(fd, &mh, 0);
    if (r <= 0) return r;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(cm), sizeof ts);
            w->t_sock = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec - w->real_off;
        }
    }
    return r;
}

static void on_readable(worker *w, conn *c)
{
    const bench_opts *o = &w->p->o;
    uint8_t *buf = w->rbuf;
    size_t have = c->plen;
    if (have) memcpy(buf, c->part, have);
    c->plen = 0;
    ssize_t r = read_stamped(w, c->fd, buf + have, RBUF_SIZE);
    if (r == 0) {
        conn_fail(w, c, "end of stream");
        return;
    }
    if (r < 0) {
        if (errno == EAGAIN || errno == EINTR) {
            c->plen = (uint32_t)have;
            return;
        }
        conn_fail(w, c, strerror(errno));
        return;
    }
    int64_t t_read = now_ns();
    size_t len = have + (size_t)r, off = 0;
    if (c->state == C_UPGRADE) {
        const uint8_t *end = memmem(buf, len, "\r\n\r\n", 4);
        if (!end) {
            if (len > HEAD_MAX || keep_part(c, buf, len) != 0) conn_fail(w, c, "head too big");
            return;
        }
        off = (size_t)(end - buf) + 4;
        if (!has_prefix(buf, len, "HTTP/1.1 101 ") ||
            (o->target == T_SIDECAST && !memmem(buf, off, "sidecast.v1", 11))) {
            const uint8_t *eol = memchr(buf, '\r', len);
            if (w->printed < ERR_PRINT_MAX && !o->quiet) {
                w->printed++;
                fprintf(stderr, "bench: upgrade refused: %.*s\n", (int)(eol ? eol - buf : 0),
                        buf);
            }
            conn_fail(w, c, "no 101");
            return;
        }
        c->deflate = o->deflate && memmem(buf, off, "permessage-deflate", 18) != NULL;
        c->state = C_WELCOME;
    }
    off += on_frames(w, c, buf + off, len - off, t_read);
    if (c->state != C_DONE && off < len && keep_part(c, buf + off, len - off) != 0)
        conn_fail(w, c, "frame too big");
}

static void on_writable(worker *w, conn *c)
{
    const bench_opts *o = &w->p->o;
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0) {
        conn_fail(w, c, err ? strerror(err) : "connect failed");
        return;
    }
    char req[TOKEN_MAX + 512];
    const char *tok = o->ntokens ? o->tokens[c->gindex % o->ntokens] : NULL;
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n%s%s%s%s%s\r\n",
                     o->path, o->host, o->port,
                     o->target == T_SIDECAST ? "Sec-WebSocket-Protocol: sidecast.v1\r\n" : "",
                     o->deflate ? "Sec-WebSocket-Extensions: permessage-deflate; "
                                 "client_no_context_takeover; server_no_context_takeover\r\n"
                               : "",
                     tok ? "Authorization: Bearer " : "", tok ? tok : "", tok ? "\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof req || send_raw(w, c, (const uint8_t *)req, (size_t)n)) {
        conn_fail(w, c, "upgrade request not sent");
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0) {
        conn_fail(w, c, "epoll_ctl");
        return;
    }
    c->state = C_UPGRADE;
}

static void conn_open(worker *w, conn *c)
{
    const bench_opts *o = &w->p->o;
    w->inflight++;
    c->state = C_CONNECTING;
    c->t_open = now_ns();
    if (!w->t_first_open) w->t_first_open = c->t_open;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        conn_fail(w, c, strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (o->mode == M_FANOUT) setsockopt(c->fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
    if (o->nsources) {
        struct sockaddr_in src = {.sin_family = AF_INET,
                                  .sin_addr = o->sources[c->gindex % o->nsources]};
        setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(c->fd, (const struct sockaddr *)&src, sizeof src) != 0) {
            conn_fail(w, c, strerror(errno));
            return;
        }
    }
    if (connect(c->fd, (const struct sockaddr *)&o->addr, sizeof o->addr) != 0 &&
        errno != EINPROGRESS) {
        conn_fail(w, c, strerror(errno));
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0) conn_fail(w, c, "epoll_ctl");
}

static void start_close(worker *w)
{
    w->close_started = true;
    w->open_after_close = 0;
    for (int i = 0; i < w->n; i++) {
        conn *c = &w->conns[i];
        if (c->state == C_DONE || c->state == C_IDLE) continue;
        w->open_after_close++;
        if (!w->p->o.fast_close && c->state >= C_WELCOME && c->state <= C_READY &&
            send_raw(w, c, w->p->fr.close_frame, w->p->fr.close_len) == 0) {
            c->state = C_CLOSING;
        } else {
            conn_close_fd(w, c);
        }
    }
}

static void *worker_run(void *arg)
{
    worker *w = arg;
    struct epoll_event evs[MAX_EVENTS];
    while (now_ns() < w->p->hard_deadline) {
        int ph = atomic_load(&w->p->phase);
        if (ph == PH_STOP) break;
        if (ph == PH_SETUP) {
            while (w->next < atomic_load(&w->limit) && w->inflight < w->max_inflight)
                conn_open(w, &w->conns[w->next++]);
        }
        if (ph == PH_CLOSE && !w->close_started) start_close(w);
        if (w->close_started && w->open_after_close <= 0 && !w->closed_reported) {
            w->closed_reported = true;
            atomic_fetch_add(&w->p->workers_closed, 1);
        }
        int k = epoll_wait(w->epfd, evs, MAX_EVENTS, ph == PH_WAIT ? 5 : TICK_MS);
        for (int i = 0; i < k; i++) {
            conn *c = evs[i].data.ptr;
            if (c->state == C_DONE) continue;
            if (c->state == C_CONNECTING) {
                if (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_writable(w, c);
            } else if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                on_readable(w, c);
            }
        }
    }
    for (int i = 0; i < w->n; i++) {
        conn *c = &w->conns[i];
        if (c->state != C_DONE && c->state != C_IDLE) conn_close_fd(w, c);
        free(c->part);
        free(c->nbuf);
        c->part = c->nbuf = NULL;
    }
    return NULL;
}

static int write_full(int fd, const void *p, size_t n)
{
    const char *s = p;
    while (n) {
        ssize_t r = write(fd, s, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        s += r;
        n -= (size_t)r;
    }
    return 0;
}

static int read_full(int fd, void *p, size_t n)
{
    char *s = p;
    while (n) {
        ssize_t r = read(fd, s, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        s += r;
        n -= (size_t)r;
    }
    return 0;
}

static void child_counts(bench_proc *pr, worker *ws, int nthreads, conn *conns, long n, crec *r,
                         bool final)
{
    memset(r, 0, sizeof *r);
    r->conns = (int32_t)n;
    r->settled = atomic_load(&pr->settled);
    r->failed = atomic_load(&pr->failed);
    for (int i = 0; i < nthreads; i++) {
        r->events += atomic_load_explicit(&ws[i].events, memory_order_relaxed);
        r->ready += atomic_load(&ws[i].ready);
    }
    if (!final) return;
    r->min_ev = UINT64_MAX;
    for (long i = 0; i < n; i++) {
        conn *c = &conns[i];
        if (c->failed || !c->settled) continue;
        r->gaps += c->gaps;
        r->disorder += c->disorder;
        if (c->events < r->min_ev) r->min_ev = c->events;
        if (c->events > r->max_ev) r->max_ev = c->events;
        r->lost += c->lost;
        r->unclean += !c->clean && !c->lost;
        r->complete += !c->gaps && !c->disorder && !c->lost;
        r->deflate_conns += c->deflate;
    }
    if (r->min_ev == UINT64_MAX) r->min_ev = 0;
    for (int i = 0; i < nthreads; i++) {
        worker *w = &ws[i];
        r->other += w->other;
        r->error_frames += w->error_frames;
        r->bad_frames += w->bad_frames;
        r->send_errors += w->send_errors;
        r->pings += w->pings;
        r->compressed += w->compressed;
        r->lat_n += w->lat_n;
        r->lat_kn += w->lat_kn;
        if (w->lat_max > r->lat_max) r->lat_max = w->lat_max;
        if (w->t_first_open && (!r->t_first_open || w->t_first_open < r->t_first_open))
            r->t_first_open = w->t_first_open;
        if (w->t_last_ready > r->t_last_ready) r->t_last_ready = w->t_last_ready;
        if (w->t_first_event && (!r->t_first_event || w->t_first_event < r->t_first_event))
            r->t_first_event = w->t_first_event;
        if (w->t_last_event > r->t_last_event) r->t_last_event = w->t_last_event;
    }
    r->cpu_s = self_cpu_s();
}

/* One child: n connections numbered from first; commands on cmd_fd, records to out_fd. */
/* Connection idx's share of total over procs (the parent splits the same way). */
static long share(long total, long parts, long idx)
{
    return total / parts + (idx < total % parts);
}

/* Lets the workers open their part of this process's target (idle steps: several targets). */
static void set_limits(worker *ws, int nthreads, long target)
{
    for (int i = 0; i < nthreads; i++) atomic_store(&ws[i].limit, (int)share(target, nthreads, i));
}

/* Builds the pre-built client frames: subscribe per topic (or NATS CONNECT+SUB+PING), close. */
static void build_frames(const bench_opts *o, bench_frames *fr)
{
    char name[TOPIC_MAX + 8], msg[TOPIC_MAX * 2 + 64];
    for (int k = 0; k < o->ntopics; k++) {
        bench_topic_name(o, k, name, sizeof name);
        snprintf(fr->topic_field[k], sizeof fr->topic_field[k], "\"topic\":\"%s\"", name);
        int n;
        if (o->target == T_NATS)
            n = bench_nats_subscribe_text(msg, sizeof msg, o->prefix, name);
        else
            n = snprintf(msg, sizeof msg, "{\"type\":\"subscribe\",\"topic\":\"%s\"}", name);
        uint8_t op = o->target == T_NATS ? WS_OP_BINARY : WS_OP_TEXT;
        fr->sub_len[k] = (uint16_t)cframe_build(fr->sub_frame[k], op, msg, (size_t)n,
                                                0x5ca1ab1eu + (uint32_t)k);
    }
    uint8_t normal[2];
    size_t nl = ws_frame_close_encode(normal, WS_CLOSE_NORMAL, NULL, 0);
    fr->close_len = cframe_build(fr->close_frame, WS_OP_CLOSE, normal, nl, 0x0badcafeu);
}

static int child_main(const bench_opts *opts, int index, long first, long n, int cmd_fd,
                      int out_fd)
{
    signal(SIGPIPE, SIG_IGN);
    bench_proc *pr = calloc(1, sizeof *pr);
    if (!pr) return 1;
    pr->o = *opts;
    const bench_opts *o = &pr->o;
    build_frames(o, &pr->fr);
    int nthreads = (int)(o->threads < n ? o->threads : n);
    conn *conns = calloc((size_t)n, sizeof *conns);
    worker *ws = calloc((size_t)nthreads, sizeof *ws);
    uint64_t *hist = calloc(HIST_ALL, sizeof *hist);
    if (!conns || !ws || !hist) return 1;
    for (long i = 0; i < n; i++) {
        conns[i].fd = -1;
        conns[i].gindex = first + i;
        conns[i].topic = (uint8_t)((first + i) % o->ntopics);
    }
    long per = n / nthreads, extra = n % nthreads, at = 0;
    long inflight = o->concurrency / o->procs / nthreads;
    for (int i = 0; i < nthreads; i++) {
        worker *w = &ws[i];
        w->p = pr;
        w->conns = conns + at;
        w->n = (int)(per + (i < extra));
        at += w->n;
        w->max_inflight = (int)(inflight > 0 ? inflight : 1);
        w->rng = 0x9e3779b9u ^ (uint32_t)((first + i) * 7919 + 1);
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        w->rbuf = malloc(RBUF_SIZE + PART_MAX);
        w->nscratch = malloc(NATS_PART_MAX + PART_MAX + 64);
        w->hist = calloc(HIST_ALL, sizeof *w->hist);
        w->real_off = realtime_offset();
        if (w->epfd < 0 || !w->rbuf || !w->hist || !w->nscratch) return 1;
    }
    pr->hard_deadline = now_ns() + (int64_t)((o->setup_timeout * 2 + o->seconds + o->drain +
                                              CLOSE_TIMEOUT_S + 60) * 1e9);
    int started = 0;
    for (; started < nthreads; started++)
        if (pthread_create(&ws[started].th, NULL, worker_run, &ws[started]) != 0) break;
    int rc = started == nthreads ? 0 : 1;
    bool ready_sent = false, stop = rc != 0;
    int step = -1;
    long target = n;
    int64_t next_progress = 0;
    int64_t close_end = 0;
    while (now_ns() < pr->hard_deadline) {
        struct pollfd pf = {.fd = cmd_fd, .events = POLLIN};
        if (poll(&pf, 1, 50) > 0) {
            char cmd;
            ssize_t r = read(cmd_fd, &cmd, 1);
            if (r <= 0 || cmd == 'S') stop = true;
            else if (cmd == 'G') { /* the next step (idle), or the only one */
                step++;
                target = o->nsteps > 1 && step < o->nsteps
                             ? share(o->steps[step], o->procs, index)
                             : n;
                if (target > n) target = n;
                set_limits(ws, nthreads, target);
                ready_sent = false;
                atomic_store(&pr->phase, PH_SETUP);
            }
        }
        int64_t t = now_ns();
        if (stop && close_end == 0) {
            atomic_store(&pr->phase, PH_CLOSE);
            close_end = t + (int64_t)(CLOSE_TIMEOUT_S * 1e9);
        }
        if (close_end) {
            if (atomic_load(&pr->workers_closed) >= started || t > close_end) break;
            continue;
        }
        crec rec;
        if (!ready_sent && atomic_load(&pr->phase) == PH_SETUP &&
            atomic_load(&pr->settled) >= target) {
            atomic_store(&pr->phase, PH_MEASURE);
            child_counts(pr, ws, nthreads, conns, n, &rec, false);
            rec.type = R_READY;
            for (int i = 0; i < nthreads; i++)
                if (ws[i].t_last_ready > rec.t_last_ready) rec.t_last_ready = ws[i].t_last_ready;
            if (write_full(out_fd, &rec, sizeof rec) != 0) stop = true;
            ready_sent = true;
        } else if (t >= next_progress) {
            child_counts(pr, ws, nthreads, conns, n, &rec, false);
            rec.type = R_PROGRESS;
            if (write_full(out_fd, &rec, sizeof rec) != 0) stop = true;
            next_progress = t + 200000000;
        }
    }
    atomic_store(&pr->phase, PH_STOP);
    for (int i = 0; i < started; i++) pthread_join(ws[i].th, NULL);
    crec rec;
    child_counts(pr, ws, nthreads, conns, n, &rec, true);
    rec.type = R_FINAL;
    for (int i = 0; i < nthreads; i++)
        for (size_t b = 0; b < HIST_ALL; b++) hist[b] += ws[i].hist[b];
    if (write_full(out_fd, &rec, sizeof rec) != 0 ||
        write_full(out_fd, hist, HIST_ALL * sizeof *hist) != 0)
        rc = 1;
    return rc;
}

/* ---- the publisher ------------------------------------------------------------------------ */

typedef struct pubstate {
    const bench_opts *o;
    bus *b;
    long total;                /* messages to send */
    _Atomic long sent, errors;
    long per_topic[MAX_TOPICS];
    _Atomic bool done;
    double took_s, synced_s;
    bool synced;
} pubstate;

static void *pub_run(void *arg)
{
    pubstate *p = arg;
    const bench_opts *o = p->o;
    char msg[PUB_SIZE_MAX + 1], subject[TOPIC_MAX + 40], name[TOPIC_MAX + 8];
    int64_t t0 = now_ns(), deadline = t0 + (int64_t)((o->seconds * 2 + 5) * 1e9);
    for (long i = 0; i < p->total; i++) {
        int64_t due = t0 + (int64_t)((double)i * 1e9 / (double)o->rate), t = now_ns();
        if (t > deadline) break;
        if (due > t) {
            struct timespec ts = {due / 1000000000, due % 1000000000};
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
        }
        int k = (int)(i % o->ntopics);
        bench_topic_name(o, k, name, sizeof name);
        snprintf(subject, sizeof subject, "%s%s", o->prefix, name);
        int head = snprintf(msg, sizeof msg, "{\"t\":%" PRId64 ",\"i\":%ld,\"pad\":\"", now_ns(),
                            p->per_topic[k]);
        long pad = o->size - head - 2;
        if (head < 0 || pad < 0) break;
        memset(msg + head, 'x', (size_t)pad);
        memcpy(msg + head + pad, "\"}", 2);
        if (bus_publish(p->b, subject, NULL, msg, (size_t)o->size, NULL, 0) == 0) {
            p->per_topic[k]++;
            atomic_fetch_add(&p->sent, 1);
        } else {
            atomic_fetch_add(&p->errors, 1);
        }
    }
    p->took_s = ns_s(now_ns() - t0);
    /* A request nobody answers comes back "no responders" only after the server has read
     * everything published before it on this connection. */
    int64_t ts = now_ns();
    bus_msg *r = NULL;
    int src = bus_request(p->b, "_SCBENCH.sync", "", 0, NULL, 0, 30000, &r);
    bus_msg_destroy(r);
    p->synced_s = ns_s(now_ns() - ts);
    p->synced = src == SC_ENORESPONDERS || src == 0;
    atomic_store(&p->done, true);
    return NULL;
}

static int pub_connect(pubstate *p)
{
    const bench_opts *o = p->o;
    if (!o->nats || bus_connect(&p->b, o->nats, "sidecast-bench") != 0) return -1;
    for (int i = 0; i < 100 && !bus_connected(p->b); i++) sleep_ms(50);
    if (!bus_connected(p->b)) {
        fprintf(stderr, "bench: not connected to %s\n", o->nats);
        bus_destroy(p->b, 0);
        p->b = NULL;
        return -1;
    }
    return 0;
}

/* ---- the parent ---------------------------------------------------------------------------- */

typedef struct child {
    pid_t pid;
    int cmd_fd, out_fd;
    bool ready, final, dead;
    crec last, fin;
} child;

typedef struct pidstat {
    double cpu0, cpu1;
    long rss_before, rss0, rss1;
} pidstat;

/* Deliveries if every connection got its topic's messages (connection g has topic g % K). */
static uint64_t expected(const pubstate *p)
{
    const bench_opts *o = p->o;
    uint64_t e = 0;
    for (long k = 0; k < o->ntopics; k++) {
        long subs = o->conns / o->ntopics + (k < o->conns % o->ntopics);
        e += (uint64_t)p->per_topic[k] * (uint64_t)subs;
    }
    return e;
}

static void send_all(child *ch, int n, char cmd)
{
    for (int i = 0; i < n; i++)
        if (!ch[i].dead && write(ch[i].cmd_fd, &cmd, 1) != 1) ch[i].dead = true;
}

/* Reads what the children wrote within timeout_ms; hist accumulates final histograms. */
static void pump(child *ch, int n, int timeout_ms, uint64_t *hist, uint64_t *tmp)
{
    struct pollfd pf[MAX_PROCS];
    for (int i = 0; i < n; i++) pf[i] = (struct pollfd){.fd = ch[i].dead ? -1 : ch[i].out_fd,
                                                        .events = POLLIN};
    if (poll(pf, (nfds_t)n, timeout_ms) <= 0) return;
    for (int i = 0; i < n; i++) {
        if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        crec r;
        if (read_full(ch[i].out_fd, &r, sizeof r) != 0) {
            ch[i].dead = true;
            continue;
        }
        if (r.type == R_FINAL) {
            if (read_full(ch[i].out_fd, tmp, HIST_ALL * sizeof *tmp) != 0) {
                ch[i].dead = true;
                continue;
            }
            for (size_t b = 0; b < HIST_ALL; b++) hist[b] += tmp[b];
            ch[i].fin = r;
            ch[i].final = true;
        } else if (r.type == R_READY) {
            ch[i].ready = true;
            ch[i].last = r;
            ch[i].fin.t_last_ready = r.t_last_ready;
        } else {
            ch[i].last = r;
        }
    }
}

static void totals(child *ch, int n, long *settled, long *ready, long *failed, uint64_t *events)
{
    *settled = *ready = *failed = 0;
    *events = 0;
    for (int i = 0; i < n; i++) {
        *settled += ch[i].last.settled;
        *ready += ch[i].last.ready;
        *failed += ch[i].last.failed;
        *events += ch[i].last.events;
    }
}

static void progress(const bench_opts *o, child *ch, int n, int64_t t0, int64_t *next,
                     uint64_t *last_ev, int64_t *last_t, const char *phase)
{
    int64_t t = now_ns();
    if (o->quiet || t < *next) return;
    long settled, ready, failed;
    uint64_t ev;
    totals(ch, n, &settled, &ready, &failed, &ev);
    double dt = ns_s(t - *last_t);
    fprintf(stderr,
            "bench: %s %s %5.1fs %-9s up %ld/%ld failed %ld deliveries %" PRIu64
            " (%.0f/s)\n",
            target_names[o->target], mode_names[o->mode], ns_s(t - t0), phase, ready, o->conns,
            failed, ev, dt > 0 ? (double)(ev - *last_ev) / dt : 0);
    *last_ev = ev;
    *last_t = t;
    *next = t + 1000000000;
}

static void read_pids(const bench_opts *o, pidstat *ps, int which)
{
    for (int i = 0; i < o->npids; i++) {
        double c = proc_cpu_s(o->pids[i]);
        long r = proc_rss_kib(o->pids[i]);
        if (which == 0) ps[i].rss_before = r;
        if (which == 1) ps[i].cpu0 = c, ps[i].rss0 = r;
        if (which == 2) ps[i].cpu1 = c, ps[i].rss1 = r;
    }
}

/* One line for an idle step: the server's RSS growth over the connections ready so far. */
static void print_step(const bench_opts *o, int st, long ready, long failed, double setup_s,
                       const pidstat *ps)
{
    long conns = o->steps[st], prev = st ? o->steps[st - 1] : 0;
    long rss_delta = o->npids ? ps[0].rss1 - ps[0].rss_before : 0;
    double hps = setup_s > 0 ? (double)(conns - prev) / setup_s : 0;
    if (!o->json) {
        printf("%s idle step %d: conns=%ld ready=%ld failed=%ld setup_s=%.3f handshakes_per_s=%.0f"
               " rss_delta_kib=%ld rss_per_conn_b=%.0f\n",
               target_names[o->target], st, conns, ready, failed, setup_s, hps, rss_delta,
               ready ? (double)rss_delta * 1024 / (double)ready : 0);
        fflush(stdout);
        return;
    }
    printf("{\"mode\":\"idle\",\"target\":\"%s\",\"step\":%d,\"conns\":%ld,\"procs\":%ld,"
           "\"threads\":%ld,\"topics\":%ld,\"tokens\":%ld,\"ready\":%ld,\"failed\":%ld,"
           "\"setup_s\":%.3f,\"handshakes_per_s\":%.1f,\"servers\":[",
           target_names[o->target], st, conns, o->procs, o->threads, o->ntopics, o->ntokens, ready,
           failed, setup_s, hps);
    for (int i = 0; i < o->npids; i++)
        printf("%s{\"pid\":%ld,\"rss_before_kib\":%ld,\"rss_end_kib\":%ld}", i ? "," : "",
               o->pids[i], ps[i].rss_before, ps[i].rss1);
    printf("],\"rss_delta_kib\":%ld,\"rss_per_conn_b\":%.0f,\"complete\":%s}\n", rss_delta,
           ready ? (double)rss_delta * 1024 / (double)ready : 0,
           ready == conns && failed == 0 ? "true" : "false");
    fflush(stdout);
}

static int run_parent(const bench_opts *o)
{
    signal(SIGPIPE, SIG_IGN);
    child ch[MAX_PROCS];
    memset(ch, 0, sizeof ch);
    int np = (int)o->procs;
    long per = o->conns / np, extra = o->conns % np, first = 0;
    fflush(stdout);
    fflush(stderr);
    for (int i = 0; i < np; i++) {
        int cmd[2], out[2];
        if (pipe2(cmd, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) return 1;
        long n = per + (i < extra);
        pid_t pid = fork();
        if (pid < 0) return 1;
        if (pid == 0) {
            for (int j = 0; j < i; j++) close(ch[j].cmd_fd), close(ch[j].out_fd);
            close(cmd[1]);
            close(out[0]);
            _exit(child_main(o, i, first, n, cmd[0], out[1]));
        }
        close(cmd[0]);
        close(out[1]);
        ch[i] = (child){.pid = pid, .cmd_fd = cmd[1], .out_fd = out[0]};
        first += n;
    }
    uint64_t *hist = calloc(HIST_ALL, sizeof *hist), *tmp = calloc(HIST_ALL, sizeof *tmp);
    pidstat ps[MAX_PIDS];
    memset(ps, 0, sizeof ps);
    pubstate pub;
    memset(&pub, 0, sizeof pub);
    pub.o = o;
    pthread_t pth;
    bool pub_started = false;
    int rc = 1;
    if (!hist || !tmp) goto out;
    if (o->mode == M_FANOUT && pub_connect(&pub) != 0) {
        fprintf(stderr, "bench: fanout needs a reachable --nats\n");
        goto out;
    }
    read_pids(o, ps, 0);
    if (o->mode == M_CONNECT) read_pids(o, ps, 1); /* the window is the set-up itself */
    int64_t t0 = now_ns(), next = 0, last_t = t0, t_go = t0;
    uint64_t last_ev = 0;
    send_all(ch, np, 'G');
    /* set-up */
    int64_t setup_end = t0 + (int64_t)(o->setup_timeout * 1e9);
    for (;;) {
        pump(ch, np, 100, hist, tmp);
        progress(o, ch, np, t0, &next, &last_ev, &last_t, "set-up");
        int nready = 0, ndead = 0;
        for (int i = 0; i < np; i++) nready += ch[i].ready, ndead += ch[i].dead;
        if (nready + ndead >= np || now_ns() > setup_end) break;
    }
    int64_t t_ready = now_ns();
    long settled, ready, failed;
    uint64_t ev;
    totals(ch, np, &settled, &ready, &failed, &ev);
    long want = o->nsteps > 1 ? o->steps[0] : o->conns;
    if (settled < want && !o->quiet)
        fprintf(stderr, "bench: set-up timed out: %ld of %ld connections settled\n", settled,
                want);
    if (o->mode == M_CONNECT) read_pids(o, ps, 2);
    else read_pids(o, ps, 1);
    int64_t t_window0 = now_ns(), t_window1 = t_window0;
    if (o->mode == M_IDLE) {
        int64_t t_step = t0;
        for (int st = 0;; st++) {
            int64_t end = now_ns() + (int64_t)(o->seconds * 1e9);
            while (now_ns() < end) {
                pump(ch, np, 100, hist, tmp);
                progress(o, ch, np, t0, &next, &last_ev, &last_t, "holding");
            }
            read_pids(o, ps, 2);
            t_window1 = now_ns();
            if (o->nsteps < 2) break;
            totals(ch, np, &settled, &ready, &failed, &ev);
            print_step(o, st, ready, failed, ns_s(t_ready - t_step), ps);
            if (st + 1 >= o->nsteps) break;
            for (int i = 0; i < np; i++) ch[i].ready = false;
            t_step = now_ns();
            send_all(ch, np, 'G');
            int64_t step_end = t_step + (int64_t)(o->setup_timeout * 1e9);
            for (;;) {
                pump(ch, np, 100, hist, tmp);
                progress(o, ch, np, t0, &next, &last_ev, &last_t, "set-up");
                int nready = 0, ndead = 0;
                for (int i = 0; i < np; i++) nready += ch[i].ready, ndead += ch[i].dead;
                if (nready + ndead >= np || now_ns() > step_end) break;
            }
            t_ready = now_ns();
        }
    } else if (o->mode == M_FANOUT) {
        pub.total = (long)((double)o->rate * o->seconds);
        if (ready > 0 && pthread_create(&pth, NULL, pub_run, &pub) == 0) pub_started = true;
        int64_t drain_end = 0, hard = now_ns() + (int64_t)((o->seconds * 2 + 40 + o->drain) * 1e9);
        while (pub_started && now_ns() < hard) {
            pump(ch, np, 100, hist, tmp);
            progress(o, ch, np, t0, &next, &last_ev, &last_t, "fan-out");
            if (!atomic_load(&pub.done)) continue;
            if (!drain_end) drain_end = now_ns() + (int64_t)(o->drain * 1e9);
            totals(ch, np, &settled, &ready, &failed, &ev);
            if (ev >= expected(&pub) * (uint64_t)ready / (uint64_t)o->conns ||
                now_ns() > drain_end)
                break;
        }
        read_pids(o, ps, 2);
        t_window1 = now_ns();
    } else {
        t_window0 = t_go;
        t_window1 = t_ready;
    }
    /* close and collect */
    send_all(ch, np, 'S');
    int64_t collect_end = now_ns() + (int64_t)((CLOSE_TIMEOUT_S + 10) * 1e9);
    for (;;) {
        int nfinal = 0, ndead = 0;
        for (int i = 0; i < np; i++) nfinal += ch[i].final, ndead += ch[i].dead && !ch[i].final;
        if (nfinal + ndead >= np || now_ns() > collect_end) break;
        pump(ch, np, 100, hist, tmp);
    }
    if (pub_started) pthread_join(pth, NULL);
    pub_started = false;

    /* aggregate */
    crec a;
    memset(&a, 0, sizeof a);
    a.min_ev = UINT64_MAX;
    int finals = 0;
    double client_cpu = 0;
    for (int i = 0; i < np; i++) {
        if (!ch[i].final) continue;
        finals++;
        crec *r = &ch[i].fin;
        a.settled += r->settled;
        a.ready += r->ready;
        a.failed += r->failed;
        a.lost += r->lost;
        a.unclean += r->unclean;
        a.complete += r->complete;
        a.events += r->events;
        a.gaps += r->gaps;
        a.disorder += r->disorder;
        a.other += r->other;
        a.error_frames += r->error_frames;
        a.bad_frames += r->bad_frames;
        a.send_errors += r->send_errors;
        a.pings += r->pings;
        a.deflate_conns += r->deflate_conns;
        a.compressed += r->compressed;
        a.lat_n += r->lat_n;
        a.lat_kn += r->lat_kn;
        if (r->ready && r->min_ev < a.min_ev) a.min_ev = r->min_ev;
        if (r->max_ev > a.max_ev) a.max_ev = r->max_ev;
        if (r->lat_max > a.lat_max) a.lat_max = r->lat_max;
        if (r->t_first_open && (!a.t_first_open || r->t_first_open < a.t_first_open))
            a.t_first_open = r->t_first_open;
        if (r->t_last_ready > a.t_last_ready) a.t_last_ready = r->t_last_ready;
        if (r->t_first_event && (!a.t_first_event || r->t_first_event < a.t_first_event))
            a.t_first_event = r->t_first_event;
        if (r->t_last_event > a.t_last_event) a.t_last_event = r->t_last_event;
        client_cpu += r->cpu_s;
    }
    if (a.min_ev == UINT64_MAX) a.min_ev = 0;
    /* what the ready connections should have got (a failed one is counted in "failed") */
    uint64_t expect = o->mode == M_FANOUT ? expected(&pub) * (uint64_t)a.ready / (uint64_t)o->conns
                                         : 0;
    uint64_t unique = a.events - (a.disorder < a.events ? a.disorder : a.events);
    uint64_t loss = expect > unique ? expect - unique : 0;
    double window = ns_s(t_window1 - t_window0);
    double span = a.t_last_event > a.t_first_event ? ns_s(a.t_last_event - a.t_first_event) : 0;
    double setup_s = a.t_last_ready > a.t_first_open ? ns_s(a.t_last_ready - a.t_first_open) : 0;
    double dps = span > 0 ? (double)a.events / span : 0;
    double hps = setup_s > 0 ? (double)a.ready / setup_s : 0;
    double srv_cpu = o->npids ? ps[0].cpu1 - ps[0].cpu0 : 0;
    long rss_delta = o->npids ? ps[0].rss1 - ps[0].rss_before : 0;
    bool complete = finals == np && a.failed == 0 && a.ready == o->conns && a.lost == 0 &&
                    (o->mode != M_FANOUT || (loss == 0 && a.gaps == 0 && a.disorder == 0));
    double p50 = hist_quantile(hist, a.lat_n, 0.50), p99 = hist_quantile(hist, a.lat_n, 0.99),
           p999 = hist_quantile(hist, a.lat_n, 0.999);
    if (o->json) {
        printf("{\"mode\":\"%s\",\"target\":\"%s\",\"conns\":%ld,\"procs\":%ld,\"threads\":%ld,"
               "\"topics\":%ld,\"tokens\":%ld,\"ready\":%d,\"failed\":%d,\"lost_conns\":%d,"
               "\"unclean_closes\":%d,\"window_s\":%.3f,\"setup_s\":%.3f,"
               "\"handshakes_per_s\":%.1f",
               mode_names[o->mode], target_names[o->target], o->conns, o->procs, o->threads,
               o->ntopics, o->ntokens, a.ready, a.failed, a.lost, a.unclean, window, setup_s, hps);
        if (o->mode == M_FANOUT)
            printf(",\"rate\":%ld,\"size\":%ld,\"seconds\":%.3f,\"published\":%ld,"
                   "\"publish_errors\":%ld,\"publish_s\":%.3f,\"synced\":%s,\"synced_s\":%.3f,"
                   "\"expected\":%" PRIu64 ",\"deliveries\":%" PRIu64 ",\"loss\":%" PRIu64
                   ",\"gaps\":%" PRIu64 ",\"disorder\":%" PRIu64 ",\"min_per_conn\":%" PRIu64
                   ",\"max_per_conn\":%" PRIu64 ",\"deliveries_per_s\":%.1f,\"span_s\":%.3f",
                   o->rate, o->size, o->seconds, atomic_load(&pub.sent), atomic_load(&pub.errors),
                   pub.took_s, pub.synced ? "true" : "false", pub.synced_s, expect, a.events,
                   loss, a.gaps, a.disorder, a.min_ev, a.max_ev, dps, span);
        printf(",\"latency\":\"%s\",\"lat_samples\":%" PRIu64 ",\"lat_p50_ms\":%.3f,"
               "\"lat_p99_ms\":%.3f,\"lat_p999_ms\":%.3f,\"lat_max_ms\":%.3f",
               o->mode == M_CONNECT ? "handshake" : "delivery", a.lat_n, p50, p99, p999,
               (double)a.lat_max / 1e6);
        if (o->mode == M_FANOUT)
            printf(",\"lat_sock_samples\":%" PRIu64 ",\"lat_sock_p50_ms\":%.3f,"
                   "\"lat_sock_p99_ms\":%.3f,\"lat_sock_p999_ms\":%.3f",
                   a.lat_kn, hist_quantile(hist + HIST_LEN, a.lat_kn, 0.50),
                   hist_quantile(hist + HIST_LEN, a.lat_kn, 0.99),
                   hist_quantile(hist + HIST_LEN, a.lat_kn, 0.999));
        printf(",\"other\":%" PRIu64 ",\"error_frames\":%" PRIu64 ",\"bad_frames\":%" PRIu64
               ",\"send_errors\":%" PRIu64 ",\"pings\":%" PRIu64 ",\"client_cpu_s\":%.3f",
               a.other, a.error_frames, a.bad_frames, a.send_errors, a.pings, client_cpu);
        printf(",\"deflate\":%s,\"deflate_conns\":%" PRIu64 ",\"compressed_frames\":%" PRIu64,
               o->deflate ? "true" : "false", a.deflate_conns, a.compressed);
        printf(",\"servers\":[");
        for (int i = 0; i < o->npids; i++)
            printf("%s{\"pid\":%ld,\"cpu_s\":%.3f,\"rss_before_kib\":%ld,\"rss_start_kib\":%ld,"
                   "\"rss_end_kib\":%ld}",
                   i ? "," : "", o->pids[i], ps[i].cpu1 - ps[i].cpu0, ps[i].rss_before,
                   ps[i].rss0, ps[i].rss1);
        printf("]");
        if (o->npids) {
            printf(",\"server_cpu_s\":%.3f,\"server_cpu_pct\":%.1f,\"rss_delta_kib\":%ld,"
                   "\"rss_per_conn_b\":%.0f",
                   srv_cpu, window > 0 ? 100 * srv_cpu / window : 0, rss_delta,
                   a.ready ? (double)rss_delta * 1024 / a.ready : 0);
            if (o->mode == M_FANOUT)
                printf(",\"cpu_us_per_delivery\":%.4f",
                       a.events ? srv_cpu * 1e6 / (double)a.events : 0);
            if (o->mode == M_CONNECT)
                printf(",\"handshakes_per_cpu_s\":%.1f", srv_cpu > 0 ? a.ready / srv_cpu : 0);
        }
        printf(",\"complete\":%s}\n", complete ? "true" : "false");
    } else {
        printf("%s %s: conns=%ld ready=%d failed=%d lost=%d setup_s=%.3f handshakes_per_s=%.0f",
               target_names[o->target], mode_names[o->mode], o->conns, a.ready, a.failed, a.lost,
               setup_s, hps);
        if (o->mode == M_FANOUT)
            printf(" published=%ld expected=%" PRIu64 " deliveries=%" PRIu64 " loss=%" PRIu64
                   " gaps=%" PRIu64 " disorder=%" PRIu64 " deliveries_per_s=%.0f",
                   atomic_load(&pub.sent), expect, a.events, loss, a.gaps, a.disorder, dps);
        printf(" %s_p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f",
               o->mode == M_CONNECT ? "handshake" : "lat", p50, p99, p999, (double)a.lat_max / 1e6);
        if (o->mode == M_FANOUT)
            printf(" sock_p50_ms=%.3f sock_p99_ms=%.3f",
                   hist_quantile(hist + HIST_LEN, a.lat_kn, 0.50),
                   hist_quantile(hist + HIST_LEN, a.lat_kn, 0.99));
        if (o->npids) {
            printf(" server_cpu_s=%.3f rss_delta_kib=%ld rss_per_conn_b=%.0f", srv_cpu, rss_delta,
                   a.ready ? (double)rss_delta * 1024 / a.ready : 0);
            if (o->mode == M_FANOUT && a.events)
                printf(" cpu_us_per_delivery=%.3f", srv_cpu * 1e6 / (double)a.events);
            if (o->mode == M_CONNECT && srv_cpu > 0)
                printf(" handshakes_per_cpu_s=%.0f", a.ready / srv_cpu);
        }
        printf(" client_cpu_s=%.2f complete=%s\n", client_cpu, complete ? "yes" : "no");
    }
    fflush(stdout);
    if (o->hist_file) {
        FILE *f = fopen(o->hist_file, "w");
        if (f) {
            fprintf(f, "# %s %s: upper bound ms, count, cumulative fraction\n",
                    target_names[o->target], o->mode == M_CONNECT ? "handshake" : "delivery");
            uint64_t seen = 0;
            for (size_t b = 0; b < HIST_LEN; b++) {
                if (!hist[b]) continue;
                seen += hist[b];
                fprintf(f, "%.3f %" PRIu64 " %.6f\n", hist_upper_ms(b), hist[b],
                        (double)seen / (double)a.lat_n);
            }
            fclose(f);
        }
    }
    rc = complete ? 0 : 3;
out:
    if (pub_started) pthread_join(pth, NULL);
    if (pub.b) bus_destroy(pub.b, 2000);
    for (int i = 0; i < np; i++) {
        if (!ch[i].pid) continue;
        close(ch[i].cmd_fd);
        close(ch[i].out_fd);
        int st;
        pid_t w = 0;
        for (int k = 0; k < 100 && (w = waitpid(ch[i].pid, &st, WNOHANG)) == 0; k++) sleep_ms(50);
        if (w == 0) {
            kill(ch[i].pid, SIGKILL);
            waitpid(ch[i].pid, &st, 0);
        }
    }
    free(hist);
    free(tmp);
    return rc;
}

/* ---- command lines ------------------------------------------------------------------------ */

static const char usage_bench[] =
    "usage: sidecast bench connect|idle|fanout [OPTIONS]\n"
    "       sidecast bench publish --nats URL --topic T [--topics K] --rate R --seconds S\n"
    "       sidecast bench tokens --key PEM --count N [--kid KID] [--sub-topics PATTERN]\n"
    "                             [--ttl S] [--user-prefix P]\n"
    "Load generator for the edge and its peers (docs/BENCHMARKS.md). Loopback only.\n"
    "  --target sidecast|nats|ws  server kind (default sidecast): the edge (sidecast.v1),\n"
    "                        nats-server's WebSocket listener, bench/peers/ws-broadcast.js\n"
    "  --url ws://127.0.0.1:PORT/PATH\n"
    "  --token T | --tokens FILE  access token(s), used round robin (sidecast)\n"
    "  --conns N --procs P --threads T   N connections from P processes of T threads each\n"
    "                        (idle: --conns N1,N2,... opens them in steps, a line each)\n"
    "  --concurrency C       handshakes in flight, all processes together (default 256)\n"
    "  --source A-B          bind to 127.0.0.A..B round robin (e.g. 127.0.0.1-127.0.0.8)\n"
    "  --topic T [--topics K]  subscribe to T (K > 1: T.0 .. T.K-1, connection i to i%K)\n"
    "  --nats URL --rate R --seconds S --size B   fanout's publisher: R msg/s for S s of B\n"
    "                        bytes on events.TOPIC (--prefix changes \"events.\")\n"
    "  --drain S             fanout: wait at most S s after publishing (default 5)\n"
    "  --seconds S           idle: hold the connections S s\n"
    "  --setup-timeout S     default 120\n"
    "  --pid PID[,PID]       server processes: CPU and RSS from /proc over the window\n"
    "  --json                one JSON result line on stdout; --hist FILE latency histogram\n"
    "  --quiet               no progress line on stderr\n"
    "  --fast-close          end with close(2), no closing handshake\n"
    "  --deflate             offer permessage-deflate (no context takeover either way) and\n"
    "                        inflate compressed messages (sidecast, ws)\n"
    "Exit: 0 every connection ready (fanout: and every event, in order), 3 not, 2 usage.\n";

static int parse_source(bench_opts *o, const char *s)
{
    char a[32], b[32];
    const char *dash = strchr(s, '-');
    if (!dash) {
        snprintf(a, sizeof a, "%s", s);
        snprintf(b, sizeof b, "%s", s);
    } else {
        if ((size_t)(dash - s) >= sizeof a) return -1;
        memcpy(a, s, (size_t)(dash - s));
        a[dash - s] = 0;
        snprintf(b, sizeof b, "%s", dash + 1);
    }
    struct in_addr x, y;
    if (inet_pton(AF_INET, a, &x) != 1 || inet_pton(AF_INET, b, &y) != 1) return -1;
    uint32_t lo = ntohl(x.s_addr), hi = ntohl(y.s_addr);
    if ((lo >> 24) != 127 || (hi >> 24) != 127 || hi < lo || hi - lo >= MAX_SOURCES) return -1;
    o->nsources = 0;
    for (uint32_t v = lo; v <= hi; v++) o->sources[o->nsources++].s_addr = htonl(v);
    return 0;
}

static int parse_url(bench_opts *o, const char *url)
{
    if (strncmp(url, "ws://", 5) != 0) return -1;
    const char *h = url + 5, *colon = strchr(h, ':');
    if (!colon || (size_t)(colon - h) >= sizeof o->host) return -1;
    memcpy(o->host, h, (size_t)(colon - h));
    o->host[colon - h] = '\0';
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (p < 1 || p > 65535 || (*end != '/' && *end != '\0')) return -1;
    o->port = (int)p;
    snprintf(o->path, sizeof o->path, "%s", *end ? end : "/");
    if (strcmp(o->host, "localhost") == 0) snprintf(o->host, sizeof o->host, "127.0.0.1");
    struct in_addr a;
    if (inet_pton(AF_INET, o->host, &a) != 1 || (ntohl(a.s_addr) >> 24) != 127) return -1;
    o->addr.sin_family = AF_INET;
    o->addr.sin_port = htons((uint16_t)p);
    o->addr.sin_addr = a;
    return 0;
}

static bool topic_ok(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > TOPIC_MAX - 4) return false;
    for (size_t i = 0; i < n; i++) {
        char ch = t[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-' || ch == '.'))
            return false;
    }
    return true;
}

static bool token_ok(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > TOKEN_MAX - 64) return false;
    for (size_t i = 0; i < n; i++)
        if (t[i] <= ' ' || t[i] > '~') return false;
    return true;
}

static int load_tokens(bench_opts *o, const char *path, long max)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "bench: cannot read %s: %s\n", path, strerror(errno));
        return -1;
    }
    o->tokens = calloc((size_t)max, sizeof *o->tokens);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while (o->tokens && o->ntokens < max && (len = getline(&line, &cap, f)) > 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (len == 0) continue;
        if (!token_ok(line)) break;
        o->tokens[o->ntokens++] = strdup(line);
    }
    free(line);
    fclose(f);
    if (o->ntokens == 0) {
        fprintf(stderr, "bench: no token in %s\n", path);
        return -1;
    }
    return 0;
}

static int cmd_tokens(int argc, char **argv)
{
    const char *key = NULL, *kid = "dev-1", *subs = "prices.>", *prefix = "bench-";
    const char *iss = "sidecast", *aud = "sidecast";
    long count = 0, ttl = 3600;
    static const struct option opts[] = {
        {"key", required_argument, NULL, 'k'},        {"kid", required_argument, NULL, 'K'},
        {"count", required_argument, NULL, 'n'},      {"sub-topics", required_argument, NULL, 's'},
        {"ttl", required_argument, NULL, 't'},        {"user-prefix", required_argument, NULL, 'u'},
        {"issuer", required_argument, NULL, 'i'},     {"audience", required_argument, NULL, 'a'},
        {"help", no_argument, NULL, 'h'},             {NULL, 0, NULL, 0}};
    int o;
    optind = 1;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'k': key = optarg; break;
        case 'K': kid = optarg; break;
        case 'n': count = strtol(optarg, NULL, 10); break;
        case 's': subs = optarg; break;
        case 't': ttl = strtol(optarg, NULL, 10); break;
        case 'u': prefix = optarg; break;
        case 'i': iss = optarg; break;
        case 'a': aud = optarg; break;
        case 'h': fputs(usage_bench, stdout); return 0;
        default: fputs(usage_bench, stderr); return 2;
        }
    }
    if (!key || count < 1 || count > MAX_CONNS || ttl < 60 || ttl > 86400) {
        fprintf(stderr, "bench tokens: need --key PEM, 1 <= --count <= %d, 60 <= --ttl <= "
                        "86400\n", MAX_CONNS);
        return 2;
    }
    token_signer *s = NULL;
    if (token_signer_load(&s, key, kid) != 0) {
        fprintf(stderr, "bench tokens: cannot load the signing key %s\n", key);
        return 1;
    }
    long now = (long)time(NULL);
    int rc = 0;
    uint8_t rnd[8];
    for (long i = 0; i < count && rc == 0; i++) {
        char sub[128], jti[64];
        snprintf(sub, sizeof sub, "%s%ld", prefix, i);
        FILE *ur = fopen("/dev/urandom", "r");
        if (!ur || fread(rnd, 1, sizeof rnd, ur) != sizeof rnd) rc = 1;
        if (ur) fclose(ur);
        snprintf(jti, sizeof jti, "bench-%ld-%02x%02x%02x%02x%02x%02x%02x%02x", i, rnd[0], rnd[1],
                 rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
        json_t *claims = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:[s], s:[]}", "iss", iss,
                                   "aud", aud, "sub", sub, "iat", (json_int_t)now, "nbf",
                                   (json_int_t)now, "exp", (json_int_t)(now + ttl), "jti", jti,
                                   "sub_topics", subs, "pub_topics");
        char *tok = NULL;
        if (!claims || token_sign(s, claims, &tok) != 0) rc = 1;
        else printf("%s\n", tok);
        free(tok);
        json_decref(claims);
    }
    token_signer_destroy(s);
    if (rc) fprintf(stderr, "bench tokens: signing failed\n");
    return rc;
}

static int cmd_publish(const bench_opts *o)
{
    if (!o->nats || o->rate < 1 || o->seconds <= 0) {
        fprintf(stderr, "bench publish: need --nats, --topic, --rate, --seconds\n");
        return 2;
    }
    pubstate p;
    memset(&p, 0, sizeof p);
    p.o = o;
    if (pub_connect(&p) != 0) return 1;
    p.total = (long)((double)o->rate * o->seconds);
    pub_run(&p);
    printf("sent=%ld errors=%ld seconds=%.3f rate=%.0f size=%ld synced=%s synced_s=%.3f\n",
           atomic_load(&p.sent), atomic_load(&p.errors), p.took_s,
           p.took_s > 0 ? (double)atomic_load(&p.sent) / p.took_s : 0, o->size,
           p.synced ? "yes" : "no", p.synced_s);
    bus_destroy(p.b, 5000);
    return atomic_load(&p.errors) ? 1 : 0;
}

int cli_bench(int argc, char **argv)
{
    if (argc < 1 || strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0 ||
        strcmp(argv[0], "help") == 0) {
        fputs(usage_bench, argc < 1 ? stderr : stdout);
        return argc < 1 ? 2 : 0;
    }
    const char *mode = argv[0];
    if (strcmp(mode, "tokens") == 0) return cmd_tokens(argc, argv);
    log_init("sidecast-bench", LOG_WARN);
    bench_opts opts;
    memset(&opts, 0, sizeof opts);
    bench_opts *o = &opts;
    o->conns = 1;
    o->procs = 1;
    o->threads = 1;
    o->concurrency = 256;
    o->ntopics = 1;
    o->size = 128;
    o->setup_timeout = 120;
    o->drain = 5;
    snprintf(o->prefix, sizeof o->prefix, "events.");
    const char *url = NULL, *token = NULL, *tokens = NULL, *target = "sidecast", *topic = NULL;
    static const struct option longopts[] = {
        {"target", required_argument, NULL, 'a'},  {"url", required_argument, NULL, 'u'},
        {"token", required_argument, NULL, 'k'},   {"tokens", required_argument, NULL, 'K'},
        {"conns", required_argument, NULL, 'n'},   {"procs", required_argument, NULL, 'P'},
        {"threads", required_argument, NULL, 'T'}, {"concurrency", required_argument, NULL, 'c'},
        {"source", required_argument, NULL, 'S'},  {"topic", required_argument, NULL, 't'},
        {"topics", required_argument, NULL, 'm'},  {"rate", required_argument, NULL, 'r'},
        {"seconds", required_argument, NULL, 's'}, {"size", required_argument, NULL, 'z'},
        {"nats", required_argument, NULL, 'N'},    {"pid", required_argument, NULL, 'p'},
        {"json", no_argument, NULL, 'j'},          {"hist", required_argument, NULL, 'H'},
        {"drain", required_argument, NULL, 'd'},   {"setup-timeout", required_argument, NULL, 'o'},
        {"prefix", required_argument, NULL, 'x'},  {"quiet", no_argument, NULL, 'q'},
        {"fast-close", no_argument, NULL, 'F'},
        {"deflate", no_argument, NULL, 'Z'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'a': target = optarg; break;
        case 'u': url = optarg; break;
        case 'k': token = optarg; break;
        case 'K': tokens = optarg; break;
        case 'n': { /* N, or N1,N2,... (idle: steps) */
            char *p = optarg, *end;
            o->nsteps = 0;
            while (*p && o->nsteps < MAX_STEPS) {
                long v = strtol(p, &end, 10);
                if (end == p || v < 1 || (o->nsteps && v <= o->steps[o->nsteps - 1]) ||
                    (*end && *end != ','))
                    return fputs("bench: --conns N or ascending N1,N2,...\n", stderr), 2;
                o->steps[o->nsteps++] = v;
                p = *end ? end + 1 : end;
            }
            o->conns = o->nsteps ? o->steps[o->nsteps - 1] : 0;
            break;
        }
        case 'P': o->procs = strtol(optarg, NULL, 10); break;
        case 'T': o->threads = strtol(optarg, NULL, 10); break;
        case 'c': o->concurrency = strtol(optarg, NULL, 10); break;
        case 'S':
            if (parse_source(o, optarg) != 0) {
                fprintf(stderr, "bench: --source wants 127.0.0.A[-127.0.0.B], at most %d\n",
                        MAX_SOURCES);
                return 2;
            }
            break;
        case 't': topic = optarg; break;
        case 'm': o->ntopics = strtol(optarg, NULL, 10); break;
        case 'r': o->rate = strtol(optarg, NULL, 10); break;
        case 's': o->seconds = strtod(optarg, NULL); break;
        case 'z': o->size = strtol(optarg, NULL, 10); break;
        case 'N': o->nats = optarg; break;
        case 'p': {
            char *s = optarg, *end;
            while (*s && o->npids < MAX_PIDS) {
                long v = strtol(s, &end, 10);
                if (v <= 0 || end == s) return fputs("bench: bad --pid\n", stderr), 2;
                o->pids[o->npids++] = v;
                s = *end == ',' ? end + 1 : end;
                if (*end && *end != ',') return fputs("bench: bad --pid\n", stderr), 2;
            }
            break;
        }
        case 'j': o->json = true; break;
        case 'H': o->hist_file = optarg; break;
        case 'd': o->drain = strtod(optarg, NULL); break;
        case 'o': o->setup_timeout = strtod(optarg, NULL); break;
        case 'x': snprintf(o->prefix, sizeof o->prefix, "%s", optarg); break;
        case 'q': o->quiet = true; break;
        case 'F': o->fast_close = true; break;
        case 'Z': o->deflate = true; break;
        case 'h': fputs(usage_bench, stdout); return 0;
        default: fputs(usage_bench, stderr); return 2;
        }
    }
    if (o->nsteps > 1 && strcmp(mode, "idle") != 0)
        return fputs("bench: several --conns steps are for idle only\n", stderr), 2;
    if (!topic) topic = "prices.BTC";
    if (!topic_ok(topic) || strlen(o->prefix) + strlen(topic) > TOPIC_MAX + 4) {
        fprintf(stderr, "bench: bad --topic\n");
        return 2;
    }
    snprintf(o->topic, sizeof o->topic, "%s", topic);
    if (o->ntopics < 1 || o->ntopics > MAX_TOPICS || o->size < PUB_SIZE_MIN ||
        o->size > PUB_SIZE_MAX || o->rate < 0 || o->rate > PUB_RATE_MAX || o->seconds < 0 ||
        o->seconds > MAX_SECONDS || (double)o->rate * o->seconds > PUB_TOTAL_MAX || o->drain < 0 ||
        o->drain > 600 || o->setup_timeout <= 0 || o->setup_timeout > MAX_SECONDS) {
        fprintf(stderr, "bench: need 1 <= topics <= %d, %d <= size <= %d, rate <= %d, seconds "
                        "<= %d, rate*seconds <= %d\n",
                MAX_TOPICS, PUB_SIZE_MIN, PUB_SIZE_MAX, PUB_RATE_MAX, MAX_SECONDS,
                PUB_TOTAL_MAX);
        return 2;
    }
    if (strcmp(mode, "publish") == 0) return cmd_publish(o);
    if (strcmp(mode, "connect") == 0) o->mode = M_CONNECT;
    else if (strcmp(mode, "idle") == 0) o->mode = M_IDLE;
    else if (strcmp(mode, "fanout") == 0) o->mode = M_FANOUT;
    else {
        fprintf(stderr, "bench: unknown mode %s\n\n%s", mode, usage_bench);
        return 2;
    }
    if (strcmp(target, "sidecast") == 0) o->target = T_SIDECAST;
    else if (strcmp(target, "nats") == 0) o->target = T_NATS;
    else if (strcmp(target, "ws") == 0) o->target = T_WS;
    else return fputs("bench: --target sidecast|nats|ws\n", stderr), 2;
    if (!url || parse_url(o, url) != 0) {
        fprintf(stderr, "bench: --url must be ws://<loopback address>:PORT[/PATH]\n");
        return 2;
    }
    if (o->procs < 1 || o->procs > MAX_PROCS || o->threads < 1 || o->threads > MAX_THREADS ||
        o->conns < o->procs || o->conns > MAX_CONNS || (o->conns + o->procs - 1) / o->procs >
        MAX_CONNS_PROC || o->concurrency < 1) {
        fprintf(stderr, "bench: need procs <= %d, threads <= %d, procs <= conns <= %d and at "
                        "most %d connections per process\n",
                MAX_PROCS, MAX_THREADS, MAX_CONNS, MAX_CONNS_PROC);
        return 2;
    }
    if (o->mode == M_FANOUT && (!o->nats || o->rate < 1 || o->seconds <= 0)) {
        fprintf(stderr, "bench fanout: needs --nats URL, --rate R and --seconds S\n");
        return 2;
    }
    if (o->mode == M_IDLE && o->seconds <= 0) o->seconds = 1;
    if (token && tokens) return fputs("bench: --token or --tokens, not both\n", stderr), 2;
    if (token) {
        if (!token_ok(token)) return fputs("bench: --token is not a token\n", stderr), 2;
        o->tokens = calloc(1, sizeof *o->tokens);
        if (!o->tokens) return 1;
        o->tokens[0] = strdup(token);
        o->ntokens = 1;
    } else if (tokens && load_tokens(o, tokens, o->conns) != 0) {
        return 2;
    }
    if (o->target == T_SIDECAST && o->ntokens == 0) {
        fprintf(stderr, "bench: --target sidecast needs --token or --tokens\n");
        return 2;
    }
    if (raise_nofile((o->conns + o->procs - 1) / o->procs + 64) != 0) {
        fprintf(stderr, "bench: cannot have %ld open files per process (ulimit -n)\n",
                (o->conns + o->procs - 1) / o->procs + 64);
        return 1;
    }
    int rc = run_parent(o);
    for (long i = 0; i < o->ntokens; i++) free(o->tokens[i]);
    free(o->tokens);
    return rc;
}
