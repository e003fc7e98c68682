/* metrics.c - a small Prometheus registry; see metrics.h.
 *
 * Metrics live in one linked list guarded by a mutex that is taken only to create or render;
 * updates are relaxed atomics. Histograms keep cumulative-free bucket counts and a sum in
 * microseconds, rendered cumulatively. */
#include "metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum metric_kind { M_COUNTER, M_GAUGE, M_HISTOGRAM };

static const double metric_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                        0.1,    0.25,  0.5,    1,     2.5,  5,     10};
#define NBUCKETS (sizeof(metric_buckets) / sizeof(metric_buckets[0]))

struct metric {
    struct metric *next;
    enum metric_kind kind;
    char *name, *labels, *help;
    _Atomic int64_t value; /* counter/gauge; histogram: count */
    _Atomic int64_t sum_us;
    _Atomic int64_t bucket[NBUCKETS];
};

static pthread_mutex_t metrics_lock = PTHREAD_MUTEX_INITIALIZER;
static struct metric *metrics_head, *metrics_tail;

static metric *metrics_get(enum metric_kind kind, const char *name, const char *labels,
                           const char *help)
{
    if (!labels) labels = "";
    pthread_mutex_lock(&metrics_lock);
    for (struct metric *m = metrics_head; m; m = m->next) {
        if (strcmp(m->name, name) == 0 && strcmp(m->labels, labels) == 0) {
            pthread_mutex_unlock(&metrics_lock);
            return m;
        }
    }
    struct metric *m = calloc(1, sizeof *m);
    if (!m || !(m->name = strdup(name)) || !(m->labels = strdup(labels)) ||
        !(m->help = strdup(help ? help : ""))) {
        fprintf(stderr, "metrics: out of memory\n");
        abort();
    }
    m->kind = kind;
    /* Keep one name's series together so HELP/TYPE are written once per family. */
    struct metric *after = NULL;
    for (struct metric *p = metrics_head; p; p = p->next)
        if (strcmp(p->name, name) == 0) after = p;
    if (after) {
        m->next = after->next;
        after->next = m;
        if (metrics_tail == after) metrics_tail = m;
    } else if (metrics_tail) {
        metrics_tail->next = m;
        metrics_tail = m;
    } else {
        metrics_head = metrics_tail = m;
    }
    pthread_mutex_unlock(&metrics_lock);
    return m;
}

metric *metrics_counter(const char *name, const char *labels, const char *help)
{
    return metrics_get(M_COUNTER, name, labels, help);
}

metric *metrics_gauge(const char *name, const char *labels, const char *help)
{
    return metrics_get(M_GAUGE, name, labels, help);
}

metric *metrics_histogram(const char *name, const char *labels, const char *help)
{
    return metrics_get(M_HISTOGRAM, name, labels, help);
}

void metric_inc(metric *m) { atomic_fetch_add_explicit(&m->value, 1, memory_order_relaxed); }

void metric_add(metric *m, int64_t v)
{
    atomic_fetch_add_explicit(&m->value, v, memory_order_relaxed);
}

void metric_set(metric *m, int64_t v) { atomic_store_explicit(&m->value, v, memory_order_relaxed); }

int64_t metric_value(const metric *m)
{
    return atomic_load_explicit(&((metric *)m)->value, memory_order_relaxed);
}

void metric_observe(metric *m, double v)
{
    for (size_t i = 0; i < NBUCKETS; i++) {
        if (v <= metric_buckets[i]) {
            atomic_fetch_add_explicit(&m->bucket[i], 1, memory_order_relaxed);
            break;
        }
    }
    atomic_fetch_add_explicit(&m->sum_us, (int64_t)(v * 1e6), memory_order_relaxed);
    atomic_fetch_add_explicit(&m->value, 1, memory_order_relaxed);
}

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

__attribute__((format(printf, 2, 3))) static void sb_printf(sbuf *b, const char *fmt, ...)
{
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t ncap = (b->cap + (size_t)n + 1) * 2;
        char *np = realloc(b->p, ncap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
}

/* name{labels,extra} with the comma only where both are present */
static void sb_series(sbuf *b, const char *name, const char *suffix, const char *labels,
                      const char *extra)
{
    int hl = labels[0] != '\0', he = extra && extra[0];
    sb_printf(b, "%s%s%s%s%s%s%s", name, suffix, (hl || he) ? "{" : "", labels,
              (hl && he) ? "," : "", he ? extra : "", (hl || he) ? "}" : "");
}

char *metrics_render(size_t *len)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};
    sbuf b = {0};
    b.cap = 4096;
    b.p = malloc(b.cap);
    if (!b.p) return NULL;
    b.p[0] = '\0';
    pthread_mutex_lock(&metrics_lock);
    const char *last = NULL;
    for (struct metric *m = metrics_head; m; m = m->next) {
        if (!last || strcmp(last, m->name) != 0) {
            sb_printf(&b, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name,
                      types[m->kind]);
            last = m->name;
        }
        int64_t v = atomic_load_explicit(&m->value, memory_order_relaxed);
        if (m->kind != M_HISTOGRAM) {
            sb_series(&b, m->name, "", m->labels, NULL);
            sb_printf(&b, " %lld\n", (long long)v);
            continue;
        }
        int64_t cum = 0;
        for (size_t i = 0; i < NBUCKETS; i++) {
            char le[32];
            cum += atomic_load_explicit(&m->bucket[i], memory_order_relaxed);
            snprintf(le, sizeof le, "le=\"%g\"", metric_buckets[i]);
            sb_series(&b, m->name, "_bucket", m->labels, le);
            sb_printf(&b, " %lld\n", (long long)cum);
        }
        sb_series(&b, m->name, "_bucket", m->labels, "le=\"+Inf\"");
        sb_printf(&b, " %lld\n", (long long)v);
        sb_series(&b, m->name, "_sum", m->labels, NULL);
        sb_printf(&b, " %.6f\n", (double)atomic_load(&m->sum_us) / 1e6);
        sb_series(&b, m->name, "_count", m->labels, NULL);
        sb_printf(&b, " %lld\n", (long long)v);
    }
    pthread_mutex_unlock(&metrics_lock);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}
