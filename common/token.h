/* token.h - JWT access tokens: verification (gateway, edge) and signing (auth).
 *
 * Verification does not use libjwt (Debian's 1.10.2 takes the algorithm from the token,
 * treats a NULL key as "no check", checks no claim and re-parses the key on every call): the
 * header is parsed and checked here, the algorithm is pinned per key (never taken from the
 * token), the signature is checked with OpenSSL and the key's EVP_PKEY, and every claim (exp,
 * nbf with leeway, iss, aud, sub) is checked here. Signing goes through libjwt with the
 * signer's own key and algorithm. Prefix token_ (libjwt owns jwt_). */
#ifndef SC_TOKEN_H
#define SC_TOKEN_H

#include <errno.h>
#include <stddef.h>

#include <jansson.h>

#include "err.h"

/* Failures are the negative codes of err.h: SC_EMALFORMED (not three base64url parts, bad
 * JSON, bad header), SC_ETOOLARGE (over the policy's max_len), SC_EALG, SC_EKID, SC_ESIG,
 * SC_EEXPIRED, SC_ENOTYET, SC_EISS, SC_EAUD, SC_ECLAIMS, SC_EKEY (key file unreadable or
 * unsupported key) and -ENOMEM; sc_strerror names them without ever quoting a token. */

typedef struct token_keyset token_keyset;

/* Loads public keys from a file holding a JWKS ({"keys":[...]}, EC P-256 -> ES256,
 * RSA >= 2048 bits -> RS256; a key's own "alg", if present, must agree) or one or more PEM
 * public keys / certificates (kid = RFC 7638 thumbprint, unless the PEM block is preceded by
 * a line "kid: NAME"). Returns 0 and *out, or SC_EKEY/-ENOMEM after logging why. */
int token_keyset_load(token_keyset **out, const char *path);
/* The same from memory (text of a JWKS or PEMs). */
int token_keyset_parse(token_keyset **out, const char *text, size_t len);
/* Keysets are reference-counted: _ref takes one more, _destroy drops one (the last frees;
 * NULL ok). Any thread. */
token_keyset *token_keyset_ref(token_keyset *ks);
void token_keyset_destroy(token_keyset *ks);
size_t token_keyset_count(const token_keyset *ks);
/* A new keyset with the keys of a, then those of b whose kid a lacks (either may be NULL),
 * at most 16 in all. 0 and *out, or -ENOMEM. */
int token_keyset_union(token_keyset **out, const token_keyset *a, const token_keyset *b);

typedef struct token_policy {
    const char *issuer;   /* required: iss must equal it */
    const char *audience; /* required: aud (string or array) must contain it */
    long leeway;          /* seconds of clock skew allowed for exp/nbf/iat (default 30) */
    size_t max_len;       /* longest token accepted in bytes (0: 8192) */
} token_policy;

typedef struct token_claims {
    char sub[256];
    char jti[128];
    char kid[128];
    long iat, nbf, exp;
    json_t *payload; /* the whole verified payload (sub_topics, pub_topics, ...); owned by the
                        claims, released by token_claims_clear() */
} token_claims;

/* Verifies token at time now (seconds since the epoch). On 0, *out holds the claims (caller
 * calls token_claims_clear). On error *out is cleared and needs no clearing. */
int token_verify(const token_keyset *ks, const token_policy *pol, const char *token, long now,
                 token_claims *out);
void token_claims_clear(token_claims *c);

/* Signing (auth). Loads a PEM private key (EC P-256 -> ES256, RSA >= 2048 -> RS256). */
typedef struct token_signer token_signer;
int token_signer_load(token_signer **out, const char *pem_path, const char *kid);
void token_signer_destroy(token_signer *s); /* accepts NULL */
const char *token_signer_alg(const token_signer *s);
const char *token_signer_kid(const token_signer *s);
/* Signs payload (a JSON object of claims; not modified) with header {alg, typ:"JWT", kid}.
 * Returns 0 and a malloc'd token in *out (caller frees), or a negative token_err. */
int token_sign(const token_signer *s, const json_t *payload, char **out);
/* The public key as a JWKS document ({"keys":[{kty,crv|n,e,...,kid,alg,use:"sig"}]}),
 * malloc'd JSON text (caller frees) or NULL. */
char *token_signer_jwks(const token_signer *s);

#endif
