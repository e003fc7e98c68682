/* orders.h - the orders API's pure parts: request validation, the JSON shapes of orders, and
 * the bounded in-memory store (the last per_user orders of at most max_users users, the
 * least recently active user evicted first). Prefixes: orders_ (parsing, JSON),
 * order_store_ (the store; every call is thread-safe). */
#ifndef SC_PRODUCER_ORDERS_H
#define SC_PRODUCER_ORDERS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define ORDERS_MAX_QTY 1e6
enum { ORDER_ID_MAX = 24, ORDER_USER_MAX = 256 };

enum order_side { SIDE_BUY = 0, SIDE_SELL = 1 };
enum order_status { ORDER_ACCEPTED = 0, ORDER_FILLED = 1 };

typedef struct order {
    char id[ORDER_ID_MAX]; /* "o-" + 16 hex digits */
    int symbol;            /* index in ticks.h's symbol table */
    double qty;
    enum order_side side;
    enum order_status status;
    double price;                  /* fill price (filled orders) */
    int64_t created_ms, filled_ms; /* unix ms */
} order;

const char *orders_side_name(enum order_side s);
const char *orders_status_name(enum order_status s);

/* Parses a gateway request envelope (contract.h). On 0, *root holds the parsed object (caller
 * json_decref()s). On -1, err holds a client-facing reason. */
int orders_parse_envelope(const char *data, size_t len, json_t **root, char *err, size_t errlen);

/* Validates the body of POST /api/orders, {"symbol":"BTC","qty":1,"side":"buy"} (side
 * optional, default buy): symbol one of the table, qty a finite number 0 < qty <= 1e6, side
 * "buy" or "sell". body may be NULL (a missing body). Fills symbol, qty and side of *out and
 * returns 0, or returns -1 with a client-facing reason in err. Pure. */
int orders_validate(const json_t *body, order *out, char *err, size_t errlen);

/* 1 when user (the Sidecast-User header) is usable: present, 1..255 bytes, and a valid
 * subject suffix for users.<sub>. Pure. */
int orders_user_valid(const char *user);

/* Writes "o-" and 16 lower-case hex digits of rnd into id (ORDER_ID_MAX bytes). */
void orders_make_id(char id[ORDER_ID_MAX], uint64_t rnd);
/* 1 when id has the shape orders_make_id gives. */
int orders_id_valid(const char *id);

/* The JSON of an order, a new reference (NULL on allocation failure). with_user adds
 * "user_id" (the gateway's compositions read it). */
json_t *orders_to_json(const order *o, const char *user, int with_user);
/* A number as JSON: an integer when qty is integral (1, not 1.0), a real otherwise. */
json_t *orders_number(double v);

typedef struct order_store order_store;

/* max_users >= 1, per_user >= 1. Returns 0 and *out, or -ENOMEM / -EINVAL. */
int order_store_create(order_store **out, size_t max_users, size_t per_user);
void order_store_destroy(order_store *s); /* accepts NULL */

/* Adds a copy of *o to user's orders (user is copied). The user's oldest order makes room
 * when it has per_user; the least recently active user is dropped when a new user would be
 * the max_users + 1st. Returns 0, -EINVAL (user too long) or -ENOMEM. */
int order_store_add(order_store *s, const char *user, const order *o);
/* Removes user's order id: 0 or -ENOENT. */
int order_store_remove(order_store *s, const char *user, const char *id);
/* Copies user's order id into *out: 0 or -ENOENT (also when it is another user's). */
int order_store_get(order_store *s, const char *user, const char *id, order *out);
/* Copies up to max of user's orders, newest first; returns how many. */
size_t order_store_list(order_store *s, const char *user, order *out, size_t max);
/* Marks user's order id filled at price, filled_ms: 0 or -ENOENT (evicted meanwhile). */
int order_store_fill(order_store *s, const char *user, const char *id, double price,
                     int64_t filled_ms);
size_t order_store_users(order_store *s);
size_t order_store_count(order_store *s);

#endif
