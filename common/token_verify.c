/* token_verify.c - JWT verification, never through libjwt. Debian's libjwt 1.10.2 takes the
 * algorithm from the token, verifies HS256 with whatever key bytes it is given (so an RSA
 * public-key PEM becomes an HMAC secret), skips verification for "none" when the key is
 * NULL, decodes base64 leniently, checks no claim, and parses the key's PEM again on every
 * call (about 0.4 ms with OpenSSL 3). Here the token is split and base64url-decoded
 * strictly, the header is checked against the key chosen by kid (the algorithm is pinned per
 * key), the signature is checked with that key, parsed once at load, with SHA-256 and the
 * scheme of the key's type (verify_sig: ES256 with the key's precomputed table in
 * token_es256.c, RS256 with its EVP_PKEY), and the claims are parsed and
 * checked with jansson. typ, when present, must be "JWT", or "at+jwt" (RFC 9068: the access
 * tokens of OpenID providers; "application/at+jwt" too). Verified tokens are cached. */
#include "token_int.h"

#include "b64url.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/rsa.h>

/* ---- verification ------------------------------------------------------------------------ */

static const struct token_key *keyset_find(const token_keyset *ks, const json_t *kid)
{
    for (size_t i = 0; i < ks->n; i++) {
        if (token_json_str_eq(kid, ks->keys[i].kid, strlen(ks->keys[i].kid))) return &ks->keys[i];
    }
    return NULL;
}

/* Strictly decodes one segment into buf and parses it as a JSON object (no duplicate
 * members). Returns a new object or NULL. */
static json_t *segment_json(const char *seg, size_t n, unsigned char *buf, size_t cap)
{
    size_t dn = 0;
    json_t *v;

    if (n == 0 || b64url_decode(seg, n, buf, cap, &dn) != 0) return NULL;
    v = json_loadb((const char *)buf, dn, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(v)) {
        json_decref(v);
        return NULL;
    }
    return v;
}

/* The JOSE header, checked against the keyset: alg one we pin and equal to the chosen key's,
 * kid known, no crit, typ absent, JWT or at+jwt (media types: case-insensitive). */
static int header_check(const token_keyset *ks, const json_t *hdr, const struct token_key **key)
{
    const json_t *alg = json_object_get(hdr, "alg"), *kid = json_object_get(hdr, "kid");
    const json_t *typ = json_object_get(hdr, "typ");
    const struct token_key *k;

    if (!token_json_str_eq(alg, "ES256", 5) && !token_json_str_eq(alg, "RS256", 5)) return SC_EALG;
    if (!json_is_string(kid) || (k = keyset_find(ks, kid)) == NULL) return SC_EKID;
    if (!token_json_str_eq(alg, k->alg, strlen(k->alg))) return SC_EALG;
    if (json_object_get(hdr, "crit") != NULL)
        return SC_EMALFORMED; /* we understand no extension, so none may be critical */
    if (typ != NULL) {
        const char *t = json_string_value(typ);
        size_t n = json_string_length(typ);
        bool ok = t && ((n == 3 && strcasecmp(t, "JWT") == 0) ||
                        (n == 6 && strcasecmp(t, "at+jwt") == 0) ||
                        (n == 18 && strcasecmp(t, "application/at+jwt") == 0));
        if (!ok) return SC_EMALFORMED;
    }
    *key = k;
    return 0;
}

/* SHA-256, fetched once: an implicit fetch on every verification takes the provider
 * registry's lock each time. */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

/* Verification contexts for RS256 keys (ES256 has token_es256.c), one per thread and key,
 * made on first use. EVP_PKEY_verify_init fetches the algorithm and builds the provider's
 * key context on every call (with EVP_DigestVerify, about a quarter of an ES256
 * verification's CPU here when ES256 went this way, and its allocations), while one
 * initialised EVP_PKEY_CTX verifies any number of signatures.
 * A context is not shared between threads, so each thread keeps its own, named by the
 * keyset's generation: a thread that meets another keyset (keys reloaded) starts over.
 * Beside them, whatever the keyset: a digest context (SHA256() or EVP_Digest make and free
 * one per call) and the BN_CTX of ES256's arithmetic (token_es256.c). */
struct vctx_cache {
    uint64_t gen;
    EVP_PKEY_CTX *ctx[TOKEN_MAX_KEYS];
    EVP_MD_CTX *md;
    BN_CTX *bn;
};
static pthread_key_t vctx_key;
static __thread struct vctx_cache *tl_vctx;

static void vctx_cache_clear(struct vctx_cache *vc)
{
    for (size_t i = 0; i < TOKEN_MAX_KEYS; i++) {
        EVP_PKEY_CTX_free(vc->ctx[i]);
        vc->ctx[i] = NULL;
    }
}

static void vctx_cache_free(void *p)
{
    struct vctx_cache *vc = p;

    if (vc == NULL) return;
    vctx_cache_clear(vc);
    EVP_MD_CTX_free(vc->md);
    BN_CTX_free(vc->bn);
    free(vc);
}

static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (pthread_key_create(&vctx_key, vctx_cache_free) != 0) {
        EVP_MD_free(sha256_md); /* no cleanup at thread exit: verify without contexts */
        sha256_md = NULL;
    }
}

/* The calling thread's contexts, made on first use, or NULL (no memory). */
static struct vctx_cache *vctx_thread(void)
{
    struct vctx_cache *vc = tl_vctx;

    if (vc != NULL) return vc;
    pthread_once(&sha256_once, sha256_fetch);
    if (sha256_md == NULL || (vc = calloc(1, sizeof *vc)) == NULL) return NULL;
    if ((vc->md = EVP_MD_CTX_new()) == NULL || (vc->bn = BN_CTX_new()) == NULL ||
        pthread_setspecific(vctx_key, vc) != 0) {
        vctx_cache_free(vc);
        return NULL;
    }
    return tl_vctx = vc;
}

/* SHA-256 of n bytes at p into md[32], with the thread's digest context. */
static int sha256(struct vctx_cache *vc, const void *p, size_t n, unsigned char *md)
{
    unsigned int mdlen = 0;

    if (EVP_DigestInit_ex2(vc->md, sha256_md, NULL) != 1 || EVP_DigestUpdate(vc->md, p, n) != 1 ||
        EVP_DigestFinal_ex(vc->md, md, &mdlen) != 1 || mdlen != SHA256_DIGEST_LENGTH)
        return -ENOMEM;
    return 0;
}

/* The calling thread's verify-initialised context for ks->keys[i], or NULL (no memory). */
static EVP_PKEY_CTX *vctx_get(struct vctx_cache *vc, const token_keyset *ks, size_t i)
{
    EVP_PKEY_CTX *ctx;

    if (vc->gen != ks->gen) {
        vctx_cache_clear(vc);
        vc->gen = ks->gen;
    }
    if (vc->ctx[i] != NULL) return vc->ctx[i];
    if ((ctx = EVP_PKEY_CTX_new_from_pkey(NULL, ks->keys[i].pkey, NULL)) == NULL) return NULL;
    if (EVP_PKEY_verify_init(ctx) != 1 || EVP_PKEY_CTX_set_signature_md(ctx, sha256_md) != 1 ||
        (EVP_PKEY_is_a(ks->keys[i].pkey, "RSA") &&
         EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) != 1)) {
        EVP_PKEY_CTX_free(ctx);
        return NULL;
    }
    return vc->ctx[i] = ctx;
}

/* The signature over header.payload with the pinned key, through OpenSSL directly: the key
 * was parsed once at load time, the digest is SHA-256 and the scheme follows the key's type
 * (ES256: ECDSA P-256, RS256: RSASSA-PKCS1-v1_5), so nothing in the token chooses either.
 * sig is the JWS signature, already decoded to exactly k->sig_len bytes; ES256's is R||S
 * (RFC 7518 §3.4), which token_es256_verify takes as it is. */
static int verify_sig(struct vctx_cache *vc, const token_keyset *ks, size_t ki, const char *input,
                      size_t n, const unsigned char *sig, size_t slen)
{
    const struct token_key *k = &ks->keys[ki];
    unsigned char md[SHA256_DIGEST_LENGTH];
    EVP_PKEY_CTX *ctx;
    int rc;

    if (slen != k->sig_len) return SC_ESIG;
    if ((rc = sha256(vc, input, n, md)) != 0) return rc;
    if (strcmp(k->alg, "ES256") == 0) {
        if (k->es == NULL || slen != 64) return SC_ESIG; /* keyset_add always makes one */
        return token_es256_verify(k->es, md, sig, vc->bn);
    }
    if ((ctx = vctx_get(vc, ks, ki)) == NULL) return -ENOMEM;
    return EVP_PKEY_verify(ctx, sig, slen, md, sizeof md) == 1 ? 0 : SC_ESIG;
}

/* A NumericDate (RFC 7519 §2). Fractions round towards the strict side: down for exp, up for
 * nbf and iat (round_up). Returns 0, or -1 for a non-number or an absurd value. */
static int numeric_date(const json_t *v, int round_up, long *out)
{
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < -TOKEN_TIME_MAX || i > TOKEN_TIME_MAX) return -1;
        *out = (long)i;
        return 0;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        long t;
        if (!(d >= (double)-TOKEN_TIME_MAX && d <= (double)TOKEN_TIME_MAX))
            return -1; /* also NaN */
        t = (long)d;
        if (round_up && (double)t < d)
            t++;
        else if (!round_up && (double)t > d)
            t--;
        *out = t;
        return 0;
    }
    return -1;
}

/* A text claim copied into dst: 1..cap-1 bytes, no control characters (the subject ends up in
 * NATS subjects, headers and logs). */
static int text_claim(const json_t *v, char *dst, size_t cap)
{
    size_t n;
    const char *s;

    if (!json_is_string(v)) return -1;
    s = json_string_value(v);
    n = json_string_length(v);
    if (n == 0 || n >= cap) return -1;
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return -1;
    }
    memcpy(dst, s, n);
    dst[n] = '\0';
    return 0;
}

/* sub becomes a NATS subject token (users.<sub>, presence keys): only [A-Za-z0-9_-], as
 * auth's users file allows, so that no token can name "*", ">" or several tokens. */
static int sub_safe(const char *s)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-'))
            return 0;
    }
    return 1;
}

static int claims_check(const json_t *c, const token_policy *pol, long now, token_claims *out)
{
    const json_t *aud = json_object_get(c, "aud"), *v;
    long leeway = pol->leeway < 0                  ? 0
                  : pol->leeway > TOKEN_MAX_LEEWAY ? TOKEN_MAX_LEEWAY
                                                   : pol->leeway;
    size_t alen = strlen(pol->audience), i;
    int found = 0;

    if (numeric_date(json_object_get(c, "exp"), 0, &out->exp) != 0) return SC_ECLAIMS;
    if (now - leeway >= out->exp) return SC_EEXPIRED;
    if ((v = json_object_get(c, "nbf")) != NULL) {
        if (numeric_date(v, 1, &out->nbf) != 0) return SC_ECLAIMS;
        if (out->nbf > now + leeway) return SC_ENOTYET;
    }
    if ((v = json_object_get(c, "iat")) != NULL) {
        if (numeric_date(v, 1, &out->iat) != 0) return SC_ECLAIMS;
        if (out->iat > now + leeway) return SC_ENOTYET;
    }
    if (!token_json_str_eq(json_object_get(c, "iss"), pol->issuer, strlen(pol->issuer)))
        return SC_EISS;
    if (json_is_string(aud)) {
        found = token_json_str_eq(aud, pol->audience, alen);
    } else if (json_is_array(aud)) {
        json_array_foreach(aud, i, v) {
            if (token_json_str_eq(v, pol->audience, alen)) found = 1;
        }
    }
    if (!found) return SC_EAUD;
    if (text_claim(json_object_get(c, "sub"), out->sub, sizeof out->sub) != 0 ||
        !sub_safe(out->sub))
        return SC_ECLAIMS;
    if ((v = json_object_get(c, "jti")) != NULL && text_claim(v, out->jti, sizeof out->jti) != 0)
        return SC_ECLAIMS;
    return 0;
}

/* The cached payload of a token that verified before (a new reference), or NULL. */
static json_t *cache_get(const token_keyset *ks, const unsigned char *digest, size_t *key_index)
{
    size_t slot = (digest[0] | (size_t)digest[1] << 8) % TOKEN_CACHE_SLOTS;
    pthread_mutex_t *lock = &ks->cache->locks[slot % TOKEN_CACHE_LOCKS];
    struct token_cache_slot *e = &ks->cache->slots[slot];
    json_t *payload = NULL;
    pthread_mutex_lock(lock);
    if (e->payload && CRYPTO_memcmp(e->digest, digest, SHA256_DIGEST_LENGTH) == 0) {
        payload = json_incref(e->payload);
        *key_index = e->key_index;
    }
    pthread_mutex_unlock(lock);
    return payload;
}

static void cache_put(const token_keyset *ks, const unsigned char *digest, size_t key_index,
                      json_t *payload)
{
    size_t slot = (digest[0] | (size_t)digest[1] << 8) % TOKEN_CACHE_SLOTS;
    pthread_mutex_t *lock = &ks->cache->locks[slot % TOKEN_CACHE_LOCKS];
    struct token_cache_slot *e = &ks->cache->slots[slot];
    json_t *old;
    pthread_mutex_lock(lock);
    old = e->payload;
    memcpy(e->digest, digest, SHA256_DIGEST_LENGTH);
    e->key_index = key_index;
    e->payload = json_incref(payload);
    pthread_mutex_unlock(lock);
    json_decref(old);
}

int token_verify(const token_keyset *ks, const token_policy *pol, const char *token, long now,
                 token_claims *out)
{
    unsigned char digest[SHA256_DIGEST_LENGTH];
    struct vctx_cache *vc;
    size_t key_index = 0;
    const struct token_key *key = NULL;
    json_t *hdr = NULL, *payload = NULL;
    unsigned char *buf = NULL;
    const char *d1, *d2;
    size_t max, len, cap, slen = 0;
    int rc = SC_EMALFORMED;

    if (out == NULL) return SC_EMALFORMED;
    memset(out, 0, sizeof *out);
    if (ks == NULL || pol == NULL || token == NULL) goto error;
    if (pol->issuer == NULL || pol->issuer[0] == '\0') {
        rc = SC_EISS;
        goto error;
    }
    if (pol->audience == NULL || pol->audience[0] == '\0') {
        rc = SC_EAUD;
        goto error;
    }
    max = pol->max_len ? pol->max_len : TOKEN_DEFAULT_MAX_LEN;
    max = max > TOKEN_HARD_MAX_LEN ? TOKEN_HARD_MAX_LEN : max;
    if ((len = strnlen(token, max + 1)) > max) {
        rc = SC_ETOOLARGE;
        goto error;
    }
    /* Exactly three parts: header.payload.signature. */
    if ((d1 = memchr(token, '.', len)) == NULL ||
        (d2 = memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token))) == NULL ||
        memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - token)) != NULL)
        goto error;
    if ((vc = vctx_thread()) == NULL || sha256(vc, token, len, digest) != 0) {
        rc = -ENOMEM;
        goto error;
    }
    if ((payload = cache_get(ks, digest, &key_index)) != NULL) {
        key = &ks->keys[key_index];
        goto claims;
    }
    cap = b64url_decoded_max(len) + 1;
    if ((buf = malloc(cap)) == NULL) {
        rc = -ENOMEM;
        goto error;
    }
    if ((hdr = segment_json(token, (size_t)(d1 - token), buf, cap)) == NULL) goto error;
    if ((rc = header_check(ks, hdr, &key)) != 0) goto error;
    rc = SC_EMALFORMED;
    if ((payload = segment_json(d1 + 1, (size_t)(d2 - d1 - 1), buf, cap)) == NULL) goto error;
    if (b64url_decode(d2 + 1, len - (size_t)(d2 + 1 - token), buf, cap, &slen) != 0) goto error;
    if (slen != key->sig_len) { /* empty, truncated or padded: never worth a verification */
        rc = SC_ESIG;
        goto error;
    }
    rc = verify_sig(vc, ks, (size_t)(key - ks->keys), token, (size_t)(d2 - token), buf, slen);
    if (rc != 0) goto error;
    cache_put(ks, digest, (size_t)(key - ks->keys), payload);
claims:
    if ((rc = claims_check(payload, pol, now, out)) != 0) goto error;
    memcpy(out->kid, key->kid, sizeof out->kid);
    out->payload = payload;
    json_decref(hdr);
    free(buf);
    return 0;
error:
    json_decref(hdr);
    json_decref(payload);
    free(buf);
    memset(out, 0, sizeof *out);
    ERR_clear_error();
    return rc;
}

void token_claims_clear(token_claims *c)
{
    if (c == NULL) return;
    json_decref(c->payload);
    memset(c, 0, sizeof *c);
}
