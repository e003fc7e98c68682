/* tlscert.c - the gateway's certificate and key, reloadable; see tlscert.h. */
#include "tlscert.h"

#include "err.h"
#include "log.h"
#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct tlscert_gen {
    atomic_int refs;
    gnutls_pcert_st chain[TLSCERT_MAX_CHAIN];
    unsigned n;
    gnutls_privkey_t key;
    int64_t not_after;
    char subject[256]; /* the leaf's subject DN, for the log */
    char serial[68];   /* the leaf's serial number in hex, for the log */
};

struct tlscert {
    pthread_mutex_t mu; /* guards cur while a reference is taken or the pair is replaced */
    tlscert_gen *cur;
    char *cert_path, *key_path;
    metric *m_ok, *m_failed, *m_not_after;
};

static void tlscert_gen_free(tlscert_gen *g)
{
    if (!g) return;
    for (unsigned i = 0; i < g->n; i++) gnutls_pcert_deinit(&g->chain[i]);
    if (g->key) gnutls_privkey_deinit(g->key);
    free(g);
}

/* Reads a whole file of at most TLSCERT_MAX_FILE bytes into a NUL-terminated buffer that the
 * caller wipes and frees. 0 or a negative errno. */
static int tlscert_read(const char *path, unsigned char **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    struct stat sb;
    int e = fstat(fd, &sb) != 0             ? -errno
            : !S_ISREG(sb.st_mode)          ? -EINVAL
            : sb.st_size > TLSCERT_MAX_FILE ? -EFBIG
                                            : 0;
    if (e != 0) {
        close(fd);
        return e;
    }
    unsigned char *buf = malloc((size_t)sb.st_size + 1);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    size_t n = 0;
    while (n < (size_t)sb.st_size) {
        ssize_t r = read(fd, buf + n, (size_t)sb.st_size - n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break; /* shorter than fstat said: take what is there */
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

static const char *tlscert_read_error(int rc)
{
    return rc == -EFBIG    ? "larger than 256 KiB"
           : rc == -EINVAL ? "not a regular file"
                           : strerror(-rc);
}

static void tlscert_wipe(unsigned char *buf, size_t len)
{
    if (!buf) return;
    explicit_bzero(buf, len);
    free(buf);
}

/* The SHA-256 key id of a public key: 0, or -1. */
static int tlscert_key_id(gnutls_pubkey_t pub, unsigned char *id, size_t *idlen)
{
    return gnutls_pubkey_get_key_id(pub, GNUTLS_KEYID_USE_SHA256, id, idlen) == 0 ? 0 : -1;
}

/* Fills the leaf's notAfter, subject and serial. 0, or a GnuTLS code. */
static int tlscert_describe(tlscert_gen *g)
{
    gnutls_x509_crt_t crt;
    int rc = gnutls_x509_crt_init(&crt);
    if (rc < 0) return rc;
    rc = gnutls_x509_crt_import(crt, &g->chain[0].cert, GNUTLS_X509_FMT_DER);
    if (rc == 0) {
        time_t t = gnutls_x509_crt_get_expiration_time(crt);
        rc = t == (time_t)-1 ? GNUTLS_E_CERTIFICATE_ERROR : 0;
        g->not_after = (int64_t)t;
    }
    if (rc == 0) {
        size_t sz = sizeof g->subject;
        if (gnutls_x509_crt_get_dn(crt, g->subject, &sz) < 0) snprintf(g->subject, 2, "?");
        unsigned char serial[32];
        sz = sizeof serial;
        if (gnutls_x509_crt_get_serial(crt, serial, &sz) == 0) {
            for (size_t i = 0; i < sz; i++)
                snprintf(g->serial + 2 * i, sizeof g->serial - 2 * i, "%02x", serial[i]);
        }
    }
    gnutls_x509_crt_deinit(crt);
    return rc;
}

/* Loads one generation. 0 and *out, or a negative code with the reason in err. */
static int tlscert_load(const char *cert_path, const char *key_path, tlscert_gen **out, char *err,
                        size_t errlen)
{
    unsigned char *cbuf = NULL, *kbuf = NULL;
    size_t clen = 0, klen = 0;
    int rc = -EINVAL;
    tlscert_gen *g = calloc(1, sizeof *g);
    gnutls_pubkey_t pub = NULL;
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    atomic_init(&g->refs, 1);
    if ((rc = tlscert_read(cert_path, &cbuf, &clen)) != 0) {
        snprintf(err, errlen, "certificate file %s: cannot read: %s", cert_path,
                 tlscert_read_error(rc));
        goto error;
    }
    if ((rc = tlscert_read(key_path, &kbuf, &klen)) != 0) {
        snprintf(err, errlen, "key file: cannot read: %s", tlscert_read_error(rc));
        goto error;
    }
    gnutls_datum_t cd = {cbuf, (unsigned)clen}, kd = {kbuf, (unsigned)klen};
    g->n = TLSCERT_MAX_CHAIN;
    int grc = gnutls_pcert_list_import_x509_raw(g->chain, &g->n, &cd, GNUTLS_X509_FMT_PEM,
                                                GNUTLS_X509_CRT_LIST_IMPORT_FAIL_IF_EXCEED |
                                                    GNUTLS_X509_CRT_LIST_FAIL_IF_UNSORTED);
    if (grc < 0 || g->n == 0) {
        g->n = 0;
        rc = SC_ECERT;
        snprintf(err, errlen, "certificate file %s: %s", cert_path,
                 grc == GNUTLS_E_CERTIFICATE_LIST_UNSORTED
                     ? "the chain is out of order (the leaf first, then each issuer)"
                 : grc == GNUTLS_E_SHORT_MEMORY_BUFFER ? "more than 16 certificates"
                 : grc < 0                             ? gnutls_strerror(grc)
                                                       : "no certificate");
        goto error;
    }
    if ((grc = gnutls_privkey_init(&g->key)) < 0 ||
        (grc = gnutls_privkey_import_x509_raw(g->key, &kd, GNUTLS_X509_FMT_PEM, NULL, 0)) < 0) {
        rc = SC_ECERT;
        snprintf(err, errlen, "key file: not a usable PEM private key (%s)", gnutls_strerror(grc));
        goto error;
    }
    unsigned char id_cert[64], id_key[64];
    size_t id_cert_len = sizeof id_cert, id_key_len = sizeof id_key;
    if (gnutls_pubkey_init(&pub) < 0 || gnutls_pubkey_import_privkey(pub, g->key, 0, 0) < 0 ||
        tlscert_key_id(pub, id_key, &id_key_len) != 0 ||
        tlscert_key_id(g->chain[0].pubkey, id_cert, &id_cert_len) != 0 ||
        id_cert_len != id_key_len || memcmp(id_cert, id_key, id_key_len) != 0) {
        rc = SC_ECERT;
        snprintf(err, errlen, "key file: the key does not belong to the first certificate of %s",
                 cert_path);
        goto error;
    }
    if ((grc = tlscert_describe(g)) != 0) {
        rc = SC_ECERT;
        snprintf(err, errlen, "certificate file %s: %s", cert_path, gnutls_strerror(grc));
        goto error;
    }
    gnutls_pubkey_deinit(pub);
    tlscert_wipe(cbuf, clen);
    tlscert_wipe(kbuf, klen);
    *out = g;
    return 0;
error:
    if (pub) gnutls_pubkey_deinit(pub);
    tlscert_wipe(cbuf, clen);
    tlscert_wipe(kbuf, klen);
    tlscert_gen_free(g);
    return rc;
}

static void tlscert_log_loaded(const char *what, const tlscert_gen *g)
{
    int64_t left = g->not_after - (int64_t)time(NULL);
    if (left <= 0)
        log_warn("TLS certificate has expired", "event=%s subject=\"%s\" serial=%s not_after=%lld",
                 what, g->subject, g->serial, (long long)g->not_after);
    else
        log_info("TLS certificate loaded",
                 "event=%s subject=\"%s\" serial=%s chain=%u not_after=%lld days_left=%lld", what,
                 g->subject, g->serial, g->n, (long long)g->not_after, (long long)(left / 86400));
}

int tlscert_open(tlscert **out, const char *cert_path, const char *key_path, char *err,
                 size_t errlen)
{
    tlscert *s = calloc(1, sizeof *s);
    if (s) pthread_mutex_init(&s->mu, NULL);
    if (!s || !(s->cert_path = strdup(cert_path)) || !(s->key_path = strdup(key_path))) {
        snprintf(err, errlen, "out of memory");
        tlscert_close(s);
        return -ENOMEM;
    }
    int rc = tlscert_load(cert_path, key_path, &s->cur, err, errlen);
    if (rc != 0) {
        tlscert_close(s);
        return rc;
    }
    s->m_ok = metrics_counter("sc_gateway_tls_reloads_total", "result=\"ok\"",
                              "TLS certificate reloads (SIGHUP) by outcome; a failed one keeps "
                              "the pair in use");
    s->m_failed = metrics_counter("sc_gateway_tls_reloads_total", "result=\"failed\"", NULL);
    s->m_not_after = metrics_gauge("sc_gateway_tls_cert_not_after_seconds", NULL,
                                   "notAfter of the TLS certificate in use (leaf), Unix time");
    metric_set(s->m_not_after, s->cur->not_after);
    tlscert_log_loaded("start", s->cur);
    *out = s;
    return 0;
}

int tlscert_reload(tlscert *s)
{
    char err[600];
    tlscert_gen *g = NULL;
    int rc = tlscert_load(s->cert_path, s->key_path, &g, err, sizeof err);
    if (rc != 0) {
        metric_inc(s->m_failed);
        log_error("TLS certificate not reloaded: the one in use stays", "error=\"%s\"", err);
        return rc;
    }
    pthread_mutex_lock(&s->mu);
    tlscert_gen *old = s->cur;
    s->cur = g;
    pthread_mutex_unlock(&s->mu);
    tlscert_release(old);
    metric_inc(s->m_ok);
    metric_set(s->m_not_after, g->not_after);
    tlscert_log_loaded("reload", g);
    return 0;
}

int64_t tlscert_not_after(tlscert *s)
{
    pthread_mutex_lock(&s->mu);
    int64_t t = s->cur->not_after;
    pthread_mutex_unlock(&s->mu);
    return t;
}

tlscert_gen *tlscert_acquire(tlscert *s)
{
    pthread_mutex_lock(&s->mu);
    tlscert_gen *g = s->cur;
    atomic_fetch_add(&g->refs, 1);
    pthread_mutex_unlock(&s->mu);
    return g;
}

void tlscert_release(tlscert_gen *g)
{
    if (g && atomic_fetch_sub(&g->refs, 1) == 1) tlscert_gen_free(g);
}

void tlscert_gen_pair(tlscert_gen *g, gnutls_pcert_st **chain, unsigned *n, gnutls_privkey_t *key)
{
    *chain = g->chain;
    *n = g->n;
    *key = g->key;
}

void tlscert_close(tlscert *s)
{
    if (!s) return;
    tlscert_release(s->cur);
    pthread_mutex_destroy(&s->mu);
    free(s->cert_path);
    free(s->key_path);
    free(s);
}
