/* natscap - NATS-side capacity measurements for docs/CAPACITY.md (bench/capacity/).
 *
 * Speaks the NATS client protocol over one plain TCP connection to 127.0.0.1:PORT (loopback
 * only), pipelined, with no client library in the way, so the client costs little next to
 * the server being measured.
 *
 *   natscap load --port P --subjects K --msgs M [--size B] [--prefix events.cap]
 *
 *     Publishes one message on PREFIX.quiet, then M messages of B bytes round-robin on
 *     PREFIX.t0 .. PREFIX.t<K-1> (core NATS publishes, a PING/PONG every 1,000 to keep
 *     pace with the server), then waits until the stream STREAM (--stream, SIDECAST) holds
 *     them all. Prints msgs and the rate.
 *
 *   natscap get --port P --subjects K --seconds S --window W --kind KIND
 *               [--stream SIDECAST] [--prefix events.cap] [--missed E] [--server-pid PID]
 *
 *     JetStream direct gets ($JS.API.DIRECT.GET.<stream>) with W requests in flight for S
 *     seconds. First it learns each subject's last sequence (last_by_subj), then:
 *       next    {"seq":R,"next_by_subj":"PREFIX.t<j>"}, R and j random   (a replay step)
 *       seq     {"seq":R}, R random in the stream                        (since's check)
 *       quiet   {"seq":2,"next_by_subj":"PREFIX.quiet"}: 404 after the only message
 *       replay  the edge's replay of one subscription, repeated: {"seq":since} (the check),
 *               then next_by_subj from since+1 until the 404, since = E messages of
 *               subject j before its last (E = --missed, default 10): E + 2 requests.
 *     Prints requests/s, found/404/other replies, latency percentiles and, with
 *     --server-pid, the server's CPU (user+system from /proc/PID/stat) over the window:
 *     total seconds and microseconds per request.
 *
 *   natscap subs --port P --count N [--prefix live.users.u] --hold S [--sync]
 *
 *     Subscribes to N subjects PREFIX<i> on one connection, waits for the server's PONG,
 *     prints "ready" (with the time it took) and holds the connection S seconds (answering
 *     the server's PINGs), or until stdin closes, then exits. For the server's memory per
 *     subscription. --sync waits for a PONG after every SUB, as the edge flushes after
 *     subscribing a new topic or user.
 *
 * Every wait has a deadline; every loop is bounded by a count or the clock. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>

#include "procstat.h"

#define RBUF (4 * 1024 * 1024)
#define WBUF (4 * 1024 * 1024)
#define MAX_SUBJECTS 100000
#define MAX_MSGS 10000000
#define MAX_WINDOW 4096
#define MAX_SECONDS 3600
#define MAX_SUBS 2000000
#define MAX_SIZE 65536
#define HIST_US 1000000 /* latency histogram: 1 µs buckets up to 1 s, then one overflow */
#define IO_TIMEOUT_MS 10000

/* ---- small helpers ------------------------------------------------------------------------ */

static void die(const char *what) __attribute__((noreturn));
static void die(const char *what)
{
    fprintf(stderr, "natscap: %s\n", what);
    exit(1);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

/* ---- the connection ----------------------------------------------------------------------- */

typedef struct conn {
    int fd;
    char *rbuf;
    size_t rlen;
    char *wbuf;
    size_t wlen;
    long pongs; /* PONGs received */
} conn;

static void conn_flush(conn *c)
{
    size_t off = 0;
    double deadline = now_s() + IO_TIMEOUT_MS / 1000.0;
    while (off < c->wlen) {
        ssize_t n = write(c->fd, c->wbuf + off, c->wlen - off);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN && now_s() < deadline) {
            struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
            poll(&pfd, 1, 100);
            continue;
        }
        die("write to nats-server failed");
    }
    c->wlen = 0;
}

static void conn_put(conn *c, const char *s, size_t n)
{
    if (c->wlen + n > WBUF) conn_flush(c);
    if (n > WBUF) die("write too large");
    memcpy(c->wbuf + c->wlen, s, n);
    c->wlen += n;
}

static void conn_printf(conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void conn_printf(conn *c, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp) die("line too long");
    conn_put(c, tmp, (size_t)n);
}

/* Reads what is there (waiting up to ms). 0 on timeout, 1 on data; exits on EOF/error. */
static int conn_read(conn *c, int ms)
{
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    int pr = poll(&pfd, 1, ms);
    if (pr <= 0) return 0;
    if (c->rlen == RBUF) die("read buffer full (a message over 4 MiB?)");
    ssize_t n = read(c->fd, c->rbuf + c->rlen, RBUF - c->rlen);
    if (n == 0) die("nats-server closed the connection");
    if (n < 0) {
        if (errno == EINTR || errno == EAGAIN) return 0;
        die("read from nats-server failed");
    }
    c->rlen += (size_t)n;
    return 1;
}

/* A message delivered to us (MSG or HMSG). */
typedef struct nmsg {
    const char *subject;
    size_t subject_len;
    const char *hdr; /* NULL for MSG */
    size_t hdr_len;
    const char *data;
    size_t data_len;
} nmsg;

typedef void (*msg_fn)(void *ud, const nmsg *m);

/* Parses every complete protocol line/message in the buffer; answers PING. Returns the
 * number of messages handed to fn. */
static long conn_parse(conn *c, msg_fn fn, void *ud)
{
    size_t off = 0;
    long msgs = 0;
    for (;;) {
        char *line = c->rbuf + off;
        size_t avail = c->rlen - off;
        char *eol = memmem(line, avail, "\r\n", 2);
        if (!eol) break;
        size_t ll = (size_t)(eol - line);
        if (ll >= 4 && (memcmp(line, "MSG ", 4) == 0 || memcmp(line, "HMSG ", 5) == 0)) {
            bool h = line[0] == 'H';
            /* MSG subj sid [reply] len  /  HMSG subj sid [reply] hlen tlen */
            char *tok[6];
            int nt = 0;
            char *p = line, *end = eol;
            while (p < end && nt < 6) {
                while (p < end && *p == ' ') p++;
                if (p >= end) break;
                tok[nt++] = p;
                while (p < end && *p != ' ') p++;
            }
            size_t hlen = 0, tlen = 0;
            if (h) {
                if (nt < 5) die("bad HMSG line");
                hlen = strtoul(tok[nt - 2], NULL, 10);
                tlen = strtoul(tok[nt - 1], NULL, 10);
            } else {
                if (nt < 4) die("bad MSG line");
                tlen = strtoul(tok[nt - 1], NULL, 10);
            }
            size_t need = ll + 2 + tlen + 2;
            if (avail < need) break;
            nmsg m = {0};
            m.subject = tok[1];
            m.subject_len = (size_t)(strchr(tok[1], ' ') - tok[1]);
            char *payload = eol + 2;
            if (h) {
                m.hdr = payload;
                m.hdr_len = hlen;
            }
            m.data = payload + hlen;
            m.data_len = tlen - hlen;
            if (fn) fn(ud, &m);
            msgs++;
            off += need;
            continue;
        }
        if (ll >= 4 && memcmp(line, "PING", 4) == 0)
            conn_put(c, "PONG\r\n", 6);
        else if (ll >= 4 && memcmp(line, "PONG", 4) == 0)
            c->pongs++;
        else if (ll >= 4 && memcmp(line, "-ERR", 4) == 0)
            fprintf(stderr, "natscap: server: %.*s\n", (int)ll, line);
        /* INFO, +OK: ignored */
        off += ll + 2;
    }
    if (off) {
        memmove(c->rbuf, c->rbuf + off, c->rlen - off);
        c->rlen -= off;
    }
    if (c->wlen) conn_flush(c);
    return msgs;
}

/* Sends PING and waits (bounded) for its PONG, handling messages on the way. */
static void conn_sync(conn *c, msg_fn fn, void *ud, double timeout_s)
{
    long want = c->pongs + 1;
    conn_put(c, "PING\r\n", 6);
    conn_flush(c);
    double deadline = now_s() + timeout_s;
    while (c->pongs < want) {
        if (now_s() > deadline) die("no PONG from nats-server in time");
        if (conn_read(c, 100)) conn_parse(c, fn, ud);
    }
}

static void conn_open(conn *c, int port)
{
    memset(c, 0, sizeof *c);
    c->rbuf = malloc(RBUF);
    c->wbuf = malloc(WBUF);
    if (!c->rbuf || !c->wbuf) die("out of memory");
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0) die("socket");
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK); /* loopback only */
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0) die("connect to nats-server");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    conn_printf(c, "CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,"
                   "\"no_responders\":true,\"protocol\":1,\"name\":\"natscap\",\"lang\":\"c\","
                   "\"version\":\"1\"}\r\n");
    conn_sync(c, NULL, NULL, 5);
}

/* The stream's first and last sequence, from $JS.API.STREAM.INFO. */
typedef struct info_ctx {
    uint64_t first, last, messages;
    bool got;
} info_ctx;

static uint64_t json_u64(const char *d, size_t n, const char *key)
{
    const char *p = memmem(d, n, key, strlen(key));
    return p ? strtoull(p + strlen(key), NULL, 10) : 0;
}

static void on_info(void *ud, const nmsg *m)
{
    info_ctx *ic = ud;
    ic->first = json_u64(m->data, m->data_len, "\"first_seq\":");
    ic->last = json_u64(m->data, m->data_len, "\"last_seq\":");
    ic->messages = json_u64(m->data, m->data_len, "\"messages\":");
    ic->got = true;
}

/* Asks for the stream's state (bounded wait). */
static void stream_info(conn *c, const char *stream, info_ctx *ic)
{
    ic->got = false;
    conn_printf(c, "PUB $JS.API.STREAM.INFO.%s _INBOX.info 0\r\n\r\n", stream);
    double deadline = now_s() + 10;
    while (!ic->got) {
        if (now_s() > deadline) die("no stream info");
        conn_sync(c, on_info, ic, 5);
        if (!ic->got && conn_read(c, 100)) conn_parse(c, on_info, ic);
    }
}

/* ---- load ----------------------------------------------------------------------------------- */

static int cmd_load(int port, const char *stream, const char *prefix, long subjects, long msgs,
                    long size)
{
    conn c;
    conn_open(&c, port);
    conn_printf(&c, "SUB _INBOX.info 1\r\n");
    info_ctx ic = {0};
    stream_info(&c, stream, &ic);
    uint64_t before = ic.messages;
    char *pad = malloc((size_t)size + 1);
    if (!pad) die("out of memory");
    memset(pad, 'x', (size_t)size);
    pad[size] = 0;
    char body[MAX_SIZE + 64];
    int n = snprintf(body, sizeof body, "{\"quiet\":1,\"pad\":\"%.*s\"}",
                     (int)(size > 24 ? size - 24 : 1), pad);
    conn_printf(&c, "PUB %s.quiet %d\r\n", prefix, n);
    conn_put(&c, body, (size_t)n);
    conn_put(&c, "\r\n", 2);
    double t0 = now_s();
    for (long i = 0; i < msgs; i++) {
        long j = i % subjects;
        n = snprintf(body, sizeof body, "{\"i\":%ld,\"pad\":\"%.*s\"}", i,
                     (int)(size > 32 ? size - 32 : 1), pad);
        conn_printf(&c, "PUB %s.t%ld %d\r\n", prefix, j, n);
        conn_put(&c, body, (size_t)n);
        conn_put(&c, "\r\n", 2);
        if ((i + 1) % 1000 == 0) conn_sync(&c, NULL, NULL, 30);
    }
    conn_sync(&c, NULL, NULL, 60);
    double sent = now_s() - t0;
    /* the server has read everything; wait (bounded) until the stream has stored it */
    for (int i = 0; i < 3000; i++) {
        stream_info(&c, stream, &ic);
        if (ic.messages >= before + (uint64_t)msgs + 1) break;
        usleep(100000);
    }
    double el = now_s() - t0;
    printf("load msgs=%ld subjects=%ld size=%ld sent_s=%.2f stored_s=%.2f stored=%" PRIu64
           " msgs_per_s=%.0f\n",
           msgs + 1, subjects, size, sent, el, ic.messages - before, (double)msgs / el);
    free(pad);
    close(c.fd);
    return 0;
}

/* ---- get ------------------------------------------------------------------------------------ */

enum kind { K_NEXT, K_SEQ, K_QUIET, K_REPLAY };

typedef struct slot {
    double sent;
    bool busy;
    /* replay state */
    long subj;
    uint64_t cursor;
    int step; /* 0 check, 1 next */
    long events;
} slot;

typedef struct getctx {
    conn c;
    const char *stream, *prefix;
    enum kind kind;
    long subjects, window, missed;
    uint64_t first, last; /* stream */
    uint64_t *last_of;    /* per subject, from last_by_subj */
    slot *slots;
    long found, missing, other, requests, replays, replay_events;
    uint64_t *hist; /* latency, µs */
    bool measuring;
    /* setup phase */
    long setup_pending;
} getctx;

static uint64_t hdr_seq(const nmsg *m)
{
    if (!m->hdr) return 0;
    const char *k = "Nats-Sequence:";
    const char *p = memmem(m->hdr, m->hdr_len, k, strlen(k));
    if (!p) return 0;
    return strtoull(p + strlen(k), NULL, 10);
}

/* 200: found; 404: no message; other */
static int hdr_status(const nmsg *m)
{
    if (!m->hdr) return 0;
    if (m->hdr_len >= 12 && memcmp(m->hdr, "NATS/1.0 ", 9) == 0) return atoi(m->hdr + 9);
    return 200;
}

static long slot_of(const nmsg *m)
{
    /* reply subject: _INBOX.cap.<n> */
    const char *dot = memrchr(m->subject, '.', m->subject_len);
    if (!dot) return -1;
    return strtol(dot + 1, NULL, 10);
}

static void send_get(getctx *g, long s, const char *body)
{
    conn_printf(&g->c, "PUB $JS.API.DIRECT.GET.%s _INBOX.cap.%ld %zu\r\n%s\r\n", g->stream, s,
                strlen(body), body);
    g->slots[s].sent = now_s();
    g->slots[s].busy = true;
    g->requests++;
}

static void next_request(getctx *g, long s)
{
    char body[512];
    slot *sl = &g->slots[s];
    long j;
    uint64_t span = g->last - g->first + 1;
    switch (g->kind) {
    case K_NEXT:
        j = (long)(rnd() % (uint64_t)g->subjects);
        snprintf(body, sizeof body, "{\"seq\":%" PRIu64 ",\"next_by_subj\":\"%s.t%ld\"}",
                 g->first + rnd() % span, g->prefix, j);
        break;
    case K_SEQ:
        snprintf(body, sizeof body, "{\"seq\":%" PRIu64 "}", g->first + rnd() % span);
        break;
    case K_QUIET:
        snprintf(body, sizeof body, "{\"seq\":%" PRIu64 ",\"next_by_subj\":\"%s.quiet\"}",
                 g->first + 1, g->prefix);
        break;
    case K_REPLAY:
        if (sl->step == 0) { /* a new replay: the check of since */
            j = (long)(rnd() % (uint64_t)g->subjects);
            uint64_t back = (uint64_t)g->missed * (uint64_t)g->subjects;
            sl->subj = j;
            sl->cursor = g->last_of[j] > back ? g->last_of[j] - back : g->first;
            sl->events = 0;
            snprintf(body, sizeof body, "{\"seq\":%" PRIu64 "}", sl->cursor);
        } else {
            snprintf(body, sizeof body, "{\"seq\":%" PRIu64 ",\"next_by_subj\":\"%s.t%ld\"}",
                     sl->cursor + 1, g->prefix, sl->subj);
        }
        break;
    }
    send_get(g, s, body);
}

static void on_get_reply(void *ud, const nmsg *m)
{
    getctx *g = ud;
    long s = slot_of(m);
    if (s < 0 || s >= g->window || !g->slots[s].busy) return;
    slot *sl = &g->slots[s];
    sl->busy = false;
    int st = hdr_status(m);
    uint64_t seq = hdr_seq(m);
    if (st == 200 && seq)
        g->found++;
    else if (st == 404)
        g->missing++;
    else
        g->other++;
    double us = (now_s() - sl->sent) * 1e6;
    g->hist[us < HIST_US ? (long)us : HIST_US]++;
    if (g->kind == K_REPLAY) {
        if (sl->step == 0) {
            sl->step = 1; /* since retained (or not: walk anyway, as after "oldest") */
        } else if (st == 200 && seq > sl->cursor) {
            sl->cursor = seq;
            sl->events++;
            g->replay_events++;
        } else { /* 404: caught up; a new replay on this slot */
            sl->step = 0;
            g->replays++;
        }
    }
    if (g->measuring) next_request(g, s);
}

static void on_setup_reply(void *ud, const nmsg *m)
{
    getctx *g = ud;
    long s = slot_of(m);
    if (s < 0 || s >= g->subjects) return;
    g->last_of[s] = hdr_seq(m);
    g->setup_pending--;
}

static double pct(const uint64_t *hist, long total, double q)
{
    long want = (long)((double)total * q), acc = 0;
    for (long i = 0; i <= HIST_US; i++) {
        acc += (long)hist[i];
        if (acc > want) return (double)i / 1000.0;
    }
    return (double)HIST_US / 1000.0;
}

static int cmd_get(int port, const char *stream, const char *prefix, long subjects, double seconds,
                   long window, enum kind kind, long missed, long server_pid, const char *kind_name)
{
    static getctx g;
    g.stream = stream;
    g.prefix = prefix;
    g.kind = kind;
    g.subjects = subjects;
    g.window = window;
    g.missed = missed;
    g.slots = calloc((size_t)window, sizeof *g.slots);
    g.last_of = calloc((size_t)subjects, sizeof *g.last_of);
    g.hist = calloc(HIST_US + 1, sizeof *g.hist);
    if (!g.slots || !g.last_of || !g.hist) die("out of memory");
    conn_open(&g.c, port);

    info_ctx ic = {0};
    conn_printf(&g.c, "SUB _INBOX.info 1\r\n");
    stream_info(&g.c, stream, &ic);
    conn_printf(&g.c, "UNSUB 1\r\n");
    g.first = ic.first;
    g.last = ic.last;
    if (g.last < g.first + 2) die("the stream is empty: run natscap load first");

    /* each subject's last sequence (replay kind), 1,000 in flight at most */
    conn_printf(&g.c, "SUB _INBOX.cap.* 2\r\n");
    if (kind == K_REPLAY) {
        for (long j = 0; j < subjects; j += 1000) {
            long upto = j + 1000 < subjects ? j + 1000 : subjects;
            g.setup_pending = upto - j;
            for (long i = j; i < upto; i++) {
                char body[300];
                int bn = snprintf(body, sizeof body, "{\"last_by_subj\":\"%s.t%ld\"}", prefix, i);
                if (bn < 0 || (size_t)bn >= sizeof body) die("prefix too long");
                conn_printf(&g.c, "PUB $JS.API.DIRECT.GET.%s _INBOX.cap.%ld %d\r\n%s\r\n", stream,
                            i, bn, body);
            }
            conn_flush(&g.c);
            double deadline = now_s() + 30;
            while (g.setup_pending > 0) {
                if (now_s() > deadline) die("last_by_subj answers missing");
                if (conn_read(&g.c, 100)) conn_parse(&g.c, on_setup_reply, &g);
            }
        }
        for (long i = 0; i < subjects; i++)
            if (!g.last_of[i]) die("a subject has no message: load with the same --subjects");
    }

    struct rusage ru0;
    getrusage(RUSAGE_SELF, &ru0);
    double cl0 = (double)ru0.ru_utime.tv_sec + (double)ru0.ru_utime.tv_usec / 1e6 +
                 (double)ru0.ru_stime.tv_sec + (double)ru0.ru_stime.tv_usec / 1e6;
    double c0 = proc_cpu_s(server_pid), mb0 = machine_busy_s();
    double t0 = now_s(), end = t0 + seconds;
    g.measuring = true;
    for (long s = 0; s < window; s++) next_request(&g, s);
    conn_flush(&g.c);
    while (now_s() < end) {
        if (conn_read(&g.c, 50)) conn_parse(&g.c, on_get_reply, &g);
    }
    g.measuring = false;
    double t1 = now_s();
    double c1 = proc_cpu_s(server_pid), mb1 = machine_busy_s();
    long answered = g.found + g.missing + g.other;
    long found = g.found, missing = g.missing, other = g.other, replays = g.replays;
    long replay_events = g.replay_events;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double client_cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                        (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6 - cl0;
    /* let what is in flight come back (bounded), not counted in the rate */
    double deadline = now_s() + 10;
    while (g.requests > g.found + g.missing + g.other && now_s() < deadline)
        if (conn_read(&g.c, 50)) conn_parse(&g.c, on_get_reply, &g);
    double el = t1 - t0;
    long total = g.found + g.missing + g.other;
    double cpu = c0 >= 0 && c1 >= 0 ? c1 - c0 : -1;
    printf("get kind=%s window=%ld subjects=%ld stream_msgs=%" PRIu64 " seconds=%.2f "
           "answered=%ld rps=%.0f found=%ld not_found=%ld other=%ld "
           "p50_ms=%.3f p99_ms=%.3f",
           kind_name, window, subjects, g.last - g.first + 1, el, answered, (double)answered / el,
           found, missing, other, pct(g.hist, total, 0.5), pct(g.hist, total, 0.99));
    if (kind == K_REPLAY)
        printf(" replays=%ld replay_events=%ld replays_per_s=%.0f", replays, replay_events,
               (double)replays / el);
    if (kind == K_REPLAY && cpu >= 0 && replays)
        printf(" server_us_per_replay=%.0f", cpu * 1e6 / (double)replays);
    if (cpu >= 0)
        printf(" server_cpu_s=%.2f server_cpu_pct=%.0f server_us_per_req=%.2f", cpu, 100 * cpu / el,
               answered ? cpu * 1e6 / (double)answered : 0);
    printf(" client_cpu_pct=%.0f machine_busy_pct=%.0f\n", 100 * client_cpu / el,
           100 * (mb1 - mb0) / el);
    close(g.c.fd);
    return g.other ? 1 : 0;
}

/* ---- subs ----------------------------------------------------------------------------------- */

static int cmd_subs(int port, const char *prefix, long count, double hold, bool sync)
{
    conn c;
    conn_open(&c, port);
    double t0 = now_s();
    for (long i = 0; i < count; i++) {
        conn_printf(&c, "SUB %s%ld %ld\r\n", prefix, i, i + 1);
        if (sync || (i + 1) % 10000 == 0) conn_sync(&c, NULL, NULL, 30);
    }
    conn_sync(&c, NULL, NULL, 60);
    double el = now_s() - t0;
    printf("ready subs=%ld sync=%s seconds=%.3f us_per_sub=%.1f\n", count, sync ? "yes" : "no", el,
           count ? el * 1e6 / (double)count : 0);
    fflush(stdout);
    double end = now_s() + hold;
    while (now_s() < end) {
        struct pollfd pf[2] = {{.fd = c.fd, .events = POLLIN}, {.fd = 0, .events = POLLIN}};
        int pr = poll(pf, 2, 200);
        if (pr <= 0) continue;
        if (pf[1].revents) { /* stdin: any input or EOF ends the hold */
            char b[64];
            if (read(0, b, sizeof b) <= 0) break;
            break;
        }
        if (conn_read(&c, 0)) conn_parse(&c, NULL, NULL);
    }
    close(c.fd);
    printf("done\n");
    return 0;
}

/* ---- main ----------------------------------------------------------------------------------- */

static void usage(void) __attribute__((noreturn));
static void usage(void)
{
    fprintf(stderr,
            "usage: natscap load --port P --subjects K --msgs M [--size B] [--prefix P]\n"
            "                    [--stream S]\n"
            "       natscap get  --port P --subjects K --seconds S --window W --kind "
            "next|seq|quiet|replay\n"
            "                    [--stream S] [--prefix P] [--missed E] [--server-pid PID]\n"
            "       natscap subs --port P --count N [--prefix P] --hold S [--sync]\n");
    exit(2);
}

static long num(const char *s, long lo, long hi)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || v < lo || v > hi) usage();
    return v;
}

int main(int argc, char **argv)
{
    if (argc < 2) usage();
    const char *mode = argv[1];
    int port = 0;
    long subjects = 1000, msgs = 100000, size = 128, window = 32, missed = 10, count = 0;
    long server_pid = 0;
    double seconds = 5, hold = 60;
    bool sync = false;
    const char *prefix = NULL, *stream = "SIDECAST", *kind_name = "next";
    static const struct option opts[] = {
        {"port", 1, 0, 'p'},    {"subjects", 1, 0, 'k'},   {"msgs", 1, 0, 'm'},
        {"size", 1, 0, 'b'},    {"prefix", 1, 0, 'x'},     {"stream", 1, 0, 's'},
        {"seconds", 1, 0, 't'}, {"window", 1, 0, 'w'},     {"kind", 1, 0, 'K'},
        {"missed", 1, 0, 'e'},  {"server-pid", 1, 0, 'P'}, {"count", 1, 0, 'n'},
        {"hold", 1, 0, 'h'},    {"sync", 0, 0, 'y'},       {0, 0, 0, 0}};
    optind = 2;
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'p': port = (int)num(optarg, 1, 65535); break;
        case 'k': subjects = num(optarg, 1, MAX_SUBJECTS); break;
        case 'm': msgs = num(optarg, 1, MAX_MSGS); break;
        case 'b': size = num(optarg, 48, MAX_SIZE); break;
        case 'x': prefix = optarg; break;
        case 's': stream = optarg; break;
        case 't': seconds = (double)num(optarg, 1, MAX_SECONDS); break;
        case 'w': window = num(optarg, 1, MAX_WINDOW); break;
        case 'K': kind_name = optarg; break;
        case 'e': missed = num(optarg, 1, 100000); break;
        case 'P': server_pid = num(optarg, 1, 1L << 30); break;
        case 'n': count = num(optarg, 0, MAX_SUBS); break;
        case 'h': hold = (double)num(optarg, 0, MAX_SECONDS); break;
        case 'y': sync = true; break;
        default: usage();
        }
    }
    if (!port) usage();
    if (strcmp(mode, "load") == 0)
        return cmd_load(port, stream, prefix ? prefix : "events.cap", subjects, msgs, size);
    if (strcmp(mode, "get") == 0) {
        enum kind k;
        if (strcmp(kind_name, "next") == 0)
            k = K_NEXT;
        else if (strcmp(kind_name, "seq") == 0)
            k = K_SEQ;
        else if (strcmp(kind_name, "quiet") == 0)
            k = K_QUIET;
        else if (strcmp(kind_name, "replay") == 0)
            k = K_REPLAY;
        else
            usage();
        return cmd_get(port, stream, prefix ? prefix : "events.cap", subjects, seconds, window, k,
                       missed, server_pid, kind_name);
    }
    if (strcmp(mode, "subs") == 0)
        return cmd_subs(port, prefix ? prefix : "live.users.u", count, hold, sync);
    usage();
    return 2;
}
