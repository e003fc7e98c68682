/* cli.h - what the sidecast commands share: exit codes, the signal flag, the token context
 * (token file + in-band refresh) and "connect to the edge and wait for welcome". Prefix cli_. */
#ifndef SIDECAST_CLI_H
#define SIDECAST_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokens.h"
#include "wsconn.h"

/* Exit codes (docs/CLI.md). */
enum cli_exit {
    CLI_EXIT_OK = 0,
    CLI_EXIT_FAIL = 1,      /* any other failure (bad answer, protocol error...) */
    CLI_EXIT_USAGE = 2,     /* bad command line */
    CLI_EXIT_AUTH = 3,      /* wrong user/password, not logged in, session expired */
    CLI_EXIT_UNREACH = 4,   /* gateway or edge unreachable (retries exhausted) */
    CLI_EXIT_FORBIDDEN = 5, /* forbidden topic, revoked session (4003) */
    CLI_EXIT_TIMEOUT = 6,   /* an awaited answer did not come in time */
    CLI_EXIT_TLS = 7,       /* https/wss: certificate refused, or no TLS handshake */
};

/* cli_connect's close code for a TLS failure (RFC 6455 §7.4.1 reserves 1015 for "the TLS
 * handshake failed", never sent on the wire): not retried. */
#define CLI_CLOSE_TLS 1015

typedef struct cli_ctx {
    tok_set tok;
    char token_path[4096];
    const char *edge_url; /* --edge, $SIDECAST_EDGE, else tok.ws_url: the one in use */
    char edges[8][512];   /* a comma-separated --edge: tried in turn after a drop */
    int nedges, edge_at;
    net_tls tls; /* https/wss: --cacert or $SIDECAST_CACERT, else the system's trust store */
} cli_ctx;

/* After a drop or a failed connect: the next edge of the list (no-op with one edge). */
void cli_next_edge(cli_ctx *c);

/* Installs SIGINT/SIGTERM handlers (no SA_RESTART: waits return -EINTR) and ignores SIGPIPE. */
void cli_signals(void);
/* True once SIGINT or SIGTERM arrived. */
bool cli_stopping(void);

/* Loads the token file into c->tok; prints why not on stderr. Returns 0 or an exit code. */
int cli_load(cli_ctx *c);

/* When to renew the access token: 30 s before exp, or a third of its lifetime before when
 * it lives less than 90 s. Epoch seconds. */
int64_t cli_refresh_due(const tok_set *t);

/* Renews the tokens (refresh_token grant through the gateway) and saves them. Returns 0,
 * CLI_EXIT_AUTH (refresh refused: log in again; printed), CLI_EXIT_TLS (the https gateway's
 * certificate refused, or no TLS: printed) or CLI_EXIT_UNREACH (try later; printed when
 * verbose). */
int cli_refresh(cli_ctx *c, bool verbose);

/* Refreshes first when the access token is due. 0 or an exit code as cli_refresh; an
 * unreachable gateway is not an error while the token has not expired (a TLS failure is:
 * waiting cannot mend it). */
int cli_ensure_fresh(cli_ctx *c);

/* Opens the edge (c->edge_url) with the access token and waits for welcome, all within
 * timeout_ms. Returns 0 with *ws; or -1 with *close_code (the edge's close code: 4001,
 * 4003...; 1006 when it could not connect at all; CLI_CLOSE_TLS when a wss edge's
 * certificate was refused or the TLS handshake failed) and why in err. */
int cli_connect(cli_ctx *c, int timeout_ms, wsconn **ws, uint16_t *close_code, char *err,
                size_t errlen);

/* Sleeps ms, waking early on a signal. */
void cli_sleep_ms(int64_t ms);

/* A uniformly random integer in [0, n]. */
int64_t cli_random_upto(int64_t n);

/* The C client library (clients/c) as `listen` and `publish` use it. */
#include "../c/sidecast.h"

/* What the library's token provider needs; first member of the struct given as cfg.ud. */
typedef struct cli_lib {
    cli_ctx *c;
    int token_calls;
    int exit; /* an exit code the provider decided (refresh refused: 3; TLS: 7), else 0 */
} cli_lib;

/* The token provider (sc_client_token_fn; ud a cli_lib *): the first call hands over the
 * token file's access token (the caller made it fresh), later ones (token_expiring, 4001)
 * renew through the gateway and save the rotated pair first. A refused refresh or a TLS
 * failure stops the client (-EACCES, with l->exit set); an unreachable gateway is tried
 * again later. */
int cli_lib_token(void *ud, sc_client *sc);

/* Makes a client for c's edge URL(s) and CA file with cfg's callbacks (cfg->urls, nurls,
 * cafile and token are filled in here). 0 or an exit code (printed). */
int cli_lib_create(cli_ctx *c, sc_client_config *cfg, sc_client **out);

/* Drives sc (started here) until it stops, end passes (net_now_ms; INT64_MAX: never) or a
 * signal arrives (SIGINT, SIGTERM): the last two stop it. Returns what sc_client_run would. */
int cli_lib_loop(sc_client *sc, int64_t end);

/* `sidecast publish`: returns the exit code. */
int cli_publish(cli_ctx *c, const char *topic, const char *data, const char *id, long timeout_s);

typedef struct listen_opts {
    char **topics;
    int ntopics;
    bool json;
    long count;       /* exit after this many events; 0: no limit */
    long timeout_s;   /* exit after this long; 0: no limit */
    long max_retries; /* consecutive failed connects before giving up; -1: no limit */
} listen_opts;

/* `sidecast listen`: returns the exit code. */
int cli_listen(cli_ctx *c, const listen_opts *o);

#endif
