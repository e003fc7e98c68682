/* ingress.c - the ZeroMQ thread: sockets, monitors, the read loop and the publish. */
#include "ingress.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "contract.h"
#include "log.h"
#include "metrics.h"

enum { MAX_FRAMES = 8, BATCH = 256 };

/* What became of a message (sc_bridge_messages_total{endpoint,result}). */
enum result {
    R_PUBLISHED,
    R_UNMAPPED,
    R_INVALID_TOPIC,
    R_TOO_LARGE,
    R_BAD_PAYLOAD,
    R_BACKLOG,
    R_BUS_ERROR,
    NRESULTS
};
static const char *const result_names[NRESULTS] = {
    "published", "unmapped", "invalid_topic", "too_large", "bad_payload", "backlog", "bus_error"};

typedef struct endpoint {
    const zmap_endpoint *ep;
    void *sock, *mon;
    int peers; /* connected peers, from the monitor (thread-owned) */
    atomic_int connected;
    metric *results[NRESULTS], *up, *gaps, *disconnects;
    int64_t *last_seq; /* per rule, -1: none yet ("sequence": "le32") */
    unsigned warned;   /* results already logged at warn level, a bit each */
} endpoint;

struct ingress {
    const zmap *map;
    bus *b;
    ingress_cfg cfg;
    void *ctx;
    endpoint *eps;
    size_t n;
    pthread_t thread;
    int started;
    atomic_int stop, ready;
};

static const char *zerr(void) { return zmq_strerror(zmq_errno()); }

/* The first drop of each kind per endpoint is a warning, the rest debug lines: the counter
 * says how many. */
static void count(endpoint *e, enum result r, const char *topic, const char *why)
{
    metric_inc(e->results[r]);
    if (r == R_PUBLISHED) return;
    int first = !(e->warned & (1u << r));
    e->warned |= 1u << r;
    log_write(first ? LOG_WARN : LOG_DEBUG, "zeromq message dropped",
              "endpoint=%s result=%s topic=\"%s\" why=\"%s\"%s", e->ep->endpoint, result_names[r],
              topic, why, first ? " note=\"later ones at debug level\"" : "");
}

/* A printable copy of a ZeroMQ topic frame for a log line. */
static void show(char *out, size_t cap, const void *t, size_t n)
{
    const unsigned char *p = t;
    size_t o = 0;
    for (size_t i = 0; i < n && o + 5 < cap; i++)
        o += (size_t)snprintf(out + o, cap - o,
                              p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"' && p[i] != '\\'
                                  ? "%c"
                                  : "\\x%02x",
                              p[i]);
    out[o] = '\0';
}

static void handle(ingress *in, endpoint *e, zmq_msg_t *f, size_t nf, int truncated)
{
    const zmap_endpoint *ep = e->ep;
    char topic[TOPIC_MAX + 1], shown[96], subject[sizeof SUBJ_EVENTS_PREFIX + TOPIC_MAX];
    const void *t = "", *body = "";
    size_t tn = 0, bn = 0, bi = ep->topic_frame ? 1 : 0;
    char *data = NULL;
    size_t dlen;
    int rc, rule;

    if (ep->topic_frame) {
        t = zmq_msg_data(&f[0]);
        tn = zmq_msg_size(&f[0]);
    }
    if (bi < nf) {
        body = zmq_msg_data(&f[bi]);
        bn = zmq_msg_size(&f[bi]);
    }
    show(shown, sizeof shown, t, tn);
    if (truncated) {
        count(e, R_TOO_LARGE, shown, "more than 8 frames");
        return;
    }
    rule = zmap_topic(ep, t, tn, topic);
    if (rule == -ENOENT) {
        count(e, R_UNMAPPED, shown, "no rule matches");
        return;
    }
    if (rule < 0) {
        count(e, R_INVALID_TOPIC, shown, "the rule's result is not a valid topic");
        return;
    }
    if (ep->seq_le32 && nf > bi + 1) {
        int64_t seq = zmap_le32(zmq_msg_data(&f[nf - 1]), zmq_msg_size(&f[nf - 1]));
        int64_t last = e->last_seq[rule];
        /* a counter that goes back is a restarted publisher, not a gap */
        if (seq >= 0 && last >= 0 && seq > last + 1) metric_add(e->gaps, seq - last - 1);
        if (seq >= 0) e->last_seq[rule] = seq;
    }
    rc = zmap_data(ep->payload, body, bn, (size_t)in->cfg.max_message, &data, &dlen);
    if (rc == SC_ETOOLARGE) {
        count(e, R_TOO_LARGE, topic, "event data over BRIDGE_MAX_MESSAGE");
        return;
    }
    if (rc < 0) {
        count(e, R_BAD_PAYLOAD, topic, rc == SC_EJSON ? "body is not JSON" : sc_strerror(rc));
        return;
    }
    if (bus_buffered(in->b) + dlen > (size_t)in->cfg.max_buffered) {
        count(e, R_BACKLOG, topic, "NATS has BRIDGE_MAX_BUFFERED bytes unsent");
        free(data);
        return;
    }
    snprintf(subject, sizeof subject, SUBJ_EVENTS_PREFIX "%s", topic);
    rc = bus_publish(in->b, subject, NULL, data, dlen, NULL, 0);
    free(data);
    if (rc < 0)
        count(e, R_BUS_ERROR, topic, sc_strerror(rc));
    else
        count(e, R_PUBLISHED, topic, "");
}

/* Reads up to BATCH messages from e's socket without waiting (so that one busy endpoint
 * does not starve the others or a stop). */
static void drain(ingress *in, endpoint *e)
{
    zmq_msg_t f[MAX_FRAMES];
    for (int m = 0; m < BATCH && !atomic_load(&in->stop); m++) {
        size_t nf = 0;
        int more = 1, truncated = 0;
        while (more) {
            zmq_msg_t part, *into = nf < MAX_FRAMES ? &f[nf] : &part;
            zmq_msg_init(into);
            /* after the first frame the rest of the message is there already */
            if (zmq_msg_recv(into, e->sock, nf == 0 ? ZMQ_DONTWAIT : 0) < 0) {
                int err = zmq_errno();
                zmq_msg_close(into);
                for (size_t i = 0; i < nf && i < MAX_FRAMES; i++) zmq_msg_close(&f[i]);
                if (err != EAGAIN && err != EINTR && err != ETERM)
                    log_warn("zeromq receive failed", "endpoint=%s err=\"%s\"", e->ep->endpoint,
                             zmq_strerror(err));
                return;
            }
            more = zmq_msg_more(into);
            if (into == &part) {
                truncated = 1;
                zmq_msg_close(&part);
            }
            nf++;
        }
        if (nf > MAX_FRAMES) nf = MAX_FRAMES;
        handle(in, e, f, nf, truncated);
        for (size_t i = 0; i < nf; i++) zmq_msg_close(&f[i]);
    }
}

/* One monitor event: [uint16 event, uint32 value][endpoint address]. */
static void monitor(endpoint *e)
{
    for (int k = 0; k < 64; k++) {
        zmq_msg_t a, b;
        uint16_t ev;
        zmq_msg_init(&a);
        if (zmq_msg_recv(&a, e->mon, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&a);
            return;
        }
        if (zmq_msg_more(&a)) {
            zmq_msg_init(&b);
            zmq_msg_recv(&b, e->mon, 0);
            zmq_msg_close(&b);
        }
        if (zmq_msg_size(&a) < 6) {
            zmq_msg_close(&a);
            continue;
        }
        memcpy(&ev, zmq_msg_data(&a), sizeof ev);
        zmq_msg_close(&a);
        if (ev == ZMQ_EVENT_CONNECTED || ev == ZMQ_EVENT_ACCEPTED) {
            if (e->peers++ == 0) log_info("zeromq peer connected", "endpoint=%s", e->ep->endpoint);
        } else if (ev == ZMQ_EVENT_DISCONNECTED) {
            metric_inc(e->disconnects);
            if (e->peers > 0 && --e->peers == 0)
                log_warn("zeromq peer disconnected", "endpoint=%s note=\"%s\"", e->ep->endpoint,
                         e->ep->bind ? "waiting for peers" : "ZeroMQ reconnects");
        }
        metric_set(e->up, e->peers > 0);
        atomic_store(&e->connected, e->peers > 0);
    }
}

static void *ingress_main(void *arg)
{
    ingress *in = arg;
    zmq_pollitem_t *items = calloc(2 * in->n, sizeof *items);
    if (!items) {
        log_error("zeromq thread out of memory", "%s", "");
        return NULL;
    }
    for (size_t i = 0; i < in->n; i++) {
        items[2 * i] = (zmq_pollitem_t){.socket = in->eps[i].sock, .events = ZMQ_POLLIN};
        items[2 * i + 1] = (zmq_pollitem_t){.socket = in->eps[i].mon, .events = ZMQ_POLLIN};
    }
    while (!atomic_load(&in->stop)) {
        int n = zmq_poll(items, (int)(2 * in->n), in->cfg.poll_ms);
        if (n < 0) {
            if (zmq_errno() == EINTR) continue;
            log_error("zmq_poll failed", "err=\"%s\"", zerr());
            break;
        }
        for (size_t i = 0; i < in->n && n > 0; i++) {
            if (items[2 * i + 1].revents & ZMQ_POLLIN) monitor(&in->eps[i]);
            if (items[2 * i].revents & ZMQ_POLLIN) drain(in, &in->eps[i]);
        }
    }
    free(items);
    return NULL;
}

static int setopt_int(void *s, int opt, long v)
{
    int x = (int)v;
    return zmq_setsockopt(s, opt, &x, sizeof x);
}

static int endpoint_open(ingress *in, size_t i)
{
    endpoint *e = &in->eps[i];
    const zmap_endpoint *ep = e->ep;
    char labels[ZMAP_MAX_ENDPOINT_LEN + 64], mon[64];
    int64_t maxmsg = in->cfg.max_frame;
    int linger = 0;

    for (int r = 0; r < NRESULTS; r++) {
        snprintf(labels, sizeof labels, "endpoint=\"%s\",result=\"%s\"", ep->endpoint,
                 result_names[r]);
        e->results[r] = metrics_counter("sc_bridge_messages_total", labels,
                                        "ZeroMQ messages by endpoint and what became of them.");
    }
    snprintf(labels, sizeof labels, "endpoint=\"%s\"", ep->endpoint);
    e->up = metrics_gauge("sc_bridge_connected", labels,
                          "1 while the endpoint's socket has a connected peer (monitor).");
    e->disconnects = metrics_counter("sc_bridge_disconnects_total", labels,
                                     "Peers of the endpoint's socket that went away.");
    e->gaps = metrics_counter("sc_bridge_sequence_gaps_total", labels,
                              "Messages missing by the publisher's le32 sequence frames "
                              "(dropped at the high-water mark, or lost while disconnected).");
    if (!(e->last_seq = malloc(ep->nrules * sizeof *e->last_seq))) return -ENOMEM;
    for (size_t r = 0; r < ep->nrules; r++) e->last_seq[r] = -1;

    e->sock = zmq_socket(in->ctx, ep->socket == ZMAP_SUB ? ZMQ_SUB : ZMQ_PULL);
    if (!e->sock) goto zfail;
    if (setopt_int(e->sock, ZMQ_RCVHWM, in->cfg.rcvhwm) < 0 ||
        zmq_setsockopt(e->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) < 0 ||
        zmq_setsockopt(e->sock, ZMQ_LINGER, &linger, sizeof linger) < 0)
        goto zfail;
    for (size_t k = 0; k < ep->nsubscribe; k++)
        if (zmq_setsockopt(e->sock, ZMQ_SUBSCRIBE, ep->subscribe[k], strlen(ep->subscribe[k])) < 0)
            goto zfail;
    /* The monitor first, so that no connection goes unseen. */
    snprintf(mon, sizeof mon, "inproc://bridge-monitor-%zu", i);
    if (zmq_socket_monitor(e->sock, mon,
                           ZMQ_EVENT_CONNECTED | ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED) < 0)
        goto zfail;
    if (!(e->mon = zmq_socket(in->ctx, ZMQ_PAIR))) goto zfail;
    if (zmq_setsockopt(e->mon, ZMQ_LINGER, &linger, sizeof linger) < 0 ||
        zmq_connect(e->mon, mon) < 0)
        goto zfail;
    if ((ep->bind ? zmq_bind(e->sock, ep->endpoint) : zmq_connect(e->sock, ep->endpoint)) < 0)
        goto zfail;
    metric_set(e->up, 0);
    log_info("zeromq endpoint set up", "endpoint=%s socket=%s mode=%s rules=%zu", ep->endpoint,
             ep->socket == ZMAP_SUB ? "sub" : "pull", ep->bind ? "bind" : "connect", ep->nrules);
    return 0;
zfail:
    log_error("zeromq endpoint not set up", "endpoint=%s err=\"%s\"", ep->endpoint, zerr());
    return -EIO;
}

int ingress_start(ingress **out, const zmap *map, bus *b, const ingress_cfg *cfg)
{
    ingress *in;
    int rc = -ENOMEM;

    *out = NULL;
    if (!(in = calloc(1, sizeof *in))) return -ENOMEM;
    in->map = map;
    in->b = b;
    in->cfg = *cfg;
    in->n = map->n;
    if (!(in->eps = calloc(in->n, sizeof *in->eps))) goto error;
    if (!(in->ctx = zmq_ctx_new())) {
        log_error("zeromq context not created", "err=\"%s\"", zerr());
        rc = -EIO;
        goto error;
    }
    for (size_t i = 0; i < in->n; i++) {
        in->eps[i].ep = &map->v[i];
        if ((rc = endpoint_open(in, i)) < 0) goto error;
    }
    rc = pthread_create(&in->thread, NULL, ingress_main, in);
    if (rc != 0) {
        log_error("zeromq thread not started", "err=\"%s\"", strerror(rc));
        rc = -rc;
        goto error;
    }
    in->started = 1;
    atomic_store(&in->ready, 1);
    *out = in;
    return 0;
error:
    ingress_stop(in);
    return rc;
}

void ingress_stop(ingress *in)
{
    if (!in) return;
    atomic_store(&in->stop, 1);
    if (in->started) pthread_join(in->thread, NULL);
    for (size_t i = 0; in->eps && i < in->n; i++) {
        endpoint *e = &in->eps[i];
        if (e->sock) {
            zmq_socket_monitor(e->sock, NULL, 0);
            zmq_close(e->sock);
        }
        if (e->mon) zmq_close(e->mon);
        free(e->last_seq);
    }
    if (in->ctx) zmq_ctx_term(in->ctx); /* every socket has linger 0: returns at once */
    free(in->eps);
    free(in);
}

int ingress_ready(const ingress *in) { return in && atomic_load(&in->ready); }

size_t ingress_connected(const ingress *in)
{
    size_t n = 0;
    for (size_t i = 0; in && i < in->n; i++) n += atomic_load(&in->eps[i].connected) != 0;
    return n;
}
