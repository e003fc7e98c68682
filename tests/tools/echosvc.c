/* echosvc - a test back-end service on real NATS, for the gateway's integration tests.
 *
 *   echosvc URL SUBJECT...
 *
 * Answers each subject in queue group "echosvc" by the last token of the subject:
 *   *.slow   sleeps 3 s before answering (gateway timeouts)
 *   *.delay  answers {"delayed":true} 1 s after the request came, without holding the
 *            subscription's thread (many requests in flight at once; at most ECHO_DELAY_MAX
 *            waiting, more are dropped)
 *   *.bad    answers bytes that are not JSON (502)
 *   *.status answers with the HTTP status given in the request body's "status"
 *   *.order  answers {"id": params.id, "user_id": "u-" + id, "total": 42}
 *   *.user   answers {"user": params.user, "name": "User " + params.user}
 *   other    echoes {"subject", "user", "request_id", "traceparent", "sub_topics" (the
 *            Sidecast-Sub-Topics header as text), "request": <data>}
 * Prints "ready" on stdout once subscribed; exits on SIGTERM/SIGINT. */
#include "bus.h"
#include "contract.h"
#include "log.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static bus *B;

#define ECHO_DELAY_MAX 100000
#define ECHO_DELAY_MS 1000

/* *.delay requests in arrival order, so the first is always the next one due */
typedef struct delayed {
    struct delayed *next;
    bus_msg *m;
    struct timespec due;
} delayed;
static pthread_mutex_t delay_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t delay_cond;
static delayed *delay_head, *delay_tail;
static int delay_n;

static void *delay_loop(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&delay_lock);
    for (;;) {
        while (!delay_head) pthread_cond_wait(&delay_cond, &delay_lock);
        delayed *d = delay_head;
        if (pthread_cond_timedwait(&delay_cond, &delay_lock, &d->due) != ETIMEDOUT) continue;
        delay_head = d->next;
        if (!delay_head) delay_tail = NULL;
        delay_n--;
        pthread_mutex_unlock(&delay_lock);
        bus_respond_json(B, d->m, 200, "{\"delayed\":true}");
        bus_msg_destroy(d->m);
        free(d);
        pthread_mutex_lock(&delay_lock);
    }
    return NULL;
}

/* Queues m to be answered ECHO_DELAY_MS from now; takes m. */
static void delay_push(bus_msg *m)
{
    delayed *d = calloc(1, sizeof *d);
    if (!d) {
        bus_msg_destroy(m);
        return;
    }
    d->m = m;
    clock_gettime(CLOCK_MONOTONIC, &d->due);
    d->due.tv_sec += ECHO_DELAY_MS / 1000;
    pthread_mutex_lock(&delay_lock);
    if (delay_n >= ECHO_DELAY_MAX) {
        pthread_mutex_unlock(&delay_lock);
        bus_msg_destroy(m);
        free(d);
        return;
    }
    if (delay_tail)
        delay_tail->next = d;
    else
        delay_head = d;
    delay_tail = d;
    delay_n++;
    pthread_cond_signal(&delay_cond);
    pthread_mutex_unlock(&delay_lock);
}

static const char *last_token(const char *subject)
{
    const char *dot = strrchr(subject, '.');
    return dot ? dot + 1 : subject;
}

static void on_request(bus_msg *m, void *ud)
{
    (void)ud;
    const char *kind = last_token(bus_msg_subject(m));
    if (strcmp(kind, "delay") == 0) {
        delay_push(m);
        return;
    }
    json_error_t jerr;
    json_t *req = json_loadb(bus_msg_data(m), bus_msg_len(m), 0, &jerr);
    json_t *params = json_object_get(req, "params");
    json_t *out = NULL;
    int status = 200;
    if (strcmp(kind, "slow") == 0) {
        sleep(3);
        out = json_pack("{s:b}", "slow", 1);
    } else if (strcmp(kind, "bad") == 0) {
        static const char junk[] = "<html>not json";
        bus_respond(B, m, junk, sizeof junk - 1, NULL, 0);
        goto done;
    } else if (strcmp(kind, "status") == 0) {
        json_t *st = json_object_get(json_object_get(req, "body"), "status");
        status = json_is_integer(st) ? (int)json_integer_value(st) : 200;
        out = json_pack("{s:i}", "status", status);
    } else if (strcmp(kind, "order") == 0) {
        const char *id = json_string_value(json_object_get(params, "id"));
        char user[128];
        snprintf(user, sizeof user, "u-%s", id ? id : "none");
        out = json_pack("{s:s,s:s,s:i}", "id", id ? id : "", "user_id", user, "total", 42);
    } else if (strcmp(kind, "user") == 0) {
        const char *u = json_string_value(json_object_get(params, "user"));
        char name[160];
        snprintf(name, sizeof name, "User %s", u ? u : "?");
        out = json_pack("{s:s,s:s}", "user", u ? u : "", "name", name);
    } else {
        const char *user = bus_msg_header(m, HDR_USER);
        const char *rid = bus_msg_header(m, HDR_REQUEST_ID);
        const char *tp = bus_msg_header(m, HDR_TRACEPARENT);
        const char *subs = bus_msg_header(m, HDR_SCOPE_SUB);
        out = json_pack("{s:s,s:s?,s:s?,s:s?,s:s?,s:O?}", "subject", bus_msg_subject(m), "user",
                        user, "request_id", rid, "traceparent", tp, "sub_topics", subs, "request",
                        req);
    }
    char *text = out ? json_dumps(out, JSON_COMPACT) : NULL;
    bus_respond_json(B, m, status, text ? text : "{}");
    free(text);
    json_decref(out);
done:
    json_decref(req);
    bus_msg_destroy(m);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: echosvc URL SUBJECT...\n");
        return 2;
    }
    log_init("echosvc", LOG_INFO);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    /* a delivery thread per subject: a slow subject must not hold up the others */
    bus_set_delivery_threads(argc - 2);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&delay_cond, &ca);
    pthread_t delay_thread;
    if (pthread_create(&delay_thread, NULL, delay_loop, NULL) != 0) return 1;
    if (bus_connect(&B, argv[1], "echosvc") != 0) return 1;
    for (int i = 0; i < 100 && !bus_connected(B); i++) usleep(50000);
    bus_sub *subs[32];
    int n = 0;
    for (int i = 2; i < argc && n < 32; i++)
        if (bus_subscribe(B, argv[i], "echosvc", on_request, NULL, &subs[n]) == 0) n++;
    bus_msg *r = NULL;
    bus_request(B, "_echosvc.flush", "", 0, NULL, 0, 200, &r); /* round trip: subs are live */
    bus_msg_destroy(r);
    printf("ready\n");
    fflush(stdout);
    int sig;
    sigwait(&set, &sig);
    for (int i = 0; i < n; i++) bus_unsubscribe(subs[i]);
    bus_destroy(B, 1000);
    return 0;
}
