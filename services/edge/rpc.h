/* rpc.h - a connection's requests to the bus whose replies come back to its worker: clients
 * calling back-end methods over their socket (sidecast.v1 "rpc": a NATS request to
 * rpc.<method>), and publishes acked by JetStream (a publish with an id).
 *
 * Threads. An rpc_q belongs to one worker's loop; rpc_start, rpc_cancel and the done
 * callbacks run there. The reply arrives on a nats.c thread, which queues it and wakes the
 * loop; the loop's owner calls rpc_q_poll from its wake callback (as for replay.h).
 *
 * Bounds: the request's timeout (rpc_cfg.timeout_ms); calls in flight per connection are the
 * session's to count (EDGE_RPC_INFLIGHT); the bus bounds what is pending in all. A call
 * whose connection went away is cancelled: its reply is dropped when it comes.
 * Prefix rpc_. */
#ifndef EDGE_RPC_H
#define EDGE_RPC_H

#include <stddef.h>

#include "bus.h"
#include "ws/loop.h"

typedef struct rpc_q rpc_q;
typedef struct rpc_call rpc_call;

typedef struct rpc_cfg {
    int timeout_ms;     /* a call not answered by then: -ETIMEDOUT (unless rpc_start says) */
    int max_timeout_ms; /* the longest any call waits: how long rpc_q_destroy may wait */
} rpc_cfg;

/* Runs once on the worker for a call not cancelled: result 0 and the reply (valid during the
 * call only), or -ETIMEDOUT, SC_ENORESPONDERS, -ENOTCONN and NULL. */
typedef void (*rpc_done_fn)(void *ud, int result, const bus_msg *reply);

int rpc_q_create(rpc_q **out, bus *b, loop *l, const rpc_cfg *cfg);
/* The worker's wake callback: runs the done callbacks of the replies that came. */
void rpc_q_poll(rpc_q *q);
/* Waits (bounded by the timeout) for the calls in flight, then frees. NULL ok. */
void rpc_q_destroy(rpc_q *q);

/* Sends a request to subject (data: its body; hdrs: the caller's identity...), answered
 * within timeout_ms (0: the queue's). Returns the call, or NULL with *err (-ENOTCONN,
 * -EAGAIN: the bus's bound, -ENOMEM). */
rpc_call *rpc_start(rpc_q *q, const char *subject, const char *data, size_t len,
                    const bus_hdr *hdrs, size_t nhdr, int timeout_ms, rpc_done_fn fn, void *ud,
                    int *err);
/* Worker: done will not run (the connection is gone); the call is freed once answered. */
void rpc_cancel(rpc_call *c);

#endif
