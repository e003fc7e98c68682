/* bench_nats.c - `sidecast bench --target nats`: the NATS client protocol carried in
 * WebSocket binary frames, as nats-server's websocket listener speaks it. A connection is
 * ready at the PONG that answers CONNECT+SUB+PING (connect mode: CONNECT+PING); every MSG on
 * it is an event. nats-server coalesces several MSGs into one frame and may cut one across
 * frames, so the payloads of a connection's frames are one stream: bench_nats_next parses it
 * (pure), the rest acts on what it finds and carries an unfinished operation over. */
#include "bench_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "ws/ws_frame.h"

#define NATS_CONNECT "CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1}\r\n"

/* The contract is in bench_int.h. */
int bench_nats_next(const uint8_t *p, size_t n, bench_nats_op *op)
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
    op->kind = has_prefix(p, ll, "INFO ")  ? BN_INFO
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
            bench_conn_fail(w, c, "nats message too big");
            return n;
        }
        off += (size_t)k;
        switch (op.kind) {
        case BN_MSG:
            if (c->state == C_READY)
                bench_on_data(w, c, op.data, op.len, t_read);
            else
                w->other++;
            break;
        case BN_INFO:
            if (c->state != C_WELCOME) break;
            if (o->mode == M_CONNECT) {
                static const char cp[] = NATS_CONNECT "PING\r\n";
                if (bench_send_frame(w, c, WS_OP_BINARY, cp, sizeof cp - 1) != 0) {
                    bench_conn_fail(w, c, "CONNECT not sent");
                    return n;
                }
                c->state = C_SUBSCRIBING;
            } else {
                bench_send_subscribe(w, c);
            }
            break;
        case BN_PING:
            w->pings++;
            if (bench_send_frame(w, c, WS_OP_BINARY, "PONG\r\n", 6) != 0)
                bench_conn_fail(w, c, "PONG not sent");
            break;
        case BN_PONG:
            if (c->state == C_SUBSCRIBING) bench_become_ready(w, c);
            break;
        case BN_ERR:
            w->error_frames++;
            if (w->printed < ERR_PRINT_MAX && !o->quiet) {
                w->printed++;
                fprintf(stderr, "bench: nats: %.*s\n", (int)(op.len > 200 ? 200 : op.len), op.data);
            }
            break;
        case BN_OTHER: break;
        }
    }
    return off;
}

int bench_nats_subscribe_text(char *out, size_t cap, const char *prefix, const char *topic)
{
    return snprintf(out, cap, NATS_CONNECT "SUB %s%s 1\r\nPING\r\n", prefix, topic);
}

void bench_nats_payload(worker *w, conn *c, const uint8_t *p, size_t n, int64_t t_read)
{
    if (c->nlen == 0) {
        size_t used = nats_ops(w, c, p, n, t_read);
        if (c->state == C_DONE || used == n) return;
        p += used;
        n -= used;
        if (n > NATS_PART_MAX) {
            bench_conn_fail(w, c, "nats line too long");
            return;
        }
        if (n > c->ncap) {
            uint8_t *b = realloc(c->nbuf, n + 256);
            if (!b) {
                bench_conn_fail(w, c, "out of memory");
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
        bench_conn_fail(w, c, "nats message too big");
        return;
    }
    memcpy(s, c->nbuf, c->nlen);
    memcpy(s + c->nlen, p, n);
    c->nlen = 0;
    size_t used = nats_ops(w, c, s, total, t_read);
    if (c->state == C_DONE || used == total) return;
    if (total - used > NATS_PART_MAX) {
        bench_conn_fail(w, c, "nats message too big");
        return;
    }
    if (total - used > c->ncap) {
        uint8_t *b = realloc(c->nbuf, total - used + 256);
        if (!b) {
            bench_conn_fail(w, c, "out of memory");
            return;
        }
        c->nbuf = b;
        c->ncap = (uint32_t)(total - used) + 256;
    }
    memmove(c->nbuf, s + used, total - used);
    c->nlen = (uint32_t)(total - used);
}
