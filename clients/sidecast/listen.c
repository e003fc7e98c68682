/* listen.c - `sidecast listen`: subscribe, print events, renew the token in-band, reconnect
 * with backoff and resubscribe from the last seq seen. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"
#include "net.h"
#include "proto/msg.h"

#define CONNECT_TIMEOUT_MS 10000
#define BACKOFF_BASE_MS 200
#define BACKOFF_CAP_MS 10000
#define IDLE_PING_MS 30000 /* nothing heard for this long: ping the edge */
#define IDLE_DEAD_MS 45000 /* and this long: the connection is dead (1006) */
#define REFRESH_RETRY_S 5  /* gateway unreachable for a refresh: try again after */

typedef struct topic_state {
    const char *name;
    int64_t last_seq; /* -1: none seen */
    bool refused;
} topic_state;

typedef struct listener {
    cli_ctx *c;
    const listen_opts *o;
    topic_state *topics;
    long events;
    int64_t end;        /* net_now_ms deadline of --timeout, INT64_MAX without */
    int64_t refresh_at; /* epoch seconds */
    bool refresh_sent;  /* waiting for "refreshed" */
} listener;

/* The raw text of "data" in an event as the edge frames it ({"type":"event","topic":...,
 * "seq":N,"data":<raw>}), so numbers print exactly as the publisher wrote them. */
static bool raw_data(const char *text, size_t len, const char **d, size_t *dl)
{
    const char *seq = memmem(text, len, "\"seq\":", 6);
    if (!seq) return false;
    const char *p = memmem(seq, len - (size_t)(seq - text), ",\"data\":", 8);
    if (!p || text[len - 1] != '}') return false;
    *d = p + 8;
    *dl = (size_t)(text + len - 1 - *d);
    return *dl > 0;
}

static void print_event(listener *l, const char *text, size_t len, json_t *o)
{
    const char *topic = json_string_value(json_object_get(o, "topic"));
    json_t *seq = json_object_get(o, "seq");
    if (!topic) return;
    for (int i = 0; i < l->o->ntopics; i++)
        if (json_is_integer(seq) && strcmp(l->topics[i].name, topic) == 0 &&
            json_integer_value(seq) > l->topics[i].last_seq)
            l->topics[i].last_seq = json_integer_value(seq);
    if (l->o->json) {
        fwrite(text, 1, len, stdout);
        fputc('\n', stdout);
    } else {
        const char *d;
        size_t dl;
        printf("%s #%" JSON_INTEGER_FORMAT " ", topic, json_integer_value(seq));
        if (raw_data(text, len, &d, &dl)) {
            fwrite(d, 1, dl, stdout);
        } else {
            char *s = json_dumps(json_object_get(o, "data"),
                                 JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
            fputs(s ? s : "null", stdout);
            free(s);
        }
        fputc('\n', stdout);
    }
    fflush(stdout);
    l->events++;
}

/* Sends subscribe for every topic not refused, with since when a seq was seen. */
static int subscribe_all(listener *l, wsconn *ws)
{
    for (int i = 0; i < l->o->ntopics; i++) {
        topic_state *t = &l->topics[i];
        if (t->refused) continue;
        char msg[MSG_TOPIC_MAX + 128];
        int n =
            t->last_seq >= 0
                ? snprintf(msg, sizeof msg,
                           "{\"type\":\"subscribe\",\"topic\":\"%s\",\"id\":%d,\"since\":%" PRId64
                           "}",
                           t->name, i + 1, t->last_seq)
                : snprintf(msg, sizeof msg, "{\"type\":\"subscribe\",\"topic\":\"%s\",\"id\":%d}",
                           t->name, i + 1);
        int rc = wsconn_send_text(ws, msg, (size_t)n, 5000);
        if (rc < 0) return rc;
    }
    return 0;
}

/* In-band renewal: new tokens from the gateway, saved, then {"type":"refresh"} to the edge.
 * Returns 0, or an exit code when the session cannot go on. */
static int renew(listener *l, wsconn *ws)
{
    int rc = cli_refresh(l->c, true);
    if (rc == CLI_EXIT_AUTH || rc == CLI_EXIT_TLS) return rc;
    if (rc != 0) { /* gateway unreachable: try again soon, the edge closes 4001 at exp */
        l->refresh_at = net_wall_s() + REFRESH_RETRY_S;
        return 0;
    }
    l->refresh_at = cli_refresh_due(&l->c->tok);
    json_t *m = json_pack("{s:s, s:s}", "type", "refresh", "token", l->c->tok.access_token);
    char *text = m ? json_dumps(m, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(m);
    if (!text) return CLI_EXIT_FAIL;
    size_t tl = strlen(text);
    wsconn_send_text(ws, text, tl, 5000); /* a failure shows up as a close on the next read */
    explicit_bzero(text, tl);
    free(text);
    l->refresh_sent = true;
    return 0;
}

/* Handles one message. Returns -1 to go on, or an exit code. */
static int on_message(listener *l, wsconn *ws, const char *text, size_t len)
{
    json_t *o = json_loadb(text, len, 0, NULL);
    const char *type = json_string_value(json_object_get(o, "type"));
    int rc = -1;
    if (!type) {
        fprintf(stderr, "sidecast: ignoring a message that is not sidecast.v1 JSON\n");
    } else if (strcmp(type, "event") == 0) {
        print_event(l, text, len, o);
        if (l->o->count > 0 && l->events >= l->o->count) rc = CLI_EXIT_OK;
    } else if (strcmp(type, "error") == 0) {
        json_t *id = json_object_get(o, "id");
        const char *code = json_string_value(json_object_get(o, "code"));
        const char *message = json_string_value(json_object_get(o, "message"));
        json_int_t i = json_is_integer(id) ? json_integer_value(id) : 0;
        const char *topic = json_string_value(json_object_get(o, "topic"));
        if (!json_is_integer(id) && topic && code) {
            /* history_gone, replay_limit, replay_failed: a gap the edge could not fill; the
             * position is given up and live events go on */
            json_int_t oldest = json_integer_value(json_object_get(o, "oldest"));
            for (int k = 0; k < l->o->ntopics; k++) {
                if (strcmp(l->topics[k].name, topic) != 0) continue;
                l->topics[k].last_seq = -1;
                fprintf(stderr, "sidecast: %s: events were missed: %s%s%s", topic, code,
                        message ? ": " : "", message ? message : "");
                if (oldest > 0)
                    fprintf(stderr, " (oldest retained seq %" JSON_INTEGER_FORMAT ")", oldest);
                fputc('\n', stderr);
            }
        } else if (i >= 1 && i <= l->o->ntopics) {
            topic_state *t = &l->topics[i - 1];
            t->refused = true;
            fprintf(stderr, "sidecast: cannot subscribe to %s: %s%s%s%s\n", t->name,
                    code ? code : "error", message ? " (" : "", message ? message : "",
                    message ? ")" : "");
            int left = 0;
            for (int k = 0; k < l->o->ntopics; k++) left += !l->topics[k].refused;
            if (left == 0) {
                fprintf(stderr, "sidecast: no topic left to listen to\n");
                rc = code && strcmp(code, "forbidden") == 0 ? CLI_EXIT_FORBIDDEN : CLI_EXIT_FAIL;
            }
        } else {
            fprintf(stderr, "sidecast: edge error: %s%s%s\n", code ? code : "?",
                    message ? ": " : "", message ? message : "");
        }
    } else if (strcmp(type, "token_expiring") == 0) {
        if (!l->refresh_sent) {
            int r = renew(l, ws);
            rc = r ? r : -1;
        }
    } else if (strcmp(type, "refreshed") == 0) {
        l->refresh_sent = false;
        fprintf(stderr, "sidecast: access token refreshed (valid for %" PRId64 " s)\n",
                l->c->tok.expires_at - net_wall_s());
    }
    json_decref(o);
    return rc;
}

/* One connected session: subscribe, then read until it ends. Returns an exit code, or -1
 * when the caller should reconnect (*code: why the connection ended). */
static int session(listener *l, wsconn *ws, uint16_t *code)
{
    if (subscribe_all(l, ws) < 0) {
        *code = 1006;
        return -1;
    }
    l->refresh_at = cli_refresh_due(&l->c->tok);
    l->refresh_sent = false;
    bool pinged = false;
    for (;;) {
        if (cli_stopping()) return CLI_EXIT_OK;
        int64_t now = net_now_ms(), wall = net_wall_s();
        if (now >= l->end) return CLI_EXIT_OK;
        if (wall >= l->refresh_at && !l->refresh_sent) {
            int rc = renew(l, ws);
            if (rc) return rc;
            continue;
        }
        int64_t idle = now - wsconn_last_rx(ws);
        if (idle >= IDLE_DEAD_MS) {
            *code = 1006;
            fprintf(stderr, "sidecast: the edge went silent\n");
            return -1;
        }
        if (idle >= IDLE_PING_MS && !pinged) pinged = wsconn_ping(ws) == 0;
        if (idle < IDLE_PING_MS) pinged = false;
        int64_t wake = l->end;
        int64_t r_at = now + (l->refresh_at - wall) * 1000;
        if (!l->refresh_sent && r_at < wake) wake = r_at;
        int64_t p_at = wsconn_last_rx(ws) + (pinged ? IDLE_DEAD_MS : IDLE_PING_MS);
        if (p_at < wake) wake = p_at;
        if (wake < now + 10) wake = now + 10;
        wsconn_msg m;
        int r = wsconn_recv(ws, wake, &m);
        if (r == 1) {
            int rc = on_message(l, ws, m.text, m.len);
            if (rc >= 0) return rc;
        } else if (r == WSCONN_CLOSED) {
            *code = m.close_code;
            if (m.close_code == 4003) {
                fprintf(stderr, "sidecast: forbidden/revoked: the edge closed the session (%s)\n",
                        m.reason);
                return CLI_EXIT_FORBIDDEN;
            }
            fprintf(stderr, "sidecast: connection closed: %u%s%s\n", m.close_code,
                    m.reason[0] ? " " : "", m.reason);
            return -1;
        }
    }
}

static bool reconnectable(uint16_t code)
{
    switch (code) {
    case 1000:
    case 1001:
    case 1006:
    case 1011:
    case 1012:
    case 1013:
    case 4001:
    case 4008:
    case 4009:
    case 4010: /* disconnected by the server API, may reconnect */
    case 4029: return true;
    default: return false;
    }
}

int cli_listen(cli_ctx *c, const listen_opts *o)
{
    listener l = {.c = c, .o = o, .end = INT64_MAX};
    l.topics = calloc((size_t)o->ntopics, sizeof *l.topics);
    if (!l.topics) return CLI_EXIT_FAIL;
    for (int i = 0; i < o->ntopics; i++) {
        l.topics[i].name = o->topics[i];
        l.topics[i].last_seq = -1;
    }
    if (o->timeout_s > 0) l.end = net_now_ms() + o->timeout_s * 1000;
    int attempt = 0, rc = CLI_EXIT_OK;
    long failures = 0;
    bool connected_once = false;
    while (!cli_stopping() && net_now_ms() < l.end) {
        rc = cli_ensure_fresh(c);
        if (rc == CLI_EXIT_AUTH || rc == CLI_EXIT_TLS) break;
        wsconn *ws = NULL;
        uint16_t code = 1006;
        char err[512];
        int64_t left = l.end - net_now_ms();
        int ctimeout = left < CONNECT_TIMEOUT_MS ? (int)left : CONNECT_TIMEOUT_MS;
        if (rc == 0 && cli_connect(c, ctimeout, &ws, &code, err, sizeof err) == 0) {
            if (connected_once) fprintf(stderr, "sidecast: reconnected to %s\n", c->edge_url);
            connected_once = true;
            attempt = 0;
            failures = 0;
            rc = session(&l, ws, &code);
            wsconn_close(ws, 1000, 1000);
            if (rc >= 0) break;
            rc = CLI_EXIT_OK;
        } else {
            if (cli_stopping()) break;
            if (code == 4003) {
                fprintf(stderr, "sidecast: forbidden/revoked: %s\n", err);
                rc = CLI_EXIT_FORBIDDEN;
                break;
            }
            if (code == CLI_CLOSE_TLS) { /* a refused certificate stays refused */
                fprintf(stderr, "sidecast: %s\n", err);
                rc = CLI_EXIT_TLS;
                break;
            }
            if (rc == 0) fprintf(stderr, "sidecast: %s\n", err);
            failures++;
            rc = code == 1006 ? CLI_EXIT_UNREACH : CLI_EXIT_FAIL;
            if (o->max_retries >= 0 && failures > o->max_retries) {
                fprintf(stderr, "sidecast: giving up after %ld failed attempt%s\n", failures,
                        failures == 1 ? "" : "s");
                break;
            }
            rc = CLI_EXIT_OK;
        }
        if (code == 1001 || code == 1006) cli_next_edge(c); /* draining or gone: elsewhere */
        if (!reconnectable(code)) {
            fprintf(stderr, "sidecast: not reconnecting after close code %u\n", code);
            rc = CLI_EXIT_FAIL;
            break;
        }
        if (code == 4001) { /* token refused: renew before the next attempt */
            int r = cli_refresh(c, true);
            if (r == CLI_EXIT_AUTH || r == CLI_EXIT_TLS) {
                rc = r;
                break;
            }
        }
        /* exponential backoff with full jitter */
        int64_t ceil = BACKOFF_BASE_MS << (attempt < 16 ? attempt : 16);
        if (ceil > BACKOFF_CAP_MS) ceil = BACKOFF_CAP_MS;
        attempt++;
        int64_t delay = cli_random_upto(ceil);
        if (net_now_ms() + delay > l.end) delay = l.end - net_now_ms();
        fprintf(stderr, "sidecast: reconnecting in %" PRId64 " ms\n", delay);
        cli_sleep_ms(delay);
    }
    free(l.topics);
    return rc;
}
