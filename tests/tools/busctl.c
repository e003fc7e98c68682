/* busctl - a small NATS command-line tool for tests, built on common/bus.
 *
 *   busctl URL req SUBJECT [DATA] [TIMEOUT_MS] [Header=Value ...]
 *       prints "status=<ok|no responders|timeout>", then "hdr <Name>: <value>" for the
 *       Sidecast-Status header, then the reply body on the last line. Exit 0 on a reply.
 *   busctl URL pub SUBJECT DATA [Header=Value ...]
 *   busctl URL sub SUBJECT SECONDS [MAX]
 *       prints "ready" once subscribed, then each message as "<subject> <data>" until
 *       SECONDS pass or MAX messages arrived.
 * BUSCTL_NAME in the environment: the connection's name (and inbox prefix), default busctl. */
#include "bus.h"
#include "cfg.h"
#include "contract.h"
#include "log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_HDRS 8

static int parse_hdrs(int argc, char **argv, int from, bus_hdr *h, char copies[][512])
{
    int n = 0;
    for (int i = from; i < argc && n < MAX_HDRS; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq) continue;
        snprintf(copies[n], 512, "%s", argv[i]);
        copies[n][eq - argv[i]] = '\0';
        h[n].name = copies[n];
        h[n].value = copies[n] + (eq - argv[i]) + 1;
        n++;
    }
    return n;
}

static _Atomic int sub_count;
static void on_msg(bus_msg *m, void *ud)
{
    (void)ud;
    printf("%s %.*s\n", bus_msg_subject(m), (int)bus_msg_len(m), bus_msg_data(m));
    fflush(stdout);
    atomic_fetch_add(&sub_count, 1);
    bus_msg_destroy(m);
}

static int wait_connected(bus *b)
{
    for (int i = 0; i < 100 && !bus_connected(b); i++) usleep(50000);
    return bus_connected(b);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: busctl URL req|pub|sub SUBJECT ...\n");
        return 2;
    }
    log_init("busctl", LOG_WARN);
    bus *b;
    /* BUSCTL_NAME: connect under a service's name, so that its replies come to that
     * service's inbox prefix (_INBOX.<name>.) and a test can act as the service does */
    const char *name = getenv("BUSCTL_NAME");
    if (bus_connect(&b, argv[1], name && name[0] ? name : "busctl") != 0 || !wait_connected(b)) {
        char masked[512];
        cfg_mask_url(argv[1], masked, sizeof masked);
        fprintf(stderr, "busctl: cannot connect to %s\n", masked);
        return 1;
    }
    int rc = 0;
    bus_hdr h[MAX_HDRS];
    char copies[MAX_HDRS][512];
    if (strcmp(argv[2], "req") == 0) {
        const char *data = argc > 4 ? argv[4] : "";
        int timeout = argc > 5 ? atoi(argv[5]) : 2000;
        int nh = parse_hdrs(argc, argv, 6, h, copies);
        bus_msg *r = NULL;
        int e = bus_request(b, argv[3], data, strlen(data), h, (size_t)nh, timeout, &r);
        printf("status=%s\n", sc_strerror(e));
        if (r) {
            static const char *const names[] = {HDR_STATUS, HDR_HTTP_HEADER, HDR_REQUEST_ID};
            for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
                const char *v = bus_msg_header(r, names[i]);
                if (v) printf("hdr %s: %s\n", names[i], v);
            }
            printf("%.*s\n", (int)bus_msg_len(r), bus_msg_data(r));
            bus_msg_destroy(r);
        }
        rc = e == 0 ? 0 : 1;
    } else if (strcmp(argv[2], "pub") == 0 && argc >= 5) {
        int nh = parse_hdrs(argc, argv, 5, h, copies);
        rc = bus_publish(b, argv[3], NULL, argv[4], strlen(argv[4]), h, (size_t)nh) == 0 ? 0 : 1;
    } else if (strcmp(argv[2], "sub") == 0 && argc >= 5) {
        double secs = atof(argv[4]);
        int max = argc > 5 ? atoi(argv[5]) : 0;
        bus_sub *s;
        if (bus_subscribe(b, argv[3], NULL, on_msg, NULL, &s) != 0) {
            rc = 1;
        } else {
            bus_publish(b, "_busctl.ping", NULL, "", 0, NULL, 0); /* round trip: sub is live */
            bus_msg *r = NULL;
            bus_request(b, "_busctl.none", "", 0, NULL, 0, 200, &r);
            bus_msg_destroy(r);
            printf("ready\n");
            fflush(stdout);
            for (int i = 0; i < (int)(secs * 20) && (!max || atomic_load(&sub_count) < max); i++)
                usleep(50000);
            bus_unsubscribe(s);
        }
    } else {
        fprintf(stderr, "busctl: unknown command %s\n", argv[2]);
        rc = 2;
    }
    bus_destroy(b, 1000);
    return rc;
}
