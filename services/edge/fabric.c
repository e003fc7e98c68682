/* fabric.c - NATS -> (frame once) -> per-worker mailboxes -> workers; see fabric.h.
 *
 * Each name with interest anywhere in the process has one NATS subscription whose closure is
 * a route: the kind and name, a bit mask of the ports (workers) that want it, and a reference
 * count (the subscription holds one, every queued message one). The NATS callback frames the
 * event once, wraps it as one wsc_frame and pushes a reference into the mailbox of each port
 * whose bit is set: a bounded ring under the port's mutex plus an eventfd, written only when
 * the ring goes from empty to not empty. The worker takes the ring's contents in batches.
 *
 * This replaced a ZeroMQ inproc PUB/SUB fabric: bench/zmqhop measured the mailbox at about
 * half the CPU per event and a third of the latency (docs/ARCHITECTURE.md, "The fabric"). */
#include "fabric.h"

#include "contract.h"
#include "log.h"
#include "mailbox.h"
#include "metrics.h"
#include "proto/msg.h"
#include "ws/ws_deflate.h"
#include "ws/ws_frame.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#define FAB_BUCKETS_MIN 1024 /* interest table: a power of two, doubled at one per bucket */
#define FAB_HWM 100000       /* messages queued per worker before the fabric drops (counted) */
#define FAB_BATCH 256        /* messages a worker takes from its mailbox per lock */
#define FAB_PORTS 64         /* ports (workers) per process: a bit each in a route's mask */
#define FAB_NAME_MAX 255     /* bytes of a topic or user name */

/* The closure of one NATS subscription. Freed at the last reference: the subscription's,
 * dropped once nats.c can no longer call back, or a queued message's. */
typedef struct route {
    fabric *f;
    enum fab_kind kind;
    _Atomic uint64_t ports; /* bit i: port i has local interest */
    _Atomic uint32_t refs;
    char name[]; /* sized to the name: one per user inbox adds up */
} route;

static route *route_ref(route *r)
{
    atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
    return r;
}

static void route_unref(void *ud)
{
    route *r = ud;
    if (r && atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) == 1) free(r);
}

/* One NATS subscription per name with interest anywhere in the process. The subscription
 * is made by the settler thread (pending until then), in a batch with the others of its
 * round, so a burst of new names costs the workers neither nats.c's connection lock nor the
 * fabric's held across a subscribe. */
typedef struct interest {
    struct interest *next;
    unsigned long hash; /* fab_hash(key) */
    int refs;           /* ports interested */
    uint64_t seq;       /* its subscription's number (fabric.sub_seq): live once a flush that
                         * started after it came back (seq <= fabric.live_seq) */
    bool pending;       /* the settler has not made its subscription yet (on fabric.pending, or
                         * in the settler's hands) */
    bool dropped;       /* the last port left while it was pending: out of the table, and the
                         * settler frees it */
    struct interest *next_pending;
    bus_sub *sub; /* NULL while pending */
    route *r;     /* the subscription's closure (one reference) */
    char key[];   /* "<kind> <name>\n" */
} interest;

/* A queued message. */
typedef struct fab_slot {
    enum fab_kind kind;
    route *r;         /* FAB_EVENT, FAB_USER: a reference */
    wsc_frame *frame; /* FAB_EVENT, FAB_USER: a reference */
    char *data;       /* FAB_REVOKED: malloc'd */
    uint64_t seq, prev;
    uint64_t put_us; /* FAB_EVENT, FAB_USER: when it was queued (fab_msg.queued_us) */
} fab_slot;

struct fabric {
    bus *b;
    pthread_rwlock_t ports_lock; /* ports[]: written by open/close, read by every push */
    fab_port *ports[FAB_PORTS];
    int nports;           /* indices handed out (never reused) */
    pthread_mutex_t lock; /* interests */
    interest **buckets;   /* nbuckets chains of interests, by fab_hash of the key */
    void (*interest_fn)(void *ud, const char *topic, bool on); /* occupancy (presence) */
    void *interest_ud;
    size_t nbuckets, ninterests;
    size_t nevents, nusers; /* interests by kind (fab_counts), under lock */
    size_t max_data;
    bus_sub *revoked;
    /* permessage-deflate: one stream for the process, reset per event (no context takeover) */
    bool deflate;
    size_t deflate_min;
    atomic_int deflate_live; /* fab_deflate_live */
    pthread_mutex_t zlock;   /* zd: nats.c may call from several threads */
    z_stream zd;
    bool zd_ready;
    _Atomic uint64_t drops; /* every m_dropped, for fab_disruptions */
    metric *m_in, *m_dropped, *m_topics, *m_deflated, *m_deflate_bytes_in, *m_deflate_bytes_out;
    metric *m_wakeups, *m_settle_ok, *m_settle_failed;
    /* Settling: subscriptions are numbered as they are made (sub_seq, under lock); the
     * settler thread confirms them with one flush (PING/PONG) for every port that asked
     * (want, a bit each, under slock) and raises live_seq (under lock) to the number it read
     * before a flush that succeeded. */
    uint64_t sub_seq, live_seq;
    interest *pending; /* under lock: interests whose subscription the settler makes */
    pthread_mutex_t slock;
    pthread_cond_t scond;
    uint64_t want;
    bool sstop, settler_started;
    pthread_t settler;
};

/* A worker's mailbox (mailbox.h) and what the worker took from it: the batch, the held
 * route and want_seq/asked_seq belong to the worker; settled_seq and live_seq are written by
 * the settler. */
struct fab_port {
    fabric *f;
    int idx;
    mbox mb; /* fab_slot elements */
    fab_slot batch[FAB_BATCH];
    uint32_t bn, bi;
    route *held;                  /* the route of the message last returned */
    uint64_t want_seq, asked_seq; /* worker: highest number it waits for / asked for */
    _Atomic uint64_t settled_seq; /* settler: flushes up to this number came back */
    _Atomic uint64_t live_seq;    /* settler: ... and up to this one succeeded */
};

static unsigned long fab_hash(const char *s)
{
    unsigned long h = 5381;
    while (*s) h = h * 33 + (unsigned char)*s++;
    h ^= h >> 31; /* the table takes the low bits: mix the high ones in */
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 29);
}

/* The link that points to key's interest (hash h), or to the end of its chain when there is
 * none (*link == NULL: where a new one goes). Under f->lock. */
static interest **interest_find(fabric *f, const char *key, size_t kl, unsigned long h)
{
    interest **pp = &f->buckets[h & (f->nbuckets - 1)];
    while (*pp && ((*pp)->hash != h || strncmp((*pp)->key, key, kl) != 0)) pp = &(*pp)->next;
    return pp;
}

/* Doubles the table when it holds more interests than buckets, so that a chain stays about
 * one long with tens of thousands of users' inboxes. Under f->lock; a failed allocation
 * leaves the table as it was (longer chains, nothing lost). */
static void interests_grow(fabric *f)
{
    if (f->ninterests <= f->nbuckets) return;
    size_t n = f->nbuckets * 2;
    interest **nb = calloc(n, sizeof *nb);
    if (!nb) return;
    for (size_t i = 0; i < f->nbuckets; i++) {
        for (interest *it = f->buckets[i], *next; it; it = next) {
            next = it->next;
            it->next = nb[it->hash & (n - 1)];
            nb[it->hash & (n - 1)] = it;
        }
    }
    free(f->buckets);
    f->buckets = nb;
    f->nbuckets = n;
}

static void slot_release(fab_slot *s)
{
    wsc_frame_unref(s->frame);
    route_unref(s->r);
    free(s->data);
}

static void fab_count_drop(fabric *f)
{
    atomic_fetch_add(&f->drops, 1);
    metric_inc(f->m_dropped);
}

uint64_t fab_disruptions(fabric *f) { return atomic_load(&f->drops) + bus_disruptions(f->b); }

/* ---- NATS side (nats.c threads) ----------------------------------------------------------- */

/* Queues s on p (taking over its references), or drops it when the mailbox is full. */
static void port_push(fab_port *p, fab_slot *s)
{
    int rc = mbox_put(&p->mb, s);
    if (rc < 0) {
        fab_count_drop(p->f);
        slot_release(s);
    } else if (rc == 1) {
        metric_inc(p->f->m_wakeups);
    }
}

/* Pushes one reference to frame (and to r) to every port in mask. */
static void fab_fan_out(fabric *f, uint64_t mask, enum fab_kind kind, route *r, wsc_frame *frame,
                        uint64_t seq, uint64_t prev)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now_us = (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
    pthread_rwlock_rdlock(&f->ports_lock);
    for (int i = 0; mask && i < FAB_PORTS; i++, mask >>= 1) {
        if (!(mask & 1) || !f->ports[i]) continue;
        fab_slot s = {.kind = kind,
                      .r = route_ref(r),
                      .frame = wsc_frame_ref(frame),
                      .seq = seq,
                      .prev = prev,
                      .put_us = now_us};
        port_push(f->ports[i], &s);
    }
    pthread_rwlock_unlock(&f->ports_lock);
}

/* Sends a revocation or a resync notice to every port. data: JSON text or NULL. */
static void fab_broadcast(fabric *f, enum fab_kind kind, const char *data, size_t n)
{
    pthread_rwlock_rdlock(&f->ports_lock);
    for (int i = 0; i < f->nports; i++) {
        if (!f->ports[i]) continue;
        fab_slot s = {.kind = kind};
        if (data) {
            if (!(s.data = malloc(n + 1))) {
                fab_count_drop(f);
                continue;
            }
            memcpy(s.data, data, n);
            s.data[n] = '\0';
        }
        port_push(f->ports[i], &s);
    }
    pthread_rwlock_unlock(&f->ports_lock);
}

/* The compressed twin of an event frame whose payload is p[0..n): a complete frame with RSV1
 * in one malloc'd block (*zn bytes), or NULL when compression does not pay (payload under
 * deflate_min, or the result not smaller) or failed. Any nats.c thread. */
static uint8_t *fab_deflate(fabric *f, const uint8_t *p, size_t n, size_t *zn)
{
    if (!f->deflate || n < f->deflate_min || n == 0) return NULL;
    uint8_t *buf = malloc(WS_FRAME_HEADER_MAX + n + 3); /* + 3: room for the flush tail */
    if (!buf) return NULL;
    long len = -1;
    pthread_mutex_lock(&f->zlock);
    if (f->zd_ready || ws_pmd_deflate_init(&f->zd) == 0) {
        f->zd_ready = true;
        len = ws_pmd_compress(&f->zd, p, n, buf + WS_FRAME_HEADER_MAX, n + 3);
    }
    pthread_mutex_unlock(&f->zlock);
    if (len < 0) {
        free(buf);
        return NULL;
    }
    uint8_t hdr[WS_FRAME_HEADER_MAX];
    size_t hl = ws_frame_header_encode(hdr, WS_OP_TEXT, true, WS_PMD_RSV1, (uint64_t)len, NULL);
    memmove(buf + hl, buf + WS_FRAME_HEADER_MAX, (size_t)len);
    memcpy(buf, hdr, hl);
    *zn = hl + (size_t)len;
    metric_inc(f->m_deflated);
    metric_add(f->m_deflate_bytes_in, (long long)n);
    metric_add(f->m_deflate_bytes_out, (long long)len);
    return buf;
}

/* Builds a complete text frame holding {"type":"event","topic":..,"seq":..,"data":..} in one
 * malloc'd block (*n bytes). Data that is not JSON is carried as a JSON string. */
static uint8_t *fab_build(const char *topic, uint64_t seq, const char *data, size_t dlen, size_t *n,
                          size_t *hlen)
{
    char *quoted = NULL;
    uint8_t *buf = NULL;
    if (!msg_json_valid(data, dlen)) {
        size_t ql = msg_json_string_len(data, dlen) + 1;
        if (!(quoted = malloc(ql)) || msg_json_string(quoted, ql, data, dlen) < 0) goto done;
        data = quoted;
        dlen = strlen(quoted);
    }
    size_t cap = msg_event_size(strlen(topic), dlen);
    uint8_t hdr[WS_FRAME_HEADER_MAX];
    if (!(buf = malloc(WS_FRAME_HEADER_MAX + cap))) goto done;
    int len = msg_event_build((char *)buf + WS_FRAME_HEADER_MAX, cap, topic, seq, data, dlen);
    if (len < 0) {
        free(buf);
        buf = NULL;
        goto done;
    }
    size_t hl = ws_frame_header_encode(hdr, WS_OP_TEXT, true, 0, (uint64_t)len, NULL);
    /* the header goes right before the payload so the frame is one contiguous block */
    memmove(buf + hl, buf + WS_FRAME_HEADER_MAX, (size_t)len);
    memcpy(buf, hdr, hl);
    *n = hl + (size_t)len;
    *hlen = hl;
done:
    free(quoted);
    return buf;
}

wsc_frame *fab_frame_event(const char *topic, uint64_t seq, const char *data, size_t len)
{
    size_t n = 0, hl = 0;
    uint8_t *buf = fab_build(topic, seq, data, len, &n, &hl);
    if (!buf) return NULL;
    wsc_frame *f = wsc_frame_wrap(buf, n, free, buf);
    if (!f) free(buf);
    return f;
}

/* Frames an event once, on the NATS thread, for every worker that wants it. */
static void fab_on_event(bus_msg *msg, void *ud)
{
    route *r = ud;
    fabric *f = r->f;
    size_t dlen = bus_msg_len(msg);
    uint64_t mask = atomic_load_explicit(&r->ports, memory_order_acquire);
    metric_inc(f->m_in);
    if (!mask) {
        /* every local subscriber left since: nobody to frame it for */
    } else if (dlen > f->max_data) {
        fab_count_drop(f);
        log_warn("bus message over the size limit dropped", "subject=%s bytes=%zu",
                 bus_msg_subject(msg), dlen);
    } else {
        const char *seqs = bus_msg_header(msg, "Nats-Sequence");
        const char *prevs = bus_msg_header(msg, "Nats-Last-Sequence");
        uint64_t seq = seqs ? strtoull(seqs, NULL, 10) : 0;
        uint64_t prev = prevs ? strtoull(prevs, NULL, 10) : 0;
        size_t n = 0, hl = 0, zn = 0;
        uint8_t *buf = fab_build(r->kind == FAB_USER ? "user" : r->name, seq, bus_msg_data(msg),
                                 dlen, &n, &hl);
        wsc_frame *frame = buf ? wsc_frame_wrap(buf, n, free, buf) : NULL;
        if (buf && !frame) free(buf);
        /* compressed ahead only while some client negotiated permessage-deflate; otherwise
         * left unconsidered, so a client that negotiates it meanwhile has it compressed by
         * its worker */
        if (frame && atomic_load_explicit(&f->deflate_live, memory_order_relaxed) > 0) {
            uint8_t *zbuf = fab_deflate(f, buf + hl, n - hl, &zn);
            wsc_frame *zf = zbuf ? wsc_frame_wrap(zbuf, zn, free, zbuf) : NULL;
            if (zbuf && !zf) free(zbuf);
            /* compressed once, or not worth it: never again per connection */
            wsc_frame_set_deflated(frame, zf);
        }
        if (frame) {
            fab_fan_out(f, mask, r->kind, r, frame, seq, prev);
            wsc_frame_unref(frame);
        } else {
            fab_count_drop(f);
        }
    }
    bus_msg_destroy(msg);
}

static void fab_on_revoked(bus_msg *msg, void *ud)
{
    fabric *f = ud;
    size_t n = bus_msg_len(msg);
    if (n <= 4096) fab_broadcast(f, FAB_REVOKED, bus_msg_data(msg), n);
    bus_msg_destroy(msg);
}

/* ---- set-up ------------------------------------------------------------------------------- */

static void *settler_main(void *arg);

/* After a NATS reconnection (nats.c thread): every worker should look for gaps. */
static void fab_on_reconnect(void *ud) { fab_broadcast(ud, FAB_RESYNC, NULL, 0); }

atomic_int *fab_deflate_live(fabric *f) { return &f->deflate_live; }

int fab_create(fabric **out, bus *b, size_t max_data, bool deflate, size_t deflate_min)
{
    fabric *f = calloc(1, sizeof *f);
    if (!f) return -ENOMEM;
    if (!(f->buckets = calloc(FAB_BUCKETS_MIN, sizeof *f->buckets))) {
        free(f);
        return -ENOMEM;
    }
    f->nbuckets = FAB_BUCKETS_MIN;
    f->b = b;
    f->max_data = max_data;
    f->deflate = deflate;
    f->deflate_min = deflate_min;
    pthread_rwlock_init(&f->ports_lock, NULL);
    pthread_mutex_init(&f->lock, NULL);
    pthread_mutex_init(&f->zlock, NULL);
    pthread_mutex_init(&f->slock, NULL);
    pthread_condattr_t ca; /* the settler's retry wait is timed on the monotonic clock */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&f->scond, &ca);
    pthread_condattr_destroy(&ca);
    f->m_deflated = metrics_counter("sc_edge_deflated_total", NULL,
                                    "events compressed once for permessage-deflate clients");
    f->m_deflate_bytes_in = metrics_counter("sc_edge_deflate_bytes_total", "side=\"in\"",
                                            "event payload bytes before / after compression");
    f->m_deflate_bytes_out = metrics_counter("sc_edge_deflate_bytes_total", "side=\"out\"",
                                             "event payload bytes before / after compression");
    f->m_in = metrics_counter("sc_edge_bus_messages_total", NULL,
                              "bus messages received for clients (framed once each)");
    f->m_dropped = metrics_counter("sc_edge_bus_dropped_total", NULL,
                                   "bus messages dropped (over the size limit or a worker's "
                                   "mailbox full)");
    f->m_wakeups = metrics_counter("sc_edge_fabric_wakeups_total", NULL,
                                   "workers woken by the fabric (a mailbox went from empty to "
                                   "not empty)");
    f->m_topics = metrics_gauge("sc_edge_subscriptions", NULL,
                                "NATS subscriptions for topics and users held by this edge");
    f->m_settle_ok = metrics_counter("sc_edge_settle_flushes_total", "result=\"ok\"",
                                     "round trips confirming new NATS subscriptions, by result");
    f->m_settle_failed = metrics_counter("sc_edge_settle_flushes_total", "result=\"failed\"",
                                         "round trips confirming new NATS subscriptions, by "
                                         "result");
    if (pthread_create(&f->settler, NULL, settler_main, f) != 0) {
        fab_destroy(f);
        return -EAGAIN;
    }
    pthread_setname_np(f->settler, "edge-settler"); /* named for top -H, perf and gdb */
    f->settler_started = true;
    if (bus_subscribe(b, SUBJ_AUTH_REVOKED, NULL, fab_on_revoked, f, &f->revoked) != 0) {
        fab_destroy(f);
        return -EIO;
    }
    bus_set_reconnect_hook(b, fab_on_reconnect, f);
    *out = f;
    return 0;
}

void fab_destroy(fabric *f)
{
    if (!f) return;
    if (f->settler_started) {
        pthread_mutex_lock(&f->slock);
        f->sstop = true;
        pthread_cond_signal(&f->scond);
        pthread_mutex_unlock(&f->slock);
        pthread_join(f->settler, NULL);
    }
    bus_set_reconnect_hook(f->b, NULL, NULL);
    bus_unsubscribe(f->revoked);
    for (interest *it = f->pending, *next; it; it = next) { /* the dropped: in no table */
        next = it->next_pending;
        if (it->dropped) {
            route_unref(it->r);
            free(it);
        }
    }
    for (size_t i = 0; f->buckets && i < f->nbuckets; i++) {
        for (interest *it = f->buckets[i], *next; it; it = next) {
            next = it->next;
            if (bus_unsubscribe(it->sub) == 0) route_unref(it->r);
            free(it);
        }
    }
    free(f->buckets);
    if (f->zd_ready) deflateEnd(&f->zd);
    pthread_rwlock_destroy(&f->ports_lock);
    pthread_mutex_destroy(&f->lock);
    pthread_mutex_destroy(&f->zlock);
    pthread_mutex_destroy(&f->slock);
    pthread_cond_destroy(&f->scond);
    free(f);
}

static void slot_release_v(void *s) { slot_release(s); }

int fab_port_open(fabric *f, fab_port **out)
{
    fab_port *p = calloc(1, sizeof *p);
    if (!p) return -ENOMEM;
    int rc = mbox_init(&p->mb, sizeof(fab_slot), FAB_HWM);
    if (rc != 0) {
        free(p);
        return rc;
    }
    p->f = f; /* before it is published: a revocation may reach it at once */
    pthread_rwlock_wrlock(&f->ports_lock);
    p->idx = f->nports < FAB_PORTS ? f->nports++ : -1;
    if (p->idx >= 0) f->ports[p->idx] = p;
    pthread_rwlock_unlock(&f->ports_lock);
    if (p->idx < 0) {
        log_error("fabric: too many workers", "max=%d", FAB_PORTS);
        p->f = NULL; /* never published: nothing to unhook */
        fab_port_close(p);
        return -EINVAL;
    }
    *out = p;
    return 0;
}

void fab_port_close(fab_port *p)
{
    if (!p) return;
    if (p->f) { /* no push reaches it after this */
        pthread_rwlock_wrlock(&p->f->ports_lock);
        p->f->ports[p->idx] = NULL;
        pthread_rwlock_unlock(&p->f->ports_lock);
    }
    route_unref(p->held);
    for (uint32_t i = p->bi; i < p->bn; i++) slot_release(&p->batch[i]);
    mbox_destroy(&p->mb, slot_release_v);
    free(p);
}

int fab_port_fd(const fab_port *p) { return mbox_fd(&p->mb); }

void fab_port_ack(fab_port *p) { mbox_ack(&p->mb); }

/* ---- interest ----------------------------------------------------------------------------- */

void fab_set_interest_fn(fabric *f, void (*fn)(void *ud, const char *topic, bool on), void *ud)
{
    f->interest_fn = fn;
    f->interest_ud = ud;
}

int fab_watch(fab_port *p, enum fab_kind kind, const char *name, uint64_t *wait)
{
    fabric *f = p->f;
    char prefix[300];
    int pl = snprintf(prefix, sizeof prefix, "%c %s\n", (char)kind, name);
    size_t nl = strlen(name);
    if (pl <= 0 || (size_t)pl >= sizeof prefix || nl > FAB_NAME_MAX) return -EINVAL;
    unsigned long h = fab_hash(prefix);
    *wait = 0;
    pthread_mutex_lock(&f->lock);
    interest **pp = interest_find(f, prefix, (size_t)pl, h), *it = *pp;
    bool made = !it;
    if (!it) {
        route *r;
        if (!(it = calloc(1, sizeof *it + (size_t)pl + 1)) ||
            !(r = calloc(1, sizeof *r + nl + 1))) {
            free(it);
            pthread_mutex_unlock(&f->lock);
            return -ENOMEM;
        }
        memcpy(it->key, prefix, (size_t)pl + 1);
        it->hash = h;
        r->f = f;
        r->kind = kind;
        atomic_init(&r->refs, 1); /* the subscription's */
        atomic_init(&r->ports, 0);
        memcpy(r->name, name, nl + 1);
        it->r = r;
        it->seq = ++f->sub_seq;
        it->pending = true;
        it->next_pending = f->pending;
        f->pending = it;
        *pp = it; /* the chain's end */
        f->ninterests++;
        interests_grow(f);
        metric_add(f->m_topics, 1);
        if (kind == FAB_EVENT) f->nevents++;
        if (kind == FAB_USER) f->nusers++;
        if (kind == FAB_EVENT && f->interest_fn) f->interest_fn(f->interest_ud, name, true);
    }
    it->refs++;
    atomic_fetch_or_explicit(&it->r->ports, 1ull << p->idx, memory_order_release);
    /* "subscribed" means live from now: the server must have the subscription before the
     * client hears so. Not yet confirmed (new, here or by another worker, or its last flush
     * failed): the caller holds what it tells the client until fab_port_settled reaches
     * *wait. Neither the subscription nor its round trip is made here but by the settler
     * thread, once for everything numbered before its round starts (fab_port_settle asks). */
    if (it->seq > f->live_seq) { /* made before but not confirmed: a flush from now on */
        *wait = made ? it->seq : ++f->sub_seq;
        if (*wait > p->want_seq) p->want_seq = *wait;
    }
    pthread_mutex_unlock(&f->lock);
    return 0;
}

uint64_t fab_port_ticket(fab_port *p)
{
    fabric *f = p->f;
    pthread_mutex_lock(&f->lock);
    uint64_t t = ++f->sub_seq;
    pthread_mutex_unlock(&f->lock);
    if (t > p->want_seq) p->want_seq = t;
    return t;
}

uint64_t fab_port_live(const fab_port *p)
{
    return atomic_load_explicit(&p->live_seq, memory_order_acquire);
}

void fab_port_settle(fab_port *p)
{
    if (p->want_seq <= p->asked_seq) return;
    fabric *f = p->f;
    p->asked_seq = p->want_seq;
    pthread_mutex_lock(&f->slock);
    f->want |= 1ull << p->idx;
    pthread_cond_signal(&f->scond);
    pthread_mutex_unlock(&f->slock);
}

uint64_t fab_port_settled(const fab_port *p)
{
    return atomic_load_explicit(&p->settled_seq, memory_order_acquire);
}

/* The settler's subscriptions for a round's pending interests (taken off fabric.pending,
 * those dropped already in ended): each made outside the lock (nats.c takes its own), then
 * published under it. A dropped one (its last port left before or meanwhile) ends here.
 * One that failed (nats.c refused: out of memory, or the connection closed for good) goes
 * back on the list with a number after the round's target, so no later watcher takes it
 * for live, and is tried again a second later; the waiters it already had are released
 * with the round and take it for live meanwhile (at most that second without its events:
 * a failure nats.c gives only when it cannot work at all). Returns true when one failed. */
static bool subscribe_pending(fabric *f, interest *batch, interest *ended)
{
    bool failed = false;
    for (interest *it = batch; it; it = it->next_pending) {
        char subject[320];
        snprintf(subject, sizeof subject, "live.%s.%s",
                 it->r->kind == FAB_USER ? "users" : "events", it->r->name);
        int rc = bus_subscribe(f->b, subject, NULL, fab_on_event, it->r, &it->sub);
        if (rc != 0) {
            it->sub = NULL;
            log_warn("subscription failed; the next round tries again", "subject=%s error=%d",
                     subject, rc);
        }
    }
    pthread_mutex_lock(&f->lock);
    for (interest *it = batch, *next; it; it = next) {
        next = it->next_pending;
        if (it->dropped) {
            it->next_pending = ended;
            ended = it;
        } else if (!it->sub) {
            failed = true;
            it->seq = ++f->sub_seq;
            it->next_pending = f->pending;
            f->pending = it;
        } else {
            it->pending = false;
        }
    }
    pthread_mutex_unlock(&f->lock);
    for (interest *it = ended, *next; it; it = next) {
        next = it->next_pending;
        if (!it->sub)
            route_unref(it->r); /* never subscribed: the subscription's reference */
        else
            (void)bus_unsubscribe_later(it->sub, route_unref);
        free(it);
    }
    return failed;
}

/* The settler: for every batch of requests, one flush (bounded, 1 s) covering every
 * subscription numbered before it starts, then each asking port learns how far it got and is
 * woken. A failed flush (NATS away or slow) ends the wait all the same - the subscriptions
 * stay unconfirmed, so the next subscriber of the same name waits for a new flush, and a
 * reconnection resubscribes everything anyway - but no worker ever waits for NATS. */
static void *settler_main(void *arg)
{
    fabric *f = arg;
    bool retry = false; /* a subscription failed: a round in a second even if nobody asks */
    pthread_mutex_lock(&f->slock);
    while (!f->sstop) {
        if (!f->want) {
            if (!retry) {
                pthread_cond_wait(&f->scond, &f->slock);
                continue;
            }
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += 1;
            if (pthread_cond_timedwait(&f->scond, &f->slock, &ts) != ETIMEDOUT) continue;
        }
        uint64_t want = f->want;
        f->want = 0;
        pthread_mutex_unlock(&f->slock);
        pthread_mutex_lock(&f->lock);
        uint64_t target = f->sub_seq; /* every port asked after its subscriptions were made */
        interest *batch = NULL, *ended = NULL; /* ended: left before the round: never made */
        for (interest *it = f->pending, *next; it; it = next) {
            next = it->next_pending;
            interest **to = it->dropped ? &ended : &batch;
            it->next_pending = *to;
            *to = it;
        }
        f->pending = NULL;
        pthread_mutex_unlock(&f->lock);
        retry = (batch || ended) && subscribe_pending(f, batch, ended);
        bool ok = bus_flush(f->b, 1000) == 0;
        if (ok) {
            pthread_mutex_lock(&f->lock);
            if (target > f->live_seq) f->live_seq = target;
            pthread_mutex_unlock(&f->lock);
        }
        metric_inc(ok ? f->m_settle_ok : f->m_settle_failed);
        pthread_rwlock_rdlock(&f->ports_lock);
        for (int i = 0; ok && i < f->nports; i++) { /* every port: its older waits are over */
            fab_port *p = f->ports[i];
            if (p && target > atomic_load_explicit(&p->live_seq, memory_order_relaxed))
                atomic_store_explicit(&p->live_seq, target, memory_order_release);
        }
        for (int i = 0; i < f->nports; i++) {
            fab_port *p = f->ports[i];
            if (!(want & (1ull << i)) || !p) continue;
            uint64_t cur = atomic_load_explicit(&p->settled_seq, memory_order_relaxed);
            if (target > cur) atomic_store_explicit(&p->settled_seq, target, memory_order_release);
            fab_slot sl = {.kind = FAB_SETTLED, .seq = target};
            port_push(p, &sl); /* the wake-up; if the mailbox is full the worker is awake */
        }
        pthread_rwlock_unlock(&f->ports_lock);
        pthread_mutex_lock(&f->slock);
    }
    pthread_mutex_unlock(&f->slock);
    return NULL;
}

void fab_unwatch(fab_port *p, enum fab_kind kind, const char *name)
{
    fabric *f = p->f;
    char prefix[300];
    int pl = snprintf(prefix, sizeof prefix, "%c %s\n", (char)kind, name);
    if (pl <= 0 || (size_t)pl >= sizeof prefix) return;
    unsigned long h = fab_hash(prefix);
    pthread_mutex_lock(&f->lock);
    interest **pp = interest_find(f, prefix, (size_t)pl, h);
    interest *gone = NULL;
    if (*pp) {
        atomic_fetch_and_explicit(&(*pp)->r->ports, ~(1ull << p->idx), memory_order_release);
        if (--(*pp)->refs == 0) {
            gone = *pp;
            *pp = gone->next;
            f->ninterests--;
            metric_add(f->m_topics, -1);
            if (kind == FAB_EVENT) f->nevents--;
            if (kind == FAB_USER) f->nusers--;
            if (kind == FAB_EVENT && f->interest_fn) f->interest_fn(f->interest_ud, name, false);
            if (gone->pending) { /* no subscription yet: the settler ends it */
                gone->dropped = true;
                gone = NULL;
            }
        }
    }
    pthread_mutex_unlock(&f->lock);
    if (gone) {
        /* a worker must not wait for nats.c: the subscription's reference to the route is
         * dropped once the callback can no longer run (on failure both stay allocated,
         * logged, rather than freed under the callback) */
        (void)bus_unsubscribe_later(gone->sub, route_unref);
        free(gone);
    }
}

void fab_counts(fabric *f, long *topics, long *users)
{
    pthread_mutex_lock(&f->lock);
    *topics = (long)f->nevents;
    *users = (long)f->nusers;
    pthread_mutex_unlock(&f->lock);
}

/* ---- receiving (worker thread) ------------------------------------------------------------- */

int fab_port_recv(fab_port *p, fab_msg *out)
{
    route_unref(p->held); /* the name of the message returned before */
    p->held = NULL;
    if (p->bi == p->bn) {
        p->bi = 0;
        p->bn = mbox_take(&p->mb, p->batch, FAB_BATCH);
        if (p->bn == 0) return 0;
    }
    fab_slot *s = &p->batch[p->bi++];
    memset(out, 0, sizeof *out);
    out->kind = s->kind;
    out->seq = s->seq;
    out->prev = s->prev;
    out->queued_us = s->put_us;
    out->frame = s->frame; /* the caller's reference now */
    out->data = s->data;   /* the caller's now */
    if (s->r) {
        out->name = s->r->name;
        p->held = s->r;
    }
    return 1;
}
