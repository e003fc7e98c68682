/* bench_pub.c - the NATS publisher of `sidecast bench fanout` and `sidecast bench publish`:
 * paced events through the project's bus (nats.c), then a request nobody answers to learn
 * when the server has read them all. */
#include "bench_int.h"

#include <inttypes.h>
#include <stdio.h>

#include "bus.h"
#include "err.h"

void *bench_pub_run(void *arg)
{
    pubstate *p = arg;
    const bench_opts *o = p->o;
    char msg[PUB_SIZE_MAX + 1], subject[TOPIC_MAX + 40], name[TOPIC_MAX + 8];
    int64_t t0 = now_ns(), deadline = t0 + (int64_t)((o->seconds * 2 + 5) * 1e9);
    for (long i = 0; i < p->total; i++) {
        int64_t due = t0 + (int64_t)((double)i * 1e9 / (double)o->rate), t = now_ns();
        if (t > deadline) break;
        if (due > t) {
            struct timespec ts = {due / 1000000000, due % 1000000000};
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
        }
        int k = (int)(i % o->ntopics);
        bench_topic_name(o, k, name, sizeof name);
        snprintf(subject, sizeof subject, "%s%s", o->prefix, name);
        int head = snprintf(msg, sizeof msg, "{\"t\":%" PRId64 ",\"i\":%ld,\"pad\":\"", now_ns(),
                            p->per_topic[k]);
        long pad = o->size - head - 2;
        if (head < 0 || pad < 0) break;
        memset(msg + head, 'x', (size_t)pad);
        memcpy(msg + head + pad, "\"}", 2);
        if (bus_publish(p->b, subject, NULL, msg, (size_t)o->size, NULL, 0) == 0) {
            p->per_topic[k]++;
            atomic_fetch_add(&p->sent, 1);
        } else {
            atomic_fetch_add(&p->errors, 1);
        }
    }
    p->took_s = ns_s(now_ns() - t0);
    /* A request nobody answers comes back "no responders" only after the server has read
     * everything published before it on this connection. */
    int64_t ts = now_ns();
    bus_msg *r = NULL;
    int src = bus_request(p->b, "_SCBENCH.sync", "", 0, NULL, 0, 30000, &r);
    bus_msg_destroy(r);
    p->synced_s = ns_s(now_ns() - ts);
    p->synced = src == SC_ENORESPONDERS || src == 0;
    atomic_store(&p->done, true);
    return NULL;
}

int bench_pub_connect(pubstate *p)
{
    const bench_opts *o = p->o;
    if (!o->nats || bus_connect(&p->b, o->nats, "sidecast-bench") != 0) return -1;
    for (int i = 0; i < 100 && !bus_connected(p->b); i++) sleep_ms(50);
    if (!bus_connected(p->b)) {
        fprintf(stderr, "bench: not connected to %s\n", o->nats);
        bus_destroy(p->b, 0);
        p->b = NULL;
        return -1;
    }
    return 0;
}
