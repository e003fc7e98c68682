/* fabric.h - carries bus messages from NATS to the edge's workers, once each.
 *
 * NATS delivers on nats.c's thread; the fabric frames each message there, once (a complete
 * WebSocket text frame holding the sidecast.v1 "event", wrapped as one reference-counted
 * wsc_frame), and queues a reference to it in the mailbox (a fab_port) of each worker with
 * local interest in its topic or user, so a message reaches only the workers with
 * subscribers, and all of them share the same bytes. With permessage-deflate on, each event
 * is also compressed there, once, into a second frame (RSV1) attached to the first
 * (wsc_frame_set_deflated): a worker queues the one or the other on each subscriber, without
 * copying and without any per-connection zlib state.
 *
 * Interest is counted twice: per worker (a bit per port in the name's route, set by the
 * first local subscriber and cleared by the last) and per process (one NATS subscription per
 * topic or user while any worker has interest). The NATS subjects are the JetStream
 * stream's republished copies, "live.events.<topic>" and "live.users.<sub>", whose
 * Nats-Sequence header is the event's seq and whose Nats-Last-Sequence is the previous seq
 * of the same subject (so a receiver can tell a gap from a quiet topic). auth.revoked is
 * always subscribed and reaches every port, and so does a resync notice after every NATS
 * reconnection (what was published while disconnected did not arrive: look for gaps).
 *
 * A mailbox is bounded (100,000 messages; beyond, messages are dropped and counted in
 * sc_edge_bus_dropped_total) and wakes its worker through an eventfd only when it goes from
 * empty to not empty. This replaced a ZeroMQ inproc PUB/SUB hop after a measurement
 * (bench/zmqhop; docs/ARCHITECTURE.md "The fabric").
 *
 * Threads: fab_create/fab_destroy on the main thread; a fab_port and every fab_port_*
 * call on its worker's thread; the NATS callbacks on nats.c's threads; the settler (one
 * thread) takes the round trips that confirm new subscriptions. Prefix fab_. */
#ifndef EDGE_FABRIC_H
#define EDGE_FABRIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bus.h"
#include "ws/wsc.h"

typedef struct fabric fabric;
typedef struct fab_port fab_port;

enum fab_kind {
    FAB_EVENT = 'e',   /* events.<topic>: name is the topic */
    FAB_USER = 'u',    /* users.<sub>: name is the user; delivered as topic "user" */
    FAB_REVOKED = 'r', /* auth.revoked: data is its JSON */
    FAB_RESYNC = 's',  /* NATS reconnected: nothing else */
    FAB_SETTLED = 'c', /* the settler came back: see fab_port_settled (seq: how far) */
};

/* max_data: bus payloads over this are dropped (counted). deflate: also compress each event
 * of at least deflate_min bytes once, for permessage-deflate clients (kept when smaller).
 * Returns 0 or a negative code. */
int fab_create(fabric **out, bus *b, size_t max_data, bool deflate, size_t deflate_min);
void fab_destroy(fabric *f); /* after every port is closed; NULL ok */
/* The count of open connections that negotiated permessage-deflate, for the WebSocket core to
 * keep (wsc_config.deflate_live): while it is 0 no event is compressed ahead (a connection
 * that opens meanwhile has its events compressed by its worker). Owned by f. */
atomic_int *fab_deflate_live(fabric *f);
/* How many times a bus message may have been lost before reaching the workers: the fabric's
 * drops (a full worker mailbox, over the size limit) plus bus_disruptions. Only grows; a
 * worker that sees it change knows an event may be missing although none was reported for
 * its topic (it is healed at the topic's next event). Thread-safe. */
uint64_t fab_disruptions(fabric *f);

int fab_port_open(fabric *f, fab_port **out);
void fab_port_close(fab_port *p); /* no message reaches it after this (its names are
                                   * unwatched by their sessions); NULL ok */
/* The mailbox's eventfd for the worker's loop: readable when messages wait. On every
 * wake-up, fab_port_ack, then drain with fab_port_recv until it returns 0 (draining also
 * before sleeping, without an ack, is fine and keeps latency down). */
int fab_port_fd(const fab_port *p);
void fab_port_ack(fab_port *p);

/* Starts / stops this port's interest in a topic or user. Counted: only the first watch and
 * the last unwatch of a name act; the NATS subscription itself is made by the settler
 * thread. 0, or -EINVAL (a name too long) or -ENOMEM.
 * *wait: 0 when NATS has confirmed the name's subscription, else the number that
 * fab_port_settled must reach before the caller tells a client "subscribed" (or "welcome",
 * for an inbox): until then the caller holds that client's writes. */
/* Called when the process gains its first (on) or loses its last (off) interest in a topic,
 * on the watching worker's thread with the fabric's lock held: it must only hand the news on
 * (presence_occupancy queues it). Users' inboxes are not reported. Set before any watch. */
void fab_set_interest_fn(fabric *f, void (*fn)(void *ud, const char *topic, bool on), void *ud);
int fab_watch(fab_port *p, enum fab_kind kind, const char *name, uint64_t *wait);
void fab_unwatch(fab_port *p, enum fab_kind kind, const char *name);
/* Names this process has interest in now: topics (events) and users (inboxes): the server
 * API's counts. Any thread. */
void fab_counts(fabric *f, long *topics, long *users);
/* Asks the fabric's settler thread to confirm this port's new NATS subscriptions with one
 * round trip (PING/PONG, bounded by 1 s), shared by every worker that asked meanwhile. Never
 * blocks: call it once per loop iteration. When the round trip is over (answered or not),
 * fab_port_settled rises and a FAB_SETTLED message wakes the worker. */
void fab_port_settle(fab_port *p);
/* How far the settler got for this port: every wait up to this number is over (the flush
 * may have failed: then the subscriptions stay unconfirmed). */
uint64_t fab_port_settled(const fab_port *p);
/* Every subscription numbered up to this was confirmed by a flush that succeeded. */
uint64_t fab_port_live(const fab_port *p);
/* A new number to wait for: the next flush covers it (a retry after a failed one). */
uint64_t fab_port_ticket(fab_port *p);

typedef struct fab_msg {
    enum fab_kind kind;
    const char *name; /* topic or user (FAB_EVENT, FAB_USER); valid until the next
                       * fab_port_recv or fab_port_close */
    wsc_frame *frame; /* FAB_EVENT, FAB_USER: the framed event, a reference for the caller */
    uint64_t seq;     /* FAB_EVENT, FAB_USER: the event's stream sequence (0: unknown) */
    uint64_t prev;    /* ... and the previous one of the same subject (0: none or unknown) */
    char *data;       /* FAB_REVOKED: NUL-terminated JSON, malloc'd for the caller */

    /* FAB_EVENT, FAB_USER: when the fabric queued it for this worker (CLOCK_MONOTONIC,
     * microseconds): how long it waited in the mailbox */
    uint64_t queued_us;
} fab_msg;

/* The same frame as a live event's, for a replayed one (any thread). NULL: no memory. */
wsc_frame *fab_frame_event(const char *topic, uint64_t seq, const char *data, size_t len);

/* Next message without blocking: 1 and *m (the caller owns m->frame / m->data), or 0 when
 * none is waiting. */
int fab_port_recv(fab_port *p, fab_msg *m);

#endif
