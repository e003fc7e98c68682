/* api.c - the server API on the edge; see api.h. */
#include "api.h"

#include "contract.h"
#include "log.h"
#include "metrics.h"
#include "proto/msg.h"
#include "proto/topic.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define API_HISTORY_MAX_BYTES (512 * 1024) /* a history answer stops growing past this */
#define API_MAX_EDGES 256                  /* answers gathered from the edges */

/* ---- parsing (pure) ------------------------------------------------------------------------ */

static const struct {
    const char *subject;
    api_action action;
} subjects[] = {
    {SUBJ_API_PUBLISH, API_PUBLISH},
    {SUBJ_API_BROADCAST, API_BROADCAST},
    {SUBJ_API_DISCONNECT, API_DISCONNECT},
    {SUBJ_API_PRESENCE_USER, API_PRESENCE_USER},
    {SUBJ_API_PRESENCE_TOPIC, API_PRESENCE_TOPIC},
    {SUBJ_API_HISTORY, API_HISTORY},
    {SUBJ_API_COUNTS, API_COUNTS},
};
static const char *action_names[] = {"publish",        "broadcast", "disconnect", "presence_user",
                                     "presence_topic", "history",   "counts"};

int api_action_of(const char *subject, api_action *out)
{
    for (size_t i = 0; subject && i < sizeof subjects / sizeof subjects[0]; i++)
        if (strcmp(subject, subjects[i].subject) == 0) {
            *out = subjects[i].action;
            return 0;
        }
    return -1;
}

uint16_t api_close_code(bool reconnect)
{
    return reconnect ? MSG_CLOSE_SERVER : MSG_CLOSE_FORBIDDEN;
}

void api_req_free(api_req *r)
{
    if (!r) return;
    free(r->topic);
    for (int i = 0; i < r->ntopics; i++) free(r->topics[i]);
    free(r->topics);
    free(r->data);
    free(r->key);
    free(r->user);
    free(r->conn);
    free(r->reason);
    memset(r, 0, sizeof *r);
}

static int fail(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *why, size_t whylen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (why && whylen) vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
    return -1;
}

/* A field of the request: the object itself, or body, params, query of an envelope. */
static json_t *field(json_t *root, bool envelope, const char *name, bool *from_query)
{
    *from_query = false;
    if (!envelope) return json_object_get(root, name);
    json_t *v = json_object_get(json_object_get(root, "body"), name);
    if (!v) v = json_object_get(json_object_get(root, "params"), name);
    if (!v && (v = json_object_get(json_object_get(root, "query"), name))) *from_query = true;
    return v;
}

static bool user_ok(const char *u)
{
    size_t n = strlen(u);
    if (n == 0 || n > API_USER_MAX) return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)u[i] < 0x21 || u[i] == 0x7f) return false;
    return true;
}

static bool key_ok(const char *k)
{
    size_t n = strlen(k);
    if (n == 0 || n > API_KEY_MAX) return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)k[i] < 0x21 || (unsigned char)k[i] > 0x7e) return false;
    return true;
}

/* A non-negative integer up to 2^53: a JSON integer, or a decimal string from a query.
 * 1: absent, 0: *out, -1: malformed. */
static int uint_field(json_t *v, bool from_query, uint64_t *out)
{
    if (!v || json_is_null(v)) return 1;
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 0 || i > MSG_SINCE_MAX) return -1;
        *out = (uint64_t)i;
        return 0;
    }
    if (from_query && json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t n = strlen(s);
        if (n == 0 || n > 16) return -1;
        uint64_t x = 0;
        for (size_t i = 0; i < n; i++) {
            if (s[i] < '0' || s[i] > '9') return -1;
            x = x * 10 + (uint64_t)(s[i] - '0');
        }
        if (x > (uint64_t)MSG_SINCE_MAX) return -1;
        *out = x;
        return 0;
    }
    return -1;
}

static int topic_field(json_t *root, bool env, const char *name, char **out, char *why,
                       size_t whylen)
{
    bool q;
    const char *t = json_string_value(field(root, env, name, &q));
    if (!t) return fail(why, whylen, "%s: a topic (a string) is required", name);
    if (topic_valid(t) != 1)
        return fail(why, whylen,
                    "%s: not a topic (1..128 bytes of [A-Za-z0-9_-] tokens separated by '.', no "
                    "wildcards)",
                    name);
    return (*out = strdup(t)) ? 0 : fail(why, whylen, "out of memory");
}

static int data_field(json_t *root, bool env, const api_limits *lim, char **out, char *why,
                      size_t whylen)
{
    bool q;
    json_t *d = field(root, env, "data", &q);
    if (!d || q) return fail(why, whylen, "data: any JSON value is required");
    char *text = json_dumps(d, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text) return fail(why, whylen, "out of memory");
    if (strlen(text) > lim->max_data) {
        free(text);
        return fail(why, whylen, "data: over %zu bytes (compact JSON)", lim->max_data);
    }
    *out = text;
    return 0;
}

static int key_field(json_t *root, bool env, char **out, char *why, size_t whylen)
{
    bool q;
    json_t *k = field(root, env, "idempotency_key", &q);
    if (!k || json_is_null(k)) return 0;
    if (!json_is_string(k) || !key_ok(json_string_value(k)))
        return fail(why, whylen,
                    "idempotency_key: 1..%d printable ASCII bytes without spaces (a UUID)",
                    API_KEY_MAX);
    return (*out = strdup(json_string_value(k))) ? 0 : fail(why, whylen, "out of memory");
}

static int parse_broadcast(json_t *root, bool env, const api_limits *lim, api_req *r, char *why,
                           size_t whylen)
{
    bool q;
    json_t *ts = field(root, env, "topics", &q), *t;
    size_t n = json_array_size(ts), i;
    if (!json_is_array(ts) || n == 0)
        return fail(why, whylen, "topics: an array of 1..%d topics is required", lim->max_topics);
    if (n > (size_t)lim->max_topics)
        return fail(why, whylen, "topics: at most %d topics per broadcast", lim->max_topics);
    if (!(r->topics = calloc(n, sizeof *r->topics))) return fail(why, whylen, "out of memory");
    json_array_foreach(ts, i, t) {
        const char *s = json_string_value(t);
        if (!s || topic_valid(s) != 1)
            return fail(why, whylen, "topics[%zu]: not a topic (no wildcards)", i);
        for (int j = 0; j < r->ntopics; j++)
            if (strcmp(r->topics[j], s) == 0)
                return fail(why, whylen, "topics[%zu]: %s is given twice", i, s);
        if (!(r->topics[r->ntopics] = strdup(s))) return fail(why, whylen, "out of memory");
        r->ntopics++;
    }
    if (data_field(root, env, lim, &r->data, why, whylen) < 0) return -1;
    return key_field(root, env, &r->key, why, whylen);
}

static int parse_disconnect(json_t *root, bool env, api_req *r, char *why, size_t whylen)
{
    bool q;
    json_t *u = field(root, env, "user", &q), *c = field(root, env, "conn", &q);
    if ((u && !json_is_null(u)) == (c && !json_is_null(c)))
        return fail(why, whylen, "give either user or conn (a conn_id from welcome or presence)");
    if (u && !json_is_null(u)) {
        if (!json_is_string(u) || !user_ok(json_string_value(u)))
            return fail(why, whylen, "user: a user id of 1 to %d visible bytes", API_USER_MAX);
        if (!(r->user = strdup(json_string_value(u)))) return fail(why, whylen, "out of memory");
    } else {
        const char *s = json_string_value(c), *dash = s ? strrchr(s, '-') : NULL;
        bool ok = dash && dash > s && dash[1] && strlen(s) <= 200;
        for (const char *p = dash ? dash + 1 : ""; ok && *p; p++)
            if (*p < '0' || *p > '9') ok = false;
        if (!ok) return fail(why, whylen, "conn: a conn_id \"<edge>-<number>\" as in welcome");
        if (!(r->conn = strdup(s))) return fail(why, whylen, "out of memory");
    }
    json_t *reason = field(root, env, "reason", &q);
    const char *rs = "disconnected by the server";
    if (reason && !json_is_null(reason)) {
        if (!json_is_string(reason) || strlen(json_string_value(reason)) > API_REASON_MAX)
            return fail(why, whylen, "reason: a string of at most %d bytes", API_REASON_MAX);
        rs = json_string_value(reason);
    }
    if (!(r->reason = strdup(rs))) return fail(why, whylen, "out of memory");
    json_t *rc = field(root, env, "reconnect", &q);
    r->reconnect = true;
    if (rc && !json_is_null(rc)) {
        if (q && json_is_string(rc) &&
            (!strcmp(json_string_value(rc), "true") || !strcmp(json_string_value(rc), "false")))
            r->reconnect = !strcmp(json_string_value(rc), "true");
        else if (json_is_boolean(rc))
            r->reconnect = json_is_true(rc);
        else
            return fail(why, whylen, "reconnect: true or false");
    }
    return 0;
}

static int parse_history(json_t *root, bool env, const api_limits *lim, api_req *r, char *why,
                         size_t whylen)
{
    if (topic_field(root, env, "topic", &r->topic, why, whylen) < 0) return -1;
    bool q = false;
    uint64_t v = 0;
    json_t *f = field(root, env, "since", &q);
    int rc = uint_field(f, q, &v);
    if (rc < 0) return fail(why, whylen, "since: a sequence, 0..2^53");
    r->since = rc == 0 ? v : 0;
    f = field(root, env, "limit", &q);
    rc = uint_field(f, q, &v);
    if (rc < 0 || (rc == 0 && (v < 1 || v > (uint64_t)lim->max_history)))
        return fail(why, whylen, "limit: 1..%d", lim->max_history);
    r->limit = rc == 0 ? (int)v : lim->default_limit;
    return 0;
}

int api_parse(api_action action, const char *data, size_t len, const api_limits *lim, api_req *out,
              char *why, size_t whylen)
{
    memset(out, 0, sizeof *out);
    out->action = action;
    json_error_t err;
    json_t *root = len ? json_loadb(data, len, JSON_REJECT_DUPLICATES, &err) : json_object();
    if (!json_is_object(root)) {
        json_decref(root);
        return fail(why, whylen, "the request must be a JSON object");
    }
    /* the gateway's envelope: method and path strings, body an object or null */
    json_t *body = json_object_get(root, "body");
    bool env = json_is_string(json_object_get(root, "method")) &&
               json_is_string(json_object_get(root, "path")) &&
               (json_is_object(body) || json_is_null(body));
    int rc = 0;
    bool q;
    switch (action) {
    case API_PUBLISH:
        rc = topic_field(root, env, "topic", &out->topic, why, whylen);
        if (rc == 0) rc = data_field(root, env, lim, &out->data, why, whylen);
        if (rc == 0) rc = key_field(root, env, &out->key, why, whylen);
        break;
    case API_BROADCAST: rc = parse_broadcast(root, env, lim, out, why, whylen); break;
    case API_DISCONNECT: rc = parse_disconnect(root, env, out, why, whylen); break;
    case API_PRESENCE_USER: {
        const char *u = json_string_value(field(root, env, "user", &q));
        if (!u || !user_ok(u))
            rc = fail(why, whylen, "user: a user id of 1 to %d visible bytes", API_USER_MAX);
        else if (!(out->user = strdup(u)))
            rc = fail(why, whylen, "out of memory");
        break;
    }
    case API_PRESENCE_TOPIC: rc = topic_field(root, env, "topic", &out->topic, why, whylen); break;
    case API_HISTORY: rc = parse_history(root, env, lim, out, why, whylen); break;
    case API_COUNTS: break;
    }
    json_decref(root);
    if (rc < 0) api_req_free(out);
    return rc;
}

int api_conn_on_edge(const char *conn_id, const char *edge_id, uint64_t *conn)
{
    const char *dash = strrchr(conn_id, '-');
    size_t n = strlen(edge_id);
    if (!dash || (size_t)(dash - conn_id) != n || strncmp(conn_id, edge_id, n) != 0) return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(dash + 1, &end, 10);
    if (errno || *end || end == dash + 1) return -1;
    *conn = v;
    return 0;
}

/* ---- the service ---------------------------------------------------------------------------- */

struct api {
    api_cfg cfg;
    char *edge_id, *stream, direct[160];
    bus *b;
    bus_sub *sub, *ctl_disc, *ctl_counts;
    pthread_mutex_t lock; /* the queue, stop */
    pthread_cond_t cond;
    bus_msg **q; /* ring of cfg.queue requests */
    int qhead, qlen;
    bool stop;
    pthread_t *threads;
    int nthreads;
    metric *m_busy, *m_too_large;
};

static void reply(api *a, const bus_msg *msg, int status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (bus_msg_reply(msg) && *bus_msg_reply(msg))
        bus_respond_json(a->b, msg, text ? status : 500,
                         text ? text
                              : "{\"error\":\"internal_error\",\"message\":\"out of memory\"}");
    free(text);
}

static void reply_error(api *a, const bus_msg *msg, int status, const char *error,
                        const char *message)
{
    reply(a, msg, status, json_pack("{s:s, s:s}", "error", error, "message", message));
}

static void count(api_action action, const char *result)
{
    char labels[96];
    snprintf(labels, sizeof labels, "action=\"%s\",result=\"%s\"", action_names[action], result);
    metric_inc(metrics_counter("sc_edge_api_requests_total", labels,
                               "server API requests answered by this edge, by action and "
                               "result (ok, invalid, failed)"));
}

static const char *bus_why(int rc)
{
    return rc == SC_ENORESPONDERS ? "nobody answered on the bus"
           : rc == -ETIMEDOUT     ? "the bus did not answer in time"
                                  : "the bus is unavailable";
}

/* One JetStream publish to events.<topic> (with Nats-Msg-Id when key): 0 with *seq and *dup,
 * or a negative code with why. */
static int store_one(api *a, const char *topic, const char *data, const char *key, uint64_t *seq,
                     bool *dup, const char **why)
{
    char subject[160];
    snprintf(subject, sizeof subject, "%s%s", SUBJ_EVENTS_PREFIX, topic);
    bus_hdr h = {"Nats-Msg-Id", key};
    bus_msg *ack = NULL;
    int rc = bus_request(a->b, subject, data, strlen(data), key ? &h : NULL, key ? 1 : 0,
                         a->cfg.timeout_ms, &ack);
    if (rc != 0) {
        *why = rc == SC_ENORESPONDERS ? "the history stream is not there (no responders)"
                                      : bus_why(rc);
        return rc;
    }
    json_t *j = json_loadb(bus_msg_data(ack), bus_msg_len(ack), 0, NULL);
    rc = -EIO;
    *why = "the history stream refused the event";
    if (json_is_integer(json_object_get(j, "seq")) && !json_object_get(j, "error")) {
        *seq = (uint64_t)json_integer_value(json_object_get(j, "seq"));
        *dup = json_is_true(json_object_get(j, "duplicate"));
        rc = 0;
    }
    json_decref(j);
    bus_msg_destroy(ack);
    return rc;
}

static void do_publish(api *a, const bus_msg *msg, const api_req *r)
{
    uint64_t seq = 0;
    bool dup = false;
    const char *why = NULL;
    if (store_one(a, r->topic, r->data, r->key, &seq, &dup, &why) != 0) {
        count(API_PUBLISH, "failed");
        reply_error(a, msg, 503, "unavailable", why);
        return;
    }
    count(API_PUBLISH, "ok");
    reply(a, msg, 200,
          json_pack("{s:s, s:I, s:b}", "topic", r->topic, "seq", (json_int_t)seq, "duplicate",
                    dup));
}

static void do_broadcast(api *a, const bus_msg *msg, const api_req *r)
{
    int n = r->ntopics;
    bus_req *reqs = calloc((size_t)n, sizeof *reqs);
    bus_msg **acks = calloc((size_t)n, sizeof *acks);
    int *results = calloc((size_t)n, sizeof *results);
    char(*subj)[160] = calloc((size_t)n, sizeof *subj);
    char(*keys)[API_KEY_MAX + 140] = calloc((size_t)n, sizeof *keys);
    bus_hdr *hdrs = calloc((size_t)n, sizeof *hdrs);
    json_t *out = json_array();
    if (!reqs || !acks || !results || !subj || !keys || !hdrs || !out) {
        reply_error(a, msg, 500, "internal_error", "out of memory");
        goto done;
    }
    size_t dlen = strlen(r->data);
    for (int i = 0; i < n; i++) {
        snprintf(subj[i], sizeof subj[i], "%s%s", SUBJ_EVENTS_PREFIX, r->topics[i]);
        reqs[i] = (bus_req){subj[i], r->data, dlen, NULL, 0};
        if (r->key) { /* one message id per topic: the stream dedups across its subjects */
            snprintf(keys[i], sizeof keys[i], "%s:%s", r->key, r->topics[i]);
            hdrs[i] = (bus_hdr){"Nats-Msg-Id", keys[i]};
            reqs[i].hdrs = &hdrs[i];
            reqs[i].nhdr = 1;
        }
    }
    if (bus_request_many(a->b, reqs, (size_t)n, a->cfg.timeout_ms, acks, results) != 0) {
        count(API_BROADCAST, "failed");
        reply_error(a, msg, 503, "unavailable", "the bus is unavailable");
        goto done;
    }
    int ok = 0;
    for (int i = 0; i < n; i++) {
        json_t *j = results[i] == 0 && acks[i]
                        ? json_loadb(bus_msg_data(acks[i]), bus_msg_len(acks[i]), 0, NULL)
                        : NULL;
        if (json_is_integer(json_object_get(j, "seq")) && !json_object_get(j, "error")) {
            ok++;
            json_array_append_new(out, json_pack("{s:s, s:O, s:b}", "topic", r->topics[i], "seq",
                                                 json_object_get(j, "seq"), "duplicate",
                                                 json_is_true(json_object_get(j, "duplicate"))));
        } else {
            json_array_append_new(out, json_pack("{s:s, s:s}", "topic", r->topics[i], "error",
                                                 results[i] ? bus_why(results[i])
                                                            : "the stream refused it"));
        }
        json_decref(j);
    }
    count(API_BROADCAST, ok ? "ok" : "failed");
    reply(a, msg, ok ? 200 : 503,
          json_pack("{s:i, s:i, s:O}", "published", ok, "failed", n - ok, "results", out));
done:
    for (int i = 0; acks && i < n; i++) bus_msg_destroy(acks[i]);
    json_decref(out);
    free(reqs);
    free(acks);
    free(results);
    free(subj);
    free(keys);
    free(hdrs);
}

/* ---- gathering the answers of every edge ----------------------------------------------------- */

typedef struct gather {
    pthread_mutex_t lock;
    json_t *answers; /* array */
} gather;

static void on_gathered(bus_msg *m, void *ud)
{
    gather *g = ud;
    json_t *j = json_loadb(bus_msg_data(m), bus_msg_len(m), 0, NULL);
    pthread_mutex_lock(&g->lock);
    if (json_is_object(j) && json_array_size(g->answers) < API_MAX_EDGES)
        json_array_append(g->answers, j);
    pthread_mutex_unlock(&g->lock);
    json_decref(j);
    bus_msg_destroy(m);
}

/* Publishes body on subject to every edge and returns their answers (an array; NULL when the
 * bus failed), gathered for cfg.gather_ms. */
static json_t *ask_edges(api *a, const char *subject, const char *body)
{
    char inbox[160];
    gather *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    pthread_mutex_init(&g->lock, NULL);
    bus_sub *s = NULL;
    json_t *answers = NULL;
    if (!(g->answers = json_array()) || bus_new_inbox(a->b, inbox, sizeof inbox) != 0 ||
        bus_subscribe(a->b, inbox, NULL, on_gathered, g, &s) != 0)
        goto done;
    if (bus_flush(a->b, a->cfg.timeout_ms) == 0 &&
        bus_publish(a->b, subject, inbox, body, strlen(body), NULL, 0) == 0) {
        struct timespec ts = {a->cfg.gather_ms / 1000, (long)(a->cfg.gather_ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
        answers = g->answers; /* returned only once the callback can no longer run */
    }
    if (bus_unsubscribe(s) != 0) {
        /* the callback may still run: g (and its answers) stay allocated, as bus.h asks */
        log_warn("api gather not unsubscribed", "subject=%s", subject);
        return NULL;
    }
    s = NULL;
done:
    if (!answers) json_decref(g->answers);
    pthread_mutex_destroy(&g->lock);
    free(g);
    return answers;
}

static void do_disconnect(api *a, const bus_msg *msg, const api_req *r)
{
    uint16_t code = api_close_code(r->reconnect);
    json_t *ctl = json_pack("{s:i, s:s}", "code", code, "reason", r->reason);
    if (ctl)
        json_object_set_new(ctl, r->user ? "user" : "conn",
                            json_string(r->user ? r->user : r->conn));
    char *body = ctl ? json_dumps(ctl, JSON_COMPACT) : NULL;
    json_decref(ctl);
    json_t *answers = body ? ask_edges(a, SUBJ_EDGES_DISCONNECT, body) : NULL;
    free(body);
    if (!answers) {
        count(API_DISCONNECT, "failed");
        reply_error(a, msg, 503, "unavailable", "the bus is unavailable");
        return;
    }
    json_int_t closed = 0;
    size_t i;
    json_t *v;
    json_array_foreach(answers, i, v) closed += json_integer_value(json_object_get(v, "closed"));
    log_info("api disconnect", "user=%s conn=%s code=%u closed=%lld edges=%zu",
             r->user ? r->user : "-", r->conn ? r->conn : "-", (unsigned)code, (long long)closed,
             json_array_size(answers));
    count(API_DISCONNECT, "ok");
    reply(a, msg, 200,
          json_pack("{s:I, s:I, s:i, s:b, s:o}", "closed", closed, "edges",
                    (json_int_t)json_array_size(answers), "code", code, "reconnect", r->reconnect,
                    "by_edge", answers));
}

static void do_counts(api *a, const bus_msg *msg)
{
    json_t *answers = ask_edges(a, SUBJ_EDGES_COUNTS, "{}");
    if (!answers) {
        count(API_COUNTS, "failed");
        reply_error(a, msg, 503, "unavailable", "the bus is unavailable");
        return;
    }
    json_int_t conns = 0, users = 0, topics = 0;
    size_t i;
    json_t *v;
    json_array_foreach(answers, i, v) {
        conns += json_integer_value(json_object_get(v, "connections"));
        users += json_integer_value(json_object_get(v, "users"));
        topics += json_integer_value(json_object_get(v, "topics"));
    }
    count(API_COUNTS, "ok");
    reply(a, msg, 200,
          json_pack("{s:I, s:I, s:I, s:I, s:o}", "connections", conns, "users", users, "topics",
                    topics, "edges", (json_int_t)json_array_size(answers), "by_edge", answers));
}

/* presence.get / presence.occupancy, asked as a service (no Sidecast-User): their answer and
 * status are passed on as they are. */
static void do_presence(api *a, const bus_msg *msg, const api_req *r)
{
    json_t *q = r->action == API_PRESENCE_USER ? json_pack("{s:{s:s}}", "params", "user", r->user)
                                               : json_pack("{s:s}", "topic", r->topic);
    char *body = q ? json_dumps(q, JSON_COMPACT) : NULL;
    json_decref(q);
    bus_msg *ans = NULL;
    int rc = body ? bus_request(a->b,
                                r->action == API_PRESENCE_USER ? SUBJ_PRESENCE_GET
                                                               : SUBJ_OCCUPANCY_GET,
                                body, strlen(body), NULL, 0, a->cfg.timeout_ms, &ans)
                  : -ENOMEM;
    free(body);
    if (rc != 0) {
        count(r->action, "failed");
        reply_error(a, msg, 503, "unavailable",
                    rc == SC_ENORESPONDERS ? "presence is off (the edges run without REDIS_URL)"
                                           : bus_why(rc));
        return;
    }
    const char *st = bus_msg_header(ans, HDR_STATUS);
    int status = st ? atoi(st) : 200;
    count(r->action, status == 200 ? "ok" : "failed");
    bus_respond_json(a->b, msg, status, bus_msg_data(ans));
    bus_msg_destroy(ans);
}

/* Reads the topic's retained events after since by direct get, one at a time. */
static void do_history(api *a, const bus_msg *msg, const api_req *r)
{
    char subject[160], body[300];
    snprintf(subject, sizeof subject, "%s%s", SUBJ_EVENTS_PREFIX, r->topic);
    json_t *events = json_array();
    uint64_t next = r->since;
    size_t bytes = 0;
    bool more = false;
    const char *failed = NULL;
    while (events && json_array_size(events) < (size_t)r->limit) {
        snprintf(body, sizeof body, "{\"seq\":%llu,\"next_by_subj\":\"%s\"}",
                 (unsigned long long)(next + 1), subject);
        bus_msg *m = NULL;
        int rc = bus_request(a->b, a->direct, body, strlen(body), NULL, 0, a->cfg.timeout_ms, &m);
        if (rc != 0) {
            failed = bus_why(rc);
            break;
        }
        const char *st = bus_msg_header(m, "Status");
        const char *sq = bus_msg_header(m, "Nats-Sequence");
        if (st || !sq) { /* 404: nothing after it; 408 and others: the stream's trouble */
            if (st && strcmp(st, "404") != 0) failed = "the history stream refused the read";
            bus_msg_destroy(m);
            break;
        }
        uint64_t seq = strtoull(sq, NULL, 10);
        if (seq <= next) { /* never backwards: a broken answer must not loop */
            bus_msg_destroy(m);
            failed = "the history stream answered out of order";
            break;
        }
        next = seq;
        json_t *data = json_loadb(bus_msg_data(m), bus_msg_len(m), JSON_DECODE_ANY, NULL);
        if (data) { /* what is not JSON never reaches a client either */
            bytes += bus_msg_len(m) + 64;
            const char *ts = bus_msg_header(m, "Nats-Time-Stamp");
            json_array_append_new(events, json_pack("{s:I, s:o, s:s}", "seq", (json_int_t)seq,
                                                    "data", data, "time", ts ? ts : ""));
        }
        bus_msg_destroy(m);
        if (bytes > API_HISTORY_MAX_BYTES) {
            more = true;
            break;
        }
    }
    if (!more && !failed && events && json_array_size(events) == (size_t)r->limit) more = true;
    if (failed && json_array_size(events) == 0) {
        json_decref(events);
        count(API_HISTORY, "failed");
        reply_error(a, msg, 503, "unavailable", failed);
        return;
    }
    count(API_HISTORY, "ok");
    /* more: there may be more after next (the limit or the byte bound stopped the walk) */
    reply(a, msg, 200,
          json_pack("{s:s, s:o, s:I, s:b}", "topic", r->topic, "events", events, "next",
                    (json_int_t)next, "more", more || failed));
}

static void handle(api *a, bus_msg *msg)
{
    api_action action;
    if (api_action_of(bus_msg_subject(msg), &action) != 0) {
        reply_error(a, msg, 404, "not_found", "no such server API call");
        return;
    }
    api_req r;
    char why[200];
    if (api_parse(action, bus_msg_data(msg), bus_msg_len(msg), &a->cfg.lim, &r, why, sizeof why) !=
        0) {
        count(action, "invalid");
        reply_error(a, msg, 400, "invalid_request", why);
        return;
    }
    switch (action) {
    case API_PUBLISH: do_publish(a, msg, &r); break;
    case API_BROADCAST: do_broadcast(a, msg, &r); break;
    case API_DISCONNECT: do_disconnect(a, msg, &r); break;
    case API_PRESENCE_USER:
    case API_PRESENCE_TOPIC: do_presence(a, msg, &r); break;
    case API_HISTORY: do_history(a, msg, &r); break;
    case API_COUNTS: do_counts(a, msg); break;
    }
    api_req_free(&r);
}

static void *api_main(void *arg)
{
    api *a = arg;
    pthread_mutex_lock(&a->lock);
    for (;;) {
        while (!a->qlen && !a->stop) pthread_cond_wait(&a->cond, &a->lock);
        if (!a->qlen) break; /* stopping, nothing left */
        bus_msg *m = a->q[a->qhead];
        a->qhead = (a->qhead + 1) % a->cfg.queue;
        a->qlen--;
        pthread_mutex_unlock(&a->lock);
        handle(a, m);
        bus_msg_destroy(m);
        pthread_mutex_lock(&a->lock);
    }
    pthread_mutex_unlock(&a->lock);
    return NULL;
}

/* nats.c thread: queue the request for the API's threads (full: 503 at once). */
static void on_request(bus_msg *msg, void *ud)
{
    api *a = ud;
    if (bus_msg_len(msg) > a->cfg.max_request) {
        metric_inc(a->m_too_large);
        reply_error(a, msg, 413, "payload_too_large", "the request is over EDGE_API_MAX_REQUEST");
        bus_msg_destroy(msg);
        return;
    }
    pthread_mutex_lock(&a->lock);
    bool queued = !a->stop && a->qlen < a->cfg.queue;
    if (queued) {
        a->q[(a->qhead + a->qlen) % a->cfg.queue] = msg;
        a->qlen++;
        pthread_cond_signal(&a->cond);
    }
    pthread_mutex_unlock(&a->lock);
    if (!queued) {
        metric_inc(a->m_busy);
        reply_error(a, msg, 503, "busy", "the server API is busy, try again");
        bus_msg_destroy(msg);
    }
}

/* ---- control messages from other edges (nats.c thread, never blocking) ------------------------
 */

typedef struct ctl_disc {
    bus *b;
    bus_msg *msg;
    char edge[128];
    atomic_int pending; /* workers still to answer, + 1 while the request is being handed out */
    atomic_int closed;
} ctl_disc;

static void ctl_disc_release(ctl_disc *d)
{
    if (atomic_fetch_sub(&d->pending, 1) != 1) return;
    char out[256];
    int n = snprintf(out, sizeof out, "{\"edge\":\"%s\",\"closed\":%d}", d->edge,
                     atomic_load(&d->closed));
    if (n > 0 && (size_t)n < sizeof out && bus_msg_reply(d->msg) && *bus_msg_reply(d->msg))
        bus_respond(d->b, d->msg, out, (size_t)n, NULL, 0);
    bus_msg_destroy(d->msg);
    free(d);
}

static void ctl_disc_done(void *ud, int closed)
{
    ctl_disc *d = ud;
    atomic_fetch_add(&d->closed, closed);
    ctl_disc_release(d);
}

static void on_ctl_disconnect(bus_msg *msg, void *ud)
{
    api *a = ud;
    json_t *j = json_loadb(bus_msg_data(msg), bus_msg_len(msg), 0, NULL);
    const char *user = json_string_value(json_object_get(j, "user"));
    const char *conn_id = json_string_value(json_object_get(j, "conn"));
    const char *reason = json_string_value(json_object_get(j, "reason"));
    json_int_t code = json_integer_value(json_object_get(j, "code"));
    uint64_t conn = 0;
    ctl_disc *d = calloc(1, sizeof *d);
    if (!d) {
        json_decref(j);
        bus_msg_destroy(msg);
        return;
    }
    d->b = a->b;
    d->msg = msg;
    snprintf(d->edge, sizeof d->edge, "%s", a->edge_id);
    atomic_init(&d->pending, 1);
    bool valid = (code == MSG_CLOSE_FORBIDDEN || code == MSG_CLOSE_SERVER) && reason &&
                 ((user && user_ok(user)) ||
                  (!user && conn_id && api_conn_on_edge(conn_id, a->edge_id, &conn) == 0));
    /* conn of another edge: nothing here, answered with 0 all the same */
    if (valid && a->cfg.disconnect) {
        atomic_fetch_add(&d->pending, 64); /* at most one hand-out per worker */
        int asked = a->cfg.disconnect(a->cfg.disconnect_ud, user, conn, (uint16_t)code, reason,
                                      ctl_disc_done, d);
        atomic_fetch_sub(&d->pending, 64 - asked);
    }
    json_decref(j);
    ctl_disc_release(d);
}

static void on_ctl_counts(bus_msg *msg, void *ud)
{
    api *a = ud;
    long conns = 0, users = 0, topics = 0;
    if (a->cfg.counts) a->cfg.counts(a->cfg.counts_ud, &conns, &users, &topics);
    json_t *j = json_pack("{s:s, s:I, s:I, s:I}", "edge", a->edge_id, "connections",
                          (json_int_t)conns, "users", (json_int_t)users, "topics",
                          (json_int_t)topics);
    reply(a, msg, 0, j);
    bus_msg_destroy(msg);
}

/* ---- life ------------------------------------------------------------------------------------ */

int api_create(api **out, const api_cfg *cfg, bus *b)
{
    api *a = calloc(1, sizeof *a);
    if (!a) return -ENOMEM;
    a->cfg = *cfg;
    a->b = b;
    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->cond, NULL);
    int rc = -ENOMEM;
    a->edge_id = strdup(cfg->edge_id);
    a->stream = strdup(cfg->stream);
    a->q = calloc((size_t)cfg->queue, sizeof *a->q);
    a->threads = calloc((size_t)cfg->threads + 1, sizeof *a->threads);
    if (!a->edge_id || !a->stream || !a->q || !a->threads) goto error;
    a->cfg.edge_id = a->edge_id;
    a->cfg.stream = a->stream;
    snprintf(a->direct, sizeof a->direct, "$JS.API.DIRECT.GET.%s", a->stream);
    a->m_busy = metrics_counter("sc_edge_api_busy_total", NULL,
                                "server API requests refused 503 because EDGE_API_QUEUE was full");
    a->m_too_large = metrics_counter("sc_edge_api_too_large_total", NULL,
                                     "server API requests over EDGE_API_MAX_REQUEST (413)");
    for (; a->nthreads < cfg->threads; a->nthreads++) {
        if (pthread_create(&a->threads[a->nthreads], NULL, api_main, a) != 0) {
            rc = -EAGAIN;
            goto error;
        }
        pthread_setname_np(a->threads[a->nthreads], "edge-api");
    }
    rc = -EIO;
    /* no threads: this edge answers the control subjects only, not the API itself */
    if ((cfg->threads > 0 &&
         bus_subscribe(b, SUBJ_API_PREFIX ">", QUEUE_EDGE, on_request, a, &a->sub) != 0) ||
        bus_subscribe(b, SUBJ_EDGES_DISCONNECT, NULL, on_ctl_disconnect, a, &a->ctl_disc) != 0 ||
        bus_subscribe(b, SUBJ_EDGES_COUNTS, NULL, on_ctl_counts, a, &a->ctl_counts) != 0)
        goto error;
    *out = a;
    return 0;
error:
    api_destroy(a);
    return rc;
}

void api_destroy(api *a)
{
    if (!a) return;
    bus_unsubscribe(a->sub);
    bus_unsubscribe(a->ctl_disc);
    bus_unsubscribe(a->ctl_counts);
    pthread_mutex_lock(&a->lock);
    a->stop = true;
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->lock);
    for (int i = 0; i < a->nthreads; i++) pthread_join(a->threads[i], NULL);
    pthread_mutex_destroy(&a->lock);
    pthread_cond_destroy(&a->cond);
    free(a->q);
    free(a->threads);
    free(a->edge_id);
    free(a->stream);
    free(a);
}
