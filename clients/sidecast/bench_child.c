/* bench_child.c - one client process of `sidecast bench`: --threads worker threads, each an
 * epoll loop over its share of the process's non-blocking connections (connect, upgrade,
 * welcome/subscribe, events, closing handshake), and the main thread that follows the
 * parent's commands and reports counts and the latency histogram through a pipe.
 *
 * The hot path, per read: one read into the thread's buffer (after the carried-over bytes of
 * an unfinished frame), frames decoded in place by the ws library's ws_frame_decode, each
 * event's t and i found by memmem (no JSON parse), counts kept per thread and per connection.
 * Nothing is allocated per event. wss:// (bench_tls.c) adds a TLS handshake state and passes
 * the bytes read and written through the connection's SSL; a plain connection (c->ssl NULL)
 * takes the same path as before, one pointer test apart. */
#include "bench_int.h"

#include <errno.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ws/ws_deflate.h"
#include "ws/ws_frame.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define MAX_EVENTS 512
#define TICK_MS 20

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

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

static size_t hist_bucket(int64_t lat_ns)
{
    int64_t us = lat_ns / 1000;
    size_t b = us < HIST_FINE * 10 ? (size_t)(us / 10)
               : us < 10000000     ? HIST_FINE + (size_t)((us - 100000) / 1000)
                                   : HIST_LEN - 1;
    return b >= HIST_LEN ? HIST_LEN - 1 : b;
}

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
        atomic_fetch_add(&w->p->failed, 1);
    } else {
        int64_t t = now_ns();
        if (t > w->t_last_ready) w->t_last_ready = t;
        atomic_fetch_add(&w->ready, 1);
        if (c->ssl) bench_tls_ready(w, c);
        if (w->p->o.mode == M_CONNECT && c->t_open) { /* handshake latency */
            w->hist[hist_bucket(t - c->t_open)]++;
            w->lat_n++;
            if (t - c->t_open > w->lat_max) w->lat_max = t - c->t_open;
        }
    }
    atomic_fetch_add(&w->p->settled, 1);
    if (w->p->o.resume && !w->sess) w->resume_off = true; /* nothing to wait for any more */
}

static void conn_close_fd(worker *w, conn *c)
{
    if (c->ssl) bench_tls_free(c);
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

void bench_conn_fail(worker *w, conn *c, const char *why)
{
    if (c->state == C_DONE) return;
    bool closing = c->state == C_CLOSING;
    if (!c->settled)
        settle(w, c, false);
    else if (!closing)
        c->lost = true;
    if (!closing && w->printed < ERR_PRINT_MAX && !w->p->o.quiet) {
        w->printed++;
        fprintf(stderr, "bench: connection %ld: %s\n", c->gindex, why);
    }
    conn_close_fd(w, c);
}

static int send_raw(worker *w, conn *c, const uint8_t *buf, size_t n)
{
    if (c->ssl) {
        if (bench_tls_write(c, buf, n) == 0) return 0;
        w->send_errors++;
        return -1;
    }
    ssize_t r = write(c->fd, buf, n);
    if (r != (ssize_t)n) { /* tiny frames on a drained socket: a short write is a failure */
        w->send_errors++;
        return -1;
    }
    return 0;
}

int bench_send_frame(worker *w, conn *c, uint8_t op, const void *payload, size_t len)
{
    uint8_t out[256];
    if (len > sizeof out - 16) return -1;
    size_t n = cframe_build(out, op, payload, len, rng_next(&w->rng));
    return send_raw(w, c, out, n);
}

void bench_on_data(worker *w, conn *c, const uint8_t *p, size_t n, int64_t t_read)
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

void bench_become_ready(worker *w, conn *c)
{
    c->state = C_READY;
    settle(w, c, true);
}

void bench_send_subscribe(worker *w, conn *c)
{
    const bench_frames *fr = &w->p->fr;
    if (send_raw(w, c, fr->sub_frame[c->topic], fr->sub_len[c->topic]) != 0) {
        bench_conn_fail(w, c, "subscribe not sent");
        return;
    }
    c->state = C_SUBSCRIBING;
}

/* sidecast.v1 and the Node server's JSON text messages */
static void on_text(worker *w, conn *c, const uint8_t *p, size_t n, int64_t t_read)
{
    const bench_opts *o = &w->p->o;
    if (o->target == T_WS && has_prefix(p, n, "{\"t\":")) {
        if (c->state == C_READY)
            bench_on_data(w, c, p, n, t_read);
        else
            w->other++;
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
        bench_on_data(w, c, d + 7, n - (size_t)(d + 7 - p), t_read);
    } else if (has_prefix(p, n, "{\"type\":\"welcome\"")) {
        if (c->state != C_WELCOME) return;
        if (o->mode == M_CONNECT)
            bench_become_ready(w, c);
        else
            bench_send_subscribe(w, c);
    } else if (has_prefix(p, n, "{\"type\":\"subscribed\"")) {
        if (c->state == C_SUBSCRIBING) bench_become_ready(w, c);
    } else if (has_prefix(p, n, "{\"type\":\"error\"")) {
        w->error_frames++;
        if (w->printed < ERR_PRINT_MAX && !o->quiet) {
            w->printed++;
            fprintf(stderr, "bench: error frame: %.*s\n", (int)(n > 300 ? 300 : n), p);
        }
        if (c->state == C_SUBSCRIBING) bench_conn_fail(w, c, "subscribe refused");
    } else {
        w->other++;
    }
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
            bench_conn_fail(w, c, err == WS_ERR_OPCODE ? "unexpected opcode" : "bad frame");
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
                    bench_conn_fail(w, c, n < 0 ? "bad compressed message" : "fragmented message");
                    return len;
                }
                w->compressed++;
                payload = w->ibuf;
                plen = (size_t)n;
            }
            if (w->p->o.target == T_NATS) {
                bench_nats_payload(w, c, payload, plen, t_read);
            } else if (!h.fin || h.opcode == WS_OP_CONT) {
                w->bad_frames++;
                bench_conn_fail(w, c, "fragmented message");
                return len;
            } else {
                on_text(w, c, payload, plen, t_read);
            }
            break;
        case WS_OP_PING:
            w->pings++;
            if (bench_send_frame(w, c, WS_OP_PONG, payload, plen) != 0)
                bench_conn_fail(w, c, "pong not sent");
            break;
        case WS_OP_CLOSE:
            if (c->state == C_CLOSING) {
                c->clean = true;
                conn_close_fd(w, c);
            } else {
                bench_send_frame(w, c, WS_OP_CLOSE, payload, plen >= 2 ? 2 : 0);
                char why[64];
                snprintf(why, sizeof why, "closed by the server (%u)",
                         plen >= 2 ? (unsigned)((payload[0] << 8) | payload[1]) : 1005);
                bench_conn_fail(w, c, why);
            }
            return len;
        case WS_OP_PONG: break;
        default: /* ws_frame_decode refuses reserved opcodes: not reached */
            w->bad_frames++;
            bench_conn_fail(w, c, "unexpected opcode");
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
                        (int64_t)m1.tv_sec * 1000000000 + m1.tv_nsec) /
                       2;
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
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb.b, .msg_controllen = sizeof cb.b};
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

static void send_upgrade(worker *w, conn *c);

/* wss://: reads ciphertext into w->cbuf and passes it through c's SSL: the plaintext it gave
 * into out (0: none yet, or the handshake is still going; c->state moves on from C_TLS when
 * it is done), or what read() gives for the end of the stream (0) and errors (-1, errno),
 * or -2 when c was failed here. */
static ssize_t tls_read(worker *w, conn *c, uint8_t *out)
{
    ssize_t r = read_stamped(w, c->fd, w->cbuf, TLS_READ_MAX);
    if (r <= 0) return r;
    char why[160] = "";
    long n = bench_tls_input(w, c, w->cbuf, (size_t)r, out, RBUF_SIZE, why, sizeof why);
    if (n < 0) {
        bench_conn_fail(w, c, n == BT_CLOSED ? "end of stream (close_notify)" : why);
        return -2;
    }
    if (c->state == C_TLS && c->tls_up) send_upgrade(w, c);
    return n == 0 ? -3 : (ssize_t)n;
}

static void on_readable(worker *w, conn *c)
{
    const bench_opts *o = &w->p->o;
    uint8_t *buf = w->rbuf;
    size_t have = c->plen;
    if (have) memcpy(buf, c->part, have);
    c->plen = 0;
    ssize_t r = c->ssl ? tls_read(w, c, buf + have) : read_stamped(w, c->fd, buf + have, RBUF_SIZE);
    if (r < -1) { /* TLS: failed (-2), or nothing to read yet (-3) */
        if (r == -3) c->plen = (uint32_t)have;
        return;
    }
    if (r == 0) {
        bench_conn_fail(w, c, "end of stream");
        return;
    }
    if (r < 0) {
        if (errno == EAGAIN || errno == EINTR) {
            c->plen = (uint32_t)have;
            return;
        }
        bench_conn_fail(w, c, strerror(errno));
        return;
    }
    int64_t t_read = now_ns();
    size_t len = have + (size_t)r, off = 0;
    if (c->state == C_UPGRADE) {
        const uint8_t *end = memmem(buf, len, "\r\n\r\n", 4);
        if (!end) {
            if (len > HEAD_MAX || keep_part(c, buf, len) != 0)
                bench_conn_fail(w, c, "head too big");
            return;
        }
        off = (size_t)(end - buf) + 4;
        if (!has_prefix(buf, len, "HTTP/1.1 101 ") ||
            (o->target == T_SIDECAST && !memmem(buf, off, "sidecast.v1", 11))) {
            const uint8_t *eol = memchr(buf, '\r', len);
            if (w->printed < ERR_PRINT_MAX && !o->quiet) {
                w->printed++;
                fprintf(stderr, "bench: upgrade refused: %.*s\n", (int)(eol ? eol - buf : 0), buf);
            }
            bench_conn_fail(w, c, "no 101");
            return;
        }
        c->deflate = o->deflate && memmem(buf, off, "permessage-deflate", 18) != NULL;
        c->state = C_WELCOME;
    }
    off += on_frames(w, c, buf + off, len - off, t_read);
    if (c->state != C_DONE && off < len && keep_part(c, buf + off, len - off) != 0)
        bench_conn_fail(w, c, "frame too big");
}

/* Sends c's upgrade request (after the TCP connect, or over TLS after its handshake). */
static void send_upgrade(worker *w, conn *c)
{
    const bench_opts *o = &w->p->o;
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
        bench_conn_fail(w, c, "upgrade request not sent");
        return;
    }
    c->state = C_UPGRADE;
}

static void on_writable(worker *w, conn *c)
{
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0) {
        bench_conn_fail(w, c, err ? strerror(err) : "connect failed");
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0) {
        bench_conn_fail(w, c, "epoll_ctl");
        return;
    }
    if (!w->p->tls) {
        send_upgrade(w, c);
        return;
    }
    char why[160] = "";
    c->state = C_TLS;
    if (bench_tls_start(w, c, why, sizeof why) != 0) bench_conn_fail(w, c, why);
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
        bench_conn_fail(w, c, strerror(errno));
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
            bench_conn_fail(w, c, strerror(errno));
            return;
        }
    }
    if (connect(c->fd, (const struct sockaddr *)&o->addr, sizeof o->addr) != 0 &&
        errno != EINPROGRESS) {
        bench_conn_fail(w, c, strerror(errno));
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0) bench_conn_fail(w, c, "epoll_ctl");
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
            /* --resume: the first connection alone, until its session is known */
            bool first_alone = w->p->o.resume && !w->sess && !w->resume_off;
            int limit = first_alone && w->next > 0 ? w->next : atomic_load(&w->limit);
            while (w->next < limit && w->inflight < w->max_inflight) {
                conn_open(w, &w->conns[w->next++]);
                if (first_alone) break;
            }
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
        if (c->ssl) bench_tls_free(c);
        free(c->part);
        free(c->nbuf);
        c->part = c->nbuf = NULL;
    }
    bench_tls_worker_free(w);
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

/* The process's counts into r: progress ones, or with final every per-connection and
 * per-thread count too (the threads are joined by then). */
static void child_counts(bench_proc *pr, crec *r, bool final)
{
    worker *ws = pr->ws;
    conn *conns = pr->conns;
    int nthreads = pr->nthreads;
    long n = pr->n;
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
        r->tls_full += w->tls_full;
        r->tls_resumed += w->tls_resumed;
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

/* Allocates the process's connections and threads (not started): 0, or -1. */
static int child_init(bench_proc *pr, long first, long n)
{
    const bench_opts *o = &pr->o;
    build_frames(o, &pr->fr);
    if (o->tls && !(pr->tls = bench_tls_ctx(o))) return -1;
    pr->n = n;
    pr->nthreads = (int)(o->threads < n ? o->threads : n);
    pr->conns = calloc((size_t)n, sizeof *pr->conns);
    pr->ws = calloc((size_t)pr->nthreads, sizeof *pr->ws);
    if (!pr->conns || !pr->ws) return -1;
    for (long i = 0; i < n; i++) {
        pr->conns[i].fd = -1;
        pr->conns[i].gindex = first + i;
        pr->conns[i].topic = (uint8_t)((first + i) % o->ntopics);
    }
    long per = n / pr->nthreads, extra = n % pr->nthreads, at = 0;
    long inflight = o->concurrency / o->procs / pr->nthreads;
    for (int i = 0; i < pr->nthreads; i++) {
        worker *w = &pr->ws[i];
        w->p = pr;
        w->conns = pr->conns + at;
        w->n = (int)(per + (i < extra));
        at += w->n;
        w->max_inflight = (int)(inflight > 0 ? inflight : 1);
        w->rng = 0x9e3779b9u ^ (uint32_t)((first + i) * 7919 + 1);
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        w->rbuf = malloc(RBUF_SIZE + PART_MAX);
        w->nscratch = malloc(NATS_PART_MAX + PART_MAX + 64);
        w->hist = calloc(HIST_ALL, sizeof *w->hist);
        w->real_off = realtime_offset();
        if (o->tls && !(w->cbuf = malloc(TLS_READ_MAX))) return -1;
        if (w->epfd < 0 || !w->rbuf || !w->hist || !w->nscratch) return -1;
    }
    pr->hard_deadline =
        now_ns() +
        (int64_t)((o->setup_timeout * 2 + o->seconds + o->drain + CLOSE_TIMEOUT_S + 60) * 1e9);
    return 0;
}

/* Follows the parent's commands on cmd_fd until 'S' (or stop already, or the end of the
 * pipe), reporting progress and "ready" on out_fd; then has the threads close their
 * connections (at most CLOSE_TIMEOUT_S). index: this child's number. */
static void child_loop(bench_proc *pr, int index, int cmd_fd, int out_fd, bool stop)
{
    const bench_opts *o = &pr->o;
    bool ready_sent = false;
    int step = -1;
    long target = pr->n;
    int64_t next_progress = 0;
    int64_t close_end = 0;
    while (now_ns() < pr->hard_deadline) {
        struct pollfd pf = {.fd = cmd_fd, .events = POLLIN};
        if (poll(&pf, 1, 50) > 0) {
            char cmd;
            ssize_t r = read(cmd_fd, &cmd, 1);
            if (r <= 0 || cmd == 'S')
                stop = true;
            else if (cmd == 'G') { /* the next step (idle), or the only one */
                step++;
                target = o->nsteps > 1 && step < o->nsteps ? share(o->steps[step], o->procs, index)
                                                           : pr->n;
                if (target > pr->n) target = pr->n;
                set_limits(pr->ws, pr->nthreads, target);
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
            if (atomic_load(&pr->workers_closed) >= pr->started || t > close_end) break;
            continue;
        }
        crec rec;
        if (!ready_sent && atomic_load(&pr->phase) == PH_SETUP &&
            atomic_load(&pr->settled) >= target) {
            atomic_store(&pr->phase, PH_MEASURE);
            child_counts(pr, &rec, false);
            rec.type = R_READY;
            for (int i = 0; i < pr->nthreads; i++)
                if (pr->ws[i].t_last_ready > rec.t_last_ready)
                    rec.t_last_ready = pr->ws[i].t_last_ready;
            if (write_full(out_fd, &rec, sizeof rec) != 0) stop = true;
            ready_sent = true;
        } else if (t >= next_progress) {
            child_counts(pr, &rec, false);
            rec.type = R_PROGRESS;
            if (write_full(out_fd, &rec, sizeof rec) != 0) stop = true;
            next_progress = t + 200000000;
        }
    }
}

/* The final record and the threads' histograms summed, on out_fd: 0, or -1. */
static int child_report(bench_proc *pr, int out_fd)
{
    uint64_t *hist = calloc(HIST_ALL, sizeof *hist);
    if (!hist) return -1;
    crec rec;
    child_counts(pr, &rec, true);
    rec.type = R_FINAL;
    for (int i = 0; i < pr->nthreads; i++)
        for (size_t b = 0; b < HIST_ALL; b++) hist[b] += pr->ws[i].hist[b];
    int rc = 0;
    if (write_full(out_fd, &rec, sizeof rec) != 0 ||
        write_full(out_fd, hist, HIST_ALL * sizeof *hist) != 0)
        rc = -1;
    free(hist);
    return rc;
}

int bench_child_main(const bench_opts *o, int index, long first, long n, int cmd_fd, int out_fd)
{
    signal(SIGPIPE, SIG_IGN);
    bench_proc *pr = calloc(1, sizeof *pr);
    if (!pr) return 1;
    pr->o = *o;
    if (child_init(pr, first, n) != 0) return 1;
    for (; pr->started < pr->nthreads; pr->started++)
        if (pthread_create(&pr->ws[pr->started].th, NULL, worker_run, &pr->ws[pr->started]) != 0)
            break;
    int rc = pr->started == pr->nthreads ? 0 : 1;
    child_loop(pr, index, cmd_fd, out_fd, rc != 0);
    atomic_store(&pr->phase, PH_STOP);
    for (int i = 0; i < pr->started; i++) pthread_join(pr->ws[i].th, NULL);
    if (child_report(pr, out_fd) != 0) rc = 1;
    bench_tls_ctx_free(pr->tls);
    return rc;
}
