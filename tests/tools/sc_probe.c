/* sc_probe.c - drives libsidecast (clients/c) for tests/integration/test_client_c.py: one
 * client, driven as an event loop (sc_client_fd / sc_client_timeout_ms / sc_client_step) or,
 * with --blocking, by sc_client_run; prints one line per thing the library reports.
 *
 *   sc_probe --url WS [--url WS2] --token-file F [--cacert F] [--sub
 * TOPIC[@SINCE|@last][+latest]]...
 *            [--events N] [--publish TOPIC JSON ID|-]... [--rpc METHOD JSON]...
 *            [--timeout S] [--blocking] [--base-ms MS]
 *
 * Lines: "state NAME CODE WHY", "token N" (the provider's Nth call), "event TOPIC SEQ DATA",
 * "sub TOPIC STATUS CODE OLDEST", "ack ID STATUS DUP CODE", "rpc STATUS CODE DATA",
 * finally "done RC". Ends when N events came and every publish and rpc was answered (with
 * --events), at the timeout, or on SIGTERM. The token file is read at every call of the provider.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../clients/c/sidecast.h"

static sc_client *client;
static const char *token_file;
static long want_events = -1, events, answers_left, token_calls;

static void maybe_done(void)
{
    if (want_events >= 0 && answers_left <= 0 && events >= want_events) sc_client_stop(client);
}

static int get_token(void *ud, sc_client *c)
{
    (void)ud;
    char buf[8200];
    FILE *f = fopen(token_file, "r");
    if (!f) return -errno;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    printf("token %ld\n", ++token_calls);
    fflush(stdout);
    if (strcmp(buf, "refuse") == 0) return -EACCES;
    return sc_client_set_token(c, buf);
}

static void on_event(void *ud, const sc_client_event *ev)
{
    (void)ud;
    printf("event %s %" PRIu64 " %.*s\n", ev->topic, ev->seq, (int)ev->data_len, ev->data);
    fflush(stdout);
    events++;
    maybe_done();
}

static void on_state(void *ud, sc_client_state s, int code, const char *why)
{
    (void)ud;
    printf("state %s %d %s\n", sc_client_state_name(s), code, why);
    fflush(stdout);
}

static void on_sub(void *ud, const char *topic, sc_client_sub_status st, const char *code,
                   const char *message, uint64_t oldest)
{
    (void)ud;
    (void)message;
    static const char *names[] = {"live", "resumed", "gap", "refused"};
    printf("sub %s %s %s %" PRIu64 "\n", topic, names[st], *code ? code : "-", oldest);
    fflush(stdout);
}

static void on_ack(void *ud, int status, const char *id, bool dup, const char *code,
                   const char *message)
{
    (void)ud;
    (void)message;
    printf("ack %s %d %d %s\n", id, status, dup, *code ? code : "-");
    fflush(stdout);
    answers_left--;
    maybe_done();
}

static void on_rpc(void *ud, int status, const char *data, size_t len, const char *code,
                   const char *message)
{
    (void)ud;
    if (status == 0)
        printf("rpc 0 - %.*s\n", (int)len, data);
    else
        printf("rpc %d %s %s\n", status, *code ? code : "-", message);
    fflush(stdout);
    answers_left--;
    maybe_done();
}

static void on_signal(int sig)
{
    (void)sig;
    sc_client_stop(client);
}

int main(int argc, char **argv)
{
    const char *urls[SC_CLIENT_MAX_URLS];
    int nurls = 0, base_ms = 0;
    const char *cafile = NULL, *subs[32], *pubs[32][3], *rpcs[32][2];
    int nsubs = 0, npubs = 0, nrpcs = 0;
    long timeout_s = 60;
    bool blocking = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool more = i + 1 < argc;
        if (!strcmp(a, "--url") && more && nurls < SC_CLIENT_MAX_URLS)
            urls[nurls++] = argv[++i];
        else if (!strcmp(a, "--token-file") && more)
            token_file = argv[++i];
        else if (!strcmp(a, "--cacert") && more)
            cafile = argv[++i];
        else if (!strcmp(a, "--sub") && more && nsubs < 32)
            subs[nsubs++] = argv[++i];
        else if (!strcmp(a, "--events") && more)
            want_events = atol(argv[++i]);
        else if (!strcmp(a, "--timeout") && more)
            timeout_s = atol(argv[++i]);
        else if (!strcmp(a, "--base-ms") && more)
            base_ms = atoi(argv[++i]);
        else if (!strcmp(a, "--blocking"))
            blocking = true;
        else if (!strcmp(a, "--publish") && i + 3 < argc && npubs < 32) {
            for (int k = 0; k < 3; k++) pubs[npubs][k] = argv[++i];
            npubs++;
        } else if (!strcmp(a, "--rpc") && i + 2 < argc && nrpcs < 32) {
            for (int k = 0; k < 2; k++) rpcs[nrpcs][k] = argv[++i];
            nrpcs++;
        } else {
            fprintf(stderr, "sc_probe: bad argument %s\n", a);
            return 2;
        }
    }
    if (!nurls || !token_file) return 2;
    sc_client_config cfg = {.urls = urls,
                            .nurls = nurls,
                            .cafile = cafile,
                            .token = get_token,
                            .on_event = on_event,
                            .on_state = on_state,
                            .on_sub = on_sub,
                            .backoff_base_ms = base_ms};
    int rc = sc_client_create(&cfg, &client);
    if (rc < 0) {
        printf("create %d\n", rc);
        return 1;
    }
    for (int i = 0; i < nsubs; i++) {
        char topic[200];
        snprintf(topic, sizeof topic, "%s", subs[i]);
        int flags = 0;
        char *plus = strstr(topic, "+latest");
        if (plus) {
            *plus = '\0';
            flags |= SC_CLIENT_SUB_LATEST;
        }
        char *at = strchr(topic, '@');
        uint64_t since = 0;
        if (at) {
            *at = '\0';
            if (strcmp(at + 1, "last") == 0)
                flags |= SC_CLIENT_SUB_FROM_LAST;
            else
                since = strtoull(at + 1, NULL, 10);
        }
        rc = sc_client_subscribe_opts(client, topic, since, flags);
        if (rc < 0) printf("subscribe %s %d\n", topic, rc);
    }
    /* queued before the connection exists: sent once it is ready */
    for (int i = 0; i < npubs; i++) {
        const char *id = strcmp(pubs[i][2], "-") ? pubs[i][2] : NULL;
        rc = sc_client_publish(client, pubs[i][0], pubs[i][1], strlen(pubs[i][1]), id, 0, on_ack,
                               NULL);
        if (rc < 0)
            printf("publish %s %d\n", pubs[i][0], rc);
        else
            answers_left++;
    }
    for (int i = 0; i < nrpcs; i++) {
        rc = sc_client_rpc(client, rpcs[i][0], rpcs[i][1], strlen(rpcs[i][1]), 0, on_rpc, NULL);
        if (rc < 0)
            printf("rpcerr %s %d\n", rpcs[i][0], rc);
        else
            answers_left++;
    }
    fflush(stdout);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (blocking) {
        alarm((unsigned)timeout_s); /* SIGALRM: the hang guard of the blocking mode */
        signal(SIGALRM, on_signal);
        rc = sc_client_run(client);
    } else {
        sc_client_start(client);
        rc = 0;
        for (;;) {
            if (sc_client_step(client) == -ESHUTDOWN) break;
            struct timespec t;
            clock_gettime(CLOCK_MONOTONIC, &t);
            if (t.tv_sec - t0.tv_sec >= timeout_s) sc_client_stop(client);
            int wait = sc_client_timeout_ms(client);
            if (wait < 0 || wait > 1000) wait = 1000;
            struct pollfd p = {.fd = sc_client_fd(client), .events = sc_client_events(client)};
            poll(&p, 1, wait);
        }
    }
    sc_client_destroy(client);
    printf("done %d\n", rc);
    return 0;
}
