/* fuzz_token.c - libFuzzer target for common/token.c.
 *
 * The first input byte picks what the rest feeds:
 *   0 (and anything not below)  token text -> token_verify against a fixed keyset
 *   1                           key-file text -> token_keyset_parse
 *   2                           claims JSON, signed for real -> token_verify (claim checks)
 *   3                           header JSON, signed for real -> token_verify (header checks,
 *                               both signature paths)
 *   4                           "pattern\0topic" -> topic_match / topic_valid
 * Oracles: a token that verifies must have passed the rules (alg pinned, kid known, no crit,
 * non-empty sub, a payload object); anything else is a crash the sanitizers report.
 *
 * Build: clang -g -fsanitize=fuzzer,address,undefined -Icommon \
 *   $(pkg-config --cflags jansson libjwt) tests/fuzz/fuzz_token.c common/token.c \
 *   common/b64url.c common/log.c $(pkg-config --libs jansson libjwt libcrypto) -o fuzz_token */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* asprintf */
#endif
#include "b64url.h"
#include "log.h"
#include "proto/topic.h"
#include "token.h"

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOW 1800000000L

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const token_policy fuzz_pol = {"https://auth.sidecast.test", "sidecast", 30, 0};
static token_keyset *fuzz_ks;
static token_signer *fuzz_signer; /* ES256, kid "ec1" */
static EVP_PKEY *fuzz_ec;
static char fuzz_payload_b64[512]; /* a good claims set, base64url */

/* Writes pk as an unencrypted PEM private key to a temporary file and loads a signer. */
static token_signer *fuzz_load_signer(EVP_PKEY *pk, const char *kid)
{
    char path[] = "/tmp/fuzz_token.XXXXXX";
    token_signer *s = NULL;
    int fd = mkstemp(path);
    FILE *f;

    if (fd < 0 || (f = fdopen(fd, "w")) == NULL) abort();
    PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    if (token_signer_load(&s, path, kid) != 0) abort();
    unlink(path);
    return s;
}

/* Appends the keys of a one-key JWKS text to arr. */
static void fuzz_add_jwks(json_t *arr, char *text)
{
    json_t *doc = json_loads(text, 0, NULL);

    json_array_extend(arr, json_object_get(doc, "keys"));
    json_decref(doc);
    free(text);
}

static void fuzz_init(void)
{
    EVP_PKEY *rsa;
    token_signer *rsa_signer;
    json_t *keys = json_array(), *doc, *claims;
    char *text;

    log_init("fuzz_token", LOG_ERROR);
    fuzz_ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    if (fuzz_ec == NULL || rsa == NULL) abort();
    fuzz_signer = fuzz_load_signer(fuzz_ec, "ec1");
    rsa_signer = fuzz_load_signer(rsa, "rsa1");
    fuzz_add_jwks(keys, token_signer_jwks(fuzz_signer));
    fuzz_add_jwks(keys, token_signer_jwks(rsa_signer));
    doc = json_pack("{s:o}", "keys", keys);
    text = json_dumps(doc, JSON_COMPACT);
    if (token_keyset_parse(&fuzz_ks, text, strlen(text)) != 0) abort();
    free(text);
    json_decref(doc);
    token_signer_destroy(rsa_signer);
    EVP_PKEY_free(rsa);
    claims = json_pack("{s:s,s:s,s:s,s:I}", "iss", fuzz_pol.issuer, "aud", fuzz_pol.audience, "sub",
                       "alice", "exp", (json_int_t)NOW + 300);
    text = json_dumps(claims, JSON_COMPACT);
    b64url_encode(text, strlen(text), fuzz_payload_b64, sizeof fuzz_payload_b64);
    free(text);
    json_decref(claims);
}

/* Verifies tok; on success checks what must hold for any verified token. */
static int fuzz_verify(const char *tok)
{
    token_claims cl;
    int rc = token_verify(fuzz_ks, &fuzz_pol, tok, NOW, &cl);

    if (rc == 0) {
        if (cl.sub[0] == '\0' || !json_is_object(cl.payload) || cl.exp <= NOW - 30) abort();
        token_claims_clear(&cl);
    } else if (cl.payload != NULL || cl.sub[0] != '\0') {
        abort(); /* a failed verification leaves nothing behind */
    }
    return rc;
}

/* 1 when member name of obj is the string want. */
static int fuzz_member_is(const json_t *obj, const char *name, const char *want)
{
    const char *v = json_string_value(json_object_get(obj, name));
    return v != NULL && strcmp(v, want) == 0;
}

/* header (any bytes) . good payload . real ES256 signature by the "ec1" key. */
static void fuzz_signed_header(const uint8_t *hdr, size_t n)
{
    char *h = b64url_encode_alloc(hdr, n), *input = NULL, *tok = NULL;
    unsigned char der[128], raw[64];
    size_t dlen = sizeof der;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    const unsigned char *p = der;
    ECDSA_SIG *es = NULL;
    char sig[100];
    json_t *parsed;

    if (h == NULL || md == NULL || asprintf(&input, "%s.%s", h, fuzz_payload_b64) < 0) goto done;
    if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, fuzz_ec) != 1 ||
        EVP_DigestSign(md, der, &dlen, (const unsigned char *)input, strlen(input)) != 1 ||
        (es = d2i_ECDSA_SIG(NULL, &p, (long)dlen)) == NULL)
        goto done;
    BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + 32, 32);
    b64url_encode(raw, 64, sig, sizeof sig);
    if (asprintf(&tok, "%s.%s", input, sig) < 0) {
        tok = NULL;
        goto done;
    }
    if (fuzz_verify(tok) == 0) {
        /* Accepted: the header must have named the pinned alg and the signing kid, no crit. */
        parsed = json_loadb((const char *)hdr, n, 0, NULL);
        if (!json_is_object(parsed) || !fuzz_member_is(parsed, "alg", "ES256") ||
            !fuzz_member_is(parsed, "kid", "ec1") || json_object_get(parsed, "crit") != NULL)
            abort();
        json_decref(parsed);
    }
done:
    ECDSA_SIG_free(es);
    EVP_MD_CTX_free(md);
    free(h);
    free(input);
    free(tok);
}

static void fuzz_signed_claims(const uint8_t *data, size_t n)
{
    json_t *claims = json_loadb((const char *)data, n, 0, NULL);
    char *tok = NULL;

    if (json_is_object(claims) && token_sign(fuzz_signer, claims, &tok) == 0) {
        if (fuzz_verify(tok) == 0) {
            /* Accepted: the claims must really carry our iss and a non-empty string sub. */
            const char *sub = json_string_value(json_object_get(claims, "sub"));
            const char *iss = json_string_value(json_object_get(claims, "iss"));
            if (sub == NULL || sub[0] == '\0' || iss == NULL || strcmp(iss, fuzz_pol.issuer))
                abort();
        }
        free(tok);
    }
    json_decref(claims);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    char *text;
    uint8_t mode;

    if (!ready) {
        fuzz_init();
        ready = 1;
    }
    if (size == 0) return 0;
    mode = data[0];
    data++;
    size--;
    if ((text = malloc(size + 1)) == NULL) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    switch (mode) {
    case 1: {
        token_keyset *ks = NULL;
        if (token_keyset_parse(&ks, text, size) == 0 && token_keyset_count(ks) == 0) abort();
        token_keyset_destroy(ks);
        break;
    }
    case 2: fuzz_signed_claims(data, size); break;
    case 3: fuzz_signed_header(data, size); break;
    case 4: {
        const char *topic = memchr(text, '\0', size) ? text + strlen(text) + 1 : "";
        int m = topic_match(text, topic);
        if (m && !topic_valid(topic)) abort();
        if (topic_valid(topic) && !topic_match(topic, topic)) abort();
        break;
    }
    default: fuzz_verify(text); break;
    }
    free(text);
    return 0;
}
