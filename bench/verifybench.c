/* verifybench - what one token verification costs the edge (token_verify, common/), beside
 * the signature check alone done the way OpenSSL's EVP interface does it with a key parsed
 * once (EVP_DigestVerify, what token_verify did for ES256 before token_es256.c). The
 * measurement behind the handshake paragraph of docs/BENCHMARKS.md (Findings).
 *
 *   verifybench [TOKENS] [ROUNDS]          default 2,000 distinct tokens, 3 rounds
 *
 * Keys are made here (EC P-256 and RSA-2048); TOKENS distinct tokens per algorithm are signed
 * with token_sign (claims as auth issues them), so every verification misses the verified-
 * token cache (TOKEN_CACHE_SLOTS is smaller than the default; each round uses a fresh
 * keyset). Printed per round: µs of this thread's CPU per verification for ES256 through
 * token_verify, for the bare EVP_DigestVerify of the same ES256 signatures, and for RS256
 * through token_verify. Bounded: at most 100,000 tokens and 20 rounds. */
#include "b64url.h"
#include "token.h"

#include <jansson.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_TOKENS 100000
#define MAX_ROUNDS 20
#define NOW 1800000000L

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *pem_of(EVP_PKEY *pk, int priv)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *p = NULL, *s = NULL;
    long n;

    if (b == NULL) return NULL;
    if (priv ? PEM_write_bio_PrivateKey(b, pk, NULL, NULL, 0, NULL, NULL)
             : PEM_write_bio_PUBKEY(b, pk)) {
        n = BIO_get_mem_data(b, &p);
        if ((s = malloc((size_t)n + 1)) != NULL) {
            memcpy(s, p, (size_t)n);
            s[n] = '\0';
        }
    }
    BIO_free(b);
    return s;
}

/* n tokens for distinct users signed by pk as kid. */
static char **tokens(EVP_PKEY *pk, const char *kid, int n)
{
    char *pem = pem_of(pk, 1), **t = calloc((size_t)n, sizeof *t), path[] = "/tmp/vbkeyXXXXXX";
    token_signer *s = NULL;
    int fd = mkstemp(path);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;

    if (pem == NULL || t == NULL || f == NULL || fputs(pem, f) < 0 || fclose(f) != 0 ||
        token_signer_load(&s, path, kid) != 0) {
        fprintf(stderr, "verifybench: cannot make a signer\n");
        exit(1);
    }
    unlink(path);
    for (int i = 0; i < n; i++) {
        char sub[32];
        json_t *c;

        snprintf(sub, sizeof sub, "user-%d", i);
        c = json_pack("{s:s,s:s,s:s,s:I,s:I,s:s}", "iss", "sidecast", "aud", "sidecast", "sub", sub,
                      "iat", (json_int_t)NOW, "exp", (json_int_t)(NOW + 900), "scope",
                      "subscribe publish");
        if (c == NULL || token_sign(s, c, &t[i]) != 0) {
            fprintf(stderr, "verifybench: cannot sign\n");
            exit(1);
        }
        json_decref(c);
    }
    token_signer_destroy(s);
    free(pem);
    return t;
}

static token_keyset *keyset(EVP_PKEY *ec, EVP_PKEY *rsa)
{
    char *a = pem_of(ec, 0), *b = pem_of(rsa, 0), *text = NULL;
    token_keyset *ks = NULL;

    if (a && b && asprintf(&text, "kid: ec1\n%s\nkid: rsa1\n%s", a, b) > 0)
        token_keyset_parse(&ks, text, strlen(text));
    if (ks == NULL) {
        fprintf(stderr, "verifybench: cannot make a keyset\n");
        exit(1);
    }
    free(a);
    free(b);
    free(text);
    return ks;
}

static double run_verify(EVP_PKEY *ec, EVP_PKEY *rsa, char **t, int n)
{
    static const token_policy pol = {"sidecast", "sidecast", 30, 0};
    token_keyset *ks = keyset(ec, rsa);
    token_claims cl;
    double t0 = cpu_s();

    for (int i = 0; i < n; i++) {
        if (token_verify(ks, &pol, t[i], NOW, &cl) != 0) {
            fprintf(stderr, "verifybench: token %d did not verify\n", i);
            exit(1);
        }
        token_claims_clear(&cl);
    }
    t0 = cpu_s() - t0;
    token_keyset_destroy(ks);
    return t0 * 1e6 / n;
}

/* The ES256 signatures alone through EVP_DigestVerify (R||S re-encoded as DER first). */
static double run_evp(EVP_PKEY *ec, char **t, int n)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    double t0 = cpu_s();

    for (int i = 0; i < n; i++) {
        const char *d2 = strrchr(t[i], '.');
        unsigned char raw[64], der[80], *p = der;
        size_t rn = 0;
        ECDSA_SIG *sig = ECDSA_SIG_new();
        int dl;

        if (d2 == NULL || sig == NULL ||
            b64url_decode(d2 + 1, strlen(d2 + 1), raw, sizeof raw, &rn) != 0 || rn != 64 ||
            ECDSA_SIG_set0(sig, BN_bin2bn(raw, 32, NULL), BN_bin2bn(raw + 32, 32, NULL)) != 1 ||
            (dl = i2d_ECDSA_SIG(sig, &p)) <= 0 ||
            EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, ec) != 1 ||
            EVP_DigestVerify(md, der, (size_t)dl, (const unsigned char *)t[i],
                             (size_t)(d2 - t[i])) != 1) {
            fprintf(stderr, "verifybench: EVP did not verify token %d\n", i);
            exit(1);
        }
        ECDSA_SIG_free(sig);
    }
    t0 = cpu_s() - t0;
    EVP_MD_CTX_free(md);
    return t0 * 1e6 / n;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 2000, rounds = argc > 2 ? atoi(argv[2]) : 3;
    EVP_PKEY *ec = EVP_EC_gen("P-256"), *rsa = EVP_RSA_gen(2048);
    char **es, **rs;

    if (n < 1 || n > MAX_TOKENS || rounds < 1 || rounds > MAX_ROUNDS || !ec || !rsa) {
        fprintf(stderr, "usage: verifybench [TOKENS 1..%d] [ROUNDS 1..%d]\n", MAX_TOKENS,
                MAX_ROUNDS);
        return 2;
    }
    es = tokens(ec, "ec1", n);
    rs = tokens(rsa, "rsa1", n);
    printf("round  es256_token_verify_us  es256_evp_digestverify_us  rs256_token_verify_us\n");
    for (int r = 1; r <= rounds; r++) {
        double a = run_verify(ec, rsa, es, n), b = run_evp(ec, es, n);
        double c = run_verify(ec, rsa, rs, n);
        printf("%5d  %21.2f  %25.2f  %21.2f\n", r, a, b, c);
    }
    for (int i = 0; i < n; i++) {
        free(es[i]);
        free(rs[i]);
    }
    free(es);
    free(rs);
    EVP_PKEY_free(ec);
    EVP_PKEY_free(rsa);
    return 0;
}
