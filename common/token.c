/* token.c - JWT access tokens: strict verification with OpenSSL, signing through libjwt.
 *
 * Verification never goes through libjwt. Debian's libjwt 1.10.2 takes the algorithm from
 * the token, verifies HS256 with whatever key bytes it is given (so an RSA public-key PEM
 * becomes an HMAC secret), skips verification for "none" when the key is NULL, decodes
 * base64 leniently, checks no claim, and parses the key's PEM again on every call (about
 * 0.4 ms with OpenSSL 3). Here the token is split and base64url-decoded strictly, the header
 * is checked against the key chosen by kid (the algorithm is pinned per key), the signature
 * is checked with that key's EVP_PKEY, parsed once at load, with SHA-256 and the scheme of
 * the key's type (verify_sig), and the claims are parsed and checked with jansson.
 * typ, when present, must be "JWT".
 *
 * Signing (auth) uses libjwt with the signer's own key and pinned algorithm. */
#include "token.h"

#include "b64url.h"
#include "log.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#define TOKEN_MAX_KEYS 16
#define TOKEN_MAX_KEYFILE (64 * 1024)
#define TOKEN_DEFAULT_MAX_LEN 8192
#define TOKEN_HARD_MAX_LEN 65536 /* whatever the policy says: libjwt alloca()s each segment */
#define TOKEN_KID_MAX 128 /* with the NUL; equals sizeof(token_claims.kid) */
#define TOKEN_RSA_MIN_BITS 2048
#define TOKEN_RSA_MAX_BITS 8192
#define TOKEN_SIGN_MAX_BODY 4096     /* claims JSON handed to libjwt (it uses alloca) */
#define TOKEN_MAX_LEEWAY 86400L
#define TOKEN_TIME_MAX (LONG_MAX / 4) /* NumericDates beyond this are nonsense */

_Static_assert(sizeof(((token_claims *)0)->kid) == TOKEN_KID_MAX, "kid buffers differ");

struct token_key {
    char kid[TOKEN_KID_MAX];
    const char *alg; /* "ES256" or "RS256": pinned by the key, never taken from a token */
    size_t sig_len;  /* exact JWS signature length: 64 (R||S) or the RSA modulus bytes */
    EVP_PKEY *pkey;
};

/* Tokens whose signature verified, so a client that presents the same token on every
 * request pays for one verification (about 60 µs for ES256 here), not one per request.
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
    uint64_t gen; /* unique per keyset: names it in the threads' verification contexts */
    size_t n;
    struct token_key keys[TOKEN_MAX_KEYS];
    struct token_cache *cache;
};

static _Atomic uint64_t keyset_gen;

struct token_signer {
    char kid[TOKEN_KID_MAX];
    const char *alg;
    jwt_alg_t jalg;
    EVP_PKEY *pkey;
    char *pem; /* unencrypted PKCS#8 PEM for libjwt; cleansed on destroy */
    int pem_len;
};

const char *token_strerror(int err)
{
    switch (err) {
    case TOKEN_OK: return "ok";
    case TOKEN_EMALFORMED: return "malformed token";
    case TOKEN_ETOOLONG: return "token too long";
    case TOKEN_EALG: return "algorithm not allowed";
    case TOKEN_EKID: return "unknown key id";
    case TOKEN_ESIG: return "bad signature";
    case TOKEN_EEXPIRED: return "expired";
    case TOKEN_ENOTYET: return "not yet valid";
    case TOKEN_EISS: return "wrong issuer";
    case TOKEN_EAUD: return "wrong audience";
    case TOKEN_ECLAIMS: return "missing or invalid claims";
    case TOKEN_ENOMEM: return "out of memory";
    case TOKEN_EKEY: return "unusable key";
    default: return "unknown error";
    }
}

/* ---- small helpers ---------------------------------------------------------------------- */

/* OpenSSL's default would prompt on the terminal for an encrypted key: refuse instead. */
static int token_no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

/* 1 when the JSON string v is byte-equal to the n bytes of s. */
static int json_str_eq(const json_t *v, const char *s, size_t n)
{
    return json_is_string(v) && json_string_length(v) == n &&
           memcmp(json_string_value(v), s, n) == 0;
}

/* A kid we accept: 1..127 printable ASCII bytes, no space, quote or backslash (kids are
 * logged and compared byte for byte). */
static int kid_valid(const char *s, size_t n)
{
    if (n == 0 || n >= TOKEN_KID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f || c == '"' || c == '\\')
            return 0;
    }
    return 1;
}

/* Reads at most max bytes of path into a malloc'd NUL-terminated *out (caller frees).
 * Logs and returns TOKEN_EKEY when unreadable or larger than max. */
static int read_file_bounded(const char *path, size_t max, char **out, size_t *len)
{
    FILE *f = NULL;
    char *buf = NULL;
    size_t n;
    int rc = TOKEN_EKEY;

    *out = NULL;
    if (path == NULL || (f = fopen(path, "rb")) == NULL) {
        log_warn("cannot open key file", "path=%s error=\"%s\"", path ? path : "(null)",
                 strerror(errno));
        goto error;
    }
    if ((buf = malloc(max + 2)) == NULL) {
        rc = TOKEN_ENOMEM;
        log_error("out of memory", "path=%s", path);
        goto error;
    }
    n = fread(buf, 1, max + 1, f);
    if (ferror(f)) {
        log_warn("cannot read key file", "path=%s", path);
        goto error;
    }
    if (n > max) {
        log_warn("key file too large", "path=%s max_bytes=%zu", path, max);
        goto error;
    }
    buf[n] = '\0';
    fclose(f);
    *out = buf;
    *len = n;
    return 0;
error:
    if (buf != NULL) {
        OPENSSL_cleanse(buf, max + 2);
        free(buf);
    }
    if (f != NULL)
        fclose(f);
    return rc;
}

/* ---- keys -------------------------------------------------------------------------------- */

/* The JWS profile a key implies: EC P-256 -> ES256, RSA 2048..8192 bits -> RS256. */
static int key_profile(EVP_PKEY *pk, const char **alg, jwt_alg_t *jalg, size_t *sig_len,
                       const char **why)
{
    if (EVP_PKEY_is_a(pk, "EC")) {
        char group[64] = "";
        if (EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                           NULL) != 1 ||
            (strcmp(group, "prime256v1") != 0 && strcmp(group, "P-256") != 0)) {
            *why = "EC key not on the P-256 curve";
            return TOKEN_EKEY;
        }
        *alg = "ES256";
        if (jalg) *jalg = JWT_ALG_ES256;
        *sig_len = 64;
        return 0;
    }
    if (EVP_PKEY_is_a(pk, "RSA")) {
        int bits = EVP_PKEY_get_bits(pk);
        if (bits < TOKEN_RSA_MIN_BITS || bits > TOKEN_RSA_MAX_BITS) {
            *why = "RSA key size outside 2048..8192 bits";
            return TOKEN_EKEY;
        }
        *alg = "RS256";
        if (jalg) *jalg = JWT_ALG_RS256;
        *sig_len = (size_t)EVP_PKEY_get_size(pk);
        return 0;
    }
    *why = "unsupported key type (need EC P-256 or RSA)";
    return TOKEN_EKEY;
}

/* base64url of a big number, big-endian, padded to pad bytes (0: minimal). Caller frees. */
static char *bn_b64url(const BIGNUM *bn, int pad)
{
    int n = pad > 0 ? pad : BN_num_bytes(bn);
    unsigned char *bin = malloc(n > 0 ? (size_t)n : 1);
    char *s = NULL;

    if (bin == NULL)
        return NULL;
    if (BN_bn2binpad(bn, bin, n) == n)
        s = b64url_encode_alloc(bin, (size_t)n);
    free(bin);
    return s;
}

/* The public JWK members of pk that RFC 7638 hashes: {kty, crv, x, y} or {kty, n, e}.
 * Returns a new JSON object (caller decrefs) or NULL. */
static json_t *jwk_public(EVP_PKEY *pk)
{
    BIGNUM *a = NULL, *b = NULL;
    char *sa = NULL, *sb = NULL;
    json_t *jwk = NULL;

    if (EVP_PKEY_is_a(pk, "EC")) {
        if (EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_EC_PUB_X, &a) != 1 ||
            EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_EC_PUB_Y, &b) != 1)
            goto done;
        sa = bn_b64url(a, 32);
        sb = bn_b64url(b, 32);
        if (sa != NULL && sb != NULL)
            jwk = json_pack("{s:s,s:s,s:s,s:s}", "kty", "EC", "crv", "P-256", "x", sa, "y", sb);
    } else if (EVP_PKEY_is_a(pk, "RSA")) {
        if (EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_N, &a) != 1 ||
            EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_E, &b) != 1)
            goto done;
        sa = bn_b64url(a, 0);
        sb = bn_b64url(b, 0);
        if (sa != NULL && sb != NULL)
            jwk = json_pack("{s:s,s:s,s:s}", "kty", "RSA", "n", sa, "e", sb);
    }
done:
    BN_free(a);
    BN_free(b);
    free(sa);
    free(sb);
    return jwk;
}

/* RFC 7638 JWK thumbprint (SHA-256, base64url) of pk into out (cap >= 44). */
static int jwk_thumbprint(EVP_PKEY *pk, char *out, size_t cap)
{
    json_t *jwk = jwk_public(pk);
    char *text = NULL;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    int rc = TOKEN_ENOMEM;

    if (jwk == NULL)
        goto done;
    /* Sorted members, no whitespace: exactly RFC 7638 §3's canonical form (the values are
     * base64url, which JSON never escapes). */
    if ((text = json_dumps(jwk, JSON_COMPACT | JSON_SORT_KEYS)) == NULL)
        goto done;
    if (EVP_Digest(text, strlen(text), md, &mdlen, EVP_sha256(), NULL) != 1) {
        rc = TOKEN_EKEY;
        goto done;
    }
    rc = b64url_encode(md, mdlen, out, cap) == 0 ? 0 : TOKEN_EKEY;
done:
    free(text);
    json_decref(jwk);
    return rc;
}

/* Adds pk to ks under kid (NULL: its RFC 7638 thumbprint). want_alg, when not NULL, must be
 * the alg the key implies. Takes ownership of pk, also on failure. */
static int keyset_add(token_keyset *ks, EVP_PKEY *pk, const char *kid, const char *want_alg,
                      const char **why)
{
    struct token_key k;
    EVP_PKEY_CTX *ctx = NULL;
    int rc = TOKEN_EKEY;

    memset(&k, 0, sizeof k);
    if (ks->n >= TOKEN_MAX_KEYS) {
        *why = "more than 16 keys";
        goto error;
    }
    if ((rc = key_profile(pk, &k.alg, NULL, &k.sig_len, why)) != 0)
        goto error;
    rc = TOKEN_EKEY;
    if (want_alg != NULL && strcmp(want_alg, k.alg) != 0) {
        *why = "the key's alg does not match its type";
        goto error;
    }
    if (kid != NULL) {
        if (!kid_valid(kid, strlen(kid))) {
            *why = "kid empty, too long or not printable ASCII";
            goto error;
        }
        memcpy(k.kid, kid, strlen(kid) + 1);
    } else if ((rc = jwk_thumbprint(pk, k.kid, sizeof k.kid)) != 0) {
        *why = "cannot compute the key's thumbprint";
        goto error;
    }
    rc = TOKEN_EKEY;
    for (size_t i = 0; i < ks->n; i++) {
        if (strcmp(ks->keys[i].kid, k.kid) == 0) {
            *why = "kid repeats";
            goto error;
        }
    }
    /* Points off the curve, even RSA exponents and the like are refused here, once. */
    if ((ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL)) == NULL ||
        EVP_PKEY_public_check(ctx) != 1) {
        *why = "invalid public key";
        goto error;
    }
    k.pkey = pk;
    ks->keys[ks->n++] = k;
    EVP_PKEY_CTX_free(ctx);
    return 0;
error:
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(pk);
    return rc;
}

/* A public key from OSSL params of key type name ("EC", "RSA"). */
static EVP_PKEY *pkey_from_params(const char *name, OSSL_PARAM_BLD *bld)
{
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *pk = NULL;

    if ((params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
        (ctx = EVP_PKEY_CTX_new_from_name(NULL, name, NULL)) == NULL ||
        EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) != 1)
        pk = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pk;
}

/* Decodes the base64url string member name of obj into buf; *n gets its length. */
static int jwk_member(const json_t *obj, const char *name, unsigned char *buf, size_t cap,
                      size_t *n)
{
    const json_t *v = json_object_get(obj, name);

    if (!json_is_string(v))
        return -1;
    return b64url_decode(json_string_value(v), json_string_length(v), buf, cap, n) == 0 ? 0 : -1;
}

/* One JWK of a JWKS. Returns 0 (added), 1 (skipped: not a signing key we support) or a
 * negative token_err with *why set. */
static int jwk_load(token_keyset *ks, const json_t *jwk, const char **why)
{
    static const char *const private_members[] = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"};
    const json_t *use = json_object_get(jwk, "use"), *kty = json_object_get(jwk, "kty");
    const json_t *alg = json_object_get(jwk, "alg"), *kid = json_object_get(jwk, "kid");
    OSSL_PARAM_BLD *bld = NULL;
    BIGNUM *bn_n = NULL, *bn_e = NULL;
    EVP_PKEY *pk = NULL;
    unsigned char a[TOKEN_RSA_MAX_BITS / 8 + 1], b[65];
    size_t alen = 0, blen = 0;
    int rc = TOKEN_EKEY;

    if (use != NULL && !json_is_string(use)) {
        *why = "use is not a string";
        goto done;
    }
    if (use != NULL && strcmp(json_string_value(use), "sig") != 0) {
        rc = 1;
        goto done;
    }
    if (!json_is_string(kty)) {
        *why = "kty missing";
        goto done;
    }
    if (alg != NULL && !json_is_string(alg)) {
        *why = "alg is not a string";
        goto done;
    }
    for (size_t i = 0; i < sizeof private_members / sizeof private_members[0]; i++) {
        if (json_object_get(jwk, private_members[i]) != NULL) {
            *why = "private or secret key material in a public key file";
            goto done;
        }
    }
    if ((bld = OSSL_PARAM_BLD_new()) == NULL) {
        rc = TOKEN_ENOMEM;
        *why = "out of memory";
        goto done;
    }
    if (strcmp(json_string_value(kty), "EC") == 0) {
        const json_t *crv = json_object_get(jwk, "crv");
        if (!json_is_string(crv)) {
            *why = "EC key without crv";
            goto done;
        }
        if (strcmp(json_string_value(crv), "P-256") != 0) {
            rc = 1;
            goto done;
        }
        b[0] = 0x04; /* uncompressed point: 04 || X || Y */
        if (jwk_member(jwk, "x", b + 1, 32, &alen) != 0 || alen != 32 ||
            jwk_member(jwk, "y", b + 33, 32, &blen) != 0 || blen != 32) {
            *why = "EC x and y must be 32 bytes of base64url each";
            goto done;
        }
        if (OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) !=
                1 ||
            OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, b, 65) != 1 ||
            (pk = pkey_from_params("EC", bld)) == NULL) {
            *why = "EC point not on P-256";
            goto done;
        }
    } else if (strcmp(json_string_value(kty), "RSA") == 0) {
        if (jwk_member(jwk, "n", a, sizeof a, &alen) != 0 || alen == 0 ||
            jwk_member(jwk, "e", b, 8, &blen) != 0 || blen == 0) {
            *why = "RSA n or e missing, not base64url or too large";
            goto done;
        }
        if ((bn_n = BN_bin2bn(a, (int)alen, NULL)) == NULL ||
            (bn_e = BN_bin2bn(b, (int)blen, NULL)) == NULL) {
            rc = TOKEN_ENOMEM;
            *why = "out of memory";
            goto done;
        }
        if (OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) != 1 ||
            OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e) != 1 ||
            (pk = pkey_from_params("RSA", bld)) == NULL) {
            *why = "invalid RSA key";
            goto done;
        }
    } else {
        rc = 1; /* "oct", "OKP", ...: not ours to use */
        goto done;
    }
    rc = keyset_add(ks, pk, kid ? json_string_value(kid) : NULL,
                    alg ? json_string_value(alg) : NULL, why);
    pk = NULL;
done:
    EVP_PKEY_free(pk);
    BN_free(bn_n);
    BN_free(bn_e);
    OSSL_PARAM_BLD_free(bld);
    return rc;
}

/* A JWKS document: {"keys":[...]} with at most 16 keys and no kid twice. */
static int jwks_parse(token_keyset *ks, const char *text, size_t len, const char **why,
                      size_t *bad)
{
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
    const json_t *keys = json_object_get(root, "keys");
    size_t n = json_array_size(keys);
    int rc = TOKEN_EKEY;

    if (!json_is_object(root) || !json_is_array(keys)) {
        *why = "not a JWKS: JSON object with a \"keys\" array expected";
        goto done;
    }
    if (n > TOKEN_MAX_KEYS) {
        *why = "more than 16 keys";
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *jwk = json_array_get(keys, i), *kid = json_object_get(jwk, "kid");
        *bad = i;
        if (!json_is_object(jwk)) {
            *why = "key is not a JSON object";
            goto done;
        }
        if (kid != NULL && !json_is_string(kid)) {
            *why = "kid is not a string";
            goto done;
        }
        for (size_t j = 0; kid != NULL && j < i; j++) {
            if (json_equal(kid, json_object_get(json_array_get(keys, j), "kid"))) {
                *why = "kid repeats";
                goto done;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        *bad = i;
        rc = jwk_load(ks, json_array_get(keys, i), why);
        if (rc < 0)
            goto done;
    }
    rc = 0;
done:
    json_decref(root);
    return rc;
}

/* The public key of one PEM block: PUBLIC KEY or CERTIFICATE. */
static int pem_block_key(const char *block, size_t n, const char *label, size_t label_len,
                         EVP_PKEY **out, const char **why)
{
    BIO *bio = NULL;
    X509 *x509 = NULL;
    int rc = TOKEN_EKEY;

    *out = NULL;
    if ((bio = BIO_new_mem_buf(block, (int)n)) == NULL) {
        rc = TOKEN_ENOMEM;
        *why = "out of memory";
        goto done;
    }
    if (label_len == 10 && memcmp(label, "PUBLIC KEY", 10) == 0) {
        *out = PEM_read_bio_PUBKEY(bio, NULL, token_no_passphrase, NULL);
    } else if (label_len == 11 && memcmp(label, "CERTIFICATE", 11) == 0) {
        if ((x509 = PEM_read_bio_X509(bio, NULL, token_no_passphrase, NULL)) != NULL)
            *out = X509_get_pubkey(x509);
    } else {
        *why = label_len >= 11 && memcmp(label + label_len - 11, "PRIVATE KEY", 11) == 0
                   ? "private key in a public key file"
                   : "unsupported PEM block (PUBLIC KEY or CERTIFICATE expected)";
        goto done;
    }
    if (*out == NULL) {
        *why = "unreadable PEM block";
        goto done;
    }
    rc = 0;
done:
    X509_free(x509);
    BIO_free(bio);
    return rc;
}

/* Position of needle in hay[0..n), or NULL (memmem is a GNU extension). */
static const char *find_bytes(const char *hay, size_t n, const char *needle, size_t m)
{
    for (size_t i = 0; m <= n && i <= n - m; i++) {
        if (hay[i] == needle[0] && memcmp(hay + i, needle, m) == 0)
            return hay + i;
    }
    return NULL;
}

/* One or more PEM blocks; a line "kid: NAME" names the block right after it (blank lines and
 * '#' comments may sit between); other text outside blocks is ignored (RFC 7468 §2). */
static int pem_parse(token_keyset *ks, const char *text, size_t len, const char **why,
                     size_t *bad)
{
    const char *p = text, *end = text + len;
    char kid[TOKEN_KID_MAX];
    int have_kid = 0, rc = TOKEN_EKEY;

    *bad = 0;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *next = eol ? eol + 1 : end, *line = p;
        size_t ll;

        eol = eol ? eol : end;
        while (line < eol && (*line == ' ' || *line == '\t'))
            line++;
        ll = (size_t)(eol - line);
        while (ll > 0 && (line[ll - 1] == '\r' || line[ll - 1] == ' ' || line[ll - 1] == '\t'))
            ll--;
        if (ll == 0 || line[0] == '#') {
            p = next;
            continue;
        }
        if (ll > 4 && memcmp(line, "kid:", 4) == 0) {
            const char *name = line + 4;
            size_t nl = ll - 4;
            while (nl > 0 && (*name == ' ' || *name == '\t')) {
                name++;
                nl--;
            }
            if (have_kid || !kid_valid(name, nl)) {
                *why = have_kid ? "two kid: lines for one PEM block" : "invalid kid: line";
                goto done;
            }
            memcpy(kid, name, nl);
            kid[nl] = '\0';
            have_kid = 1;
            p = next;
            continue;
        }
        if (ll > 16 && memcmp(line, "-----BEGIN ", 11) == 0 &&
            memcmp(line + ll - 5, "-----", 5) == 0) {
            const char *label = line + 11, *endm;
            size_t label_len = ll - 16, mlen;
            char marker[64];
            EVP_PKEY *pk = NULL;

            if (label_len > 40) {
                *why = "malformed PEM block";
                goto done;
            }
            mlen = (size_t)snprintf(marker, sizeof marker, "-----END %.*s-----", (int)label_len,
                                    label);
            if ((endm = find_bytes(next, (size_t)(end - next), marker, mlen)) == NULL) {
                *why = "PEM block without its END line";
                goto done;
            }
            if ((rc = pem_block_key(line, (size_t)(endm + mlen - line), label, label_len, &pk,
                                    why)) != 0)
                goto done;
            if ((rc = keyset_add(ks, pk, have_kid ? kid : NULL, NULL, why)) != 0)
                goto done;
            rc = TOKEN_EKEY;
            have_kid = 0;
            (*bad)++;
            p = endm + mlen;
            continue;
        }
        if (have_kid) {
            *why = "kid: line not followed by a PEM block";
            goto done;
        }
        p = next;
    }
    if (have_kid) {
        *why = "kid: line not followed by a PEM block";
        goto done;
    }
    rc = 0;
done:
    return rc;
}

/* Shared by token_keyset_parse and token_keyset_load; source names the input in the log. */
static int keyset_parse_from(token_keyset **out, const char *text, size_t len,
                             const char *source)
{
    token_keyset *ks = NULL;
    const char *why = "unknown";
    size_t i = 0, bad = 0;
    int rc = TOKEN_EKEY;

    if (out == NULL)
        return TOKEN_EKEY;
    *out = NULL;
    if (text == NULL) {
        why = "no key text";
        goto error;
    }
    if (len > TOKEN_MAX_KEYFILE) {
        why = "key file larger than 64 KiB";
        goto error;
    }
    if ((ks = calloc(1, sizeof *ks)) == NULL || (ks->cache = calloc(1, sizeof *ks->cache)) == NULL) {
        free(ks);
        ks = NULL;
        rc = TOKEN_ENOMEM;
        why = "out of memory";
        goto error;
    }
    for (size_t j = 0; j < TOKEN_CACHE_LOCKS; j++) pthread_mutex_init(&ks->cache->locks[j], NULL);
    ks->gen = atomic_fetch_add(&keyset_gen, 1) + 1;
    while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\r' || text[i] == '\n'))
        i++;
    if (i < len && text[i] == '{')
        rc = jwks_parse(ks, text, len, &why, &bad);
    else
        rc = pem_parse(ks, text, len, &why, &bad);
    if (rc != 0)
        goto error;
    if (ks->n == 0) {
        rc = TOKEN_EKEY;
        why = "no usable signing key (EC P-256 or RSA >= 2048 with use \"sig\")";
        goto error;
    }
    *out = ks;
    return 0;
error:
    log_warn("token keys rejected", "source=%s key_index=%zu reason=\"%s\"", source, bad, why);
    token_keyset_destroy(ks);
    ERR_clear_error();
    return rc;
}

int token_keyset_parse(token_keyset **out, const char *text, size_t len)
{
    return keyset_parse_from(out, text, len, "memory");
}

int token_keyset_load(token_keyset **out, const char *path)
{
    char *text = NULL;
    size_t len = 0;
    int rc;

    if (out == NULL)
        return TOKEN_EKEY;
    *out = NULL;
    if ((rc = read_file_bounded(path, TOKEN_MAX_KEYFILE, &text, &len)) != 0)
        goto done;
    rc = keyset_parse_from(out, text, len, path);
done:
    free(text);
    return rc;
}

void token_keyset_destroy(token_keyset *ks)
{
    if (ks == NULL)
        return;
    for (size_t i = 0; i < ks->n; i++) {
        EVP_PKEY_free(ks->keys[i].pkey);
    }
    if (ks->cache) {
        for (size_t i = 0; i < TOKEN_CACHE_SLOTS; i++) json_decref(ks->cache->slots[i].payload);
        for (size_t i = 0; i < TOKEN_CACHE_LOCKS; i++)
            pthread_mutex_destroy(&ks->cache->locks[i]);
        free(ks->cache);
    }
    free(ks);
}

size_t token_keyset_count(const token_keyset *ks)
{
    return ks ? ks->n : 0;
}

/* ---- verification ------------------------------------------------------------------------ */

static const struct token_key *keyset_find(const token_keyset *ks, const json_t *kid)
{
    for (size_t i = 0; i < ks->n; i++) {
        if (json_str_eq(kid, ks->keys[i].kid, strlen(ks->keys[i].kid)))
            return &ks->keys[i];
    }
    return NULL;
}

/* Strictly decodes one segment into buf and parses it as a JSON object (no duplicate
 * members). Returns a new object or NULL. */
static json_t *segment_json(const char *seg, size_t n, unsigned char *buf, size_t cap)
{
    size_t dn = 0;
    json_t *v;

    if (n == 0 || b64url_decode(seg, n, buf, cap, &dn) != 0)
        return NULL;
    v = json_loadb((const char *)buf, dn, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(v)) {
        json_decref(v);
        return NULL;
    }
    return v;
}

/* The JOSE header, checked against the keyset: alg one we pin and equal to the chosen key's,
 * kid known, no crit, typ absent or JWT. */
static int header_check(const token_keyset *ks, const json_t *hdr,
                        const struct token_key **key)
{
    const json_t *alg = json_object_get(hdr, "alg"), *kid = json_object_get(hdr, "kid");
    const json_t *typ = json_object_get(hdr, "typ");
    const struct token_key *k;

    if (!json_str_eq(alg, "ES256", 5) && !json_str_eq(alg, "RS256", 5))
        return TOKEN_EALG;
    if (!json_is_string(kid) || (k = keyset_find(ks, kid)) == NULL)
        return TOKEN_EKID;
    if (!json_str_eq(alg, k->alg, strlen(k->alg)))
        return TOKEN_EALG;
    if (json_object_get(hdr, "crit") != NULL)
        return TOKEN_EMALFORMED; /* we understand no extension, so none may be critical */
    if (typ != NULL && (!json_is_string(typ) || json_string_length(typ) != 3 ||
                        strcasecmp(json_string_value(typ), "JWT") != 0))
        return TOKEN_EMALFORMED;
    *key = k;
    return 0;
}

/* SHA-256, fetched once: an implicit fetch on every verification takes the provider
 * registry's lock each time. */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

/* Verification contexts, one per thread and key, made on first use. EVP_PKEY_verify_init
 * fetches the algorithm and builds the provider's key context on every call (with
 * EVP_DigestVerify, about a quarter of an ES256 verification's CPU here, and its
 * allocations), while one initialised EVP_PKEY_CTX verifies any number of signatures.
 * A context is not shared between threads, so each thread keeps its own, named by the
 * keyset's generation: a thread that meets another keyset (keys reloaded) starts over. */
struct vctx_cache {
    uint64_t gen;
    EVP_PKEY_CTX *ctx[TOKEN_MAX_KEYS];
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
    if (p == NULL)
        return;
    vctx_cache_clear(p);
    free(p);
}

static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (pthread_key_create(&vctx_key, vctx_cache_free) != 0) {
        EVP_MD_free(sha256_md); /* no cleanup at thread exit: verify without contexts */
        sha256_md = NULL;
    }
}

/* The calling thread's verify-initialised context for ks->keys[i], or NULL (no memory). */
static EVP_PKEY_CTX *vctx_get(const token_keyset *ks, size_t i)
{
    struct vctx_cache *vc = tl_vctx;
    EVP_PKEY_CTX *ctx;

    if (vc == NULL) {
        if ((vc = calloc(1, sizeof *vc)) == NULL)
            return NULL;
        if (pthread_setspecific(vctx_key, vc) != 0) {
            free(vc);
            return NULL;
        }
        tl_vctx = vc;
    }
    if (vc->gen != ks->gen) {
        vctx_cache_clear(vc);
        vc->gen = ks->gen;
    }
    if (vc->ctx[i] != NULL)
        return vc->ctx[i];
    if ((ctx = EVP_PKEY_CTX_new_from_pkey(NULL, ks->keys[i].pkey, NULL)) == NULL)
        return NULL;
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
 * (RFC 7518 §3.4), which OpenSSL wants DER-encoded. */
static int verify_sig(const token_keyset *ks, size_t ki, const char *input, size_t n,
                      const unsigned char *sig, size_t slen)
{
    const struct token_key *k = &ks->keys[ki];
    unsigned char der[80], *p = der, md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    const unsigned char *s = sig;
    size_t sn = slen;
    EVP_PKEY_CTX *ctx;
    ECDSA_SIG *es = NULL;
    BIGNUM *r = NULL, *sv = NULL;
    int rc = TOKEN_ESIG, dl;

    pthread_once(&sha256_once, sha256_fetch);
    if (sha256_md == NULL)
        return TOKEN_ENOMEM;
    if (strcmp(k->alg, "ES256") == 0) {
        if (slen != 64)
            return TOKEN_ESIG;
        if ((es = ECDSA_SIG_new()) == NULL || (r = BN_bin2bn(sig, 32, NULL)) == NULL ||
            (sv = BN_bin2bn(sig + 32, 32, NULL)) == NULL) {
            rc = TOKEN_ENOMEM;
            goto done;
        }
        if (ECDSA_SIG_set0(es, r, sv) != 1) {
            rc = TOKEN_ENOMEM;
            goto done;
        }
        r = sv = NULL; /* owned by es now */
        if ((dl = i2d_ECDSA_SIG(es, NULL)) <= 0 || (size_t)dl > sizeof der ||
            i2d_ECDSA_SIG(es, &p) != dl)
            goto done;
        s = der;
        sn = (size_t)dl;
    }
    if ((ctx = vctx_get(ks, ki)) == NULL) {
        rc = TOKEN_ENOMEM;
        goto done;
    }
    if (EVP_Digest(input, n, md, &mdlen, sha256_md, NULL) != 1 || mdlen != 32)
        goto done;
    if (EVP_PKEY_verify(ctx, s, sn, md, mdlen) == 1)
        rc = 0;
done:
    ECDSA_SIG_free(es);
    BN_free(r);
    BN_free(sv);
    return rc;
}

/* A NumericDate (RFC 7519 §2). Fractions round towards the strict side: down for exp, up for
 * nbf and iat (round_up). Returns 0, or -1 for a non-number or an absurd value. */
static int numeric_date(const json_t *v, int round_up, long *out)
{
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < -TOKEN_TIME_MAX || i > TOKEN_TIME_MAX)
            return -1;
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

    if (!json_is_string(v))
        return -1;
    s = json_string_value(v);
    n = json_string_length(v);
    if (n == 0 || n >= cap)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return -1;
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
    long leeway = pol->leeway < 0 ? 0 : pol->leeway > TOKEN_MAX_LEEWAY ? TOKEN_MAX_LEEWAY
                                                                        : pol->leeway;
    size_t alen = strlen(pol->audience), i;
    int found = 0;

    if (numeric_date(json_object_get(c, "exp"), 0, &out->exp) != 0)
        return TOKEN_ECLAIMS;
    if (now - leeway >= out->exp)
        return TOKEN_EEXPIRED;
    if ((v = json_object_get(c, "nbf")) != NULL) {
        if (numeric_date(v, 1, &out->nbf) != 0)
            return TOKEN_ECLAIMS;
        if (out->nbf > now + leeway)
            return TOKEN_ENOTYET;
    }
    if ((v = json_object_get(c, "iat")) != NULL) {
        if (numeric_date(v, 1, &out->iat) != 0)
            return TOKEN_ECLAIMS;
        if (out->iat > now + leeway)
            return TOKEN_ENOTYET;
    }
    if (!json_str_eq(json_object_get(c, "iss"), pol->issuer, strlen(pol->issuer)))
        return TOKEN_EISS;
    if (json_is_string(aud)) {
        found = json_str_eq(aud, pol->audience, alen);
    } else if (json_is_array(aud)) {
        json_array_foreach(aud, i, v) {
            if (json_str_eq(v, pol->audience, alen))
                found = 1;
        }
    }
    if (!found)
        return TOKEN_EAUD;
    if (text_claim(json_object_get(c, "sub"), out->sub, sizeof out->sub) != 0 ||
        !sub_safe(out->sub))
        return TOKEN_ECLAIMS;
    if ((v = json_object_get(c, "jti")) != NULL &&
        text_claim(v, out->jti, sizeof out->jti) != 0)
        return TOKEN_ECLAIMS;
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
    size_t key_index = 0;
    const struct token_key *key = NULL;
    json_t *hdr = NULL, *payload = NULL;
    unsigned char *buf = NULL;
    const char *d1, *d2;
    size_t max, len, cap, slen = 0;
    int rc = TOKEN_EMALFORMED;

    if (out == NULL)
        return TOKEN_EMALFORMED;
    memset(out, 0, sizeof *out);
    if (ks == NULL || pol == NULL || token == NULL)
        goto error;
    if (pol->issuer == NULL || pol->issuer[0] == '\0') {
        rc = TOKEN_EISS;
        goto error;
    }
    if (pol->audience == NULL || pol->audience[0] == '\0') {
        rc = TOKEN_EAUD;
        goto error;
    }
    max = pol->max_len ? pol->max_len : TOKEN_DEFAULT_MAX_LEN;
    max = max > TOKEN_HARD_MAX_LEN ? TOKEN_HARD_MAX_LEN : max;
    if ((len = strnlen(token, max + 1)) > max) {
        rc = TOKEN_ETOOLONG;
        goto error;
    }
    /* Exactly three parts: header.payload.signature. */
    if ((d1 = memchr(token, '.', len)) == NULL ||
        (d2 = memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token))) == NULL ||
        memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - token)) != NULL)
        goto error;
    SHA256((const unsigned char *)token, len, digest);
    if ((payload = cache_get(ks, digest, &key_index)) != NULL) {
        key = &ks->keys[key_index];
        goto claims;
    }
    cap = b64url_decoded_max(len) + 1;
    if ((buf = malloc(cap)) == NULL) {
        rc = TOKEN_ENOMEM;
        goto error;
    }
    if ((hdr = segment_json(token, (size_t)(d1 - token), buf, cap)) == NULL)
        goto error;
    if ((rc = header_check(ks, hdr, &key)) != 0)
        goto error;
    rc = TOKEN_EMALFORMED;
    if ((payload = segment_json(d1 + 1, (size_t)(d2 - d1 - 1), buf, cap)) == NULL)
        goto error;
    if (b64url_decode(d2 + 1, len - (size_t)(d2 + 1 - token), buf, cap, &slen) != 0)
        goto error;
    if (slen != key->sig_len) { /* empty, truncated or padded: never worth a verification */
        rc = TOKEN_ESIG;
        goto error;
    }
    rc = verify_sig(ks, (size_t)(key - ks->keys), token, (size_t)(d2 - token), buf, slen);
    if (rc != 0)
        goto error;
    cache_put(ks, digest, (size_t)(key - ks->keys), payload);
claims:
    if ((rc = claims_check(payload, pol, now, out)) != 0)
        goto error;
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
    if (c == NULL)
        return;
    json_decref(c->payload);
    memset(c, 0, sizeof *c);
}

/* ---- signing ----------------------------------------------------------------------------- */

int token_signer_load(token_signer **out, const char *pem_path, const char *kid)
{
    token_signer *s = NULL;
    EVP_PKEY *pk = NULL;
    BIO *in = NULL, *pem = NULL;
    char *text = NULL, *data = NULL;
    const char *why = "unknown";
    size_t len = 0, sig_len;
    long n;
    int rc;

    if (out == NULL)
        return TOKEN_EKEY;
    *out = NULL;
    if ((rc = read_file_bounded(pem_path, TOKEN_MAX_KEYFILE, &text, &len)) != 0)
        return rc; /* logged */
    rc = TOKEN_ENOMEM;
    if ((s = calloc(1, sizeof *s)) == NULL || (in = BIO_new_mem_buf(text, (int)len)) == NULL) {
        why = "out of memory";
        goto error;
    }
    rc = TOKEN_EKEY;
    if ((pk = PEM_read_bio_PrivateKey(in, NULL, token_no_passphrase, NULL)) == NULL) {
        why = "no unencrypted PEM private key";
        goto error;
    }
    if ((rc = key_profile(pk, &s->alg, &s->jalg, &sig_len, &why)) != 0)
        goto error;
    rc = TOKEN_EKEY;
    if (kid != NULL && kid[0] != '\0') {
        if (!kid_valid(kid, strlen(kid))) {
            why = "kid empty, too long or not printable ASCII";
            goto error;
        }
        memcpy(s->kid, kid, strlen(kid) + 1);
    } else if ((rc = jwk_thumbprint(pk, s->kid, sizeof s->kid)) != 0) {
        why = "cannot compute the key's thumbprint";
        goto error;
    }
    /* libjwt re-reads the key from PEM on every signature: hand it one unencrypted PKCS#8
     * block written here (the file may hold other blocks), in memory that is wiped on free. */
    rc = TOKEN_EKEY;
    if ((pem = BIO_new(BIO_s_secmem())) == NULL ||
        PEM_write_bio_PrivateKey(pem, pk, NULL, NULL, 0, NULL, NULL) != 1 ||
        (n = BIO_get_mem_data(pem, &data)) <= 0 || n > INT_MAX - 1) {
        why = "cannot encode the private key";
        goto error;
    }
    if ((s->pem = malloc((size_t)n + 1)) == NULL) {
        rc = TOKEN_ENOMEM;
        why = "out of memory";
        goto error;
    }
    memcpy(s->pem, data, (size_t)n);
    s->pem[n] = '\0';
    s->pem_len = (int)n;
    s->pkey = pk;
    BIO_free(pem);
    BIO_free(in);
    OPENSSL_cleanse(text, len);
    free(text);
    *out = s;
    return 0;
error:
    log_warn("signing key rejected", "path=%s reason=\"%s\"", pem_path, why);
    BIO_free(pem);
    BIO_free(in);
    EVP_PKEY_free(pk);
    token_signer_destroy(s);
    OPENSSL_cleanse(text, len);
    free(text);
    ERR_clear_error();
    return rc;
}

void token_signer_destroy(token_signer *s)
{
    if (s == NULL)
        return;
    if (s->pem != NULL) {
        OPENSSL_cleanse(s->pem, (size_t)s->pem_len);
        free(s->pem);
    }
    EVP_PKEY_free(s->pkey);
    free(s);
}

const char *token_signer_alg(const token_signer *s)
{
    return s ? s->alg : NULL;
}

const char *token_signer_kid(const token_signer *s)
{
    return s ? s->kid : NULL;
}

int token_sign(const token_signer *s, const json_t *payload, char **out)
{
    jwt_t *jwt = NULL;
    char *body = NULL, *tok = NULL;
    int rc = TOKEN_ECLAIMS;

    if (out == NULL)
        return TOKEN_ECLAIMS;
    *out = NULL;
    if (s == NULL || !json_is_object(payload))
        goto done;
    if ((body = json_dumps(payload, JSON_COMPACT)) == NULL) {
        rc = TOKEN_ENOMEM;
        goto done;
    }
    if (strlen(body) > TOKEN_SIGN_MAX_BODY) {
        rc = TOKEN_ETOOLONG;
        goto done;
    }
    rc = TOKEN_ENOMEM;
    if (jwt_new(&jwt) != 0)
        goto done;
    rc = TOKEN_EKEY;
    if (jwt_set_alg(jwt, s->jalg, (const unsigned char *)s->pem, s->pem_len) != 0 ||
        jwt_add_header(jwt, "kid", s->kid) != 0)
        goto done;
    rc = TOKEN_ECLAIMS;
    if (jwt_add_grants_json(jwt, body) != 0)
        goto done;
    if ((tok = jwt_encode_str(jwt)) == NULL) {
        rc = errno == ENOMEM ? TOKEN_ENOMEM : TOKEN_EKEY;
        goto done;
    }
    *out = tok; /* libjwt 1.10 allocates with malloc(): the caller's free() matches */
    rc = 0;
done:
    jwt_free(jwt);
    free(body);
    if (rc != 0)
        ERR_clear_error();
    return rc;
}

char *token_signer_jwks(const token_signer *s)
{
    json_t *jwk = NULL, *doc = NULL;
    char *text = NULL;

    if (s == NULL || (jwk = jwk_public(s->pkey)) == NULL)
        goto done;
    if (json_object_set_new(jwk, "kid", json_string(s->kid)) != 0 ||
        json_object_set_new(jwk, "alg", json_string(s->alg)) != 0 ||
        json_object_set_new(jwk, "use", json_string("sig")) != 0)
        goto done;
    if ((doc = json_pack("{s:[O]}", "keys", jwk)) == NULL)
        goto done;
    text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
done:
    json_decref(doc);
    json_decref(jwk);
    return text;
}
