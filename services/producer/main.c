/* producer - the sample back-end microservice: wires configuration, the price ticker, the
 * orders/chat handlers and the admin port together, then waits for SIGTERM/SIGINT. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin.h"
#include "bus.h"
#include "cfg.h"
#include "log.h"
#include "metrics.h"
#include "service.h"
#include "ticks.h"

#define SERVICE "producer"

static struct config {
    char *nats_url, *admin_listen, *symbols;
    int log_level;
    long tick_ms, fill_delay_ms, max_pending, max_users, per_user, max_chat, drain_ms;
} cfg;

/* clang-format off */
static const cfg_opt options[] = {
    { "NATS_URL", CFG_STR, "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated",
      CFG_REQUIRED, 0, 0, &cfg.nats_url },
    BUS_CFG_OPTIONS,
    { "LOG_LEVEL", CFG_LEVEL, "info", "debug, info, warn or error", 0, 0, 0, &cfg.log_level },
    { "ADMIN_LISTEN", CFG_ADDR, "127.0.0.1:9102", "HTTP address of /healthz /readyz /metrics",
      CFG_REQUIRED, 0, 0, &cfg.admin_listen },
    { "PRODUCER_SYMBOLS", CFG_STR, "BTC,ETH,SOL",
      "symbols that tick and can be ordered (fixed set: only BTC,ETH,SOL is accepted)", 0, 0,
      0, &cfg.symbols },
    { "PRODUCER_TICK_MS", CFG_INT, "500", "interval between two ticks of each symbol (ms)", 0,
      10, 3600000, &cfg.tick_ms },
    { "PRODUCER_FILL_DELAY_MS", CFG_INT, "1500", "time from an accepted order to its fill (ms)",
      0, 0, 3600000, &cfg.fill_delay_ms },
    { "PRODUCER_MAX_PENDING", CFG_INT, "10000",
      "orders waiting for their fill; more are refused with 503", 0, 1, 1000000,
      &cfg.max_pending },
    { "PRODUCER_MAX_USERS", CFG_INT, "10000",
      "users whose orders are kept in memory (least recently active dropped first)", 0, 1,
      1000000, &cfg.max_users },
    { "PRODUCER_ORDERS_PER_USER", CFG_INT, "100",
      "orders kept per user (oldest dropped first); GET /api/orders returns these", 0, 1,
      10000, &cfg.per_user },
    { "PRODUCER_MAX_CHAT", CFG_INT, "16384", "largest client chat message relayed (bytes)", 0,
      1, 1048576, &cfg.max_chat },
    { "DRAIN_TIMEOUT_MS", CFG_INT, "5000", "time allowed to finish requests at shutdown (ms)",
      0, 0, 60000, &cfg.drain_ms },
};
/* clang-format on */

static int ready(void *ud, char *detail, size_t detaillen)
{
    bus **b = ud;
    int nats = *b && bus_connected(*b);
    snprintf(detail, detaillen, "nats=%s", nats ? "up" : "down");
    return nats;
}

int main(int argc, char **argv)
{
    sigset_t sigs;
    bus *b = NULL;
    ticker *tk = NULL;
    prodsvc *svc = NULL;
    admin *adm = NULL;
    prod_cfg pc;
    metric *pending;
    int status = 1;

    if (cfg_load(SERVICE, options, CFG_COUNT(options), argc, argv) < 0) return 2;
    const char *why = bus_auth_problem(cfg.nats_url); /* no open bus */
    if (why) {
        fprintf(stderr, SERVICE ": config: %s\n", why);
        return 2;
    }
    log_init(SERVICE, (enum log_level)cfg.log_level);
    /* The demo contract fixes the symbols (DESIGN.md); the variable exists so that a deploy
     * that sets it learns at once that another set is not supported. */
    if (strcmp(cfg.symbols, "BTC,ETH,SOL") != 0) {
        fprintf(stderr, SERVICE ": config: PRODUCER_SYMBOLS: only BTC,ETH,SOL is supported\n");
        return 2;
    }
    cfg_log(options, CFG_COUNT(options));

    /* Signals are taken by sigtimedwait below; block them before any thread starts. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* One thread for the orders API, one for the chat relay (subscriptions are spread over
     * the pool), so a burst of chat does not delay order answers. */
    bus_set_delivery_threads(2);
    if (bus_connect(&b, cfg.nats_url, SERVICE) < 0) goto done;
    if (ticker_start(&tk, b, cfg.tick_ms) < 0) goto done;
    pc = (prod_cfg){
        .fill_delay_ms = cfg.fill_delay_ms,
        .max_pending = (size_t)cfg.max_pending,
        .max_users = (size_t)cfg.max_users,
        .per_user = (size_t)cfg.per_user,
        .max_chat = (size_t)cfg.max_chat,
    };
    if (prodsvc_start(&svc, b, tk, &pc) < 0) goto done;
    if (admin_create(&adm, cfg.admin_listen, ready, &b) < 0) goto done;
    pending = metrics_gauge("sc_producer_pending_fills", NULL, "Orders waiting for their fill.");
    log_info("producer started", "admin=%s tick_ms=%ld", cfg.admin_listen, cfg.tick_ms);

    for (;;) {
        struct timespec tick = {1, 0};
        int sig = sigtimedwait(&sigs, NULL, &tick);
        if (sig == SIGTERM || sig == SIGINT) {
            log_info("shutting down", "signal=%s", sig == SIGTERM ? "TERM" : "INT");
            break;
        }
        metric_set(pending, (int64_t)prodsvc_pending(svc));
    }
    status = 0;

done:
    ticker_stop(tk);   /* no tick after this */
    prodsvc_stop(svc); /* no handler, no fill after this */
    admin_destroy(adm);
    bus_destroy(b, (int)cfg.drain_ms);
    if (status == 0) log_info("producer stopped", "%s", "");
    return status;
}
