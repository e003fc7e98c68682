/* ingress.h - the bridge's ZeroMQ side: one thread that owns every ZeroMQ socket (a SUB or
 * PULL per endpoint of the route table, and a monitor socket for each), reads what arrives,
 * maps it through the table (zmap.h) and publishes it on the bus as the producer publishes
 * events: a core NATS publish on "events.<topic>" whose payload is the event's JSON data,
 * stored by the history stream like any other event.
 *
 * Back-pressure: the thread publishes in line. A publish goes into nats.c's write buffer,
 * written to the socket when it fills, so a slow NATS server slows the thread, ZeroMQ's
 * queue (ZMQ_RCVHWM) fills, and then ZeroMQ drops (SUB) or makes the PUSH peer wait (PULL).
 * While NATS is away, nats.c keeps publishes for the reconnection; max_buffered bounds that
 * (over it, new events are dropped and counted as "backlog"). Prefix ingress_. */
#ifndef SC_BRIDGE_INGRESS_H
#define SC_BRIDGE_INGRESS_H

#include <stddef.h>

#include "bus.h"
#include "zmap.h"

typedef struct ingress_cfg {
    long rcvhwm;       /* ZMQ_RCVHWM of every socket (messages) */
    long max_frame;    /* ZMQ_MAXMSGSIZE (bytes): ZeroMQ disconnects a peer over it */
    long max_message;  /* largest event data published (bytes); larger: "too_large" */
    long max_buffered; /* bytes nats.c may hold unsent; over it: "backlog" */
    int poll_ms;       /* longest wait in zmq_poll, so that a stop is seen in time */
} ingress_cfg;

typedef struct ingress ingress;

/* Creates the ZeroMQ context, sets every endpoint's socket up (connect, or bind when the
 * table says so; ZeroMQ connects in the background, so a peer that is not there yet is no
 * error) and starts the thread. map and b are borrowed and must outlive the ingress.
 * Returns 0 and *out, or a negative code after logging which endpoint failed. */
int ingress_start(ingress **out, const zmap *map, bus *b, const ingress_cfg *cfg);
/* Stops the thread (within poll_ms), closes the sockets without lingering, frees; accepts
 * NULL. */
void ingress_stop(ingress *in);
/* 1 once every endpoint's socket is set up (not: connected to its peer). Thread-safe. */
int ingress_ready(const ingress *in);
/* How many endpoints have at least one connected peer (monitor events). Thread-safe. */
size_t ingress_connected(const ingress *in);

#endif
