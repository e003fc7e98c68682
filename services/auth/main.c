/* auth - the OAuth 2.0 token service: wires configuration, users, signer, Redis store, bus
 * handlers and the admin port together, then waits for SIGTERM/SIGINT. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#include "admin.h"
#include "bus.h"
#include "cfg.h"
#include "contract.h"
#include "grants.h"
#include "log.h"
#include "metrics.h"
#include "rds.h"
#include "service.h"
#include "signkeys.h"
#include "store.h"
#include "token.h"
#include "users.h"

#define SERVICE "auth"

static struct config {
    char *nats_url, *redis_url, *admin_listen;
    char *issuer, *audience, *private_key, *kid, *users_file, *ws_url;
    int log_level;
    long access_ttl, refresh_ttl, refresh_max, reuse_window, redis_timeout_ms, max_body, workers,
        drain_ms;
    long login_max, login_window;
} cfg;

/* clang-format off */
static const cfg_opt options[] = {
    { "NATS_URL", CFG_STR, "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated",
      CFG_REQUIRED, 0, 0, &cfg.nats_url },
    BUS_CFG_OPTIONS,
    RDS_CFG_OPTIONS,
    { "REDIS_URL", CFG_STR, "redis://127.0.0.1:6379/0",
      "Redis for refresh tokens, redis://[[user]:password@]host[:port][/db] (a password "
      "in the URL is masked when logged)", 0, 0, 0, &cfg.redis_url },
    { "REDIS_TIMEOUT_MS", CFG_INT, "500", "Redis connect and command timeout (ms)", 0, 10,
      60000, &cfg.redis_timeout_ms },
    { "LOG_LEVEL", CFG_LEVEL, "info", "debug, info, warn or error", 0, 0, 0, &cfg.log_level },
    { "ADMIN_LISTEN", CFG_ADDR, "127.0.0.1:9101", "HTTP address of /healthz /readyz /metrics",
      CFG_REQUIRED, 0, 0, &cfg.admin_listen },
    { "JWT_ISSUER", CFG_STR, "sidecast", "iss claim of access tokens", CFG_REQUIRED, 0, 0,
      &cfg.issuer },
    { "JWT_AUDIENCE", CFG_STR, "sidecast", "aud claim of access tokens", CFG_REQUIRED, 0, 0,
      &cfg.audience },
    { "JWT_PRIVATE_KEY", CFG_FILE, NULL, "PEM private key that signs access tokens (EC P-256 "
      "or RSA >= 2048)", CFG_REQUIRED, 0, 0, &cfg.private_key },
    { "JWT_KID", CFG_STR, "dev-1", "kid of the signing key", CFG_REQUIRED, 0, 0, &cfg.kid },
    { "ACCESS_TOKEN_TTL", CFG_INT, "300", "access-token lifetime (s)", 0, 10, 86400,
      &cfg.access_ttl },
    { "REFRESH_TOKEN_TTL", CFG_INT, "604800", "refresh-token lifetime (s), renewed on rotation",
      0, 60, 31536000, &cfg.refresh_ttl },
    { "REFRESH_MAX_LIFETIME_S", CFG_INT, "2592000",
      "a session (refresh-token family) ends this long after its login, however often it is "
      "refreshed; then a new login is needed (0: no limit)", 0, 0, 315360000, &cfg.refresh_max },
    { "REFRESH_REUSE_WINDOW_S", CFG_INT, "86400",
      "a used refresh token is remembered this long (s): presenting it again within the window "
      "revokes its session (reuse); later it is just unknown", 0, 60, 31536000,
      &cfg.reuse_window },
    { "AUTH_USERS", CFG_FILE, NULL, "users and clients file (docs/AUTH.md)", CFG_REQUIRED, 0, 0,
      &cfg.users_file },
    { "EDGE_PUBLIC_URL", CFG_STR, "ws://localhost:8090/ws", "ws_url handed out with tokens", 0,
      0, 0, &cfg.ws_url },
    { "AUTH_MAX_BODY", CFG_INT, "16384", "largest request accepted (bytes)", 0, 256, 1048576,
      &cfg.max_body },
    { "AUTH_LOGIN_MAX_FAILURES", CFG_INT, "10",
      "failed password or client-secret checks per name within AUTH_LOGIN_WINDOW_S before "
      "that name is refused with 429 slow_down until the window ends (0: off; needs Redis, "
      "fails open without it)", 0, 0, 100000, &cfg.login_max },
    { "AUTH_LOGIN_WINDOW_S", CFG_INT, "300",
      "the failed-login window (s), from the first failure", 0, 1, 86400, &cfg.login_window },
    { "AUTH_WORKERS", CFG_INT, "4", "parallel handlers of auth.token / auth.refresh", 0, 1, 64,
      &cfg.workers },
    { "DRAIN_TIMEOUT_MS", CFG_INT, "5000", "time allowed to finish requests at shutdown (ms)",
      0, 0, 60000, &cfg.drain_ms },
};
/* clang-format on */

struct app {
    bus *b;
    rds *r;
};

static int ready(void *ud, char *detail, size_t detaillen)
{
    struct app *a = ud;
    int nats = a->b && bus_connected(a->b);
    /* Redis down is degraded, not unready: password and client grants still work. */
    snprintf(detail, detaillen, "nats=%s redis=%s", nats ? "up" : "down",
             rds_up(a->r) ? "up" : "down");
    return nats;
}

static int fail_config(const char *name, const char *why)
{
    fprintf(stderr, SERVICE ": config: %s: %s\n", name, why);
    return 2;
}

/* Verifiers learn the signing keys from the bus (common/keys.h): the current key and the one
 * before it, when auth starts and when its key changes (SIGHUP). A verifier that misses this
 * asks auth.jwks when it meets the new kid. */
static void announce_keys(bus *b, signkeys *k)
{
    char *jwks = signkeys_jwks(k);
    int rc = jwks ? bus_publish(b, SUBJ_AUTH_KEYS, NULL, jwks, strlen(jwks), NULL, 0) : -ENOMEM;
    log_info("signing keys announced", "subject=%s kid=%s result=\"%s\"", SUBJ_AUTH_KEYS,
             token_signer_kid(signkeys_current(k)), sc_strerror(rc));
    free(jwks);
}

int main(int argc, char **argv)
{
    sigset_t sigs;
    users *u = NULL;
    signkeys *keys = NULL;
    rtstore *store = NULL;
    authsvc *svc = NULL;
    admin *adm = NULL;
    struct app app = {0};
    grant_cfg g;
    char err[512];
    int rc, status = 1;
    metric *redis_up;
    time_t last_ping = 0;

#ifndef __SANITIZE_ADDRESS__ /* LeakSanitizer attaches with ptrace, which this forbids */
    /* auth holds the signing key for its whole life: no core dump of it, and no ptrace
     * attach by another process of the same user */
    (void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
#endif
    if (cfg_load(SERVICE, options, CFG_COUNT(options), argc, argv) < 0) return 2;
    /* no open bus, no open Redis: credentials, or the development flag that says so */
    const char *why = bus_auth_problem(cfg.nats_url);
    if (!why) why = rds_auth_problem(cfg.redis_url, bus_cfg_security.dev_insecure);
    if (why) {
        fprintf(stderr, SERVICE ": config: %s\n", why);
        return 2;
    }
    log_init(SERVICE, (enum log_level)cfg.log_level);
    if (strncmp(cfg.ws_url, "ws://", 5) != 0 && strncmp(cfg.ws_url, "wss://", 6) != 0)
        return fail_config("EDGE_PUBLIC_URL", "must start with ws:// or wss://");
    {
        rds_url ru;
        if (rds_url_parse(cfg.redis_url, &ru, err, sizeof err) < 0)
            return fail_config("REDIS_URL", err);
        explicit_bzero(&ru, sizeof ru);
    }
    cfg_log(options, CFG_COUNT(options));

    /* Signals are taken by sigtimedwait below; block them before any thread starts. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    rc = users_load(&u, cfg.users_file, err, sizeof err);
    if (rc < 0) {
        log_error("users file rejected", "err=\"%s\"", err);
        return fail_config("AUTH_USERS", err);
    }
    log_info("users loaded", "file=%s entries=%zu", cfg.users_file, users_count(u));
    rc = signkeys_open(&keys, cfg.private_key, cfg.kid);
    if (rc < 0) {
        fail_config("JWT_PRIVATE_KEY", sc_strerror(rc));
        status = 2;
        goto done;
    }
    log_info("signing key loaded", "kid=%s alg=%s", token_signer_kid(signkeys_current(keys)),
             token_signer_alg(signkeys_current(keys)));

    if (rds_create(&app.r, cfg.redis_url, (int)cfg.redis_timeout_ms, SERVICE) < 0) goto done;
    if (rtstore_create(&store, app.r, cfg.refresh_ttl, cfg.reuse_window, cfg.refresh_max) < 0)
        goto done;
    redis_up = metrics_gauge("sc_redis_up", NULL, "1 when the Redis connection is up");
    metric_set(redis_up, rds_up(app.r));

    /* One delivery thread per worker subscription, so that many crypt() calls run at once,
     * plus two for auth.revoke and auth.jwks. */
    bus_set_delivery_threads((int)cfg.workers + 2);
    if (bus_connect(&app.b, cfg.nats_url, SERVICE) < 0) goto done;
    g = (grant_cfg){
        .users = u,
        .keys = keys,
        .store = store,
        .issuer = cfg.issuer,
        .audience = cfg.audience,
        .ws_url = cfg.ws_url,
        .access_ttl = cfg.access_ttl,
        .max_body = (size_t)cfg.max_body,
        .login_max = cfg.login_max,
        .login_window = cfg.login_window,
    };
    if (authsvc_start(&svc, app.b, &g, (int)cfg.workers) < 0) goto done;
    announce_keys(app.b, keys);
    if (admin_create(&adm, cfg.admin_listen, ready, &app) < 0) goto done;
    log_info("auth started", "admin=%s workers=%ld", cfg.admin_listen, cfg.workers);

    for (;;) {
        struct timespec tick = {1, 0};
        int sig = sigtimedwait(&sigs, NULL, &tick);
        time_t now = time(NULL);
        if (sig == SIGHUP && signkeys_reload(keys) == 1) announce_keys(app.b, keys);
        if (sig == SIGTERM || sig == SIGINT) {
            log_info("shutting down", "signal=%s", sig == SIGTERM ? "TERM" : "INT");
            break;
        }
        /* Redis health: reconnect when down (rds applies its backoff), and notice a dead
         * server within a few seconds even when no request touches it. */
        if (!rds_up(app.r) || now - last_ping >= 5) {
            (void)rds_ping(app.r);
            last_ping = now;
        }
        metric_set(redis_up, rds_up(app.r));
    }
    status = 0;

done:
    authsvc_stop(svc); /* no handler runs after this */
    bus_destroy(app.b, (int)cfg.drain_ms);
    admin_destroy(adm);
    rtstore_destroy(store);
    rds_destroy(app.r);
    signkeys_close(keys);
    users_destroy(u);
    if (status == 0) log_info("auth stopped", "%s", "");
    return status;
}
