/* test_token.c - JWT verification, signing, key files and topic patterns (common/token.c).
 *
 * Keys are generated at test time (EC P-256, RSA-2048) and written to a mkdtemp directory as
 * PEM and JWKS; real tokens come from token_sign, attack tokens are forged here by hand with
 * OpenSSL (alg confusion, alg none, tampering, foreign keys...). Each check names the error
 * the verifier must return, so a verifier that rejects for the wrong reason fails too. */
#include "test.h"

#include "b64url.h"
#include "log.h"
#include "token.h"

#include <jwt.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <dirent.h>
#include <pthread.h>
#include <stdarg.h>
#include <unistd.h>

#define ISS "https://auth.sidecast.test"
#define AUD "sidecast"
#define NOW 1800000000L

static const token_policy pol = {ISS, AUD, 30, 0};

static struct {
    int ready;
    char dir[64];
    EVP_PKEY *ec, *ec_other, *rsa;
    token_signer *ec_signer, *rsa_signer, *ec_other_signer; /* ec_other signs as kid "ec1" */
    token_keyset *ks;                                       /* "ec1" (ES256) and "rsa1" (RS256) */
} fx;

/* ---- helpers ----------------------------------------------------------------------------- */

static void cleanup_dir(void)
{
    DIR *d = opendir(fx.dir);
    struct dirent *e;
    char path[512];

    if (d == NULL) return;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", fx.dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(fx.dir);
}

static char *xstrdup(const char *s)
{
    char *d = malloc(strlen(s) + 1);
    if (d != NULL) memcpy(d, s, strlen(s) + 1);
    return d;
}

static char *xprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xprintf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;

    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0) s = NULL;
    va_end(ap);
    return s;
}

/* Writes text to fx.dir/name; returns the malloc'd path. */
static char *write_file(const char *name, const char *text)
{
    char *path = xprintf("%s/%s", fx.dir, name);
    FILE *f = fopen(path, "wb");

    if (f == NULL) {
        free(path);
        return NULL;
    }
    fwrite(text, 1, strlen(text), f);
    fclose(f);
    return path;
}

static char *bio_string(BIO *bio)
{
    char *data = NULL, *s;
    long n = BIO_get_mem_data(bio, &data);

    s = malloc((size_t)n + 1);
    memcpy(s, data, (size_t)n);
    s[n] = '\0';
    return s;
}

static char *pem_public(EVP_PKEY *pk)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *s;

    PEM_write_bio_PUBKEY(bio, pk);
    s = bio_string(bio);
    BIO_free(bio);
    return s;
}

static char *pem_private(EVP_PKEY *pk, const char *passphrase)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *s;

    if (passphrase != NULL)
        PEM_write_bio_PrivateKey(bio, pk, EVP_aes_256_cbc(), (const unsigned char *)passphrase,
                                 (int)strlen(passphrase), NULL, NULL);
    else
        PEM_write_bio_PrivateKey(bio, pk, NULL, NULL, 0, NULL, NULL);
    s = bio_string(bio);
    BIO_free(bio);
    return s;
}

static char *pem_certificate(EVP_PKEY *pk)
{
    X509 *x = X509_new();
    X509_NAME *nm;
    BIO *bio = BIO_new(BIO_s_mem());
    char *s;

    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pk);
    nm = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)"sidecast", -1, -1,
                               0);
    X509_set_issuer_name(x, nm);
    X509_sign(x, pk, EVP_sha256());
    PEM_write_bio_X509(bio, x);
    s = bio_string(bio);
    BIO_free(bio);
    X509_free(x);
    return s;
}

static char *bn_param_b64(EVP_PKEY *pk, const char *name, int pad)
{
    BIGNUM *bn = NULL;
    unsigned char buf[1024];
    int n;

    EVP_PKEY_get_bn_param(pk, name, &bn);
    n = pad ? pad : BN_num_bytes(bn);
    BN_bn2binpad(bn, buf, n);
    BN_free(bn);
    return b64url_encode_alloc(buf, (size_t)n);
}

/* A public JWK for pk, with kid/alg/use members when not NULL. */
static json_t *jwk_obj(EVP_PKEY *pk, const char *kid, const char *alg, const char *use)
{
    json_t *o;
    char *a, *b;

    if (EVP_PKEY_is_a(pk, "EC")) {
        a = bn_param_b64(pk, OSSL_PKEY_PARAM_EC_PUB_X, 32);
        b = bn_param_b64(pk, OSSL_PKEY_PARAM_EC_PUB_Y, 32);
        o = json_pack("{s:s,s:s,s:s,s:s}", "kty", "EC", "crv", "P-256", "x", a, "y", b);
    } else {
        a = bn_param_b64(pk, OSSL_PKEY_PARAM_RSA_N, 0);
        b = bn_param_b64(pk, OSSL_PKEY_PARAM_RSA_E, 0);
        o = json_pack("{s:s,s:s,s:s}", "kty", "RSA", "n", a, "e", b);
    }
    free(a);
    free(b);
    if (kid) json_object_set_new(o, "kid", json_string(kid));
    if (alg) json_object_set_new(o, "alg", json_string(alg));
    if (use) json_object_set_new(o, "use", json_string(use));
    return o;
}

/* {"keys":[...]} text from a JSON array (reference stolen). */
static char *jwks_text(json_t *keys)
{
    json_t *doc = json_pack("{s:o}", "keys", keys);
    char *s = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    return s;
}

static int parse_text(const char *text, token_keyset **out)
{
    return token_keyset_parse(out, text, strlen(text));
}

/* Parses a one-key JWKS; returns the parse result and frees the keyset. */
static int parse_one_jwk(json_t *jwk)
{
    char *text = jwks_text(json_pack("[o]", jwk));
    token_keyset *ks = NULL;
    int rc = parse_text(text, &ks);
    token_keyset_destroy(ks);
    free(text);
    return rc;
}

static token_signer *signer_for(EVP_PKEY *pk, const char *name, const char *kid)
{
    char *pem = pem_private(pk, NULL);
    char *path = write_file(name, pem);
    token_signer *s = NULL;

    token_signer_load(&s, path, kid);
    free(pem);
    free(path);
    return s;
}

static int setup(void)
{
    char *text;

    if (fx.ready) return 1;
    log_init("test_token", LOG_ERROR);
    snprintf(fx.dir, sizeof fx.dir, "/tmp/test_token.XXXXXX");
    if (mkdtemp(fx.dir) == NULL) return 0;
    atexit(cleanup_dir);
    fx.ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    fx.ec_other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    fx.rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    if (!fx.ec || !fx.ec_other || !fx.rsa) return 0;
    fx.ec_signer = signer_for(fx.ec, "ec.pem", "ec1");
    fx.ec_other_signer = signer_for(fx.ec_other, "ec_other.pem", "ec1");
    fx.rsa_signer = signer_for(fx.rsa, "rsa.pem", "rsa1");
    if (!fx.ec_signer || !fx.ec_other_signer || !fx.rsa_signer) return 0;
    text = jwks_text(json_pack("[o,o]", jwk_obj(fx.ec, "ec1", NULL, "sig"),
                               jwk_obj(fx.rsa, "rsa1", "RS256", NULL)));
    if (parse_text(text, &fx.ks) != 0) {
        free(text);
        return 0;
    }
    free(text);
    fx.ready = 1;
    return 1;
}

/* The claims of a good token; callers add, change or delete members. */
static json_t *claims(void)
{
    return json_pack("{s:s,s:s,s:s,s:I,s:I,s:I,s:s,s:[s,s],s:[s]}", "iss", ISS, "aud", AUD, "sub",
                     "alice", "iat", (json_int_t)NOW - 10, "nbf", (json_int_t)NOW - 10, "exp",
                     (json_int_t)NOW + 300, "jti", "jti-1", "sub_topics", "prices.*", "chat.>",
                     "pub_topics", "chat.>");
}

/* token_sign of c (reference stolen) with s; NULL on failure. */
static char *sign(token_signer *s, json_t *c)
{
    char *tok = NULL;
    if (token_sign(s, c, &tok) != 0) tok = NULL;
    json_decref(c);
    return tok;
}

static json_t *with(json_t *c, const char *name, json_t *v)
{
    json_object_set_new(c, name, v);
    return c;
}

static json_t *without(json_t *c, const char *name)
{
    json_object_del(c, name);
    return c;
}

static int verify_at(const char *tok, long now)
{
    token_claims cl;
    int rc = token_verify(fx.ks, &pol, tok, now, &cl);
    if (rc == 0) token_claims_clear(&cl);
    return rc;
}

static int verify(const char *tok) { return verify_at(tok, NOW); }

/* Segment idx (0..2) of tok, malloc'd. */
static char *segment(const char *tok, int idx)
{
    const char *p = tok, *e;

    for (int i = 0; i < idx; i++) p = strchr(p, '.') + 1;
    e = strchr(p, '.');
    if (e == NULL) e = p + strlen(p);
    return xprintf("%.*s", (int)(e - p), p);
}

static char *b64(const char *s) { return b64url_encode_alloc(s, strlen(s)); }

/* JWS signature of input with pk: ES256 as raw R||S, RS256 as is. Returns base64url. */
static char *jws_sign(EVP_PKEY *pk, const char *input)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char der[1024], raw[64];
    size_t n = sizeof der;
    char *out;

    EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pk);
    EVP_DigestSign(md, der, &n, (const unsigned char *)input, strlen(input));
    EVP_MD_CTX_free(md);
    if (EVP_PKEY_is_a(pk, "EC")) {
        const unsigned char *p = der;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)n);
        BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, 32);
        BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + 32, 32);
        ECDSA_SIG_free(es);
        return b64url_encode_alloc(raw, 64);
    }
    out = b64url_encode_alloc(der, n);
    return out;
}

/* header.payload.signature from JSON texts; pk NULL: the signature is sig_b64 as given. */
static char *forge(const char *hdr, const char *payload, EVP_PKEY *pk, const char *sig_b64)
{
    char *h = b64(hdr), *p = b64(payload), *input = xprintf("%s.%s", h, p), *sig, *tok;

    sig = pk ? jws_sign(pk, input) : xstrdup(sig_b64 ? sig_b64 : "");
    tok = xprintf("%s.%s", input, sig);
    free(h);
    free(p);
    free(input);
    free(sig);
    return tok;
}

static char *claims_text(json_t *c)
{
    char *s = json_dumps(c, JSON_COMPACT);
    json_decref(c);
    return s;
}

/* ---- base64url --------------------------------------------------------------------------- */

TEST(b64url_roundtrip_and_strictness)
{
    unsigned char out[16];
    char enc[32];
    size_t n = 0;

    CHECK_EQ_INT(b64url_encode("\xfb\xff", 2, enc, sizeof enc), 0);
    CHECK_STR(enc, "-_8");
    CHECK_EQ_INT(b64url_decode("-_8", 3, out, sizeof out, &n), 0);
    CHECK_EQ_INT(n, 2);
    CHECK(out[0] == 0xfb && out[1] == 0xff);
    CHECK_EQ_INT(b64url_decode("-_9", 3, out, sizeof out, &n), B64URL_EINVAL);  /* low bits */
    CHECK_EQ_INT(b64url_decode("+/8", 3, out, sizeof out, &n), B64URL_EINVAL);  /* std alphabet */
    CHECK_EQ_INT(b64url_decode("-_8=", 4, out, sizeof out, &n), B64URL_EINVAL); /* padding */
    CHECK_EQ_INT(b64url_decode("QUJD\n", 5, out, sizeof out, &n), B64URL_EINVAL);
    CHECK_EQ_INT(b64url_decode("QUJDR", 5, out, sizeof out, &n), B64URL_EINVAL); /* 4k+1 */
    CHECK_EQ_INT(b64url_decode("QUJD", 4, out, 2, &n), B64URL_ENOSPC);
    CHECK_EQ_INT(b64url_decode("", 0, out, sizeof out, &n), 0);
    CHECK_EQ_INT(n, 0);
    for (size_t len = 0; len < 12; len++) {
        unsigned char in[12], back[12];
        char e[32];
        for (size_t i = 0; i < len; i++) in[i] = (unsigned char)(i * 37 + 200);
        REQUIRE(b64url_encode(in, len, e, sizeof e) == 0);
        CHECK_EQ_INT(strlen(e), b64url_encoded_len(len));
        CHECK_EQ_INT(b64url_decode(e, strlen(e), back, sizeof back, &n), 0);
        CHECK(n == len && memcmp(in, back, len) == 0);
    }
}

/* ---- good tokens ------------------------------------------------------------------------- */

TEST(es256_sign_and_verify)
{
    token_claims cl;
    char *tok, *hdr, *hdr_json;
    json_t *h;

    REQUIRE(setup());
    CHECK_STR(token_signer_alg(fx.ec_signer), "ES256");
    CHECK_STR(token_signer_kid(fx.ec_signer), "ec1");
    tok = sign(fx.ec_signer, claims());
    REQUIRE(tok != NULL);
    CHECK_EQ_INT(token_verify(fx.ks, &pol, tok, NOW, &cl), SC_OK);
    CHECK_STR(cl.sub, "alice");
    CHECK_STR(cl.jti, "jti-1");
    CHECK_STR(cl.kid, "ec1");
    CHECK_EQ_INT(cl.exp, NOW + 300);
    CHECK_EQ_INT(cl.nbf, NOW - 10);
    CHECK_EQ_INT(cl.iat, NOW - 10);
    REQUIRE(cl.payload != NULL);
    CHECK_EQ_INT(json_array_size(json_object_get(cl.payload, "sub_topics")), 2);
    CHECK_STR(json_string_value(json_array_get(json_object_get(cl.payload, "pub_topics"), 0)),
              "chat.>");
    token_claims_clear(&cl);
    CHECK(cl.payload == NULL);
    /* JWS ES256 is raw R||S: 64 bytes, 86 base64url characters (not DER). */
    hdr = segment(tok, 2);
    CHECK_EQ_INT(strlen(hdr), 86);
    free(hdr);
    /* Header as libjwt writes it: alg, kid, typ JWT. */
    hdr = segment(tok, 0);
    hdr_json = calloc(1, 256);
    size_t n = 0;
    REQUIRE(b64url_decode(hdr, strlen(hdr), (unsigned char *)hdr_json, 255, &n) == 0);
    h = json_loads(hdr_json, 0, NULL);
    CHECK_STR(json_string_value(json_object_get(h, "alg")), "ES256");
    CHECK_STR(json_string_value(json_object_get(h, "kid")), "ec1");
    CHECK_STR(json_string_value(json_object_get(h, "typ")), "JWT");
    json_decref(h);
    free(hdr_json);
    free(hdr);
    free(tok);
}

TEST(rs256_sign_and_verify)
{
    token_claims cl;
    char *tok, *sig;

    REQUIRE(setup());
    CHECK_STR(token_signer_alg(fx.rsa_signer), "RS256");
    tok = sign(fx.rsa_signer, claims());
    REQUIRE(tok != NULL);
    CHECK_EQ_INT(token_verify(fx.ks, &pol, tok, NOW, &cl), SC_OK);
    CHECK_STR(cl.kid, "rsa1");
    CHECK_STR(cl.sub, "alice");
    token_claims_clear(&cl);
    sig = segment(tok, 2);
    CHECK_EQ_INT(strlen(sig), b64url_encoded_len(256));
    free(sig);
    free(tok);
}

/* ---- attacks ------------------------------------------------------------------------------ */

TEST(alg_confusion_hs256_keyed_with_rsa_public_pem)
{
    char *pem, *h, *p, *pb, *input, *sig, *tok;
    unsigned char mac[32];
    unsigned int maclen = 0;
    jwt_t *jwt = NULL;

    REQUIRE(setup());
    /* The exact bytes the verifier hands libjwt for "rsa1": its SubjectPublicKeyInfo PEM. */
    pem = pem_public(fx.rsa);
    h = b64("{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"rsa1\"}");
    p = claims_text(claims());
    pb = b64(p);
    input = xprintf("%s.%s", h, pb);
    HMAC(EVP_sha256(), pem, (int)strlen(pem), (const unsigned char *)input, strlen(input), mac,
         &maclen);
    sig = b64url_encode_alloc(mac, maclen);
    tok = xprintf("%s.%s", input, sig);
    CHECK_EQ_INT(verify(tok), SC_EALG);
    /* The trap is real: bare libjwt 1.10.2 given the RSA public key accepts this forgery. */
    CHECK_EQ_INT(jwt_decode(&jwt, tok, (const unsigned char *)pem, (int)strlen(pem)), 0);
    if (jwt != NULL) CHECK_EQ_INT(jwt_get_alg(jwt), JWT_ALG_HS256);
    jwt_free(jwt);
    free(pem);
    free(h);
    free(p);
    free(pb);
    free(input);
    free(sig);
    free(tok);
}

TEST(alg_none_in_every_case_rejected)
{
    static const char *const algs[] = {"none", "None", "NONE", "nOnE"};
    char *good, *good_sig, *payload;

    REQUIRE(setup());
    good = sign(fx.ec_signer, claims());
    REQUIRE(good != NULL);
    good_sig = segment(good, 2);
    payload = claims_text(claims());
    for (size_t i = 0; i < 4; i++) {
        char *hdr = xprintf("{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"ec1\"}", algs[i]);
        char *t1 = forge(hdr, payload, NULL, "");
        char *t2 = forge(hdr, payload, NULL, good_sig);
        CHECK_EQ_INT(verify(t1), SC_EALG);
        CHECK_EQ_INT(verify(t2), SC_EALG);
        free(hdr);
        free(t1);
        free(t2);
    }
    /* No alg at all, or not a string. */
    {
        char *t1 = forge("{\"typ\":\"JWT\",\"kid\":\"ec1\"}", payload, fx.ec, NULL);
        char *t2 = forge("{\"alg\":null,\"kid\":\"ec1\"}", payload, fx.ec, NULL);
        char *t3 = forge("{\"alg\":[\"ES256\"],\"kid\":\"ec1\"}", payload, fx.ec, NULL);
        char *t4 = forge("{\"alg\":\"es256\",\"kid\":\"ec1\"}", payload, fx.ec, NULL);
        char *t5 = forge("{\"alg\":\"ES256 \",\"kid\":\"ec1\"}", payload, fx.ec, NULL);
        CHECK_EQ_INT(verify(t1), SC_EALG);
        CHECK_EQ_INT(verify(t2), SC_EALG);
        CHECK_EQ_INT(verify(t3), SC_EALG);
        CHECK_EQ_INT(verify(t4), SC_EALG);
        CHECK_EQ_INT(verify(t5), SC_EALG);
        free(t1);
        free(t2);
        free(t3);
        free(t4);
        free(t5);
    }
    free(payload);
    free(good_sig);
    free(good);
}

TEST(tampered_payload_rejected)
{
    char *tok, *h, *s, *p, *bad;
    json_t *c = claims();

    REQUIRE(setup());
    tok = sign(fx.ec_signer, json_incref(c));
    REQUIRE(tok != NULL);
    CHECK_EQ_INT(verify(tok), SC_OK);
    h = segment(tok, 0);
    s = segment(tok, 2);
    json_object_set_new(c, "sub", json_string("mallory"));
    {
        char *text = claims_text(c);
        p = b64(text);
        free(text);
    }
    bad = xprintf("%s.%s.%s", h, p, s);
    CHECK_EQ_INT(verify(bad), SC_ESIG);
    free(bad);
    free(tok);
    free(h);
    free(s);
    free(p);
    /* Same for RS256. */
    c = claims();
    tok = sign(fx.rsa_signer, json_incref(c));
    REQUIRE(tok != NULL);
    h = segment(tok, 0);
    s = segment(tok, 2);
    json_object_set_new(c, "exp", json_integer(NOW + 999999));
    {
        char *text = claims_text(c);
        p = b64(text);
        free(text);
    }
    bad = xprintf("%s.%s.%s", h, p, s);
    CHECK_EQ_INT(verify(bad), SC_ESIG);
    free(bad);
    free(tok);
    free(h);
    free(s);
    free(p);
}

TEST(stripped_signature_rejected)
{
    char *tok, *h, *p, *t1, *t2;

    REQUIRE(setup());
    tok = sign(fx.ec_signer, claims());
    REQUIRE(tok != NULL);
    h = segment(tok, 0);
    p = segment(tok, 1);
    t1 = xprintf("%s.%s.", h, p);
    t2 = xprintf("%s.%s", h, p);
    CHECK_EQ_INT(verify(t1), SC_ESIG);
    CHECK_EQ_INT(verify(t2), SC_EMALFORMED);
    free(t1);
    free(t2);
    /* A truncated signature and one with extra bytes. */
    t1 = xprintf("%.*s", (int)strlen(tok) - 2, tok); /* 63 bytes, canonical */
    t2 = xprintf("%sAAAA", tok);
    CHECK_EQ_INT(verify(t1), SC_ESIG);
    CHECK_EQ_INT(verify(t2), SC_ESIG);
    free(t1);
    free(t2);
    free(h);
    free(p);
    free(tok);
}

TEST(noncanonical_signature_encoding_rejected)
{
    /* 64 bytes leave 4 unused bits in the last character; libjwt's lenient decoder ignores
     * them, so without the strict check one signature would have 16 spellings. */
    static const char b64chars[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char *tok, *bad;
    size_t n;
    const char *pos;

    REQUIRE(setup());
    tok = sign(fx.ec_signer, claims());
    REQUIRE(tok != NULL);
    bad = xstrdup(tok);
    n = strlen(bad);
    pos = strchr(b64chars, bad[n - 1]);
    REQUIRE(pos != NULL);
    bad[n - 1] = b64chars[(pos - b64chars) | 1];
    CHECK_EQ_INT(verify(bad), SC_EMALFORMED);
    free(bad);
    free(tok);
}

/* The verifier decodes R||S itself (token.c verify_sig): values outside 1..n-1, a swapped
 * pair and a pair from another message must all fail, and a signature made with OpenSSL
 * directly (not libjwt) must pass, for both algorithms. */
TEST(signature_values_checked_by_openssl)
{
    const char *hdr = "{\"alg\":\"ES256\",\"kid\":\"ec1\",\"typ\":\"JWT\"}";
    char *body = claims_text(claims()), *tok, *h, *p, *sig, *bad;
    unsigned char raw[64], sw[64];
    size_t n = 0;
    char enc[128];

    REQUIRE(setup());
    tok = forge(hdr, body, fx.ec, NULL);
    CHECK_EQ_INT(verify(tok), SC_OK);
    h = segment(tok, 0);
    p = segment(tok, 1);
    sig = segment(tok, 2);
    REQUIRE(b64url_decode(sig, strlen(sig), raw, sizeof raw, &n) == 0 && n == 64);
    memcpy(sw, raw + 32, 32);
    memcpy(sw + 32, raw, 32);
    REQUIRE(b64url_encode(sw, 64, enc, sizeof enc) == 0);
    bad = xprintf("%s.%s.%s", h, p, enc);
    CHECK_EQ_INT(verify(bad), SC_ESIG); /* (S, R) */
    free(bad);
    memset(sw, 0, sizeof sw);
    REQUIRE(b64url_encode(sw, 64, enc, sizeof enc) == 0);
    bad = xprintf("%s.%s.%s", h, p, enc);
    CHECK_EQ_INT(verify(bad), SC_ESIG); /* R = S = 0 */
    free(bad);
    memset(sw, 0xff, sizeof sw);
    REQUIRE(b64url_encode(sw, 64, enc, sizeof enc) == 0);
    bad = xprintf("%s.%s.%s", h, p, enc);
    CHECK_EQ_INT(verify(bad), SC_ESIG); /* R, S >= n */
    free(bad);
    memcpy(sw, raw, 32);
    memset(sw + 32, 0, 32);
    REQUIRE(b64url_encode(sw, 64, enc, sizeof enc) == 0);
    bad = xprintf("%s.%s.%s", h, p, enc);
    CHECK_EQ_INT(verify(bad), SC_ESIG); /* S = 0 */
    free(bad);
    free(h);
    free(p);
    free(sig);
    free(tok);
    tok = forge("{\"alg\":\"RS256\",\"kid\":\"rsa1\"}", body, fx.rsa, NULL);
    CHECK_EQ_INT(verify(tok), SC_OK);
    free(tok);
    free(body);
}

/* ES256 is checked with a table made for the key's point (token_es256.c) instead of
 * OpenSSL's EVP verification: its verdict must be OpenSSL's for every signature, good ones,
 * the other valid S (n - S), bit flips anywhere in R||S and a signature of another message.
 * The verdict asked of OpenSSL is EVP_DigestVerify's with the same key. */
static int openssl_verdict(const char *input, const unsigned char raw[64])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    ECDSA_SIG *es = ECDSA_SIG_new();
    unsigned char der[80], *p = der;
    int dl = -1, ok = 0;

    if (md && es &&
        ECDSA_SIG_set0(es, BN_bin2bn(raw, 32, NULL), BN_bin2bn(raw + 32, 32, NULL)) == 1)
        dl = i2d_ECDSA_SIG(es, &p);
    if (dl > 0 && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, fx.ec) == 1)
        ok = EVP_DigestVerify(md, der, (size_t)dl, (const unsigned char *)input, strlen(input)) ==
             1;
    ECDSA_SIG_free(es);
    EVP_MD_CTX_free(md);
    return ok;
}

/* The token input.sig(raw) through token_verify, with OpenSSL's verdict in *ossl. */
static int verify_raw(const char *input, const unsigned char raw[64], int *ossl)
{
    char enc[128], *tok;
    int rc;

    *ossl = openssl_verdict(input, raw);
    if (b64url_encode(raw, 64, enc, sizeof enc) != 0) return -1000;
    tok = xprintf("%s.%s", input, enc);
    rc = verify(tok);
    free(tok);
    return rc;
}

TEST(es256_verdicts_match_openssl)
{
    const char *hdr = "{\"alg\":\"ES256\",\"kid\":\"ec1\",\"typ\":\"JWT\"}";
    BIGNUM *n = NULL, *s = BN_new();
    char *prev_input = NULL;
    unsigned char prev[64];
    int ossl, agree = 0, accepted = 0, cases = 0;

    REQUIRE(setup());
    REQUIRE(s != NULL &&
            BN_hex2bn(&n, "FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551"));
    for (int i = 0; i < 40; i++) {
        char *body = claims_text(with(claims(), "jti", json_sprintf("j%d", i)));
        char *tok = forge(hdr, body, fx.ec, NULL), *h = segment(tok, 0), *p = segment(tok, 1);
        char *sig = segment(tok, 2), *input = xprintf("%s.%s", h, p);
        unsigned char raw[64], v[64];
        size_t rn = 0;
        int rc;

        REQUIRE(b64url_decode(sig, strlen(sig), raw, sizeof raw, &rn) == 0 && rn == 64);
        rc = verify_raw(input, raw, &ossl); /* as signed */
        CHECK(ossl == 1 && rc == SC_OK);
        cases++, agree += (rc == SC_OK) == ossl, accepted += rc == SC_OK;
        memcpy(v, raw, 64); /* (R, n - S): valid too, for OpenSSL and for us */
        REQUIRE(BN_bin2bn(raw + 32, 32, s) && BN_sub(s, n, s) && BN_bn2binpad(s, v + 32, 32) == 32);
        rc = verify_raw(input, v, &ossl);
        CHECK(ossl == 1 && rc == SC_OK);
        cases++, agree += (rc == SC_OK) == ossl, accepted += rc == SC_OK;
        for (int b = 0; b < 8; b++) { /* one bit flipped, somewhere in R or S */
            int bit = (i * 61 + b * 67) % 512;
            memcpy(v, raw, 64);
            v[bit / 8] ^= (unsigned char)(1u << (bit % 8));
            rc = verify_raw(input, v, &ossl);
            CHECK_EQ_INT(rc, ossl ? SC_OK : SC_ESIG);
            cases++, agree += (rc == SC_OK) == ossl, accepted += rc == SC_OK;
        }
        if (prev_input != NULL) { /* the previous token's signature on this message */
            rc = verify_raw(input, prev, &ossl);
            CHECK_EQ_INT(rc, ossl ? SC_OK : SC_ESIG);
            CHECK_EQ_INT(ossl, 0);
            cases++, agree += (rc == SC_OK) == ossl;
        }
        free(prev_input);
        prev_input = input;
        memcpy(prev, raw, 64);
        free(body);
        free(tok);
        free(h);
        free(p);
        free(sig);
    }
    CHECK_EQ_INT(agree, cases);
    CHECK_EQ_INT(accepted, 80); /* the 40 signatures and their (R, n - S) */
    free(prev_input);
    BN_free(s);
    BN_free(n);
}

/* R chosen so that (e/S)G + (R/S)Q is the point at infinity: R = -e/d mod n with the
 * signer's private d. It has no x coordinate, so no R can match it; both refuse. And R or S
 * equal to n (one past the range) is refused before any arithmetic. */
TEST(es256_point_at_infinity_and_range_rejected)
{
    const char *hdr = "{\"alg\":\"ES256\",\"kid\":\"ec1\",\"typ\":\"JWT\"}";
    char *body = claims_text(claims()), *tok, *h, *p, *input;
    unsigned char md[32], raw[64];
    BIGNUM *n = NULL, *d = NULL, *e = BN_new(), *r = BN_new();
    BN_CTX *ctx = BN_CTX_new();
    int ossl;

    REQUIRE(setup());
    REQUIRE(e && r && ctx &&
            BN_hex2bn(&n, "FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551"));
    REQUIRE(EVP_PKEY_get_bn_param(fx.ec, OSSL_PKEY_PARAM_PRIV_KEY, &d) == 1);
    tok = forge(hdr, body, fx.ec, NULL);
    h = segment(tok, 0);
    p = segment(tok, 1);
    input = xprintf("%s.%s", h, p);
    SHA256((const unsigned char *)input, strlen(input), md);
    REQUIRE(BN_bin2bn(md, 32, e) && BN_mod_inverse(r, d, n, ctx) && BN_mod_mul(r, r, e, n, ctx) &&
            BN_sub(r, n, r) && !BN_is_zero(r));
    REQUIRE(BN_bn2binpad(r, raw, 32) == 32);
    memset(raw + 32, 0, 32);
    raw[63] = 7; /* S: any value in range */
    CHECK_EQ_INT(verify_raw(input, raw, &ossl), SC_ESIG);
    CHECK_EQ_INT(ossl, 0);
    REQUIRE(BN_bn2binpad(n, raw, 32) == 32); /* R = n */
    CHECK_EQ_INT(verify_raw(input, raw, &ossl), SC_ESIG);
    CHECK_EQ_INT(ossl, 0);
    raw[31] = 5;
    REQUIRE(BN_bn2binpad(n, raw + 32, 32) == 32); /* S = n */
    CHECK_EQ_INT(verify_raw(input, raw, &ossl), SC_ESIG);
    CHECK_EQ_INT(ossl, 0);
    BN_CTX_free(ctx);
    BN_free(n);
    BN_free(d);
    BN_free(e);
    BN_free(r);
    free(body);
    free(tok);
    free(h);
    free(p);
    free(input);
}

TEST(foreign_key_with_same_kid_rejected)
{
    char *tok;

    REQUIRE(setup());
    CHECK_STR(token_signer_kid(fx.ec_other_signer), "ec1");
    tok = sign(fx.ec_other_signer, claims());
    REQUIRE(tok != NULL);
    CHECK_EQ_INT(verify(tok), SC_ESIG);
    free(tok);
}

TEST(unknown_and_missing_kid_rejected)
{
    char *payload, *t1, *t2, *t3, *t4, *tok;
    token_signer *s;

    REQUIRE(setup());
    payload = claims_text(claims());
    t1 = forge("{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"nope\"}", payload, fx.ec, NULL);
    t2 = forge("{\"alg\":\"ES256\",\"typ\":\"JWT\"}", payload, fx.ec, NULL);
    t3 = forge("{\"alg\":\"ES256\",\"kid\":7}", payload, fx.ec, NULL);
    t4 = forge("{\"alg\":\"ES256\",\"kid\":\"ec1 \"}", payload, fx.ec, NULL);
    CHECK_EQ_INT(verify(t1), SC_EKID);
    CHECK_EQ_INT(verify(t2), SC_EKID);
    CHECK_EQ_INT(verify(t3), SC_EKID);
    CHECK_EQ_INT(verify(t4), SC_EKID);
    /* A real signer whose kid the verifier does not know. */
    s = signer_for(fx.ec, "ec_k9.pem", "k9");
    REQUIRE(s != NULL);
    tok = sign(s, claims());
    CHECK_EQ_INT(verify(tok), SC_EKID);
    free(tok);
    token_signer_destroy(s);
    free(payload);
    free(t1);
    free(t2);
    free(t3);
    free(t4);
}

/* ---- time --------------------------------------------------------------------------------- */

TEST(expiry_with_leeway)
{
    char *expired, *in_leeway, *edge, *real_exp;

    REQUIRE(setup());
    expired = sign(fx.ec_signer, with(claims(), "exp", json_integer(NOW - 100)));
    in_leeway = sign(fx.ec_signer, with(claims(), "exp", json_integer(NOW - 10)));
    edge = sign(fx.ec_signer, with(claims(), "exp", json_integer(NOW - 30)));
    real_exp = sign(fx.ec_signer, with(claims(), "exp", json_real((double)NOW - 29.5)));
    REQUIRE(expired && in_leeway && edge && real_exp);
    CHECK_EQ_INT(verify(expired), SC_EEXPIRED);
    CHECK_EQ_INT(verify(in_leeway), SC_OK);
    CHECK_EQ_INT(verify(edge), SC_EEXPIRED);     /* now must be before exp + leeway */
    CHECK_EQ_INT(verify(real_exp), SC_EEXPIRED); /* fractions round towards expiry */
    CHECK_EQ_INT(verify_at(real_exp, NOW - 2), SC_OK);
    {
        token_policy strict = pol;
        token_claims cl;
        strict.leeway = 0;
        CHECK_EQ_INT(token_verify(fx.ks, &strict, in_leeway, NOW, &cl), SC_EEXPIRED);
        CHECK(cl.payload == NULL && cl.sub[0] == '\0');
    }
    free(expired);
    free(in_leeway);
    free(edge);
    free(real_exp);
}

TEST(nbf_and_iat_in_the_future_rejected)
{
    char *early, *nbf_ok, *iat_future, *iat_ok;

    REQUIRE(setup());
    early = sign(fx.ec_signer, with(claims(), "nbf", json_integer(NOW + 100)));
    nbf_ok = sign(fx.ec_signer, with(claims(), "nbf", json_integer(NOW + 20)));
    iat_future = sign(fx.ec_signer, with(claims(), "iat", json_integer(NOW + 100)));
    iat_ok = sign(fx.ec_signer, without(without(claims(), "iat"), "nbf"));
    REQUIRE(early && nbf_ok && iat_future && iat_ok);
    CHECK_EQ_INT(verify(early), SC_ENOTYET);
    CHECK_EQ_INT(verify(nbf_ok), SC_OK);
    CHECK_EQ_INT(verify(iat_future), SC_ENOTYET);
    CHECK_EQ_INT(verify(iat_ok), SC_OK);
    CHECK_EQ_INT(verify_at(early, NOW + 80), SC_OK);
    free(early);
    free(nbf_ok);
    free(iat_future);
    free(iat_ok);
}

/* ---- iss / aud / required claims ---------------------------------------------------------- */

TEST(audience_rules)
{
    char *wrong, *arr_ok, *arr_bad, *missing, *empty_arr, *prefix, *num;

    REQUIRE(setup());
    wrong = sign(fx.ec_signer, with(claims(), "aud", json_string("other")));
    arr_ok = sign(fx.ec_signer, with(claims(), "aud", json_pack("[s,s]", "other", AUD)));
    arr_bad = sign(fx.ec_signer, with(claims(), "aud", json_pack("[s,i]", "other", 1)));
    missing = sign(fx.ec_signer, without(claims(), "aud"));
    empty_arr = sign(fx.ec_signer, with(claims(), "aud", json_array()));
    prefix = sign(fx.ec_signer, with(claims(), "aud", json_string(AUD "x")));
    num = sign(fx.ec_signer, with(claims(), "aud", json_integer(1)));
    REQUIRE(wrong && arr_ok && arr_bad && missing && empty_arr && prefix && num);
    CHECK_EQ_INT(verify(wrong), SC_EAUD);
    CHECK_EQ_INT(verify(arr_ok), SC_OK);
    CHECK_EQ_INT(verify(arr_bad), SC_EAUD);
    CHECK_EQ_INT(verify(missing), SC_EAUD);
    CHECK_EQ_INT(verify(empty_arr), SC_EAUD);
    CHECK_EQ_INT(verify(prefix), SC_EAUD);
    CHECK_EQ_INT(verify(num), SC_EAUD);
    free(wrong);
    free(arr_ok);
    free(arr_bad);
    free(missing);
    free(empty_arr);
    free(prefix);
    free(num);
}

TEST(issuer_rules)
{
    char *wrong, *missing, *num, *good;
    token_policy p = pol;
    token_claims cl;

    REQUIRE(setup());
    wrong = sign(fx.ec_signer, with(claims(), "iss", json_string("https://evil.test")));
    missing = sign(fx.ec_signer, without(claims(), "iss"));
    num = sign(fx.ec_signer, with(claims(), "iss", json_integer(5)));
    good = sign(fx.ec_signer, claims());
    REQUIRE(wrong && missing && num && good);
    CHECK_EQ_INT(verify(wrong), SC_EISS);
    CHECK_EQ_INT(verify(missing), SC_EISS);
    CHECK_EQ_INT(verify(num), SC_EISS);
    /* A policy without issuer or audience accepts nothing. */
    p.issuer = NULL;
    CHECK_EQ_INT(token_verify(fx.ks, &p, good, NOW, &cl), SC_EISS);
    p = pol;
    p.audience = "";
    CHECK_EQ_INT(token_verify(fx.ks, &p, good, NOW, &cl), SC_EAUD);
    free(wrong);
    free(missing);
    free(num);
    free(good);
}

TEST(required_claims)
{
    char long_sub[300], long_jti[200];
    char *no_sub, *no_exp, *exp_str, *sub_num, *sub_empty, *sub_long, *sub_ctl, *jti_long, *jti_num,
        *nbf_str, *sub_255;

    REQUIRE(setup());
    memset(long_sub, 'a', sizeof long_sub - 1);
    long_sub[sizeof long_sub - 1] = '\0';
    memset(long_jti, 'j', sizeof long_jti - 1);
    long_jti[sizeof long_jti - 1] = '\0';
    no_sub = sign(fx.ec_signer, without(claims(), "sub"));
    no_exp = sign(fx.ec_signer, without(claims(), "exp"));
    exp_str = sign(fx.ec_signer, with(claims(), "exp", json_string("1900000000")));
    sub_num = sign(fx.ec_signer, with(claims(), "sub", json_integer(42)));
    sub_empty = sign(fx.ec_signer, with(claims(), "sub", json_string("")));
    sub_long = sign(fx.ec_signer, with(claims(), "sub", json_string(long_sub)));
    sub_ctl = sign(fx.ec_signer, with(claims(), "sub", json_string("bob\r\nSidecast-User: x")));
    jti_long = sign(fx.ec_signer, with(claims(), "jti", json_string(long_jti)));
    jti_num = sign(fx.ec_signer, with(claims(), "jti", json_integer(1)));
    nbf_str = sign(fx.ec_signer, with(claims(), "nbf", json_string("soon")));
    long_sub[255] = '\0';
    sub_255 = sign(fx.ec_signer, with(claims(), "sub", json_string(long_sub)));
    REQUIRE(no_sub && no_exp && exp_str && sub_num && sub_empty && sub_long && sub_ctl &&
            jti_long && jti_num && nbf_str && sub_255);
    CHECK_EQ_INT(verify(no_sub), SC_ECLAIMS);
    CHECK_EQ_INT(verify(no_exp), SC_ECLAIMS);
    CHECK_EQ_INT(verify(exp_str), SC_ECLAIMS);
    CHECK_EQ_INT(verify(sub_num), SC_ECLAIMS);
    CHECK_EQ_INT(verify(sub_empty), SC_ECLAIMS);
    CHECK_EQ_INT(verify(sub_long), SC_ECLAIMS);
    CHECK_EQ_INT(verify(sub_ctl), SC_ECLAIMS);
    CHECK_EQ_INT(verify(jti_long), SC_ECLAIMS);
    CHECK_EQ_INT(verify(jti_num), SC_ECLAIMS);
    CHECK_EQ_INT(verify(nbf_str), SC_ECLAIMS);
    CHECK_EQ_INT(verify(sub_255), SC_OK);
    /* sub names a NATS subject token (users.<sub>): wildcards and dots are refused */
    static const char *const unsafe[] = {">", "*", "alice.bob", "a b", "al>", "ü"};
    for (size_t i = 0; i < sizeof unsafe / sizeof unsafe[0]; i++) {
        char *t = sign(fx.ec_signer, with(claims(), "sub", json_string(unsafe[i])));
        REQUIRE(t);
        CHECK_EQ_INT(verify(t), SC_ECLAIMS);
        free(t);
    }
    char *t = sign(fx.ec_signer, with(claims(), "sub", json_string("svc_reporter-2")));
    REQUIRE(t);
    CHECK_EQ_INT(verify(t), SC_OK);
    free(t);
    free(no_sub);
    free(no_exp);
    free(exp_str);
    free(sub_num);
    free(sub_empty);
    free(sub_long);
    free(sub_ctl);
    free(jti_long);
    free(jti_num);
    free(nbf_str);
    free(sub_255);
}

/* ---- structure ---------------------------------------------------------------------------- */

TEST(malformed_tokens_rejected)
{
    static const char *const hdr_ok = "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"ec1\"}";
    char *tok, *h, *p, *s, *t;
    char *payload;

    REQUIRE(setup());
    tok = sign(fx.ec_signer, claims());
    REQUIRE(tok != NULL);
    h = segment(tok, 0);
    p = segment(tok, 1);
    s = segment(tok, 2);
    payload = claims_text(claims());

    CHECK_EQ_INT(verify(""), SC_EMALFORMED);
    CHECK_EQ_INT(verify("."), SC_EMALFORMED);
    CHECK_EQ_INT(verify(".."), SC_EMALFORMED);
    CHECK_EQ_INT(verify("abc"), SC_EMALFORMED);
    t = xprintf("%s.%s.%s.%s", h, p, s, s); /* four parts */
    CHECK_EQ_INT(verify(t), SC_EMALFORMED);
    free(t);
    t = xprintf("%s..%s.%s", h, p, s);
    CHECK_EQ_INT(verify(t), SC_EMALFORMED);
    free(t);
    t = xprintf(".%s.%s", p, s); /* empty header */
    CHECK_EQ_INT(verify(t), SC_EMALFORMED);
    free(t);
    t = xprintf("%s..%s", h, s); /* empty payload */
    CHECK_EQ_INT(verify(t), SC_EMALFORMED);
    free(t);
    t = xprintf("%s=.%s.%s", h, p, s); /* padding */
    CHECK_EQ_INT(verify(t), SC_EMALFORMED);
    free(t);
    t = xprintf("%s.%s==.%s", h, p, s);
    CHECK_EQ_INT(verify(t), SC_EMALFORMED);
    free(t);
    t = xprintf("%s.%s.%s=", h, p, s);
    CHECK_EQ_INT(verify(t), SC_EMALFORMED);
    free(t);
    t = xprintf("%s!.%s.%s", h, p, s); /* not in the alphabet */
    CHECK_EQ_INT(verify(t), SC_EMALFORMED);
    free(t);
    t = xprintf("%s.%s.%s ", h, p, s); /* trailing garbage */
    CHECK_EQ_INT(verify(t), SC_EMALFORMED);
    free(t);
    t = xprintf("%s.%s.%s\n", h, p, s);
    CHECK_EQ_INT(verify(t), SC_EMALFORMED);
    free(t);
    {
        /* Standard-alphabet characters in the signature. */
        char *std = xstrdup(s);
        for (char *c = std; *c; c++) *c = *c == '-' ? '+' : *c == '_' ? '/' : *c;
        t = xprintf("%s.%s.%s", h, p, strcmp(std, s) ? std : "++++");
        CHECK_EQ_INT(verify(t), SC_EMALFORMED);
        free(t);
        free(std);
    }
    /* Headers that are not a JSON object, or JSON with something after it. */
    {
        static const char *const bad_headers[] = {
            "not json",
            "[\"ES256\",\"ec1\"]",
            "\"ES256\"",
            "42",
            "null",
            "{\"alg\":\"ES256\",\"kid\":\"ec1\"} x",
            "{\"alg\":\"ES256\",\"kid\":\"ec1\"",
            "{\"alg\":\"ES256\",\"kid\":\"ec1\",\"alg\":\"none\"}", /* duplicate member */
        };
        for (size_t i = 0; i < sizeof bad_headers / sizeof bad_headers[0]; i++) {
            t = forge(bad_headers[i], payload, fx.ec, NULL);
            CHECK_EQ_INT(verify(t), SC_EMALFORMED);
            free(t);
        }
    }
    /* Payloads that are not a JSON object (signed properly, so only the shape is wrong). */
    t = forge(hdr_ok, "[1,2]", fx.ec, NULL);
    CHECK_EQ_INT(verify(t), SC_EMALFORMED);
    free(t);
    t = forge(hdr_ok, "{\"sub\":\"a\",\"sub\":\"b\"}", fx.ec, NULL);
    CHECK_EQ_INT(verify(t), SC_EMALFORMED);
    free(t);
    /* And a hand-made token that is fine, to show forge() itself is sound. */
    t = forge(hdr_ok, payload, fx.ec, NULL);
    CHECK_EQ_INT(verify(t), SC_OK);
    free(t);
    free(payload);
    free(h);
    free(p);
    free(s);
    free(tok);
}

TEST(crit_and_typ_headers)
{
    char *payload = NULL, *t;

    REQUIRE(setup());
    payload = claims_text(claims());
    t = forge("{\"alg\":\"ES256\",\"kid\":\"ec1\",\"crit\":[\"exp\"],\"exp\":1}", payload, fx.ec,
              NULL);
    CHECK_EQ_INT(verify(t), SC_EMALFORMED);
    free(t);
    t = forge("{\"alg\":\"ES256\",\"kid\":\"ec1\",\"typ\":\"JOSE\"}", payload, fx.ec, NULL);
    CHECK_EQ_INT(verify(t), SC_EMALFORMED);
    free(t);
    t = forge("{\"alg\":\"ES256\",\"kid\":\"ec1\",\"typ\":1}", payload, fx.ec, NULL);
    CHECK_EQ_INT(verify(t), SC_EMALFORMED);
    free(t);
    t = forge("{\"alg\":\"ES256\",\"kid\":\"ec1\",\"typ\":\"jwt\"}", payload, fx.ec, NULL);
    CHECK_EQ_INT(verify(t), SC_OK);
    free(t);
    t = forge("{\"alg\":\"ES256\",\"kid\":\"ec1\"}", payload, fx.ec, NULL); /* no typ */
    CHECK_EQ_INT(verify(t), SC_OK);
    free(t);
    free(payload);
}

/* RFC 8725 §3.7: the JSON of a signed token is still hostile input. jansson refuses invalid
 * UTF-8 and, without JSON_ALLOW_NUL, a \u0000 in a string; a sub with NUL would otherwise end
 * early in C ("alice\0admin" read as "alice"). §3.5/§3.6: jku, x5u, jwk and x5c name keys
 * the verifier must never fetch or trust: the key comes from kid in the configured keyset. */
TEST(hostile_json_and_key_urls_in_signed_tokens)
{
    char *t, *payload = NULL;

    REQUIRE(setup());
    /* a good token's claims with one change each: the change alone must make it fail */
    char *good = claims_text(claims());
    REQUIRE(strstr(good, "\"sub\":\"alice\""));
    static const char *const subs[] = {
        "\"sub\":\"ali\xc3\x28"
        "ce\"",                                /* invalid UTF-8 */
        "\"sub\":\"\xff\"",                    /* not UTF-8 at all */
        "\"sub\":\"alice\\u0000admin\"",       /* NUL: "alice" to C */
        "\"sub\":\"alice\",\"sub\":\"admin\"", /* duplicate member */
    };
    t = forge("{\"alg\":\"ES256\",\"kid\":\"ec1\"}", good, fx.ec, NULL);
    CHECK_EQ_INT(verify(t), SC_OK); /* the base is good */
    free(t);
    for (size_t i = 0; i < sizeof subs / sizeof *subs; i++) {
        char *at = strstr(good, "\"sub\":\"alice\"");
        char *bad = xprintf("%.*s%s%s", (int)(at - good), good, subs[i],
                            at + strlen("\"sub\":\"alice\""));
        t = forge("{\"alg\":\"ES256\",\"kid\":\"ec1\"}", bad, fx.ec, NULL);
        CHECK_EQ_INT(verify(t), SC_EMALFORMED);
        free(t);
        free(bad);
    }
    t = forge("{\"alg\":\"ES256\",\"kid\":\"e\xc3\x28\"}", good, fx.ec, NULL); /* header */
    CHECK_EQ_INT(verify(t), SC_EMALFORMED);
    free(t);
    free(good);
    /* key URLs and embedded keys are ignored: with the keyset's key the token is good, signed
     * by the key they point at (or embed) it is not */
    payload = claims_text(claims());
    static const char *const urls[] = {
        "{\"alg\":\"ES256\",\"kid\":\"ec1\",\"jku\":\"http://127.0.0.1:1/jwks.json\"}",
        "{\"alg\":\"ES256\",\"kid\":\"ec1\",\"x5u\":\"http://127.0.0.1:1/cert.pem\"}",
        "{\"alg\":\"ES256\",\"kid\":\"ec1\",\"jwk\":{\"kty\":\"EC\",\"crv\":\"P-256\"}}",
        "{\"alg\":\"ES256\",\"kid\":\"ec1\",\"x5c\":[\"MIIB\"]}",
    };
    for (size_t i = 0; i < sizeof urls / sizeof *urls; i++) {
        t = forge(urls[i], payload, fx.ec, NULL);
        CHECK_EQ_INT(verify(t), SC_OK);
        free(t);
        t = forge(urls[i], payload, fx.ec_other, NULL);
        CHECK_EQ_INT(verify(t), SC_ESIG);
        free(t);
    }
    free(payload);
}

TEST(typ_other_than_jwt_rejected)
{
    /* "JWT", or RFC 9068's "at+jwt" (an OpenID provider's access tokens, also as the media
     * type "application/at+jwt"), any case; every other typ is refused before any
     * signature work. */
    char *payload, *t;

    REQUIRE(setup());
    payload = claims_text(claims());
    t = forge("{\"alg\":\"ES256\",\"kid\":\"ec1\",\"typ\":\"at+jwt\"}", payload, fx.ec, NULL);
    CHECK_EQ_INT(verify(t), 0);
    free(t);
    t = forge("{\"alg\":\"ES256\",\"kid\":\"ec1\",\"typ\":\"Application/AT+JWT\"}", payload, fx.ec,
              NULL);
    CHECK_EQ_INT(verify(t), 0);
    free(t);
    t = forge("{\"alg\":\"ES256\",\"kid\":\"ec1\",\"typ\":\"at+jwtx\"}", payload, fx.ec, NULL);
    CHECK_EQ_INT(verify(t), SC_EMALFORMED);
    free(t);
    t = forge("{\"alg\":\"ES256\",\"kid\":\"ec1\",\"typ\":\"JWS\"}", payload, fx.ec, NULL);
    CHECK_EQ_INT(verify(t), SC_EMALFORMED);
    free(t);
    t = forge("{\"alg\":\"ES256\",\"kid\":\"ec1\",\"typ\":7}", payload, fx.ec, NULL);
    CHECK_EQ_INT(verify(t), SC_EMALFORMED);
    free(t);
    free(payload);
}

TEST(cache_never_skips_claim_checks)
{
    /* A token that verified once is remembered, but every later call still checks its claims
     * against that call's clock and policy, and a one-byte change is a different token. */
    char *payload, *t, *bad;

    REQUIRE(setup());
    payload = claims_text(claims());
    t = forge("{\"alg\":\"ES256\",\"kid\":\"ec1\"}", payload, fx.ec, NULL);
    for (int i = 0; i < 3; i++) CHECK_EQ_INT(verify(t), SC_OK);
    CHECK_EQ_INT(verify_at(t, NOW + 100000), SC_EEXPIRED);
    CHECK_EQ_INT(verify_at(t, NOW - 100000), SC_ENOTYET);
    CHECK_EQ_INT(verify(t), SC_OK);
    bad = strdup(t);
    bad[strlen(bad) - 2] = bad[strlen(bad) - 2] == 'A' ? 'B' : 'A';
    CHECK_EQ_INT(verify(bad), SC_ESIG);
    CHECK_EQ_INT(verify(bad), SC_ESIG);
    free(bad);
    free(t);
    free(payload);
}

TEST(oversized_token_rejected)
{
    char *tok, *big;
    char filler[9000];
    token_policy small = pol;
    token_claims cl;

    REQUIRE(setup());
    tok = sign(fx.ec_signer, claims());
    REQUIRE(tok != NULL);
    small.max_len = strlen(tok) - 1;
    CHECK_EQ_INT(token_verify(fx.ks, &small, tok, NOW, &cl), SC_ETOOLARGE);
    small.max_len = strlen(tok);
    CHECK_EQ_INT(token_verify(fx.ks, &small, tok, NOW, &cl), SC_OK);
    token_claims_clear(&cl);
    /* Over the default 8192 before anything is decoded: garbage of that size says ETOOLONG. */
    memset(filler, 'A', sizeof filler - 1);
    filler[sizeof filler - 1] = '\0';
    big = xprintf("%s.%s.%s", filler, filler, filler);
    CHECK_EQ_INT(verify(big), SC_ETOOLARGE);
    free(big);
    /* A policy cannot lift the hard cap of 64 KiB (libjwt decodes on the stack). */
    {
        size_t n = 70000;
        char *huge = malloc(n + 1);
        memset(huge, 'A', n);
        huge[100] = huge[200] = '.';
        huge[n] = '\0';
        small.max_len = (size_t)1 << 30;
        CHECK_EQ_INT(token_verify(fx.ks, &small, huge, NOW, &cl), SC_ETOOLARGE);
        free(huge);
    }
    /* token_sign refuses claims that would not fit either. */
    {
        char *out = (char *)1;
        json_t *c = with(claims(), "pad", json_string(filler));
        CHECK_EQ_INT(token_sign(fx.ec_signer, c, &out), SC_ETOOLARGE);
        CHECK(out == NULL);
        json_decref(c);
    }
    free(tok);
}

TEST(es256_header_on_rsa_key_rejected)
{
    char *payload, *t1, *t2, *t3;

    REQUIRE(setup());
    payload = claims_text(claims());
    t1 = forge("{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"rsa1\"}", payload, fx.ec, NULL);
    t2 = forge("{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"ec1\"}", payload, fx.rsa, NULL);
    t3 = forge("{\"alg\":\"RS512\",\"typ\":\"JWT\",\"kid\":\"rsa1\"}", payload, fx.rsa, NULL);
    CHECK_EQ_INT(verify(t1), SC_EALG);
    CHECK_EQ_INT(verify(t2), SC_EALG);
    CHECK_EQ_INT(verify(t3), SC_EALG);
    free(t1);
    free(t2);
    free(t3);
    free(payload);
}

TEST(verify_argument_checks)
{
    token_claims cl;
    char *tok;

    REQUIRE(setup());
    tok = sign(fx.ec_signer, claims());
    REQUIRE(tok != NULL);
    memset(&cl, 0x55, sizeof cl);
    CHECK_EQ_INT(token_verify(NULL, &pol, tok, NOW, &cl), SC_EMALFORMED);
    CHECK(cl.payload == NULL);
    CHECK_EQ_INT(token_verify(fx.ks, NULL, tok, NOW, &cl), SC_EMALFORMED);
    CHECK_EQ_INT(token_verify(fx.ks, &pol, NULL, NOW, &cl), SC_EMALFORMED);
    CHECK_EQ_INT(token_verify(fx.ks, &pol, tok, NOW, NULL), SC_EMALFORMED);
    token_claims_clear(NULL);
    free(tok);
}

struct verify_job {
    const char *tok;
    int ok;
};

static void *verify_thread(void *arg)
{
    struct verify_job *job = arg;
    for (int i = 0; i < 50; i++) job->ok += verify(job->tok) == SC_OK;
    return NULL;
}

TEST(verify_is_thread_safe_on_a_shared_keyset)
{
    pthread_t th[4];
    struct verify_job jobs[4];
    char *es, *rs;

    REQUIRE(setup());
    es = sign(fx.ec_signer, claims());
    rs = sign(fx.rsa_signer, claims());
    REQUIRE(es && rs);
    for (int i = 0; i < 4; i++) {
        jobs[i].tok = i % 2 ? rs : es;
        jobs[i].ok = 0;
        REQUIRE(pthread_create(&th[i], NULL, verify_thread, &jobs[i]) == 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_INT(jobs[i].ok, 50);
    }
    free(es);
    free(rs);
}

/* Each thread keeps verification contexts per key (token.c: vctx_get); a context made for
 * one keyset must never check a token for another, even at the same key index and kid, nor
 * for a keyset that took a freed keyset's address. */
static int verify_with(token_keyset *ks, const char *tok)
{
    token_claims cl;
    int rc = token_verify(ks, &pol, tok, NOW, &cl);
    if (rc == 0) token_claims_clear(&cl);
    return rc;
}

TEST(verification_contexts_follow_the_keyset)
{
    token_keyset *a = NULL, *b = NULL, *c = NULL;
    char *ta, *tb, *ja, *jb;

    REQUIRE(setup());
    ja = jwks_text(json_pack("[o]", jwk_obj(fx.ec, "ec1", NULL, "sig")));
    jb = jwks_text(json_pack("[o]", jwk_obj(fx.ec_other, "ec1", NULL, "sig")));
    ta = sign(fx.ec_signer, claims());
    tb = sign(fx.ec_other_signer, claims());
    REQUIRE(ja && jb && ta && tb);
    REQUIRE(parse_text(ja, &a) == 0 && parse_text(jb, &b) == 0);
    CHECK_EQ_INT(verify_with(a, ta), SC_OK);
    CHECK_EQ_INT(verify_with(b, ta), SC_ESIG);
    CHECK_EQ_INT(verify_with(b, tb), SC_OK);
    CHECK_EQ_INT(verify_with(a, tb), SC_ESIG);
    token_keyset_destroy(a);
    REQUIRE(parse_text(jb, &c) == 0); /* may well be where a was */
    CHECK_EQ_INT(verify_with(c, ta), SC_ESIG);
    CHECK_EQ_INT(verify_with(c, tb), SC_OK);
    token_keyset_destroy(b);
    token_keyset_destroy(c);
    free(ja);
    free(jb);
    free(ta);
    free(tb);
}

/* keys.c serves the union of its sources' keysets; each ES256 key's table is shared by
 * reference, so it must outlive the keyset it was made for and verify for its own kid
 * only. */
TEST(es256_key_in_a_union_outlives_its_keyset)
{
    token_keyset *a = NULL, *b = NULL, *u = NULL;
    char *ja, *jb, *ta, *tb;

    REQUIRE(setup());
    ja = jwks_text(json_pack("[o]", jwk_obj(fx.ec, "ec1", NULL, "sig")));
    jb = jwks_text(json_pack("[o]", jwk_obj(fx.ec_other, "ec2", NULL, "sig")));
    ta = sign(fx.ec_signer, claims());
    tb = sign(fx.ec_other_signer, claims()); /* kid ec1, key ec_other */
    REQUIRE(ja && jb && ta && tb);
    REQUIRE(parse_text(ja, &a) == 0 && parse_text(jb, &b) == 0);
    REQUIRE(token_keyset_union(&u, a, b) == 0);
    token_keyset_destroy(a);
    token_keyset_destroy(b);
    CHECK_EQ_INT(token_keyset_count(u), 2);
    CHECK_EQ_INT(verify_with(u, ta), SC_OK);
    CHECK_EQ_INT(verify_with(u, tb), SC_ESIG); /* ec_other's signature under kid ec1 */
    token_keyset_destroy(u);
    free(ja);
    free(jb);
    free(ta);
    free(tb);
}

/* ---- key files ---------------------------------------------------------------------------- */

TEST(jwks_alg_must_match_key_type)
{
    REQUIRE(setup());
    CHECK_EQ_INT(parse_one_jwk(jwk_obj(fx.ec, "a", "RS256", NULL)), SC_EKEY);
    CHECK_EQ_INT(parse_one_jwk(jwk_obj(fx.ec, "a", "HS256", NULL)), SC_EKEY);
    CHECK_EQ_INT(parse_one_jwk(jwk_obj(fx.ec, "a", "none", NULL)), SC_EKEY);
    CHECK_EQ_INT(parse_one_jwk(jwk_obj(fx.rsa, "a", "ES256", NULL)), SC_EKEY);
    CHECK_EQ_INT(parse_one_jwk(jwk_obj(fx.rsa, "a", "PS256", NULL)), SC_EKEY);
    CHECK_EQ_INT(parse_one_jwk(jwk_obj(fx.ec, "a", "ES256", "sig")), SC_OK);
    CHECK_EQ_INT(parse_one_jwk(jwk_obj(fx.rsa, "a", "RS256", "sig")), SC_OK);
    CHECK_EQ_INT(parse_one_jwk(with(jwk_obj(fx.ec, "a", NULL, NULL), "alg", json_integer(1))),
                 SC_EKEY);
}

TEST(jwks_rules)
{
    token_keyset *ks = NULL;
    char *text;
    json_t *arr;

    REQUIRE(setup());
    /* use != "sig" is skipped; a file with no usable key is refused. */
    text = jwks_text(json_pack("[o,o]", jwk_obj(fx.ec, "enc1", NULL, "enc"),
                               jwk_obj(fx.rsa, "r", NULL, "sig")));
    CHECK_EQ_INT(parse_text(text, &ks), SC_OK);
    CHECK_EQ_INT(token_keyset_count(ks), 1);
    token_keyset_destroy(ks);
    ks = NULL;
    free(text);
    CHECK_EQ_INT(parse_one_jwk(jwk_obj(fx.ec, "enc1", NULL, "enc")), SC_EKEY);
    /* Unsupported types and curves are skipped, not fatal. */
    text = jwks_text(json_pack("[{s:s,s:s,s:s},{s:s,s:s,s:s,s:s,s:s},o]", "kty", "oct", "k",
                               "c2VjcmV0", "kid", "hmac", "kty", "EC", "crv", "P-384", "x", "AA",
                               "y", "AA", "kid", "p384", jwk_obj(fx.ec, "e", NULL, NULL)));
    /* ... except that "k" is secret material in a public file: refused. */
    CHECK_EQ_INT(parse_text(text, &ks), SC_EKEY);
    free(text);
    text = jwks_text(json_pack("[{s:s,s:s},{s:s,s:s,s:s,s:s,s:s},o]", "kty", "OKP", "kid", "ed",
                               "kty", "EC", "crv", "P-384", "x", "AA", "y", "AA", "kid", "p384",
                               jwk_obj(fx.ec, "e", NULL, NULL)));
    CHECK_EQ_INT(parse_text(text, &ks), SC_OK);
    CHECK_EQ_INT(token_keyset_count(ks), 1);
    token_keyset_destroy(ks);
    ks = NULL;
    free(text);
    /* A kid twice: the whole file is refused, even when one of them would be skipped. */
    text = jwks_text(json_pack("[o,o]", jwk_obj(fx.ec, "same", NULL, NULL),
                               jwk_obj(fx.rsa, "same", NULL, NULL)));
    CHECK_EQ_INT(parse_text(text, &ks), SC_EKEY);
    CHECK(ks == NULL);
    free(text);
    text = jwks_text(json_pack("[o,o]", jwk_obj(fx.ec, "same", NULL, "enc"),
                               jwk_obj(fx.rsa, "same", NULL, NULL)));
    CHECK_EQ_INT(parse_text(text, &ks), SC_EKEY);
    free(text);
    /* The same key twice without kids: equal thumbprints, so also a repeated kid. */
    text = jwks_text(json_pack("[o,o]", jwk_obj(fx.ec, NULL, NULL, NULL),
                               jwk_obj(fx.ec, NULL, NULL, NULL)));
    CHECK_EQ_INT(parse_text(text, &ks), SC_EKEY);
    free(text);
    /* 16 keys are fine, 17 are not. */
    arr = json_array();
    for (int i = 0; i < 16; i++) {
        char kid[16];
        snprintf(kid, sizeof kid, "k%d", i);
        json_array_append_new(arr, jwk_obj(fx.ec, kid, NULL, NULL));
    }
    text = jwks_text(json_incref(arr));
    CHECK_EQ_INT(parse_text(text, &ks), SC_OK);
    CHECK_EQ_INT(token_keyset_count(ks), 16);
    token_keyset_destroy(ks);
    ks = NULL;
    free(text);
    json_array_append_new(arr, jwk_obj(fx.ec, "k16", NULL, NULL));
    text = jwks_text(arr);
    CHECK_EQ_INT(parse_text(text, &ks), SC_EKEY);
    free(text);
    /* Bounded size: > 64 KiB is refused before parsing. */
    {
        size_t n = 64 * 1024 + 1;
        char *big = malloc(n + 1);
        const char *head = "{\"keys\":[],\"pad\":\"";
        memset(big, 'x', n);
        memcpy(big, head, strlen(head));
        memcpy(big + n - 2, "\"}", 2);
        big[n] = '\0';
        CHECK_EQ_INT(token_keyset_parse(&ks, big, n), SC_EKEY);
        free(big);
    }
    /* Weak or broken keys refuse the whole file. */
    {
        EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
        REQUIRE(small != NULL);
        CHECK_EQ_INT(parse_one_jwk(jwk_obj(small, "small", NULL, NULL)), SC_EKEY);
        EVP_PKEY_free(small);
    }
    {
        json_t *k = jwk_obj(fx.ec, "x", NULL, NULL);
        char *y = xstrdup(json_string_value(json_object_get(k, "y")));
        y[5] = y[5] == 'A' ? 'B' : 'A'; /* off the curve */
        json_object_set_new(k, "y", json_string(y));
        CHECK_EQ_INT(parse_one_jwk(k), SC_EKEY);
        free(y);
        k = jwk_obj(fx.ec, "x", NULL, NULL);
        json_object_set_new(k, "x", json_string("AAAA")); /* 3 bytes, not 32 */
        CHECK_EQ_INT(parse_one_jwk(k), SC_EKEY);
        k = jwk_obj(fx.ec, "x", NULL, NULL);
        json_object_set_new(k, "d", json_string("AAAA")); /* private key published */
        CHECK_EQ_INT(parse_one_jwk(k), SC_EKEY);
        k = jwk_obj(fx.rsa, "x", NULL, NULL);
        json_object_set_new(k, "e", json_string("AAAA")); /* e = 0 */
        CHECK_EQ_INT(parse_one_jwk(k), SC_EKEY);
        k = jwk_obj(fx.rsa, "x", NULL, NULL);
        json_object_set_new(k, "n", json_string("not base64url!"));
        CHECK_EQ_INT(parse_one_jwk(k), SC_EKEY);
        k = jwk_obj(fx.ec, "bad kid", NULL, NULL);
        CHECK_EQ_INT(parse_one_jwk(k), SC_EKEY);
    }
    /* Not a JWKS at all. */
    CHECK_EQ_INT(parse_text("{\"kty\":\"EC\"}", &ks), SC_EKEY);
    CHECK_EQ_INT(parse_text("{\"keys\":[]}", &ks), SC_EKEY);
    CHECK_EQ_INT(parse_text("{\"keys\":[1]}", &ks), SC_EKEY);
    CHECK_EQ_INT(parse_text("{\"keys\":[", &ks), SC_EKEY);
    CHECK_EQ_INT(parse_text("", &ks), SC_EKEY);
    CHECK_EQ_INT(token_keyset_parse(&ks, NULL, 0), SC_EKEY);
    CHECK(ks == NULL);
}

TEST(jwks_without_kid_uses_rfc7638_thumbprint)
{
    /* RFC 7638 §3.1: this RSA key's thumbprint is NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs.
     * A token naming that kid gets past kid lookup to the signature check (ESIG, not EKID). */
    static const char *const n =
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc"
        "_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQ"
        "R0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bF"
        "TWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
    char *text = xprintf("{\"keys\":[{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"AQAB\",\"alg\":"
                         "\"RS256\"}]}",
                         n);
    token_keyset *ks = NULL;
    token_claims cl;
    char *payload, *t, *sig;
    unsigned char sigbytes[256] = {1};

    REQUIRE(setup());
    REQUIRE(parse_text(text, &ks) == 0);
    payload = claims_text(claims());
    sig = b64url_encode_alloc(sigbytes, sizeof sigbytes);
    t = forge("{\"alg\":\"RS256\",\"kid\":\"NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs\"}",
              payload, NULL, sig);
    CHECK_EQ_INT(token_verify(ks, &pol, t, NOW, &cl), SC_ESIG);
    free(t);
    t = forge("{\"alg\":\"RS256\",\"kid\":\"NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xt\"}",
              payload, NULL, sig);
    CHECK_EQ_INT(token_verify(ks, &pol, t, NOW, &cl), SC_EKID);
    free(t);
    free(sig);
    free(payload);
    free(text);
    token_keyset_destroy(ks);
}

TEST(signer_jwks_round_trip)
{
    char *jwks, *tok;
    token_keyset *ks = NULL;
    token_claims cl;
    json_t *doc, *k;

    REQUIRE(setup());
    jwks = token_signer_jwks(fx.ec_signer);
    REQUIRE(jwks != NULL);
    doc = json_loads(jwks, 0, NULL);
    k = json_array_get(json_object_get(doc, "keys"), 0);
    CHECK_STR(json_string_value(json_object_get(k, "kty")), "EC");
    CHECK_STR(json_string_value(json_object_get(k, "crv")), "P-256");
    CHECK_STR(json_string_value(json_object_get(k, "kid")), "ec1");
    CHECK_STR(json_string_value(json_object_get(k, "alg")), "ES256");
    CHECK_STR(json_string_value(json_object_get(k, "use")), "sig");
    CHECK_EQ_INT(strlen(json_string_value(json_object_get(k, "x"))), 43);
    CHECK(json_object_get(k, "d") == NULL);
    json_decref(doc);
    REQUIRE(parse_text(jwks, &ks) == 0);
    tok = sign(fx.ec_signer, claims());
    CHECK_EQ_INT(token_verify(ks, &pol, tok, NOW, &cl), SC_OK);
    token_claims_clear(&cl);
    free(tok);
    token_keyset_destroy(ks);
    free(jwks);

    jwks = token_signer_jwks(fx.rsa_signer);
    REQUIRE(jwks != NULL);
    doc = json_loads(jwks, 0, NULL);
    k = json_array_get(json_object_get(doc, "keys"), 0);
    CHECK_STR(json_string_value(json_object_get(k, "kty")), "RSA");
    CHECK_STR(json_string_value(json_object_get(k, "e")), "AQAB");
    CHECK_STR(json_string_value(json_object_get(k, "alg")), "RS256");
    CHECK(json_object_get(k, "d") == NULL && json_object_get(k, "p") == NULL);
    json_decref(doc);
    REQUIRE(parse_text(jwks, &ks) == 0);
    tok = sign(fx.rsa_signer, claims());
    CHECK_EQ_INT(token_verify(ks, &pol, tok, NOW, &cl), SC_OK);
    token_claims_clear(&cl);
    free(tok);
    token_keyset_destroy(ks);
    free(jwks);
    CHECK(token_signer_jwks(NULL) == NULL);
}

TEST(pem_keyset_with_kid_lines_and_thumbprints)
{
    char *ec_pem, *rsa_cert, *text, *path, *tok;
    token_keyset *ks = NULL;
    token_signer *thumb_signer;
    token_claims cl;

    REQUIRE(setup());
    ec_pem = pem_public(fx.ec);
    rsa_cert = pem_certificate(fx.rsa);
    /* ec1 named by a kid: line; the RSA certificate gets its RFC 7638 thumbprint. */
    text = xprintf("# verifier keys\n"
                   "kid: ec1\n\n%s\n"
                   "subject=CN = sidecast\n%s",
                   ec_pem, rsa_cert);
    path = write_file("keys.pem", text);
    REQUIRE(path != NULL);
    CHECK_EQ_INT(token_keyset_load(&ks, path), SC_OK);
    CHECK_EQ_INT(token_keyset_count(ks), 2);
    tok = sign(fx.ec_signer, claims());
    CHECK_EQ_INT(token_verify(ks, &pol, tok, NOW, &cl), SC_OK);
    CHECK_STR(cl.kid, "ec1");
    token_claims_clear(&cl);
    free(tok);
    /* A signer loaded without kid uses the same thumbprint. */
    thumb_signer = signer_for(fx.rsa, "rsa_thumb.pem", NULL);
    REQUIRE(thumb_signer != NULL);
    CHECK_EQ_INT(strlen(token_signer_kid(thumb_signer)), 43);
    tok = sign(thumb_signer, claims());
    CHECK_EQ_INT(token_verify(ks, &pol, tok, NOW, &cl), SC_OK);
    CHECK_STR(cl.kid, token_signer_kid(thumb_signer));
    token_claims_clear(&cl);
    free(tok);
    /* ... and its kid is not "rsa1", which the verifier's JWKS uses. */
    tok = sign(fx.rsa_signer, claims());
    CHECK_EQ_INT(token_verify(ks, &pol, tok, NOW, &cl), SC_EKID);
    free(tok);
    token_signer_destroy(thumb_signer);
    token_keyset_destroy(ks);
    ks = NULL;
    free(text);
    free(path);

    /* Refused: a private key, a kid: line without its block, a kid twice, an unknown block,
     * a block without END, a kid that is not printable. */
    {
        char *priv = pem_private(fx.ec, NULL);
        char *bad[6];
        bad[0] = xprintf("%s%s", ec_pem, priv);
        bad[1] = xprintf("%skid: lonely\n", ec_pem);
        bad[2] = xprintf("kid: a\n%skid: a\n%s", ec_pem, rsa_cert);
        bad[3] = xprintf("-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----\n");
        bad[4] = xprintf("%.*s", (int)(strlen(ec_pem) - 26), ec_pem);
        bad[5] = xprintf("kid: a b\n%s", ec_pem);
        for (int i = 0; i < 6; i++) {
            CHECK_EQ_INT(parse_text(bad[i], &ks), SC_EKEY);
            CHECK(ks == NULL);
            free(bad[i]);
        }
        free(priv);
        /* Text with no key at all. */
        CHECK_EQ_INT(parse_text("just some words\n", &ks), SC_EKEY);
    }
    CHECK_EQ_INT(token_keyset_load(&ks, "/nonexistent/keys.pem"), SC_EKEY);
    CHECK(ks == NULL);
    free(ec_pem);
    free(rsa_cert);
}

TEST(signer_load_rejects)
{
    token_signer *s = NULL;
    char *pem, *path;
    EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);

    REQUIRE(setup());
    REQUIRE(p384 && small);
    /* Encrypted: refused without prompting on a terminal. */
    pem = pem_private(fx.ec, "passphrase");
    path = write_file("enc.pem", pem);
    CHECK_EQ_INT(token_signer_load(&s, path, "k"), SC_EKEY);
    CHECK(s == NULL);
    free(pem);
    free(path);
    pem = pem_private(p384, NULL);
    path = write_file("p384.pem", pem);
    CHECK_EQ_INT(token_signer_load(&s, path, "k"), SC_EKEY);
    free(pem);
    free(path);
    pem = pem_private(small, NULL);
    path = write_file("rsa1024.pem", pem);
    CHECK_EQ_INT(token_signer_load(&s, path, "k"), SC_EKEY);
    free(pem);
    free(path);
    pem = pem_public(fx.ec);
    path = write_file("public.pem", pem);
    CHECK_EQ_INT(token_signer_load(&s, path, "k"), SC_EKEY);
    free(pem);
    free(path);
    pem = pem_private(fx.ec, NULL);
    path = write_file("badkid.pem", pem);
    CHECK_EQ_INT(token_signer_load(&s, path, "a\"b"), SC_EKEY);
    CHECK_EQ_INT(token_signer_load(&s, path, NULL), SC_OK);
    token_signer_destroy(s);
    s = NULL;
    free(pem);
    free(path);
    CHECK_EQ_INT(token_signer_load(&s, "/nonexistent/key.pem", "k"), SC_EKEY);
    CHECK(s == NULL);
    token_signer_destroy(NULL);
    token_keyset_destroy(NULL);
    EVP_PKEY_free(p384);
    EVP_PKEY_free(small);
}

TEST(sign_rejects_bad_payload)
{
    char *out = NULL;
    json_t *arr = json_array();

    REQUIRE(setup());
    CHECK_EQ_INT(token_sign(fx.ec_signer, arr, &out), SC_ECLAIMS);
    CHECK(out == NULL);
    CHECK_EQ_INT(token_sign(fx.ec_signer, NULL, &out), SC_ECLAIMS);
    CHECK_EQ_INT(token_sign(NULL, arr, &out), SC_ECLAIMS);
    json_decref(arr);
}

/* Bare libjwt 1.10.2 behaviour the wrapper exists for. If one of these starts failing, libjwt
 * changed: re-read token.c's assumptions. */
TEST(libjwt_traps_documented)
{
    char *payload, *none_tok, *expired, *pem;
    jwt_t *jwt = NULL;

    REQUIRE(setup());
    payload = claims_text(claims());
    none_tok = forge("{\"alg\":\"none\",\"kid\":\"ec1\"}", payload, NULL, "");
    /* NULL key: an unsigned token is accepted. */
    CHECK_EQ_INT(jwt_decode(&jwt, none_tok, NULL, 0), 0);
    jwt_free(jwt);
    jwt = NULL;
    /* Expired tokens are accepted: libjwt checks no claim. */
    expired = sign(fx.ec_signer, with(claims(), "exp", json_integer(1)));
    pem = pem_public(fx.ec);
    CHECK_EQ_INT(jwt_decode(&jwt, expired, (const unsigned char *)pem, (int)strlen(pem)), 0);
    jwt_free(jwt);
    CHECK_EQ_INT(verify(expired), SC_EEXPIRED);
    CHECK_EQ_INT(verify(none_tok), SC_EALG);
    free(pem);
    free(expired);
    free(none_tok);
    free(payload);
}

/* ---- topics ------------------------------------------------------------------------------- */

TEST_MAIN()
