/* metrics.h - a small Prometheus registry: counters, gauges, histograms.
 *
 * Metrics are created once (at start or on first use) and never freed before exit; updates
 * are lock-free atomics, safe from any thread. A metric name may carry a fixed label set,
 * e.g. metrics_counter("sc_http_requests_total", "route=\"/api/orders\",code=\"200\"", help):
 * the same name+labels returns the same metric. */
#ifndef SC_METRICS_H
#define SC_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef struct metric metric;

/* labels may be NULL or "". help is used the first time a name is seen. Never returns NULL
 * (aborts on allocation failure at start-up, which is a programming error). */
metric *metrics_counter(const char *name, const char *labels, const char *help);
metric *metrics_gauge(const char *name, const char *labels, const char *help);
/* Histogram with the default latency buckets in seconds (0.0005 .. 10). */
metric *metrics_histogram(const char *name, const char *labels, const char *help);

void metric_inc(metric *m);
void metric_add(metric *m, int64_t v);
void metric_set(metric *m, int64_t v);    /* gauges */
void metric_observe(metric *m, double v); /* histograms, in seconds */
int64_t metric_value(const metric *m);

/* Renders the whole registry in Prometheus text format 0.0.4. Returns a malloc'd string
 * (caller frees) and its length in *len, or NULL on allocation failure. */
char *metrics_render(size_t *len);

#endif
