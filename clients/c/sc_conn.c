/* sc_conn.c - the C client library's non-blocking WebSocket connection. */
#include "sc_conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "err.h"
#include "ws/ws_frame.h"
#include "ws/ws_key.h"
#include "ws/ws_reader.h"
#include "ws/ws_url.h"

#define RBUF_SIZE 65536
#define READS_PER_IO 64 /* reads per sc_conn_io before giving the caller's loop a turn */
#define ADDRS_MAX 8     /* addresses of a name tried in turn (IPv6 and IPv4 of localhost...) */

enum phase { PH_TCP, PH_TLS, PH_HTTP, PH_OPEN };

struct sc_conn {
    int fd;
    SSL *ssl;
    enum phase phase;
    bool ended, close_sent, more, want_write_tls, failed;
    int end_code;
    char end_why[256];
    char accept[WS_KEY_ACCEPT_LEN + 1];
    char host[WS_URL_HOST_MAX + 1];
    ws_reader reader;
    uint8_t *msgbuf;
    size_t msgcap, max_message;
    uint8_t *out; /* queued bytes out[opos..olen) */
    size_t opos, olen, ocap, max_out;
    size_t hlen;                             /* PH_HTTP: bytes of the answer head in rbuf */
    struct sockaddr_storage addr[ADDRS_MAX]; /* what the name resolved to, tried in turn */
    socklen_t alen[ADDRS_MAX];
    int afam[ADDRS_MAX], aproto[ADDRS_MAX], naddr, at;
    int64_t last_rx;
    uint8_t rbuf[RBUF_SIZE];
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Appends n bytes to the queue. */
static int queue(sc_conn *c, const void *p, size_t n)
{
    if (c->olen - c->opos + n > c->max_out) return -ENOBUFS;
    if (c->opos > 0 && c->olen + n > c->ocap) { /* slide what is left to the front */
        memmove(c->out, c->out + c->opos, c->olen - c->opos);
        c->olen -= c->opos;
        c->opos = 0;
    }
    if (c->olen + n > c->ocap) {
        size_t want = c->ocap ? c->ocap : 4096;
        while (want < c->olen + n) want *= 2;
        uint8_t *nb = realloc(c->out, want);
        if (!nb) return -ENOMEM;
        c->out = nb;
        c->ocap = want;
    }
    memcpy(c->out + c->olen, p, n);
    c->olen += n;
    return 0;
}

static int send_frame(sc_conn *c, uint8_t opcode, const void *payload, size_t len)
{
    if (c->ended || c->close_sent) return -EPIPE;
    uint8_t mask[4];
    if (RAND_bytes(mask, sizeof mask) != 1) return -EIO;
    uint8_t hdr[WS_FRAME_HEADER_MAX];
    size_t hl = ws_frame_header_encode(hdr, opcode, true, 0, len, mask);
    if (c->olen - c->opos + hl + len > c->max_out) return -ENOBUFS;
    int rc = queue(c, hdr, hl);
    if (rc == 0 && len) rc = queue(c, payload, len);
    if (rc < 0) return rc;
    ws_frame_unmask(c->out + c->olen - len, len, mask, 0);
    if (opcode == WS_OP_CLOSE) c->close_sent = true;
    return 0;
}

int sc_conn_send_text(sc_conn *c, const char *text, size_t len)
{
    return send_frame(c, WS_OP_TEXT, text, len);
}

int sc_conn_ping(sc_conn *c) { return send_frame(c, WS_OP_PING, NULL, 0); }

int sc_conn_fd(const sc_conn *c) { return c->fd; }
bool sc_conn_more(const sc_conn *c) { return c->more; }
bool sc_conn_open_done(const sc_conn *c) { return c->phase == PH_OPEN; }
int64_t sc_conn_last_rx(const sc_conn *c) { return c->last_rx; }

bool sc_conn_want_write(const sc_conn *c)
{
    return c->phase == PH_TCP || c->want_write_tls || (c->phase != PH_TLS && c->olen > c->opos);
}

static void conn_free(sc_conn *c)
{
    if (c->ssl) {
        if (!c->failed && c->phase >= PH_HTTP) SSL_shutdown(c->ssl); /* best effort */
        SSL_free(c->ssl);
    }
    if (c->fd >= 0) close(c->fd);
    ERR_clear_error();
    if (c->out) explicit_bzero(c->out, c->ocap); /* the handshake, a refresh: tokens */
    free(c->out);
    free(c->msgbuf);
    free(c);
}

/* Starts a non-blocking connect to the next address. The new socket is made before the old
 * one is closed, so its number differs and the caller's poll registration notices the change.
 * 0, or the last failure's -errno when no address is left. */
static int tcp_next(sc_conn *c)
{
    int err = -ECONNREFUSED;
    while (c->at < c->naddr) {
        int i = c->at++;
        int fd = socket(c->afam[i], SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, c->aproto[i]);
        if (fd < 0) {
            err = -errno;
            continue;
        }
        if (connect(fd, (struct sockaddr *)&c->addr[i], c->alen[i]) == 0 || errno == EINPROGRESS) {
            if (c->fd >= 0) close(c->fd);
            c->fd = fd;
            if (c->ssl && SSL_set_fd(c->ssl, fd) != 1) return -ENOMEM;
            return 0;
        }
        err = -errno;
        close(fd);
    }
    return err;
}

int sc_conn_open(const sc_wire_url *u, const char *bearer, struct ssl_ctx_st *ctx,
                 size_t max_message, size_t max_out, sc_conn **out, char *why, size_t wl)
{
    *out = NULL;
    if (u->tls && !ctx) return -EINVAL;
    char service[16];
    snprintf(service, sizeof service, "%d", u->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(u->host, service, &hints, &res);
    if (gai != 0) {
        snprintf(why, wl, "cannot resolve %s: %s", u->host, gai_strerror(gai));
        return -EHOSTUNREACH;
    }
    sc_conn *c = calloc(1, sizeof *c);
    if (!c) {
        freeaddrinfo(res);
        return -ENOMEM;
    }
    c->fd = -1;
    c->max_message = max_message;
    c->max_out = max_out + 16384; /* room for the handshake beside the caller's bound */
    snprintf(c->host, sizeof c->host, "%s", u->host);
    for (struct addrinfo *ai = res; ai && c->naddr < ADDRS_MAX; ai = ai->ai_next) {
        if (ai->ai_addrlen > sizeof c->addr[0]) continue;
        memcpy(&c->addr[c->naddr], ai->ai_addr, ai->ai_addrlen);
        c->alen[c->naddr] = ai->ai_addrlen;
        c->afam[c->naddr] = ai->ai_family;
        c->aproto[c->naddr++] = ai->ai_protocol;
    }
    freeaddrinfo(res);
    int rc = tcp_next(c);
    if (rc < 0) {
        snprintf(why, wl, "cannot connect to %s: %s", u->hostport, strerror(-rc));
        conn_free(c);
        return rc;
    }
    c->phase = PH_TCP;

    if (u->tls) {
        c->ssl = SSL_new(ctx);
        unsigned char addr[sizeof(struct in6_addr)];
        bool ip = inet_pton(AF_INET, u->host, addr) == 1 || inet_pton(AF_INET6, u->host, addr) == 1;
        X509_VERIFY_PARAM *vp = c->ssl ? SSL_get0_param(c->ssl) : NULL;
        static const unsigned char alpn[] = "\x08http/1.1";
        if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1 ||
            !(X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS), 1) ||
            !(ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, u->host)
                 : X509_VERIFY_PARAM_set1_host(vp, u->host, 0) &&
                       SSL_set_tlsext_host_name(c->ssl, u->host)) ||
            SSL_set_alpn_protos(c->ssl, alpn, sizeof alpn - 1) != 0) {
            snprintf(why, wl, "cannot set up TLS for %s", u->host);
            conn_free(c);
            return -EINVAL;
        }
        SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        SSL_set_connect_state(c->ssl);
    }

    uint8_t rnd[16];
    char key[WS_KEY_LEN + 1];
    if (RAND_bytes(rnd, sizeof rnd) != 1) {
        conn_free(c);
        return -EIO;
    }
    ws_key_client(rnd, key);
    ws_key_accept(key, c->accept); /* what the 101 must carry */
    size_t cap = 1024 + strlen(u->path) + (bearer ? strlen(bearer) : 0);
    char *req = malloc(cap);
    if (!req) {
        conn_free(c);
        return -ENOMEM;
    }
    int n = snprintf(req, cap,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Protocol: sidecast.v1\r\nUser-Agent: libsidecast/1\r\n"
                     "%s%s%s\r\n",
                     u->path, u->hostport, key, bearer ? "Authorization: Bearer " : "",
                     bearer ? bearer : "", bearer ? "\r\n" : "");
    rc = (n < 0 || (size_t)n >= cap) ? -EINVAL : queue(c, req, (size_t)n);
    explicit_bzero(req, cap);
    free(req);
    if (rc < 0) {
        conn_free(c);
        return rc;
    }
    ws_reader_config rcfg = {.from_client = false, .max_message = max_message};
    ws_reader_init(&c->reader, &rcfg, NULL, 0);
    c->last_rx = now_ms();
    *out = c;
    return 0;
}

static int end(sc_conn *c, int code, const char *why)
{
    if (!c->ended) {
        c->ended = true;
        c->end_code = code;
        snprintf(c->end_why, sizeof c->end_why, "%s", why);
    }
    return -EPIPE;
}

static const char *ssl_reason(const char *fallback)
{
    const char *r = ERR_reason_error_string(ERR_peek_last_error());
    return r ? r : fallback;
}

static int tls_handshake(sc_conn *c)
{
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(c->ssl);
    c->want_write_tls = false;
    if (r == 1) {
        c->phase = PH_HTTP;
        return 0;
    }
    int sys = errno, e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) return 1;
    if (e == SSL_ERROR_WANT_WRITE) {
        c->want_write_tls = true;
        return 1;
    }
    c->failed = true;
    char why[200];
    long v = SSL_get_verify_result(c->ssl);
    if (v != X509_V_OK)
        snprintf(why, sizeof why, "certificate verify failed: %s",
                 X509_verify_cert_error_string(v));
    else if (e == SSL_ERROR_SYSCALL && sys != 0)
        return end(c, 1006, strerror(sys));
    else {
        int r2 = ERR_GET_REASON(ERR_peek_last_error());
        bool plain = r2 == SSL_R_WRONG_VERSION_NUMBER || r2 == SSL_R_UNEXPECTED_EOF_WHILE_READING ||
                     e == SSL_ERROR_SYSCALL;
        snprintf(why, sizeof why, "TLS handshake failed: %s%s",
                 e == SSL_ERROR_SYSCALL ? "the server closed the connection"
                                        : ssl_reason("protocol error"),
                 plain ? " (a plain, not a TLS, server on that port?)" : "");
    }
    ERR_clear_error();
    return end(c, 1015, why);
}

/* Writes what the socket takes. 0, or -EPIPE when the connection broke. */
static int flush(sc_conn *c)
{
    while (c->olen > c->opos) {
        size_t n = c->olen - c->opos;
        if (c->ssl) {
            size_t w = 0;
            ERR_clear_error();
            errno = 0;
            if (SSL_write_ex(c->ssl, c->out + c->opos, n, &w) == 1) {
                c->opos += w;
                continue;
            }
            int e = SSL_get_error(c->ssl, 0);
            if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) return 0;
            c->failed = true;
            return end(c, 1006, "TLS write failed");
        }
        ssize_t w = send(c->fd, c->out + c->opos, n, MSG_NOSIGNAL);
        if (w > 0) {
            c->opos += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
        return end(c, 1006, w < 0 ? strerror(errno) : "write failed");
    }
    c->opos = c->olen = 0;
    return 0;
}

/* Reads into buf. > 0 bytes; 0 nothing now; -EPIPE ended. */
static ssize_t rd(sc_conn *c, uint8_t *buf, size_t n)
{
    if (c->ssl) {
        size_t got = 0;
        ERR_clear_error();
        errno = 0;
        if (SSL_read_ex(c->ssl, buf, n, &got) == 1) return (ssize_t)got;
        int sys = errno, e = SSL_get_error(c->ssl, 0);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
        if (e == SSL_ERROR_ZERO_RETURN) return end(c, 1006, "connection closed");
        c->failed = true;
        return end(c, 1006, sys ? strerror(sys) : "connection reset");
    }
    ssize_t r = recv(c->fd, buf, n, 0);
    if (r > 0) return r;
    if (r == 0) return end(c, 1006, "connection closed");
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
    return end(c, 1006, strerror(errno));
}

static int protocol_error(sc_conn *c, uint16_t code, const char *why)
{
    uint8_t pl[WS_FRAME_CTRL_MAX];
    size_t pn = ws_frame_close_encode(pl, code, why, strlen(why));
    send_frame(c, WS_OP_CLOSE, pl, pn);
    flush(c);
    return end(c, code, why);
}

/* Feeds rbuf[0..n) to the reader, handing out messages. 0 or -EPIPE. */
static int feed(sc_conn *c, uint8_t *in, size_t n, sc_conn_msg_fn fn, void *ud)
{
    while (n > 0 && !c->ended) {
        ws_event ev;
        size_t k = ws_reader_feed(&c->reader, in, n, &ev);
        in += k;
        n -= k;
        switch (ev.type) {
        case WS_EV_NONE: break;
        case WS_EV_TEXT: fn(ud, (const char *)ev.data, ev.len); break;
        case WS_EV_BINARY:
        case WS_EV_PONG: break;
        case WS_EV_PING:
            if (send_frame(c, WS_OP_PONG, ev.data, ev.len) == -ENOBUFS)
                return end(c, 1006, "send queue full");
            break;
        case WS_EV_NEED_BUFFER: {
            size_t want = c->msgcap * 2 > ev.len ? c->msgcap * 2 : ev.len;
            if (want > c->max_message) want = c->max_message;
            uint8_t *nb = realloc(c->msgbuf, want);
            if (!nb) return protocol_error(c, WS_CLOSE_INTERNAL, "out of memory");
            c->msgbuf = nb;
            c->msgcap = want;
            ws_reader_set_buffer(&c->reader, nb, want);
            break;
        }
        case WS_EV_CLOSE: {
            uint8_t pl[WS_FRAME_CTRL_MAX];
            size_t pn = ws_frame_close_encode(pl, ev.code == WS_CLOSE_NO_STATUS ? 0 : ev.code, NULL,
                                              0);
            if (!c->close_sent) send_frame(c, WS_OP_CLOSE, pl, pn);
            flush(c);
            char why[128];
            size_t rl = ev.len < sizeof why - 1 ? ev.len : sizeof why - 1;
            memcpy(why, ev.data, rl);
            why[rl] = '\0';
            return end(c, ev.code, rl ? why : "closed by the edge");
        }
        case WS_EV_ERROR: return protocol_error(c, ev.code, ws_frame_err_str(ev.err));
        }
    }
    if (ws_reader_buffered(&c->reader) == 0 && c->msgcap > RBUF_SIZE) {
        free(c->msgbuf); /* a big message went by: do not keep its buffer */
        c->msgbuf = NULL;
        c->msgcap = 0;
        ws_reader_set_buffer(&c->reader, NULL, 0);
    }
    return c->ended ? -EPIPE : 0;
}

static int io(sc_conn *c, sc_conn_msg_fn fn, void *ud)
{
    c->more = false;
    if (c->phase == PH_TCP) {
        struct pollfd p = {.fd = c->fd, .events = POLLOUT};
        if (poll(&p, 1, 0) <= 0) return 0;
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0) soerr = errno;
        if (soerr) /* refused there: the name's next address, if any */
            return tcp_next(c) == 0 ? 0 : end(c, 1006, strerror(soerr));
        c->phase = c->ssl ? PH_TLS : PH_HTTP;
    }
    if (c->phase == PH_TLS) {
        int r = tls_handshake(c);
        if (r != 0) return r < 0 ? r : 0;
    }
    if (flush(c) < 0) return -EPIPE;
    for (int i = 0; i < READS_PER_IO; i++) {
        if (c->phase == PH_HTTP) {
            if (c->hlen >= SC_WIRE_HEAD_MAX) return end(c, 1002, "handshake answer too long");
            ssize_t r = rd(c, c->rbuf + c->hlen, SC_WIRE_HEAD_MAX - c->hlen);
            if (r <= 0) return (int)r;
            c->last_rx = now_ms();
            c->hlen += (size_t)r;
            int status;
            int hl = sc_wire_handshake_parse((const char *)c->rbuf, c->hlen, c->accept, &status);
            if (hl == SC_EINCOMPLETE) continue;
            if (hl < 0) {
                char why[96];
                if (status)
                    snprintf(why, sizeof why, "the edge refused the handshake (HTTP %d)", status);
                else
                    snprintf(why, sizeof why, "not a WebSocket server");
                /* 403 from the edge: the token is not welcome (forbidden/revoked) */
                return end(c, status == 403 ? 4003 : status == 401 ? 4001 : 1002, why);
            }
            c->phase = PH_OPEN;
            size_t rest = c->hlen - (size_t)hl;
            memmove(c->rbuf, c->rbuf + hl, rest);
            if (rest && feed(c, c->rbuf, rest, fn, ud) < 0) return -EPIPE;
            continue;
        }
        ssize_t r = rd(c, c->rbuf, sizeof c->rbuf);
        if (r <= 0) return (int)r;
        c->last_rx = now_ms();
        if (feed(c, c->rbuf, (size_t)r, fn, ud) < 0) return -EPIPE;
    }
    c->more = true; /* left input for the next turn, so one busy connection cannot starve */
    return 0;
}

int sc_conn_io(sc_conn *c, sc_conn_msg_fn fn, void *ud, int *code, char *why, size_t wl)
{
    int rc = c->ended ? -EPIPE : io(c, fn, ud);
    if (rc == 0 && !c->ended && flush(c) < 0) rc = -EPIPE; /* what the callbacks queued */
    if (c->ended) {
        *code = c->end_code;
        snprintf(why, wl, "%s", c->end_why);
        return -EPIPE;
    }
    return 0;
}

void sc_conn_close(sc_conn *c, uint16_t code)
{
    if (!c) return;
    if (c->phase == PH_OPEN && !c->ended && !c->close_sent) {
        uint8_t pl[WS_FRAME_CTRL_MAX];
        size_t pn = ws_frame_close_encode(pl, code, NULL, 0);
        send_frame(c, WS_OP_CLOSE, pl, pn);
        flush(c);
    }
    conn_free(c);
}
