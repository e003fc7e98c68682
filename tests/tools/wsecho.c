/* wsecho - an echo WebSocket server on the edge's WebSocket core (common/ws/wsc.c), for
 * the Autobahn|Testsuite fuzzing client and the core's own tests. No tokens, no
 * sidecast.v1: every text or binary message comes back as it came. permessage-deflate is
 * accepted as the edge accepts it (no context takeover both ways): a compressed message is
 * inflated by the core, and every echo is compressed when that makes it smaller.
 *
 *   wsecho HOST:PORT [WORKERS] [DEFLATE] [CERT KEY]   (DEFLATE: 1 = on, the default; 0 = off)
 *
 * With CERT and KEY (PEM files, as the edge's EDGE_TLS_CERT / EDGE_TLS_KEY) HOST:PORT is a
 * TLS listener (wss://, the core's tls_listen) instead of a plain one. Prints "ready <port>"
 * once listening; exits on SIGTERM/SIGINT. */
#include "log.h"
#include "ws/tlsctx.h"
#include "ws/ws_frame.h"
#include "ws/wsc.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static void on_message(wsc_conn *c, uint8_t opcode, uint8_t *data, size_t len)
{
    wsc_frame *f = wsc_frame_new(opcode, data, len);
    if (!f) {
        wsc_conn_close(c, WS_CLOSE_INTERNAL, "out of memory");
        return;
    }
    wsc_conn_send(c, f);
    wsc_frame_unref(f);
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc == 5 || argc > 6) {
        fprintf(stderr, "usage: wsecho HOST:PORT [WORKERS] [DEFLATE] [CERT KEY]\n");
        return 2;
    }
    log_init("wsecho", LOG_WARN);
    tlsctx *tls = NULL;
    char err[256];
    if (argc == 6 && tlsctx_create(&tls, argv[4], argv[5], err, sizeof err) != 0) {
        fprintf(stderr, "wsecho: %s\n", err);
        return 1;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    wsc_config cfg = {
        .name = "wsecho",
        .metric_prefix = "wsecho",
        .listen = tls ? NULL : argv[1],
        .tls_listen = tls ? argv[1] : NULL,
        .tls = tls,
        .tls_handshake_timeout_ms = 10000,
        .workers = argc > 2 ? atoi(argv[2]) : 1,
        .upgrade = {.path = "/",
                    .origins = NULL,
                    .norigins = 0,
                    .subprotocol = NULL,
                    .deflate = argc > 3 ? atoi(argv[3]) != 0 : true},
        .max_message = 64 * 1024 * 1024, /* Autobahn section 9 sends up to 16 MiB */
        .max_outbound = 256 * 1024 * 1024,
        .max_connections = 10000,
        .handshake_timeout_ms = 10000,
        .ping_interval_ms = 0,
        .pong_timeout_ms = 10000,
        .close_timeout_ms = 2000,
        .deflate_min = 1, /* compress every echo that gets smaller */
    };
    static const char *const any[] = {"*"};
    cfg.upgrade.origins = any;
    cfg.upgrade.norigins = 1;
    wsc_handlers h = {.message = on_message};
    wsc_server *s;
    if (wsc_server_start(&s, &cfg, &h) != 0) {
        tlsctx_destroy(tls);
        return 1;
    }
    printf("ready %d\n", tls ? wsc_server_tls_port(s) : wsc_server_port(s));
    fflush(stdout);
    int sig;
    sigwait(&set, &sig);
    wsc_server_stop(s);
    tlsctx_destroy(tls);
    return 0;
}
