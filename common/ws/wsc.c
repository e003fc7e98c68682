/* wsc.c - the WebSocket core: workers, connections, outbound queues; see wsc.h. */
#include "wsc.h"

#include "cfg.h"
#include "iplimit.h"
#include "ktls.h"
#include "log.h"
#include "metrics.h"
#include "tlsrec.h"
#include "utf8.h"
#include "ws_deflate.h"
#include "ws_frame.h"
#include "ws_reader.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <zlib.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#define READ_BUF (64 * 1024)
#define READS_PER_EVENT 8 /* then the connection waits its turn (fairness between peers) */
#define MAX_IOV 64
#define INLINE_Q 2 /* queue slots inside the connection: no allocation when short */
/* A queue that outgrows INLINE_Q gets RING_SLOTS slots at once, from the worker's free rings
 * (a busy fan-out grows and empties every subscriber's queue once per pass), which are freed
 * after RING_KEEP_MS without a queue growing. */
#define RING_SLOTS 16
#define RING_KEEP_MS 1000
/* Frames of one write up to GATHER bytes in all are copied together and sent as one piece. */
#define GATHER (16 * 1024)
#define REL_SLOTS MAX_IOV /* frames whose released references a worker gathers at once */
#define REF_BATCH 128     /* references a worker takes on a frame with one atomic add */
#define HS_MAX WS_HTTP_DEFAULT_MAX_HEAD
#define ZBUF_KEEP (256 * 1024) /* a worker's (de)compression buffers over this are freed */
#define TRIM_AFTER 64          /* TLS handshakes, then the heap is trimmed once quiet for: */
#define TRIM_QUIET_MS 1000
#define TLS_OUT_RECORDS 4 /* TLS: records sealed per write (64 KiB of frames) */
#define TLS_OUT                                                                                    \
    (TLS_OUT_RECORDS * (TLSREC_MAX_PLAIN + TLSREC_MAX_OVERHEAD) + TLSREC_MAX_OVERHEAD + 8)

_Static_assert((REL_SLOTS & (REL_SLOTS - 1)) == 0 && (INLINE_Q & (INLINE_Q - 1)) == 0 &&
                   (RING_SLOTS & (RING_SLOTS - 1)) == 0 && RING_SLOTS > INLINE_Q,
               "queue capacities are powers of two (indexes wrap by mask)");

struct wsc_frame {
    _Atomic uint32_t ref;
    uint32_t len;              /* bytes at `bytes` */
    uint8_t *bytes;            /* data[] below, or the caller's (wsc_frame_wrap) */
    void (*destroy)(void *ud); /* wsc_frame_wrap: releases the caller's bytes */
    void *ud;
    /* permessage-deflate: the same message compressed (RSV1), for connections that
     * negotiated it, or NULL; `tried`: compressing it was considered already (and did not
     * pay when alt is NULL), so wsc_conn_send does not try again per connection. Both are
     * set before the frame is shared and never change afterwards. */
    wsc_frame *alt;
    uint8_t hl; /* header length: the payload starts at bytes + hl */
    bool tried;
    uint8_t data[];
};

/* A connection's life only goes forward: HANDSHAKE -> OPEN -> CLOSING -> DEAD, where
 * CLOSING may be skipped and a handshake may be answered (HTTP) and closed without opening.
 * conn_state() asserts it. */
enum conn_state { CS_HANDSHAKE, CS_OPEN, CS_CLOSING, CS_DEAD };
/* The worker list a connection waits on, at most one at a time (next_pending links it):
 * the flush list (written, read again at the end of the iteration) or the free list
 * (dead, freed at the end of the iteration). */
enum conn_list { CL_NONE, CL_FLUSH, CL_FREE };

struct wsc_conn {
    loop_io io;
    wsc_worker *w;
    wsc_conn *prev, *next;  /* the worker's list of live connections */
    wsc_conn *next_pending; /* the flush or the free list, as `list` says */
    uint64_t id;
    void *data;
    loop_timer core_timer; /* handshake deadline, ping/pong, close timeout */
    loop_timer app_timer;
    uint64_t last_rx, ping_sent;
    uint8_t state; /* enum conn_state */
    uint8_t list;  /* enum conn_list */
    bool writable, peer_closed, close_after_flush, opened, upgraded, ping_out, read_again,
        lingering, ip_counted;
    bool stream;        /* wsc_handlers.stream: raw bytes out, input dropped, no frames */
    uint64_t last_tx;   /* stream: loop ms of the last queued bytes (for the keepalive) */
    bool tls_hs;        /* TLS: the handshake is not done yet (no HTTP before it) */
    uint8_t tls_eof;    /* TLS: 1 close_notify or EOF seen, 2 a TLS error: after the bytes read */
    bool ktls;          /* TLS: the kernel seals what is written (ktls.h); rec only opens */
    bool corked;        /* wsc_conn_cork: writes held until wsc_conn_uncork */
    bool full_messages; /* wsc_conn_lift_message_limit: max_message, not _initial */
    uint16_t close_code;
    bool deflate; /* permessage-deflate negotiated, with pmd: */
    ws_pmd pmd;
    /* outbound queue: ring of frames, inline while short */
    wsc_frame **q;
    wsc_frame *q_inline[INLINE_Q];
    uint32_t q_cap, q_head, q_count, q_off; /* q_off: bytes of the head frame written */
    size_t q_bytes;
    /* inbound */
    char *hs; /* handshake bytes until the head is complete */
    uint32_t hs_len;
    uint32_t held; /* wsc_conn_hold: bytes the app keeps for it, in the bound */
    uint8_t *msg;  /* message buffer while a message spans reads */
    size_t msg_cap;
    ws_reader *reader; /* NULL at rest (between frames, no message in progress): the
                        * worker's own serves each read, and only a connection left
                        * mid-frame or mid-message keeps one (conn_frames) */
    /* TLS listener: OpenSSL during the handshake (ssl), then our record layer (rec, ~200
     * bytes instead of OpenSSL's ~14 KB); NULL both in plain text */
    SSL *ssl;
    tlsrec *rec;
    uint8_t *rin;   /* TLS: a record that came in part (allocated only meanwhile) */
    uint8_t *tpend; /* TLS: sealed bytes a write left (allocated only meanwhile) */
    uint32_t rin_len, rin_cap, tpend_len, tpend_off;
    char peer[56];     /* "[v6 address]:port" */
    uint8_t ipkey[16]; /* the source's key in the per-address count (ip_counted) */
};

struct wsc_worker {
    wsc_server *s;
    int index;
    pthread_t thread;
    loop *l;
    loop_io listen_io, tls_listen_io; /* fd -1: that listener is not configured */
    wsc_conn *conns;                  /* live connections */
    wsc_conn *flush_list, *free_list;
    /* write_delay_ms: the flush is held until hold_until (0: nothing held) unless urgent
     * (something other than an event was queued); queuing_event marks wsc_conn_send_event */
    uint64_t hold_until;
    bool urgent, queuing_event;
    int nodelay; /* 1: accepted sockets come with TCP_NODELAY (from the listener),
                  * -1: they do not (set on each), 0: not known yet */

    /* busy_hold_max_ms: the last flush pass (one that wrote): its end (CLOCK_MONOTONIC), the
     * worker's CPU time in it (not its wall time, which a preempted worker would see long
     * and take for load), its wall time, and the time from the pass before it to its end
     * (0: none before), in microseconds; frames16: the frames it carried per write, x16,
     * counted in frames_queued since the pass before. hold_us: the hold the busy rule made
     * at its last check (0: none), for the "behind" bound.
     * busy_checked: this turn's first event was looked at (by the busy rule, or it set
     * write_delay_ms's hold_until); behind: wsc_worker_event_age found an event of this turn
     * late; passes_held: turns whose flush a busy hold put off, for the metric. */
    uint64_t pass_end_us, pass_us, pass_wall_us, period_us, hold_us;
    uint32_t frames16, frames_queued;
    bool busy_checked, behind;
    uint32_t passes_held;

    int nconns;
    /* TLS: handshakes since the heap was last trimmed, and the last one's time (a burst of
     * handshakes leaves OpenSSL's freed working memory scattered between live objects) */
    uint32_t tls_untrimmed;
    uint64_t tls_last_hs;
    bool draining;
    uint64_t drain_start, drain_end;
    int drain_total, drain_closed;
    void *data;
    void (*before_sleep)(wsc_worker *w);
    int start_rc;
    sem_t started; /* posted once worker_start ran (start_rc holds its result) */
    /* permessage-deflate, for all the worker's connections (no context takeover: reset per
     * message, so nothing is kept per connection): made on first use */
    z_stream zd, zi;
    bool zd_ready, zi_ready;
    uint8_t *zbuf, *ibuf; /* compression output / inflated message */
    size_t zcap, icap;
    ws_reader rest_reader; /* conn_frames: for a connection whose reader was at rest */
    /* Per-delivery counts kept here and added to the shared metrics once per loop turn
     * (worker_tally): an atomic add per frame on a counter both workers write made the
     * counter's cache line travel between cores on every delivery. */
    uint64_t t_frames_out, t_bytes_out, t_writes, t_msgs_in, t_bytes_in;
    /* References to frames that written connections gave up, not yet subtracted from them
     * (one atomic subtraction per frame and pass instead of one per connection and frame;
     * a slot per frame, as a write carries several): a deferred
     * release only holds the frame longer. Applied by worker_release_flush. */
    struct {
        wsc_frame *f;
        uint32_t n;
    } rel[REL_SLOTS];
    unsigned rel_next, rel_evict; /* the slot to look at first / to take next */
    /* References taken on acq_f ahead (REF_BATCH at a time, one atomic add: a fan-out queues
     * the same frame on every subscriber in turn), acq_n of them not handed out yet; what
     * is left is given back by worker_release_flush. */
    wsc_frame *acq_f;
    uint32_t acq_n;
    /* Queue rings of RING_SLOTS slots that emptied, linked through their first slot: at most
     * one per connection that had a burst at once, and freed RING_KEEP_MS after the last
     * ring was taken (worker_rings_trim), so idle connections hold none. */
    wsc_frame **rings;
    uint64_t rings_taken; /* loop ms */
    uint8_t gbuf[GATHER]; /* conn_flush: the frames of one write, copied together */
    uint8_t rbuf[READ_BUF];
    EVP_CIPHER_CTX *cx;    /* TLS: the record layer's cipher context, keyed per record */
    uint8_t tbuf[TLS_OUT]; /* TLS: records sealed for one write */
};

struct wsc_server {
    wsc_config cfg;
    wsc_handlers h;
    wsc_worker **workers;
    int nworkers, port, tls_port;
    _Atomic int nconns;
    _Atomic uint64_t next_id;
    _Atomic int drain_ms; /* > 0: a drain was asked for */
    _Atomic int stop;
    iplimit *per_ip; /* cfg.max_per_ip > 0: open connections per source address */
    metric *m_rejected_ip;
    metric *m_conns, *m_accepted, *m_rejected_full, *m_hs_ok, *m_hs_fail, *m_msgs_in, *m_bytes_in,
        *m_frames_out, *m_bytes_out, *m_writes, *m_busy_holds, *m_slow, *m_aborts, *m_deflate_conns;
    metric *m_tls_full, *m_tls_resumed, *m_tls_failed, *m_tls_timeout;
    metric *m_ktls_kernel, *m_ktls_user; /* which layer seals a connection's sends */
    atomic_int ktls_gone; /* the kernel refused the "tls" ULP once: not asked again */
    char draining_reason[64], draining_body[96], full_body[96]; /* made from cfg.name */
};

/* ---- frames -------------------------------------------------------------------------- */

wsc_frame *wsc_frame_alloc(uint8_t opcode, size_t len, uint8_t **payload)
{
    uint8_t hdr[WS_FRAME_HEADER_MAX];
    size_t hl = ws_frame_header_encode(hdr, opcode, true, 0, len, NULL);
    if (len > UINT32_MAX - hl) return NULL;
    wsc_frame *f = malloc(sizeof *f + hl + len);
    if (!f) return NULL;
    atomic_init(&f->ref, 1);
    f->len = (uint32_t)(hl + len);
    f->bytes = f->data;
    f->destroy = NULL;
    f->alt = NULL;
    f->hl = (uint8_t)hl;
    f->tried = (opcode & 0x08) != 0; /* control frames are never compressed */
    memcpy(f->data, hdr, hl);
    *payload = f->data + hl;
    return f;
}

wsc_frame *wsc_frame_new(uint8_t opcode, const void *payload, size_t len)
{
    uint8_t *p;
    wsc_frame *f = wsc_frame_alloc(opcode, len, &p);
    if (f && len) memcpy(p, payload, len);
    return f;
}

/* Bytes sent as they are (an HTTP answer before the upgrade, a stream's bytes). */
static wsc_frame *frame_raw(const void *bytes, size_t len)
{
    if (len > UINT32_MAX) return NULL;
    wsc_frame *f = malloc(sizeof *f + len);
    if (!f) return NULL;
    atomic_init(&f->ref, 1);
    f->len = (uint32_t)len;
    f->bytes = f->data;
    f->destroy = NULL;
    f->alt = NULL;
    f->hl = 0;
    f->tried = true; /* not a WebSocket frame */
    memcpy(f->data, bytes, len);
    return f;
}

wsc_frame *wsc_frame_raw(const void *bytes, size_t len) { return frame_raw(bytes, len); }

wsc_frame *wsc_frame_wrap(const uint8_t *bytes, size_t len, void (*destroy)(void *ud), void *ud)
{
    if (len > UINT32_MAX) return NULL;
    wsc_frame *f = malloc(sizeof *f);
    if (!f) return NULL;
    atomic_init(&f->ref, 1);
    f->len = (uint32_t)len;
    f->bytes = (uint8_t *)bytes;
    f->destroy = destroy;
    f->ud = ud;
    f->alt = NULL;
    /* the header tells where the payload starts; a frame that is not one data frame (or
     * is compressed already) is never compressed here */
    ws_frame_rules rules = {
        .from_client = false, .rsv_allowed = WS_PMD_RSV1, .max_payload = UINT64_MAX};
    ws_frame_header h;
    ws_frame_err err;
    int hl = ws_frame_decode(bytes, len, &rules, &h, &err);
    f->hl = hl > 0 ? (uint8_t)hl : 0;
    f->tried = hl <= 0 || (h.opcode != WS_OP_TEXT && h.opcode != WS_OP_BINARY) || !h.fin || h.rsv ||
               (uint64_t)hl + h.len != len;
    return f;
}

void wsc_frame_set_deflated(wsc_frame *f, wsc_frame *deflated)
{
    f->alt = deflated;
    f->tried = true;
}

wsc_frame *wsc_frame_ref(wsc_frame *f)
{
    atomic_fetch_add_explicit(&f->ref, 1, memory_order_relaxed);
    return f;
}

/* Gives up n references at once. */
static void frame_unref_n(wsc_frame *f, uint32_t n)
{
    if (f && n && atomic_fetch_sub_explicit(&f->ref, n, memory_order_acq_rel) == n) {
        if (f->destroy) f->destroy(f->ud);
        wsc_frame_unref(f->alt);
        free(f);
    }
}

void wsc_frame_unref(wsc_frame *f) { frame_unref_n(f, 1); }

size_t wsc_frame_size(const wsc_frame *f) { return f->len; }

const uint8_t *wsc_frame_payload(const wsc_frame *f, size_t *len)
{
    if (f->hl == 0 || f->hl > f->len) return NULL;
    *len = f->len - f->hl;
    return f->bytes + f->hl;
}

/* ---- connection bookkeeping ---------------------------------------------------------- */

static void conn_on_io(loop_io *io, uint32_t events);
static void conn_core_timer(loop_timer *t);
static void conn_app_timer(loop_timer *t);
static void conn_flush(wsc_conn *c);

static wsc_conn *conn_of_io(loop_io *io) { return (wsc_conn *)io; }

/* Moves c's life forward (see enum conn_state); any other move is a bug. */
static void conn_state(wsc_conn *c, enum conn_state to)
{
    assert(to > c->state);
    c->state = (uint8_t)to;
}

static uint64_t clock_us(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static uint64_t mono_us(void) { return clock_us(CLOCK_MONOTONIC); }

/* busy_hold_max_ms: the first event queued since the last flush pass decides. The worker
 * is busy if it came while that pass was still recent - less than the pass's CPU time ago,
 * a pass of a millisecond or more (the loop's clock cannot wait for less). A busy worker's
 * next flush then waits until three times the pass's CPU time after it (at least
 * BUSY_HOLD_MIN_US, at most busy_hold_max_ms), so it writes at most about a quarter of the
 * time while the load lasts and the events arriving meanwhile share each connection's write -
 * if any are to be expected: at the pace of the last pass (its frames per write, over the
 * time since the pass before) at least one more per connection must come within the hold,
 * or the wait would only delay this one. Anything else writes at once: an idle worker, or
 * one whose events are too sparse to share writes, never waits. (Measured: docs/EDGE.md
 * step 6, docs/BENCHMARKS.md.) */
#define BUSY_HOLD_MIN_US 5000
static void busy_hold_check(wsc_worker *w)
{
    w->busy_checked = true;
    w->hold_us = 0;
    uint64_t max_us = (uint64_t)w->s->cfg.busy_hold_max_ms * 1000;
    if (!max_us || w->pass_us < 1000 || !w->period_us) return;
    uint64_t now = mono_us();
    if (now >= w->pass_end_us + w->pass_us) return; /* not busy: the pass is long over */
    uint64_t hold = 3 * w->pass_us > BUSY_HOLD_MIN_US ? 3 * w->pass_us : BUSY_HOLD_MIN_US;
    if (hold > max_us) hold = max_us;
    if ((uint64_t)w->frames16 * hold < 16 * w->period_us) return; /* nothing to share */
    uint64_t until = w->pass_end_us + hold;
    if (now >= until) return;
    w->hold_us = hold;
    w->hold_until = (until + 999) / 1000; /* the loop's clock: CLOCK_MONOTONIC ms */
}

/* What the worker counted since the last turn, into the shared metrics. */
static void worker_tally(wsc_worker *w)
{
    wsc_server *s = w->s;
    if (w->t_frames_out) metric_add(s->m_frames_out, w->t_frames_out);
    if (w->t_bytes_out) metric_add(s->m_bytes_out, w->t_bytes_out);
    if (w->t_writes) metric_add(s->m_writes, w->t_writes);
    if (w->t_msgs_in) metric_add(s->m_msgs_in, w->t_msgs_in);
    if (w->t_bytes_in) metric_add(s->m_bytes_in, w->t_bytes_in);
    if (w->passes_held) metric_add(s->m_busy_holds, w->passes_held);
    w->t_frames_out = w->t_bytes_out = w->t_writes = w->t_msgs_in = w->t_bytes_in = 0;
    w->passes_held = 0;
}

static void worker_release_flush(wsc_worker *w)
{
    for (int i = 0; i < REL_SLOTS; i++) {
        frame_unref_n(w->rel[i].f, w->rel[i].n);
        w->rel[i].f = NULL;
        w->rel[i].n = 0;
    }
    frame_unref_n(w->acq_f, w->acq_n);
    w->acq_f = NULL;
    w->acq_n = 0;
}

/* A written frame's reference, given up: gathered while the same frames come back (a fan-out
 * pass writes the same few events to every subscriber in turn, in the same order, so the
 * slot after the last one used is usually the frame's, and otherwise one of the slots just
 * before it: they are searched backwards from there). A frame not among the slots takes the
 * one filled longest ago, whose references are then given up. REL_SLOTS is MAX_IOV, so the
 * frames of one write never push each other out. */
static void worker_release(wsc_worker *w, wsc_frame *f)
{
    unsigned i = w->rel_next;
    if (w->rel[i].f != f) {
        unsigned d = 1;
        while (d < REL_SLOTS && w->rel[(i - d) % REL_SLOTS].f != f) d++;
        if (d < REL_SLOTS) {
            i = (i - d) % REL_SLOTS;
        } else {
            i = w->rel_evict;
            w->rel_evict = (i + 1) % REL_SLOTS;
            frame_unref_n(w->rel[i].f, w->rel[i].n);
            w->rel[i].f = f;
            w->rel[i].n = 0;
        }
    }
    w->rel[i].n++;
    w->rel_next = (i + 1) % REL_SLOTS;
}

/* A new reference to f for one of the worker's queues: from the references taken ahead on
 * it, or REF_BATCH more with one atomic add (the rest go back at the end of the turn). */
static wsc_frame *worker_ref(wsc_worker *w, wsc_frame *f)
{
    if (f != w->acq_f || w->acq_n == 0) {
        frame_unref_n(w->acq_f, w->acq_n);
        atomic_fetch_add_explicit(&f->ref, REF_BATCH, memory_order_relaxed);
        w->acq_f = f;
        w->acq_n = REF_BATCH;
    }
    w->acq_n--;
    return f;
}

/* Schedules c for the end of this iteration's flush (once). */
static void conn_want_flush(wsc_conn *c)
{
    wsc_worker *w = c->w;
    if (!w->queuing_event) {
        w->urgent = true; /* read only while a hold is set (write_delay_ms or the busy rule) */
    } else if (!w->busy_checked) { /* this turn's first event decides whether it waits */
        if (w->s->cfg.write_delay_ms > 0) {
            w->busy_checked = true;
            w->hold_until = loop_now(w->l) + (uint64_t)w->s->cfg.write_delay_ms;
        } else {
            busy_hold_check(w);
        }
    }
    if (c->list != CL_NONE || c->state == CS_DEAD) return;
    c->list = CL_FLUSH;
    c->next_pending = c->w->flush_list;
    c->w->flush_list = c;
}

/* A ring for a queue that outgrows INLINE_Q: a free one of the worker's, or a new one. */
static wsc_frame **ring_take(wsc_worker *w)
{
    w->rings_taken = loop_now(w->l);
    wsc_frame **q = w->rings;
    if (!q) return malloc(sizeof *q * RING_SLOTS);
    w->rings = (wsc_frame **)(void *)q[0];
    return q;
}

/* Gives back a grown ring: RING_SLOTS ones to the worker's free rings, bigger ones to malloc. */
static void ring_put(wsc_worker *w, wsc_frame **q, uint32_t cap)
{
    if (cap != RING_SLOTS) {
        free(q);
        return;
    }
    q[0] = (wsc_frame *)(void *)w->rings;
    w->rings = q;
}

/* Frees the worker's free rings once no queue has grown for RING_KEEP_MS (or when force). */
static void worker_rings_trim(wsc_worker *w, bool force)
{
    if (!force && (!w->rings || loop_now(w->l) < w->rings_taken + RING_KEEP_MS)) return;
    while (w->rings) {
        wsc_frame **q = w->rings;
        w->rings = (wsc_frame **)(void *)q[0];
        free(q);
    }
}

static void queue_clear(wsc_conn *c)
{
    for (uint32_t i = 0; i < c->q_count; i++)
        wsc_frame_unref(c->q[(c->q_head + i) & (c->q_cap - 1)]);
    c->q_count = c->q_head = c->q_off = 0;
    c->q_bytes = 0;
    if (c->q != c->q_inline) ring_put(c->w, c->q, c->q_cap);
    c->q = c->q_inline;
    c->q_cap = INLINE_Q;
}

/* Ends the connection now: no more I/O; freed at the end of the iteration. */
static void conn_abort(wsc_conn *c, uint16_t code)
{
    if (c->state == CS_DEAD) return;
    wsc_worker *w = c->w;
    if (c->state != CS_CLOSING || !c->close_code) c->close_code = code;
    conn_state(c, CS_DEAD);
    close(c->io.fd); /* leaves the epoll set with it (never dup'd): no EPOLL_CTL_DEL */
    c->io.fd = -1;
    loop_timer_cancel(&c->core_timer);
    loop_timer_cancel(&c->app_timer);
    if (code == WS_CLOSE_ABNORMAL) metric_inc(w->s->m_aborts);
    /* leave the flush list alone (it skips dead ones); join the free list */
    assert(c->list != CL_FREE); /* only the dead are on it */
    if (c->list == CL_NONE) {
        c->list = CL_FREE;
        c->next_pending = w->free_list;
        w->free_list = c;
    } else {
        c->read_again = false; /* moved to the free list when the flush list is walked */
    }
}

static void conn_free(wsc_conn *c)
{
    wsc_worker *w = c->w;
    wsc_server *s = w->s;
    if (c->upgraded && s->h.closed) s->h.closed(c, c->close_code ? c->close_code : 1006);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    w->nconns--;
    atomic_fetch_sub(&s->nconns, 1);
    if (c->ip_counted) iplimit_release(s->per_ip, c->ipkey);
    if (c->deflate && s->cfg.deflate_live)
        atomic_fetch_sub_explicit(s->cfg.deflate_live, 1, memory_order_relaxed);
    metric_add(s->m_conns, -1);
    queue_clear(c);
    free(c->hs);
    free(c->msg);
    free(c->reader);
    SSL_free(c->ssl);
    if (c->rec) tlsrec_clear(c->rec);
    free(c->rec);
    free(c->rin);
    free(c->tpend);
    free(c);
}

/* Appends f (a new reference) to c's queue. 0, or -1 on allocation failure. */
static int queue_push(wsc_conn *c, wsc_frame *f)
{
    assert(c->state != CS_DEAD);
    assert(c->q_count <= c->q_cap && (c->q_off == 0 || c->q_count > 0));
    if (c->q_count == c->q_cap) { /* a power of two, INLINE_Q and up: indexes wrap by mask */
        wsc_worker *w = c->w;
        uint32_t ncap = c->q == c->q_inline ? RING_SLOTS : c->q_cap * 2;
        wsc_frame **nq = ncap == RING_SLOTS ? ring_take(w) : malloc(sizeof *nq * ncap);
        if (!nq) return -ENOMEM;
        for (uint32_t i = 0; i < c->q_count; i++) nq[i] = c->q[(c->q_head + i) & (c->q_cap - 1)];
        if (c->q != c->q_inline) ring_put(w, c->q, c->q_cap);
        c->q = nq;
        c->q_cap = ncap;
        c->q_head = 0;
    }
    c->q[(c->q_head + c->q_count) & (c->q_cap - 1)] = worker_ref(c->w, f);
    c->q_count++;
    c->q_bytes += f->len;
    if (c->stream) c->last_tx = loop_now(c->w->l);
    conn_want_flush(c);
    return 0;
}

/* Queues a close frame and stops sending anything else. */
/* A stream has no close frame: it ends (half-close, then linger as after a close frame)
 * once what is queued is written. */
static void conn_end_stream(wsc_conn *c, uint16_t code)
{
    conn_state(c, CS_CLOSING);
    c->close_code = code;
    c->corked = false;
    c->peer_closed = true; /* no close frame to wait for */
    c->close_after_flush = true;
    loop_timer_set(c->w->l, &c->core_timer,
                   loop_now(c->w->l) + (uint64_t)c->w->s->cfg.close_timeout_ms);
    if (c->q_count || c->tpend)
        conn_want_flush(c);
    else
        conn_flush(c); /* nothing to write: the half-close now */
}

static void conn_send_close(wsc_conn *c, uint16_t code, const char *reason)
{
    if (c->stream) {
        conn_end_stream(c, code);
        return;
    }
    uint8_t payload[125];
    size_t rl = reason ? strnlen(reason, 123) : 0;
    size_t n = code == WS_CLOSE_NO_STATUS ? 0 : ws_frame_close_encode(payload, code, reason, rl);
    wsc_frame *f = wsc_frame_new(WS_OP_CLOSE, payload, n);
    conn_state(c, CS_CLOSING);
    c->close_code = code;
    c->corked = false; /* a closing handshake is never held */
    if (!f || queue_push(c, f) != 0) {
        wsc_frame_unref(f);
        conn_abort(c, WS_CLOSE_ABNORMAL);
        return;
    }
    wsc_frame_unref(f);
    loop_timer_set(c->w->l, &c->core_timer,
                   loop_now(c->w->l) + (uint64_t)c->w->s->cfg.close_timeout_ms);
}

/* ---- public connection API ------------------------------------------------------------ */

wsc_worker *wsc_conn_worker(const wsc_conn *c) { return c->w; }
uint64_t wsc_conn_id(const wsc_conn *c) { return c->id; }
void *wsc_conn_data(const wsc_conn *c) { return c->data; }
void wsc_conn_set_data(wsc_conn *c, void *data) { c->data = data; }
size_t wsc_conn_queued(const wsc_conn *c)
{
    return c->q_bytes - c->q_off + c->tpend_len - c->tpend_off;
}
const char *wsc_conn_peer(const wsc_conn *c) { return c->peer; }
int wsc_conn_tls(const wsc_conn *c) { return c->ssl || c->rec; }
int wsc_conn_is_stream(const wsc_conn *c) { return c->stream; }

/* Closes c (slow_close_code) at once: the peer does not read fast enough. What is queued will not
 * be read either: keep only the frame being written (the stream must stay well-framed). */
static void conn_close_slow(wsc_conn *c, const char *why)
{
    wsc_server *s = c->w->s;
    if (c->state != CS_OPEN) return;
    metric_inc(s->m_slow);
    log_debug("slow client closed", "conn=%llu peer=%s queued=%zu held=%u bound=%zu why=\"%s\"",
              (unsigned long long)c->id, c->peer, c->q_bytes - c->q_off, c->held,
              s->cfg.max_outbound, why);
    while (c->q_count > (c->q_off ? 1u : 0u)) {
        uint32_t last = (c->q_head + c->q_count - 1) & (c->q_cap - 1);
        c->q_bytes -= c->q[last]->len;
        wsc_frame_unref(c->q[last]);
        c->q_count--;
    }
    c->peer_closed = true; /* it will not answer our close in time: do not wait for it */
    c->close_after_flush = true;
    conn_send_close(c, s->cfg.slow_close_code, why);
}

/* True (and the connection is being closed as too slow) when adding `more` bytes would pass the
 * outbound bound, which counts what is queued and what the app holds for c. */
static bool conn_over_bound(wsc_conn *c, size_t more)
{
    if (wsc_conn_queued(c) + c->held + more <= c->w->s->cfg.max_outbound) return false;
    conn_close_slow(c, "too slow");
    return true;
}

void wsc_conn_close_slow(wsc_conn *c, const char *reason) { conn_close_slow(c, reason); }

int wsc_conn_hold(wsc_conn *c, size_t n)
{
    if (c->state != CS_OPEN) return -EPIPE;
    if (conn_over_bound(c, n)) return -ENOBUFS;
    c->held += (uint32_t)n;
    return 0;
}

void wsc_conn_unhold(wsc_conn *c, size_t n)
{
    assert(n <= c->held); /* only what was held comes back */
    c->held -= n < c->held ? (uint32_t)n : c->held;
}

/* Compresses f's message with the worker's deflate stream: a new frame (RSV1), or NULL
 * when it does not pay (under deflate_min, not smaller) or on failure. */
static wsc_frame *worker_deflate(wsc_worker *w, const wsc_frame *f)
{
    wsc_server *s = w->s;
    const uint8_t *payload = f->bytes + f->hl;
    size_t n = f->len - f->hl;
    if (n < s->cfg.deflate_min || n == 0) return NULL;
    if (!w->zd_ready) {
        if (ws_pmd_deflate_init(&w->zd) != 0) return NULL;
        w->zd_ready = true;
    }
    size_t cap = n + 3; /* only a result smaller than the message fits (plus the tail) */
    if (w->zcap < cap) {
        uint8_t *nb = realloc(w->zbuf, cap);
        if (!nb) return NULL;
        w->zbuf = nb;
        w->zcap = cap;
    }
    long zn = ws_pmd_compress(&w->zd, payload, n, w->zbuf, cap);
    wsc_frame *df = NULL;
    if (zn >= 0) {
        uint8_t *p;
        uint8_t opcode = f->bytes[0] & 0x0F;
        if ((df = wsc_frame_alloc(opcode, (size_t)zn, &p)) != NULL) {
            df->bytes[0] |= WS_PMD_RSV1;
            df->tried = true;
            memcpy(p, w->zbuf, (size_t)zn);
        }
    }
    if (w->zcap > ZBUF_KEEP) { /* a big message once: do not keep its buffer */
        free(w->zbuf);
        w->zbuf = NULL;
        w->zcap = 0;
    }
    return df;
}

int wsc_conn_send(wsc_conn *c, wsc_frame *f)
{
    if (c->state != CS_OPEN) return -EPIPE;
    wsc_frame *own = NULL; /* compressed here for this connection */
    if (c->deflate && f->hl && ws_pmd_fits_window(&c->pmd, f->len - f->hl)) {
        if (f->alt)
            f = f->alt; /* compressed once for every recipient */
        else if (!f->tried && (own = worker_deflate(c->w, f)) != NULL)
            f = own;
    }
    int rc = 0;
    if (conn_over_bound(c, f->len)) {
        rc = -ENOBUFS;
    } else if (queue_push(c, f) != 0) {
        conn_abort(c, WS_CLOSE_ABNORMAL);
        rc = -ENOMEM;
    } else {
        c->w->t_frames_out++;
        c->w->frames_queued++;
    }
    wsc_frame_unref(own);
    return rc;
}

/* The largest message c may send now: a client that has not authenticated is held to the
 * small initial limit, so 10,000 of them cannot each pin a max_message buffer. */
static size_t conn_max_message(const wsc_conn *c)
{
    const wsc_config *cfg = &c->w->s->cfg;
    if (c->full_messages || cfg->max_message_initial == 0 ||
        cfg->max_message_initial > cfg->max_message)
        return cfg->max_message;
    return cfg->max_message_initial;
}

void wsc_conn_lift_message_limit(wsc_conn *c)
{
    if (c->full_messages) return;
    c->full_messages = true;
    if (c->reader) ws_reader_set_max_message(c->reader, c->w->s->cfg.max_message);
}

void wsc_conn_cork(wsc_conn *c)
{
    if (c->state == CS_OPEN) c->corked = true;
}

void wsc_conn_uncork(wsc_conn *c)
{
    if (!c->corked) return;
    c->corked = false;
    if (c->q_count) conn_want_flush(c);
}

int wsc_conn_send_event(wsc_conn *c, wsc_frame *f)
{
    c->w->queuing_event = true;
    int rc = wsc_conn_send(c, f);
    c->w->queuing_event = false;
    return rc;
}

void wsc_worker_event_age(wsc_worker *w, uint64_t queued_us)
{
    if (!w->s->cfg.busy_hold_max_ms || !queued_us) return;
    /* in its mailbox for more than two of the busy rule's periods (a pass and a hold) */
    uint64_t lim = 2 * (w->pass_wall_us + w->hold_us) + BUSY_HOLD_MIN_US;
    if (mono_us() > queued_us + lim) w->behind = true;
}

int wsc_conn_send_text(wsc_conn *c, const char *text, size_t len)
{
    wsc_frame *f = wsc_frame_new(WS_OP_TEXT, text, len);
    if (!f) return -ENOMEM;
    int rc = wsc_conn_send(c, f);
    wsc_frame_unref(f);
    return rc;
}

void wsc_conn_close(wsc_conn *c, uint16_t code, const char *reason)
{
    if (c->state != CS_OPEN) return;
    if (c->stream) {
        if (c->w->s->h.stream_end) c->w->s->h.stream_end(c, code, reason);
        if (c->state == CS_OPEN) conn_end_stream(c, code);
        return;
    }
    if (c->peer_closed) c->close_after_flush = true;
    conn_send_close(c, code, reason);
}

void wsc_conn_timer(wsc_conn *c, uint64_t when)
{
    if (c->state == CS_DEAD) return;
    if (when == 0)
        loop_timer_cancel(&c->app_timer);
    else
        loop_timer_set(c->w->l, &c->app_timer, when);
}

/* ---- TLS ---------------------------------------------------------------------------------- */

static void conn_read(wsc_conn *c, uint32_t events);
static void conn_answer_http(wsc_conn *c, int status, const char *body);

/* Sends a fatal alert (best effort: only when nothing sealed is waiting, which it would
 * overtake) and marks the stream broken: the connection ends after what was read. */
static void rec_fail(wsc_conn *c, uint8_t alert)
{
    log_debug("tls record refused", "conn=%llu peer=%s alert=%u", (unsigned long long)c->id,
              c->peer, alert);
    if (c->ktls) {
        (void)ktls_send_alert(c->io.fd, 2, alert); /* best effort */
        c->tls_eof = 2;
        return;
    }
    uint8_t out[TLSREC_MAX_OVERHEAD + 2];
    long n = c->tpend ? -1 : tlsrec_seal_alert(c->rec, c->w->cx, alert, out);
    if (n > 0 && write(c->io.fd, out, (size_t)n) < 0) { /* best effort */
    }
    c->tls_eof = 2;
}

/* read(2) for a TLS connection: reads records, opens them in place and returns their
 * plaintext, compacted at buf; a record cut by the read waits in c->rin. > 0 bytes, 0 at
 * the end (close_notify, or EOF between records), -1 with errno (EAGAIN: drained). */
static ssize_t rec_recv(wsc_conn *c, uint8_t *buf, size_t len, bool *drained)
{
    int empty = 0; /* records with nothing for us (empty data, KeyUpdate) in this call */
    for (int round = 0;; round++) {
        if (round == 4) { /* only such records so far: the others' turn, then read on */
            errno = EINTR;
            return -1;
        }
        if (c->tls_eof) {
            if (c->tls_eof == 1) return 0;
            errno = ECONNRESET;
            return -1;
        }
        size_t have = c->rin_len;
        if (have) memcpy(buf, c->rin, have);
        ssize_t n = read(c->io.fd, buf + have, len - have);
        if (n < 0) return -1; /* c->rin stays for the next read */
        if (n == 0) {
            if (!have) return 0;
            c->tls_eof = 2; /* EOF inside a record: truncated */
            continue;
        }
        *drained = (size_t)n < len - have;
        size_t total = have + (size_t)n, off = 0, out = 0;
        while (!c->tls_eof && total - off >= TLSREC_HEADER) {
            long rl = tlsrec_record_len(c->rec, buf + off, total - off);
            if (rl < 0) {
                rec_fail(c, rl == SC_ETOOLARGE ? TLSREC_A_RECORD_OVERFLOW : TLSREC_A_DECODE_ERROR);
                break;
            }
            if (total - off < (size_t)rl) break;
            uint8_t *plain, alert;
            size_t plain_len;
            int type = tlsrec_open(c->rec, c->w->cx, buf + off, (size_t)rl, &plain, &plain_len,
                                   &alert);
            off += (size_t)rl;
            if (type == TLSREC_DATA || type == TLSREC_HANDSHAKE) {
                if (plain_len == 0 && ++empty > 32) { /* a stream of empty records */
                    rec_fail(c, TLSREC_A_UNEXPECTED);
                    break;
                }
            }
            if (type == TLSREC_DATA) {
                memmove(buf + out, plain, plain_len);
                out += plain_len;
            } else if (type == TLSREC_ALERT) {
                c->tls_eof = plain[1] == TLSREC_A_CLOSE_NOTIFY ? 1 : 2;
            } else if (type == TLSREC_HANDSHAKE) { /* a KeyUpdate: ours may be owed */
                if (c->rec->update_owed && c->ktls) {
                    /* the kernel cannot move our write key on, and no data may go out
                     * before our KeyUpdate: say goodbye (an alert is no data) and end */
                    log_debug("tls key update asked under ktls: closing", "conn=%llu peer=%s",
                              (unsigned long long)c->id, c->peer);
                    (void)ktls_send_alert(c->io.fd, 1, TLSREC_A_CLOSE_NOTIFY);
                    c->rec->update_owed = 0;
                    c->tls_eof = 2;
                } else if (c->rec->update_owed) {
                    conn_want_flush(c);
                }
            } else {
                rec_fail(c, alert);
            }
        }
        size_t rest = c->tls_eof ? 0 : total - off;
        if (rest) { /* room for the whole record it starts (its header: 5 bytes at least) */
            long rl = tlsrec_record_len(c->rec, buf + off, rest);
            size_t need = rl > 0 ? (size_t)rl : TLSREC_HEADER;
            if (need > c->rin_cap) {
                uint8_t *nb = realloc(c->rin, need);
                if (!nb) {
                    c->tls_eof = 2;
                    continue;
                }
                c->rin = nb;
                c->rin_cap = (uint32_t)need;
            }
            memmove(c->rin, buf + off, rest);
        } else {
            free(c->rin);
            c->rin = NULL;
            c->rin_cap = 0;
        }
        c->rin_len = (uint32_t)rest;
        if (out > 0) return (ssize_t)out;
        if (c->tls_eof) continue;
        if (*drained) {
            errno = EAGAIN;
            return -1;
        }
    }
}

/* Writes what an earlier rec_send sealed and could not write. 0 when nothing waits any more,
 * -1 with errno (EAGAIN: the socket is full again). */
static int rec_flush_pending(wsc_conn *c)
{
    while (c->tpend) {
        ssize_t wr = write(c->io.fd, c->tpend + c->tpend_off, c->tpend_len - c->tpend_off);
        if (wr < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) c->writable = false;
            return -1;
        }
        c->tpend_off += (uint32_t)wr;
        if (c->tpend_off == c->tpend_len) {
            free(c->tpend);
            c->tpend = NULL;
            c->tpend_len = c->tpend_off = 0;
        }
    }
    return 0;
}

/* writev(2) for a TLS connection: seals up to TLS_OUT_RECORDS records of the queued frames
 * (a KeyUpdate first when one is due) and writes them at once. Returns the plaintext bytes
 * taken from iov: sealed bytes the socket did not take wait in c->tpend (they carry
 * sequence numbers: they go out before anything else). -1 with errno. */
static ssize_t rec_send(wsc_conn *c, const struct iovec *iov, int n)
{
    wsc_worker *w = c->w;
    if (rec_flush_pending(c) != 0) return -1;
    uint8_t *out = w->tbuf;
    size_t olen = 0, taken = 0, ioff = 0;
    int i = 0;
    if (tlsrec_update_due(c->rec)) {
        long k = tlsrec_seal_key_update(c->rec, w->cx, out);
        if (k < 0) goto sealing_failed;
        olen += (size_t)k;
    }
    for (int r = 0; r < TLS_OUT_RECORDS && i < n; r++) {
        const uint8_t *ps[TLSREC_MAX_PIECES];
        size_t ls[TLSREC_MAX_PIECES], tot = 0;
        int np = 0;
        while (i < n && tot < TLSREC_MAX_PLAIN && np < TLSREC_MAX_PIECES) {
            size_t avail = iov[i].iov_len - ioff;
            size_t take = avail < TLSREC_MAX_PLAIN - tot ? avail : TLSREC_MAX_PLAIN - tot;
            ps[np] = (const uint8_t *)iov[i].iov_base + ioff;
            ls[np++] = take;
            tot += take;
            ioff += take;
            if (ioff == iov[i].iov_len) {
                i++;
                ioff = 0;
            }
        }
        long k = tlsrec_seal(c->rec, w->cx, TLSREC_DATA, ps, ls, np, out + olen);
        if (k < 0) goto sealing_failed;
        olen += (size_t)k;
        taken += tot;
    }
    ssize_t wr;
    do {
        wr = write(c->io.fd, out, olen);
    } while (wr < 0 && errno == EINTR);
    if (wr < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
        wr = 0;
    }
    if ((size_t)wr < olen) { /* sealed is sent: keep the rest for the next write */
        if (!(c->tpend = malloc(olen - (size_t)wr))) {
            errno = ENOMEM;
            return -1;
        }
        memcpy(c->tpend, out + wr, olen - (size_t)wr);
        c->tpend_len = (uint32_t)(olen - (size_t)wr);
        c->tpend_off = 0;
        c->writable = false;
    }
    return (ssize_t)taken;
sealing_failed:
    log_warn("tls record not sealed", "conn=%llu peer=%s", (unsigned long long)c->id, c->peer);
    errno = EPROTO;
    return -1;
}

/* Seals close_notify and writes it (best effort: after everything sealed before it). */
static void rec_close_notify(wsc_conn *c)
{
    if (c->ktls) {
        (void)ktls_send_alert(c->io.fd, 1, TLSREC_A_CLOSE_NOTIFY);
        return;
    }
    uint8_t out[TLSREC_MAX_OVERHEAD + 2];
    long n = c->tpend ? -1 : tlsrec_seal_alert(c->rec, c->w->cx, TLSREC_A_CLOSE_NOTIFY, out);
    if (n > 0 && write(c->io.fd, out, (size_t)n) < 0) { /* best effort */
    }
}

/* With cfg.tls_ktls, hands the sending keys to the kernel where it takes them; counts which
 * layer seals this connection's sends. Nothing has been written since the handshake. */
static void conn_ktls(wsc_conn *c)
{
    wsc_server *s = c->w->s;
    if (s->cfg.tls_ktls && !atomic_load_explicit(&s->ktls_gone, memory_order_relaxed)) {
        int rc = ktls_tx_enable(c->io.fd, c->rec);
        if (rc == 0) {
            c->ktls = true;
        } else if (rc == -ENOENT) { /* no "tls" ULP: asking again would only cost (modprobe) */
            atomic_store_explicit(&s->ktls_gone, 1, memory_order_relaxed);
            log_info("ktls not offered by the kernel: tls records sealed in user space",
                     "server=%s", s->cfg.name);
        } else {
            log_debug("ktls refused: tls records sealed in user space",
                      "server=%s conn=%llu error=\"%s\"", s->cfg.name, (unsigned long long)c->id,
                      strerror(-rc));
        }
    }
    metric_inc(c->ktls ? s->m_ktls_kernel : s->m_ktls_user);
}

/* The handshake is done: the keys go to our record layer and OpenSSL's SSL is freed. */
static int conn_tls_established(wsc_conn *c)
{
    tlsrec_keys k;
    tlsrec *r = NULL;
    int rc = tlsctx_take_keys(c->ssl, &k);
    if (rc == 0 && !(r = malloc(sizeof *r))) rc = -ENOMEM;
    if (rc == 0) rc = tlsrec_init(r, &k);
    OPENSSL_cleanse(&k, sizeof k);
    if (rc != 0) {
        free(r);
        return rc;
    }
    SSL_free(c->ssl);
    c->ssl = NULL;
    c->rec = r;
    conn_ktls(c);
    return 0;
}

/* Drives the TLS handshake on each socket event; once done, the HTTP upgrade request gets
 * its own handshake_timeout_ms, and may have come with the handshake's last flight. */
static void conn_tls_handshake(wsc_conn *c, uint32_t events)
{
    wsc_server *s = c->w->s;
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->tls_hs = false;
        bool resumed = SSL_session_reused(c->ssl);
        int rc = conn_tls_established(c);
        if (rc != 0) {
            log_warn("tls record layer not set up", "server=%s conn=%llu peer=%s error=\"%s\"",
                     s->cfg.name, (unsigned long long)c->id, c->peer, sc_strerror(rc));
            metric_inc(s->m_tls_failed);
            conn_abort(c, WS_CLOSE_ABNORMAL);
            return;
        }
        metric_inc(resumed ? s->m_tls_resumed : s->m_tls_full);
        c->w->tls_untrimmed++;
        c->w->tls_last_hs = loop_now(c->w->l);
        loop_timer_set(c->w->l, &c->core_timer,
                       loop_now(c->w->l) + (uint64_t)s->cfg.handshake_timeout_ms);
        conn_read(c, events | EPOLLIN);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
    unsigned long le = ERR_peek_error();
    const char *why = le ? ERR_reason_error_string(le) : NULL;
    log_debug("tls handshake failed", "server=%s conn=%llu peer=%s reason=\"%s\"", s->cfg.name,
              (unsigned long long)c->id, c->peer, why ? why : "connection closed");
    metric_inc(s->m_tls_failed);
    bool http = ERR_GET_LIB(le) == ERR_LIB_SSL && ERR_GET_REASON(le) == SSL_R_HTTP_REQUEST;
    ERR_clear_error();
    if (http) { /* plain HTTP on the TLS port: told so in plain HTTP, then closed */
        SSL_free(c->ssl);
        c->ssl = NULL;
        c->tls_hs = false;
        conn_answer_http(c, 400, "this port speaks TLS: use https:// or wss://");
        return;
    }
    conn_abort(c, WS_CLOSE_ABNORMAL);
}

/* A TLS 1.3 KeyUpdate of ours must be sealed before more data (never under kTLS: there
 * a KeyUpdate asked for ends the connection, and the record bound closes it first). */
static bool rec_update_due(const wsc_conn *c)
{
    return c->rec && !c->ktls && tlsrec_update_due(c->rec);
}

/* Under kTLS with TLS 1.3: counts the records a write of n bytes made, at most (the kernel
 * seals each write into records of up to 2^14 bytes), and closes the connection with 1001
 * once the write key has sealed TLSREC_REKEY_AT of them: the kernel cannot move the key on,
 * and RFC 8446 bounds AES-GCM at 2^24.5 records (the client reconnects with a fresh key). */
static void ktls_count(wsc_conn *c, size_t n)
{
    if (!c->rec->v13) return;
    c->rec->wseq += n / TLSREC_MAX_PLAIN + 1;
    if (c->rec->wseq >= TLSREC_REKEY_AT && c->state == CS_OPEN) {
        log_info("tls record bound under ktls: closing", "conn=%llu peer=%s",
                 (unsigned long long)c->id, c->peer);
        wsc_conn_close(c, WS_CLOSE_GOING_AWAY, "tls key spent");
    }
}

/* read(2) through TLS when the connection has it; *drained: the socket has nothing more. */
static ssize_t conn_recv(wsc_conn *c, uint8_t *buf, size_t len, bool *drained)
{
    if (c->rec) return rec_recv(c, buf, len, drained);
    ssize_t n = read(c->io.fd, buf, len);
    *drained = n >= 0 && (size_t)n < len;
    return n;
}

/* ---- writing ----------------------------------------------------------------------------- */

static void conn_flush(wsc_conn *c)
{
    wsc_server *s = c->w->s;
    if (c->tpend && c->writable && rec_flush_pending(c) != 0 && errno != EAGAIN &&
        errno != EWOULDBLOCK) {
        conn_abort(c, WS_CLOSE_ABNORMAL);
        return;
    }
    /* a KeyUpdate the peer asked for goes out now, with data or without */
    if (c->q_count == 0 && !c->tpend && c->writable && rec_update_due(c) &&
        rec_send(c, NULL, 0) < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        conn_abort(c, WS_CLOSE_ABNORMAL);
        return;
    }
    while (c->q_count > 0 && c->writable) {
        struct iovec iov[MAX_IOV];
        int n = 0;
        size_t total = 0;
        for (uint32_t i = 0; i < c->q_count && n < MAX_IOV; i++, n++) {
            wsc_frame *f = c->q[(c->q_head + i) & (c->q_cap - 1)];
            size_t off = i == 0 ? c->q_off : 0;
            iov[n].iov_base = f->bytes + off;
            iov[n].iov_len = f->len - off;
            total += f->len - off;
        }
        /* Several small frames (a busy fan-out queues a few events per subscriber and pass)
         * are copied into one piece: the kernel then imports no iovec and copies one
         * segment, and send(2) skips writev's file-position steps; copying a few hundred
         * bytes that are in cache costs less than those per-frame and per-call steps. One
         * piece goes out with send(2) as it is. The socket is non-blocking and SIGPIPE is
         * the caller's to ignore, as with writev. kTLS: the plain path's calls, the kernel
         * seals; the user-space record layer seals the iovecs itself. */
        ssize_t wr;
        if (c->rec && !c->ktls) {
            wr = rec_send(c, iov, n);
        } else if (n == 1) {
            wr = send(c->io.fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL);
        } else if (total <= GATHER) {
            uint8_t *g = c->w->gbuf;
            for (int i = 0; i < n; i++) {
                memcpy(g, iov[i].iov_base, iov[i].iov_len);
                g += iov[i].iov_len;
            }
            wr = send(c->io.fd, c->w->gbuf, total, MSG_NOSIGNAL);
        } else {
            wr = writev(c->io.fd, iov, n);
        }
        c->w->t_writes++;
        if (wr < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                c->writable = false;
                break;
            }
            if (errno == EINTR) continue;
            conn_abort(c, WS_CLOSE_ABNORMAL);
            return;
        }
        c->w->t_bytes_out += (uint64_t)wr;
        if (c->ktls) ktls_count(c, (size_t)wr);
        size_t left = (size_t)wr;
        while (left > 0) {
            wsc_frame *f = c->q[c->q_head];
            size_t rest = f->len - c->q_off;
            if (left < rest) {
                c->q_off += (uint32_t)left;
                break;
            }
            left -= rest;
            c->q_bytes -= f->len;
            c->q_off = 0;
            worker_release(c->w, f);
            c->q_head = (c->q_head + 1) & (c->q_cap - 1);
            c->q_count--;
        }
    }
    if (c->q_count == 0 && !c->tpend) {
        if (c->q != c->q_inline) queue_clear(c); /* give back the grown ring */
        if (c->close_after_flush && !c->lingering) {
            /* Half-close, then read and drop until the peer closes too (or the close timeout):
             * closing with unread bytes would reset the connection and could destroy our
             * close frame in flight. TLS says it is done first (close_notify). */
            if (c->rec) rec_close_notify(c);
            shutdown(c->io.fd, SHUT_WR);
            c->lingering = true;
            loop_timer_set(c->w->l, &c->core_timer,
                           loop_now(c->w->l) + (uint64_t)s->cfg.close_timeout_ms);
        }
    }
}

/* ---- reading ----------------------------------------------------------------------------- */

static void conn_open(wsc_conn *c, const uint8_t *rest, size_t n);
static void conn_frames(wsc_conn *c, uint8_t *in, size_t n);

static void conn_answer_http(wsc_conn *c, int status, const char *body)
{
    char out[WS_HTTP_RESPONSE_MAX];
    int n = ws_http_write_error(out, sizeof out, status, body);
    wsc_frame *f = n > 0 ? frame_raw(out, (size_t)n) : NULL;
    metric_inc(c->w->s->m_hs_fail);
    conn_state(c, CS_CLOSING);
    c->close_after_flush = true;
    c->close_code = 0;
    if (!f || queue_push(c, f) != 0) {
        wsc_frame_unref(f);
        conn_abort(c, WS_CLOSE_ABNORMAL);
        return;
    }
    wsc_frame_unref(f);
    loop_timer_set(c->w->l, &c->core_timer,
                   loop_now(c->w->l) + (uint64_t)c->w->s->cfg.close_timeout_ms);
}

static void conn_handshake(wsc_conn *c, const uint8_t *in, size_t n)
{
    wsc_server *s = c->w->s;
    ws_http_request req;
    const char *head = (const char *)in; /* where the request's head lies: the read or c->hs */
    size_t take = n < HS_MAX ? n : HS_MAX, head_len = take;
    int hl = SC_EINCOMPLETE;
    /* Nearly always the whole head comes in the first read: parsed where it lies, with no
     * buffer of its own. Otherwise it gathers in c->hs (HS_MAX bytes at most). */
    if (c->hs || (hl = ws_http_parse_request(head, take, NULL, &req)) == SC_EINCOMPLETE) {
        if (!c->hs && !(c->hs = malloc(HS_MAX))) {
            conn_abort(c, WS_CLOSE_ABNORMAL);
            return;
        }
        take = n < HS_MAX - c->hs_len ? n : HS_MAX - c->hs_len;
        memcpy(c->hs + c->hs_len, in, take);
        c->hs_len += (uint32_t)take;
        head = c->hs;
        head_len = c->hs_len;
        hl = ws_http_parse_request(c->hs, c->hs_len, NULL, &req);
        if (hl == SC_EINCOMPLETE && c->hs_len < HS_MAX) return;
    }
    if (hl < 0) {
        conn_answer_http(c, hl == SC_EMALFORMED ? 400 : 431, NULL);
        return;
    }
    char *resp = NULL;
    size_t resp_len = 0;
    if (s->h.http && s->h.http(c, &req, &resp, &resp_len)) { /* /healthz and the like */
        wsc_frame *f = resp ? frame_raw(resp, resp_len) : NULL;
        free(resp);
        conn_state(c, CS_CLOSING);
        c->close_after_flush = true;
        if (!f || queue_push(c, f) != 0) conn_abort(c, WS_CLOSE_ABNORMAL);
        wsc_frame_unref(f);
        return;
    }
    int st = s->h.stream ? s->h.stream(c, &req, &resp, &resp_len) : 0;
    if (st != 0) {          /* a stream (Server-Sent Events), or the app's answer to one */
        c->upgraded = true; /* its closed handler runs */
        if (st == WSC_STREAM_OPEN && atomic_load(&s->drain_ms) > 0) {
            free(resp);
            conn_answer_http(c, 503, s->draining_body);
            return;
        }
        wsc_frame *f = resp ? frame_raw(resp, resp_len) : NULL;
        free(resp);
        if (st != WSC_STREAM_OPEN) {
            metric_inc(s->m_hs_fail);
            conn_state(c, CS_CLOSING);
            c->close_after_flush = true;
            if (!f || queue_push(c, f) != 0) {
                wsc_frame_unref(f);
                conn_abort(c, WS_CLOSE_ABNORMAL); /* on the free list: no timer may follow */
                return;
            }
            wsc_frame_unref(f);
            loop_timer_set(c->w->l, &c->core_timer,
                           loop_now(c->w->l) + (uint64_t)s->cfg.close_timeout_ms);
            return;
        }
        c->stream = true;
        if (!f || queue_push(c, f) != 0) {
            wsc_frame_unref(f);
            conn_abort(c, WS_CLOSE_ABNORMAL);
            return;
        }
        wsc_frame_unref(f);
        metric_inc(s->m_hs_ok);
        free(c->hs);
        c->hs = NULL;
        c->hs_len = 0;
        conn_open(c, NULL, 0); /* what came after the head is dropped, as all input is */
        return;
    }
    ws_http_upgrade up;
    const char *body = NULL;
    int status = ws_http_check_upgrade(&req, &s->cfg.upgrade, &up);
    if (status == 101 && atomic_load(&s->drain_ms) > 0) {
        status = 503;
        body = s->draining_body;
    }
    if (status == 101 && s->h.upgrade) {
        c->upgraded = true;
        status = s->h.upgrade(c, &req, &up, &body);
    }
    if (status != 101) {
        conn_answer_http(c, status, body ? body : up.reason);
        return;
    }
    c->deflate = up.deflate;
    c->pmd = up.pmd;
    if (c->deflate) {
        metric_inc(s->m_deflate_conns);
        if (s->cfg.deflate_live)
            atomic_fetch_add_explicit(s->cfg.deflate_live, 1, memory_order_relaxed);
        log_debug("permessage-deflate negotiated", "conn=%llu server_max_window_bits=%u",
                  (unsigned long long)c->id, c->pmd.server_max_window_bits);
    }
    char out[WS_HTTP_RESPONSE_MAX];
    int rn = ws_http_write_response(out, sizeof out, &up);
    wsc_frame *f = rn > 0 ? frame_raw(out, (size_t)rn) : NULL;
    if (!f || queue_push(c, f) != 0) {
        wsc_frame_unref(f);
        conn_abort(c, WS_CLOSE_ABNORMAL);
        return;
    }
    wsc_frame_unref(f);
    metric_inc(s->m_hs_ok);
    /* Bytes after the head (and after what fitted in HS_MAX) are frames already. */
    size_t extra_hs = head_len - (size_t)hl;
    uint8_t early[HS_MAX];
    memcpy(early, head + hl, extra_hs);
    free(c->hs);
    c->hs = NULL;
    c->hs_len = 0;
    conn_open(c, early, extra_hs);
    if (c->state == CS_OPEN && n > take) conn_frames(c, (uint8_t *)in + take, n - take);
}

static void conn_open(wsc_conn *c, const uint8_t *rest, size_t n)
{
    wsc_server *s = c->w->s;
    conn_state(c, CS_OPEN);
    c->opened = true;
    if (c->stream) { /* no pings: the keepalive, when the stream has been quiet */
        if (s->cfg.stream_keepalive_ms > 0 && s->cfg.stream_keepalive)
            loop_timer_set(c->w->l, &c->core_timer,
                           c->last_tx + (uint64_t)s->cfg.stream_keepalive_ms);
        else
            loop_timer_cancel(&c->core_timer);
        if (s->h.open) s->h.open(c);
        return;
    }
    if (s->cfg.ping_interval_ms > 0)
        loop_timer_set(c->w->l, &c->core_timer,
                       loop_now(c->w->l) + (uint64_t)s->cfg.ping_interval_ms);
    else
        loop_timer_cancel(&c->core_timer);
    if (s->h.open) s->h.open(c);
    if (n > 0 && c->state == CS_OPEN) {
        uint8_t copy[HS_MAX];
        memcpy(copy, rest, n);
        conn_frames(c, copy, n);
    }
}

/* A compressed message (RSV1): inflated with the worker's stream into the worker's buffer,
 * bounded by max_message, text checked as UTF-8. Returns 0 with *out / *out_len, or the
 * close code the connection must fail with and *why. */
static uint16_t conn_inflate(wsc_conn *c, bool text, const uint8_t *data, size_t len, uint8_t **out,
                             size_t *out_len, const char **why)
{
    wsc_worker *w = c->w;
    ws_frame_err err = WS_ERR_NONE;
    int rc = WS_PMD_NOMEM;
    if (w->zi_ready || ws_pmd_inflate_init(&w->zi) == 0) {
        w->zi_ready = true;
        rc = ws_pmd_inflate(&w->zi, data, len, conn_max_message(c), &w->ibuf, &w->icap, out_len);
    }
    if (rc == WS_PMD_NOMEM) {
        *why = "out of memory";
        return WS_CLOSE_INTERNAL;
    }
    if (rc == WS_PMD_TOO_BIG)
        err = WS_ERR_INFLATE_SIZE;
    else if (rc != 0)
        err = WS_ERR_INFLATE;
    else if (text && !utf8_valid(w->ibuf, *out_len))
        err = WS_ERR_UTF8;
    if (err != WS_ERR_NONE) {
        *why = ws_frame_err_str(err);
        return ws_frame_err_code(err);
    }
    *out = w->ibuf;
    return 0;
}

/* Fails the connection as the reader's WS_EV_ERROR does. */
static void conn_fail(wsc_conn *c, uint16_t code, const char *why)
{
    c->close_after_flush = true;
    c->peer_closed = true;
    if (c->state == CS_OPEN)
        conn_send_close(c, code, why);
    else
        conn_abort(c, code);
}

static void conn_frames_with(wsc_conn *c, ws_reader *r, uint8_t *in, size_t n);

/* Feeds in[0..n) to the connection's reader: its own when it was left mid-frame or
 * mid-message, else the worker's, made fresh (an idle connection keeps none: a reader is
 * ~220 bytes). Afterwards a reader at rest is dropped and one that is not is kept. */
static void conn_frames(wsc_conn *c, uint8_t *in, size_t n)
{
    wsc_worker *w = c->w;
    if (c->stream) return; /* a stream reads nothing after its request: dropped */
    ws_reader *r = c->reader;
    if (!r) {
        ws_reader_config rc = {
            .from_client = true, .max_message = conn_max_message(c), .deflate = c->deflate};
        r = &w->rest_reader;
        ws_reader_init(r, &rc, c->msg, c->msg_cap);
    }
    conn_frames_with(c, r, in, n);
    if (ws_reader_at_rest(r)) {
        if (r == c->reader) {
            free(c->reader);
            c->reader = NULL;
        }
    } else if (r != c->reader && c->state != CS_DEAD) {
        if (!(c->reader = malloc(sizeof *c->reader))) {
            conn_abort(c, WS_CLOSE_ABNORMAL);
            return;
        }
        memcpy(c->reader, r, sizeof *r);
    }
}

static void conn_frames_with(wsc_conn *c, ws_reader *r, uint8_t *in, size_t n)
{
    wsc_server *s = c->w->s;
    while (n > 0 && c->state != CS_DEAD) {
        ws_event ev;
        size_t k = ws_reader_feed(r, in, n, &ev);
        in += k;
        n -= k;
        switch (ev.type) {
        case WS_EV_NONE: return;
        case WS_EV_TEXT:
        case WS_EV_BINARY: {
            c->w->t_msgs_in++;
            uint8_t *data = (uint8_t *)ev.data;
            size_t len = ev.len;
            if (ev.compressed && c->state == CS_OPEN) {
                const char *why = NULL;
                uint16_t code = conn_inflate(c, ev.type == WS_EV_TEXT, ev.data, ev.len, &data, &len,
                                             &why);
                if (code) {
                    conn_fail(c, code, why);
                    return;
                }
            }
            if (c->state == CS_OPEN && s->h.message) {
                s->h.message(c, ev.type == WS_EV_TEXT ? WS_OP_TEXT : WS_OP_BINARY, data, len);
                /* the message may have lifted the limit (an auth message): the bytes after
                 * it in this read are held to the new one */
                ws_reader_set_max_message(r, conn_max_message(c));
            }
            if (c->w->icap > ZBUF_KEEP) { /* one big message: do not keep its buffer */
                free(c->w->ibuf);
                c->w->ibuf = NULL;
                c->w->icap = 0;
            }
            if (c->msg && ws_reader_buffered(r) == 0) { /* idle: no buffer */
                ws_reader_set_buffer(r, NULL, 0);
                free(c->msg);
                c->msg = NULL;
                c->msg_cap = 0;
            }
            break;
        }
        case WS_EV_PING:
            /* pongs count against the outbound bound too: a peer that pings and never
             * reads must not grow our memory */
            if (c->state == CS_OPEN && !conn_over_bound(c, 2 + ev.len)) {
                wsc_frame *f = wsc_frame_new(WS_OP_PONG, ev.data, ev.len);
                if (!f || queue_push(c, f) != 0) conn_abort(c, WS_CLOSE_ABNORMAL);
                wsc_frame_unref(f);
            }
            break;
        case WS_EV_PONG: break;
        case WS_EV_CLOSE:
            c->peer_closed = true;
            c->close_after_flush = true;
            if (c->state == CS_OPEN)
                conn_send_close(c, ev.code, NULL); /* echo the code (§5.5.1) */
            else if (c->q_count == 0 && !c->tpend)
                conn_flush(c); /* our close went out already: finish now */
            return;
        case WS_EV_ERROR: conn_fail(c, ev.code, ws_frame_err_str(ev.err)); return;
        case WS_EV_NEED_BUFFER: {
            /* grow geometrically: a message in many small fragments must not cost a
             * realloc per fragment (the reader never asks past max_message) */
            size_t want = c->msg_cap * 2 > ev.len ? c->msg_cap * 2 : ev.len;
            if (want > conn_max_message(c)) want = conn_max_message(c);
            if (want < ev.len) want = ev.len;
            uint8_t *nb = realloc(c->msg, want);
            if (!nb) {
                conn_abort(c, WS_CLOSE_ABNORMAL);
                return;
            }
            c->msg = nb;
            c->msg_cap = want;
            ws_reader_set_buffer(r, c->msg, c->msg_cap);
            break;
        }
        }
    }
}

static void conn_read(wsc_conn *c, uint32_t events)
{
    wsc_worker *w = c->w;
    if (c->lingering) {
        for (int i = 0; i < READS_PER_EVENT; i++) {
            ssize_t n = read(c->io.fd, w->rbuf, sizeof w->rbuf);
            if (n > 0) continue;
            if (n < 0 && errno == EINTR) continue;
            if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) conn_abort(c, c->close_code);
            return;
        }
        c->read_again = true; /* more to drop: go on at the end of the iteration */
        conn_want_flush(c);
        return;
    }
    for (int i = 0; i < READS_PER_EVENT && c->state != CS_DEAD; i++) {
        bool drained = false;
        ssize_t n = conn_recv(c, w->rbuf, sizeof w->rbuf, &drained);
        if (n > 0) {
            c->last_rx = loop_now(w->l);
            if (c->ping_out && c->state == CS_OPEN) { /* answered: next ping after silence */
                c->ping_out = false;
                loop_timer_set(w->l, &c->core_timer,
                               c->last_rx + (uint64_t)w->s->cfg.ping_interval_ms);
            }
            w->t_bytes_in += (uint64_t)n;
            if (c->state == CS_HANDSHAKE)
                conn_handshake(c, w->rbuf, (size_t)n);
            else
                conn_frames(c, w->rbuf, (size_t)n);
            /* a short read drained the socket, unless the peer's FIN came with the data:
             * edge-triggered epoll will not report it again, so read on to see it (and an
             * end TLS saw comes on the next call) */
            if (drained && !(events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && !c->tls_eof) return;
            continue;
        }
        if (n == 0) { /* the peer closed TCP (or half-closed after its close frame) */
            if (c->state == CS_CLOSING && (c->q_count > 0 || c->tpend) && c->writable)
                conn_flush(c); /* our close frame goes out before the socket does */
            if (c->state != CS_DEAD)
                conn_abort(c, c->state == CS_CLOSING ? c->close_code : WS_CLOSE_ABNORMAL);
            return;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        if (errno == EINTR) continue;
        conn_abort(c, WS_CLOSE_ABNORMAL);
        return;
    }
    /* More may be waiting: read again at the end of this iteration, after the others. */
    if (c->state != CS_DEAD) {
        c->read_again = true;
        conn_want_flush(c);
    }
}

static void conn_on_io(loop_io *io, uint32_t events)
{
    wsc_conn *c = conn_of_io(io);
    if (c->state == CS_DEAD) return;
    if (events & EPOLLOUT) {
        c->writable = true;
        if (c->q_count || c->tpend) conn_want_flush(c);
    }
    if (c->tls_hs) {
        conn_tls_handshake(c, events);
        return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP | EPOLLERR)) conn_read(c, events);
}

static void conn_core_timer(loop_timer *t)
{
    wsc_conn *c = (wsc_conn *)((char *)t - offsetof(wsc_conn, core_timer));
    wsc_server *s = c->w->s;
    uint64_t now = loop_now(c->w->l);
    switch (c->state) {
    case CS_HANDSHAKE:
        if (c->tls_hs) metric_inc(s->m_tls_timeout);
        conn_abort(c, WS_CLOSE_ABNORMAL); /* slow or silent before the upgrade */
        return;
    case CS_CLOSING: conn_abort(c, c->close_code ? c->close_code : WS_CLOSE_ABNORMAL); return;
    case CS_OPEN:
        if (c->stream) { /* quiet for stream_keepalive_ms: the keepalive bytes */
            uint64_t due = c->last_tx + (uint64_t)s->cfg.stream_keepalive_ms;
            if (now >= due) {
                wsc_frame *f = frame_raw(s->cfg.stream_keepalive, strlen(s->cfg.stream_keepalive));
                if (!f || wsc_conn_send(c, f) == -ENOMEM) {
                    wsc_frame_unref(f);
                    conn_abort(c, WS_CLOSE_ABNORMAL);
                    return;
                }
                wsc_frame_unref(f);
                due = now + (uint64_t)s->cfg.stream_keepalive_ms;
            }
            if (c->state == CS_OPEN) loop_timer_set(c->w->l, t, due);
            return;
        }
        if (c->ping_out && now >= c->ping_sent + (uint64_t)s->cfg.pong_timeout_ms) {
            conn_abort(c, WS_CLOSE_ABNORMAL); /* no pong, no traffic */
            return;
        }
        if (!c->ping_out && now >= c->last_rx + (uint64_t)s->cfg.ping_interval_ms) {
            wsc_frame *f = wsc_frame_new(WS_OP_PING, NULL, 0);
            if (!f || queue_push(c, f) != 0) {
                wsc_frame_unref(f);
                conn_abort(c, WS_CLOSE_ABNORMAL);
                return;
            }
            wsc_frame_unref(f);
            c->ping_out = true;
            c->ping_sent = now;
            loop_timer_set(c->w->l, t, now + (uint64_t)s->cfg.pong_timeout_ms);
        } else if (c->ping_out) {
            loop_timer_set(c->w->l, t, c->ping_sent + (uint64_t)s->cfg.pong_timeout_ms);
        } else {
            loop_timer_set(c->w->l, t, c->last_rx + (uint64_t)s->cfg.ping_interval_ms);
        }
        return;
    default: return;
    }
}

static void conn_app_timer(loop_timer *t)
{
    wsc_conn *c = (wsc_conn *)((char *)t - offsetof(wsc_conn, app_timer));
    if (c->state == CS_OPEN && c->w->s->h.timer) c->w->s->h.timer(c);
}

/* ---- accepting ----------------------------------------------------------------------------- */

/* Refuses fd before anything was read: in plain text an HTTP answer says why (best effort);
 * a TLS client cannot read one, so it sees the connection closed. */
static void refuse(int fd, bool tls, int status, const char *body)
{
    char out[WS_HTTP_RESPONSE_MAX];
    int n = tls ? 0 : ws_http_write_error(out, sizeof out, status, body);
    if (n > 0 && write(fd, out, (size_t)n) < 0) { /* best effort */
    }
    close(fd);
}

static void worker_accept(wsc_worker *w, loop_io *io, bool tls)
{
    wsc_server *s = w->s;
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(io->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                log_warn("accept failed", "worker=%d errno=%d", w->index, errno);
            return;
        }
        if (atomic_load(&s->nconns) >= s->cfg.max_connections) {
            metric_inc(s->m_rejected_full); /* counted first: whoever sees the answer sees it */
            refuse(fd, tls, 503, s->full_body);
            continue;
        }
        uint8_t ipkey[16];
        bool counted = false;
        if (s->per_ip && iplimit_key((struct sockaddr *)&ss, ipkey) == 0) {
            if (!iplimit_acquire(s->per_ip, ipkey)) {
                metric_inc(s->m_rejected_ip); /* counted first: whoever sees the answer sees it */
                refuse(fd, tls, 429, "too many connections from this address");
                continue;
            }
            counted = true;
        }
        wsc_conn *c = calloc(1, sizeof *c);
        if (!c) {
            if (counted) iplimit_release(s->per_ip, ipkey);
            close(fd);
            continue;
        }
        if (counted) {
            c->ip_counted = true;
            memcpy(c->ipkey, ipkey, sizeof ipkey);
        }
        /* Linux gives accepted sockets the listener's TCP_NODELAY (worker_listen sets it):
         * checked on the first one, then one system call less per connection */
        if (w->nodelay != 1) {
            int one = 1, nd = 0;
            socklen_t ndl = sizeof nd;
            if (w->nodelay == 0)
                w->nodelay = getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nd, &ndl) == 0 && nd ? 1
                                                                                            : -1;
            if (w->nodelay < 0) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        c->io.fd = fd;
        c->io.fn = conn_on_io;
        c->w = w;
        c->id = atomic_fetch_add(&s->next_id, 1) + 1;
        c->writable = true;
        c->q = c->q_inline;
        c->q_cap = INLINE_Q;
        c->core_timer.fn = conn_core_timer;
        c->app_timer.fn = conn_app_timer;
        c->last_rx = loop_now(w->l);
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            char ip[INET_ADDRSTRLEN];
            inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
            snprintf(c->peer, sizeof c->peer, "%s:%u", ip, ntohs(a->sin_port));
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            char ip[INET6_ADDRSTRLEN];
            inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
            snprintf(c->peer, sizeof c->peer, "[%s]:%u", ip, ntohs(a->sin6_port));
        }
        if (tls) {
            c->ssl = tlsctx_new_ssl(s->cfg.tls, fd);
            c->tls_hs = true;
            if (c->ssl) SSL_set_accept_state(c->ssl);
        }
        if ((tls && !c->ssl) || loop_add(w->l, &c->io, EPOLLIN | EPOLLOUT | EPOLLRDHUP) != 0) {
            if (c->ip_counted) iplimit_release(s->per_ip, c->ipkey);
            SSL_free(c->ssl);
            close(fd);
            free(c);
            continue;
        }
        c->next = w->conns;
        if (w->conns) w->conns->prev = c;
        w->conns = c;
        w->nconns++;
        atomic_fetch_add(&s->nconns, 1);
        metric_inc(s->m_conns);
        metric_inc(s->m_accepted);
        loop_timer_set(w->l, &c->core_timer,
                       loop_now(w->l) + (uint64_t)(tls ? s->cfg.tls_handshake_timeout_ms
                                                       : s->cfg.handshake_timeout_ms));
    }
}

static void worker_accept_plain(loop_io *io, uint32_t events)
{
    (void)events;
    worker_accept((wsc_worker *)((char *)io - offsetof(wsc_worker, listen_io)), io, false);
}

static void worker_accept_tls(loop_io *io, uint32_t events)
{
    (void)events;
    worker_accept((wsc_worker *)((char *)io - offsetof(wsc_worker, tls_listen_io)), io, true);
}

/* ---- worker thread ------------------------------------------------------------------------- */

/* Closes a share of the connections that grows with the time spent draining, so that all
 * are closed by drain_end and their reconnects are spread over the window. */
static void worker_drain_step(wsc_worker *w)
{
    uint64_t now = loop_now(w->l);
    int target = w->drain_total;
    if (now < w->drain_end && w->drain_end > w->drain_start)
        target = (int)((double)w->drain_total * (double)(now - w->drain_start) /
                       (double)(w->drain_end - w->drain_start)) +
                 1;
    for (wsc_conn *c = w->conns; c && w->drain_closed < target; c = c->next) {
        if (c->state == CS_OPEN) {
            wsc_conn_close(c, WS_CLOSE_GOING_AWAY, w->s->draining_reason);
            w->drain_closed++;
        } else if (c->state == CS_HANDSHAKE) {
            conn_abort(c, WS_CLOSE_GOING_AWAY);
        }
    }
}

static void worker_before_sleep(void *ud)
{
    wsc_worker *w = ud;
    wsc_server *s = w->s;
    int drain_ms = atomic_load(&s->drain_ms);
    if (drain_ms > 0 && !w->draining) {
        w->draining = true;
        loop_io *ls[2] = {&w->listen_io, &w->tls_listen_io};
        for (int i = 0; i < 2; i++) {
            if (ls[i]->fd < 0) continue;
            loop_del(w->l, ls[i]);
            close(ls[i]->fd);
            ls[i]->fd = -1;
        }
        w->drain_start = loop_now(w->l);
        w->drain_end = w->drain_start + (uint64_t)drain_ms;
        w->drain_total = 0;
        for (wsc_conn *c = w->conns; c; c = c->next) w->drain_total += c->state == CS_OPEN;
    }
    if (w->draining) worker_drain_step(w);
    if (w->tls_untrimmed >= TRIM_AFTER && loop_now(w->l) >= w->tls_last_hs + TRIM_QUIET_MS) {
        malloc_trim(0); /* once the burst is over: what it freed goes back to the system */
        w->tls_untrimmed = 0;
    }
    if (w->before_sleep) w->before_sleep(w);
    /* write_delay_ms: only events were queued since the last flush, and the first of them
     * less than the delay ago: hold the flush (the loop wakes by then). Draining or
     * stopping never waits. */
    bool hold = w->hold_until && !w->urgent && !w->draining && !atomic_load(&s->stop) &&
                loop_now(w->l) < w->hold_until && (!w->behind || s->cfg.write_delay_ms > 0);
    if (hold) {
        loop_wake_by(w->l, w->hold_until);
        w->passes_held++;
    } else {
        w->hold_until = 0;
        w->urgent = false;
        w->busy_checked = w->behind = false;
    }
    /* Flush (and read again) what this iteration touched; the list may grow while walked
     * (a read queues an answer), so take it whole each round, bounded. */
    uint64_t pass_start = !hold && w->flush_list && s->cfg.busy_hold_max_ms > 0
                              ? clock_us(CLOCK_THREAD_CPUTIME_ID)
                              : 0;
    uint64_t writes_before = w->t_writes;
    uint64_t wall_start = pass_start ? mono_us() : 0;
    for (int round = 0; !hold && round < 4 && w->flush_list; round++) {
        if (round > 0 && w->before_sleep) w->before_sleep(w); /* what the reads below added */
        wsc_conn *list = w->flush_list;
        w->flush_list = NULL;
        while (list) {
            wsc_conn *c = list;
            list = c->next_pending;
            assert(c->list == CL_FLUSH);
            c->list = CL_NONE;
            if (c->state == CS_DEAD) {
                c->list = CL_FREE;
                c->next_pending = w->free_list;
                w->free_list = c;
                continue;
            }
            if (c->read_again) {
                c->read_again = false;
                conn_read(c, 0);
                if (c->state == CS_DEAD) continue;
            }
            if (((c->q_count && !c->corked) || c->tpend || rec_update_due(c)) && c->writable)
                conn_flush(c);
        }
    }
    while (w->free_list) {
        wsc_conn *c = w->free_list;
        w->free_list = c->next_pending;
        assert(c->list == CL_FREE && c->state == CS_DEAD);
        conn_free(c);
    }
    if (pass_start && w->t_writes != writes_before) { /* a pass that wrote: the busy rule's */
        uint64_t now = mono_us();
        w->pass_us = clock_us(CLOCK_THREAD_CPUTIME_ID) - pass_start;
        w->pass_wall_us = now - wall_start;
        w->period_us = w->pass_end_us ? now - w->pass_end_us : 0;
        w->pass_end_us = now;
        uint64_t f16 = (uint64_t)w->frames_queued * 16 / (w->t_writes - writes_before);
        w->frames16 = f16 < UINT32_MAX ? (uint32_t)f16 : UINT32_MAX;
        w->frames_queued = 0;
    }
    worker_release_flush(w);
    worker_tally(w);
    worker_rings_trim(w, false);
}

static void *worker_main(void *arg)
{
    wsc_worker *w = arg;
    wsc_server *s = w->s;
    while (!atomic_load(&s->stop)) {
        if (loop_run_once(w->l) != 0) break;
    }
    for (wsc_conn *c = w->conns; c; c = c->next) conn_abort(c, WS_CLOSE_GOING_AWAY);
    worker_before_sleep(w); /* frees them, calling the closed handler */
    if (s->h.worker_stop) s->h.worker_stop(w, s->h.ud);
    if (w->zd_ready) deflateEnd(&w->zd);
    if (w->zi_ready) inflateEnd(&w->zi);
    w->zd_ready = w->zi_ready = false;
    free(w->zbuf);
    free(w->ibuf);
    w->zbuf = w->ibuf = NULL;
    worker_rings_trim(w, true);
    return NULL;
}

static int worker_listen(loop_io *io, loop_io_fn fn, const struct sockaddr_storage *ss,
                         unsigned sslen)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* inherited: worker_accept */
    if (bind(fd, (const struct sockaddr *)ss, sslen) != 0 || listen(fd, 4096) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    io->fd = fd;
    io->fn = fn;
    return 0;
}

/* Start-up of one worker on its own thread: the app's worker_start, then accepting. */
static void *worker_boot(void *arg)
{
    wsc_worker *w = arg;
    wsc_server *s = w->s;
    w->start_rc = s->h.worker_start ? s->h.worker_start(w, s->h.ud) : 0;
    if (w->start_rc == 0) {
        if (w->listen_io.fd >= 0) w->start_rc = loop_add(w->l, &w->listen_io, EPOLLIN);
        if (w->start_rc == 0 && w->tls_listen_io.fd >= 0)
            w->start_rc = loop_add(w->l, &w->tls_listen_io, EPOLLIN);
        if (w->start_rc != 0 && s->h.worker_stop) s->h.worker_stop(w, s->h.ud);
    }
    int rc = w->start_rc;
    sem_post(&w->started);
    if (rc != 0) return NULL; /* wsc_server_start sees it and stops the server */
    return worker_main(w);
}

enum server_metric_kind { M_COUNTER, M_GAUGE };

/* "<prefix>_<suffix>": the application names the families (the edge: sc_edge_...). */
static metric *server_metric(enum server_metric_kind kind, const char *prefix, const char *suffix,
                             const char *labels, const char *help)
{
    char name[128];
    snprintf(name, sizeof name, "%s_%s", prefix, suffix);
    return kind == M_GAUGE ? metrics_gauge(name, labels, help)
                           : metrics_counter(name, labels, help);
}

/* The port a listener got, and the address the next workers bind (port 0: the same). */
static int bound_port(int fd, struct sockaddr_storage *ss)
{
    struct sockaddr_storage got;
    socklen_t gl = sizeof got;
    getsockname(fd, (struct sockaddr *)&got, &gl);
    int port = ntohs(got.ss_family == AF_INET ? ((struct sockaddr_in *)&got)->sin_port
                                              : ((struct sockaddr_in6 *)&got)->sin6_port);
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
    return port;
}

int wsc_server_start(wsc_server **out, const wsc_config *cfg, const wsc_handlers *h)
{
    struct sockaddr_storage ss, tss;
    unsigned sslen = 0, tsslen = 0;
    int rc;
    const char *sname = cfg->name ? cfg->name : "ws";
    bool plain = cfg->listen && cfg->listen[0], tls = cfg->tls_listen && cfg->tls_listen[0];
    if (cfg->workers < 1 || cfg->workers > 64 || (!plain && !tls) || (tls && !cfg->tls))
        return -EINVAL;
    if (plain && cfg_resolve_addr(cfg->listen, &ss, &sslen) != 0) {
        log_error("listen address invalid", "server=%s listen=%s", sname, cfg->listen);
        return -EINVAL;
    }
    if (tls && cfg_resolve_addr(cfg->tls_listen, &tss, &tsslen) != 0) {
        log_error("listen address invalid", "server=%s listen=%s", sname, cfg->tls_listen);
        return -EINVAL;
    }
    wsc_server *s = calloc(1, sizeof *s);
    if (!s) return -ENOMEM;
    s->cfg = *cfg;
    s->h = *h;
    if (!s->cfg.name) s->cfg.name = "ws";
    if (!s->cfg.metric_prefix) s->cfg.metric_prefix = "ws";
    if (!s->cfg.slow_close_code) s->cfg.slow_close_code = WS_CLOSE_POLICY;
    snprintf(s->draining_reason, sizeof s->draining_reason, "%s draining", s->cfg.name);
    snprintf(s->draining_body, sizeof s->draining_body, "draining: connect to another %s",
             s->cfg.name);
    snprintf(s->full_body, sizeof s->full_body, "%s full: too many connections", s->cfg.name);
    const char *p = s->cfg.metric_prefix;
    s->m_conns = server_metric(M_GAUGE, p, "connections", NULL, "open WebSocket connections");
    s->m_accepted = server_metric(M_COUNTER, p, "accepted_total", NULL, "TCP connections accepted");
    s->m_rejected_full = server_metric(M_COUNTER, p, "rejected_total", "reason=\"full\"",
                                       "connections refused before the handshake");
    s->m_rejected_ip = server_metric(M_COUNTER, p, "rejected_total", "reason=\"per_ip\"",
                                     "connections refused before the handshake");
    if (cfg->max_per_ip > 0 &&
        iplimit_create(&s->per_ip, (uint32_t)cfg->max_per_ip,
                       (uint32_t)(cfg->max_connections > 0 ? cfg->max_connections : 1)) != 0) {
        free(s);
        return -ENOMEM;
    }
    s->m_hs_ok = server_metric(M_COUNTER, p, "handshakes_total", "result=\"ok\"",
                               "WebSocket handshakes by result");
    s->m_hs_fail = server_metric(M_COUNTER, p, "handshakes_total", "result=\"refused\"",
                                 "WebSocket handshakes by result");
    s->m_msgs_in = server_metric(M_COUNTER, p, "messages_in_total", NULL, "messages received");
    s->m_bytes_in = server_metric(M_COUNTER, p, "bytes_in_total", NULL, "bytes received");
    s->m_frames_out = server_metric(M_COUNTER, p, "frames_out_total", NULL, "frames queued");
    s->m_bytes_out = server_metric(M_COUNTER, p, "bytes_out_total", NULL, "bytes written");
    s->m_writes = server_metric(M_COUNTER, p, "writes_total", NULL,
                                "write system calls (each carries every frame queued for its "
                                "connection)");
    s->m_busy_holds = server_metric(M_COUNTER, p, "busy_holds_total", NULL,
                                    "loop turns whose writes waited because the worker was busy "
                                    "(a backlog of events; an idle worker writes at once)");
    s->m_slow = server_metric(M_COUNTER, p, "slow_closes_total", NULL,
                              "connections closed because their outbound queue passed its bound");
    s->m_aborts = server_metric(M_COUNTER, p, "aborts_total", NULL,
                                "connections ended without a closing handshake");
    s->m_deflate_conns = server_metric(M_COUNTER, p, "deflate_connections_total", NULL,
                                       "connections that negotiated permessage-deflate");
    if (tls) {
        static const char hs_help[] = "TLS handshakes by result";
        s->m_tls_full = server_metric(M_COUNTER, p, "tls_handshakes_total", "result=\"full\"",
                                      hs_help);
        s->m_tls_resumed = server_metric(M_COUNTER, p, "tls_handshakes_total", "result=\"resumed\"",
                                         hs_help);
        s->m_tls_failed = server_metric(M_COUNTER, p, "tls_handshakes_total", "result=\"failed\"",
                                        hs_help);
        s->m_tls_timeout = server_metric(M_COUNTER, p, "tls_handshakes_total", "result=\"timeout\"",
                                         hs_help);
        static const char kt_help[] =
            "TLS connections by who seals their sends: kernel (kTLS) or user (the edge's tlsrec)";
        s->m_ktls_kernel = server_metric(M_COUNTER, p, "tls_ktls_total", "result=\"kernel\"",
                                         kt_help);
        s->m_ktls_user = server_metric(M_COUNTER, p, "tls_ktls_total", "result=\"user\"", kt_help);
    }
    s->workers = calloc((size_t)cfg->workers, sizeof *s->workers);
    if (!s->workers) {
        iplimit_destroy(s->per_ip);
        free(s);
        return -ENOMEM;
    }
    for (int i = 0; i < cfg->workers; i++) {
        wsc_worker *w = calloc(1, sizeof *w);
        if (!w) {
            rc = -ENOMEM;
            goto error;
        }
        s->workers[i] = w;
        w->s = s;
        w->index = i;
        w->listen_io.fd = -1;
        w->tls_listen_io.fd = -1;
        sem_init(&w->started, 0, 0);
        if (tls && !(w->cx = EVP_CIPHER_CTX_new())) {
            rc = -ENOMEM;
            goto error;
        }
        if ((rc = loop_create(&w->l)) != 0) goto error;
        loop_set_before_sleep(w->l, worker_before_sleep, w);
        if (plain && (rc = worker_listen(&w->listen_io, worker_accept_plain, &ss, sslen)) != 0) {
            log_error("cannot listen", "server=%s listen=%s error=\"%s\"", s->cfg.name, cfg->listen,
                      strerror(-rc));
            goto error;
        }
        if (tls && (rc = worker_listen(&w->tls_listen_io, worker_accept_tls, &tss, tsslen)) != 0) {
            log_error("cannot listen", "server=%s listen=%s error=\"%s\"", s->cfg.name,
                      cfg->tls_listen, strerror(-rc));
            goto error;
        }
        if (i == 0) { /* port 0: every worker binds the port the first one got */
            if (plain) s->port = bound_port(w->listen_io.fd, &ss);
            if (tls) s->tls_port = bound_port(w->tls_listen_io.fd, &tss);
        }
        s->nworkers = i + 1;
    }
    rc = 0;
    for (int i = 0; i < s->nworkers; i++) {
        wsc_worker *w = s->workers[i];
        int e = pthread_create(&w->thread, NULL, worker_boot, w);
        if (e != 0) {
            w->thread = 0;
            rc = -e;
            break;
        }
        char name[24]; /* named for top -H, perf and gdb (15 bytes kept) */
        snprintf(name, sizeof name, "%s-w%d", s->cfg.name, i);
        name[15] = '\0'; /* the kernel's limit */
        pthread_setname_np(w->thread, name);
        sem_wait(&w->started);
        if (w->start_rc != 0) {
            rc = w->start_rc;
            break;
        }
    }
    if (rc != 0) { /* the threads already running are stopped and joined */
        log_error("workers did not start", "server=%s error=%d", s->cfg.name, rc);
        wsc_server_stop(s);
        return rc;
    }
    *out = s;
    return 0;
error:
    for (int i = 0; i < cfg->workers; i++) {
        wsc_worker *w = s->workers[i];
        if (!w) continue;
        if (w->listen_io.fd >= 0) close(w->listen_io.fd);
        if (w->tls_listen_io.fd >= 0) close(w->tls_listen_io.fd);
        EVP_CIPHER_CTX_free(w->cx);
        loop_destroy(w->l);
        sem_destroy(&w->started);
        free(w);
    }
    free(s->workers);
    iplimit_destroy(s->per_ip);
    free(s);
    return rc;
}

int wsc_server_port(const wsc_server *s) { return s->port; }
int wsc_server_tls_port(const wsc_server *s) { return s->tls_port; }
int wsc_server_connections(const wsc_server *s) { return atomic_load(&((wsc_server *)s)->nconns); }

void wsc_server_drain(wsc_server *s, int timeout_ms)
{
    int expected = 0;
    atomic_compare_exchange_strong(&s->drain_ms, &expected, timeout_ms > 0 ? timeout_ms : 1);
    for (int i = 0; i < s->nworkers; i++) loop_wake(s->workers[i]->l);
}

void wsc_server_stop(wsc_server *s)
{
    if (!s) return;
    atomic_store(&s->stop, 1);
    for (int i = 0; i < s->nworkers; i++) {
        wsc_worker *w = s->workers[i];
        if (w->thread) {
            loop_wake(w->l);
            pthread_join(w->thread, NULL);
        }
    }
    for (int i = 0; i < s->nworkers; i++) {
        wsc_worker *w = s->workers[i];
        if (w->listen_io.fd >= 0) close(w->listen_io.fd);
        if (w->tls_listen_io.fd >= 0) close(w->tls_listen_io.fd);
        EVP_CIPHER_CTX_free(w->cx);
        loop_destroy(w->l);
        sem_destroy(&w->started);
        free(w);
    }
    free(s->workers);
    iplimit_destroy(s->per_ip);
    free(s);
}

/* ---- worker accessors ---------------------------------------------------------------------- */

int wsc_worker_index(const wsc_worker *w) { return w->index; }
loop *wsc_worker_loop(wsc_worker *w) { return w->l; }
void *wsc_worker_data(const wsc_worker *w) { return w->data; }
void wsc_worker_set_data(wsc_worker *w, void *data) { w->data = data; }
void wsc_worker_set_before_sleep(wsc_worker *w, void (*fn)(wsc_worker *)) { w->before_sleep = fn; }
