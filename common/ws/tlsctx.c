/* tlsctx.c - a server's TLS settings and certificate, reloadable; see tlsctx.h. */
#include "tlsctx.h"

#include "err.h"
#include "tlsrec.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#define TICKET_KEYS 80 /* OpenSSL's ticket key block: name, HMAC and AES keys */

/* TLS 1.2: forward-secret AEAD suites only (Mozilla's "intermediate" list); TLS 1.3: all
 * three of its AEAD suites. tlsrec.c carries on exactly these. */
static const char CIPHERS_12[] = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                                 "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                                 "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
static const char SUITES_13[] =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";

/* What a connection's handshake leaves for tlsctx_take_keys, hung on its SSL (ex_data): the
 * TLS 1.3 application traffic secrets as OpenSSL's key log gives them, and the tickets sent
 * (each one record under the server's application key). */
typedef struct hs_keys {
    uint8_t client[48], server[48];
    uint8_t have; /* 1: client, 2: server */
    uint8_t tickets;
} hs_keys;

static int hs_index = -1;
static pthread_once_t hs_once = PTHREAD_ONCE_INIT;

static void hs_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    if (ptr) OPENSSL_clear_free(ptr, sizeof(hs_keys));
}

static void hs_index_new(void) { hs_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, hs_free); }

static int unhex(const char *in, size_t n, uint8_t *out)
{
    for (size_t i = 0; i < n; i++) {
        int v = 0;
        for (int j = 0; j < 2; j++) {
            char ch = in[2 * i + j];
            int d = ch >= '0' && ch <= '9'   ? ch - '0'
                    : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                    : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                             : -1;
            if (d < 0) return -1;
            v = v * 16 + d;
        }
        out[i] = (uint8_t)v;
    }
    return 0;
}

/* OpenSSL's key log, the NSS format "LABEL <client random> <secret>": kept are the two TLS 1.3
 * application traffic secrets, into the connection's hs_keys (never written anywhere). */
static void keylog(const SSL *ssl, const char *line)
{
    hs_keys *hk = SSL_get_ex_data(ssl, hs_index);
    static const char cts[] = "CLIENT_TRAFFIC_SECRET_0 ", sts[] = "SERVER_TRAFFIC_SECRET_0 ";
    uint8_t *dst = NULL;
    uint8_t bit = 0;
    size_t skip = 0;
    if (!hk) return;
    if (strncmp(line, cts, sizeof cts - 1) == 0) {
        dst = hk->client, bit = 1, skip = sizeof cts - 1;
    } else if (strncmp(line, sts, sizeof sts - 1) == 0) {
        dst = hk->server, bit = 2, skip = sizeof sts - 1;
    } else {
        return;
    }
    const char *sec = strchr(line + skip, ' ');
    size_t hexlen = sec ? strlen(sec + 1) : 0;
    if (!sec || (hexlen != 64 && hexlen != 96) || unhex(sec + 1, hexlen / 2, dst) != 0) return;
    hk->have |= bit;
}

/* A session ticket is being made: in TLS 1.3 it goes out as one record after the handshake
 * under the server's application key, so the record layer starts its count after it. */
static int ticket_made(SSL *ssl, void *arg)
{
    (void)arg;
    hs_keys *hk = SSL_get_ex_data(ssl, hs_index);
    if (hk && hk->tickets < 255) hk->tickets++;
    return 1;
}

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
    if (SSL_CTX_set_cipher_list(ctx, CIPHERS_12) != 1 ||
        SSL_CTX_set_ciphersuites(ctx, SUITES_13) != 1) {
        ssl_reason(err, errlen, "cipher list", "(built in)");
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_keylog_callback(ctx, keylog);
    SSL_CTX_set_session_ticket_cb(ctx, ticket_made, NULL, NULL);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* the handshake's buffers go as soon as it is done; no early data (0-RTT) */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_max_early_data(ctx, 0);
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
    pthread_once(&hs_once, hs_index_new);
    hs_keys *hk = hs_index >= 0 ? OPENSSL_zalloc(sizeof *hk) : NULL;
    pthread_mutex_lock(&t->mu);
    SSL *ssl = hk ? SSL_new(t->cur) : NULL;
    pthread_mutex_unlock(&t->mu);
    if (ssl && SSL_set_ex_data(ssl, hs_index, hk) == 1) {
        hk = NULL; /* the SSL frees it (hs_free) */
        if (SSL_set_fd(ssl, fd) != 1) {
            SSL_free(ssl);
            ssl = NULL;
        }
    } else {
        SSL_free(ssl);
        ssl = NULL;
    }
    OPENSSL_free(hk);
    if (!ssl) ERR_clear_error();
    return ssl;
}

int tlsctx_take_keys(SSL *ssl, tlsrec_keys *k)
{
    hs_keys *hk = SSL_get_ex_data(ssl, hs_index);
    const SSL_CIPHER *ci = SSL_get_current_cipher(ssl);
    memset(k, 0, sizeof *k);
    if (!hk || !ci) return SC_ECERT;
    /* without read-ahead OpenSSL reads no byte past the client's Finished: what follows is
     * ours to read; if it holds any, the sequence numbers below would be wrong */
    if (SSL_has_pending(ssl)) return SC_EMALFORMED;
    k->version = SSL_version(ssl);
    k->suite = SSL_CIPHER_get_protocol_id(ci);
    if (k->version == TLS1_3_VERSION) {
        if (hk->have != 3) return SC_ECERT;
        memcpy(k->client_secret, hk->client, sizeof k->client_secret);
        memcpy(k->server_secret, hk->server, sizeof k->server_secret);
        k->read_seq = 0;
        k->write_seq = hk->tickets;
    } else {
        SSL_SESSION *sess = SSL_get_session(ssl);
        if (!sess || SSL_SESSION_get_master_key(sess, k->secret, sizeof k->secret) != 48 ||
            SSL_get_client_random(ssl, k->client_random, 32) != 32 ||
            SSL_get_server_random(ssl, k->server_random, 32) != 32)
            return SC_ECERT;
        k->read_seq = 1; /* the Finished messages, each the first record under the keys */
        k->write_seq = 1;
    }
    return 0;
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
