/* wsconn.h - a blocking WebSocket client connection (RFC 6455) on the edge's pure code:
 * ws_reader (from_client = false) reads the server's frames, ws_frame_header_encode writes
 * masked client frames, ws_key_accept checks the handshake.
 *
 * One connection, one thread. Every wait has a deadline; messages are bounded by
 * WSCONN_MAX_MESSAGE. Pings are answered inside wsconn_recv. Prefix wsconn_. */
#ifndef SIDECAST_WSCONN_H
#define SIDECAST_WSCONN_H

#include <stddef.h>
#include <stdint.h>

#include "net.h"

#define WSCONN_MAX_MESSAGE (1024 * 1024)
#define WSCONN_CLOSED (-1000) /* wsconn_recv: the connection is over, see close_code */

typedef struct wsconn wsconn;

/* Opens url (ws://host:port/path, or wss:// through tls: see net_conn_open) offering
 * subprotocol sidecast.v1, with "Authorization: Bearer <bearer>" when bearer is not NULL,
 * within timeout_ms. Returns 0 with *out (release with wsconn_close), or a negative errno:
 * network and TLS errors as net_conn_open (NET_ETLS_VERIFY, NET_ETLS: the reason in
 * tls->error), -ETIMEDOUT, -EINTR (a signal), -EPROTO (no valid 101; *http_status holds the
 * status when one came, else 0), -EINVAL (bad URL, or wss without tls). */
int wsconn_open(const char *url, const char *bearer, int timeout_ms, net_tls *tls, wsconn **out,
                int *http_status);

typedef struct wsconn_msg {
    const char *text; /* a text message (not NUL-terminated), valid until the next call */
    size_t len;
    uint16_t close_code; /* after WSCONN_CLOSED: the peer's code, 1005 when it sent none,
                          * 1006 when the connection dropped without a close frame, or the
                          * code we sent for a protocol error */
    char reason[128];    /* after WSCONN_CLOSED: the peer's reason or why we dropped */
} wsconn_msg;

/* Waits until deadline (net_now_ms clock) for the next text message. Returns 1 with
 * m->text; 0 at the deadline; -EINTR when a signal arrived; WSCONN_CLOSED when the
 * connection ended (m->close_code, m->reason). Binary messages are skipped, pings answered. */
int wsconn_recv(wsconn *c, int64_t deadline, wsconn_msg *m);

/* Sends one text message (masked), within timeout_ms. 0 or a negative errno. */
int wsconn_send_text(wsconn *c, const char *text, size_t len, int timeout_ms);

/* Sends a ping (empty payload). 0 or a negative errno. */
int wsconn_ping(wsconn *c);

/* Milliseconds (net_now_ms) when bytes last arrived. */
int64_t wsconn_last_rx(const wsconn *c);

/* Closing handshake with code (when still open): sends a close frame, waits at most
 * timeout_ms for the peer's, then closes the socket and frees c. Accepts NULL. */
void wsconn_close(wsconn *c, uint16_t code, int timeout_ms);

#endif
