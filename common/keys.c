/* keys.c - a verifier's token keys while it runs; see keys.h. */
#include "keys.h"

#include "contract.h"
#include "log.h"
#include "metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define KEYS_REQUEST_TIMEOUT_MS 2000

struct keys {
    pthread_mutex_t mu;             /* the three sets below */
    token_keyset *file, *bus, *cur; /* cur: their union, what verifications use */
    char *path;
    bus *b;
    bus_sub *sub;
    int refresh_min_ms;
    _Atomic int64_t last_refresh_ms; /* when an unknown kid last asked auth */
    _Atomic int refs;                /* the owner's, and one per refresh in flight */
    metric *m_file, *m_bus, *m_refresh, *m_bad;
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
    token_keyset_destroy(k->file);
    token_keyset_destroy(k->bus);
    token_keyset_destroy(k->cur);
    pthread_mutex_destroy(&k->mu);
    free(k->path);
    free(k);
}

/* Replaces the file's or the bus's keys (taking ks) and makes the union current. */
static int keys_set(keys *k, bool from_file, token_keyset *ks)
{
    pthread_mutex_lock(&k->mu);
    token_keyset *u = NULL;
    int rc = token_keyset_union(&u, from_file ? ks : k->file, from_file ? k->bus : ks);
    if (rc == 0) {
        token_keyset **slot = from_file ? &k->file : &k->bus;
        token_keyset_destroy(*slot);
        *slot = ks;
        token_keyset_destroy(k->cur); /* verifications still running hold their reference */
        k->cur = u;
    }
    size_t n = k->cur ? token_keyset_count(k->cur) : 0;
    pthread_mutex_unlock(&k->mu);
    if (rc != 0) {
        token_keyset_destroy(ks);
        return rc;
    }
    metric_inc(from_file ? k->m_file : k->m_bus);
    log_info("token keys loaded", "source=%s keys=%zu known=%zu", from_file ? "file" : "bus",
             token_keyset_count(ks), n);
    return 0;
}

int keys_open(keys **out, const char *path, int refresh_min_ms)
{
    *out = NULL;
    keys *k = calloc(1, sizeof *k);
    if (!k || !(k->path = strdup(path))) {
        free(k);
        return -ENOMEM;
    }
    pthread_mutex_init(&k->mu, NULL);
    atomic_init(&k->refs, 1);
    atomic_init(&k->last_refresh_ms, 0);
    k->refresh_min_ms = refresh_min_ms;
    k->m_file = metrics_counter("sc_token_keys_loaded_total", "source=\"file\"",
                                "token key sets taken in, by source");
    k->m_bus = metrics_counter("sc_token_keys_loaded_total", "source=\"bus\"",
                               "token key sets taken in, by source");
    k->m_refresh = metrics_counter("sc_token_keys_refreshes_total", NULL,
                                   "requests for auth's keys after a token of an unknown kid");
    k->m_bad = metrics_counter("sc_token_keys_rejected_total", NULL,
                               "key sets refused (file on reload, or from the bus)");
    token_keyset *ks = NULL;
    int rc = token_keyset_load(&ks, path);
    if (rc == 0) rc = keys_set(k, true, ks);
    if (rc != 0) {
        keys_unref(k);
        return rc;
    }
    *out = k;
    return 0;
}

/* auth's JWKS, announced or asked for. */
static void keys_take_bus(keys *k, const char *data, size_t len)
{
    token_keyset *ks = NULL;
    if (token_keyset_parse(&ks, data, len) != 0 || keys_set(k, false, ks) != 0) {
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

int keys_reload(keys *k)
{
    token_keyset *ks = NULL;
    int rc = token_keyset_load(&ks, k->path);
    if (rc == 0) rc = keys_set(k, true, ks);
    if (rc != 0) {
        metric_inc(k->m_bad);
        log_warn("token keys not reloaded: the old ones stay", "path=%s error=\"%s\"", k->path,
                 sc_strerror(rc));
    }
    return rc;
}

/* At most one request per refresh_min_ms, whichever thread meets the unknown kid first. */
static void keys_refresh(keys *k)
{
    if (!k->b) return;
    int64_t now = mono_ms(), last = atomic_load(&k->last_refresh_ms);
    if (last && now - last < k->refresh_min_ms) return;
    if (!atomic_compare_exchange_strong(&k->last_refresh_ms, &last, now)) return;
    metric_inc(k->m_refresh);
    keys_ask(k);
}

int keys_verify(keys *k, const token_policy *pol, const char *token, long now, token_claims *out)
{
    pthread_mutex_lock(&k->mu);
    token_keyset *ks = token_keyset_ref(k->cur);
    pthread_mutex_unlock(&k->mu);
    int rc = token_verify(ks, pol, token, now, out);
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
    if (k->sub && bus_unsubscribe(k->sub) != 0) return; /* its callback may run: keep k */
    keys_unref(k);
}
