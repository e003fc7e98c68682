/* bench_tls.c - wss:// for `sidecast bench`: the client side of TLS on the same non-blocking
 * sockets and epoll loops as the plain path, so the plain path stays as it was (a conn
 * without an SSL never comes here).
 *
 * Each connection's SSL works over two memory BIOs: the worker reads ciphertext from the
 * socket itself (read_stamped in bench_child.c, so the kernel's receipt time is still known)
 * and hands it in; records TLS wants sent are written to the socket at once. Everything read
 * is decrypted in the same call, so nothing waits inside OpenSSL while epoll (level-
 * triggered) sees an empty socket: only an unfinished record stays behind, and it waits for
 * more bytes from the socket anyway.
 *
 * Verification is always on: the chain against --cacert, the leaf's subjectAltName against
 * the URL's address. --resume (connect): each worker thread opens its first connection alone,
 * keeps that connection's session once it is ready (TLS 1.3 sends its tickets after the
 * handshake; by the first server message they have been read), and offers it on every later
 * connection; the result counts full and resumed handshakes. */
#include "bench_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

SSL_CTX *bench_tls_ctx(const bench_opts *o)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) goto error;
    static const unsigned char alpn[] = "\x08http/1.1";
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn - 1) != 0)
        goto error;
    if (SSL_CTX_load_verify_locations(ctx, o->cacert, NULL) != 1) {
        fprintf(stderr, "bench: cannot load the CA certificates in %s\n", o->cacert);
        goto error;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (X509_VERIFY_PARAM_set1_ip_asc(SSL_CTX_get0_param(ctx), o->host) != 1) {
        fprintf(stderr, "bench: %s is not an address to check a certificate against\n", o->host);
        goto error;
    }
    /* the sessions are kept by hand (--resume), not in a cache */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    return ctx;
error:
    fprintf(stderr, "bench: no TLS client context\n");
    ERR_print_errors_fp(stderr);
    SSL_CTX_free(ctx);
    return NULL;
}

/* Writes what TLS queued in c's write BIO to c->fd, whole: 0, or -1. */
static int flush_out(conn *c)
{
    BIO *wb = SSL_get_wbio(c->ssl);
    char *p;
    long n = BIO_get_mem_data(wb, &p);
    if (n <= 0) return 0;
    ssize_t r = write(c->fd, p, (size_t)n);
    (void)BIO_reset(wb);
    return r == n ? 0 : -1;
}

/* why for a failed SSL call: the verification result when that is what failed. */
static void say_error(conn *c, int rc, const char *what, char *why, size_t whylen)
{
    long v = SSL_get_verify_result(c->ssl);
    unsigned long e = ERR_peek_last_error();
    if (v != X509_V_OK)
        snprintf(why, whylen, "TLS %s: certificate not accepted: %s", what,
                 X509_verify_cert_error_string(v));
    else if (e)
        snprintf(why, whylen, "TLS %s: %s", what, ERR_reason_error_string(e));
    else
        snprintf(why, whylen, "TLS %s failed (%d)", what, SSL_get_error(c->ssl, rc));
    ERR_clear_error();
}

/* One step of the handshake: 0 (done or waiting for input), or BT_FAIL. */
static int handshake_step(conn *c, char *why, size_t whylen)
{
    int rc = SSL_do_handshake(c->ssl);
    if (flush_out(c) != 0) {
        snprintf(why, whylen, "TLS handshake not sent");
        return BT_FAIL;
    }
    if (rc == 1) {
        c->tls_up = true;
        return 0;
    }
    if (SSL_get_error(c->ssl, rc) == SSL_ERROR_WANT_READ) return 0;
    say_error(c, rc, "handshake", why, whylen);
    return BT_FAIL;
}

int bench_tls_start(worker *w, conn *c, char *why, size_t whylen)
{
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
    c->ssl = SSL_new(w->p->tls);
    if (!c->ssl || !rb || !wb) {
        BIO_free(rb);
        BIO_free(wb);
        snprintf(why, whylen, "TLS: out of memory");
        return BT_FAIL;
    }
    BIO_set_mem_eof_return(rb, -1); /* empty: "want more", not the end */
    SSL_set_bio(c->ssl, rb, wb);    /* the SSL owns both now */
    SSL_set_connect_state(c->ssl);
    if (w->sess) SSL_set_session(c->ssl, w->sess);
    return handshake_step(c, why, whylen);
}

long bench_tls_input(worker *w, conn *c, const uint8_t *in, size_t n, uint8_t *out, size_t cap,
                     char *why, size_t whylen)
{
    (void)w;
    if (BIO_write(SSL_get_rbio(c->ssl), in, (int)n) != (int)n) {
        snprintf(why, whylen, "TLS: out of memory");
        return BT_FAIL;
    }
    if (!c->tls_up) {
        if (handshake_step(c, why, whylen) != 0) return BT_FAIL;
        if (!c->tls_up) return 0;
    }
    size_t got = 0;
    while (got < cap) { /* each turn takes at least one byte, or ends */
        int k = SSL_read(c->ssl, out + got, (int)(cap - got > 1 << 30 ? 1 << 30 : cap - got));
        if (k > 0) {
            got += (size_t)k;
            continue;
        }
        int e = SSL_get_error(c->ssl, k);
        if (e == SSL_ERROR_WANT_READ) break;
        if (e == SSL_ERROR_ZERO_RETURN) {
            if (got) break; /* the end comes again with the next read (EOF) */
            return BT_CLOSED;
        }
        say_error(c, k, "read", why, whylen);
        return BT_FAIL;
    }
    if (flush_out(c) != 0) { /* a key update's answer, say */
        snprintf(why, whylen, "TLS record not sent");
        return BT_FAIL;
    }
    return (long)got;
}

int bench_tls_write(conn *c, const void *p, size_t n)
{
    if (SSL_write(c->ssl, p, (int)n) != (int)n) {
        ERR_clear_error();
        return -1;
    }
    return flush_out(c);
}

void bench_tls_ready(worker *w, conn *c)
{
    if (SSL_session_reused(c->ssl))
        w->tls_resumed++;
    else
        w->tls_full++;
    if (!w->p->o.resume || w->sess || w->resume_off) return;
    SSL_SESSION *s = SSL_get1_session(c->ssl);
    if (s && SSL_SESSION_is_resumable(s)) {
        w->sess = s;
        return;
    }
    SSL_SESSION_free(s);
    w->resume_off = true;
    if (w->printed < ERR_PRINT_MAX && !w->p->o.quiet) {
        w->printed++;
        fprintf(stderr, "bench: --resume: the server gave no session to resume\n");
    }
}

void bench_tls_free(conn *c)
{
    SSL_free(c->ssl);
    c->ssl = NULL;
    c->tls_up = false;
}

void bench_tls_worker_free(worker *w)
{
    SSL_SESSION_free(w->sess);
    w->sess = NULL;
    free(w->cbuf);
    w->cbuf = NULL;
}

void bench_tls_ctx_free(SSL_CTX *ctx) { SSL_CTX_free(ctx); }
