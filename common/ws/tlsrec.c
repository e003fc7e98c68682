/* tlsrec.c - the TLS record layer of an established connection; see tlsrec.h.
 *
 * Record protection, RFC 8446 §5.2-5.3 (TLS 1.3) and RFC 5246 §6.2.3.3 with RFC 5288 (AES-GCM)
 * and RFC 7905 (ChaCha20-Poly1305) for TLS 1.2; key derivation RFC 8446 §7.1-7.3 (HKDF-Expand-
 * Label) and RFC 5246 §6.3 (key expansion). The AEADs and KDFs are OpenSSL's. */
#include "tlsrec.h"

#include "err.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

enum aead {
    A_AES128_GCM = TLSREC_AES128_GCM,
    A_AES256_GCM = TLSREC_AES256_GCM,
    A_CHACHA20 = TLSREC_CHACHA20,
    A_COUNT = TLSREC_AEADS
};
#define TAG 16

static EVP_CIPHER *aead_cipher[A_COUNT];
static EVP_KDF *kdf_hkdf, *kdf_prf;
static pthread_once_t fetched = PTHREAD_ONCE_INIT;

/* The algorithms, fetched once (an implicit fetch per record costs in OpenSSL 3). */
static void fetch_all(void)
{
    aead_cipher[A_AES128_GCM] = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
    aead_cipher[A_AES256_GCM] = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    aead_cipher[A_CHACHA20] = EVP_CIPHER_fetch(NULL, "ChaCha20-Poly1305", NULL);
    kdf_hkdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    kdf_prf = EVP_KDF_fetch(NULL, "TLS1-PRF", NULL);
}

static const char *digest_name(int hashlen) { return hashlen == 48 ? "SHA384" : "SHA256"; }

/* HKDF-Expand-Label(secret, label, "", out_len), RFC 8446 §7.1. */
static int expand_label(int hashlen, const uint8_t *secret, const char *label, uint8_t *out,
                        size_t out_len)
{
    uint8_t info[2 + 1 + 6 + 16 + 1];
    size_t ll = strlen(label);
    if (ll > 16 || !kdf_hkdf) return -1;
    info[0] = (uint8_t)(out_len >> 8);
    info[1] = (uint8_t)out_len;
    info[2] = (uint8_t)(6 + ll);
    memcpy(info + 3, "tls13 ", 6);
    memcpy(info + 9, label, ll);
    info[9 + ll] = 0; /* empty context */
    EVP_KDF_CTX *kc = EVP_KDF_CTX_new(kdf_hkdf);
    if (!kc) return -1;
    OSSL_PARAM p[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_MODE, (char *)"EXPAND_ONLY", 0),
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)digest_name(hashlen), 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret, (size_t)hashlen),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, 10 + ll),
        OSSL_PARAM_construct_end(),
    };
    int rc = EVP_KDF_derive(kc, out, out_len, p) == 1 ? 0 : -1;
    EVP_KDF_CTX_free(kc);
    return rc;
}

/* A TLS 1.3 direction's key and IV from its traffic secret. */
static int keys_from_secret(const tlsrec *r, const uint8_t *secret, uint8_t *key, uint8_t *iv)
{
    return expand_label(r->hashlen, secret, "key", key, r->keylen) == 0 &&
                   expand_label(r->hashlen, secret, "iv", iv, 12) == 0
               ? 0
               : -1;
}

/* TLS 1.2 key expansion: PRF(master, "key expansion", server_random + client_random). */
static int keys_tls12(tlsrec *r, const tlsrec_keys *k)
{
    size_t ivlen = r->aead == A_CHACHA20 ? 12 : 4;
    uint8_t block[2 * 32 + 2 * 12], seed[13 + 64];
    size_t need = 2 * (size_t)r->keylen + 2 * ivlen;
    memcpy(seed, "key expansion", 13);
    memcpy(seed + 13, k->server_random, 32);
    memcpy(seed + 45, k->client_random, 32);
    EVP_KDF_CTX *kc = kdf_prf ? EVP_KDF_CTX_new(kdf_prf) : NULL;
    if (!kc) return -1;
    OSSL_PARAM p[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)digest_name(r->hashlen), 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SECRET, (void *)k->secret, 48),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED, seed, sizeof seed),
        OSSL_PARAM_construct_end(),
    };
    int ok = EVP_KDF_derive(kc, block, need, p) == 1;
    EVP_KDF_CTX_free(kc);
    if (ok) { /* client key, server key, client IV, server IV; we are the server */
        memcpy(r->rkey, block, r->keylen);
        memcpy(r->wkey, block + r->keylen, r->keylen);
        memcpy(r->riv, block + 2 * r->keylen, ivlen);
        memcpy(r->wiv, block + 2 * r->keylen + ivlen, ivlen);
    }
    OPENSSL_cleanse(block, sizeof block);
    return ok ? 0 : -1;
}

int tlsrec_init(tlsrec *r, const tlsrec_keys *k)
{
    pthread_once(&fetched, fetch_all);
    memset(r, 0, sizeof *r);
    switch (k->suite) {
    case 0x1301: /* TLS_AES_128_GCM_SHA256 */
    case 0xC02B: /* ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 */
    case 0xC02F: /* ECDHE_RSA_WITH_AES_128_GCM_SHA256 */
        r->aead = A_AES128_GCM, r->keylen = 16, r->hashlen = 32;
        break;
    case 0x1302: /* TLS_AES_256_GCM_SHA384 */
    case 0xC02C: /* ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 */
    case 0xC030: /* ECDHE_RSA_WITH_AES_256_GCM_SHA384 */
        r->aead = A_AES256_GCM, r->keylen = 32, r->hashlen = 48;
        break;
    case 0x1303: /* TLS_CHACHA20_POLY1305_SHA256 */
    case 0xCCA9: /* ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 */
    case 0xCCA8: /* ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 */
        r->aead = A_CHACHA20, r->keylen = 32, r->hashlen = 32;
        break;
    default: return SC_ECERT;
    }
    bool v13 = k->version == 0x0304;
    if ((k->version != 0x0303 && !v13) || v13 != (k->suite >> 8 == 0x13)) return SC_ECERT;
    if (!aead_cipher[r->aead]) return -ENOMEM;
    r->v13 = v13;
    r->rseq = k->read_seq;
    r->wseq = k->write_seq;
    int rc;
    if (v13) {
        memcpy(r->rsecret, k->client_secret, r->hashlen);
        memcpy(r->wsecret, k->server_secret, r->hashlen);
        rc = keys_from_secret(r, r->rsecret, r->rkey, r->riv) == 0 &&
                     keys_from_secret(r, r->wsecret, r->wkey, r->wiv) == 0
                 ? 0
                 : -1;
    } else {
        rc = keys_tls12(r, k);
    }
    if (rc != 0) {
        tlsrec_clear(r);
        return -ENOMEM;
    }
    return 0;
}

void tlsrec_clear(tlsrec *r) { OPENSSL_cleanse(r, sizeof *r); }

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

/* The per-record nonce: iv XOR seq (1.3, and 1.2 ChaCha20), or salt + explicit (1.2 GCM). */
static void nonce_of(const tlsrec *r, const uint8_t *iv, uint64_t seq,
                     const uint8_t *explicit_nonce, uint8_t *nonce)
{
    if (!r->v13 && r->aead != A_CHACHA20) {
        memcpy(nonce, iv, 4);
        memcpy(nonce + 4, explicit_nonce, 8);
        return;
    }
    uint8_t s[8];
    put64(s, seq);
    memcpy(nonce, iv, 12);
    for (int i = 0; i < 8; i++) nonce[4 + i] ^= s[i];
}

long tlsrec_record_len(const tlsrec *r, const uint8_t *p, size_t n)
{
    if (n < TLSREC_HEADER) return SC_EINCOMPLETE;
    if (p[0] < TLSREC_CHANGE_CIPHER || p[0] > TLSREC_DATA || p[1] != 3) return SC_EMALFORMED;
    size_t len = (size_t)p[3] << 8 | p[4];
    size_t min = TAG + (r->v13 ? 1 : r->aead == A_CHACHA20 ? 0 : 8);
    if (len < min || TLSREC_HEADER + len > TLSREC_MAX_RECORD) return SC_ETOOLARGE;
    return (long)(TLSREC_HEADER + len);
}

/* One AEAD operation: enc 1 seals in[0..n) (pieces) into out and appends the tag; enc 0 opens
 * in place, checking the tag that follows the ciphertext. 0, or -1 (bad tag, failure). */
static int aead(const tlsrec *r, EVP_CIPHER_CTX *cx, int enc, const uint8_t *key,
                const uint8_t *nonce, const uint8_t *aad, size_t aad_len,
                const uint8_t *const *pieces, const size_t *lens, int np, uint8_t *out)
{
    int outl = 0;
    size_t done = 0;
    if (EVP_CipherInit_ex2(cx, aead_cipher[r->aead], key, nonce, enc, NULL) != 1) return -1;
    if (EVP_CipherUpdate(cx, NULL, &outl, aad, (int)aad_len) != 1) return -1;
    for (int i = 0; i < np; i++) {
        if (lens[i] == 0) continue;
        if (EVP_CipherUpdate(cx, out + done, &outl, pieces[i], (int)lens[i]) != 1) return -1;
        done += (size_t)outl;
    }
    if (!enc &&
        EVP_CIPHER_CTX_ctrl(cx, EVP_CTRL_AEAD_SET_TAG, TAG, (void *)(pieces[0] + lens[0])) != 1)
        return -1;
    if (EVP_CipherFinal_ex(cx, out + done, &outl) != 1) return -1;
    done += (size_t)outl;
    if (enc && EVP_CIPHER_CTX_ctrl(cx, EVP_CTRL_AEAD_GET_TAG, TAG, out + done) != 1) return -1;
    return 0;
}

/* TLS 1.3 KeyUpdate: the direction's secret moves on, its key and IV with it, seq from 0. */
static int key_update(tlsrec *r, int write)
{
    uint8_t *secret = write ? r->wsecret : r->rsecret, next[48];
    if (expand_label(r->hashlen, secret, "traffic upd", next, r->hashlen) != 0) return -1;
    memcpy(secret, next, r->hashlen);
    OPENSSL_cleanse(next, sizeof next);
    if (keys_from_secret(r, secret, write ? r->wkey : r->rkey, write ? r->wiv : r->riv) != 0)
        return -1;
    if (write)
        r->wseq = 0;
    else
        r->rseq = 0;
    return 0;
}

int tlsrec_open(tlsrec *r, EVP_CIPHER_CTX *cx, uint8_t *rec, size_t len, uint8_t **plain,
                size_t *plain_len, uint8_t *alert)
{
    *alert = TLSREC_A_UNEXPECTED;
    long want = tlsrec_record_len(r, rec, len);
    if (want < 0 || (size_t)want != len) {
        *alert = want == SC_ETOOLARGE ? TLSREC_A_RECORD_OVERFLOW : TLSREC_A_DECODE_ERROR;
        return SC_EMALFORMED;
    }
    uint8_t type = rec[0], nonce[12], aad[13];
    uint8_t *ct = rec + TLSREC_HEADER;
    size_t ct_len = len - TLSREC_HEADER - TAG, aad_len;
    if (r->v13) {
        if (type != TLSREC_DATA)
            return SC_EMALFORMED; /* everything is wrapped after the
                                   * handshake */
        memcpy(aad, rec, TLSREC_HEADER);
        aad_len = TLSREC_HEADER;
    } else {
        if (type == TLSREC_CHANGE_CIPHER) return SC_EMALFORMED;
        const uint8_t *explicit_nonce = NULL;
        if (r->aead != A_CHACHA20) {
            explicit_nonce = ct;
            ct += 8;
            ct_len -= 8;
        }
        nonce_of(r, r->riv, r->rseq, explicit_nonce, nonce);
        put64(aad, r->rseq);
        aad[8] = type;
        aad[9] = 3;
        aad[10] = 3;
        aad[11] = (uint8_t)(ct_len >> 8);
        aad[12] = (uint8_t)ct_len;
        aad_len = 13;
    }
    if (r->v13) nonce_of(r, r->riv, r->rseq, NULL, nonce);
    const uint8_t *pieces[1] = {ct};
    size_t lens[1] = {ct_len};
    if (aead(r, cx, 0, r->rkey, nonce, aad, aad_len, pieces, lens, 1, ct) != 0) {
        *alert = TLSREC_A_BAD_RECORD_MAC;
        return SC_EMALFORMED;
    }
    r->rseq++;
    size_t n = ct_len;
    if (r->v13) { /* TLSInnerPlaintext: content, the real type, zero padding */
        while (n > 0 && ct[n - 1] == 0) n--;
        if (n == 0) return SC_EMALFORMED; /* no type: unexpected_message */
        type = ct[--n];
    }
    if (n > TLSREC_MAX_PLAIN) {
        *alert = TLSREC_A_RECORD_OVERFLOW;
        return SC_ETOOLARGE;
    }
    *plain = ct;
    *plain_len = n;
    switch (type) {
    case TLSREC_DATA: return TLSREC_DATA;
    case TLSREC_ALERT:
        if (n != 2) {
            *alert = TLSREC_A_DECODE_ERROR;
            return SC_EMALFORMED;
        }
        return TLSREC_ALERT;
    case TLSREC_HANDSHAKE:
        /* only a whole KeyUpdate (1.3); renegotiation (1.2) and the rest are refused */
        if (!r->v13 || n != 5 || ct[0] != 24 || ct[1] || ct[2] || ct[3] != 1 || ct[4] > 1)
            return SC_EMALFORMED;
        if (key_update(r, 0) != 0) {
            *alert = TLSREC_A_INTERNAL;
            return SC_EMALFORMED;
        }
        if (ct[4] == 1) r->update_owed = 1;
        *plain_len = 0;
        return TLSREC_HANDSHAKE;
    default: return SC_EMALFORMED;
    }
}

long tlsrec_seal(tlsrec *r, EVP_CIPHER_CTX *cx, uint8_t type, const uint8_t *const *pieces,
                 const size_t *lens, int n, uint8_t *out)
{
    size_t total = 0;
    for (int i = 0; i < n; i++) total += lens[i];
    if (total > TLSREC_MAX_PLAIN || r->wseq == UINT64_MAX) return -1;
    uint8_t nonce[12], aad[13], *body = out + TLSREC_HEADER;
    size_t aad_len, rec_len;
    const uint8_t *ps[TLSREC_MAX_PIECES + 1];
    size_t ls[TLSREC_MAX_PIECES + 1];
    if (n > TLSREC_MAX_PIECES) return -1;
    memcpy(ps, pieces, sizeof *ps * (size_t)n);
    memcpy(ls, lens, sizeof *ls * (size_t)n);
    out[1] = 3;
    out[2] = 3;
    if (r->v13) {
        ps[n] = &type; /* TLSInnerPlaintext: the real type after the content, no padding */
        ls[n++] = 1;
        rec_len = total + 1 + TAG;
        out[0] = TLSREC_DATA;
        out[3] = (uint8_t)(rec_len >> 8);
        out[4] = (uint8_t)rec_len;
        memcpy(aad, out, TLSREC_HEADER);
        aad_len = TLSREC_HEADER;
        nonce_of(r, r->wiv, r->wseq, NULL, nonce);
    } else {
        uint8_t explicit_nonce[8];
        put64(explicit_nonce, r->wseq); /* the sequence: unique per key, as RFC 5288 allows */
        nonce_of(r, r->wiv, r->wseq, explicit_nonce, nonce);
        rec_len = total + TAG;
        if (r->aead != A_CHACHA20) {
            memcpy(body, explicit_nonce, 8);
            body += 8;
            rec_len += 8;
        }
        out[0] = type;
        out[3] = (uint8_t)(rec_len >> 8);
        out[4] = (uint8_t)rec_len;
        put64(aad, r->wseq);
        aad[8] = type;
        aad[9] = 3;
        aad[10] = 3;
        aad[11] = (uint8_t)(total >> 8);
        aad[12] = (uint8_t)total;
        aad_len = 13;
    }
    if (aead(r, cx, 1, r->wkey, nonce, aad, aad_len, ps, ls, n, body) != 0) return -1;
    r->wseq++;
    return (long)(TLSREC_HEADER + rec_len);
}

long tlsrec_seal_key_update(tlsrec *r, EVP_CIPHER_CTX *cx, uint8_t *out)
{
    static const uint8_t msg[5] = {24, 0, 0, 1, 0}; /* KeyUpdate(update_not_requested) */
    const uint8_t *p = msg;
    size_t l = sizeof msg;
    if (!r->v13) return -1;
    long n = tlsrec_seal(r, cx, TLSREC_HANDSHAKE, &p, &l, 1, out);
    if (n < 0 || key_update(r, 1) != 0) return -1;
    r->update_owed = 0;
    return n;
}

long tlsrec_seal_alert(tlsrec *r, EVP_CIPHER_CTX *cx, uint8_t desc, uint8_t *out)
{
    uint8_t a[2] = {desc == TLSREC_A_CLOSE_NOTIFY ? 1 : 2, desc}; /* warning, fatal */
    const uint8_t *p = a;
    size_t l = sizeof a;
    return tlsrec_seal(r, cx, TLSREC_ALERT, &p, &l, 1, out);
}
