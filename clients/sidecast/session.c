/* session.c - token context, signals and the edge connection the commands share. */
#include "cli.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "gw.h"
#include "net.h"

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

void cli_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

bool cli_stopping(void) { return stop_flag != 0; }

void cli_sleep_ms(int64_t ms)
{
    if (ms <= 0) return;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    nanosleep(&ts, NULL); /* a signal ends it early, as wanted */
}

int64_t cli_random_upto(int64_t n)
{
    uint64_t r;
    if (n <= 0) return 0;
    if (net_random(&r, sizeof r) < 0) r = (uint64_t)net_now_ms() * 2654435761u;
    return (int64_t)(r % (uint64_t)(n + 1));
}

int cli_load(cli_ctx *c)
{
    int rc = tok_load(c->token_path, &c->tok);
    if (rc == -ENOENT) {
        fprintf(stderr, "sidecast: not logged in (no token file %s): run `sidecast login USER`\n",
                c->token_path);
        return CLI_EXIT_AUTH;
    }
    if (rc < 0) {
        fprintf(stderr, "sidecast: cannot read token file %s: %s\n", c->token_path,
                rc == -EINVAL ? "not a sidecast token file" : strerror(-rc));
        return CLI_EXIT_AUTH;
    }
    if (!c->edge_url || !*c->edge_url) c->edge_url = c->tok.ws_url;
    if (strchr(c->edge_url, ',')) { /* several edges: one at a time, the next after a drop */
        char list[4096];
        snprintf(list, sizeof list, "%s", c->edge_url);
        c->nedges = 0;
        for (char *save = NULL, *u = strtok_r(list, ", ", &save); u && c->nedges < 8;
             u = strtok_r(NULL, ", ", &save))
            snprintf(c->edges[c->nedges++], sizeof c->edges[0], "%s", u);
        c->edge_at = 0;
        if (c->nedges > 0) c->edge_url = c->edges[0];
    }
    return 0;
}

void cli_next_edge(cli_ctx *c)
{
    if (c->nedges < 2) return;
    c->edge_at = (c->edge_at + 1) % c->nedges;
    c->edge_url = c->edges[c->edge_at];
}

int64_t cli_refresh_due(const tok_set *t)
{
    int64_t life = t->expires_at - t->issued_at, margin = 30;
    if (t->issued_at > 0 && life < 90) margin = life / 3;
    return t->expires_at - margin;
}

int cli_refresh(cli_ctx *c, bool verbose)
{
    char err[256];
    tok_set n = c->tok;
    int rc = gw_refresh(&n, &c->tls, err, sizeof err);
    if (rc == SC_OK) {
        c->tok = n;
        tok_clear(&n);
        int src = tok_save(c->token_path, &c->tok);
        if (src < 0)
            fprintf(stderr, "sidecast: warning: cannot save the refreshed tokens to %s: %s\n",
                    c->token_path, strerror(-src));
        return 0;
    }
    tok_clear(&n);
    if (rc == -EACCES) {
        fprintf(stderr, "sidecast: session expired or revoked (%s): run `sidecast login %s`\n", err,
                c->tok.user[0] ? c->tok.user : "USER");
        return CLI_EXIT_AUTH;
    }
    if (rc == NET_ETLS_VERIFY || rc == NET_ETLS) {
        fprintf(stderr, "sidecast: token refresh failed: %s\n", err);
        return CLI_EXIT_TLS;
    }
    if (verbose) fprintf(stderr, "sidecast: token refresh failed: %s\n", err);
    return rc == -EHOSTUNREACH ? CLI_EXIT_UNREACH : CLI_EXIT_FAIL;
}

int cli_ensure_fresh(cli_ctx *c)
{
    int64_t now = net_wall_s();
    if (now < cli_refresh_due(&c->tok)) return 0;
    int rc = cli_refresh(c, now >= c->tok.expires_at);
    if (rc == CLI_EXIT_AUTH || rc == CLI_EXIT_TLS) return rc;
    if (rc != 0 && now >= c->tok.expires_at) return rc;
    return 0;
}

int cli_connect(cli_ctx *c, int timeout_ms, wsconn **ws, uint16_t *close_code, char *err,
                size_t errlen)
{
    int64_t deadline = net_now_ms() + timeout_ms;
    int status = 0;
    *ws = NULL;
    *close_code = 1006;
    int rc = wsconn_open(c->edge_url, c->tok.access_token, timeout_ms, &c->tls, ws, &status);
    if (rc < 0) {
        if (rc == NET_ETLS_VERIFY || rc == NET_ETLS) {
            snprintf(err, errlen, "edge %s: %s", c->edge_url, c->tls.error);
            *close_code = CLI_CLOSE_TLS;
        } else if (rc == -EPROTO && status)
            snprintf(err, errlen, "edge %s refused the WebSocket handshake (HTTP %d)", c->edge_url,
                     status);
        else if (rc == -EPROTO)
            snprintf(err, errlen, "edge %s did not answer as a WebSocket server", c->edge_url);
        else if (rc == -EINVAL)
            snprintf(err, errlen, "bad edge URL %s", c->edge_url);
        else
            snprintf(err, errlen, "edge %s unreachable: %s", c->edge_url,
                     rc == -ETIMEDOUT      ? "timed out"
                     : rc == -EINTR        ? "interrupted"
                     : rc == -EHOSTUNREACH ? "host not found or unreachable"
                                           : strerror(-rc));
        if (status == 403) *close_code = 4003;
        return -1;
    }
    for (;;) {
        wsconn_msg m;
        int r = wsconn_recv(*ws, deadline, &m);
        if (r == -EINTR && !cli_stopping()) continue;
        if (r == 1) {
            json_t *o = json_loadb(m.text, m.len, 0, NULL);
            const char *type = json_string_value(json_object_get(o, "type"));
            bool welcome = type && strcmp(type, "welcome") == 0;
            json_decref(o);
            if (welcome) return 0;
            continue;
        }
        if (r == WSCONN_CLOSED) {
            *close_code = m.close_code;
            snprintf(err, errlen, "edge closed the connection: %u %s", m.close_code, m.reason);
        } else {
            snprintf(err, errlen, r == 0 ? "edge %s sent no welcome in time" : "interrupted",
                     c->edge_url);
        }
        wsconn_close(*ws, 1000, 1000);
        *ws = NULL;
        return -1;
    }
}

int cli_lib_token(void *ud, sc_client *sc)
{
    cli_lib *l = ud;
    if (l->token_calls++ > 0) {
        int rc = cli_refresh(l->c, true);
        if (rc == CLI_EXIT_AUTH || rc == CLI_EXIT_TLS) {
            l->exit = rc;
            return -EACCES;
        }
        if (rc != 0) return -EAGAIN; /* the gateway is unreachable: the library asks again */
    }
    return sc_client_set_token(sc, l->c->tok.access_token);
}

int cli_lib_create(cli_ctx *c, sc_client_config *cfg, sc_client **out)
{
    const char *urls[8];
    int n = 0;
    if (c->nedges > 0)
        for (int i = 0; i < c->nedges; i++) urls[n++] = c->edges[(c->edge_at + i) % c->nedges];
    else
        urls[n++] = c->edge_url;
    cfg->urls = urls;
    cfg->nurls = n;
    cfg->cafile = c->tls.cafile;
    cfg->token = cli_lib_token;
    int rc = sc_client_create(cfg, out);
    cfg->urls = NULL; /* copied by the client; the array here is about to go */
    if (rc == -EINVAL) {
        fprintf(stderr, "sidecast: bad edge URL %s (ws:// or wss://)\n", c->edge_url);
        return CLI_EXIT_USAGE;
    }
    if (rc < 0) {
        fprintf(stderr, "sidecast: %s\n", strerror(-rc));
        return CLI_EXIT_FAIL;
    }
    return 0;
}

int cli_lib_loop(sc_client *sc, int64_t end)
{
    sc_client_start(sc);
    for (;;) {
        if (cli_stopping() || net_now_ms() >= end) sc_client_stop(sc);
        if (sc_client_step(sc) == -ESHUTDOWN) break;
        int wait = sc_client_timeout_ms(sc);
        int64_t left = end == INT64_MAX ? -1 : end - net_now_ms();
        if (left >= 0 && (wait < 0 || left < wait)) wait = (int)left;
        struct pollfd p = {.fd = sc_client_fd(sc), .events = sc_client_events(sc)};
        poll(&p, 1, wait); /* a signal ends it early (-EINTR): looked at above */
    }
    return sc_client_run(sc); /* stopped: returns at once with why */
}
