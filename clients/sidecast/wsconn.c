/* wsconn.c - the sidecast client's WebSocket connection. */
#include "wsconn.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "http.h"
#include "net.h"
#include "ws/ws_frame.h"
#include "ws/ws_http.h"
#include "ws/ws_reader.h"

#define RBUF_SIZE 65536
#define WRITE_TIMEOUT_MS 5000

struct wsconn {
    net_conn conn;
    bool closed; /* no more reading: a close or an error happened */
    bool close_sent;
    ws_reader reader;
    uint8_t *msgbuf; /* the reader's message buffer, grown on demand */
    size_t msgcap;
    size_t rpos, rlen; /* unread bytes rbuf[rpos..rlen) */
    int64_t last_rx;
    uint8_t rbuf[RBUF_SIZE];
};

static int send_frame(wsconn *c, uint8_t opcode, const void *payload, size_t len, int timeout_ms)
{
    uint8_t mask[4];
    if (net_random(mask, sizeof mask) < 0) return -EIO;
    uint8_t *frame = malloc(WS_FRAME_HEADER_MAX + len);
    if (!frame) return -ENOMEM;
    size_t hl = ws_frame_header_encode(frame, opcode, true, 0, len, mask);
    if (len) memcpy(frame + hl, payload, len);
    ws_frame_unmask(frame + hl, len, mask, 0);
    int rc = net_conn_write(&c->conn, frame, hl + len, net_now_ms() + timeout_ms);
    explicit_bzero(frame, hl + len); /* a refresh message carries a token */
    free(frame);
    return rc;
}

int wsconn_open(const char *url, const char *bearer, int timeout_ms, net_tls *tls, wsconn **out,
                int *http_status)
{
    *out = NULL;
    *http_status = 0;
    net_url u;
    int rc = net_url_parse(url, &u);
    if (rc < 0) return rc;
    if (strcmp(u.scheme, "ws") != 0 && strcmp(u.scheme, "wss") != 0) return -EINVAL;
    int64_t deadline = net_now_ms() + timeout_ms;
    wsconn *c = calloc(1, sizeof *c);
    if (!c) return -ENOMEM;
    rc = net_conn_open(&c->conn, &u, tls, deadline);
    if (rc < 0) {
        free(c);
        return rc;
    }

    uint8_t rnd[16];
    char key[32];
    if (net_random(rnd, sizeof rnd) < 0) {
        rc = -EIO;
        goto error;
    }
    ws_key_client(rnd, key);

    size_t cap = 1024 + strlen(u.path) + (bearer ? strlen(bearer) : 0);
    char *req = malloc(cap);
    if (!req) {
        rc = -ENOMEM;
        goto error;
    }
    int n = snprintf(req, cap,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Protocol: sidecast.v1\r\nUser-Agent: sidecast-cli/1\r\n"
                     "%s%s%s\r\n",
                     u.path, u.hostport, key, bearer ? "Authorization: Bearer " : "",
                     bearer ? bearer : "", bearer ? "\r\n" : "");
    rc = (n < 0 || (size_t)n >= cap) ? -EINVAL : net_conn_write(&c->conn, req, (size_t)n, deadline);
    explicit_bzero(req, cap);
    free(req);
    if (rc < 0) goto error;

    /* the 101, bounded; bytes after it are already frames */
    http_head h;
    int hl = SC_EINCOMPLETE;
    while (hl == SC_EINCOMPLETE) {
        if (c->rlen == sizeof c->rbuf || c->rlen >= HTTP_HEAD_MAX) {
            rc = -EPROTO;
            goto error;
        }
        ssize_t r = net_conn_read(&c->conn, c->rbuf + c->rlen, sizeof c->rbuf - c->rlen, deadline);
        if (r < 0) { /* -EINTR too: the caller decides whether to try again */
            rc = (int)r;
            goto error;
        }
        if (r == 0) {
            rc = -ECONNRESET;
            goto error;
        }
        c->rlen += (size_t)r;
        hl = http_head_parse((const char *)c->rbuf, c->rlen, &h);
        if (hl < 0 && hl != SC_EINCOMPLETE) {
            rc = -EPROTO;
            goto error;
        }
    }
    *http_status = h.status;
    rc = -EPROTO;
    if (h.status != 101) goto error;
    char accept[WS_KEY_ACCEPT_LEN + 1];
    ws_key_accept(key, accept);
    size_t vl;
    const char *v = http_head_get(&h, "Sec-WebSocket-Accept", &vl);
    if (!v || vl != WS_KEY_ACCEPT_LEN || memcmp(v, accept, vl) != 0) goto error;
    v = http_head_get(&h, "Upgrade", &vl);
    if (!v || vl != 9 || strncasecmp(v, "websocket", 9) != 0) goto error;
    v = http_head_get(&h, "Sec-WebSocket-Protocol", &vl);
    if (v && (vl != 11 || memcmp(v, "sidecast.v1", 11) != 0)) goto error;
    if (http_head_get(&h, "Sec-WebSocket-Extensions", &vl)) goto error; /* none offered */
    c->rpos = (size_t)hl;
    ws_reader_config rc_cfg = {.from_client = false, .max_message = WSCONN_MAX_MESSAGE};
    ws_reader_init(&c->reader, &rc_cfg, NULL, 0);
    c->last_rx = net_now_ms();
    *out = c;
    return 0;

error:
    net_conn_close(&c->conn);
    free(c);
    return rc;
}

/* Ends the connection after a protocol failure or a close: the socket stays open for
 * wsconn_close, but nothing more is read. */
static int finish(wsconn *c, wsconn_msg *m, uint16_t code, const char *reason, size_t rlen)
{
    c->closed = true;
    m->close_code = code;
    if (rlen >= sizeof m->reason) rlen = sizeof m->reason - 1;
    memcpy(m->reason, reason, rlen);
    m->reason[rlen] = '\0';
    return WSCONN_CLOSED;
}

int wsconn_recv(wsconn *c, int64_t deadline, wsconn_msg *m)
{
    memset(m, 0, sizeof *m);
    if (c->closed) return finish(c, m, WS_CLOSE_ABNORMAL, "closed", 6);
    for (;;) {
        while (c->rpos < c->rlen) {
            ws_event ev;
            size_t k = ws_reader_feed(&c->reader, c->rbuf + c->rpos, c->rlen - c->rpos, &ev);
            c->rpos += k;
            switch (ev.type) {
            case WS_EV_NONE: break;
            case WS_EV_TEXT:
                m->text = (const char *)ev.data;
                m->len = ev.len;
                return 1;
            case WS_EV_BINARY:
            case WS_EV_PONG: continue;
            case WS_EV_PING:
                if (send_frame(c, WS_OP_PONG, ev.data, ev.len, WRITE_TIMEOUT_MS) < 0)
                    return finish(c, m, WS_CLOSE_ABNORMAL, "write failed", 12);
                continue;
            case WS_EV_NEED_BUFFER: {
                size_t want = c->msgcap * 2 > ev.len ? c->msgcap * 2 : ev.len;
                if (want > WSCONN_MAX_MESSAGE) want = WSCONN_MAX_MESSAGE;
                uint8_t *nb = realloc(c->msgbuf, want);
                if (!nb) {
                    send_frame(c, WS_OP_CLOSE, NULL, 0, WRITE_TIMEOUT_MS);
                    c->close_sent = true;
                    return finish(c, m, WS_CLOSE_ABNORMAL, "out of memory", 13);
                }
                c->msgbuf = nb;
                c->msgcap = want;
                ws_reader_set_buffer(&c->reader, nb, want);
                continue;
            }
            case WS_EV_CLOSE: {
                uint8_t pl[WS_FRAME_CTRL_MAX];
                size_t pn = ws_frame_close_encode(pl, ev.code == WS_CLOSE_NO_STATUS ? 0 : ev.code,
                                                  NULL, 0);
                if (!c->close_sent) send_frame(c, WS_OP_CLOSE, pl, pn, WRITE_TIMEOUT_MS);
                c->close_sent = true;
                return finish(c, m, ev.code, (const char *)ev.data, ev.len);
            }
            case WS_EV_ERROR: {
                uint8_t pl[WS_FRAME_CTRL_MAX];
                const char *why = ws_frame_err_str(ev.err);
                size_t pn = ws_frame_close_encode(pl, ev.code, why, strlen(why));
                send_frame(c, WS_OP_CLOSE, pl, pn, WRITE_TIMEOUT_MS);
                c->close_sent = true;
                return finish(c, m, ev.code, why, strlen(why));
            }
            }
        }
        /* everything handed out so far is done with: reuse the read buffer */
        c->rpos = c->rlen = 0;
        if (ws_reader_buffered(&c->reader) == 0 && c->msgcap > RBUF_SIZE) {
            free(c->msgbuf); /* a big message went by: do not keep its buffer */
            c->msgbuf = NULL;
            c->msgcap = 0;
            ws_reader_set_buffer(&c->reader, NULL, 0);
        }
        ssize_t r = net_conn_read(&c->conn, c->rbuf, sizeof c->rbuf, deadline);
        if (r == -ETIMEDOUT) return 0;
        if (r == -EINTR) return -EINTR;
        if (r <= 0)
            return finish(c, m, WS_CLOSE_ABNORMAL,
                          r == 0 ? "connection closed" : "connection reset", r == 0 ? 17 : 16);
        c->rlen = (size_t)r;
        c->last_rx = net_now_ms();
    }
}

int wsconn_send_text(wsconn *c, const char *text, size_t len, int timeout_ms)
{
    if (c->closed || c->close_sent) return -EPIPE;
    return send_frame(c, WS_OP_TEXT, text, len, timeout_ms);
}

int wsconn_ping(wsconn *c)
{
    if (c->closed || c->close_sent) return -EPIPE;
    return send_frame(c, WS_OP_PING, NULL, 0, WRITE_TIMEOUT_MS);
}

int64_t wsconn_last_rx(const wsconn *c) { return c->last_rx; }

void wsconn_close(wsconn *c, uint16_t code, int timeout_ms)
{
    if (!c) return;
    if (!c->close_sent && !c->closed) {
        uint8_t pl[WS_FRAME_CTRL_MAX];
        size_t pn = ws_frame_close_encode(pl, code, NULL, 0);
        if (send_frame(c, WS_OP_CLOSE, pl, pn, timeout_ms) == 0) {
            c->close_sent = true;
            /* wait for the peer's close (or the end of the stream), skipping messages */
            int64_t deadline = net_now_ms() + timeout_ms;
            wsconn_msg m;
            int rc;
            do rc = wsconn_recv(c, deadline, &m);
            while (rc == 1 || rc == -EINTR);
        }
    }
    net_conn_close(&c->conn);
    free(c->msgbuf);
    free(c);
}
