/* deflatebench - what permessage-deflate costs and saves for the edge's events.
 *
 *   deflatebench [ITERATIONS]
 *
 * For typical sidecast.v1 events of about 128, 256 and 512 bytes (JSON as the fabric frames
 * it), compresses each ITERATIONS times (default 100000) with common/ws/ws_deflate.c as
 * the fabric does (one stream, reset per event, level WS_PMD_LEVEL, no context takeover),
 * inflates it as a worker does, and prints per event: bytes before and after, the saving,
 * and the CPU time of one compression and one inflation (CLOCK_THREAD_CPUTIME_ID, mean).
 * One compression is done per broadcast, whatever the number of subscribers. */
#include "ws/ws_deflate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    long iters = argc > 1 ? atol(argv[1]) : 100000;
    static const char *const events[] = {
        "{\"type\":\"event\",\"topic\":\"prices.BTC\",\"seq\":1048576,\"data\":{\"symbol\":"
        "\"BTC-USD\",\"price\":\"64012.55\",\"ts\":1764380000123}}",
        "{\"type\":\"event\",\"topic\":\"prices.BTC\",\"seq\":1048576,\"data\":{\"symbol\":"
        "\"BTC-USD\",\"price\":\"64012.55\",\"bid\":\"64012.50\",\"ask\":\"64012.60\","
        "\"bid_size\":\"0.8123\",\"ask_size\":\"1.2040\",\"volume_24h\":\"18234.1209\","
        "\"change_24h\":\"-0.0123\",\"ts\":1764380000123}}",
        "{\"type\":\"event\",\"topic\":\"orders.eu-west\",\"seq\":1048576,\"data\":{\"order_id\":"
        "\"o-7f3a9c2e-41d8-4b6a-9e0f-2c5d8a1b3e47\",\"user\":\"alice\",\"status\":"
        "\"partially_filled\",\"side\":\"buy\",\"symbol\":\"ETH-EUR\",\"type\":\"limit\","
        "\"price\":\"3120.45\",\"quantity\":\"2.5000\",\"filled\":\"1.2500\",\"remaining\":"
        "\"1.2500\",\"fees\":{\"currency\":\"EUR\",\"amount\":\"1.95\"},\"fills\":[{\"price\":"
        "\"3120.40\",\"quantity\":\"0.7500\",\"ts\":1764380000100},{\"price\":\"3120.45\","
        "\"quantity\":\"0.5000\",\"ts\":1764380000123}],\"created\":1764379990000,"
        "\"updated\":1764380000123}}",
    };
    z_stream zd, zi;
    if (ws_pmd_deflate_init(&zd) != 0 || ws_pmd_inflate_init(&zi) != 0) return 1;
    uint8_t out[2048], *back = NULL;
    size_t cap = 0, blen = 0;
    printf("%-8s %8s %8s %7s %12s %12s\n", "event", "bytes", "deflated", "saved", "deflate_ns",
           "inflate_ns");
    for (size_t e = 0; e < sizeof events / sizeof events[0]; e++) {
        const uint8_t *p = (const uint8_t *)events[e];
        size_t n = strlen(events[e]);
        long zn = 0;
        double t0 = now_ns();
        for (long i = 0; i < iters; i++) zn = ws_pmd_compress(&zd, p, n, out, n + 3);
        double t1 = now_ns();
        if (zn < 0) zn = (long)n;
        for (long i = 0; i < iters; i++)
            if (ws_pmd_inflate(&zi, out, (size_t)zn, 65536, &back, &cap, &blen) != 0) return 1;
        double t2 = now_ns();
        if (blen != n || memcmp(back, p, n) != 0) return 1;
        printf("%-8zu %8zu %8ld %6.1f%% %12.0f %12.0f\n", e, n, zn,
               100.0 * (double)((long)n - zn) / (double)n, (t1 - t0) / (double)iters,
               (t2 - t1) / (double)iters);
    }
    free(back);
    deflateEnd(&zd);
    inflateEnd(&zi);
    return 0;
}
