/* service.c - the producer's NATS handlers: orders in, fills and chat events out. */
#include "service.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "contract.h"
#include "fills.h"
#include "log.h"
#include "metrics.h"
#include "orders.h"

enum { NSUBS = 6 };
enum result { R_ACCEPTED, R_INVALID, R_UNAVAILABLE, R_FOUND, R_NOT_FOUND, R_LISTED, NRESULTS };
static const char *const result_names[NRESULTS] = {"accepted", "invalid",   "unavailable",
                                                   "found",    "not_found", "listed"};

struct prodsvc {
    bus *b;
    ticker *t;
    prod_cfg cfg;
    order_store *store;
    filler *fills;
    bus_sub *subs[NSUBS];
    metric *orders[NRESULTS];
    metric *fills_done, *fill_errors, *chat_relayed, *chat_dropped, *chat_errors;
};

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t random_u64(void)
{
    uint64_t v = 0;
    if (RAND_bytes((unsigned char *)&v, sizeof v) != 1) {
        /* Order ids need only be unique, not secret; fall back to time and address bits. */
        static uint64_t counter;
        v = ((uint64_t)wall_ms() << 20) ^ __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
    }
    return v;
}

/* Replies with a JSON value (stolen) and a status; logs a failure once. */
static void reply(prodsvc *s, const bus_msg *msg, int status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;
    int rc;
    json_decref(body);
    if (!text) {
        status = 500;
        text = strdup("{\"error\":\"internal_error\",\"message\":\"out of memory\"}");
        if (!text) return;
    }
    if (bus_msg_reply(msg) && *bus_msg_reply(msg)) {
        rc = bus_respond_json(s->b, msg, status, text);
        if (rc < 0)
            log_warn("reply failed", "subject=%s err=\"%s\"", bus_msg_subject(msg),
                     sc_strerror(rc));
    } else {
        log_debug("request without reply subject", "subject=%s", bus_msg_subject(msg));
    }
    free(text);
}

static void reply_error(prodsvc *s, const bus_msg *msg, int status, const char *code,
                        const char *message)
{
    json_t *j = json_pack("{s:s, s:s}", "error", code, "message", message);
    reply(s, msg, status, j);
}

/* The caller (Sidecast-User) and the envelope, common to the three order subjects. Returns
 * the user, or NULL after answering 400. */
static const char *begin(prodsvc *s, const bus_msg *msg, json_t **env)
{
    const char *user = bus_msg_header(msg, HDR_USER);
    char err[160];
    *env = NULL;
    if (!user || !*user) {
        reply_error(s, msg, 400, "invalid_request",
                    "no Sidecast-User header: this API needs a signed-in caller");
        return NULL;
    }
    if (!orders_user_valid(user)) {
        reply_error(s, msg, 400, "invalid_request", "user id cannot be addressed on the bus");
        return NULL;
    }
    if (orders_parse_envelope(bus_msg_data(msg), bus_msg_len(msg), env, err, sizeof err) < 0) {
        reply_error(s, msg, 400, "invalid_request", err);
        return NULL;
    }
    return user;
}

static void on_create(bus_msg *msg, void *ud)
{
    prodsvc *s = ud;
    json_t *env = NULL, *j;
    const char *user = begin(s, msg, &env);
    fill_job job;
    char err[160];
    int rc;

    if (!user) {
        metric_inc(s->orders[R_INVALID]);
        goto done;
    }
    memset(&job, 0, sizeof job);
    if (orders_validate(json_object_get(env, "body"), &job.o, err, sizeof err) < 0) {
        metric_inc(s->orders[R_INVALID]);
        reply_error(s, msg, 400, "invalid_request", err);
        goto done;
    }
    orders_make_id(job.o.id, random_u64());
    job.o.status = ORDER_ACCEPTED;
    job.o.created_ms = wall_ms();
    snprintf(job.user, sizeof job.user, "%s", user);
    /* Stored first, so that a fill (even with no delay) finds it. */
    rc = order_store_add(s->store, user, &job.o);
    if (rc == 0) {
        rc = filler_add(s->fills, &job, s->cfg.fill_delay_ms);
        if (rc < 0) order_store_remove(s->store, user, job.o.id);
    }
    if (rc < 0) {
        metric_inc(s->orders[R_UNAVAILABLE]);
        if (rc == -ENOSPC)
            log_warn("order refused: fill queue full", "user=%s max_pending=%zu", user,
                     s->cfg.max_pending);
        else
            log_error("order refused", "user=%s err=\"%s\"", user, strerror(-rc));
        reply_error(s, msg, 503, "unavailable", "too many pending orders, try again later");
        goto done;
    }
    metric_inc(s->orders[R_ACCEPTED]);
    j = orders_to_json(&job.o, user, 0);
    if (j) json_object_del(j, "created_at"); /* the 202 answer: the documented fields */
    reply(s, msg, 202, j);
    log_debug("order accepted", "user=%s order_id=%s symbol=%s", user, job.o.id,
              ticks_symbol(job.o.symbol));
done:
    json_decref(env);
    bus_msg_destroy(msg);
}

static void on_get(bus_msg *msg, void *ud)
{
    prodsvc *s = ud;
    json_t *env = NULL, *params;
    const char *user = begin(s, msg, &env), *id = NULL;
    order o;

    if (!user) {
        metric_inc(s->orders[R_INVALID]);
        goto done;
    }
    params = json_object_get(env, "params");
    if (json_is_object(params)) id = json_string_value(json_object_get(params, "id"));
    if (!id) {
        metric_inc(s->orders[R_INVALID]);
        reply_error(s, msg, 400, "invalid_request", "the order id (params.id) is missing");
        goto done;
    }
    if (!orders_id_valid(id) || order_store_get(s->store, user, id, &o) < 0) {
        metric_inc(s->orders[R_NOT_FOUND]);
        reply_error(s, msg, 404, "not_found", "no such order");
        goto done;
    }
    metric_inc(s->orders[R_FOUND]);
    reply(s, msg, 200, orders_to_json(&o, user, 1));
done:
    json_decref(env);
    bus_msg_destroy(msg);
}

static void on_list(bus_msg *msg, void *ud)
{
    prodsvc *s = ud;
    json_t *env = NULL, *arr = NULL, *j = NULL;
    const char *user = begin(s, msg, &env);
    order *v = NULL;
    size_t n;

    if (!user) {
        metric_inc(s->orders[R_INVALID]);
        goto done;
    }
    v = malloc(s->cfg.per_user * sizeof *v);
    arr = json_array();
    if (!v || !arr) goto oom;
    n = order_store_list(s->store, user, v, s->cfg.per_user);
    for (size_t i = 0; i < n; i++)
        if (json_array_append_new(arr, orders_to_json(&v[i], user, 1)) < 0) goto oom;
    j = json_pack("{s:o}", "orders", arr);
    arr = NULL;
    if (!j) goto oom;
    metric_inc(s->orders[R_LISTED]);
    reply(s, msg, 200, j);
    goto done;
oom:
    json_decref(arr);
    reply_error(s, msg, 500, "internal_error", "out of memory");
done:
    free(v);
    json_decref(env);
    bus_msg_destroy(msg);
}

#define FILL_PUBLISH_MS 15000 /* how long a fill waits for the stream (a leader election) */

/* Runs on the filler's thread when an order is due. */
static void on_fill(const fill_job *j, void *ud)
{
    prodsvc *s = ud;
    order o = j->o;
    char subject[ORDER_USER_MAX + 16], *text = NULL;
    json_t *ev;
    int rc;

    o.status = ORDER_FILLED;
    o.price = ticker_price(s->t, o.symbol);
    o.filled_ms = wall_ms();
    /* The user may have been dropped from the store meanwhile: the fill is still pushed. */
    (void)order_store_fill(s->store, j->user, o.id, o.price, o.filled_ms);
    ev = json_pack("{s:s, s:s, s:s, s:o, s:s, s:o, s:I}", "type", "order_filled", "order_id", o.id,
                   "symbol", ticks_symbol(o.symbol), "qty", orders_number(o.qty), "side",
                   orders_side_name(o.side), "price", orders_number(o.price), "filled_at",
                   (json_int_t)o.filled_ms);
    if (ev) text = json_dumps(ev, JSON_COMPACT | JSON_REAL_PRECISION(15));
    json_decref(ev);
    snprintf(subject, sizeof subject, SUBJ_USERS_PREFIX "%s", j->user);
    /* A fill is the answer to the user's request: stored by JetStream before it counts as
     * sent (a core publish during a stream leader election would be dropped), and the
     * order id as message id, so a retry is not stored twice. */
    char msg_id[64];
    snprintf(msg_id, sizeof msg_id, "fill-%s", o.id);
    rc = text ? bus_publish_stored(s->b, subject, text, strlen(text), msg_id, FILL_PUBLISH_MS, NULL)
              : -ENOMEM;
    if (rc == 0) {
        metric_inc(s->fills_done);
        log_debug("order filled", "user=%s order_id=%s price=%.2f", j->user, o.id, o.price);
        /* the same to whoever watches the order's own topic (orders.<id>: hooks.subscribe
         * lets only its owner in), stored like every event */
        snprintf(subject, sizeof subject, SUBJ_EVENTS_PREFIX "orders.%s", o.id);
        snprintf(msg_id, sizeof msg_id, "order-%s-filled", o.id);
        if (bus_publish_stored(s->b, subject, text, strlen(text), msg_id, FILL_PUBLISH_MS, NULL) !=
            0)
            log_warn("order event not published", "order_id=%s", o.id);
    } else {
        metric_inc(s->fill_errors);
        log_warn("fill not published", "user=%s order_id=%s err=\"%s\"", j->user, o.id,
                 sc_strerror(rc));
    }
    free(text);
}

/* client.chat.<room> from an edge -> events.chat.<room> for every subscriber. */
static void on_chat(bus_msg *msg, void *ud)
{
    prodsvc *s = ud;
    const char *user = bus_msg_header(msg, HDR_USER), *subj = bus_msg_subject(msg), *room;
    static const char prefix[] = SUBJ_CLIENT_PREFIX "chat.";
    char out_subj[192], *text = NULL;
    json_t *data = NULL, *ev = NULL;
    json_error_t je;
    int rc;

    if (!user || !*user || strncmp(subj, prefix, sizeof prefix - 1) != 0) {
        metric_inc(s->chat_dropped);
        log_debug("chat message without user dropped", "subject=%s", subj);
        goto done;
    }
    room = subj + sizeof prefix - 1;
    if (bus_msg_len(msg) > s->cfg.max_chat ||
        snprintf(out_subj, sizeof out_subj, SUBJ_EVENTS_PREFIX "chat.%s", room) >=
            (int)sizeof out_subj) {
        metric_inc(s->chat_dropped);
        log_debug("chat message too large dropped", "subject=%s bytes=%zu", subj, bus_msg_len(msg));
        goto done;
    }
    /* The edge sends the client's data as JSON text; anything else travels as a string. */
    data = json_loadb(bus_msg_data(msg), bus_msg_len(msg), JSON_DECODE_ANY, &je);
    if (!data) data = json_stringn(bus_msg_data(msg), bus_msg_len(msg));
    ev = json_pack("{s:s, s:O, s:I}", "author", user, "data", data, "ts", (json_int_t)wall_ms());
    if (ev && json_is_string(data)) json_object_set(ev, "text", data);
    if (ev) text = json_dumps(ev, JSON_COMPACT | JSON_REAL_PRECISION(15));
    rc = text ? bus_publish(s->b, out_subj, NULL, text, strlen(text), NULL, 0) : -ENOMEM;
    if (rc == 0) {
        metric_inc(s->chat_relayed);
    } else {
        metric_inc(s->chat_errors);
        log_warn("chat message not relayed", "subject=%s err=\"%s\"", out_subj, sc_strerror(rc));
    }
done:
    free(text);
    json_decref(ev);
    json_decref(data);
    bus_msg_destroy(msg);
}

/* hooks.subscribe for the orders namespace (deploy/config/topics.json: subscribe "hook"):
 * orders.<order_id> is the order's own topic, and only the user who placed it may watch it.
 * {"user","topic"} -> {"allow":true,"ttl_s":300} or {"allow":false,"reason":...}. Topics of
 * other namespaces asked here are refused (a misconfiguration should fail closed). */
static void on_hook_subscribe(bus_msg *msg, void *ud)
{
    prodsvc *s = ud;
    json_t *req = json_loadb(bus_msg_data(msg), bus_msg_len(msg), 0, NULL);
    const char *user = json_string_value(json_object_get(req, "user"));
    const char *topic = json_string_value(json_object_get(req, "topic"));
    order o;
    const char *answer = "{\"allow\":false,\"reason\":\"not an orders topic\"}";
    if (user && topic && strncmp(topic, "orders.", 7) == 0) {
        const char *id = topic + 7;
        answer = orders_id_valid(id) && order_store_get(s->store, user, id, &o) == 0
                     ? "{\"allow\":true,\"ttl_s\":300}"
                     : "{\"allow\":false,\"reason\":\"not your order\"}";
    }
    if (bus_msg_reply(msg) && *bus_msg_reply(msg))
        bus_respond(s->b, msg, answer, strlen(answer), NULL, 0);
    json_decref(req);
    bus_msg_destroy(msg);
}

/* rpc.prices.quote, a method clients call over their socket (sidecast.v1 "rpc"): data
 * {"symbol":"BTC"} -> {"symbol":"BTC","price":67000.12,"ts":...}; an unknown symbol is
 * refused with the error code not_found (header Sidecast-Error, the message as the body). */
static void on_quote(bus_msg *msg, void *ud)
{
    prodsvc *s = ud;
    json_t *req = json_loadb(bus_msg_data(msg), bus_msg_len(msg), JSON_DECODE_ANY, NULL);
    const char *sym = json_string_value(json_object_get(req, "symbol"));
    int i = sym ? ticks_symbol_index(sym) : -1;
    if (!bus_msg_reply(msg) || !*bus_msg_reply(msg)) {
        /* nobody to answer */
    } else if (i < 0) {
        bus_hdr h[] = {{HDR_RPC_ERROR, "not_found"}};
        static const char why[] = "\"no such symbol\"";
        bus_respond(s->b, msg, why, sizeof why - 1, h, 1);
    } else {
        char out[160];
        int n = ticks_format(out, sizeof out, ticks_symbol(i), ticker_price(s->t, i), wall_ms());
        if (n > 0) bus_respond(s->b, msg, out, (size_t)n, NULL, 0);
    }
    json_decref(req);
    bus_msg_destroy(msg);
}

int prodsvc_start(prodsvc **out, bus *b, ticker *t, const prod_cfg *cfg)
{
    static const struct {
        const char *subject;
        bus_msg_fn fn;
    } subs[NSUBS] = {
        {SUBJ_ORDERS_CREATE, on_create}, {SUBJ_ORDERS_GET, on_get},
        {SUBJ_ORDERS_LIST, on_list},     {SUBJ_CLIENT_CHAT, on_chat},
        {SUBJ_RPC_QUOTE, on_quote},      {SUBJ_HOOK_SUBSCRIBE, on_hook_subscribe},
    };
    static const char errhelp[] = "Messages the producer could not publish, by kind.";
    prodsvc *s;
    char labels[40];
    int rc;

    *out = NULL;
    s = calloc(1, sizeof *s);
    if (!s) return -ENOMEM;
    s->b = b;
    s->t = t;
    s->cfg = *cfg;
    for (int i = 0; i < NRESULTS; i++) {
        snprintf(labels, sizeof labels, "result=\"%s\"", result_names[i]);
        s->orders[i] = metrics_counter("sc_producer_orders_total", labels,
                                       "Orders API requests, by result.");
    }
    s->fills_done = metrics_counter("sc_producer_fills_total", NULL,
                                    "Order fills pushed to users.<sub>.");
    s->fill_errors = metrics_counter("sc_producer_publish_errors_total", "kind=\"fill\"", errhelp);
    s->chat_errors = metrics_counter("sc_producer_publish_errors_total", "kind=\"chat\"", errhelp);
    s->chat_relayed = metrics_counter("sc_producer_chat_relayed_total", NULL,
                                      "Client chat messages republished on events.chat.<room>.");
    s->chat_dropped = metrics_counter("sc_producer_chat_dropped_total", NULL,
                                      "Client chat messages dropped (no user, too large).");
    rc = order_store_create(&s->store, cfg->max_users, cfg->per_user);
    if (rc == 0) rc = filler_start(&s->fills, cfg->max_pending, on_fill, s);
    if (rc < 0) {
        log_error("producer not started", "err=\"%s\"", strerror(-rc));
        prodsvc_stop(s);
        return rc;
    }
    for (int i = 0; i < NSUBS; i++) {
        rc = bus_subscribe(b, subs[i].subject, QUEUE_PRODUCER, subs[i].fn, s, &s->subs[i]);
        if (rc < 0) {
            log_error("subscribe failed", "subject=%s err=\"%s\"", subs[i].subject,
                      sc_strerror(rc));
            prodsvc_stop(s);
            return rc;
        }
    }
    log_info("producer subscribed", "queue=%s fill_delay_ms=%ld max_pending=%zu", QUEUE_PRODUCER,
             cfg->fill_delay_ms, cfg->max_pending);
    *out = s;
    return 0;
}

void prodsvc_stop(prodsvc *s)
{
    if (!s) return;
    for (int i = 0; i < NSUBS; i++) bus_unsubscribe(s->subs[i]); /* no handler after this */
    filler_stop(s->fills);                                       /* no fill after this */
    order_store_destroy(s->store);
    free(s);
}

size_t prodsvc_pending(prodsvc *s) { return s && s->fills ? filler_pending(s->fills) : 0; }
