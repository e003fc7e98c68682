/* bridge - ZeroMQ ingress: wires configuration, the route table, the ZeroMQ thread and the
 * admin port together, then waits for SIGTERM/SIGINT (docs/BRIDGE.md). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zmq.h>

#include "admin.h"
#include "bus.h"
#include "cfg.h"
#include "ingress.h"
#include "log.h"
#include "metrics.h"
#include "zmap.h"

#define SERVICE "bridge"

static struct config {
    char *nats_url, *admin_listen, *routes;
    int log_level;
    long rcvhwm, max_frame, max_message, max_buffered, drain_ms;
} cfg;

/* clang-format off */
static const cfg_opt options[] = {
    { "NATS_URL", CFG_STR, "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated",
      CFG_REQUIRED, 0, 0, &cfg.nats_url },
    BUS_CFG_OPTIONS,
    { "LOG_LEVEL", CFG_LEVEL, "info", "debug, info, warn or error", 0, 0, 0, &cfg.log_level },
    { "ADMIN_LISTEN", CFG_ADDR, "127.0.0.1:9103", "HTTP address of /healthz /readyz /metrics",
      CFG_REQUIRED, 0, 0, &cfg.admin_listen },
    { "BRIDGE_ROUTES", CFG_FILE, "",
      "route file: ZeroMQ endpoints to read and how their topics map to Sidecast topics "
      "(JSON, docs/BRIDGE.md)", CFG_REQUIRED, 0, 0, &cfg.routes },
    { "BRIDGE_RCVHWM", CFG_INT, "1000",
      "ZeroMQ receive high-water mark per endpoint (messages); beyond it a SUB socket drops",
      0, 1, 10000000, &cfg.rcvhwm },
    { "BRIDGE_MAX_FRAME", CFG_INT, "1048576",
      "largest ZeroMQ frame accepted (ZMQ_MAXMSGSIZE, bytes); ZeroMQ disconnects a peer that "
      "sends a larger one", 0, 1, 268435456, &cfg.max_frame },
    { "BRIDGE_MAX_MESSAGE", CFG_INT, "262144",
      "largest event data published (bytes, after conversion); larger messages are dropped "
      "and counted (too_large)", 0, 1, 67108864, &cfg.max_message },
    { "BRIDGE_MAX_BUFFERED", CFG_INT, "4194304",
      "bytes of events NATS may hold unsent (while disconnected); beyond, events are dropped "
      "and counted (backlog); at most nats.c's own reconnect buffer (8 MiB)", 0, 1024, 8388608,
      &cfg.max_buffered },
    { "DRAIN_TIMEOUT_MS", CFG_INT, "5000",
      "time allowed to flush published events to NATS at shutdown (ms)", 0, 0, 60000,
      &cfg.drain_ms },
};
/* clang-format on */

typedef struct state {
    bus *b;
    ingress *in;
} state;

static int ready(void *ud, char *detail, size_t detaillen)
{
    state *s = ud;
    int nats = s->b && bus_connected(s->b), zmq = ingress_ready(s->in);
    snprintf(detail, detaillen, "nats=%s zeromq=%s connected_endpoints=%zu", nats ? "up" : "down",
             zmq ? "set_up" : "not_set_up", ingress_connected(s->in));
    return nats && zmq;
}

/* Reads and checks the route file; prints the problem and returns -1 when it is bad. */
static int load_routes(const char *path, zmap **out)
{
    char err[512];
    FILE *f = fopen(path, "rb");
    char *buf = malloc(ZMAP_MAX_FILE + 1);
    size_t n = 0;
    int rc = -1;
    if (!f || !buf) {
        fprintf(stderr, SERVICE ": config: BRIDGE_ROUTES: %s: %s\n", path, strerror(errno));
        goto done;
    }
    n = fread(buf, 1, ZMAP_MAX_FILE + 1, f);
    if (ferror(f)) {
        fprintf(stderr, SERVICE ": config: BRIDGE_ROUTES: %s: read error\n", path);
        goto done;
    }
    if (zmap_parse(buf, n, out, err, sizeof err) < 0) {
        fprintf(stderr, SERVICE ": config: BRIDGE_ROUTES: %s: %s\n", path, err);
        goto done;
    }
    rc = 0;
done:
    if (f) fclose(f);
    free(buf);
    return rc;
}

int main(int argc, char **argv)
{
    sigset_t sigs;
    state st = {0};
    admin *adm = NULL;
    zmap *map = NULL;
    ingress_cfg icfg;
    int status = 1, major, minor, patch;

    if (cfg_load(SERVICE, options, CFG_COUNT(options), argc, argv) < 0) return 2;
    const char *why = bus_auth_problem(cfg.nats_url); /* no open bus */
    if (why) {
        fprintf(stderr, SERVICE ": config: %s\n", why);
        return 2;
    }
    if (cfg.max_message > cfg.max_frame) {
        fprintf(stderr,
                SERVICE ": config: BRIDGE_MAX_MESSAGE: larger than BRIDGE_MAX_FRAME (%ld):"
                        " a message that large would never arrive\n",
                cfg.max_frame);
        return 2;
    }
    if (load_routes(cfg.routes, &map) < 0) return 2;
    log_init(SERVICE, (enum log_level)cfg.log_level);
    cfg_log(options, CFG_COUNT(options));
    zmq_version(&major, &minor, &patch);

    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    bus_set_send_asap(false); /* a feed: batched writes, nobody waits for an answer */
    if (bus_connect(&st.b, cfg.nats_url, SERVICE) < 0) goto done;
    icfg = (ingress_cfg){
        .rcvhwm = cfg.rcvhwm,
        .max_frame = cfg.max_frame,
        .max_message = cfg.max_message,
        .max_buffered = cfg.max_buffered,
        .poll_ms = 200,
    };
    if (ingress_start(&st.in, map, st.b, &icfg) < 0) goto done;
    if (admin_create(&adm, cfg.admin_listen, ready, &st) < 0) goto done;
    log_info("bridge started", "admin=%s endpoints=%zu zeromq=%d.%d.%d", cfg.admin_listen, map->n,
             major, minor, patch);

    for (;;) {
        int sig = sigwaitinfo(&sigs, NULL);
        if (sig == SIGTERM || sig == SIGINT) {
            log_info("shutting down", "signal=%s", sig == SIGTERM ? "TERM" : "INT");
            break;
        }
    }
    status = 0;

done:
    admin_destroy(adm);
    ingress_stop(st.in); /* no publish after this */
    bus_destroy(st.b, (int)cfg.drain_ms);
    zmap_destroy(map);
    if (status == 0) log_info("bridge stopped", "%s", "");
    return status;
}
