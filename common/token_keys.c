/* token_keys.c - the keys of the token module: public keys from a JWKS or PEM blocks
 * (token_keyset_*, each key's algorithm pinned at load: EC P-256 -> ES256, RSA 2048..8192
 * -> RS256), JWK export and thumbprints, and the helpers the other files share. */
#include "token_int.h"

#include "b64url.h"
#include "log.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

static _Atomic uint64_t keyset_gen;

/* ---- small helpers ---------------------------------------------------------------------- */

/* OpenSSL's default would prompt on the terminal for an encrypted key: refuse instead. */
int token_no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

/* 1 when the JSON string v is byte-equal to the n bytes of s. */
int token_json_str_eq(const json_t *v, const char *s, size_t n)
{
    return json_is_string(v) && json_string_length(v) == n &&
           memcmp(json_string_value(v), s, n) == 0;
}

/* A kid we accept: 1..127 printable ASCII bytes, no space, quote or backslash (kids are
 * logged and compared byte for byte). */
int token_kid_valid(const char *s, size_t n)
{
    if (n == 0 || n >= TOKEN_KID_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f || c == '"' || c == '\\') return 0;
    }
    return 1;
}

/* Reads at most max bytes of path into a malloc'd NUL-terminated *out (caller frees).
 * Logs and returns SC_EKEY when unreadable or larger than max. */
int token_read_file(const char *path, size_t max, char **out, size_t *len)
{
    FILE *f = NULL;
    char *buf = NULL;
    size_t n;
    int rc = SC_EKEY;

    *out = NULL;
    if (path == NULL || (f = fopen(path, "rb")) == NULL) {
        log_warn("cannot open key file", "path=%s error=\"%s\"", path ? path : "(null)",
                 strerror(errno));
        goto error;
    }
    if ((buf = malloc(max + 2)) == NULL) {
        rc = -ENOMEM;
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
    if (f != NULL) fclose(f);
    return rc;
}

/* ---- keys -------------------------------------------------------------------------------- */

/* The JWS profile a key implies: EC P-256 -> ES256, RSA 2048..8192 bits -> RS256. */
int token_key_profile(EVP_PKEY *pk, const char **alg, jwt_alg_t *jalg, size_t *sig_len,
                      const char **why)
{
    if (EVP_PKEY_is_a(pk, "EC")) {
        char group[64] = "";
        if (EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                           NULL) != 1 ||
            (strcmp(group, "prime256v1") != 0 && strcmp(group, "P-256") != 0)) {
            *why = "EC key not on the P-256 curve";
            return SC_EKEY;
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
            return SC_EKEY;
        }
        *alg = "RS256";
        if (jalg) *jalg = JWT_ALG_RS256;
        *sig_len = (size_t)EVP_PKEY_get_size(pk);
        return 0;
    }
    *why = "unsupported key type (need EC P-256 or RSA)";
    return SC_EKEY;
}

/* base64url of a big number, big-endian, padded to pad bytes (0: minimal). Caller frees. */
static char *bn_b64url(const BIGNUM *bn, int pad)
{
    int n = pad > 0 ? pad : BN_num_bytes(bn);
    unsigned char *bin = malloc(n > 0 ? (size_t)n : 1);
    char *s = NULL;

    if (bin == NULL) return NULL;
    if (BN_bn2binpad(bn, bin, n) == n) s = b64url_encode_alloc(bin, (size_t)n);
    free(bin);
    return s;
}

/* The public JWK members of pk that RFC 7638 hashes: {kty, crv, x, y} or {kty, n, e}.
 * Returns a new JSON object (caller decrefs) or NULL. */
json_t *token_jwk_public(EVP_PKEY *pk)
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
int token_jwk_thumbprint(EVP_PKEY *pk, char *out, size_t cap)
{
    json_t *jwk = token_jwk_public(pk);
    char *text = NULL;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    int rc = -ENOMEM;

    if (jwk == NULL) goto done;
    /* Sorted members, no whitespace: exactly RFC 7638 §3's canonical form (the values are
     * base64url, which JSON never escapes). */
    if ((text = json_dumps(jwk, JSON_COMPACT | JSON_SORT_KEYS)) == NULL) goto done;
    if (EVP_Digest(text, strlen(text), md, &mdlen, EVP_sha256(), NULL) != 1) {
        rc = SC_EKEY;
        goto done;
    }
    rc = b64url_encode(md, mdlen, out, cap) == 0 ? 0 : SC_EKEY;
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
    int rc = SC_EKEY;

    memset(&k, 0, sizeof k);
    if (ks->n >= TOKEN_MAX_KEYS) {
        *why = "more than 16 keys";
        goto error;
    }
    if ((rc = token_key_profile(pk, &k.alg, NULL, &k.sig_len, why)) != 0) goto error;
    rc = SC_EKEY;
    if (want_alg != NULL && strcmp(want_alg, k.alg) != 0) {
        *why = "the key's alg does not match its type";
        goto error;
    }
    if (kid != NULL) {
        if (!token_kid_valid(kid, strlen(kid))) {
            *why = "kid empty, too long or not printable ASCII";
            goto error;
        }
        memcpy(k.kid, kid, strlen(kid) + 1);
    } else if ((rc = token_jwk_thumbprint(pk, k.kid, sizeof k.kid)) != 0) {
        *why = "cannot compute the key's thumbprint";
        goto error;
    }
    rc = SC_EKEY;
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
    if (strcmp(k.alg, "ES256") == 0 && (rc = token_es256_new(pk, &k.es)) != 0) {
        *why = rc == -ENOMEM ? "out of memory" : "cannot make the key's verification table";
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

    if (!json_is_string(v)) return -1;
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
    int rc = SC_EKEY;

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
        rc = -ENOMEM;
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
            rc = -ENOMEM;
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
static int jwks_parse(token_keyset *ks, const char *text, size_t len, const char **why, size_t *bad)
{
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
    const json_t *keys = json_object_get(root, "keys");
    size_t n = json_array_size(keys);
    int rc = SC_EKEY;

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
        if (rc < 0) goto done;
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
    int rc = SC_EKEY;

    *out = NULL;
    if ((bio = BIO_new_mem_buf(block, (int)n)) == NULL) {
        rc = -ENOMEM;
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
        if (hay[i] == needle[0] && memcmp(hay + i, needle, m) == 0) return hay + i;
    }
    return NULL;
}

/* One or more PEM blocks; a line "kid: NAME" names the block right after it (blank lines and
 * '#' comments may sit between); other text outside blocks is ignored (RFC 7468 §2). */
static int pem_parse(token_keyset *ks, const char *text, size_t len, const char **why, size_t *bad)
{
    const char *p = text, *end = text + len;
    char kid[TOKEN_KID_MAX];
    int have_kid = 0, rc = SC_EKEY;

    *bad = 0;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *next = eol ? eol + 1 : end, *line = p;
        size_t ll;

        eol = eol ? eol : end;
        while (line < eol && (*line == ' ' || *line == '\t')) line++;
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
            if (have_kid || !token_kid_valid(name, nl)) {
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
            if ((rc = keyset_add(ks, pk, have_kid ? kid : NULL, NULL, why)) != 0) goto done;
            rc = SC_EKEY;
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
static int keyset_parse_from(token_keyset **out, const char *text, size_t len, const char *source)
{
    token_keyset *ks = NULL;
    const char *why = "unknown";
    size_t i = 0, bad = 0;
    int rc = SC_EKEY;

    if (out == NULL) return SC_EKEY;
    *out = NULL;
    if (text == NULL) {
        why = "no key text";
        goto error;
    }
    if (len > TOKEN_MAX_KEYFILE) {
        why = "key file larger than 64 KiB";
        goto error;
    }
    if ((ks = token_keyset_new()) == NULL) {
        rc = -ENOMEM;
        why = "out of memory";
        goto error;
    }
    while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\r' || text[i] == '\n'))
        i++;
    if (i < len && text[i] == '{')
        rc = jwks_parse(ks, text, len, &why, &bad);
    else
        rc = pem_parse(ks, text, len, &why, &bad);
    if (rc != 0) goto error;
    if (ks->n == 0) {
        rc = SC_EKEY;
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

    if (out == NULL) return SC_EKEY;
    *out = NULL;
    if ((rc = token_read_file(path, TOKEN_MAX_KEYFILE, &text, &len)) != 0) goto done;
    rc = keyset_parse_from(out, text, len, path);
done:
    free(text);
    return rc;
}

token_keyset *token_keyset_new(void)
{
    token_keyset *ks = calloc(1, sizeof *ks);
    if (!ks || !(ks->cache = calloc(1, sizeof *ks->cache))) {
        free(ks);
        return NULL;
    }
    for (size_t j = 0; j < TOKEN_CACHE_LOCKS; j++) pthread_mutex_init(&ks->cache->locks[j], NULL);
    atomic_init(&ks->refs, 1);
    ks->gen = atomic_fetch_add(&keyset_gen, 1) + 1;
    return ks;
}

token_keyset *token_keyset_ref(token_keyset *ks)
{
    if (ks) atomic_fetch_add(&ks->refs, 1);
    return ks;
}

int token_keyset_union(token_keyset **out, const token_keyset *a, const token_keyset *b)
{
    token_keyset *u = token_keyset_new();
    *out = NULL;
    if (!u) return -ENOMEM;
    const token_keyset *sets[2] = {a, b};
    for (int s = 0; s < 2; s++) {
        for (size_t i = 0; sets[s] && i < sets[s]->n; i++) {
            const struct token_key *k = &sets[s]->keys[i];
            bool dup = false;
            for (size_t j = 0; j < u->n && !dup; j++) dup = strcmp(u->keys[j].kid, k->kid) == 0;
            if (dup || u->n == TOKEN_MAX_KEYS) continue; /* the first set's key of a kid wins */
            EVP_PKEY_up_ref(k->pkey);
            token_es256_ref(k->es);
            u->keys[u->n++] = *k;
        }
    }
    *out = u;
    return 0;
}

void token_keyset_destroy(token_keyset *ks)
{
    if (ks == NULL || atomic_fetch_sub(&ks->refs, 1) > 1) return;
    for (size_t i = 0; i < ks->n; i++) {
        EVP_PKEY_free(ks->keys[i].pkey);
        token_es256_free(ks->keys[i].es);
    }
    if (ks->cache) {
        for (size_t i = 0; i < TOKEN_CACHE_SLOTS; i++) json_decref(ks->cache->slots[i].payload);
        for (size_t i = 0; i < TOKEN_CACHE_LOCKS; i++) pthread_mutex_destroy(&ks->cache->locks[i]);
        free(ks->cache);
    }
    free(ks);
}

size_t token_keyset_count(const token_keyset *ks) { return ks ? ks->n : 0; }
