/* bus.c - the NATS wrapper; see bus.h. natsStatus values stop here. */
#include "bus.h"
#include "cfg.h"
#include "contract.h"
#include "log.h"
#include "metrics.h"

#include <errno.h>
#include <nats/nats.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BUS_MAX_SUBJECT 256
#define BUS_MAX_MANY 64
#define BUS_ASYNC_BUCKETS 1024
#define BUS_REAP_MS 50

/* One pending bus_request_async, in a hash by id (guarded by mux_lock). */
typedef struct bus_async {
    struct bus_async *next;
    uint64_t id;
    int64_t deadline_ms; /* CLOCK_MONOTONIC */
    bus_reply_fn fn;
    void *ud;
} bus_async;

struct bus {
    natsConnection *nc;
    natsOptions *opts;
    char name[64];
    _Atomic int connected;
    _Atomic int closing;          /* set by bus_destroy: the disconnect that follows is expected */
    _Atomic uint64_t disruptions; /* disconnects and asynchronous errors (bus_disruptions) */
    sem_t closed;                 /* posted by nats.c's closed callback, the last one it makes */
    pthread_mutex_t mux_lock;     /* guards mux, calls, next_call (bus_request_many) */
    natsSubscription *mux;
    char mux_prefix[128];
    struct bus_many *calls;
    uint64_t next_call;
    bus_async *async[BUS_ASYNC_BUCKETS];
    size_t nasync;
    pthread_t reaper; /* times out async requests; started with the first one */
    int reaper_started, reaper_stop;
    pthread_cond_t reaper_cond;
    jsCtx *js;     /* bus_publish_stored, made on first use (guarded by mux_lock) */
    bus_sub *dead; /* unsubscribed later: destroyed once finished (guarded by mux_lock) */
    void (*reconnect_fn)(void *);
    void *reconnect_ud;
    metric *m_connected, *m_reconnects, *m_errors;
};

struct bus_sub {
    natsSubscription *sub;
    bus_msg_fn fn;
    void *ud;
    sem_t done; /* posted by nats.c once the handler can no longer run */
    bus *b;
    void (*release)(void *ud); /* bus_unsubscribe_later: called then */
    _Atomic int finished;
    struct bus_sub *next_dead;
};

/* nats.c's natsMsg_Destroy does not free a message: it queues it for the library's
 * garbage-collector thread and wakes that thread when it sleeps, which under load is about
 * once per message (the gateway's public route: ~1 context switch and ~7 us of that thread's
 * CPU per request, see docs/BENCHMARKS.md). natsMsg_free, which libnats exports without
 * declaring it, frees the message on the calling thread (its headers and its one block; it
 * takes no lock). Weak: with a libnats that lacks it, messages go to the collector as
 * before. Only messages without JetStream's no-destroy flag may take this path: all the bus
 * makes or receives (it has no JetStream subscription). */
extern void natsMsg_free(void *msg) __attribute__((weak));

static void bus_free_msg(natsMsg *m)
{
    if (m && natsMsg_free)
        natsMsg_free(m);
    else
        natsMsg_Destroy(m);
}

static void bus_async_shutdown(bus *b);
static void bus_reap_dead(bus *b, int all);
static int64_t bus_mono_ms(void);

bus_security bus_cfg_security;

static pthread_mutex_t bus_lib_lock = PTHREAD_MUTEX_INITIALIZER;
static int bus_lib_users;
static int bus_delivery_threads = 1;

void bus_set_delivery_threads(int n) { bus_delivery_threads = n < 1 ? 1 : n > 64 ? 64 : n; }

static bool bus_send_asap = true;

void bus_set_send_asap(bool on) { bus_send_asap = on; }

static int bus_err_from(natsStatus s)
{
    switch (s) {
    case NATS_OK: return SC_OK;
    case NATS_NO_RESPONDERS: return SC_ENORESPONDERS;
    case NATS_TIMEOUT: return -ETIMEDOUT;
    case NATS_CONNECTION_CLOSED:
    case NATS_NOT_YET_CONNECTED:
    case NATS_CONNECTION_DISCONNECTED:
    case NATS_STALE_CONNECTION: return -ENOTCONN;
    case NATS_INVALID_ARG:
    case NATS_INVALID_SUBJECT:
    case NATS_MAX_PAYLOAD: return -EINVAL;
    case NATS_NO_MEMORY: return -ENOMEM;
    default: return -EIO;
    }
}

/* Exponential backoff with full jitter, 100 ms doubling to 5 s: a restarted NATS cluster is
 * not hit by every client at the same instant. */
static int64_t bus_reconnect_delay(natsConnection *nc, int attempts, void *closure)
{
    (void)nc;
    (void)closure;
    int shift = attempts < 6 ? attempts : 6;
    int64_t cap = 100LL << shift;
    if (cap > 5000) cap = 5000;
    return 50 + (int64_t)(((uint64_t)rand() * 2654435761u) % (uint64_t)cap);
}

static void bus_on_disconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    bus *b = closure;
    atomic_fetch_add(&b->disruptions, 1);
    atomic_store(&b->connected, 0);
    metric_set(b->m_connected, 0);
    if (!atomic_load(&b->closing)) log_warn("nats disconnected", "name=%s", b->name);
}

static void bus_on_reconnected(natsConnection *nc, void *closure)
{
    bus *b = closure;
    char raw[256] = "", url[256];
    natsConnection_GetConnectedUrl(nc, raw, sizeof raw);
    cfg_mask_url(raw, url, sizeof url); /* it carries user:password@ or token@ */
    atomic_store(&b->connected, 1);
    metric_set(b->m_connected, 1);
    metric_inc(b->m_reconnects);
    log_info("nats reconnected", "name=%s url=%s", b->name, url);
    if (b->reconnect_fn) b->reconnect_fn(b->reconnect_ud);
}

uint64_t bus_disruptions(bus *b) { return atomic_load(&b->disruptions); }

void bus_set_reconnect_hook(bus *b, void (*fn)(void *ud), void *ud)
{
    b->reconnect_ud = ud;
    b->reconnect_fn = fn;
}

static void bus_on_connected(natsConnection *nc, void *closure)
{
    bus *b = closure;
    char raw[256] = "", url[256];
    natsConnection_GetConnectedUrl(nc, raw, sizeof raw);
    cfg_mask_url(raw, url, sizeof url); /* it carries user:password@ or token@ */
    atomic_store(&b->connected, 1);
    metric_set(b->m_connected, 1);
    log_info("nats connected", "name=%s url=%s", b->name, url);
}

static void bus_on_closed(natsConnection *nc, void *closure)
{
    (void)nc;
    bus *b = closure;
    atomic_store(&b->connected, 0);
    metric_set(b->m_connected, 0);
    log_debug("nats connection closed", "name=%s", b->name);
    sem_post(&b->closed);
}

static void bus_on_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
    (void)nc;
    bus *b = closure;
    atomic_fetch_add(&b->disruptions, 1); /* a slow consumer's messages are gone */
    metric_inc(b->m_errors);
    const char *subj = sub ? natsSubscription_GetSubject(sub) : NULL;
    log_error("nats async error", "name=%s error=\"%s\" subject=%s", b->name,
              natsStatus_GetText(err), subj ? subj : "-");
}

/* One URL, or a comma-separated list (a cluster): nats.c's SetURL takes one server only. */
static natsStatus bus_set_servers(natsOptions *o, const char *urls)
{
    enum { MAX_SERVERS = 32 };
    char copy[4096];
    const char *list[MAX_SERVERS];
    int n = 0;
    if (strlen(urls) >= sizeof copy) return NATS_INVALID_ARG;
    snprintf(copy, sizeof copy, "%s", urls);
    for (char *save = NULL, *tok = strtok_r(copy, ", ", &save); tok && n < MAX_SERVERS;
         tok = strtok_r(NULL, ", ", &save))
        list[n++] = tok;
    if (n == 0) return NATS_INVALID_ARG;
    if (n == 1) return natsOptions_SetURL(o, list[0]);
    return natsOptions_SetServers(o, list, n);
}

const char *bus_auth_problem(const char *urls)
{
    const bus_security *sec = &bus_cfg_security;
    if (sec->dev_insecure) return NULL;
    if ((sec->creds_file && sec->creds_file[0]) || (sec->cert_file && sec->cert_file[0]) ||
        (sec->user && sec->user[0] && sec->password && sec->password[0]))
        return NULL;
    /* every URL of the list has user info (user:pass@ or token@) */
    int n = 0, with = 0;
    for (const char *p = urls; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > 0) {
            n++;
            if (memchr(p, '@', len)) with++;
        }
        p = end ? end + 1 : NULL;
    }
    if (n > 0 && with == n) return NULL;
    return "NATS_URL: no credentials (no user:password@ or token@ in the URL, no NATS_USER "
           "with NATS_PASSWORD, no NATS_CREDS, no NATS_TLS_CERT): refusing to start on an "
           "open bus; set DEV_INSECURE_BUS=1 to allow it in development";
}

int bus_connect(bus **out, const char *urls, const char *name)
{
    int rc = -EIO;
    natsStatus s;
    bus *b = calloc(1, sizeof *b);
    if (!b) return -ENOMEM;
    snprintf(b->name, sizeof b->name, "%s", name);
    sem_init(&b->closed, 0, 0);
    pthread_mutex_init(&b->mux_lock, NULL);
    pthread_condattr_t rca;
    pthread_condattr_init(&rca);
    pthread_condattr_setclock(&rca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->reaper_cond, &rca);
    pthread_condattr_destroy(&rca);
    b->m_connected = metrics_gauge("sc_nats_connected", NULL, "1 when connected to NATS");
    b->m_reconnects = metrics_counter("sc_nats_reconnects_total", NULL, "NATS reconnections");
    b->m_errors = metrics_counter("sc_nats_errors_total", NULL, "NATS asynchronous errors");

    pthread_mutex_lock(&bus_lib_lock);
    s = bus_lib_users == 0 ? nats_Open(-1) : NATS_OK;
    if (s == NATS_OK && bus_lib_users == 0)
        s = nats_SetMessageDeliveryPoolSize(bus_delivery_threads);
    if (s == NATS_OK) bus_lib_users++;
    pthread_mutex_unlock(&bus_lib_lock);
    if (s != NATS_OK) {
        free(b);
        return bus_err_from(s);
    }

    s = natsOptions_Create(&b->opts);
    if (s == NATS_OK) s = bus_set_servers(b->opts, urls);
    if (s == NATS_OK) s = natsOptions_SetName(b->opts, name);
    if (s == NATS_OK) s = natsOptions_SetSendAsap(b->opts, bus_send_asap);
    if (s == NATS_OK) s = natsOptions_SetMaxReconnect(b->opts, -1);
    if (s == NATS_OK) s = natsOptions_SetCustomReconnectDelay(b->opts, bus_reconnect_delay, b);
    if (s == NATS_OK) s = natsOptions_SetTimeout(b->opts, 2000);
    if (s == NATS_OK) s = natsOptions_SetPingInterval(b->opts, 20000);
    if (s == NATS_OK) s = natsOptions_SetMaxPingsOut(b->opts, 3);
    if (s == NATS_OK) s = natsOptions_SetDisconnectedCB(b->opts, bus_on_disconnected, b);
    if (s == NATS_OK) s = natsOptions_SetReconnectedCB(b->opts, bus_on_reconnected, b);
    if (s == NATS_OK) s = natsOptions_SetClosedCB(b->opts, bus_on_closed, b);
    if (s == NATS_OK) s = natsOptions_SetErrorHandler(b->opts, bus_on_error, b);
    if (s == NATS_OK) s = natsOptions_SetRetryOnFailedConnect(b->opts, true, bus_on_connected, b);
    if (s == NATS_OK) s = natsOptions_UseGlobalMessageDelivery(b->opts, true);
    const bus_security *sec = &bus_cfg_security;
    if (s == NATS_OK && sec->ca_file && sec->ca_file[0]) {
        s = natsOptions_SetSecure(b->opts, true);
        if (s == NATS_OK) s = natsOptions_LoadCATrustedCertificates(b->opts, sec->ca_file);
    }
    if (s == NATS_OK && sec->cert_file && sec->cert_file[0])
        s = natsOptions_LoadCertificatesChain(b->opts, sec->cert_file,
                                              sec->key_file ? sec->key_file : "");
    if (s == NATS_OK && sec->creds_file && sec->creds_file[0])
        s = natsOptions_SetUserCredentialsFromFiles(b->opts, sec->creds_file, NULL);
    if (s == NATS_OK && sec->user && sec->user[0])
        s = natsOptions_SetUserInfo(b->opts, sec->user, sec->password ? sec->password : "");
    /* Replies come to "_INBOX.<name>.*": a per-service prefix lets nats-server give each
     * service subscribe rights on its own replies only (tokens travel in auth's). */
    if (s == NATS_OK) {
        char pfx[80];
        snprintf(pfx, sizeof pfx, "_INBOX.%s", b->name);
        s = natsOptions_SetCustomInboxPrefix(b->opts, pfx);
    }
    if (s != NATS_OK) {
        log_error("nats options rejected", "name=%s error=\"%s\"", name, natsStatus_GetText(s));
        rc = bus_err_from(s);
        goto error;
    }
    s = natsConnection_Connect(&b->nc, b->opts);
    if (s == NATS_OK) {
        bus_on_connected(b->nc, b);
    } else if (s == NATS_NOT_YET_CONNECTED) {
        log_warn("nats not reachable yet, retrying in background", "name=%s", name);
    } else {
        log_error("nats connect failed", "name=%s error=\"%s\"", name, natsStatus_GetText(s));
        rc = bus_err_from(s);
        goto error;
    }
    *out = b;
    return 0;

error:
    if (b->nc) {
        natsConnection_Close(b->nc);
        natsConnection_Destroy(b->nc);
    }
    natsOptions_Destroy(b->opts);
    free(b); /* only reached before a connection existed: no callback can hold b */
    pthread_mutex_lock(&bus_lib_lock);
    if (--bus_lib_users == 0) nats_CloseAndWait(1000);
    pthread_mutex_unlock(&bus_lib_lock);
    return rc;
}

void bus_destroy(bus *b, int timeout_ms)
{
    if (!b) return;
    atomic_store(&b->closing, 1);
    int freeable = 1;
    if (b->nc) {
        if (atomic_load(&b->connected)) natsConnection_FlushTimeout(b->nc, timeout_ms);
        natsConnection_Close(b->nc);
        /* nats.c calls bus_on_closed on its own thread after Close returns: b must outlive
         * it. Bounded wait; if it never comes, leak b rather than free it under a callback. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 5;
        int r;
        while ((r = sem_timedwait(&b->closed, &ts)) != 0 && errno == EINTR) {
        }
        if (r != 0) {
            freeable = 0;
            log_warn("nats closed callback did not come", "name=%s", b->name);
        }
        natsConnection_Destroy(b->nc);
    }
    bus_async_shutdown(b);
    if (freeable) bus_reap_dead(b, 1); /* closed: every completion has run */
    jsCtx_Destroy(b->js);
    natsSubscription_Destroy(b->mux);
    natsOptions_Destroy(b->opts);
    if (freeable) {
        pthread_cond_destroy(&b->reaper_cond);
        sem_destroy(&b->closed);
        pthread_mutex_destroy(&b->mux_lock);
        free(b);
    }
    pthread_mutex_lock(&bus_lib_lock);
    if (--bus_lib_users == 0) nats_CloseAndWait(timeout_ms > 0 ? timeout_ms : 1000);
    pthread_mutex_unlock(&bus_lib_lock);
}

int bus_connected(bus *b) { return atomic_load(&b->connected); }

size_t bus_buffered(bus *b)
{
    int n = natsConnection_Buffered(b->nc);
    return n > 0 ? (size_t)n : 0;
}

static int bus_make_msg(natsMsg **out, const char *subject, const char *reply, const void *data,
                        size_t len, const bus_hdr *hdrs, size_t nhdr)
{
    if (!subject || !subject[0] || strlen(subject) > BUS_MAX_SUBJECT) return -EINVAL;
    if (len > 0x7fffffff) return -EINVAL;
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, subject, reply, data, (int)len);
    for (size_t i = 0; s == NATS_OK && i < nhdr; i++)
        if (hdrs[i].name && hdrs[i].value) s = natsMsgHeader_Set(m, hdrs[i].name, hdrs[i].value);
    if (s != NATS_OK) {
        bus_free_msg(m);
        return bus_err_from(s);
    }
    *out = m;
    return 0;
}

int bus_publish(bus *b, const char *subject, const char *reply, const void *data, size_t len,
                const bus_hdr *hdrs, size_t nhdr)
{
    natsMsg *m;
    int rc = bus_make_msg(&m, subject, reply, data, len, hdrs, nhdr);
    if (rc) return rc;
    natsStatus s = natsConnection_PublishMsg(b->nc, m);
    bus_free_msg(m);
    return bus_err_from(s);
}

int bus_publish_stored(bus *b, const char *subject, const void *data, size_t len,
                       const char *msg_id, int timeout_ms, uint64_t *seq)
{
    if (len > (size_t)INT32_MAX) return -EINVAL;
    pthread_mutex_lock(&b->mux_lock);
    natsStatus s = b->js ? NATS_OK : natsConnection_JetStream(&b->js, b->nc, NULL);
    jsCtx *js = b->js;
    pthread_mutex_unlock(&b->mux_lock);
    if (s != NATS_OK) return bus_err_from(s);
    int64_t deadline = bus_mono_ms() + (timeout_ms > 0 ? timeout_ms : 1);
    for (int attempt = 0;; attempt++) {
        int64_t left = deadline - bus_mono_ms();
        if (left <= 0) return -ETIMEDOUT;
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MaxWait = left < 2000 ? left : 2000;
        po.MsgId = msg_id;
        jsPubAck *ack = NULL;
        jsErrCode jerr = 0;
        s = atomic_load(&b->connected) ? js_Publish(&ack, js, subject, data, (int)len, &po, &jerr)
                                       : NATS_CONNECTION_DISCONNECTED;
        if (s == NATS_OK) {
            if (seq) *seq = ack->Sequence;
            jsPubAck_Destroy(ack);
            return 0;
        }
        if (ack) jsPubAck_Destroy(ack);
        /* a leader election (no responders, timeout) or a reconnection: try again */
        if (jerr != 0 && s != NATS_TIMEOUT && s != NATS_NO_RESPONDERS) {
            log_warn("jetstream publish refused", "subject=%s error=\"%s\" code=%d", subject,
                     natsStatus_GetText(s), (int)jerr);
            return -EIO;
        }
        if (attempt == 0)
            log_info("jetstream publish waiting for the stream", "subject=%s error=\"%s\"", subject,
                     natsStatus_GetText(s));
        struct timespec ts = {0, 200 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

int bus_request(bus *b, const char *subject, const void *data, size_t len, const bus_hdr *hdrs,
                size_t nhdr, int timeout_ms, bus_msg **reply)
{
    natsMsg *m, *r = NULL;
    *reply = NULL;
    if (!atomic_load(&b->connected)) return -ENOTCONN;
    int rc = bus_make_msg(&m, subject, NULL, data, len, hdrs, nhdr);
    if (rc) return rc;
    natsStatus s = natsConnection_RequestMsg(&r, b->nc, m, timeout_ms > 0 ? timeout_ms : 1);
    bus_free_msg(m);
    if (s != NATS_OK) return bus_err_from(s);
    *reply = (bus_msg *)r;
    return 0;
}

/* Concurrent requests share one wildcard subscription per connection ("_INBOX.<nuid>.*",
 * made on first use), as nats.c does for its own requests: no SUB/UNSUB and no dispatcher
 * thread per call. Each call is a bus_many on the caller's stack, listed in b->calls while it
 * waits; the reply subject "<prefix>.<call id>-<index>" finds it. A call leaves the list under
 * b->mux_lock before returning, so a late reply finds nothing and is dropped. */
typedef struct bus_many {
    struct bus_many *next;
    uint64_t id;
    size_t n, pending;
    bus_msg **replies;
    int *results;
    pthread_cond_t cond;
} bus_many;

/* ---- asynchronous requests ---------------------------------------------------------------- */

static int64_t bus_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Unlinks and returns the pending request id; called with mux_lock held. */
static bus_async *bus_async_take(bus *b, uint64_t id)
{
    for (bus_async **pp = &b->async[id % BUS_ASYNC_BUCKETS]; *pp; pp = &(*pp)->next) {
        if ((*pp)->id == id) {
            bus_async *a = *pp;
            *pp = a->next;
            b->nasync--;
            return a;
        }
    }
    return NULL;
}

static void bus_async_reply(bus *b, uint64_t id, natsMsg *msg)
{
    pthread_mutex_lock(&b->mux_lock);
    bus_async *a = bus_async_take(b, id);
    pthread_mutex_unlock(&b->mux_lock);
    if (!a) { /* late, after its timeout */
        bus_free_msg(msg);
        return;
    }
    if (natsMsg_IsNoResponders(msg)) {
        bus_free_msg(msg);
        a->fn(SC_ENORESPONDERS, NULL, a->ud);
    } else {
        a->fn(0, (bus_msg *)msg, a->ud);
    }
    free(a);
}

/* Moves every request due by `now` (INT64_MAX: all) to *out; called with mux_lock held. */
static void bus_async_collect(bus *b, int64_t now, bus_async **out)
{
    for (int i = 0; i < BUS_ASYNC_BUCKETS; i++) {
        for (bus_async **pp = &b->async[i]; *pp;) {
            bus_async *a = *pp;
            if (a->deadline_ms <= now) {
                *pp = a->next;
                b->nasync--;
                a->next = *out;
                *out = a;
            } else {
                pp = &a->next;
            }
        }
    }
}

static void bus_async_fail(bus_async *list, int result)
{
    while (list) {
        bus_async *next = list->next;
        list->fn(result, NULL, list->ud);
        free(list);
        list = next;
    }
}

static void *bus_reaper(void *arg)
{
    bus *b = arg;
    pthread_mutex_lock(&b->mux_lock);
    while (!b->reaper_stop) {
        bus_async *due = NULL;
        if (b->nasync) bus_async_collect(b, bus_mono_ms(), &due);
        if (due) {
            pthread_mutex_unlock(&b->mux_lock);
            bus_async_fail(due, -ETIMEDOUT);
            pthread_mutex_lock(&b->mux_lock);
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t ns = ts.tv_nsec + (int64_t)BUS_REAP_MS * 1000000;
        ts.tv_sec += ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        pthread_cond_timedwait(&b->reaper_cond, &b->mux_lock, &ts);
    }
    pthread_mutex_unlock(&b->mux_lock);
    return NULL;
}

/* bus_destroy, after the connection is closed: no reply can come any more. */
static void bus_async_shutdown(bus *b)
{
    bus_async *all = NULL;
    pthread_mutex_lock(&b->mux_lock);
    b->reaper_stop = 1;
    pthread_cond_signal(&b->reaper_cond);
    int started = b->reaper_started;
    pthread_mutex_unlock(&b->mux_lock);
    if (started) pthread_join(b->reaper, NULL);
    pthread_mutex_lock(&b->mux_lock);
    bus_async_collect(b, INT64_MAX, &all);
    pthread_mutex_unlock(&b->mux_lock);
    bus_async_fail(all, -ENOTCONN);
}

static natsStatus bus_mux_start(bus *b);

int bus_request_async(bus *b, const char *subject, const void *data, size_t len, int timeout_ms,
                      bus_reply_fn fn, void *ud)
{
    return bus_request_async_hdrs(b, subject, data, len, NULL, 0, timeout_ms, fn, ud);
}

int bus_request_async_hdrs(bus *b, const char *subject, const void *data, size_t len,
                           const bus_hdr *hdrs, size_t nhdr, int timeout_ms, bus_reply_fn fn,
                           void *ud)
{
    char reply[160];
    natsMsg *m = NULL;
    if (!atomic_load(&b->connected)) return -ENOTCONN;
    bus_async *a = calloc(1, sizeof *a);
    if (!a) return -ENOMEM;
    a->fn = fn;
    a->ud = ud;
    a->deadline_ms = bus_mono_ms() + (timeout_ms > 0 ? timeout_ms : 1);
    pthread_mutex_lock(&b->mux_lock);
    natsStatus s = b->mux ? NATS_OK : bus_mux_start(b);
    int rc = bus_err_from(s);
    if (rc == 0 && b->nasync >= BUS_MAX_ASYNC) rc = -EAGAIN;
    if (rc == 0 && !b->reaper_started && !b->reaper_stop) {
        if (pthread_create(&b->reaper, NULL, bus_reaper, b) != 0) {
            rc = -EIO;
        } else {
            pthread_setname_np(b->reaper, "bus-reaper");
            b->reaper_started = 1;
        }
    }
    if (rc == 0) {
        a->id = ++b->next_call;
        a->next = b->async[a->id % BUS_ASYNC_BUCKETS];
        b->async[a->id % BUS_ASYNC_BUCKETS] = a;
        b->nasync++;
        snprintf(reply, sizeof reply, "%s.A%llu", b->mux_prefix, (unsigned long long)a->id);
    }
    pthread_mutex_unlock(&b->mux_lock);
    if (rc != 0) {
        free(a);
        return rc;
    }
    uint64_t id = a->id; /* a may be answered and freed from here on */
    rc = bus_make_msg(&m, subject, reply, data, len, hdrs, nhdr);
    if (rc == 0) {
        rc = bus_err_from(natsConnection_PublishMsg(b->nc, m));
        bus_free_msg(m);
    }
    if (rc != 0) {
        pthread_mutex_lock(&b->mux_lock);
        bus_async *mine = bus_async_take(b, id);
        pthread_mutex_unlock(&b->mux_lock);
        if (!mine) return 0; /* already answered or timed out: fn ran, so report success */
        free(mine);
    }
    return rc;
}

static void bus_mux_on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    bus *b = closure;
    const char *last = strrchr(natsMsg_GetSubject(msg), '.');
    if (last && last[1] == 'A') {
        bus_async_reply(b, strtoull(last + 2, NULL, 10), msg);
        return;
    }
    char *dash = NULL, *end = NULL;
    uint64_t id = last ? strtoull(last + 1, &dash, 10) : 0;
    unsigned long idx = dash && *dash == '-' ? strtoul(dash + 1, &end, 10) : 0;
    if (!end || *end) {
        bus_free_msg(msg);
        return;
    }
    pthread_mutex_lock(&b->mux_lock);
    bus_many *bm = b->calls;
    while (bm && bm->id != id) bm = bm->next;
    if (bm && idx < bm->n && bm->results[idx] == -ETIMEDOUT) {
        if (natsMsg_IsNoResponders(msg)) {
            bm->results[idx] = SC_ENORESPONDERS;
        } else {
            bm->results[idx] = 0;
            bm->replies[idx] = (bus_msg *)msg;
            msg = NULL;
        }
        if (--bm->pending == 0) pthread_cond_signal(&bm->cond);
    }
    pthread_mutex_unlock(&b->mux_lock);
    bus_free_msg(msg);
}

int bus_new_inbox(bus *b, char *buf, size_t len)
{
    natsInbox *inbox = NULL;
    if (natsInbox_Create(&inbox) != NATS_OK) return -ENOMEM;
    const char *nuid = strrchr((const char *)inbox, '.');
    int n = snprintf(buf, len, "_INBOX.%s.%s", b->name, nuid ? nuid + 1 : (const char *)inbox);
    natsInbox_Destroy(inbox);
    return n < 0 || (size_t)n >= len ? -EINVAL : 0;
}

/* Makes the shared reply subscription; called with b->mux_lock held. */
static natsStatus bus_mux_start(bus *b)
{
    natsInbox *inbox = NULL;
    char wildcard[160];
    natsStatus s = natsInbox_Create(&inbox);
    if (s != NATS_OK) return s;
    /* "_INBOX.<nuid>" from nats.c, under this connection's own prefix (bus_connect) */
    const char *nuid = strrchr((const char *)inbox, '.');
    snprintf(b->mux_prefix, sizeof b->mux_prefix, "_INBOX.%s.%s", b->name,
             nuid ? nuid + 1 : (const char *)inbox);
    natsInbox_Destroy(inbox);
    snprintf(wildcard, sizeof wildcard, "%s.*", b->mux_prefix);
    s = natsConnection_Subscribe(&b->mux, b->nc, wildcard, bus_mux_on_msg, b);
    if (s == NATS_OK) natsSubscription_SetPendingLimits(b->mux, -1, 64 * 1024 * 1024);
    return s;
}

int bus_request_many(bus *b, const bus_req *reqs, size_t n, int timeout_ms, bus_msg **replies,
                     int *results)
{
    char reply[160];
    natsStatus s = NATS_OK;
    bus_many bm = {.n = n, .replies = replies, .results = results};
    if (n == 0 || n > BUS_MAX_MANY) return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        replies[i] = NULL;
        results[i] = -ETIMEDOUT;
    }
    if (!atomic_load(&b->connected)) {
        for (size_t i = 0; i < n; i++) results[i] = -ENOTCONN;
        return 0;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&bm.cond, &ca);
    pthread_condattr_destroy(&ca);

    pthread_mutex_lock(&b->mux_lock);
    if (!b->mux) s = bus_mux_start(b);
    if (s != NATS_OK) {
        pthread_mutex_unlock(&b->mux_lock);
        pthread_cond_destroy(&bm.cond);
        return bus_err_from(s);
    }
    bm.id = ++b->next_call;
    bm.next = b->calls;
    b->calls = &bm;
    for (size_t i = 0; i < n; i++) {
        natsMsg *m;
        snprintf(reply, sizeof reply, "%s.%llu-%zu", b->mux_prefix, (unsigned long long)bm.id, i);
        int r = bus_make_msg(&m, reqs[i].subject, reply, reqs[i].data, reqs[i].len, reqs[i].hdrs,
                             reqs[i].nhdr);
        if (r == 0) {
            r = bus_err_from(natsConnection_PublishMsg(b->nc, m));
            bus_free_msg(m);
        }
        if (r != 0)
            results[i] = r;
        else
            bm.pending++;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t ns = ts.tv_nsec + (int64_t)(timeout_ms > 0 ? timeout_ms : 1) * 1000000;
    ts.tv_sec += ns / 1000000000;
    ts.tv_nsec = ns % 1000000000;
    while (bm.pending > 0)
        if (pthread_cond_timedwait(&bm.cond, &b->mux_lock, &ts) == ETIMEDOUT) break;
    for (bus_many **pp = &b->calls; *pp; pp = &(*pp)->next) {
        if (*pp == &bm) {
            *pp = bm.next;
            break;
        }
    }
    pthread_mutex_unlock(&b->mux_lock);
    pthread_cond_destroy(&bm.cond);
    return 0;
}

static void bus_on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    bus_sub *bs = closure;
    bs->fn((bus_msg *)msg, bs->ud);
}

static void bus_sub_complete(void *closure)
{
    bus_sub *bs = closure;
    if (bs->release) bs->release(bs->ud);
    atomic_store(&bs->finished, 1);
    sem_post(&bs->done);
}

/* Destroys the unsubscribed-later subscriptions whose handler can no longer run (all of
 * them when all: the connection is closed). Called with mux_lock held. */
static void bus_reap_dead(bus *b, int all)
{
    for (bus_sub **pp = &b->dead; *pp;) {
        bus_sub *s = *pp;
        if (all || atomic_load(&s->finished)) {
            *pp = s->next_dead;
            natsSubscription_Destroy(s->sub);
            sem_destroy(&s->done);
            free(s);
        } else {
            pp = &s->next_dead;
        }
    }
}

int bus_unsubscribe_later(bus_sub *s, void (*release)(void *ud))
{
    if (!s) return 0;
    bus *b = s->b;
    s->release = release; /* before the unsubscribe: its lock publishes the store */
    if (natsSubscription_Unsubscribe(s->sub) != NATS_OK) {
        log_warn("nats unsubscribe failed; subscription kept", "subject=%s",
                 natsSubscription_GetSubject(s->sub) ? natsSubscription_GetSubject(s->sub) : "-");
        return -EIO;
    }
    pthread_mutex_lock(&b->mux_lock);
    bus_reap_dead(b, 0);
    s->next_dead = b->dead;
    b->dead = s;
    pthread_mutex_unlock(&b->mux_lock);
    return 0;
}

int bus_subscribe(bus *b, const char *subject, const char *queue, bus_msg_fn fn, void *ud,
                  bus_sub **out)
{
    bus_sub *bs = calloc(1, sizeof *bs);
    if (!bs) return -ENOMEM;
    bs->fn = fn;
    bs->ud = ud;
    bs->b = b;
    natsStatus s = queue && queue[0]
                       ? natsConnection_QueueSubscribe(&bs->sub, b->nc, subject, queue, bus_on_msg,
                                                       bs)
                       : natsConnection_Subscribe(&bs->sub, b->nc, subject, bus_on_msg, bs);
    sem_init(&bs->done, 0, 0);
    if (s == NATS_OK) s = natsSubscription_SetOnCompleteCB(bs->sub, bus_sub_complete, bs);
    if (s != NATS_OK) {
        log_error("nats subscribe failed", "subject=%s error=\"%s\"", subject,
                  natsStatus_GetText(s));
        if (bs->sub) natsSubscription_Unsubscribe(bs->sub);
        natsSubscription_Destroy(bs->sub);
        sem_destroy(&bs->done);
        free(bs);
        return bus_err_from(s);
    }
    *out = bs;
    return 0;
}

int bus_unsubscribe(bus_sub *s)
{
    if (!s) return 0;
    /* Wait (bounded) until the handler can no longer run before the caller frees its ud. */
    int done = 0;
    if (natsSubscription_Unsubscribe(s->sub) == NATS_OK) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 5;
        int r;
        while ((r = sem_timedwait(&s->done, &ts)) != 0 && errno == EINTR) {
        }
        done = r == 0;
    }
    if (!done) {
        /* The handler may still run: keep what it uses (a bounded leak, logged) rather than
         * free it under the callback. */
        log_warn("nats subscription did not complete", "subject=%s",
                 natsSubscription_GetSubject(s->sub) ? natsSubscription_GetSubject(s->sub) : "-");
        return -ETIMEDOUT;
    }
    natsSubscription_Destroy(s->sub);
    sem_destroy(&s->done);
    free(s);
    return 0;
}

int bus_flush(bus *b, int timeout_ms)
{
    if (!atomic_load(&b->connected)) return -ENOTCONN;
    return bus_err_from(natsConnection_FlushTimeout(b->nc, timeout_ms));
}

int bus_respond(bus *b, const bus_msg *msg, const void *data, size_t len, const bus_hdr *hdrs,
                size_t nhdr)
{
    const char *reply = natsMsg_GetReply((natsMsg *)msg);
    if (!reply || !reply[0]) return -EINVAL;
    return bus_publish(b, reply, NULL, data, len, hdrs, nhdr);
}

int bus_respond_json(bus *b, const bus_msg *msg, int status, const char *json)
{
    char code[16];
    bus_hdr h = {HDR_STATUS, code};
    snprintf(code, sizeof code, "%d", status);
    return bus_respond(b, msg, json, strlen(json), &h, status ? 1 : 0);
}

const char *bus_msg_subject(const bus_msg *m) { return natsMsg_GetSubject((natsMsg *)m); }
const char *bus_msg_reply(const bus_msg *m) { return natsMsg_GetReply((natsMsg *)m); }
const char *bus_msg_data(const bus_msg *m)
{
    const char *d = natsMsg_GetData((natsMsg *)m);
    return d ? d : "";
}
size_t bus_msg_len(const bus_msg *m)
{
    int n = natsMsg_GetDataLength((natsMsg *)m);
    return n > 0 ? (size_t)n : 0;
}

const char *bus_msg_header(const bus_msg *m, const char *name)
{
    const char *v = NULL;
    if (natsMsgHeader_Get((natsMsg *)m, name, &v) != NATS_OK) return NULL;
    return v;
}

void bus_msg_destroy(bus_msg *m) { bus_free_msg((natsMsg *)m); }

int bus_stream_ensure(bus *b, const bus_stream_cfg *cfg)
{
    jsCtx *js = NULL;
    jsStreamInfo *si = NULL;
    jsStreamConfig sc;
    jsRePublish rp;
    jsErrCode jerr = 0;
    if (!cfg->name || !cfg->nsubjects || cfg->nsubjects > 32) return -EINVAL;
    natsStatus s = natsConnection_JetStream(&js, b->nc, NULL);
    if (s != NATS_OK) return bus_err_from(s);
    jsStreamConfig_Init(&sc);
    sc.Name = cfg->name;
    sc.Subjects = (const char **)cfg->subjects;
    sc.SubjectsLen = (int)cfg->nsubjects;
    sc.MaxAge = cfg->max_age_s > 0 ? cfg->max_age_s * 1000000000LL : 0;
    if (cfg->duplicate_window_s > 0) sc.Duplicates = cfg->duplicate_window_s * 1000000000LL;
    sc.MaxBytes = cfg->max_bytes > 0 ? cfg->max_bytes : -1;
    sc.MaxMsgs = cfg->max_msgs > 0 ? cfg->max_msgs : -1;
    sc.MaxMsgsPerSubject = cfg->max_msgs_per_subject > 0 ? cfg->max_msgs_per_subject : -1;
    sc.Storage = cfg->file_storage ? js_FileStorage : js_MemoryStorage;
    sc.Replicas = cfg->replicas > 0 ? cfg->replicas : 1;
    sc.Discard = js_DiscardOld;
    sc.AllowDirect = true;
    char dest[128];
    if (cfg->republish_to && cfg->republish_to[0]) {
        snprintf(dest, sizeof dest, "%s.>", cfg->republish_to);
        jsRePublish_Init(&rp);
        rp.Source = ">";
        rp.Destination = dest;
        sc.RePublish = &rp;
    }
    s = js_AddStream(&si, js, &sc, NULL, &jerr);
    if (s != NATS_OK && jerr == JSStreamNameExistErr)
        s = js_UpdateStream(&si, js, &sc, NULL, &jerr);
    if (s != NATS_OK)
        log_error("jetstream stream not ensured", "stream=%s error=\"%s\" code=%d", cfg->name,
                  nats_GetLastError(NULL), (int)jerr);
    else
        log_info("jetstream stream ready",
                 "stream=%s subjects=%zu max_age_s=%lld max_bytes=%lld per_subject=%lld "
                 "republish=%s",
                 cfg->name, cfg->nsubjects, (long long)cfg->max_age_s, (long long)sc.MaxBytes,
                 (long long)sc.MaxMsgsPerSubject, cfg->republish_to ? cfg->republish_to : "-");
    jsStreamInfo_Destroy(si);
    jsCtx_Destroy(js);
    return bus_err_from(s);
}

void bus_get_stats(bus *b, bus_stats *st)
{
    memset(st, 0, sizeof *st);
    natsStatistics *ns = NULL;
    if (natsStatistics_Create(&ns) != NATS_OK) return;
    if (natsConnection_GetStats(b->nc, ns) == NATS_OK)
        natsStatistics_GetCounts(ns, &st->in_msgs, &st->in_bytes, &st->out_msgs, &st->out_bytes,
                                 &st->reconnects);
    natsStatistics_Destroy(ns);
}
