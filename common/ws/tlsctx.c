/* tlsctx.c - a server's TLS settings and certificate, reloadable; see tlsctx.h. */
#include "tlsctx.h"

#include "err.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#define TICKET_KEYS 80 /* OpenSSL's ticket key block: name, HMAC and AES keys */

struct tlsctx {
    pthread_mutex_t mu;
    SSL_CTX *cur; /* what new connections are made from */
    char *cert_file, *key_file;
    int64_t not_after;
};

/* ALPN: a WebSocket handshake is HTTP/1.1. A client that offers ALPN without it is refused
 * (RFC 7301 §3.2); one that offers none is served. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    static const unsigned char ours[] = "\x08http/1.1";
    unsigned char *sel;
    if (SSL_select_next_proto(&sel, outlen, ours, sizeof ours - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

/* OpenSSL's first queued error as text (file names, never key bytes), queue cleared. */
static void ssl_reason(char *err, size_t errlen, const char *what, const char *file)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    snprintf(err, errlen, "%s %s unusable: %s", what, file, r ? r : "unreadable");
    ERR_clear_error();
}

static int64_t leaf_not_after(SSL_CTX *ctx)
{
    X509 *leaf = SSL_CTX_get0_certificate(ctx);
    const ASN1_TIME *na = leaf ? X509_get0_notAfter(leaf) : NULL;
    struct tm tm;
    if (!na || ASN1_TIME_to_tm(na, &tm) != 1) return 0;
    return (int64_t)timegm(&tm);
}

/* A new SSL_CTX with the house settings and the pair from the files, or NULL and why. */
static SSL_CTX *ctx_build(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    uint64_t opts = SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                    SSL_OP_CIPHER_SERVER_PREFERENCE;
#ifdef SSL_OP_ENABLE_KTLS
    opts |= SSL_OP_ENABLE_KTLS; /* used when the kernel has the tls module */
#endif
    SSL_CTX_set_options(ctx, opts);
    /* idle connections hold no record buffers; a write may resume from another address
     * (the worker gathers queued frames into its own buffer) and complete record by record */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* resumption by stateless tickets only: nothing per session on the server */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 1);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        ssl_reason(err, errlen, "certificate", cert_file);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        unsigned long e = ERR_peek_last_error();
        if (ERR_GET_REASON(e) != X509_R_KEY_VALUES_MISMATCH) {
            ssl_reason(err, errlen, "private key", key_file);
            goto fail;
        }
    }
    if (ERR_peek_last_error() || SSL_CTX_check_private_key(ctx) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "private key %s does not match certificate %s", key_file, cert_file);
        goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

int tlsctx_create(tlsctx **out, const char *cert_file, const char *key_file, char *err,
                  size_t errlen)
{
    tlsctx *t = calloc(1, sizeof *t);
    if (!t || !(t->cert_file = strdup(cert_file)) || !(t->key_file = strdup(key_file))) {
        if (t) free(t->cert_file);
        free(t);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    if (!(t->cur = ctx_build(cert_file, key_file, err, errlen))) {
        free(t->cert_file);
        free(t->key_file);
        free(t);
        return SC_ECERT;
    }
    t->not_after = leaf_not_after(t->cur);
    pthread_mutex_init(&t->mu, NULL);
    *out = t;
    return 0;
}

int tlsctx_reload(tlsctx *t, char *err, size_t errlen)
{
    SSL_CTX *n = ctx_build(t->cert_file, t->key_file, err, errlen);
    if (!n) return SC_ECERT;
    pthread_mutex_lock(&t->mu);
    SSL_CTX *old = t->cur;
    unsigned char keys[TICKET_KEYS]; /* a ticket issued before the reload still resumes */
    if (SSL_CTX_get_tlsext_ticket_keys(old, keys, sizeof keys) == 1)
        SSL_CTX_set_tlsext_ticket_keys(n, keys, sizeof keys);
    OPENSSL_cleanse(keys, sizeof keys);
    t->cur = n;
    t->not_after = leaf_not_after(n);
    pthread_mutex_unlock(&t->mu);
    SSL_CTX_free(old); /* the SSLs made from it hold their own references */
    return 0;
}

SSL *tlsctx_new_ssl(tlsctx *t, int fd)
{
    pthread_mutex_lock(&t->mu);
    SSL *ssl = SSL_new(t->cur);
    pthread_mutex_unlock(&t->mu);
    if (ssl && SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        ssl = NULL;
    }
    if (!ssl) ERR_clear_error();
    return ssl;
}

int64_t tlsctx_not_after(tlsctx *t)
{
    pthread_mutex_lock(&t->mu);
    int64_t v = t->not_after;
    pthread_mutex_unlock(&t->mu);
    return v;
}

void tlsctx_destroy(tlsctx *t)
{
    if (!t) return;
    SSL_CTX_free(t->cur);
    pthread_mutex_destroy(&t->mu);
    free(t->cert_file);
    free(t->key_file);
    free(t);
}
