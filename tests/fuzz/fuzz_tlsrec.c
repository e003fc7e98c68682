/* fuzz_tlsrec.c - libFuzzer target for the TLS record layer (common/ws/tlsrec.c): what a
 * client sends after the handshake, bytes it fully controls.
 *
 * The first input byte picks the version and suite. The rest builds a stream the server
 * reads: chunks that are either raw bytes (forged records) or records the matching client
 * seals from input-chosen content and type (so what lies past the AEAD - padding, inner
 * types, alerts, KeyUpdate and other handshake messages - is reached too), read back as
 * records (tlsrec_record_len, then tlsrec_open on each complete one). The input is also sealed
 * as one data record, which must open to the same bytes. Oracles: a record is never longer than
 * TLSREC_MAX_RECORD; an opened record's plaintext lies inside it and is at most TLSREC_MAX_PLAIN;
 * data sealed by the peer opens to the same bytes; the rest is for the sanitizers. */
#include "ws/tlsrec.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint16_t suites[][2] = {{0x0304, 0x1301}, {0x0304, 0x1302}, {0x0304, 0x1303},
                                     {0x0303, 0xC02B}, {0x0303, 0xC030}, {0x0303, 0xCCA8}};

static void setup(tlsrec *srv, tlsrec *cli, unsigned pick)
{
    tlsrec_keys k;
    memset(&k, 0, sizeof k);
    k.version = suites[pick][0];
    k.suite = suites[pick][1];
    for (int i = 0; i < 48; i++) {
        k.client_secret[i] = (uint8_t)i;
        k.server_secret[i] = (uint8_t)(i * 3);
        k.secret[i] = (uint8_t)(i ^ 0x5a);
    }
    if (tlsrec_init(srv, &k) != 0) abort();
    *cli = *srv; /* the client: the same keys, the directions swapped */
    memcpy(cli->rkey, srv->wkey, 32);
    memcpy(cli->wkey, srv->rkey, 32);
    memcpy(cli->riv, srv->wiv, 12);
    memcpy(cli->wiv, srv->riv, 12);
    memcpy(cli->rsecret, srv->wsecret, 48);
    memcpy(cli->wsecret, srv->rsecret, 48);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static EVP_CIPHER_CTX *cx;
    if (!cx && !(cx = EVP_CIPHER_CTX_new())) return 0;
    if (size < 1 || size > 4 * TLSREC_MAX_RECORD) return 0;
    unsigned pick = data[0] % 6;
    tlsrec srv, cli;
    setup(&srv, &cli, pick);
    /* the stream: [op][len][bytes]...: op even = raw bytes, odd = sealed with type op >> 1 */
    size_t cap = 2 * size + 64 * TLSREC_MAX_OVERHEAD, n = 0, off = 0;
    uint8_t *buf = malloc(cap);
    if (!buf) return 0;
    for (size_t i = 1; i + 2 <= size && n + TLSREC_MAX_OVERHEAD + 256 < cap;) {
        uint8_t op = data[i], len = data[i + 1];
        i += 2;
        if (len > size - i) len = (uint8_t)(size - i);
        if (op & 1) {
            const uint8_t *piece = data + i;
            size_t l = len;
            long k = tlsrec_seal(&cli, cx, (uint8_t)(op >> 1), &piece, &l, 1, buf + n);
            if (k <= 0) abort();
            n += (size_t)k;
        } else {
            memcpy(buf + n, data + i, len);
            n += len;
        }
        i += len;
    }
    while (n - off >= TLSREC_HEADER) { /* the stream as records */
        long rl = tlsrec_record_len(&srv, buf + off, n - off);
        if (rl < 0) break;
        if (rl > TLSREC_MAX_RECORD) abort();
        if ((size_t)rl > n - off) break;
        uint8_t *plain = NULL, alert = 0;
        size_t plain_len = 0;
        int type = tlsrec_open(&srv, cx, buf + off, (size_t)rl, &plain, &plain_len, &alert);
        if (type >= 0 && (plain < buf + off || plain + plain_len > buf + off + rl ||
                          plain_len > TLSREC_MAX_PLAIN))
            abort();
        if (type < 0) break;
        off += (size_t)rl;
    }
    /* the input as data sealed by the client: opens to the same bytes */
    setup(&srv, &cli, pick);
    size_t take = size - 1 < TLSREC_MAX_PLAIN ? size - 1 : TLSREC_MAX_PLAIN;
    uint8_t *rec = malloc(take + TLSREC_MAX_OVERHEAD);
    const uint8_t *piece = data + 1;
    long rn = rec ? tlsrec_seal(&cli, cx, TLSREC_DATA, &piece, &take, 1, rec) : -1;
    if (rec && rn <= 0) abort();
    if (rec) {
        uint8_t *plain = NULL, alert = 0;
        size_t plain_len = 0;
        if (tlsrec_open(&srv, cx, rec, (size_t)rn, &plain, &plain_len, &alert) != TLSREC_DATA ||
            plain_len != take || memcmp(plain, data + 1, take) != 0)
            abort();
    }
    free(rec);
    free(buf);
    return 0;
}
