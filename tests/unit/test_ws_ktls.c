/* test_ws_ktls.c - what the edge hands the kernel for kTLS sending (common/ws/ktls.c): for
 * every suite, the crypto_info built from tlsrec's write state is used here the way Linux's
 * tls_sw seals records (nonce = salt + IV XOR sequence for TLS 1.3 and ChaCha20; salt +
 * explicit nonce counted up from the IV for TLS 1.2 AES-GCM; the sequence from rec_seq on),
 * and the client's side of tlsrec must open those records: so key, salt, IV and sequence
 * number (records the handshake sealed already, e.g. the TLS 1.3 ticket) are where the
 * kernel looks for them. The kernel itself is exercised by tests/vm/ktls.sh. */
#include "test.h"

#include "err.h"
#include "ws/ktls.h"
#include "ws/tlsrec.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <openssl/evp.h>

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | p[i];
    return v;
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (unsigned char)v;
}

/* The kernel's sealing of its k-th record (0: the first after TLS_TX) of application data
 * pt[0..n) with info. Returns the record's length in out, or -1. */
static int kernel_seal(const ktls_info *in, uint64_t k, const uint8_t *pt, size_t n, uint8_t *out)
{
    const unsigned char *key, *salt = NULL, *iv, *rec_seq;
    size_t keylen, ivlen;
    const char *cipher;
    switch (in->base.cipher_type) {
    case TLS_CIPHER_AES_GCM_128:
        key = in->gcm128.key, keylen = 16, salt = in->gcm128.salt, iv = in->gcm128.iv, ivlen = 8;
        rec_seq = in->gcm128.rec_seq, cipher = "AES-128-GCM";
        break;
    case TLS_CIPHER_AES_GCM_256:
        key = in->gcm256.key, keylen = 32, salt = in->gcm256.salt, iv = in->gcm256.iv, ivlen = 8;
        rec_seq = in->gcm256.rec_seq, cipher = "AES-256-GCM";
        break;
    case TLS_CIPHER_CHACHA20_POLY1305:
        key = in->chacha.key, keylen = 32, iv = in->chacha.iv, ivlen = 12;
        rec_seq = in->chacha.rec_seq, cipher = "ChaCha20-Poly1305";
        break;
    default: return -1;
    }
    (void)keylen;
    bool v13 = in->base.version == TLS_1_3_VERSION;
    uint64_t seq = get64(rec_seq) + k;
    unsigned char nonce[12], seqb[8], explicit_nonce[8];
    put64(seqb, seq);
    if (salt && !v13) { /* TLS 1.2 GCM: salt + explicit nonce (the IV, counted up) */
        memcpy(nonce, salt, 4);
        put64(explicit_nonce, get64(iv) + k);
        memcpy(nonce + 4, explicit_nonce, 8);
    } else {
        if (salt) memcpy(nonce, salt, 4);
        memcpy(nonce + (salt ? 4 : 0), iv, ivlen);
        for (int i = 0; i < 8; i++) nonce[4 + i] ^= seqb[i];
    }
    uint8_t inner[256], aad[13];
    size_t aad_len, body = v13 ? n + 1 : n, expl = salt && !v13 ? 8 : 0;
    memcpy(inner, pt, n);
    if (v13) inner[n] = TLSREC_DATA;
    size_t reclen = expl + body + 16;
    out[0] = TLSREC_DATA, out[1] = 3, out[2] = 3;
    out[3] = (uint8_t)(reclen >> 8), out[4] = (uint8_t)reclen;
    if (v13) {
        memcpy(aad, out, 5);
        aad_len = 5;
    } else {
        memcpy(aad, seqb, 8);
        aad[8] = TLSREC_DATA, aad[9] = 3, aad[10] = 3;
        aad[11] = (uint8_t)(n >> 8), aad[12] = (uint8_t)n;
        aad_len = 13;
    }
    if (expl) memcpy(out + 5, explicit_nonce, 8);
    EVP_CIPHER *c = EVP_CIPHER_fetch(NULL, cipher, NULL);
    EVP_CIPHER_CTX *cx = EVP_CIPHER_CTX_new();
    int len, ok = c && cx && EVP_EncryptInit_ex2(cx, c, key, nonce, NULL) == 1 &&
                  EVP_EncryptUpdate(cx, NULL, &len, aad, (int)aad_len) == 1 &&
                  EVP_EncryptUpdate(cx, out + 5 + expl, &len, inner, (int)body) == 1 &&
                  EVP_EncryptFinal_ex(cx, out + 5 + expl + body, &len) == 1 &&
                  EVP_CIPHER_CTX_ctrl(cx, EVP_CTRL_AEAD_GET_TAG, 16, out + 5 + expl + body) == 1;
    EVP_CIPHER_CTX_free(cx);
    EVP_CIPHER_free(c);
    return ok ? (int)(5 + reclen) : -1;
}

static void init_keys(tlsrec_keys *k, int version, uint16_t suite, uint64_t write_seq)
{
    memset(k, 0, sizeof *k);
    k->version = version;
    k->suite = suite;
    for (int i = 0; i < 48; i++) {
        k->client_secret[i] = (uint8_t)i;
        k->server_secret[i] = (uint8_t)(100 + i);
        k->secret[i] = (uint8_t)(7 * i);
    }
    memset(k->client_random, 1, 32);
    memset(k->server_random, 2, 32);
    k->write_seq = write_seq;
}

/* The client's reading side of the server's write state. */
static void client_of(const tlsrec *s, tlsrec *c)
{
    *c = *s;
    memcpy(c->rkey, s->wkey, 32);
    memcpy(c->riv, s->wiv, 12);
    memcpy(c->rsecret, s->wsecret, 48);
    c->rseq = s->wseq;
}

TEST(every_suite_sealed_the_kernel_way_opens_in_the_client)
{
    static const struct {
        int version;
        uint16_t suite;
        uint16_t cipher;
    } cases[] = {
        {0x0304, 0x1301, TLS_CIPHER_AES_GCM_128},
        {0x0304, 0x1302, TLS_CIPHER_AES_GCM_256},
        {0x0304, 0x1303, TLS_CIPHER_CHACHA20_POLY1305},
        {0x0303, 0xC02B, TLS_CIPHER_AES_GCM_128},
        {0x0303, 0xC030, TLS_CIPHER_AES_GCM_256},
        {0x0303, 0xCCA8, TLS_CIPHER_CHACHA20_POLY1305},
    };
    EVP_CIPHER_CTX *cx = EVP_CIPHER_CTX_new();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (uint64_t ws = 0; ws < 3; ws += 2) { /* 2: records the handshake sealed (tickets) */
            tlsrec_keys k;
            init_keys(&k, cases[i].version, cases[i].suite, ws);
            tlsrec srv, cli;
            REQUIRE(tlsrec_init(&srv, &k) == 0);
            client_of(&srv, &cli);
            ktls_info info;
            int len = ktls_tx_info(&srv, &info);
            CHECK_EQ_INT(info.base.cipher_type, cases[i].cipher);
            int version = cases[i].version == 0x0304 ? TLS_1_3_VERSION : TLS_1_2_VERSION;
            CHECK_EQ_INT(info.base.version, version);
            int want = cases[i].cipher == TLS_CIPHER_AES_GCM_128
                           ? (int)sizeof(struct tls12_crypto_info_aes_gcm_128)
                       : cases[i].cipher == TLS_CIPHER_AES_GCM_256
                           ? (int)sizeof(struct tls12_crypto_info_aes_gcm_256)
                           : (int)sizeof(struct tls12_crypto_info_chacha20_poly1305);
            CHECK_EQ_INT(len, want);
            for (uint64_t r = 0; r < 3; r++) {
                const char *msg = r == 1 ? "{\"type\":\"event\",\"seq\":1}" : "hello";
                uint8_t rec[300], *plain, alert;
                size_t plain_len;
                int n = kernel_seal(&info, r, (const uint8_t *)msg, strlen(msg), rec);
                REQUIRE(n > 0);
                CHECK_EQ_INT(tlsrec_record_len(&cli, rec, (size_t)n), n);
                int type = tlsrec_open(&cli, cx, rec, (size_t)n, &plain, &plain_len, &alert);
                CHECK_EQ_INT(type, TLSREC_DATA);
                CHECK(plain_len == strlen(msg) && memcmp(plain, msg, plain_len) == 0);
            }
            CHECK(cli.rseq == ws + 3);
        }
    }
    EVP_CIPHER_CTX_free(cx);
}

TEST(an_unknown_aead_is_refused)
{
    tlsrec r;
    memset(&r, 0, sizeof r);
    r.aead = TLSREC_AEADS;
    ktls_info info;
    CHECK_EQ_INT(ktls_tx_info(&r, &info), SC_ECERT);
}

TEST(without_the_tls_ulp_the_socket_is_left_as_it_was)
{
    /* a socket that is no TCP connection: both setsockopt calls cannot succeed, and the
     * error comes back (never 0) */
    tlsrec_keys k;
    init_keys(&k, 0x0304, 0x1301, 0);
    tlsrec r;
    REQUIRE(tlsrec_init(&r, &k) == 0);
    CHECK(ktls_tx_enable(-1, &r) < 0);
    CHECK(ktls_send_alert(-1, 1, TLSREC_A_CLOSE_NOTIFY) < 0);
}

TEST_MAIN()
