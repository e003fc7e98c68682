/* ticks.c - the price random walk and the thread that publishes it. */
#include "ticks.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "contract.h"
#include "log.h"
#include "metrics.h"

static const struct {
    const char *name;
    double start;
} symbols[TICKS_NSYMBOLS] = {
    {"BTC", 67000.00},
    {"ETH", 3500.00},
    {"SOL", 150.00},
};

const char *ticks_symbol(int i) { return i >= 0 && i < TICKS_NSYMBOLS ? symbols[i].name : NULL; }

double ticks_start_price(int i) { return i >= 0 && i < TICKS_NSYMBOLS ? symbols[i].start : 0.0; }

int ticks_symbol_index(const char *name)
{
    if (!name) return -1;
    for (int i = 0; i < TICKS_NSYMBOLS; i++)
        if (strcmp(name, symbols[i].name) == 0) return i;
    return -1;
}

static double cents(double v) { return round(v * 100.0) / 100.0; }

void walk_init(walk *w, double start)
{
    w->start = start;
    w->price = cents(start);
    w->lo = start * WALK_MIN_FACTOR;
    w->hi = start * WALK_MAX_FACTOR;
}

double walk_step(walk *w, double u)
{
    double p;
    if (!(u >= -1.0)) u = -1.0; /* also catches NaN */
    if (u > 1.0) u = 1.0;
    p = w->price * (1.0 + u * WALK_MAX_STEP);
    if (p > w->hi) p = w->hi - (p - w->hi); /* reflect: the walk keeps moving */
    if (p < w->lo) p = w->lo + (w->lo - p);
    p = cents(p);
    /* Rounding to cents must not leave the band either. */
    if (p > w->hi) p = floor(w->hi * 100.0) / 100.0;
    if (p < w->lo) p = ceil(w->lo * 100.0) / 100.0;
    w->price = p;
    return p;
}

uint64_t ticks_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

double ticks_uniform(uint64_t *state)
{
    /* 53 random bits -> [0, 1] -> [-1, 1] */
    double r = (double)(ticks_rand(state) >> 11) / (double)((1ULL << 53) - 1);
    return r * 2.0 - 1.0;
}

int ticks_format(char *out, size_t outlen, const char *symbol, double price, int64_t ts_ms)
{
    int n = snprintf(out, outlen, "{\"symbol\":\"%s\",\"price\":%.2f,\"ts\":%lld}", symbol, price,
                     (long long)ts_ms);
    return n < 0 || (size_t)n >= outlen ? -1 : n;
}

struct ticker {
    bus *b;
    long period_ms;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    uint64_t rng;
    walk w[TICKS_NSYMBOLS];
    _Atomic int watched[TICKS_NSYMBOLS]; /* 0: the symbol's ticks are not published */
    metric *ticks, *errors;
};

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void add_ms(struct timespec *t, long ms)
{
    t->tv_sec += ms / 1000;
    t->tv_nsec += (ms % 1000) * 1000000L;
    if (t->tv_nsec >= 1000000000L) {
        t->tv_sec++;
        t->tv_nsec -= 1000000000L;
    }
}

static void publish_all(ticker *t, const double *prices)
{
    char subject[64], body[160];
    int64_t now = wall_ms();
    for (int i = 0; i < TICKS_NSYMBOLS; i++) {
        if (!atomic_load(&t->watched[i])) continue; /* nobody watches: nothing to tell */
        int n = ticks_format(body, sizeof body, symbols[i].name, prices[i], now), rc;
        snprintf(subject, sizeof subject, SUBJ_EVENTS_PREFIX "prices.%s", symbols[i].name);
        rc = n < 0 ? -EINVAL : bus_publish(t->b, subject, NULL, body, (size_t)n, NULL, 0);
        if (rc == 0) {
            metric_inc(t->ticks);
        } else {
            /* While NATS is down every tick fails: count them, log at debug only. */
            metric_inc(t->errors);
            log_debug("tick not published", "subject=%s err=\"%s\"", subject, sc_strerror(rc));
        }
    }
}

static void *ticker_main(void *arg)
{
    ticker *t = arg;
    struct timespec next;
    double prices[TICKS_NSYMBOLS];

    clock_gettime(CLOCK_MONOTONIC, &next);
    pthread_mutex_lock(&t->mu);
    while (!t->stop) {
        struct timespec now;
        add_ms(&next, t->period_ms);
        clock_gettime(CLOCK_MONOTONIC, &now);
        /* After a long stall (suspend, overload), start the schedule again from now rather
         * than publishing a burst to catch up. */
        if (now.tv_sec > next.tv_sec + 1) next = now;
        while (!t->stop && pthread_cond_timedwait(&t->cv, &t->mu, &next) != ETIMEDOUT) {
        }
        if (t->stop) break;
        for (int i = 0; i < TICKS_NSYMBOLS; i++)
            prices[i] = walk_step(&t->w[i], ticks_uniform(&t->rng));
        pthread_mutex_unlock(&t->mu);
        publish_all(t, prices); /* never under the lock: fills read prices meanwhile */
        pthread_mutex_lock(&t->mu);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

int ticker_start(ticker **out, bus *b, long period_ms)
{
    ticker *t;
    pthread_condattr_t ca;
    int rc;

    *out = NULL;
    if (period_ms < 1) return -EINVAL;
    t = calloc(1, sizeof *t);
    if (!t) return -ENOMEM;
    t->b = b;
    t->period_ms = period_ms;
    if (RAND_bytes((unsigned char *)&t->rng, sizeof t->rng) != 1 || t->rng == 0)
        t->rng = (uint64_t)wall_ms() | 1;
    for (int i = 0; i < TICKS_NSYMBOLS; i++) {
        walk_init(&t->w[i], symbols[i].start);
        atomic_init(&t->watched[i], 1);
    }
    t->ticks = metrics_counter("sc_producer_ticks_total", NULL, "Price ticks published.");
    t->errors = metrics_counter("sc_producer_publish_errors_total", "kind=\"tick\"",
                                "Messages the producer could not publish, by kind.");
    pthread_mutex_init(&t->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cv, &ca);
    pthread_condattr_destroy(&ca);
    rc = pthread_create(&t->thread, NULL, ticker_main, t);
    if (rc != 0) {
        log_error("ticker thread not started", "err=\"%s\"", strerror(rc));
        pthread_cond_destroy(&t->cv);
        pthread_mutex_destroy(&t->mu);
        free(t);
        return -rc;
    }
    *out = t;
    return 0;
}

void ticker_stop(ticker *t)
{
    if (!t) return;
    pthread_mutex_lock(&t->mu);
    t->stop = 1;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
    pthread_join(t->thread, NULL);
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

double ticker_price(ticker *t, int i)
{
    double p;
    if (i < 0 || i >= TICKS_NSYMBOLS) return 0.0;
    pthread_mutex_lock(&t->mu);
    p = t->w[i].price;
    pthread_mutex_unlock(&t->mu);
    return p;
}

void ticker_set_watched(ticker *t, int i, bool on)
{
    if (i >= 0 && i < TICKS_NSYMBOLS) atomic_store(&t->watched[i], on ? 1 : 0);
}
