/* reqbench - the baseline for the gateway benchmark: a bare NATS request/reply loop.
 *
 *   reqbench URL SUBJECT THREADS SECONDS [PAYLOAD [headers]]
 *
 * THREADS threads each send requests one after another (as wrk's connections do over HTTP)
 * for SECONDS; prints requests/s and latency percentiles in the same shape as bench/run.sh
 * reports wrk's. With "headers", each request also carries a fresh Sidecast-Request-Id and
 * traceparent, as the gateway's requests do (DESIGN.md, bus headers): with the gateway's
 * envelope as PAYLOAD, the service and nats-server then see the same request from both
 * sides of the comparison. */
#include "bus.h"
#include "contract.h"
#include "log.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 256
#define MAX_SAMPLES (1 << 20)

static bus *B;
static const char *subject, *payload;
static double seconds;
static double *samples;
static size_t nsamples;
static long errors;
static int with_headers;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* n random bytes as hex, from a per-thread xorshift generator (the gateway draws its ids
 * from OpenSSL; this baseline's randomness need not be unpredictable, only distinct) */
static void hex_random(uint64_t *st, char *out, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        *st ^= *st << 13;
        *st ^= *st >> 7;
        *st ^= *st << 17;
        out[2 * i] = digits[(*st >> 8) & 15];
        out[2 * i + 1] = digits[(*st >> 16) & 15];
    }
    out[2 * n] = '\0';
}

static void *worker(void *arg)
{
    uint64_t st = 0x9e3779b97f4a7c15ull ^ ((uint64_t)(uintptr_t)arg * 0x2545f4914f6cdd1dull);
    char rid[33], trace[16 + 33 + 17 + 3], tid[33], sid[17];
    bus_hdr hdrs[2] = {{HDR_REQUEST_ID, rid}, {HDR_TRACEPARENT, trace}};
    double end = now() + seconds;
    while (now() < end) {
        if (with_headers) {
            hex_random(&st, rid, 16);
            hex_random(&st, tid, 16);
            hex_random(&st, sid, 8);
            snprintf(trace, sizeof trace, "00-%s-%s-01", tid, sid);
        }
        double t0 = now();
        bus_msg *r = NULL;
        int rc = bus_request(B, subject, payload, strlen(payload), with_headers ? hdrs : NULL,
                             with_headers ? 2 : 0, 2000, &r);
        double dt = now() - t0;
        bus_msg_destroy(r);
        pthread_mutex_lock(&lock);
        if (rc != 0)
            errors++;
        else if (nsamples < MAX_SAMPLES)
            samples[nsamples++] = dt;
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: reqbench URL SUBJECT THREADS SECONDS [PAYLOAD [headers]]\n");
        return 2;
    }
    log_init("reqbench", LOG_WARN);
    subject = argv[2];
    int nthreads = atoi(argv[3]);
    seconds = atof(argv[4]);
    payload = argc > 5 ? argv[5] : "{\"method\":\"GET\",\"path\":\"/api/bench\"}";
    with_headers = argc > 6 && strcmp(argv[6], "headers") == 0;
    if (argc > 6 && !with_headers) {
        fprintf(stderr, "reqbench: the sixth argument can only be \"headers\"\n");
        return 2;
    }
    if (nthreads < 1 || nthreads > MAX_THREADS || seconds <= 0) return 2;
    samples = malloc(sizeof(double) * MAX_SAMPLES);
    if (!samples || bus_connect(&B, argv[1], "reqbench") != 0) return 1;
    for (int i = 0; i < 100 && !bus_connected(B); i++) usleep(50000);
    pthread_t th[MAX_THREADS];
    double t0 = now();
    for (int i = 0; i < nthreads; i++)
        pthread_create(&th[i], NULL, worker, (void *)(uintptr_t)(i + 1));
    for (int i = 0; i < nthreads; i++) pthread_join(th[i], NULL);
    double el = now() - t0;
    qsort(samples, nsamples, sizeof(double), cmp);
    double p50 = nsamples ? samples[nsamples / 2] : 0;
    double p99 = nsamples ? samples[(size_t)((double)nsamples * 0.99)] : 0;
    printf("requests=%zu errors=%ld seconds=%.2f rps=%.0f p50_ms=%.3f p99_ms=%.3f\n", nsamples,
           errors, el, (double)nsamples / el, p50 * 1e3, p99 * 1e3);
    bus_destroy(B, 1000);
    free(samples);
    return 0;
}
