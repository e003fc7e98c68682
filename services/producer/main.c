/* producer - the sample back-end microservice: wires configuration, the price ticker, the
 * orders/chat handlers and the admin port together, then waits for SIGTERM/SIGINT. */
#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin.h"
#include "bus.h"
#include "cfg.h"
#include "contract.h"
#include "log.h"
#include "metrics.h"
#include "service.h"
#include "ticks.h"

#define SERVICE "producer"

static struct config {
    char *nats_url, *admin_listen, *symbols;
    int log_level;
    long tick_ms, fill_delay_ms, max_pending, max_users, per_user, max_chat, drain_ms;
    int tick_when_watched;
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
    { "PRODUCER_TICK_WHEN_WATCHED", CFG_BOOL, "false",
      "tick a symbol only while someone subscribes to it (occupancy.prices.<SYMBOL> from the "
      "edges, which need REDIS_URL)", 0, 0, 0, &cfg.tick_when_watched },
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

/* occupancy.prices.<SYMBOL> (the edges tell when a topic gains its first or loses its last
 * subscriber): ticks of a symbol only while someone watches it. */
static void on_occupancy(bus_msg *msg, void *ud)
{
    json_t *j = json_loadb(bus_msg_data(msg), bus_msg_len(msg), 0, NULL);
    const char *topic = json_string_value(json_object_get(j, "topic"));
    json_t *occ = json_object_get(j, "occupied");
    if (topic && strncmp(topic, "prices.", 7) == 0 && json_is_boolean(occ)) {
        int i = ticks_symbol_index(topic + 7);
        ticker_set_watched(ud, i, json_is_true(occ));
        log_info("occupancy", "topic=%s occupied=%d", topic, json_is_true(occ));
    }
    json_decref(j);
    bus_msg_destroy(msg);
}

/* Subscribes to the occupancy events, then asks the edges for each symbol's state now (an
 * answer that does not come - edges without Redis, say - leaves the symbol ticking). */
static int watch_occupancy(bus *b, ticker *tk, bus_sub **sub)
{
    if (bus_subscribe(b, SUBJ_OCCUPANCY_PREFIX "prices.>", NULL, on_occupancy, tk, sub) != 0)
        return -1;
    for (int i = 0; i < TICKS_NSYMBOLS; i++) {
        char body[64];
        int n = snprintf(body, sizeof body, "{\"topic\":\"prices.%s\"}", ticks_symbol(i));
        bus_msg *rep = NULL;
        bool watched = true;
        if (bus_request(b, SUBJ_OCCUPANCY_GET, body, (size_t)n, NULL, 0, 2000, &rep) == 0) {
            json_t *j = json_loadb(bus_msg_data(rep), bus_msg_len(rep), 0, NULL);
            if (json_is_boolean(json_object_get(j, "occupied")))
                watched = json_is_true(json_object_get(j, "occupied"));
            json_decref(j);
            bus_msg_destroy(rep);
        } else {
            log_warn("occupancy unknown: ticking", "symbol=%s", ticks_symbol(i));
        }
        ticker_set_watched(tk, i, watched);
    }
    return 0;
}

int main(int argc, char **argv)
{
    sigset_t sigs;
    bus *b = NULL;
    ticker *tk = NULL;
    bus_sub *occ_sub = NULL;
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
    if (cfg.tick_when_watched && watch_occupancy(b, tk, &occ_sub) != 0) goto done;
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
    bus_unsubscribe(occ_sub); /* NULL ok: no occupancy news to a stopped ticker */
    prodsvc_stop(svc);        /* no handler, no fill after this: they read the ticker's prices */
    ticker_stop(tk);          /* no tick after this */
    admin_destroy(adm);
    bus_destroy(b, (int)cfg.drain_ms);
    if (status == 0) log_info("producer stopped", "%s", "");
    return status;
}
