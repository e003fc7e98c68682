/* listen.c - `sidecast listen` on the C client library (clients/c): subscribe, print events;
 * the library renews the token in band, reconnects with backoff and resubscribes from the
 * last seq seen. This file prints what happens and decides the exit code. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "net.h"

typedef struct listener {
    cli_lib lib; /* first: the token provider's ud */
    const listen_opts *o;
    sc_client *sc;
    long events;
    int left;        /* topics not refused */
    int exit;        /* decided here: -1 none yet */
    long failures;   /* consecutive attempts that never got to ready */
    bool ready_seen; /* this attempt got to ready */
    bool connected_once;
} listener;

static void finish(listener *l, int exit_code)
{
    if (l->exit < 0) l->exit = exit_code;
    sc_client_stop(l->sc);
}

static void on_event(void *ud, const sc_client_event *ev)
{
    listener *l = ud;
    if (l->exit >= 0) return;
    if (l->o->json)
        printf("%.*s\n", (int)ev->json_len, ev->json);
    else
        printf("%s #%" PRIu64 " %.*s\n", ev->topic, ev->seq, (int)ev->data_len, ev->data);
    fflush(stdout);
    if (l->o->count > 0 && ++l->events >= l->o->count) finish(l, CLI_EXIT_OK);
}

static void on_sub(void *ud, const char *topic, sc_client_sub_status st, const char *code,
                   const char *message, uint64_t oldest)
{
    listener *l = ud;
    if (st == SC_CLIENT_SUB_GAP) { /* history_gone, replay_limit, replay_failed */
        fprintf(stderr, "sidecast: %s: events were missed: %s%s%s", topic, code,
                *message ? ": " : "", message);
        if (oldest > 0) fprintf(stderr, " (oldest retained seq %" PRIu64 ")", oldest);
        fputc('\n', stderr);
    } else if (st == SC_CLIENT_SUB_REFUSED) {
        fprintf(stderr, "sidecast: cannot subscribe to %s: %s%s%s%s\n", topic, code,
                *message ? " (" : "", message, *message ? ")" : "");
        if (--l->left == 0) {
            fprintf(stderr, "sidecast: no topic left to listen to\n");
            finish(l, strcmp(code, "forbidden") == 0 ? CLI_EXIT_FORBIDDEN : CLI_EXIT_FAIL);
        }
    }
}

static void on_refreshed(void *ud, int64_t expires_at)
{
    (void)expires_at;
    listener *l = ud;
    fprintf(stderr, "sidecast: access token refreshed (valid for %" PRId64 " s)\n",
            l->lib.c->tok.expires_at - net_wall_s());
}

static void on_state(void *ud, sc_client_state s, int code, const char *why)
{
    listener *l = ud;
    const char *url = sc_client_url(l->sc);
    if (s == SC_CLIENT_READY) {
        if (l->connected_once) fprintf(stderr, "sidecast: reconnected to %s\n", url);
        l->connected_once = l->ready_seen = true;
        l->failures = 0;
    } else if (s == SC_CLIENT_BACKOFF) {
        if (l->ready_seen) {
            fprintf(stderr, "sidecast: connection closed: %d%s%s\n", code, *why ? " " : "", why);
        } else {
            l->failures++;
            if (code == 1006)
                fprintf(stderr, "sidecast: edge %s unreachable: %s\n", url, why);
            else
                fprintf(stderr, "sidecast: edge %s closed the connection: %d %s\n", url, code, why);
            if (l->o->max_retries >= 0 && l->failures > l->o->max_retries) {
                fprintf(stderr, "sidecast: giving up after %ld failed attempt%s\n", l->failures,
                        l->failures == 1 ? "" : "s");
                finish(l, code == 1006 ? CLI_EXIT_UNREACH : CLI_EXIT_FAIL);
                return;
            }
        }
        l->ready_seen = false;
        fprintf(stderr, "sidecast: reconnecting in %d ms\n", sc_client_retry_in_ms(l->sc));
    } else if (s == SC_CLIENT_STOPPED && l->exit < 0 && code != 0) {
        /* the library gave up: a close that retrying cannot mend */
        if (l->lib.exit) {
            l->exit = l->lib.exit; /* the token provider said why (printed) */
        } else if (code == 4003) {
            fprintf(stderr, "sidecast: forbidden/revoked: the edge closed the session (%s)\n", why);
            l->exit = CLI_EXIT_FORBIDDEN;
        } else if (code == 1015) {
            fprintf(stderr, "sidecast: edge %s: %s\n", url, why);
            l->exit = CLI_EXIT_TLS;
        } else {
            fprintf(stderr, "sidecast: connection closed: %d%s%s\n", code, *why ? " " : "", why);
            fprintf(stderr, "sidecast: not reconnecting after close code %d\n", code);
            l->exit = CLI_EXIT_FAIL;
        }
    }
}

int cli_listen(cli_ctx *c, const listen_opts *o)
{
    int rc = cli_ensure_fresh(c);
    if (rc) return rc;
    listener l = {.lib = {.c = c}, .o = o, .exit = -1};
    sc_client_config cfg = {.on_event = on_event,
                            .on_state = on_state,
                            .on_sub = on_sub,
                            .on_refreshed = on_refreshed,
                            .ud = &l};
    rc = cli_lib_create(c, &cfg, &l.sc);
    if (rc) return rc;
    for (int i = 0; i < o->ntopics; i++) {
        int r = sc_client_subscribe(l.sc, o->topics[i], 0);
        if (r == 0) l.left++;
    }
    int64_t end = o->timeout_s > 0 ? net_now_ms() + o->timeout_s * 1000 : INT64_MAX;
    cli_lib_loop(l.sc, end);
    sc_client_destroy(l.sc);
    return l.exit >= 0 ? l.exit : CLI_EXIT_OK;
}
