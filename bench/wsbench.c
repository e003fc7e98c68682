/* wsbench - a load generator for the edge's fan-out (bench/fanout.sh), and its publisher.
 *
 *   wsbench --url ws://127.0.0.1:PORT/ws --token TOKEN --conns N --topic TOPIC --seconds S
 *           [--threads T] [--expect E] [--concurrency C] [--setup-timeout S]
 *
 *     Opens N WebSocket connections (sidecast.v1, Authorization: Bearer TOKEN) from T threads,
 *     each with its own epoll over non-blocking sockets and at most C/T handshakes in flight;
 *     waits for each "welcome", subscribes each to TOPIC, waits for every "subscribed" and
 *     prints "ready". Then for S seconds (or until every connection has E events) it counts
 *     the "event" frames of TOPIC per connection, checks that their "seq" only grows by one,
 *     and, when the event's data starts with {"t":NANOSECONDS (CLOCK_MONOTONIC), as the
 *     publisher below writes it, the delay from publish to receipt. Pings are answered.
 *     It prints "measured" when the window ends, then closes every connection with a close
 *     handshake and prints one line of key=value results (exit 0 when every connection got
 *     every event in order: complete=yes).
 *
 *   wsbench publish --nats URL --subject SUBJECT --rate R --seconds S [--size B]
 *
 *     Publishes R messages a second for S seconds on SUBJECT, each a B-byte JSON object
 *     {"t":NANOSECONDS,"i":N,"pad":"xxx..."}, waits (30 s at most) until the server has read
 *     them all, and prints how many were sent and how long that wait took.
 *
 * Client frames are masked, server frames are not (RFC 6455 §5.1); the framing here is the
 * client's half only and deliberately does not reuse services/edge (bench binaries link
 * libcommon.a alone). Traffic goes to loopback addresses only. Every wait has a deadline. */
#include "bus.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 19000         /* per process: the open-file limit is 20,000 */
#define MAX_THREADS 16
#define RBUF_SIZE (64 * 1024)   /* one read buffer per thread, reused by every connection */
#define PART_MAX (16 * 1024)    /* bytes of an unfinished frame a connection may carry over */
#define HEAD_MAX 4096           /* the 101 answer's head */
#define TOKEN_MAX 8192
#define TOPIC_MAX 128
#define MAX_EVENTS 512          /* epoll events per wait */
#define TICK_MS 20              /* epoll wait: how often a worker looks at the phase */
#define CLOSE_TIMEOUT_S 5.0
#define MAX_SECONDS 3600
#define ERR_PRINT_MAX 5         /* per worker: error frames and failures shown on stderr */
#define HIST_FINE 10000         /* latency: 10 µs buckets up to 100 ms ... */
#define HIST_COARSE 9900        /* ... then 1 ms buckets up to 10 s, then one overflow */
#define HIST_LEN (HIST_FINE + HIST_COARSE + 1)

#define PUB_SIZE_MIN 48
#define PUB_SIZE_MAX 8192
#define PUB_RATE_MAX 1000000
#define PUB_TOTAL_MAX 20000000

/* ---- time --------------------------------------------------------------------------------- */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double ns_to_s(int64_t ns) { return (double)ns / 1e9; }

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* ---- server frames (pure) ----------------------------------------------------------------- */

enum { OP_CONT = 0, OP_TEXT = 1, OP_BIN = 2, OP_CLOSE = 8, OP_PING = 9, OP_PONG = 10 };

typedef struct sframe {
    int op;
    bool fin;
    const uint8_t *payload;
    size_t len;
} sframe;

/* Parses one server frame at p (n bytes available). Returns the bytes it spans (> 0), 0 when
 * more bytes are needed, or -1 for a frame a server must not send to us (masked, reserved
 * bits set, a control frame over 125 bytes, a payload over PART_MAX). No I/O, no allocation;
 * f->payload points into p. */
static long sframe_parse(const uint8_t *p, size_t n, sframe *f)
{
    if (n < 2) return 0;
    if ((p[0] & 0x70) || (p[1] & 0x80)) return -1;
    f->fin = (p[0] & 0x80) != 0;
    f->op = p[0] & 0x0f;
    uint64_t len = p[1] & 0x7f;
    size_t hdr = 2;
    if (len == 126) {
        if (n < 4) return 0;
        len = ((uint64_t)p[2] << 8) | p[3];
        hdr = 4;
    } else if (len == 127) {
        if (n < 10) return 0;
        len = 0;
        for (int i = 0; i < 8; i++) len = (len << 8) | p[2 + i];
        hdr = 10;
    }
    if (len > PART_MAX - 16 || (f->op >= OP_CLOSE && len > 125)) return -1;
    if (n < hdr + len) return 0;
    f->payload = p + hdr;
    f->len = (size_t)len;
    return (long)(hdr + len);
}

/* Builds a masked client frame of op with payload (len ≤ 1024) into out (≥ len + 8 bytes).
 * Returns its size. */
static size_t cframe_build(uint8_t *out, int op, const void *payload, size_t len, uint32_t key)
{
    size_t h = 0;
    out[h++] = (uint8_t)(0x80 | op);
    if (len < 126) {
        out[h++] = (uint8_t)(0x80 | len);
    } else {
        out[h++] = 0x80 | 126;
        out[h++] = (uint8_t)(len >> 8);
        out[h++] = (uint8_t)len;
    }
    uint8_t mask[4] = {(uint8_t)(key >> 24), (uint8_t)(key >> 16), (uint8_t)(key >> 8),
                       (uint8_t)key};
    memcpy(out + h, mask, 4);
    h += 4;
    const uint8_t *src = payload;
    for (size_t i = 0; i < len; i++) out[h + i] = src[i] ^ mask[i & 3];
    return h + len;
}

/* Reads the unsigned decimal after key (e.g. "\"seq\":") in [p, p+n); 0 and *out, or -1. */
static int field_u64(const uint8_t *p, size_t n, const char *key, uint64_t *out)
{
    size_t kl = strlen(key);
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

/* ---- the client --------------------------------------------------------------------------- */

enum cstate {
    C_IDLE,        /* not opened yet */
    C_CONNECTING,  /* TCP connect in progress */
    C_UPGRADE,     /* request sent, waiting for 101 */
    C_WELCOME,     /* waiting for "welcome" */
    C_SUBSCRIBING, /* subscribe sent, waiting for "subscribed" */
    C_READY,       /* counting events */
    C_CLOSING,     /* our close frame sent, waiting for the edge's */
    C_DONE,        /* socket closed */
};

typedef struct conn {
    int fd;
    uint8_t state;
    bool settled;  /* counted in g_settled (ready or failed during set-up) */
    bool failed;   /* failed during set-up */
    bool lost;     /* closed by the edge or by an error after set-up */
    bool clean;    /* closing handshake completed */
    uint16_t close_code; /* the edge's, when it closed first */
    uint16_t plen, pcap;
    uint8_t *part; /* carried-over bytes of an unfinished frame or head */
    uint32_t events;
    uint32_t gaps;     /* events missing between two received ones */
    uint32_t disorder; /* events whose seq was not above the previous one */
    uint64_t first_seq, last_seq;
} conn;

typedef struct worker {
    int index;
    int epfd;
    conn *conns;
    int n;
    int next;     /* next connection to open */
    int inflight; /* connections in set-up */
    int max_inflight;
    bool close_started;
    bool closed_reported;
    int open_after_close; /* connections still open after the close phase began */
    uint8_t *rbuf;
    uint32_t rng;
    uint64_t *hist;
    /* results, read by main after join */
    uint64_t other_events, error_frames, bad_frames, send_errors, pings;
    uint64_t lat_samples;
    int64_t lat_max_ns;
    int64_t t_first_event, t_last_event;
    int64_t t_last_welcome, t_last_subscribed, t_last_closed;
    int printed;
    pthread_t th;
} worker;

enum phase { PH_SETUP, PH_MEASURE, PH_CLOSE, PH_STOP };

static struct {
    struct sockaddr_in addr;
    char request[TOKEN_MAX + 1024];
    size_t request_len;
    char topic[TOPIC_MAX + 1];
    char topic_field[TOPIC_MAX + 16]; /* "topic":"<topic>" */
    uint8_t subscribe[TOPIC_MAX + 64];
    size_t subscribe_len;
    uint64_t expect;
    int64_t t_start, t_close;
    int64_t hard_deadline;
} B;

static _Atomic int g_phase = PH_SETUP;
static _Atomic int g_settled;       /* connections ready or failed in set-up */
static _Atomic int g_failed;
static _Atomic int g_reached;       /* connections that got B.expect events */
static _Atomic int g_workers_closed;

static uint32_t rng_next(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

static void settle(worker *w, conn *c, bool ok)
{
    if (c->settled) return;
    c->settled = true;
    w->inflight--;
    if (!ok) {
        c->failed = true;
        atomic_fetch_add(&g_failed, 1);
    }
    atomic_fetch_add(&g_settled, 1);
}

static void conn_close_fd(worker *w, conn *c)
{
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->state = C_DONE;
    free(c->part);
    c->part = NULL;
    c->plen = c->pcap = 0;
    if (w->close_started) {
        w->open_after_close--;
        w->t_last_closed = now_ns();
    }
}

/* Ends a connection that failed or that the edge closed; what is counted depends on when. */
static void conn_fail(worker *w, conn *c, const char *why)
{
    if (c->state == C_DONE) return;
    bool closing = c->state == C_CLOSING;
    if (!c->settled) {
        settle(w, c, false);
    } else if (!closing) {
        c->lost = true;
    }
    if (!closing && w->printed < ERR_PRINT_MAX) {
        w->printed++;
        if (c->close_code)
            fprintf(stderr, "wsbench: connection %td: %s (close code %u)\n", c - w->conns, why,
                    c->close_code);
        else
            fprintf(stderr, "wsbench: connection %td: %s\n", c - w->conns, why);
    }
    conn_close_fd(w, c);
}

static int send_frame(worker *w, conn *c, int op, const void *payload, size_t len)
{
    uint8_t out[1024 + 16];
    if (len > 1024) return -1;
    size_t n = cframe_build(out, op, payload, len, rng_next(&w->rng));
    ssize_t r = write(c->fd, out, n);
    if (r != (ssize_t)n) {
        /* Frames here are tiny and the socket is drained by the edge: a short write means
         * the connection is stuck, which is a failure of the run, not something to queue. */
        w->send_errors++;
        return -1;
    }
    return 0;
}

static void on_event(worker *w, conn *c, const uint8_t *p, size_t n, int64_t t_read)
{
    if (!memmem(p, n, B.topic_field, strlen(B.topic_field))) {
        w->other_events++;
        return;
    }
    uint64_t seq, t;
    if (field_u64(p, n, "\"seq\":", &seq) != 0) {
        w->bad_frames++;
        return;
    }
    if (c->events == 0) {
        c->first_seq = seq;
    } else if (seq <= c->last_seq) {
        c->disorder++;
    } else if (seq > c->last_seq + 1) {
        c->gaps += (uint32_t)(seq - c->last_seq - 1);
    }
    if (c->events == 0 || seq > c->last_seq) c->last_seq = seq;
    c->events++;
    if (B.expect && c->events == B.expect) atomic_fetch_add(&g_reached, 1);
    if (w->t_first_event == 0) w->t_first_event = t_read;
    w->t_last_event = t_read;

    const uint8_t *d = memmem(p, n, "\"data\":{\"t\":", 12);
    if (d && field_u64(d, n - (size_t)(d - p), "{\"t\":", &t) == 0 && (int64_t)t <= t_read) {
        int64_t lat = t_read - (int64_t)t;
        int64_t us = lat / 1000;
        size_t b = us < HIST_FINE * 10 ? (size_t)(us / 10)
                   : us < 10000000     ? HIST_FINE + (size_t)((us - 100000) / 1000)
                                       : HIST_LEN - 1;
        if (b >= HIST_LEN) b = HIST_LEN - 1;
        w->hist[b]++;
        w->lat_samples++;
        if (lat > w->lat_max_ns) w->lat_max_ns = lat;
    }
}

static void on_text(worker *w, conn *c, const uint8_t *p, size_t n, int64_t t_read)
{
    if (has_prefix(p, n, "{\"type\":\"event\"")) {
        on_event(w, c, p, n, t_read);
    } else if (has_prefix(p, n, "{\"type\":\"welcome\"")) {
        if (c->state != C_WELCOME) return;
        w->t_last_welcome = t_read;
        if (send_frame(w, c, OP_TEXT, B.subscribe, B.subscribe_len) != 0) {
            conn_fail(w, c, "subscribe not sent");
            return;
        }
        c->state = C_SUBSCRIBING;
    } else if (has_prefix(p, n, "{\"type\":\"subscribed\"")) {
        if (c->state != C_SUBSCRIBING || !memmem(p, n, B.topic_field, strlen(B.topic_field)))
            return;
        w->t_last_subscribed = t_read;
        c->state = C_READY;
        settle(w, c, true);
    } else if (has_prefix(p, n, "{\"type\":\"error\"")) {
        w->error_frames++;
        if (w->printed < ERR_PRINT_MAX) {
            w->printed++;
            fprintf(stderr, "wsbench: error frame: %.*s\n", (int)(n > 300 ? 300 : n), p);
        }
        if (c->state == C_SUBSCRIBING) conn_fail(w, c, "subscribe refused");
    }
    /* token_expiring, pong, ack: nothing to do */
}

/* Handles the frames in buf[0, len). Returns the bytes consumed; on a failure the connection
 * is closed (state C_DONE) and the rest is dropped. */
static size_t on_frames(worker *w, conn *c, const uint8_t *buf, size_t len, int64_t t_read)
{
    size_t off = 0;
    while (off < len && c->state != C_DONE) {
        sframe f;
        long used = sframe_parse(buf + off, len - off, &f);
        if (used == 0) break;
        if (used < 0) {
            w->bad_frames++;
            conn_fail(w, c, "bad frame");
            return len;
        }
        off += (size_t)used;
        switch (f.op) {
        case OP_TEXT:
            if (!f.fin) { /* the edge writes each message as one frame */
                w->bad_frames++;
                conn_fail(w, c, "fragmented message");
                return len;
            }
            on_text(w, c, f.payload, f.len, t_read);
            break;
        case OP_PING:
            w->pings++;
            if (send_frame(w, c, OP_PONG, f.payload, f.len) != 0) conn_fail(w, c, "pong not sent");
            break;
        case OP_CLOSE:
            c->close_code = f.len >= 2 ? (uint16_t)((f.payload[0] << 8) | f.payload[1]) : 1005;
            if (c->state == C_CLOSING) {
                c->clean = true;
                conn_close_fd(w, c);
            } else {
                send_frame(w, c, OP_CLOSE, f.payload, f.len >= 2 ? 2 : 0);
                conn_fail(w, c, "closed by the edge");
            }
            return len;
        case OP_PONG:
            break;
        default:
            w->bad_frames++;
            conn_fail(w, c, "unexpected opcode");
            return len;
        }
    }
    return off;
}

/* Keeps buf[0, n) for the next read of c. 0, or -1 when it is over PART_MAX. */
static int keep_part(conn *c, const uint8_t *buf, size_t n)
{
    if (n > PART_MAX) return -1;
    if (n > c->pcap) {
        size_t cap = c->pcap ? c->pcap : 256;
        while (cap < n) cap *= 2;
        uint8_t *p = realloc(c->part, cap);
        if (!p) return -1;
        c->part = p;
        c->pcap = (uint16_t)(cap > UINT16_MAX ? UINT16_MAX : cap);
    }
    memmove(c->part, buf, n);
    c->plen = (uint16_t)n;
    return 0;
}

static void on_readable(worker *w, conn *c)
{
    uint8_t *buf = w->rbuf;
    size_t have = c->plen;
    if (have) memcpy(buf, c->part, have);
    c->plen = 0;
    ssize_t r = read(c->fd, buf + have, RBUF_SIZE);
    if (r == 0) {
        conn_fail(w, c, "end of stream");
        return;
    }
    if (r < 0) {
        if (errno == EAGAIN || errno == EINTR) {
            c->plen = (uint16_t)have;
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
            !memmem(buf, off, "sidecast.v1", strlen("sidecast.v1"))) {
            const uint8_t *eol = memchr(buf, '\r', len);
            if (w->printed < ERR_PRINT_MAX) {
                w->printed++;
                fprintf(stderr, "wsbench: upgrade refused: %.*s\n",
                        (int)(eol ? eol - buf : 0), buf);
            }
            conn_fail(w, c, "no 101");
            return;
        }
        c->state = C_WELCOME;
    }
    off += on_frames(w, c, buf + off, len - off, t_read);
    if (c->state != C_DONE && off < len && keep_part(c, buf + off, len - off) != 0)
        conn_fail(w, c, "frame too big");
}

static void on_writable(worker *w, conn *c)
{
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0) {
        conn_fail(w, c, err ? strerror(err) : "connect failed");
        return;
    }
    ssize_t r = write(c->fd, B.request, B.request_len);
    if (r != (ssize_t)B.request_len) {
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
    w->inflight++;
    c->state = C_CONNECTING;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        conn_fail(w, c, strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (const struct sockaddr *)&B.addr, sizeof B.addr) != 0 &&
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
    static const uint8_t normal[2] = {0x03, 0xe8}; /* 1000 */
    for (int i = 0; i < w->n; i++) {
        conn *c = &w->conns[i];
        if (c->state == C_DONE || c->state == C_IDLE) continue;
        w->open_after_close++;
        if (c->state >= C_WELCOME && c->state <= C_READY &&
            send_frame(w, c, OP_CLOSE, normal, sizeof normal) == 0) {
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
    while (now_ns() < B.hard_deadline) {
        int ph = atomic_load(&g_phase);
        if (ph == PH_STOP) break;
        if (ph == PH_SETUP) {
            while (w->next < w->n && w->inflight < w->max_inflight)
                conn_open(w, &w->conns[w->next++]);
        }
        if (ph == PH_CLOSE && !w->close_started) start_close(w);
        if (w->close_started && w->open_after_close <= 0 && !w->closed_reported) {
            w->closed_reported = true;
            atomic_fetch_add(&g_workers_closed, 1);
        }
        int k = epoll_wait(w->epfd, evs, MAX_EVENTS, TICK_MS);
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
    for (int i = 0; i < w->n; i++) { /* what is left at the deadline */
        conn *c = &w->conns[i];
        if (c->state != C_DONE && c->state != C_IDLE) conn_close_fd(w, c);
        free(c->part);
        c->part = NULL;
    }
    return NULL;
}

/* ---- set-up and results ------------------------------------------------------------------- */

/* Accepts ws://HOST:PORT/PATH where HOST is a loopback IPv4 address or "localhost". */
static int parse_url(const char *url, char *host, size_t hcap, int *port, const char **path)
{
    if (strncmp(url, "ws://", 5) != 0) return -1;
    const char *h = url + 5, *colon = strchr(h, ':');
    if (!colon || (size_t)(colon - h) >= hcap) return -1;
    memcpy(host, h, (size_t)(colon - h));
    host[colon - h] = '\0';
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (p < 1 || p > 65535 || *end != '/') return -1;
    *port = (int)p;
    *path = end;
    if (strcmp(host, "localhost") == 0) snprintf(host, hcap, "127.0.0.1");
    struct in_addr a;
    if (inet_pton(AF_INET, host, &a) != 1 || (ntohl(a.s_addr) >> 24) != 127) return -1;
    return 0;
}

static bool topic_valid(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > TOPIC_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char ch = t[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-' || ch == '.'))
            return false;
    }
    return true;
}

static bool token_valid(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > TOKEN_MAX) return false;
    for (size_t i = 0; i < n; i++)
        if (t[i] <= ' ' || t[i] > '~') return false;
    return true;
}

static int raise_nofile(int need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
    if (rl.rlim_cur >= (rlim_t)need) return 0;
    if (rl.rlim_max < (rlim_t)need) return -1;
    rl.rlim_cur = (rlim_t)need;
    return setrlimit(RLIMIT_NOFILE, &rl);
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* The latency (ms) at quantile q of the merged histogram (bucket upper bounds). */
static double hist_quantile(const uint64_t *h, uint64_t total, double q)
{
    if (total == 0) return 0;
    uint64_t want = (uint64_t)(q * (double)total), seen = 0;
    if (want >= total) want = total - 1;
    for (size_t b = 0; b < HIST_LEN; b++) {
        seen += h[b];
        if (seen > want) {
            if (b < HIST_FINE) return (double)(b + 1) * 0.01;
            if (b < HIST_LEN - 1) return 100.0 + (double)(b - HIST_FINE + 1);
            return 10000.0;
        }
    }
    return 10000.0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: wsbench --url ws://127.0.0.1:PORT/ws --token TOKEN --conns N --topic TOPIC\n"
            "               --seconds S [--threads T] [--expect E] [--concurrency C]\n"
            "               [--setup-timeout S]\n"
            "       wsbench publish --nats URL --subject SUBJECT --rate R --seconds S "
            "[--size B]\n");
}

static int run_clients(int argc, char **argv)
{
    const char *url = NULL, *token = NULL, *topic = NULL;
    long nconns = 0, nthreads = 1, expect = 0, concurrency = 256;
    double seconds = 0, setup_timeout = 120;
    static const struct option opts[] = {
        {"url", required_argument, NULL, 'u'},     {"token", required_argument, NULL, 'k'},
        {"conns", required_argument, NULL, 'n'},   {"topic", required_argument, NULL, 't'},
        {"seconds", required_argument, NULL, 's'}, {"threads", required_argument, NULL, 'T'},
        {"expect", required_argument, NULL, 'e'},  {"concurrency", required_argument, NULL, 'c'},
        {"setup-timeout", required_argument, NULL, 'S'}, {NULL, 0, NULL, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'u': url = optarg; break;
        case 'k': token = optarg; break;
        case 'n': nconns = strtol(optarg, NULL, 10); break;
        case 't': topic = optarg; break;
        case 's': seconds = strtod(optarg, NULL); break;
        case 'T': nthreads = strtol(optarg, NULL, 10); break;
        case 'e': expect = strtol(optarg, NULL, 10); break;
        case 'c': concurrency = strtol(optarg, NULL, 10); break;
        case 'S': setup_timeout = strtod(optarg, NULL); break;
        default: usage(); return 2;
        }
    }
    char host[64];
    int port;
    const char *path;
    if (!url || parse_url(url, host, sizeof host, &port, &path) != 0) {
        fprintf(stderr, "wsbench: --url must be ws://<loopback address>:PORT/PATH\n");
        return 2;
    }
    if (!token || !token_valid(token)) {
        fprintf(stderr, "wsbench: --token missing or not a token\n");
        return 2;
    }
    if (!topic || !topic_valid(topic)) {
        fprintf(stderr, "wsbench: --topic missing or invalid\n");
        return 2;
    }
    if (nconns < 1 || nconns > MAX_CONNS || nthreads < 1 || nthreads > MAX_THREADS ||
        nthreads > nconns || seconds <= 0 || seconds > MAX_SECONDS || expect < 0 ||
        expect > UINT32_MAX || concurrency < 1 || concurrency > MAX_CONNS ||
        setup_timeout <= 0 || setup_timeout > MAX_SECONDS) {
        fprintf(stderr, "wsbench: need 1 <= conns <= %d, 1 <= threads <= %d, "
                        "0 < seconds, setup-timeout <= %d\n", MAX_CONNS, MAX_THREADS, MAX_SECONDS);
        return 2;
    }
    if (raise_nofile((int)nconns + 64) != 0) {
        fprintf(stderr, "wsbench: cannot have %ld open files (ulimit -n)\n", nconns + 64);
        return 1;
    }

    B.addr.sin_family = AF_INET;
    B.addr.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, host, &B.addr.sin_addr);
    int rl = snprintf(B.request, sizeof B.request,
                      "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sidecast.v1\r\n"
                      "Authorization: Bearer %s\r\n\r\n",
                      path, host, port, token);
    if (rl < 0 || (size_t)rl >= sizeof B.request) return 2;
    B.request_len = (size_t)rl;
    snprintf(B.topic, sizeof B.topic, "%s", topic);
    snprintf(B.topic_field, sizeof B.topic_field, "\"topic\":\"%s\"", topic);
    B.subscribe_len = (size_t)snprintf((char *)B.subscribe, sizeof B.subscribe,
                                       "{\"type\":\"subscribe\",\"topic\":\"%s\"}", topic);
    B.expect = (uint64_t)expect;

    int rc = 1;
    conn *conns = calloc((size_t)nconns, sizeof *conns);
    worker *ws = calloc((size_t)nthreads, sizeof *ws);
    uint64_t *hist = calloc(HIST_LEN, sizeof *hist);
    int started = 0;
    if (!conns || !ws || !hist) goto error;
    for (long i = 0; i < nconns; i++) conns[i].fd = -1;
    B.t_start = now_ns();
    B.hard_deadline = B.t_start + (int64_t)((setup_timeout + seconds + CLOSE_TIMEOUT_S + 5) * 1e9);
    long per = nconns / nthreads, extra = nconns % nthreads, at = 0;
    for (int i = 0; i < nthreads; i++) {
        worker *w = &ws[i];
        w->index = i;
        w->conns = conns + at;
        w->n = (int)(per + (i < extra));
        at += w->n;
        w->max_inflight = (int)(concurrency / nthreads > 0 ? concurrency / nthreads : 1);
        w->rng = 0x9e3779b9u ^ (uint32_t)(i * 7919 + 1);
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        w->rbuf = malloc(RBUF_SIZE + PART_MAX);
        w->hist = calloc(HIST_LEN, sizeof *w->hist);
        if (w->epfd < 0 || !w->rbuf || !w->hist) goto error;
    }
    for (; started < nthreads; started++)
        if (pthread_create(&ws[started].th, NULL, worker_run, &ws[started]) != 0) goto error;

    /* set-up: every connection ready or failed, within setup_timeout */
    int64_t setup_end = B.t_start + (int64_t)(setup_timeout * 1e9);
    while (atomic_load(&g_settled) < nconns && now_ns() < setup_end) sleep_ms(5);
    int settled = atomic_load(&g_settled), failed = atomic_load(&g_failed);
    if (settled < nconns)
        fprintf(stderr, "wsbench: set-up timed out: %d of %ld connections settled\n", settled,
                nconns);
    if (failed)
        fprintf(stderr, "wsbench: %d of %ld connections failed in set-up\n", failed, nconns);
    int64_t t_ready = now_ns();
    printf("ready\n");
    fflush(stdout);

    /* measuring: seconds, or until every ready connection has `expect` events */
    double cpu0 = cpu_seconds();
    atomic_store(&g_phase, PH_MEASURE);
    int ready = settled - failed;
    int64_t measure_end = ready > 0 ? t_ready + (int64_t)(seconds * 1e9) : t_ready;
    while (now_ns() < measure_end && !(expect > 0 && atomic_load(&g_reached) >= ready))
        sleep_ms(5);
    int64_t t_measured = now_ns();
    double cpu1 = cpu_seconds();
    printf("measured\n"); /* bench/fanout.sh reads the edge's CPU time here */
    fflush(stdout);

    /* closing handshake, bounded */
    B.t_close = now_ns();
    for (int i = 0; i < nthreads; i++) ws[i].t_last_closed = B.t_close;
    atomic_store(&g_phase, PH_CLOSE);
    int64_t close_end = B.t_close + (int64_t)(CLOSE_TIMEOUT_S * 1e9);
    while (atomic_load(&g_workers_closed) < nthreads && now_ns() < close_end) sleep_ms(5);
    atomic_store(&g_phase, PH_STOP);
    for (int i = 0; i < started; i++) pthread_join(ws[i].th, NULL);
    started = 0;

    /* results */
    uint64_t events = 0, gaps = 0, disorder = 0, other = 0, errors = 0, bad = 0, send_err = 0;
    uint64_t pings = 0, lat_n = 0, min_ev = UINT64_MAX, max_ev = 0;
    uint64_t first_lo = UINT64_MAX, first_hi = 0, last_lo = UINT64_MAX, last_hi = 0;
    int64_t lat_max = 0, t_first = 0, t_last = 0, t_welcome = 0, t_subscribed = 0, t_closed = 0;
    int lost = 0, unclean = 0, full = 0;
    for (long i = 0; i < nconns; i++) {
        conn *c = &conns[i];
        if (c->failed || !c->settled) continue;
        events += c->events;
        gaps += c->gaps;
        disorder += c->disorder;
        if (c->events < min_ev) min_ev = c->events;
        if (c->events > max_ev) max_ev = c->events;
        if (c->events) {
            if (c->first_seq < first_lo) first_lo = c->first_seq;
            if (c->first_seq > first_hi) first_hi = c->first_seq;
            if (c->last_seq < last_lo) last_lo = c->last_seq;
            if (c->last_seq > last_hi) last_hi = c->last_seq;
        }
        if (expect > 0 && c->events == (uint64_t)expect && !c->gaps && !c->disorder) full++;
        lost += c->lost;
        unclean += !c->clean && !c->lost;
    }
    if (min_ev == UINT64_MAX) min_ev = 0;
    if (first_lo == UINT64_MAX) first_lo = last_lo = 0;
    for (int i = 0; i < nthreads; i++) {
        worker *w = &ws[i];
        other += w->other_events;
        errors += w->error_frames;
        bad += w->bad_frames;
        send_err += w->send_errors;
        pings += w->pings;
        lat_n += w->lat_samples;
        if (w->lat_max_ns > lat_max) lat_max = w->lat_max_ns;
        if (w->t_first_event && (!t_first || w->t_first_event < t_first)) t_first = w->t_first_event;
        if (w->t_last_event > t_last) t_last = w->t_last_event;
        if (w->t_last_welcome > t_welcome) t_welcome = w->t_last_welcome;
        if (w->t_last_subscribed > t_subscribed) t_subscribed = w->t_last_subscribed;
        if (w->t_last_closed > t_closed) t_closed = w->t_last_closed;
        for (size_t b = 0; b < HIST_LEN; b++) hist[b] += w->hist[b];
    }
    double span = t_last > t_first ? ns_to_s(t_last - t_first) : 0;
    double window = ns_to_s(t_measured - t_ready);
    bool complete = failed == 0 && settled == nconns && lost == 0 && gaps == 0 && disorder == 0 &&
                    (expect == 0 ? min_ev == max_ev : full == ready);
    printf("conns=%ld ready=%d failed=%d lost=%d events=%" PRIu64 " expect=%ld min=%" PRIu64
           " max=%" PRIu64 " gaps=%" PRIu64 " disorder=%" PRIu64 " other=%" PRIu64
           " first_seq=%" PRIu64 "-%" PRIu64 " last_seq=%" PRIu64 "-%" PRIu64
           " deliveries_per_s=%.0f span_s=%.3f window_s=%.3f"
           " lat_p50_ms=%.2f lat_p99_ms=%.2f lat_max_ms=%.2f"
           " handshake_s=%.3f subscribe_s=%.3f close_s=%.3f unclean_closes=%d"
           " error_frames=%" PRIu64 " bad_frames=%" PRIu64 " send_errors=%" PRIu64
           " pings=%" PRIu64 " client_cpu_pct=%.0f complete=%s\n",
           nconns, ready, failed, lost, events, expect, min_ev, max_ev, gaps, disorder, other,
           first_lo, first_hi, last_lo, last_hi,
           span > 0 ? (double)events / span : 0, span, window,
           hist_quantile(hist, lat_n, 0.50), hist_quantile(hist, lat_n, 0.99),
           (double)lat_max / 1e6,
           t_welcome ? ns_to_s(t_welcome - B.t_start) : 0,
           t_subscribed ? ns_to_s(t_subscribed - B.t_start) : 0,
           ns_to_s(t_closed - B.t_close), unclean, errors, bad, send_err, pings,
           window > 0 ? 100.0 * (cpu1 - cpu0) / window : 0, complete ? "yes" : "no");
    fflush(stdout);
    rc = complete ? 0 : 3;
error:
    if (started) { /* a thread failed to start: stop the others */
        atomic_store(&g_phase, PH_STOP);
        for (int i = 0; i < started; i++) pthread_join(ws[i].th, NULL);
    }
    if (ws) {
        for (long i = 0; i < nthreads; i++) {
            if (ws[i].epfd > 0) close(ws[i].epfd);
            free(ws[i].rbuf);
            free(ws[i].hist);
        }
    }
    free(ws);
    free(conns);
    free(hist);
    return rc;
}

/* ---- publisher ---------------------------------------------------------------------------- */

static int run_publisher(int argc, char **argv)
{
    const char *nats = NULL, *subject = NULL;
    long rate = 0, size = 128;
    double seconds = 0;
    static const struct option opts[] = {
        {"nats", required_argument, NULL, 'n'}, {"subject", required_argument, NULL, 'j'},
        {"rate", required_argument, NULL, 'r'}, {"seconds", required_argument, NULL, 's'},
        {"size", required_argument, NULL, 'z'}, {NULL, 0, NULL, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'n': nats = optarg; break;
        case 'j': subject = optarg; break;
        case 'r': rate = strtol(optarg, NULL, 10); break;
        case 's': seconds = strtod(optarg, NULL); break;
        case 'z': size = strtol(optarg, NULL, 10); break;
        default: usage(); return 2;
        }
    }
    if (!nats || !subject || rate < 1 || rate > PUB_RATE_MAX || seconds <= 0 ||
        seconds > MAX_SECONDS || size < PUB_SIZE_MIN || size > PUB_SIZE_MAX ||
        (double)rate * seconds > PUB_TOTAL_MAX) {
        fprintf(stderr, "wsbench publish: need --nats, --subject, 1 <= rate <= %d, "
                        "0 < seconds, %d <= size <= %d, rate*seconds <= %d\n",
                PUB_RATE_MAX, PUB_SIZE_MIN, PUB_SIZE_MAX, PUB_TOTAL_MAX);
        usage();
        return 2;
    }
    bus *b = NULL;
    if (bus_connect(&b, nats, "wsbench") != 0) return 1;
    for (int i = 0; i < 100 && !bus_connected(b); i++) sleep_ms(50);
    if (!bus_connected(b)) {
        fprintf(stderr, "wsbench publish: not connected to %s\n", nats);
        bus_destroy(b, 0);
        return 1;
    }
    long total = (long)((double)rate * seconds), sent = 0, errors = 0;
    char msg[PUB_SIZE_MAX + 1];
    int64_t t0 = now_ns(), deadline = t0 + (int64_t)((seconds * 2 + 5) * 1e9);
    for (long i = 0; i < total; i++) {
        int64_t due = t0 + (int64_t)((double)i * 1e9 / (double)rate), t = now_ns();
        if (t > deadline) break;
        if (due > t) {
            struct timespec ts = {due / 1000000000, due % 1000000000};
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
        }
        /* {"t":T,"i":I,"pad":"xx..."} padded to exactly size bytes */
        int head = snprintf(msg, sizeof msg, "{\"t\":%" PRId64 ",\"i\":%ld,\"pad\":\"", now_ns(), i);
        long pad = size - head - 2;
        if (head < 0 || pad < 0) return 2;
        memset(msg + head, 'x', (size_t)pad);
        memcpy(msg + head + pad, "\"}", 2);
        if (bus_publish(b, subject, NULL, msg, (size_t)size, NULL, 0) == 0)
            sent++;
        else
            errors++;
    }
    double took = ns_to_s(now_ns() - t0);
    /* A request nobody answers comes back "no responders" only after the server has read
     * everything published before it on this connection: then nothing is left in our
     * buffers for bus_destroy to drop. A server that cannot keep up (JetStream ingest) shows
     * here as a long synced_s. */
    int64_t ts = now_ns();
    bus_msg *r = NULL;
    int src = bus_request(b, "_WSBENCH.sync", "", 0, NULL, 0, 30000, &r);
    bus_msg_destroy(r);
    double synced = ns_to_s(now_ns() - ts);
    bus_destroy(b, 5000);
    printf("sent=%ld errors=%ld seconds=%.3f rate=%.0f size=%ld synced=%s synced_s=%.3f\n", sent,
           errors, took, took > 0 ? (double)sent / took : 0, size,
           src == BUS_ENORESP || src == 0 ? "yes" : "no", synced);
    return errors ? 1 : 0;
}

int main(int argc, char **argv)
{
    log_init("wsbench", LOG_WARN);
    if (argc > 1 && strcmp(argv[1], "publish") == 0) return run_publisher(argc - 1, argv + 1);
    if (argc < 2) {
        usage();
        return 2;
    }
    return run_clients(argc, argv);
}
