/* publish.c - `sidecast publish` on the C client library (clients/c): one publish with an id,
 * its ack or error, within --timeout. A connection that drops after it was up is made again
 * by the library and the publish resent with the same id (the edge stores it once); one that
 * never comes up ends the command as `listen` would end its first attempt. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "net.h"

typedef struct publisher {
    cli_lib lib; /* first: the token provider's ud */
    sc_client *sc;
    const char *topic;
    long timeout_s;
    int exit;        /* -1 until decided */
    bool ready_seen; /* a connection got to ready */
    bool retried;    /* one more attempt after a 4001 (the provider renews the token) */
} publisher;

static void finish(publisher *p, int exit_code)
{
    if (p->exit < 0) p->exit = exit_code;
    sc_client_stop(p->sc);
}

static void on_ack(void *ud, int status, const char *id, bool duplicate, const char *code,
                   const char *message)
{
    (void)duplicate;
    publisher *p = ud;
    if (status == 0) {
        printf("ack %s\n", id);
        finish(p, CLI_EXIT_OK);
    } else if (status == -EREMOTEIO) {
        fprintf(stderr, "sidecast: cannot publish to %s: %s%s%s\n", p->topic, code,
                *message ? ": " : "", message);
        finish(p, strcmp(code, "forbidden") == 0 ? CLI_EXIT_FORBIDDEN : CLI_EXIT_FAIL);
    } else if (status == -ETIMEDOUT) {
        fprintf(stderr, "sidecast: no ack within %ld s\n", p->timeout_s);
        finish(p, CLI_EXIT_TIMEOUT);
    }
}

static void on_state(void *ud, sc_client_state s, int code, const char *why)
{
    publisher *p = ud;
    const char *url = sc_client_url(p->sc);
    if (s == SC_CLIENT_READY) {
        p->ready_seen = true;
    } else if (s == SC_CLIENT_BACKOFF && !p->ready_seen) {
        if (code == 4001 && !p->retried) {
            p->retried = true;
            return;
        }
        if (code == 1006)
            fprintf(stderr, "sidecast: edge %s unreachable: %s\n", url, why);
        else
            fprintf(stderr, "sidecast: edge %s closed the connection: %d %s\n", url, code, why);
        finish(p, code == 1006 ? CLI_EXIT_UNREACH : code == 4001 ? CLI_EXIT_AUTH : CLI_EXIT_FAIL);
    } else if (s == SC_CLIENT_STOPPED && p->exit < 0 && code != 0) {
        if (p->lib.exit) {
            p->exit = p->lib.exit;
        } else if (code == 4003) {
            fprintf(stderr, "sidecast: forbidden/revoked: %s\n", why);
            p->exit = CLI_EXIT_FORBIDDEN;
        } else if (code == 1015) {
            fprintf(stderr, "sidecast: edge %s: %s\n", url, why);
            p->exit = CLI_EXIT_TLS;
        } else {
            fprintf(stderr, "sidecast: connection closed before the ack: %d %s\n", code, why);
            p->exit = CLI_EXIT_FAIL;
        }
    }
}

int cli_publish(cli_ctx *c, const char *topic, const char *data, const char *id, long timeout_s)
{
    int rc = cli_ensure_fresh(c);
    if (rc) return rc;
    publisher p = {.lib = {.c = c}, .topic = topic, .timeout_s = timeout_s, .exit = -1};
    sc_client_config cfg = {.on_state = on_state, .ud = &p};
    rc = cli_lib_create(c, &cfg, &p.sc);
    if (rc) return rc;
    rc = sc_client_publish(p.sc, topic, data, strlen(data), id, (int)(timeout_s * 1000), on_ack,
                           &p);
    if (rc < 0) {
        fprintf(stderr, "sidecast: cannot publish: %s\n", strerror(-rc));
        sc_client_destroy(p.sc);
        return CLI_EXIT_USAGE;
    }
    /* the ack's own timeout ends it; the loop's bound is a little later */
    cli_lib_loop(p.sc, net_now_ms() + timeout_s * 1000 + 1000);
    sc_client_destroy(p.sc);
    if (p.exit < 0) fprintf(stderr, "sidecast: no ack within %ld s\n", timeout_s); /* a signal */
    return p.exit >= 0 ? p.exit : CLI_EXIT_TIMEOUT;
}
