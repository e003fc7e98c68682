/* keys.c - a verifier's token keys while it runs; see keys.h. */
#include "keys.h"

#include "contract.h"
#include "log.h"
#include "metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#define KEYS_REQUEST_TIMEOUT_MS 2000
#define KEYS_URL_MAX_BYTES (64 * 1024) /* a JWKS of 16 RSA-8192 keys fits */
#define KEYS_URL_TIMEOUT_MS 5000
#define KEYS_URL_DEFAULT_AGE_S 300 /* a response without Cache-Control max-age */
#define KEYS_URL_MAX_AGE_S 86400
#define KEYS_URL_RETRY_MAX_S 60

enum { SRC_FILE, SRC_URL, SRC_BUS, SRC_N };
static const char *const src_name[SRC_N] = {"file", "url", "bus"};

struct keys {
    pthread_mutex_t mu;       /* src, cur, and the fetcher's flags */
    token_keyset *src[SRC_N]; /* by source; a kid of an earlier source wins */
    token_keyset *cur;        /* their union, what verifications use */
    char *path;               /* JWT_PUBLIC_KEYS, or NULL */
    /* JWT_JWKS_URL: fetched by a thread of its own, again when the answer's Cache-Control
     * says, and at once when a token names an unknown kid (kick, rate-limited) */
    char *url, *url_ca;
    pthread_t fetcher;
    bool fetcher_running, stop, kick;
    int first_rc; /* the first fetch, made by keys_attach_url */
    long first_wait_s;
    pthread_cond_t cond; /* with mu: stop or kick */
    bus *b;
    bus_sub *sub;
    int refresh_min_ms;
    _Atomic int64_t last_refresh_ms; /* when an unknown kid last asked for keys */
    _Atomic int refs;                /* the owner's, and one per bus request in flight */
    metric *m_loaded[SRC_N], *m_refresh, *m_bad;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void keys_unref(keys *k)
{
    if (atomic_fetch_sub(&k->refs, 1) > 1) return;
    for (int i = 0; i < SRC_N; i++) token_keyset_destroy(k->src[i]);
    token_keyset_destroy(k->cur);
    pthread_cond_destroy(&k->cond);
    pthread_mutex_destroy(&k->mu);
    free(k->path);
    free(k->url);
    free(k->url_ca);
    free(k);
}

/* Replaces one source's keys (taking ks) and makes the union current. */
static int keys_set(keys *k, int src, token_keyset *ks)
{
    pthread_mutex_lock(&k->mu);
    token_keyset *sets[SRC_N];
    for (int i = 0; i < SRC_N; i++) sets[i] = i == src ? ks : k->src[i];
    token_keyset *u = NULL, *v = NULL;
    int rc = token_keyset_union(&v, sets[SRC_FILE], sets[SRC_URL]);
    if (rc == 0) rc = token_keyset_union(&u, v, sets[SRC_BUS]);
    token_keyset_destroy(v);
    if (rc == 0) {
        token_keyset_destroy(k->src[src]);
        k->src[src] = ks;
        token_keyset_destroy(k->cur); /* verifications still running hold their reference */
        k->cur = u;
    }
    size_t n = k->cur ? token_keyset_count(k->cur) : 0;
    pthread_mutex_unlock(&k->mu);
    if (rc != 0) {
        token_keyset_destroy(ks);
        return rc;
    }
    metric_inc(k->m_loaded[src]);
    log_info("token keys loaded", "source=%s keys=%zu known=%zu", src_name[src],
             token_keyset_count(ks), n);
    return 0;
}

int keys_open(keys **out, const char *path, int refresh_min_ms)
{
    *out = NULL;
    keys *k = calloc(1, sizeof *k);
    if (!k || (path && path[0] && !(k->path = strdup(path)))) {
        free(k);
        return -ENOMEM;
    }
    pthread_mutex_init(&k->mu, NULL);
    pthread_cond_init(&k->cond, NULL);
    atomic_init(&k->refs, 1);
    atomic_init(&k->last_refresh_ms, 0);
    k->refresh_min_ms = refresh_min_ms;
    for (int i = 0; i < SRC_N; i++) {
        char labels[32];
        snprintf(labels, sizeof labels, "source=\"%s\"", src_name[i]);
        k->m_loaded[i] = metrics_counter("sc_token_keys_loaded_total", labels,
                                         "token key sets taken in, by source");
    }
    k->m_refresh = metrics_counter("sc_token_keys_refreshes_total", NULL,
                                   "requests for keys after a token of an unknown kid");
    k->m_bad = metrics_counter("sc_token_keys_rejected_total", NULL,
                               "key sets refused (the file on reload, the URL's, the bus's)");
    if (k->path) {
        token_keyset *ks = NULL;
        int rc = token_keyset_load(&ks, path);
        if (rc == 0) rc = keys_set(k, SRC_FILE, ks);
        if (rc != 0) {
            keys_unref(k);
            return rc;
        }
    }
    *out = k;
    return 0;
}

/* ---- the bus ------------------------------------------------------------------------------- */

/* auth's JWKS, announced or asked for. */
static void keys_take_bus(keys *k, const char *data, size_t len)
{
    token_keyset *ks = NULL;
    if (token_keyset_parse(&ks, data, len) != 0 || keys_set(k, SRC_BUS, ks) != 0) {
        metric_inc(k->m_bad);
        log_warn("token keys from the bus refused", "bytes=%zu", len);
    }
}

static void on_announce(bus_msg *m, void *ud)
{
    keys_take_bus(ud, bus_msg_data(m), bus_msg_len(m));
    bus_msg_destroy(m);
}

static void on_jwks_reply(int result, bus_msg *reply, void *ud)
{
    keys *k = ud;
    if (result == 0 && reply)
        keys_take_bus(k, bus_msg_data(reply), bus_msg_len(reply));
    else
        log_warn("token keys not refreshed", "error=\"%s\"", sc_strerror(result));
    bus_msg_destroy(reply);
    keys_unref(k);
}

/* Asks auth for its JWKS; the answer comes to on_jwks_reply. */
static void keys_ask(keys *k)
{
    atomic_fetch_add(&k->refs, 1);
    if (bus_request_async(k->b, SUBJ_AUTH_JWKS, "", 0, KEYS_REQUEST_TIMEOUT_MS, on_jwks_reply, k) !=
        0)
        keys_unref(k);
}

int keys_attach_bus(keys *k, bus *b)
{
    k->b = b;
    int rc = bus_subscribe(b, SUBJ_AUTH_KEYS, NULL, on_announce, k, &k->sub);
    if (rc == 0) keys_ask(k); /* auth may have announced before we listened */
    return rc;
}

/* ---- the URL (JWT_JWKS_URL) ----------------------------------------------------------------- */

typedef struct fetch {
    char *body;
    size_t len;
    bool too_big;
    long max_age; /* Cache-Control max-age, -1 when absent */
} fetch;

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    fetch *f = ud;
    size_t add = size * n;
    if (f->len + add > KEYS_URL_MAX_BYTES) {
        f->too_big = true;
        return 0; /* curl stops with CURLE_WRITE_ERROR */
    }
    char *nb = realloc(f->body, f->len + add + 1);
    if (!nb) return 0;
    memcpy(nb + f->len, p, add);
    f->body = nb;
    f->len += add;
    f->body[f->len] = '\0';
    return add;
}

/* "Cache-Control: ..., max-age=N, ..." (no-store and no-cache: refetch at the floor) */
static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    fetch *f = ud;
    size_t len = size * n;
    if (len > 14 && strncasecmp(p, "cache-control:", 14) == 0) {
        char v[256];
        snprintf(v, sizeof v, "%.*s", (int)(len - 14), p + 14);
        for (char *c = v; *c; c++) *c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
        const char *m = strstr(v, "max-age=");
        if (m) f->max_age = strtol(m + 8, NULL, 10);
        if (strstr(v, "no-store") || strstr(v, "no-cache")) f->max_age = 0;
    }
    return len;
}

/* One GET of the URL. 0 with the keys taken and *age_s the time to the next fetch, or a
 * negative code (logged). */
static int url_fetch(keys *k, long *age_s)
{
    fetch f = {.max_age = -1};
    CURL *h = curl_easy_init();
    if (!h) return -ENOMEM;
    curl_easy_setopt(h, CURLOPT_URL, k->url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, 3L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)KEYS_URL_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "sidecast");
    if (k->url_ca) curl_easy_setopt(h, CURLOPT_CAINFO, k->url_ca);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &f);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &f);
    CURLcode cc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    int rc = 0;
    token_keyset *ks = NULL;
    if (cc != CURLE_OK || status != 200) {
        log_warn("token keys not fetched", "url=%s status=%ld error=\"%s\"", k->url, status,
                 f.too_big ? "larger than 64 KiB" : curl_easy_strerror(cc));
        rc = -EIO;
    } else if ((rc = token_keyset_parse(&ks, f.body, f.len)) != 0 ||
               (rc = keys_set(k, SRC_URL, ks)) != 0) {
        log_warn("token keys from the URL refused", "url=%s bytes=%zu", k->url, f.len);
    }
    if (rc != 0) metric_inc(k->m_bad);
    free(f.body);
    long floor_s = (k->refresh_min_ms + 999) / 1000;
    long age = f.max_age < 0 ? KEYS_URL_DEFAULT_AGE_S : f.max_age;
    *age_s = age < floor_s ? floor_s : age > KEYS_URL_MAX_AGE_S ? KEYS_URL_MAX_AGE_S : age;
    return rc;
}

static void curl_global_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

static void *url_fetcher(void *arg)
{
    keys *k = arg;
    long retry_s = 1, wait_s = k->first_wait_s;
    int rc = k->first_rc;
    for (;;) {
        if (rc != 0) { /* again soon, backing off, within the cache floor */
            wait_s = retry_s;
            retry_s = retry_s * 2 > KEYS_URL_RETRY_MAX_S ? KEYS_URL_RETRY_MAX_S : retry_s * 2;
        } else {
            retry_s = 1;
        }
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += wait_s;
        pthread_mutex_lock(&k->mu);
        while (!k->stop && !k->kick &&
               pthread_cond_timedwait(&k->cond, &k->mu, &until) != ETIMEDOUT) {
        }
        bool stop = k->stop;
        k->kick = false;
        pthread_mutex_unlock(&k->mu);
        if (stop) return NULL;
        rc = url_fetch(k, &wait_s);
    }
}

int keys_attach_url(keys *k, const char *url, const char *ca_file)
{
    if (strncmp(url, "https://", 8) != 0) return -EINVAL;
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, curl_global_init_once);
    if (!(k->url = strdup(url)) || (ca_file && ca_file[0] && !(k->url_ca = strdup(ca_file))))
        return -ENOMEM;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_destroy(&k->cond);
    pthread_cond_init(&k->cond, &ca);
    pthread_condattr_destroy(&ca);
    /* the first fetch now, so that the service is ready with the keys (bounded by the
     * fetch's timeout); a failure is retried by the thread */
    k->first_rc = url_fetch(k, &k->first_wait_s);
    if (pthread_create(&k->fetcher, NULL, url_fetcher, k) != 0) return -EAGAIN;
    pthread_setname_np(k->fetcher, "jwks-fetch");
    k->fetcher_running = true;
    return 0;
}

/* ---- reload, refresh, verify ---------------------------------------------------------------- */

int keys_reload(keys *k)
{
    if (!k->path) return 0;
    token_keyset *ks = NULL;
    int rc = token_keyset_load(&ks, k->path);
    if (rc == 0) rc = keys_set(k, SRC_FILE, ks);
    if (rc != 0) {
        metric_inc(k->m_bad);
        log_warn("token keys not reloaded: the old ones stay", "path=%s error=\"%s\"", k->path,
                 sc_strerror(rc));
    }
    return rc;
}

/* At most one refresh per refresh_min_ms, whichever thread meets the unknown kid first: a
 * request to auth on the bus, and a fetch of the URL. */
static void keys_refresh(keys *k)
{
    if (!k->b && !k->url) return;
    int64_t now = mono_ms(), last = atomic_load(&k->last_refresh_ms);
    if (last && now - last < k->refresh_min_ms) return;
    if (!atomic_compare_exchange_strong(&k->last_refresh_ms, &last, now)) return;
    metric_inc(k->m_refresh);
    if (k->b) keys_ask(k);
    if (k->url) {
        pthread_mutex_lock(&k->mu);
        k->kick = true;
        pthread_cond_signal(&k->cond);
        pthread_mutex_unlock(&k->mu);
    }
}

int keys_verify(keys *k, const token_policy *pol, const char *token, long now, token_claims *out)
{
    pthread_mutex_lock(&k->mu);
    token_keyset *ks = token_keyset_ref(k->cur);
    pthread_mutex_unlock(&k->mu);
    int rc = ks ? token_verify(ks, pol, token, now, out) : SC_EKID;
    token_keyset_destroy(ks);
    if (rc == SC_EKID) keys_refresh(k);
    return rc;
}

size_t keys_count(keys *k)
{
    pthread_mutex_lock(&k->mu);
    size_t n = k->cur ? token_keyset_count(k->cur) : 0;
    pthread_mutex_unlock(&k->mu);
    return n;
}

void keys_close(keys *k)
{
    if (!k) return;
    if (k->fetcher_running) {
        pthread_mutex_lock(&k->mu);
        k->stop = true;
        pthread_cond_signal(&k->cond);
        pthread_mutex_unlock(&k->mu);
        pthread_join(k->fetcher, NULL); /* a fetch in flight ends within its timeout */
    }
    if (k->sub && bus_unsubscribe(k->sub) != 0) return; /* its callback may run: keep k */
    keys_unref(k);
}
