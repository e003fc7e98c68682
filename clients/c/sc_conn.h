/* sc_conn.h - the C client library's transport: one non-blocking WebSocket client
 * connection (TCP, TLS through OpenSSL, the RFC 6455 handshake and frames on common/ws's
 * codec), driven by whoever polls its fd. Internal to clients/c. Prefix sc_conn_.
 *
 * Nothing here waits but name resolution in sc_conn_open. Bytes to send are queued (bounded)
 * and written as the socket takes them. */
#ifndef SC_CONN_H
#define SC_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sc_wire.h"

struct ssl_ctx_st;
typedef struct sc_conn sc_conn;

/* Called by sc_conn_io for each text message (text not NUL-terminated, valid during the
 * call). The callback may queue messages (sc_conn_send_text) but not free the connection. */
typedef void (*sc_conn_msg_fn)(void *ud, const char *text, size_t len);

/* Starts connecting to u (resolution happens here, blocking), queueing the handshake with
 * "Authorization: Bearer <bearer>". ctx: the TLS context for wss:// (NULL for ws://).
 * 0 with *out, or a negative errno with why (a short reason, never the token). */
int sc_conn_open(const sc_wire_url *u, const char *bearer, struct ssl_ctx_st *ctx,
                 size_t max_message, size_t max_out, sc_conn **out, char *why, size_t wl);

int sc_conn_fd(const sc_conn *c);
/* True when the connection waits for the socket to take bytes (POLLOUT wanted). */
bool sc_conn_want_write(const sc_conn *c);
/* True when it stopped reading with input left (call sc_conn_io again without waiting). */
bool sc_conn_more(const sc_conn *c);
/* True once the WebSocket handshake succeeded. */
bool sc_conn_open_done(const sc_conn *c);
/* Monotonic ms when bytes last arrived. */
int64_t sc_conn_last_rx(const sc_conn *c);

/* Does the I/O the socket allows now: connect, TLS handshake, write the queue, read and hand
 * out messages. 0 while the connection lives; -EPIPE once it ended, with code (the peer's
 * close code, 1006 for a drop, 1015 for a TLS failure, or 1002 for a protocol error) and
 * why set. */
int sc_conn_io(sc_conn *c, sc_conn_msg_fn fn, void *ud, int *code, char *why, size_t wl);

/* Queues a text message (masked frame). 0, -ENOBUFS (over max_out), -EPIPE (closing). */
int sc_conn_send_text(sc_conn *c, const char *text, size_t len);
/* Sends a ping. 0 or as sc_conn_send_text. */
int sc_conn_ping(sc_conn *c);

/* Queues a close frame with code when open, writes what the socket takes now, closes the
 * socket and frees c (no wait for the peer). Accepts NULL. */
void sc_conn_close(sc_conn *c, uint16_t code);

#endif
