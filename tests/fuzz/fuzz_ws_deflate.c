/* fuzz_ws_deflate.c - libFuzzer target for common/ws/ws_deflate.c (permessage-deflate).
 *
 * Byte 0 picks what the rest is:
 *   0: a Sec-WebSocket-Extensions value. Oracles: ws_pmd_offer returns 0 or 1; an accepted
 *      offer has window bits 0 or 8..15; its answer fits WS_PMD_RESPONSE_MAX and, read back
 *      as an offer, is accepted with the same parameters.
 *   1: a compressed message (byte 1 sets the bound: 64 * (byte1 + 1) bytes). Oracles: the
 *      result is one of the documented codes; the output buffer never grows past bound + 1;
 *      a message that inflates fits the bound and, compressed again, inflates back to the
 *      same bytes.
 *   2: a message to compress. Oracles: a result smaller than the message (or -1), which
 *      inflates back to the message.
 * The z_streams live across inputs, as a worker's do across messages.
 *
 * Build: make fuzz-build (clang, -fsanitize=fuzzer,address,undefined). */
#include "ws/ws_deflate.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ASSERT(c)                                                                                  \
    do {                                                                                           \
        if (!(c)) __builtin_trap();                                                                \
    } while (0)

static z_stream zd, zi;
static int ready;

static void roundtrip(const uint8_t *msg, size_t n)
{
    size_t cap = n + 3;
    uint8_t *z = malloc(cap ? cap : 1);
    ASSERT(z);
    long zn = ws_pmd_compress(&zd, msg, n, z, cap);
    ASSERT(zn >= -1 && (zn < 0 || (size_t)zn < n));
    if (zn >= 0) {
        uint8_t *back = NULL;
        size_t bcap = 0, blen = 0;
        ASSERT(ws_pmd_inflate(&zi, z, (size_t)zn, n, &back, &bcap, &blen) == 0);
        ASSERT(blen == n && (n == 0 || memcmp(back, msg, n) == 0));
        free(back);
    }
    free(z);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    if (!ready) {
        ASSERT(ws_pmd_deflate_init(&zd) == 0 && ws_pmd_inflate_init(&zi) == 0);
        ready = 1;
    }
    const uint8_t *p = data + 1;
    size_t n = size - 1;

    switch (data[0] % 3) {
    case 0: {
        ws_pmd pm, again;
        int rc = ws_pmd_offer((const char *)p, n, &pm);
        ASSERT(rc == 0 || rc == 1);
        if (rc == 1) {
            ASSERT(pm.server_max_window_bits == 0 ||
                   (pm.server_max_window_bits >= 8 && pm.server_max_window_bits <= 15));
            char out[WS_PMD_RESPONSE_MAX];
            int len = ws_pmd_response(out, sizeof out, &pm);
            ASSERT(len > 0 && (size_t)len < sizeof out && out[len] == '\0');
            ASSERT(ws_pmd_offer(out, (size_t)len, &again) == 1);
            ASSERT(again.server_max_window_bits == pm.server_max_window_bits);
        }
        break;
    }
    case 1: {
        if (n < 1) return 0;
        size_t max = 64 * ((size_t)p[0] + 1);
        uint8_t *buf = NULL;
        size_t cap = 0, len = 0;
        int rc = ws_pmd_inflate(&zi, p + 1, n - 1, max, &buf, &cap, &len);
        ASSERT(rc == 0 || rc == WS_PMD_CORRUPT || rc == WS_PMD_TOO_BIG || rc == WS_PMD_NOMEM);
        ASSERT(cap <= max + 1);
        if (rc == 0) {
            ASSERT(len <= max);
            uint8_t *copy = malloc(len ? len : 1);
            ASSERT(copy);
            if (len) memcpy(copy, buf, len);
            roundtrip(copy, len);
            free(copy);
        }
        free(buf);
        break;
    }
    default: roundtrip(p, n); break;
    }
    return 0;
}
