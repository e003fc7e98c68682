/* test_ws_tlsrec.c - the TLS record layer after the handshake (common/ws/tlsrec.c): key
 * derivation against values computed independently (Python's hmac: HKDF-Expand-Label of
 * RFC 8446 §7.1 and the TLS 1.2 PRF of RFC 5246 §5), records sealed by a peer and opened
 * for every suite, and what must be refused: a flipped bit, a replay, a record over the
 * bound, renegotiation, a record type that has no business after the handshake. The
 * interop proof (OpenSSL's client, Chromium) is in tests/integration/test_edge_tls.py. */
#include "test.h"

#include "err.h"
#include "ws/tlsrec.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

static void unhex(const char *h, uint8_t *out)
{
    for (size_t i = 0; h[2 * i]; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
}

static void keys13(tlsrec_keys *k, uint16_t suite)
{
    memset(k, 0, sizeof *k);
    k->version = 0x0304;
    k->suite = suite;
    for (int i = 0; i < 48; i++) {
        k->client_secret[i] = (uint8_t)i;
        k->server_secret[i] = (uint8_t)(100 + i);
    }
}

static void keys12(tlsrec_keys *k, uint16_t suite)
{
    memset(k, 0, sizeof *k);
    k->version = 0x0303;
    k->suite = suite;
    memset(k->secret, 7, 48);
    memset(k->client_random, 1, 32);
    memset(k->server_random, 2, 32);
}

/* The client's side of a connection: the server's state with the directions swapped. */
static void as_client(tlsrec *r)
{
    tlsrec s = *r;
    memcpy(r->rkey, s.wkey, 32);
    memcpy(r->wkey, s.rkey, 32);
    memcpy(r->riv, s.wiv, 12);
    memcpy(r->wiv, s.riv, 12);
    memcpy(r->rsecret, s.wsecret, 48);
    memcpy(r->wsecret, s.rsecret, 48);
    r->rseq = s.wseq;
    r->wseq = s.rseq;
}

TEST(tls13_keys_match_hkdf_expand_label)
{
    tlsrec_keys k;
    keys13(&k, 0x1301);
    tlsrec r;
    REQUIRE(tlsrec_init(&r, &k) == 0);
    uint8_t key[16], iv[12];
    unhex("9c9783cf77ea32d44f369da41f19f3cc", key);
    unhex("2f41c846a431a163814bcd71", iv);
    CHECK(memcmp(r.rkey, key, 16) == 0); /* the client's secret is 00 01 02 ... */
    CHECK(memcmp(r.riv, iv, 12) == 0);
    CHECK(r.v13 == 1 && r.keylen == 16 && r.rseq == 0);
}

TEST(tls12_keys_match_the_prf)
{
    tlsrec_keys k;
    keys12(&k, 0xC02B);
    tlsrec r;
    REQUIRE(tlsrec_init(&r, &k) == 0);
    uint8_t kb[40];
    unhex("c05bdd26d64f865f7cce6dd9dc7a06335caef9509d2d700758b43249928497804d54ea73d09aec7d", kb);
    CHECK(memcmp(r.rkey, kb, 16) == 0);      /* client write key */
    CHECK(memcmp(r.wkey, kb + 16, 16) == 0); /* server write key */
    CHECK(memcmp(r.riv, kb + 32, 4) == 0);   /* client salt */
    CHECK(memcmp(r.wiv, kb + 36, 4) == 0);   /* server salt */
}

TEST(unknown_suites_and_versions_are_refused)
{
    tlsrec_keys k;
    tlsrec r;
    keys13(&k, 0x1304); /* TLS_AES_128_CCM_SHA256: not negotiated, not carried */
    CHECK_EQ_INT(tlsrec_init(&r, &k), SC_ECERT);
    keys12(&k, 0x009C); /* RSA key exchange, no forward secrecy */
    CHECK_EQ_INT(tlsrec_init(&r, &k), SC_ECERT);
    keys12(&k, 0x1301); /* a 1.3 suite under 1.2 */
    CHECK_EQ_INT(tlsrec_init(&r, &k), SC_ECERT);
    keys13(&k, 0x1301);
    k.version = 0x0302;
    CHECK_EQ_INT(tlsrec_init(&r, &k), SC_ECERT);
}

/* Seals msg as the client (peer) and opens it as the server (srv): the same bytes. */
static int round_trip(tlsrec *peer, tlsrec *srv, EVP_CIPHER_CTX *cx, const char *msg)
{
    uint8_t rec[TLSREC_MAX_PLAIN + TLSREC_MAX_OVERHEAD];
    const uint8_t *p[2] = {(const uint8_t *)msg, (const uint8_t *)msg + strlen(msg) / 2};
    size_t l[2] = {strlen(msg) / 2, strlen(msg) - strlen(msg) / 2};
    long n = tlsrec_seal(peer, cx, TLSREC_DATA, p, l, 2, rec);
    if (n <= 0) return -1;
    uint8_t *plain, alert;
    size_t plain_len;
    int type = tlsrec_open(srv, cx, rec, (size_t)n, &plain, &plain_len, &alert);
    if (type != TLSREC_DATA || plain_len != strlen(msg) || memcmp(plain, msg, plain_len) != 0)
        return -2;
    return 0;
}

TEST(every_suite_round_trips_both_ways)
{
    static const uint16_t s13[] = {0x1301, 0x1302, 0x1303};
    static const uint16_t s12[] = {0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8};
    EVP_CIPHER_CTX *cx = EVP_CIPHER_CTX_new();
    for (int v = 0; v < 2; v++) {
        int n = v ? 6 : 3;
        for (int i = 0; i < n; i++) {
            tlsrec_keys k;
            if (v)
                keys12(&k, s12[i]);
            else
                keys13(&k, s13[i]);
            k.read_seq = v ? 1 : 0, k.write_seq = v ? 1 : 2;
            tlsrec srv, cli;
            REQUIRE(tlsrec_init(&srv, &k) == 0);
            cli = srv;
            as_client(&cli);
            for (int j = 0; j < 3; j++) {
                CHECK_EQ_INT(round_trip(&cli, &srv, cx, "GET /ws HTTP/1.1 and then some"), 0);
                CHECK_EQ_INT(round_trip(&srv, &cli, cx, "{\"type\":\"event\"}"), 0);
            }
            CHECK(srv.rseq == k.read_seq + 3 && srv.wseq == k.write_seq + 3);
        }
    }
    EVP_CIPHER_CTX_free(cx);
}

TEST(a_flipped_bit_a_replay_and_a_wrong_type_are_refused)
{
    EVP_CIPHER_CTX *cx = EVP_CIPHER_CTX_new();
    for (int v = 0; v < 2; v++) {
        tlsrec_keys k;
        if (v)
            keys12(&k, 0xC02F);
        else
            keys13(&k, 0x1303);
        tlsrec srv, cli;
        REQUIRE(tlsrec_init(&srv, &k) == 0);
        cli = srv;
        as_client(&cli);
        uint8_t rec[256], copy[256], *plain, alert;
        size_t plain_len;
        const uint8_t *p = (const uint8_t *)"hello";
        size_t l = 5;
        long n = tlsrec_seal(&cli, cx, TLSREC_DATA, &p, &l, 1, rec);
        REQUIRE(n > 0);
        memcpy(copy, rec, (size_t)n);
        for (long i = TLSREC_HEADER; i < n; i += 3) { /* every third byte after the header */
            tlsrec s2 = srv;
            rec[i] ^= 0x20;
            CHECK(tlsrec_open(&s2, cx, rec, (size_t)n, &plain, &plain_len, &alert) < 0);
            CHECK_EQ_INT(alert, TLSREC_A_BAD_RECORD_MAC);
            memcpy(rec, copy, (size_t)n); /* opening works in place, even when it fails */
        }
        CHECK_EQ_INT(tlsrec_open(&srv, cx, rec, (size_t)n, &plain, &plain_len, &alert),
                     TLSREC_DATA);
        CHECK(plain_len == 5 && memcmp(plain, "hello", 5) == 0);
        /* the same record again: the sequence moved on */
        CHECK(tlsrec_open(&srv, cx, copy, (size_t)n, &plain, &plain_len, &alert) < 0);
        CHECK_EQ_INT(alert, TLSREC_A_BAD_RECORD_MAC);
        /* a ChangeCipherSpec after the handshake */
        uint8_t ccs[5 + 30] = {20, 3, 3, 0, 30, 1};
        CHECK(tlsrec_open(&srv, cx, ccs, sizeof ccs, &plain, &plain_len, &alert) < 0);
        CHECK_EQ_INT(alert, TLSREC_A_UNEXPECTED);
    }
    EVP_CIPHER_CTX_free(cx);
}

TEST(record_lengths_are_bounded)
{
    tlsrec_keys k;
    keys13(&k, 0x1301);
    tlsrec r;
    REQUIRE(tlsrec_init(&r, &k) == 0);
    uint8_t h[5] = {23, 3, 3, 0x41, 0x01}; /* 2^14 + 257: one over */
    CHECK_EQ_INT(tlsrec_record_len(&r, h, 4), SC_EINCOMPLETE);
    CHECK_EQ_INT(tlsrec_record_len(&r, h, 5), SC_ETOOLARGE);
    h[3] = 0x41, h[4] = 0x00; /* 2^14 + 256: the most */
    CHECK_EQ_INT(tlsrec_record_len(&r, h, 5), 5 + 16640);
    h[3] = 0, h[4] = 16; /* shorter than a tag and a type */
    CHECK_EQ_INT(tlsrec_record_len(&r, h, 5), SC_ETOOLARGE);
    h[0] = 24; /* heartbeat: no record type of ours */
    h[4] = 40;
    CHECK_EQ_INT(tlsrec_record_len(&r, h, 5), SC_EMALFORMED);
    h[0] = 23, h[1] = 2; /* SSL 2-ish version byte */
    CHECK_EQ_INT(tlsrec_record_len(&r, h, 5), SC_EMALFORMED);
}

TEST(tls13_padding_alerts_and_key_update)
{
    EVP_CIPHER_CTX *cx = EVP_CIPHER_CTX_new();
    tlsrec_keys k;
    keys13(&k, 0x1302);
    tlsrec srv, cli;
    REQUIRE(tlsrec_init(&srv, &k) == 0);
    cli = srv;
    as_client(&cli);
    uint8_t rec[512], *plain, alert;
    size_t plain_len;
    /* a padded record: content "hi", type 23, then zeros */
    uint8_t inner[40] = {'h', 'i', TLSREC_DATA};
    const uint8_t *p = inner;
    size_t l = sizeof inner;
    long n = tlsrec_seal(&cli, cx, 0 /* the type byte below would follow: none */, &p, &l, 1, rec);
    /* tlsrec_seal appends the type it is given (0 here, which is padding): the record's
     * inner plaintext is "hi" 23 00... 00 */
    REQUIRE(n > 0);
    CHECK_EQ_INT(tlsrec_open(&srv, cx, rec, (size_t)n, &plain, &plain_len, &alert), TLSREC_DATA);
    CHECK(plain_len == 2 && memcmp(plain, "hi", 2) == 0);
    /* all padding, no type: unexpected_message */
    uint8_t zeros[8] = {0};
    p = zeros, l = sizeof zeros;
    n = tlsrec_seal(&cli, cx, 0, &p, &l, 1, rec);
    CHECK(tlsrec_open(&srv, cx, rec, (size_t)n, &plain, &plain_len, &alert) < 0);
    CHECK_EQ_INT(alert, TLSREC_A_UNEXPECTED);
    /* the client moves its key on: the server follows and reads on */
    n = tlsrec_seal_key_update(&cli, cx, rec);
    REQUIRE(n > 0);
    CHECK_EQ_INT(tlsrec_open(&srv, cx, rec, (size_t)n, &plain, &plain_len, &alert),
                 TLSREC_HANDSHAKE);
    CHECK(srv.rseq == 0 && !srv.update_owed);
    CHECK_EQ_INT(round_trip(&cli, &srv, cx, "after the update"), 0);
    uint8_t upd[32];
    unhex("2cecd0a17506ef5fa73edc062d6e7b5397cf074ec1b4d8f99a120772932f0b45", upd);
    tlsrec_keys k2;
    keys13(&k2, 0x1301);
    tlsrec a;
    REQUIRE(tlsrec_init(&a, &k2) == 0);
    tlsrec b = a;
    as_client(&b);
    n = tlsrec_seal_key_update(&b, cx, rec); /* b's write secret is a's read secret */
    CHECK_EQ_INT(tlsrec_open(&a, cx, rec, (size_t)n, &plain, &plain_len, &alert), TLSREC_HANDSHAKE);
    CHECK(memcmp(a.rsecret, upd, 32) == 0); /* "traffic upd" of 00 01 02 ... */
    /* an update the peer asks to be answered */
    uint8_t ku[5] = {24, 0, 0, 1, 1};
    p = ku, l = 5;
    n = tlsrec_seal(&cli, cx, TLSREC_HANDSHAKE, &p, &l, 1, rec);
    CHECK_EQ_INT(tlsrec_open(&srv, cx, rec, (size_t)n, &plain, &plain_len, &alert),
                 TLSREC_HANDSHAKE);
    CHECK(srv.update_owed && tlsrec_update_due(&srv));
    n = tlsrec_seal_key_update(&srv, cx, rec);
    CHECK(n > 0 && !srv.update_owed && srv.wseq == 0);
    /* close_notify and other alerts come out as alerts */
    tlsrec_keys k3;
    keys13(&k3, 0x1301);
    tlsrec s3, c3;
    REQUIRE(tlsrec_init(&s3, &k3) == 0);
    c3 = s3;
    as_client(&c3);
    n = tlsrec_seal_alert(&c3, cx, TLSREC_A_CLOSE_NOTIFY, rec);
    CHECK_EQ_INT(tlsrec_open(&s3, cx, rec, (size_t)n, &plain, &plain_len, &alert), TLSREC_ALERT);
    CHECK(plain_len == 2 && plain[0] == 1 && plain[1] == 0);
    /* a NewSessionTicket from a client: refused */
    uint8_t nst[8] = {4, 0, 0, 4, 0, 0, 0, 0};
    p = nst, l = sizeof nst;
    n = tlsrec_seal(&c3, cx, TLSREC_HANDSHAKE, &p, &l, 1, rec);
    CHECK(tlsrec_open(&s3, cx, rec, (size_t)n, &plain, &plain_len, &alert) < 0);
    EVP_CIPHER_CTX_free(cx);
}

TEST(tls12_renegotiation_is_refused)
{
    EVP_CIPHER_CTX *cx = EVP_CIPHER_CTX_new();
    tlsrec_keys k;
    keys12(&k, 0xCCA8);
    tlsrec srv, cli;
    REQUIRE(tlsrec_init(&srv, &k) == 0);
    cli = srv;
    as_client(&cli);
    uint8_t hello[8] = {1, 0, 0, 4, 3, 3, 0, 0}, rec[128], *plain, alert;
    const uint8_t *p = hello;
    size_t l = sizeof hello, plain_len;
    long n = tlsrec_seal(&cli, cx, TLSREC_HANDSHAKE, &p, &l, 1, rec);
    CHECK(tlsrec_open(&srv, cx, rec, (size_t)n, &plain, &plain_len, &alert) < 0);
    CHECK_EQ_INT(alert, TLSREC_A_UNEXPECTED);
    EVP_CIPHER_CTX_free(cx);
}

TEST_MAIN()
