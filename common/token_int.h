/* token_int.h - what the token module's files share (token_keys.c, token_verify.c,
 * token_sign.c); not for use outside them. The public interface is token.h. */
#ifndef SC_TOKEN_INT_H
#define SC_TOKEN_INT_H

#include "token.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#define TOKEN_MAX_KEYS 16
#define TOKEN_MAX_KEYFILE (64 * 1024)
#define TOKEN_DEFAULT_MAX_LEN 8192
#define TOKEN_HARD_MAX_LEN 65536 /* whatever the policy says: libjwt alloca()s each segment */
#define TOKEN_KID_MAX 128        /* with the NUL; equals sizeof(token_claims.kid) */
#define TOKEN_RSA_MIN_BITS 2048
#define TOKEN_RSA_MAX_BITS 8192
#define TOKEN_SIGN_MAX_BODY 4096 /* claims JSON handed to libjwt (it uses alloca) */
#define TOKEN_MAX_LEEWAY 86400L
#define TOKEN_TIME_MAX (LONG_MAX / 4) /* NumericDates beyond this are nonsense */

_Static_assert(sizeof(((token_claims *)0)->kid) == TOKEN_KID_MAX, "kid buffers differ");

struct token_key {
    char kid[TOKEN_KID_MAX];
    const char *alg; /* "ES256" or "RS256": pinned by the key, never taken from a token */
    size_t sig_len;  /* exact JWS signature length: 64 (R||S) or the RSA modulus bytes */
    EVP_PKEY *pkey;
    struct token_es256 *es; /* ES256: the key with a precomputed table (token_es256.c) */
};

/* Tokens whose signature verified, so a client that presents the same token on every
 * request pays for one verification (about 30 µs for ES256 here), not one per request.
 * Direct-mapped on the SHA-256 of the whole
 * token; a hit still runs every claim check (exp, nbf, iss, aud) against the caller's policy
 * and clock. Bounded: TOKEN_CACHE_SLOTS entries, each holding one parsed payload. */
#define TOKEN_CACHE_SLOTS 1024
#define TOKEN_CACHE_LOCKS 16

struct token_cache_slot {
    unsigned char digest[SHA256_DIGEST_LENGTH];
    size_t key_index;
    json_t *payload; /* NULL: empty slot */
};

struct token_cache {
    pthread_mutex_t locks[TOKEN_CACHE_LOCKS];
    struct token_cache_slot slots[TOKEN_CACHE_SLOTS];
};

struct token_keyset {
    _Atomic unsigned refs; /* token_keyset_ref / token_keyset_destroy */
    uint64_t gen;          /* unique per keyset: names it in the threads' verification contexts */
    size_t n;
    struct token_key keys[TOKEN_MAX_KEYS];
    struct token_cache *cache;
};

struct token_signer {
    char kid[TOKEN_KID_MAX];
    const char *alg;
    jwt_alg_t jalg;
    EVP_PKEY *pkey;
    char *pem; /* unencrypted PKCS#8 PEM for libjwt; cleansed on destroy */
    int pem_len;
};

/* ---- shared by the files of the module (token_keys.c) ---- */

/* An empty keyset (refs 1, a fresh generation and cache), or NULL. */
token_keyset *token_keyset_new(void);

/* OpenSSL's passphrase callback that refuses: an encrypted key is an error, never a prompt. */
int token_no_passphrase(char *buf, int size, int rwflag, void *u);
/* 1 when the JSON string v is byte-equal to the n bytes of s. */
int token_json_str_eq(const json_t *v, const char *s, size_t n);
/* A kid we accept: 1..127 printable ASCII bytes, no space, quote or backslash. */
int token_kid_valid(const char *s, size_t n);
/* At most max bytes of path in a malloc'd NUL-terminated *out; SC_EKEY (logged) when
 * unreadable or larger. */
int token_read_file(const char *path, size_t max, char **out, size_t *len);
/* The alg (pinned), libjwt alg and JWS signature length of a supported key; SC_EKEY
 * with *why otherwise. */
int token_key_profile(EVP_PKEY *pk, const char **alg, jwt_alg_t *jalg, size_t *sig_len,
                      const char **why);
/* The public JWK of pk (kty, crv or n/e, x/y), new reference; NULL on failure. */
json_t *token_jwk_public(EVP_PKEY *pk);
/* The RFC 7638 thumbprint of pk, base64url, in out[cap]; 0 or a negative token_err. */
int token_jwk_thumbprint(EVP_PKEY *pk, char *out, size_t cap);

/* ---- token_es256.c: ECDSA P-256 verification with a table made for the key ---- */
struct token_es256;
/* The verifier of pk (an EC P-256 public key), refs 1, in *out; SC_EKEY or -ENOMEM. */
int token_es256_new(EVP_PKEY *pk, struct token_es256 **out);
struct token_es256 *token_es256_ref(struct token_es256 *e);
void token_es256_free(struct token_es256 *e); /* drops one reference; NULL is fine */
/* 0 when sig (R||S, 32 bytes each) is e's key's signature of the SHA-256 digest md,
 * SC_ESIG when not, -ENOMEM. ctx: the calling thread's. Thread-safe on a shared e. */
int token_es256_verify(const struct token_es256 *e, const unsigned char md[32],
                       const unsigned char sig[64], BN_CTX *ctx);
#endif
