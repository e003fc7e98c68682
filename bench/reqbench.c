/* reqbench - the baseline for the gateway benchmark: a bare NATS request/reply loop.
 *
 *   reqbench URL SUBJECT THREADS SECONDS [PAYLOAD]
 *
 * THREADS threads each send requests one after another (as wrk's connections do over HTTP)
 * for SECONDS; prints requests/s and latency percentiles in the same shape as bench/run.sh
 * reports wrk's. */
#include "bus.h"
#include "log.h"

#include <pthread.h>
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
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *worker(void *arg)
{
    (void)arg;
    double end = now() + seconds;
    while (now() < end) {
        double t0 = now();
        bus_msg *r = NULL;
        int rc = bus_request(B, subject, payload, strlen(payload), NULL, 0, 2000, &r);
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
        fprintf(stderr, "usage: reqbench URL SUBJECT THREADS SECONDS [PAYLOAD]\n");
        return 2;
    }
    log_init("reqbench", LOG_WARN);
    subject = argv[2];
    int nthreads = atoi(argv[3]);
    seconds = atof(argv[4]);
    payload = argc > 5 ? argv[5] : "{\"method\":\"GET\",\"path\":\"/api/bench\"}";
    if (nthreads < 1 || nthreads > MAX_THREADS || seconds <= 0) return 2;
    samples = malloc(sizeof(double) * MAX_SAMPLES);
    if (!samples || bus_connect(&B, argv[1], "reqbench") != 0) return 1;
    for (int i = 0; i < 100 && !bus_connected(B); i++) usleep(50000);
    pthread_t th[MAX_THREADS];
    double t0 = now();
    for (int i = 0; i < nthreads; i++) pthread_create(&th[i], NULL, worker, NULL);
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
