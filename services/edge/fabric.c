/* fabric.c - NATS -> (frame once) -> ZeroMQ inproc PUB/SUB -> workers; see fabric.h.
 *
 * A ZeroMQ message is three parts: the routing prefix "<kind> <name>\n" that SUB sockets
 * filter on (the newline keeps "prices.BT" from matching "prices.BTC"), the stream sequence
 * and the subject's previous one (2 x 8 bytes, host order: they never leave the process),
 * then the payload: a complete WebSocket frame for events, the raw JSON for revocations.
 * An event whose compression pays has a fourth part: the same message as a compressed frame
 * (permessage-deflate, RSV1), made here once for every subscriber of every worker. */
#include "fabric.h"

#include "contract.h"
#include "log.h"
#include "metrics.h"
#include "msg.h"
#include "ws_deflate.h"
#include "ws_frame.h"

#include <errno.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zmq.h>

#define FAB_ENDPOINT "inproc://sidecast-fabric"
#define FAB_BUCKETS 1024
#define FAB_HWM 100000 /* messages queued per worker before ZeroMQ drops (counted) */

/* One NATS subscription per name with interest anywhere in the process. */
/* Closure of a NATS subscription: what kind of message it carries. */
typedef struct route {
    fabric *f;
    enum fab_kind kind;
    char name[256];
} route;

typedef struct interest {
    struct interest *next;
    int refs; /* ports interested */
    bool live; /* a flush after the subscribe returned: the server has it */
    bus_sub *sub;
    route *r;   /* the subscription's closure, freed after it */
    char key[]; /* "<kind> <name>\n" */
} interest;

struct fabric {
    bus *b;
    void *zctx;
    void *pub;
    pthread_mutex_t pub_lock; /* the PUB socket: nats.c may call from several threads */
    pthread_mutex_t lock;     /* interests */
    interest *buckets[FAB_BUCKETS];
    size_t max_data;
    bus_sub *revoked;
    route revoked_route;
    /* permessage-deflate: one stream for the process, reset per event (no context takeover) */
    bool deflate;
    size_t deflate_min;
    pthread_mutex_t zlock; /* zd: nats.c may call from several threads */
    z_stream zd;
    bool zd_ready;
    metric *m_in, *m_dropped, *m_topics, *m_deflated, *m_deflate_bytes_in, *m_deflate_bytes_out;
};

/* A worker's port; its local interest counts are kept by the session layer's maps, so here
 * only the ZeroMQ subscription is per port and the NATS one per process. */
#define FAB_SETTLE_MAX 4096 /* new subscriptions waiting for one flush; over: flushed at once */

struct fab_port {
    fabric *f;
    void *sub;
    int fd;
    int nsettle;                       /* new NATS subscriptions not yet confirmed */
    struct interest *settle[FAB_SETTLE_MAX];
};

static unsigned long fab_hash(const char *s)
{
    unsigned long h = 5381;
    while (*s) h = h * 33 + (unsigned char)*s++;
    return h;
}

/* ---- NATS side (nats.c threads) ----------------------------------------------------------- */

static void zmq_free_bytes(void *data, void *hint)
{
    (void)hint;
    free(data);
}

/* Publishes prefix, seq and prev (16 bytes), payload and, when not NULL, its compressed
 * twin zpayload (ownership of both passes to ZeroMQ, freed with free()). */
static void fab_publish(fabric *f, const char *prefix, size_t plen, uint64_t seq, uint64_t prev,
                        uint8_t *payload, size_t n, uint8_t *zpayload, size_t zn)
{
    uint64_t pos[2] = {seq, prev};
    zmq_msg_t m, zm;
    if (zmq_msg_init_data(&m, payload, n, zmq_free_bytes, NULL) != 0) {
        free(payload);
        free(zpayload);
        return;
    }
    if (zpayload && zmq_msg_init_data(&zm, zpayload, zn, zmq_free_bytes, NULL) != 0) {
        free(zpayload);
        zpayload = NULL; /* sent without it: the plain frame is enough */
    }
    pthread_mutex_lock(&f->pub_lock);
    int rc = zmq_send(f->pub, prefix, plen, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    if (rc >= 0) rc = zmq_send(f->pub, pos, sizeof pos, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    int last = zpayload ? ZMQ_SNDMORE | ZMQ_DONTWAIT : ZMQ_DONTWAIT;
    if (rc >= 0) rc = zmq_msg_send(&m, f->pub, last);
    int zrc = rc >= 0 && zpayload ? zmq_msg_send(&zm, f->pub, ZMQ_DONTWAIT) : -1;
    pthread_mutex_unlock(&f->pub_lock);
    if (rc < 0) {
        metric_inc(f->m_dropped);
        zmq_msg_close(&m);
    }
    if (zpayload && zrc < 0) zmq_msg_close(&zm);
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
static uint8_t *fab_build(const char *topic, uint64_t seq, const char *data, size_t dlen,
                          size_t *n, size_t *hlen)
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
    const char *data = bus_msg_data(msg);
    size_t dlen = bus_msg_len(msg);
    const char *seqs = bus_msg_header(msg, "Nats-Sequence");
    const char *prevs = bus_msg_header(msg, "Nats-Last-Sequence");
    uint64_t seq = seqs ? strtoull(seqs, NULL, 10) : 0;
    uint64_t prev = prevs ? strtoull(prevs, NULL, 10) : 0;
    metric_inc(f->m_in);
    if (dlen > f->max_data) {
        metric_inc(f->m_dropped);
        log_warn("bus message over the size limit dropped", "subject=%s bytes=%zu",
                 bus_msg_subject(msg), dlen);
    } else {
        size_t n = 0, hl = 0, zn = 0;
        uint8_t *buf = fab_build(r->kind == FAB_USER ? "user" : r->name, seq, data, dlen, &n,
                                 &hl);
        char prefix[300];
        int pl = snprintf(prefix, sizeof prefix, "%c %s\n", (char)r->kind, r->name);
        uint8_t *zbuf = buf ? fab_deflate(f, buf + hl, n - hl, &zn) : NULL;
        if (buf) fab_publish(f, prefix, (size_t)pl, seq, prev, buf, n, zbuf, zn);
    }
    bus_msg_destroy(msg);
}

static void fab_on_revoked(bus_msg *msg, void *ud)
{
    route *r = ud;
    size_t n = bus_msg_len(msg);
    uint8_t *copy = n <= 4096 ? malloc(n + 1) : NULL;
    if (copy) {
        memcpy(copy, bus_msg_data(msg), n);
        copy[n] = '\0';
        fab_publish(r->f, "r\n", 2, 0, 0, copy, n + 1, NULL, 0);
    }
    bus_msg_destroy(msg);
}

/* ---- set-up ------------------------------------------------------------------------------- */

/* After a NATS reconnection (nats.c thread): every worker should look for gaps. */
static void fab_on_reconnect(void *ud)
{
    fabric *f = ud;
    uint8_t *none = malloc(1);
    if (none) fab_publish(f, "s\n", 2, 0, 0, none, 1, NULL, 0);
}

int fab_create(fabric **out, bus *b, size_t max_data, bool deflate, size_t deflate_min)
{
    fabric *f = calloc(1, sizeof *f);
    if (!f) return -ENOMEM;
    f->b = b;
    f->max_data = max_data;
    f->deflate = deflate;
    f->deflate_min = deflate_min;
    pthread_mutex_init(&f->pub_lock, NULL);
    pthread_mutex_init(&f->lock, NULL);
    pthread_mutex_init(&f->zlock, NULL);
    f->m_deflated = metrics_counter("sc_edge_deflated_total", NULL,
                                    "events compressed once for permessage-deflate clients");
    f->m_deflate_bytes_in = metrics_counter("sc_edge_deflate_bytes_total", "side=\"in\"",
                                            "event payload bytes before / after compression");
    f->m_deflate_bytes_out = metrics_counter("sc_edge_deflate_bytes_total", "side=\"out\"",
                                             "event payload bytes before / after compression");
    f->m_in = metrics_counter("sc_edge_bus_messages_total", NULL,
                              "bus messages received for clients (framed once each)");
    f->m_dropped = metrics_counter("sc_edge_bus_dropped_total", NULL,
                                   "bus messages dropped (over the size limit or fabric full)");
    f->m_topics = metrics_gauge("sc_edge_subscriptions", NULL,
                                "NATS subscriptions for topics and users held by this edge");
    int hwm = FAB_HWM;
    if (!(f->zctx = zmq_ctx_new()) || !(f->pub = zmq_socket(f->zctx, ZMQ_PUB)) ||
        zmq_setsockopt(f->pub, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0 ||
        zmq_bind(f->pub, FAB_ENDPOINT) != 0) {
        log_error("zeromq fabric failed", "error=\"%s\"", zmq_strerror(zmq_errno()));
        fab_destroy(f);
        return -EIO;
    }
    f->revoked_route.f = f;
    f->revoked_route.kind = FAB_REVOKED;
    if (bus_subscribe(b, SUBJ_AUTH_REVOKED, NULL, fab_on_revoked, &f->revoked_route,
                      &f->revoked) != 0) {
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
    bus_set_reconnect_hook(f->b, NULL, NULL);
    bus_unsubscribe(f->revoked);
    for (int i = 0; i < FAB_BUCKETS; i++) {
        for (interest *it = f->buckets[i], *next; it; it = next) {
            next = it->next;
            if (bus_unsubscribe(it->sub) == 0) free(it->r);
            free(it);
        }
    }
    if (f->pub) {
        int linger = 0;
        zmq_setsockopt(f->pub, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(f->pub);
    }
    if (f->zctx) zmq_ctx_term(f->zctx);
    if (f->zd_ready) deflateEnd(&f->zd);
    pthread_mutex_destroy(&f->pub_lock);
    pthread_mutex_destroy(&f->lock);
    pthread_mutex_destroy(&f->zlock);
    free(f);
}

int fab_port_open(fabric *f, fab_port **out)
{
    fab_port *p = calloc(1, sizeof *p);
    if (!p) return -ENOMEM;
    p->f = f;
    int hwm = FAB_HWM;
    size_t fl = sizeof p->fd;
    if (!(p->sub = zmq_socket(f->zctx, ZMQ_SUB)) ||
        zmq_setsockopt(p->sub, ZMQ_RCVHWM, &hwm, sizeof hwm) != 0 ||
        zmq_connect(p->sub, FAB_ENDPOINT) != 0 ||
        zmq_setsockopt(p->sub, ZMQ_SUBSCRIBE, "r\n", 2) != 0 ||
        zmq_setsockopt(p->sub, ZMQ_SUBSCRIBE, "s\n", 2) != 0 ||
        zmq_getsockopt(p->sub, ZMQ_FD, &p->fd, &fl) != 0) {
        log_error("zeromq port failed", "error=\"%s\"", zmq_strerror(zmq_errno()));
        fab_port_close(p);
        return -EIO;
    }
    *out = p;
    return 0;
}

void fab_port_close(fab_port *p)
{
    if (!p) return;
    if (p->sub) {
        int linger = 0;
        zmq_setsockopt(p->sub, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(p->sub);
    }
    free(p);
}

int fab_port_fd(const fab_port *p) { return p->fd; }

/* ---- interest ----------------------------------------------------------------------------- */

int fab_watch(fab_port *p, enum fab_kind kind, const char *name)
{
    fabric *f = p->f;
    char prefix[300];
    int pl = snprintf(prefix, sizeof prefix, "%c %s\n", (char)kind, name);
    if (pl <= 0 || (size_t)pl >= sizeof prefix) return -EINVAL;
    bool fresh = false;
    pthread_mutex_lock(&f->lock);
    unsigned long h = fab_hash(prefix) % FAB_BUCKETS;
    interest *it = f->buckets[h];
    while (it && strncmp(it->key, prefix, (size_t)pl) != 0) it = it->next;
    if (!it) {
        char subject[320];
        route *r;
        snprintf(subject, sizeof subject, "live.%s.%s", kind == FAB_USER ? "users" : "events",
                 name);
        if (!(it = calloc(1, sizeof *it + (size_t)pl + 1)) || !(r = calloc(1, sizeof *r))) {
            free(it);
            pthread_mutex_unlock(&f->lock);
            return -ENOMEM;
        }
        memcpy(it->key, prefix, (size_t)pl + 1);
        r->f = f;
        r->kind = kind;
        snprintf(r->name, sizeof r->name, "%s", name);
        int rc = bus_subscribe(f->b, subject, NULL, fab_on_event, r, &it->sub);
        if (rc != 0) {
            free(r);
            free(it);
            pthread_mutex_unlock(&f->lock);
            return rc;
        }
        it->r = r;
        it->next = f->buckets[h];
        f->buckets[h] = it;
        metric_add(f->m_topics, 1);
    }
    it->refs++;
    fresh = !it->live;
    pthread_mutex_unlock(&f->lock);
    /* "subscribed" means live from now: the server must have the subscription before the
     * client hears so. The round trip that confirms it is not taken here but once for all
     * the subscriptions of this loop iteration (fab_port_settle, before anything is written),
     * so a burst of connects with new users costs one round trip per iteration, not one
     * each. It lives on meanwhile: this port holds a reference. */
    if (fresh) {
        if (p->nsettle == FAB_SETTLE_MAX) fab_port_settle(p);
        p->settle[p->nsettle++] = it;
    }
    zmq_setsockopt(p->sub, ZMQ_SUBSCRIBE, prefix, (size_t)pl);
    return 0;
}

void fab_port_settle(fab_port *p)
{
    if (p->nsettle == 0) return;
    fabric *f = p->f;
    /* One flush, outside the lock so that other workers' subscriptions do not wait for it.
     * A failure (NATS away) leaves them unconfirmed; the next new subscriber of the same
     * name tries again, and a reconnect resubscribes everything anyway. */
    if (bus_flush(f->b, 1000) == 0) {
        pthread_mutex_lock(&f->lock);
        for (int i = 0; i < p->nsettle; i++) p->settle[i]->live = true;
        pthread_mutex_unlock(&f->lock);
    }
    p->nsettle = 0;
}

void fab_unwatch(fab_port *p, enum fab_kind kind, const char *name)
{
    fabric *f = p->f;
    char prefix[300];
    int pl = snprintf(prefix, sizeof prefix, "%c %s\n", (char)kind, name);
    if (pl <= 0 || (size_t)pl >= sizeof prefix) return;
    zmq_setsockopt(p->sub, ZMQ_UNSUBSCRIBE, prefix, (size_t)pl);
    pthread_mutex_lock(&f->lock);
    unsigned long h = fab_hash(prefix) % FAB_BUCKETS;
    interest **pp = &f->buckets[h];
    while (*pp && strncmp((*pp)->key, prefix, (size_t)pl) != 0) pp = &(*pp)->next;
    interest *gone = NULL;
    for (int i = 0; *pp && i < p->nsettle; i++) { /* the port's reference goes: not settled */
        if (p->settle[i] == *pp) {
            p->settle[i] = p->settle[--p->nsettle];
            break;
        }
    }
    if (*pp && --(*pp)->refs == 0) {
        gone = *pp;
        *pp = gone->next;
        metric_add(f->m_topics, -1);
    }
    pthread_mutex_unlock(&f->lock);
    if (gone) {
        /* a worker must not wait for nats.c: the route is freed once the callback is done
         * (on failure both stay allocated, logged, rather than freed under the callback) */
        (void)bus_unsubscribe_later(gone->sub, free);
        free(gone);
    }
}

/* ---- receiving (worker thread) ------------------------------------------------------------- */

static void zmq_msg_release(void *ud)
{
    zmq_msg_t *m = ud;
    zmq_msg_close(m);
    free(m);
}

int fab_port_recv(fab_port *p, fab_msg *out)
{
    for (;;) {
        int events = 0;
        size_t el = sizeof events;
        if (zmq_getsockopt(p->sub, ZMQ_EVENTS, &events, &el) != 0 || !(events & ZMQ_POLLIN))
            return 0;
        char prefix[300];
        int pl = zmq_recv(p->sub, prefix, sizeof prefix - 1, ZMQ_DONTWAIT);
        if (pl < 0) return 0;
        int more = 0;
        size_t ml = sizeof more;
        uint64_t pos[2] = {0, 0};
        zmq_getsockopt(p->sub, ZMQ_RCVMORE, &more, &ml);
        if (!more) continue; /* malformed: a prefix alone */
        if (zmq_recv(p->sub, pos, sizeof pos, ZMQ_DONTWAIT) != (int)sizeof pos) continue;
        zmq_msg_t *m = malloc(sizeof *m);
        if (!m) return 0;
        zmq_msg_init(m);
        if (zmq_msg_recv(m, p->sub, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(m);
            free(m);
            return 0;
        }
        zmq_msg_t *zm = NULL; /* the compressed twin, when there is one */
        if (zmq_msg_more(m) && (zm = malloc(sizeof *zm)) != NULL) {
            zmq_msg_init(zm);
            if (zmq_msg_recv(zm, p->sub, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(zm);
                free(zm);
                zm = NULL;
            }
        }
        if (pl < 2 || pl >= (int)sizeof prefix) {
            zmq_msg_release(m);
            if (zm) zmq_msg_release(zm);
            continue;
        }
        prefix[pl - 1] = '\0'; /* the newline */
        memset(out, 0, sizeof *out);
        out->kind = (enum fab_kind)prefix[0];
        out->seq = pos[0];
        out->prev = pos[1];
        if (zm && out->kind != FAB_EVENT && out->kind != FAB_USER) {
            zmq_msg_release(zm);
            zm = NULL;
        }
        if (out->kind == FAB_RESYNC) {
            zmq_msg_release(m);
            return 1;
        }
        if (out->kind == FAB_REVOKED) {
            size_t n = zmq_msg_size(m);
            out->data = malloc(n + 1);
            if (out->data) {
                memcpy(out->data, zmq_msg_data(m), n);
                out->data[n] = '\0';
            }
            zmq_msg_release(m);
            if (!out->data) continue;
            return 1;
        }
        size_t nl = strnlen(prefix + 2, sizeof out->name - 1);
        memcpy(out->name, prefix + 2, nl);
        out->name[nl] = '\0';
        out->frame = wsc_frame_wrap(zmq_msg_data(m), zmq_msg_size(m), zmq_msg_release, m);
        if (!out->frame) {
            zmq_msg_release(m);
            if (zm) zmq_msg_release(zm);
            continue;
        }
        wsc_frame *zf = zm ? wsc_frame_wrap(zmq_msg_data(zm), zmq_msg_size(zm), zmq_msg_release,
                                            zm)
                           : NULL;
        if (zm && !zf) zmq_msg_release(zm);
        /* compressed once, or not worth it: never again per connection */
        wsc_frame_set_deflated(out->frame, zf);
        return 1;
    }
}
