/* main.c - `sidecast`, the command-line client: login, listen, publish, order (docs/CLI.md).
 * Parses the command line and the environment (the only place that reads it) and runs one
 * command; the modules do the work. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <jansson.h>

#include "bench.h"
#include "cli.h"
#include "gw.h"
#include "net.h"
#include "proto/msg.h"

#define DEFAULT_GATEWAY "http://localhost:8080"
#define MAX_POSITIONAL 64

static const char usage_main[] =
    "usage: sidecast [--token-file PATH] [--cacert FILE] COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  login [--gateway URL] USER [--password P]   get tokens, save them in the token file\n"
    "  listen TOPIC... [--json] [--count N] [--timeout S] [--max-retries N] [--edge URL]\n"
    "                                              print the events of topics (and the inbox)\n"
    "  publish TOPIC JSON [--id ID] [--timeout S]  publish to a topic, wait for the ack\n"
    "  order SYMBOL QTY [--side buy|sell] [--wait] [--timeout S]\n"
    "                                              place an order; --wait prints its fill\n"
    "  api publish|broadcast|disconnect|presence|history|counts ...\n"
    "                                              the server API, as a back end (`api --help`)\n"
    "  bench connect|idle|fanout|publish|tokens ...  load generator (`sidecast bench --help`)\n"
    "\n"
    "`sidecast COMMAND --help` describes a command. URLs may be http:// or https:// (gateway),\n"
    "ws:// or wss:// (edge); TLS certificates are verified against the system's trust store,\n"
    "or only against the CA certificates (PEM) of --cacert FILE (before or after the\n"
    "command). Environment: SIDECAST_TOKEN_FILE (default ~/.config/sidecast/token.json),\n"
    "SIDECAST_GATEWAY (default " DEFAULT_GATEWAY "), SIDECAST_EDGE (edge URL, or several\n"
    "comma-separated: after a drop the next one is tried; default: ws_url from login),\n"
    "SIDECAST_PASSWORD (for login), SIDECAST_CACERT (as --cacert; the option wins),\n"
    "SIDECAST_CLIENT_ID and SIDECAST_CLIENT_SECRET (for api).\n"
    "Exit codes: 0 ok, 1 failure, 2 usage, 3 authentication (wrong password, not logged in,\n"
    "session expired), 4 unreachable, 5 forbidden or revoked, 6 timed out, 7 TLS (the\n"
    "server's certificate was refused, or it does not speak TLS).\n";

static const char usage_login[] =
    "usage: sidecast login [--gateway URL] USER [--password P]\n"
    "Gets an access and a refresh token for USER (grant_type=password at the gateway's\n"
    "POST /auth/token) and saves them, with the edge URL, in the token file (mode 0600).\n"
    "The password comes from --password, else $SIDECAST_PASSWORD, else a prompt on the\n"
    "terminal (not echoed). --gateway defaults to $SIDECAST_GATEWAY or " DEFAULT_GATEWAY ".\n"
    "Exit: 0 logged in, 3 wrong user or password, 4 gateway unreachable, 7 TLS refused,\n"
    "1 other failure.\n";

static const char usage_listen[] =
    "usage: sidecast listen TOPIC... [--json] [--count N] [--timeout S] [--max-retries N]\n"
    "                       [--edge URL]\n"
    "Subscribes to each TOPIC at the edge and prints every event on a line: TOPIC #SEQ DATA,\n"
    "or with --json the event object as the edge sent it. The inbox arrives as topic `user`.\n"
    "Renews the access token in-band before it expires; reconnects after a dropped\n"
    "connection or an edge restart (backoff 200 ms doubling to 10 s, full jitter) and\n"
    "resubscribes from the last seq seen. --count N: exit after N events; --timeout S: exit\n"
    "after S seconds; --max-retries N: give up after N failed connection attempts in a row\n"
    "(default: never). Ctrl-C exits cleanly.\n"
    "Exit: 0 done, 3 session expired, 4 edge unreachable, 5 forbidden/revoked, 7 TLS\n"
    "refused, 1 other.\n";

static const char usage_publish[] =
    "usage: sidecast publish TOPIC JSON [--id ID] [--timeout S]\n"
    "Publishes the JSON value to TOPIC through the edge and waits (default 10 s) for its ack.\n"
    "Prints `ack ID`. Exit: 0 acked, 5 forbidden, 6 no ack in time, 7 TLS refused, 1 other\n"
    "refusal.\n";

static const char usage_order[] =
    "usage: sidecast order SYMBOL QTY [--side buy|sell] [--wait] [--timeout S]\n"
    "Places an order (POST /api/orders) and prints its order_id. With --wait, waits for the\n"
    "fill pushed to the inbox (default at most 30 s) and prints it as JSON.\n"
    "Exit: 0 placed (and filled with --wait), 3 token refused, 4 unreachable, 6 no fill in\n"
    "time, 7 TLS refused, 1 other.\n";

static const char usage_api[] =
    "usage: sidecast api publish TOPIC JSON [--key K]\n"
    "       sidecast api broadcast JSON TOPIC... [--key K]\n"
    "       sidecast api disconnect --user U | --conn CONN_ID [--reason R] [--no-reconnect]\n"
    "       sidecast api presence --user U | --topic T\n"
    "       sidecast api history TOPIC [--since SEQ] [--limit N]\n"
    "       sidecast api counts\n"
    "Calls the server API (/api/v1, docs/openapi.yaml) at the gateway as a back end: a\n"
    "client_credentials token of --client ID (or $SIDECAST_CLIENT_ID) with the secret of\n"
    "$SIDECAST_CLIENT_SECRET or the first line of --secret-file FILE, asked for each call\n"
    "(no token file). The client needs the scope sidecast.api. Prints the JSON answer.\n"
    "--key: an idempotency key (a retry with it is stored once, answered duplicate:true).\n"
    "--gateway defaults to $SIDECAST_GATEWAY or " DEFAULT_GATEWAY ".\n"
    "Exit: 0 done, 2 usage or refused as invalid (400), 3 client refused, 4 unreachable,\n"
    "5 forbidden (no sidecast.api scope), 7 TLS refused, 1 other.\n";

typedef struct args {
    const char *pos[MAX_POSITIONAL];
    int npos;
    const char *gateway, *password, *edge, *id, *side, *count, *timeout, *max_retries, *cacert;
    const char *key, *user, *conn, *topic, *reason, *since, *limit, *client, *secret_file;
    int json, wait, help, no_reconnect;
} args;

/* Options may come anywhere; "--opt value" or "--opt=value"; "--" ends them. */
static int parse_args(int argc, char **argv, args *a)
{
    static const struct {
        const char *name;
        size_t off;
    } valued[] = {
        {"--gateway", offsetof(args, gateway)}, {"--password", offsetof(args, password)},
        {"--edge", offsetof(args, edge)},       {"--id", offsetof(args, id)},
        {"--side", offsetof(args, side)},       {"--count", offsetof(args, count)},
        {"--timeout", offsetof(args, timeout)}, {"--max-retries", offsetof(args, max_retries)},
        {"--cacert", offsetof(args, cacert)},   {"--key", offsetof(args, key)},
        {"--user", offsetof(args, user)},       {"--conn", offsetof(args, conn)},
        {"--topic", offsetof(args, topic)},     {"--reason", offsetof(args, reason)},
        {"--since", offsetof(args, since)},     {"--limit", offsetof(args, limit)},
        {"--client", offsetof(args, client)},   {"--secret-file", offsetof(args, secret_file)},
    };
    bool opts_done = false;
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        if (opts_done || s[0] != '-' || strcmp(s, "-") == 0) {
            if (a->npos == MAX_POSITIONAL) {
                fprintf(stderr, "sidecast: too many arguments\n");
                return -1;
            }
            a->pos[a->npos++] = s;
            continue;
        }
        if (strcmp(s, "--") == 0) {
            opts_done = true;
            continue;
        }
        if (strcmp(s, "--json") == 0)
            a->json = 1;
        else if (strcmp(s, "--wait") == 0)
            a->wait = 1;
        else if (strcmp(s, "--no-reconnect") == 0)
            a->no_reconnect = 1;
        else if (strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0)
            a->help = 1;
        else {
            size_t k, nl = strcspn(s, "=");
            for (k = 0; k < sizeof valued / sizeof valued[0]; k++)
                if (strlen(valued[k].name) == nl && strncmp(s, valued[k].name, nl) == 0) break;
            if (k == sizeof valued / sizeof valued[0]) {
                fprintf(stderr, "sidecast: unknown option %.*s\n", (int)nl, s);
                return -1;
            }
            const char *v = s[nl] == '=' ? s + nl + 1 : (i + 1 < argc ? argv[++i] : NULL);
            if (!v) {
                fprintf(stderr, "sidecast: %s needs a value\n", valued[k].name);
                return -1;
            }
            *(const char **)((char *)a + valued[k].off) = v;
        }
    }
    return 0;
}

/* A non-negative integer option; def when absent. -1 after an error message. */
static long num_opt(const char *name, const char *v, long def, long min)
{
    if (!v) return def;
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (*v == '\0' || *end != '\0' || errno || n < min || n > 1000000000L) {
        fprintf(stderr, "sidecast: %s wants an integer >= %ld, got %s\n", name, min, v);
        return -2;
    }
    return n;
}

static int read_password(char *out, size_t cap)
{
    FILE *tty = fopen("/dev/tty", "r+");
    if (!tty) return -1;
    struct termios old, quiet;
    int fd = fileno(tty);
    int have_termios = tcgetattr(fd, &old) == 0;
    fputs("Password: ", tty);
    fflush(tty);
    if (have_termios) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        quiet.c_lflag |= ICANON;
        tcsetattr(fd, TCSAFLUSH, &quiet);
    }
    char *r = fgets(out, (int)cap, tty);
    if (have_termios) tcsetattr(fd, TCSAFLUSH, &old);
    fputs("\n", tty);
    fclose(tty);
    if (!r) return -1;
    out[strcspn(out, "\r\n")] = '\0';
    return 0;
}

static int cmd_login(cli_ctx *c, args *a, const char *env_gateway, const char *env_password)
{
    if (a->help) return fputs(usage_login, stdout), CLI_EXIT_OK;
    if (a->npos != 1) return fputs(usage_login, stderr), CLI_EXIT_USAGE;
    const char *user = a->pos[0];
    const char *gateway = a->gateway ? a->gateway : env_gateway ? env_gateway : DEFAULT_GATEWAY;
    char pw[1024];
    if (a->password)
        snprintf(pw, sizeof pw, "%s", a->password);
    else if (env_password)
        snprintf(pw, sizeof pw, "%s", env_password);
    else if (!isatty(STDIN_FILENO) || read_password(pw, sizeof pw) < 0) {
        fprintf(stderr, "sidecast: no password: use --password, SIDECAST_PASSWORD or run on a "
                        "terminal\n");
        return CLI_EXIT_USAGE;
    }
    char err[512];
    tok_set *t = &c->tok;
    memset(t, 0, sizeof *t);
    snprintf(t->user, sizeof t->user, "%s", user);
    if (strlen(gateway) >= sizeof t->gateway) {
        fprintf(stderr, "sidecast: gateway URL too long\n");
        return CLI_EXIT_USAGE;
    }
    snprintf(t->gateway, sizeof t->gateway, "%s", gateway);
    int rc = gw_login(gateway, user, pw, t, &c->tls, err, sizeof err);
    explicit_bzero(pw, sizeof pw);
    if (rc == -EACCES) {
        fprintf(stderr, "sidecast: login failed: wrong user or password\n");
        return CLI_EXIT_AUTH;
    }
    if (rc != SC_OK) {
        fprintf(stderr, "sidecast: login failed: %s\n", err);
        return rc == -EHOSTUNREACH                       ? CLI_EXIT_UNREACH
               : rc == NET_ETLS_VERIFY || rc == NET_ETLS ? CLI_EXIT_TLS
               : rc == -EINVAL                           ? CLI_EXIT_USAGE
                                                         : CLI_EXIT_FAIL;
    }
    rc = tok_save(c->token_path, t);
    if (rc < 0) {
        fprintf(stderr, "sidecast: cannot write the token file %s: %s\n", c->token_path,
                strerror(-rc));
        return CLI_EXIT_FAIL;
    }
    printf("logged in as %s (access token valid for %" PRId64 " s; tokens saved to %s)\n", user,
           t->expires_at - t->issued_at, c->token_path);
    return CLI_EXIT_OK;
}

static int cmd_listen(cli_ctx *c, args *a)
{
    if (a->help) return fputs(usage_listen, stdout), CLI_EXIT_OK;
    listen_opts o = {.topics = (char **)a->pos, .ntopics = a->npos, .json = a->json != 0};
    o.count = num_opt("--count", a->count, 0, 1);
    o.timeout_s = num_opt("--timeout", a->timeout, 0, 1);
    o.max_retries = num_opt("--max-retries", a->max_retries, -1, 0);
    if (a->npos == 0 || o.count < -1 || o.timeout_s < -1 || o.max_retries < -1)
        return fputs(usage_listen, stderr), CLI_EXIT_USAGE;
    for (int i = 0; i < a->npos; i++)
        if (!msg_topic_valid(a->pos[i], strlen(a->pos[i]))) {
            fprintf(stderr, "sidecast: bad topic %s (dot-separated [A-Za-z0-9_-] tokens)\n",
                    a->pos[i]);
            return CLI_EXIT_USAGE;
        }
    int rc = cli_load(c);
    return rc ? rc : cli_listen(c, &o);
}

/* Connects after making sure the token is fresh. 0 or an exit code (printed). */
static int connect_once(cli_ctx *c, int timeout_ms, wsconn **ws)
{
    int rc = cli_ensure_fresh(c);
    if (rc) return rc;
    uint16_t code;
    char err[512];
    if (cli_connect(c, timeout_ms, ws, &code, err, sizeof err) == 0) return 0;
    if (code == 4001 && cli_refresh(c, true) == 0 &&
        cli_connect(c, timeout_ms, ws, &code, err, sizeof err) == 0)
        return 0;
    fprintf(stderr, "sidecast: %s%s\n", code == 4003 ? "forbidden/revoked: " : "", err);
    return code == 4003            ? CLI_EXIT_FORBIDDEN
           : code == 4001          ? CLI_EXIT_AUTH
           : code == 1006          ? CLI_EXIT_UNREACH
           : code == CLI_CLOSE_TLS ? CLI_EXIT_TLS
                                   : CLI_EXIT_FAIL;
}

static int cmd_publish(cli_ctx *c, args *a)
{
    if (a->help) return fputs(usage_publish, stdout), CLI_EXIT_OK;
    long timeout_s = num_opt("--timeout", a->timeout, 10, 1);
    if (a->npos != 2 || timeout_s < 0) return fputs(usage_publish, stderr), CLI_EXIT_USAGE;
    const char *topic = a->pos[0], *data = a->pos[1];
    if (!msg_topic_valid(topic, strlen(topic))) {
        fprintf(stderr, "sidecast: bad topic %s\n", topic);
        return CLI_EXIT_USAGE;
    }
    if (msg_json_check(data, strlen(data), 32) != SC_OK) {
        fprintf(stderr, "sidecast: the data is not one valid JSON value\n");
        return CLI_EXIT_USAGE;
    }
    char idbuf[40];
    const char *id = a->id;
    if (!id) {
        unsigned char r[8];
        net_random(r, sizeof r);
        snprintf(idbuf, sizeof idbuf, "cli-%02x%02x%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2],
                 r[3], r[4], r[5], r[6], r[7]);
        id = idbuf;
    }
    if (strlen(id) == 0 || strlen(id) > MSG_ID_STR_MAX) {
        fprintf(stderr, "sidecast: --id takes 1 to %d bytes\n", MSG_ID_STR_MAX);
        return CLI_EXIT_USAGE;
    }
    int rc = cli_load(c);
    return rc ? rc : cli_publish(c, topic, data, id, timeout_s);
}

static int cmd_order(cli_ctx *c, args *a)
{
    if (a->help) return fputs(usage_order, stdout), CLI_EXIT_OK;
    long timeout_s = num_opt("--timeout", a->timeout, 30, 1);
    const char *side = a->side ? a->side : "buy";
    if (a->npos != 2 || timeout_s < 0 || (strcmp(side, "buy") != 0 && strcmp(side, "sell") != 0))
        return fputs(usage_order, stderr), CLI_EXIT_USAGE;
    int rc = cli_load(c);
    if (rc) return rc;
    int64_t deadline = net_now_ms() + timeout_s * 1000;
    wsconn *ws = NULL;
    if (a->wait && (rc = connect_once(c, 10000, &ws)) != 0) return rc; /* before the order */
    if (!a->wait && (rc = cli_ensure_fresh(c)) != 0) return rc;
    char order_id[256], err[512];
    int g = gw_order(&c->tok, a->pos[0], a->pos[1], side, &c->tls, order_id, sizeof order_id, err,
                     sizeof err);
    if (g != SC_OK) {
        fprintf(stderr, "sidecast: %s\n", err);
        wsconn_close(ws, 1000, 1000);
        return g == -EACCES                            ? CLI_EXIT_AUTH
               : g == -EINVAL                          ? CLI_EXIT_USAGE
               : g == -EHOSTUNREACH                    ? CLI_EXIT_UNREACH
               : g == NET_ETLS_VERIFY || g == NET_ETLS ? CLI_EXIT_TLS
                                                       : CLI_EXIT_FAIL;
    }
    printf("%s\n", order_id);
    fflush(stdout);
    if (!a->wait) return CLI_EXIT_OK;
    rc = CLI_EXIT_TIMEOUT;
    while (!cli_stopping() && rc == CLI_EXIT_TIMEOUT) {
        wsconn_msg m;
        int r = wsconn_recv(ws, deadline, &m);
        if (r == -EINTR) continue;
        if (r == 0) break;
        if (r == WSCONN_CLOSED) {
            fprintf(stderr, "sidecast: connection closed before the fill: %u %s\n", m.close_code,
                    m.reason);
            rc = CLI_EXIT_FAIL;
            break;
        }
        json_t *o = json_loadb(m.text, m.len, 0, NULL);
        json_t *d = json_object_get(o, "data");
        const char *type = json_string_value(json_object_get(o, "type"));
        const char *oid = json_string_value(json_object_get(d, "order_id"));
        json_t *oidn = json_object_get(d, "order_id");
        char num[32] = "";
        if (json_is_integer(oidn))
            snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(oidn));
        if (type && strcmp(type, "event") == 0 &&
            ((oid && strcmp(oid, order_id) == 0) || (num[0] && strcmp(num, order_id) == 0))) {
            char *s = json_dumps(d, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
            printf("%s\n", s ? s : "{}");
            free(s);
            rc = CLI_EXIT_OK;
        }
        json_decref(o);
    }
    if (rc == CLI_EXIT_TIMEOUT) fprintf(stderr, "sidecast: no fill within %ld s\n", timeout_s);
    wsconn_close(ws, 1000, 1000);
    return rc;
}

/* Appends s to out percent-encoded as one path segment (RFC 3986 unreserved kept). */
static int path_segment(char *out, size_t cap, const char *s)
{
    size_t o = strlen(out);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        bool keep = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                    (ch >= '0' && ch <= '9') || strchr("-._~", ch);
        if (o + (keep ? 1 : 3) >= cap) return -1;
        o += (size_t)snprintf(out + o, cap - o, keep ? "%c" : "%%%02X", ch);
    }
    return 0;
}

/* The request of `sidecast api SUB ...`: method, path and JSON body (or NULL). -1 after a
 * usage message. */
static int api_request(const args *a, const char **method, char *path, size_t cap, json_t **body)
{
    const char *sub = a->npos ? a->pos[0] : "";
    *body = NULL;
    path[0] = '\0';
    if (strcmp(sub, "publish") == 0 && a->npos == 3) {
        json_t *d = json_loads(a->pos[2], JSON_DECODE_ANY, NULL);
        if (!d) return fprintf(stderr, "sidecast: JSON: not a JSON value\n"), -1;
        *method = "POST";
        snprintf(path, cap, "/api/v1/publish");
        *body = json_pack("{s:s, s:o}", "topic", a->pos[1], "data", d);
        if (a->key) json_object_set_new(*body, "idempotency_key", json_string(a->key));
    } else if (strcmp(sub, "broadcast") == 0 && a->npos >= 3) {
        json_t *d = json_loads(a->pos[1], JSON_DECODE_ANY, NULL), *ts = json_array();
        if (!d) return json_decref(ts), fprintf(stderr, "sidecast: JSON: not a JSON value\n"), -1;
        for (int i = 2; i < a->npos; i++) json_array_append_new(ts, json_string(a->pos[i]));
        *method = "POST";
        snprintf(path, cap, "/api/v1/broadcast");
        *body = json_pack("{s:o, s:o}", "topics", ts, "data", d);
        if (a->key) json_object_set_new(*body, "idempotency_key", json_string(a->key));
    } else if (strcmp(sub, "disconnect") == 0 && a->npos == 1 && !a->user != !a->conn) {
        *method = "POST";
        snprintf(path, cap, "/api/v1/disconnect");
        *body = json_pack("{s:s, s:b}", a->user ? "user" : "conn", a->user ? a->user : a->conn,
                          "reconnect", !a->no_reconnect);
        if (a->reason) json_object_set_new(*body, "reason", json_string(a->reason));
    } else if (strcmp(sub, "presence") == 0 && a->npos == 1 && !a->user != !a->topic) {
        *method = "GET";
        snprintf(path, cap, "/api/v1/presence/%s/", a->user ? "users" : "topics");
        if (path_segment(path, cap, a->user ? a->user : a->topic) < 0) return -1;
        return 0;
    } else if (strcmp(sub, "history") == 0 && a->npos == 2) {
        *method = "GET";
        snprintf(path, cap, "/api/v1/history/");
        if (path_segment(path, cap, a->pos[1]) < 0) return -1;
        long since = num_opt("--since", a->since, 0, 0), limit = num_opt("--limit", a->limit, 0, 1);
        if (since < 0 || limit < 0) return -1;
        size_t n = strlen(path);
        if (a->since) n += (size_t)snprintf(path + n, cap - n, "?since=%ld", since);
        if (a->limit) snprintf(path + n, cap - n, "%slimit=%ld", a->since ? "&" : "?", limit);
        return 0;
    } else if (strcmp(sub, "counts") == 0 && a->npos == 1) {
        *method = "GET";
        snprintf(path, cap, "/api/v1/counts");
        return 0;
    } else {
        fputs(usage_api, stderr);
        return -1;
    }
    return *body ? 0 : -1;
}

static int cmd_api(cli_ctx *c, args *a, const char *env_gateway, const char *env_client,
                   const char *env_secret)
{
    if (a->help) return fputs(usage_api, stdout), CLI_EXIT_OK;
    const char *method;
    char path[1024], secret[1024] = "", token[TOK_ACCESS_MAX + 1], err[512];
    json_t *body;
    if (api_request(a, &method, path, sizeof path, &body) < 0) return CLI_EXIT_USAGE;
    const char *gateway = a->gateway ? a->gateway : env_gateway ? env_gateway : DEFAULT_GATEWAY;
    const char *client = a->client ? a->client : env_client;
    if (a->secret_file) {
        FILE *f = fopen(a->secret_file, "r");
        if (!f || !fgets(secret, sizeof secret, f)) {
            fprintf(stderr, "sidecast: cannot read --secret-file %s\n", a->secret_file);
            if (f) fclose(f);
            json_decref(body);
            return CLI_EXIT_USAGE;
        }
        fclose(f);
        secret[strcspn(secret, "\r\n")] = '\0';
    } else if (env_secret) {
        snprintf(secret, sizeof secret, "%s", env_secret);
    }
    if (!client || !*client || !secret[0]) {
        fprintf(stderr, "sidecast: api needs a client: --client ID (or SIDECAST_CLIENT_ID) and "
                        "SIDECAST_CLIENT_SECRET or --secret-file FILE\n");
        json_decref(body);
        return CLI_EXIT_USAGE;
    }
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(body);
    int rc = gw_client_token(gateway, client, secret, token, sizeof token, &c->tls, err,
                             sizeof err);
    explicit_bzero(secret, sizeof secret);
    http_response r = {0};
    if (rc == SC_OK) rc = gw_api(gateway, token, method, path, text, &c->tls, &r, err, sizeof err);
    explicit_bzero(token, sizeof token);
    free(text);
    if (rc != SC_OK) {
        fprintf(stderr, "sidecast: %s\n", err);
        return rc == -EACCES                             ? CLI_EXIT_AUTH
               : rc == -EHOSTUNREACH                     ? CLI_EXIT_UNREACH
               : rc == NET_ETLS_VERIFY || rc == NET_ETLS ? CLI_EXIT_TLS
               : rc == -EINVAL                           ? CLI_EXIT_USAGE
                                                         : CLI_EXIT_FAIL;
    }
    if (r.status >= 200 && r.status < 300) {
        printf("%.*s\n", (int)r.body_len, r.body);
        rc = CLI_EXIT_OK;
    } else {
        json_t *o = json_loadb(r.body, r.body_len, 0, NULL);
        const char *code = json_string_value(json_object_get(o, "error"));
        const char *msg = json_string_value(json_object_get(o, "message"));
        fprintf(stderr, "sidecast: HTTP %d%s%s%s%s\n", r.status, code ? " " : "", code ? code : "",
                msg ? ": " : "", msg ? msg : "");
        json_decref(o);
        rc = r.status == 400   ? CLI_EXIT_USAGE
             : r.status == 401 ? CLI_EXIT_AUTH
             : r.status == 403 ? CLI_EXIT_FORBIDDEN
                               : CLI_EXIT_FAIL;
    }
    http_response_clear(&r);
    return rc;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    cli_signals();
    static cli_ctx c; /* holds tokens: static, wiped at exit */
    int i = 1;
    const char *token_file = getenv("SIDECAST_TOKEN_FILE");
    const char *cacert = getenv("SIDECAST_CACERT");
    while (i < argc && argv[i][0] == '-') {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(usage_main, stdout);
            return CLI_EXIT_OK;
        }
        if (strcmp(argv[i], "--token-file") == 0 && i + 1 < argc) {
            token_file = argv[i + 1];
            i += 2;
            continue;
        }
        if (strcmp(argv[i], "--cacert") == 0 && i + 1 < argc) {
            cacert = argv[i + 1];
            i += 2;
            continue;
        }
        fprintf(stderr, "sidecast: unknown option %s\n\n%s", argv[i], usage_main);
        return CLI_EXIT_USAGE;
    }
    if (i >= argc) {
        fputs(usage_main, stderr);
        return CLI_EXIT_USAGE;
    }
    const char *cmd = argv[i];
    if (strcmp(cmd, "bench") == 0) return cli_bench(argc - i - 1, argv + i + 1); /* own options */
    args a;
    memset(&a, 0, sizeof a);
    if (parse_args(argc - i - 1, argv + i + 1, &a) < 0) return CLI_EXIT_USAGE;
    if (tok_path(token_file, getenv("HOME"), c.token_path, sizeof c.token_path) < 0) {
        fprintf(stderr, "sidecast: no token file: set SIDECAST_TOKEN_FILE or HOME\n");
        return CLI_EXIT_USAGE;
    }
    c.edge_url = a.edge ? a.edge : getenv("SIDECAST_EDGE");
    if (a.cacert) cacert = a.cacert;
    c.tls.cafile = cacert && *cacert ? cacert : NULL;
    /* a CA file given is read now, so that a wrong path is said at once (without one, the
     * system's trust store is loaded on the first TLS connection, if there is one) */
    if (c.tls.cafile && !a.help && net_tls_load(&c.tls) < 0) {
        fprintf(stderr, "sidecast: %s%s\n", c.tls.error, a.cacert ? "" : " (from SIDECAST_CACERT)");
        return CLI_EXIT_USAGE;
    }
    int rc;
    if (strcmp(cmd, "login") == 0)
        rc = cmd_login(&c, &a, getenv("SIDECAST_GATEWAY"), getenv("SIDECAST_PASSWORD"));
    else if (strcmp(cmd, "listen") == 0)
        rc = cmd_listen(&c, &a);
    else if (strcmp(cmd, "publish") == 0)
        rc = cmd_publish(&c, &a);
    else if (strcmp(cmd, "order") == 0)
        rc = cmd_order(&c, &a);
    else if (strcmp(cmd, "api") == 0)
        rc = cmd_api(&c, &a, getenv("SIDECAST_GATEWAY"), getenv("SIDECAST_CLIENT_ID"),
                     getenv("SIDECAST_CLIENT_SECRET"));
    else if (strcmp(cmd, "help") == 0)
        rc = (fputs(usage_main, stdout), CLI_EXIT_OK);
    else {
        fprintf(stderr, "sidecast: unknown command %s\n\n%s", cmd, usage_main);
        rc = CLI_EXIT_USAGE;
    }
    tok_clear(&c.tok);
    net_tls_clear(&c.tls);
    return rc;
}
