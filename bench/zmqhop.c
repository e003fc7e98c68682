/* zmqhop - what the edge's ZeroMQ hop (fabric.c: NATS delivery thread -> inproc PUB -> one
 * SUB per I/O worker) costs per event, beside the simplest alternative: a mutex-guarded
 * queue per worker and an eventfd to wake it.
 *
 *   zmqhop [EVENTS] [WORKERS] [RATE]     default 200000 events, 2 workers, 20000 events/s
 *
 * The publisher sends EVENTS messages of 200 bytes at RATE/s (paced by sleeping until each
 * one is due, never spinning, so process CPU is the hop's; at high rates the sleep's
 * overshoot sends a few at once, as NATS does), each as the fabric does:
 * a topic prefix frame, an 16-byte position frame and the payload handed over without a
 * copy (zmq_msg_init_data, freed by ZeroMQ after the last worker released it). Each worker
 * thread waits in epoll on the SUB socket's ZMQ_FD and drains it as fab_port_recv does
 * (ZMQ_EVENTS, three receives, the message kept until "delivered"). The mailbox variant
 * does the same work with a pthread mutex, a ring of pointers and a reference count.
 * Printed per variant: process CPU (user+sys, every thread) per event and per event per
 * worker, and publish-to-receipt latency p50/p99 (CLOCK_MONOTONIC in the payload).
 * Bounded: at most 10^7 events, 16 workers, 60 s per variant. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define PAYLOAD 200
#define MAX_WORKERS 16
#define LAT_MAX 1000000 /* latency samples kept per worker */
#define RING 4096

static long nevents = 200000, rate = 20000;
static int nworkers = 2;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

typedef struct payload {
    _Atomic int ref;
    uint64_t t;
    char pad[PAYLOAD - sizeof(uint64_t)];
} payload;

typedef struct worker {
    pthread_t th;
    void *sub; /* zmq */
    int efd;   /* mailbox */
    pthread_mutex_t mu;
    payload *ring[RING];
    unsigned head, tail;
    long got;
    uint32_t *lat; /* µs */
    long nlat;
} worker;

static worker W[MAX_WORKERS];
static void *zctx, *zpub;
static atomic_long live_payloads;

static void payload_free(void *data, void *hint)
{
    (void)hint;
    free(data);
    atomic_fetch_sub(&live_payloads, 1);
}

static void record(worker *w, const payload *p)
{
    uint64_t d = (now_ns() - p->t) / 1000;
    if (w->nlat < LAT_MAX) w->lat[w->nlat++] = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
    w->got++;
}

/* ---- ZeroMQ, as fabric.c does it ------------------------------------------------------ */

static void *zmq_worker(void *arg)
{
    worker *w = arg;
    int fd, ep = epoll_create1(0);
    size_t fl = sizeof fd;
    zmq_getsockopt(w->sub, ZMQ_FD, &fd, &fl);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET}, out[4];
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    uint64_t deadline = now_ns() + 60ull * 1000000000u;
    while (w->got < nevents && now_ns() < deadline) {
        epoll_wait(ep, out, 4, 100);
        for (;;) {
            int events = 0;
            size_t el = sizeof events;
            if (zmq_getsockopt(w->sub, ZMQ_EVENTS, &events, &el) != 0 || !(events & ZMQ_POLLIN))
                break;
            char prefix[300];
            uint64_t pos[2];
            int more = 0;
            size_t ml = sizeof more;
            if (zmq_recv(w->sub, prefix, sizeof prefix, ZMQ_DONTWAIT) < 0) break;
            zmq_getsockopt(w->sub, ZMQ_RCVMORE, &more, &ml);
            zmq_recv(w->sub, pos, sizeof pos, ZMQ_DONTWAIT);
            zmq_msg_t *m = malloc(sizeof *m);
            zmq_msg_init(m);
            zmq_msg_recv(m, w->sub, ZMQ_DONTWAIT);
            record(w, zmq_msg_data(m));
            zmq_msg_close(m); /* "delivered": the edge releases after its last write */
            free(m);
        }
    }
    close(ep);
    return NULL;
}

static void zmq_publish(long i)
{
    payload *p = malloc(sizeof *p);
    memset(p, 0, sizeof *p);
    p->t = now_ns();
    (void)i;
    atomic_fetch_add(&live_payloads, 1);
    char prefix[] = "e prices.BTC\n";
    uint64_t pos[2] = {(uint64_t)i + 1, (uint64_t)i};
    zmq_msg_t m;
    zmq_msg_init_data(&m, p, sizeof *p, payload_free, NULL);
    zmq_send(zpub, prefix, sizeof prefix - 1, ZMQ_SNDMORE);
    zmq_send(zpub, pos, sizeof pos, ZMQ_SNDMORE);
    zmq_msg_send(&m, zpub, 0);
}

/* ---- mailbox: mutex + ring + eventfd per worker ---------------------------------------- */

static void *mbox_worker(void *arg)
{
    worker *w = arg;
    uint64_t deadline = now_ns() + 60ull * 1000000000u;
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN}, out[4];
    epoll_ctl(ep, EPOLL_CTL_ADD, w->efd, &ev);
    while (w->got < nevents && now_ns() < deadline) {
        uint64_t v;
        if (epoll_wait(ep, out, 4, 100) <= 0) continue;
        if (read(w->efd, &v, sizeof v) != sizeof v) continue;
        for (;;) {
            payload *p = NULL;
            pthread_mutex_lock(&w->mu);
            if (w->tail != w->head) p = w->ring[w->tail++ % RING];
            pthread_mutex_unlock(&w->mu);
            if (!p) break;
            record(w, p);
            if (atomic_fetch_sub(&p->ref, 1) == 1) payload_free(p, NULL);
        }
    }
    close(ep);
    return NULL;
}

static void mbox_publish(long i)
{
    payload *p = malloc(sizeof *p);
    memset(p, 0, sizeof *p);
    (void)i;
    atomic_init(&p->ref, nworkers);
    atomic_fetch_add(&live_payloads, 1);
    p->t = now_ns();
    for (int k = 0; k < nworkers; k++) {
        worker *w = &W[k];
        int wake;
        pthread_mutex_lock(&w->mu);
        wake = w->head == w->tail;
        if (w->head - w->tail < RING)
            w->ring[w->head++ % RING] = p;
        else if (atomic_fetch_sub(&p->ref, 1) == 1)
            payload_free(p, NULL); /* full: dropped */
        pthread_mutex_unlock(&w->mu);
        uint64_t one = 1;
        if (wake && write(w->efd, &one, sizeof one) < 0) perror("write");
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void run(const char *name, void *(*fn)(void *), void (*publish)(long))
{
    for (int k = 0; k < nworkers; k++) {
        W[k].got = 0;
        W[k].nlat = 0;
        W[k].head = W[k].tail = 0;
        pthread_create(&W[k].th, NULL, fn, &W[k]);
    }
    usleep(200000); /* subscriptions settle */
    double c0 = cpu_s();
    uint64_t t0 = now_ns(), gap = 1000000000ull / (uint64_t)rate;
    for (long i = 0; i < nevents; i++) {
        uint64_t due = t0 + (uint64_t)i * gap;
        struct timespec ts = {(time_t)(due / 1000000000u), (long)(due % 1000000000u)};
        if (now_ns() < due) clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
        publish(i);
    }
    for (int k = 0; k < nworkers; k++) pthread_join(W[k].th, NULL);
    double c1 = cpu_s(), wall = (double)(now_ns() - t0) / 1e9;
    long got = 0, nl = 0;
    for (int k = 0; k < nworkers; k++) got += W[k].got;
    uint32_t *all = malloc(sizeof *all * (size_t)nworkers * LAT_MAX);
    for (int k = 0; k < nworkers; k++) {
        memcpy(all + nl, W[k].lat, sizeof *all * (size_t)W[k].nlat);
        nl += W[k].nlat;
    }
    qsort(all, (size_t)nl, sizeof *all, cmp_u32);
    printf("%-8s events=%ld workers=%d received=%ld wall_s=%.2f cpu_us_per_event=%.2f "
           "cpu_us_per_event_per_worker=%.2f latency_us_p50=%u p99=%u\n",
           name, nevents, nworkers, got, wall, (c1 - c0) * 1e6 / (double)nevents,
           (c1 - c0) * 1e6 / (double)nevents / nworkers, nl ? all[nl / 2] : 0,
           nl ? all[(size_t)((double)nl * 0.99)] : 0);
    free(all);
}

int main(int argc, char **argv)
{
    if (argc > 1) nevents = atol(argv[1]);
    if (argc > 2) nworkers = atoi(argv[2]);
    if (argc > 3) rate = atol(argv[3]);
    if (nevents < 1 || nevents > 10000000 || nworkers < 1 || nworkers > MAX_WORKERS || rate < 1 ||
        rate > 10000000) {
        fprintf(stderr, "usage: zmqhop [EVENTS<=1e7] [WORKERS<=16] [RATE]\n");
        return 2;
    }
    if ((double)nevents / (double)rate > 55) nevents = rate * 55; /* each variant < 60 s */
    for (int k = 0; k < nworkers; k++) {
        W[k].lat = malloc(sizeof *W[k].lat * LAT_MAX);
        pthread_mutex_init(&W[k].mu, NULL);
        W[k].efd = eventfd(0, EFD_NONBLOCK);
    }
    zctx = zmq_ctx_new();
    zpub = zmq_socket(zctx, ZMQ_PUB);
    int hwm = 0;
    zmq_setsockopt(zpub, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_bind(zpub, "inproc://hop");
    for (int k = 0; k < nworkers; k++) {
        W[k].sub = zmq_socket(zctx, ZMQ_SUB);
        zmq_setsockopt(W[k].sub, ZMQ_RCVHWM, &hwm, sizeof hwm);
        zmq_connect(W[k].sub, "inproc://hop");
        zmq_setsockopt(W[k].sub, ZMQ_SUBSCRIBE, "e prices.BTC\n", 13);
    }
    run("zeromq", zmq_worker, zmq_publish);
    run("mailbox", mbox_worker, mbox_publish);
    for (int k = 0; k < nworkers; k++) zmq_close(W[k].sub);
    zmq_close(zpub);
    zmq_ctx_term(zctx);
    printf("payloads still allocated: %ld\n", atomic_load(&live_payloads));
    return 0;
}
