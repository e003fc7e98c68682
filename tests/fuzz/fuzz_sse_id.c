/* fuzz_sse_id.c - libFuzzer target for sse_parse_id (services/edge/session_sse.c): the id a
 * browser sends back as Last-Event-ID, straight from the network.
 *
 * The first input byte chooses how many positions are expected (1..32); the rest is the id.
 * Oracle: an independent reading (split on '.', each field empty or 1..16 digits below 2^53)
 * gives the same verdict and the same positions; a parsed id written back the way the edge
 * writes one parses to the same positions. */
#include "../../services/edge/sse.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ASSERT(c)                                                                                  \
    do {                                                                                           \
        if (!(c)) __builtin_trap();                                                                \
    } while (0)

static int reference(const char *s, size_t n, uint64_t *pos, size_t npos)
{
    size_t k = 0, start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != '.') continue;
        if (k == npos) return -1; /* more fields than topics */
        size_t len = i - start;
        if (len > 16) return -1;
        uint64_t v = 0;
        for (size_t j = start; j < i; j++) {
            if (s[j] < '0' || s[j] > '9') return -1;
            v = v * 10 + (uint64_t)(s[j] - '0');
        }
        if (v >= (1ULL << 53)) return -1;
        pos[k++] = len ? v : UINT64_MAX;
        start = i + 1;
    }
    return k == npos ? 0 : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    size_t npos = (size_t)(data[0] % 32) + 1;
    const char *id = (const char *)data + 1;
    size_t n = size - 1;
    uint64_t got[32], want[32];
    int rc = sse_parse_id(id, n, got, npos);
    int ref = reference(id, n, want, npos);
    ASSERT(rc == ref);
    if (rc != 0) return 0;
    for (size_t i = 0; i < npos; i++) ASSERT(got[i] == want[i]);
    char text[32 * 18];
    size_t tl = 0;
    for (size_t i = 0; i < npos; i++) {
        if (i) text[tl++] = '.';
        if (got[i] != UINT64_MAX)
            tl += (size_t)snprintf(text + tl, sizeof text - tl, "%llu", (unsigned long long)got[i]);
    }
    uint64_t again[32];
    ASSERT(sse_parse_id(text, tl, again, npos) == 0);
    for (size_t i = 0; i < npos; i++) ASSERT(again[i] == got[i]);
    return 0;
}
