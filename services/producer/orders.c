/* orders.c - order validation, JSON shapes and the bounded per-user store. */
#include "orders.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/topic.h"
#include "ticks.h"

const char *orders_side_name(enum order_side s) { return s == SIDE_SELL ? "sell" : "buy"; }

const char *orders_status_name(enum order_status s)
{
    return s == ORDER_FILLED ? "filled" : "accepted";
}

int orders_parse_envelope(const char *data, size_t len, json_t **root, char *err, size_t errlen)
{
    json_error_t je;
    json_t *r = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
    *root = NULL;
    if (!r || !json_is_object(r)) {
        json_decref(r);
        snprintf(err, errlen, "request is not a JSON object");
        return -1;
    }
    *root = r;
    return 0;
}

int orders_validate(const json_t *body, order *out, char *err, size_t errlen)
{
    const json_t *sym, *qty, *side;
    double q;

    if (!body || json_is_null(body)) {
        snprintf(err, errlen, "a JSON body {\"symbol\",\"qty\",\"side\"?} is required");
        return -1;
    }
    if (!json_is_object(body)) {
        snprintf(err, errlen, "the body must be a JSON object");
        return -1;
    }
    sym = json_object_get(body, "symbol");
    if (!json_is_string(sym)) {
        snprintf(err, errlen, "symbol is required (BTC, ETH or SOL)");
        return -1;
    }
    out->symbol = ticks_symbol_index(json_string_value(sym));
    if (out->symbol < 0 || strlen(json_string_value(sym)) != json_string_length(sym)) {
        snprintf(err, errlen, "symbol must be one of BTC, ETH, SOL");
        return -1;
    }
    qty = json_object_get(body, "qty");
    if (!json_is_number(qty)) {
        snprintf(err, errlen, "qty is required and must be a number");
        return -1;
    }
    q = json_number_value(qty);
    if (!isfinite(q) || q <= 0.0 || q > ORDERS_MAX_QTY) {
        snprintf(err, errlen, "qty must be greater than 0 and at most 1000000");
        return -1;
    }
    out->qty = q;
    out->side = SIDE_BUY;
    side = json_object_get(body, "side");
    if (side && !json_is_null(side)) {
        const char *sv = json_is_string(side) ? json_string_value(side) : NULL;
        if (sv && strcmp(sv, "buy") == 0 && json_string_length(side) == 3) {
            out->side = SIDE_BUY;
        } else if (sv && strcmp(sv, "sell") == 0 && json_string_length(side) == 4) {
            out->side = SIDE_SELL;
        } else {
            snprintf(err, errlen, "side must be \"buy\" or \"sell\"");
            return -1;
        }
    }
    return 0;
}

int orders_user_valid(const char *user)
{
    return user && strlen(user) < ORDER_USER_MAX && topic_valid(user);
}

void orders_make_id(char id[ORDER_ID_MAX], uint64_t rnd)
{
    snprintf(id, ORDER_ID_MAX, "o-%016llx", (unsigned long long)rnd);
}

int orders_id_valid(const char *id)
{
    if (!id || strncmp(id, "o-", 2) != 0 || strlen(id) != 18) return 0;
    for (const char *p = id + 2; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return 0;
    return 1;
}

json_t *orders_number(double v)
{
    if (v == floor(v) && fabs(v) < 9007199254740992.0) return json_integer((json_int_t)v);
    return json_real(v);
}

json_t *orders_to_json(const order *o, const char *user, int with_user)
{
    json_t *j = json_object();
    int bad = 0;
    if (!j) return NULL;
    bad |= json_object_set_new(j, "order_id", json_string(o->id));
    bad |= json_object_set_new(j, "status", json_string(orders_status_name(o->status)));
    bad |= json_object_set_new(j, "symbol", json_string(ticks_symbol(o->symbol)));
    bad |= json_object_set_new(j, "qty", orders_number(o->qty));
    bad |= json_object_set_new(j, "side", json_string(orders_side_name(o->side)));
    if (with_user) bad |= json_object_set_new(j, "user_id", json_string(user));
    if (o->created_ms) bad |= json_object_set_new(j, "created_at", json_integer(o->created_ms));
    if (o->status == ORDER_FILLED) {
        bad |= json_object_set_new(j, "price", orders_number(o->price));
        bad |= json_object_set_new(j, "filled_at", json_integer(o->filled_ms));
    }
    if (bad) {
        json_decref(j);
        return NULL;
    }
    return j;
}

/* The store: users in a hash table (chained) and an LRU list; each user's orders in an array
 * oldest first, grown on demand up to per_user. */
struct ouser {
    struct ouser *hnext, *lprev, *lnext;
    order *v;
    size_t n, cap;
    char name[];
};

struct order_store {
    pthread_mutex_t mu;
    size_t max_users, per_user, nusers, norders, nbuckets;
    struct ouser **buckets;
    struct ouser *lru_head, *lru_tail; /* head: most recently active */
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    while (*s) h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
    return h;
}

int order_store_create(order_store **out, size_t max_users, size_t per_user)
{
    order_store *s;
    size_t nb = 16;
    *out = NULL;
    if (max_users < 1 || per_user < 1) return -EINVAL;
    while (nb < max_users && nb < ((size_t)1 << 24)) nb <<= 1;
    s = calloc(1, sizeof *s);
    if (!s) return -ENOMEM;
    s->buckets = calloc(nb, sizeof *s->buckets);
    if (!s->buckets) {
        free(s);
        return -ENOMEM;
    }
    s->nbuckets = nb;
    s->max_users = max_users;
    s->per_user = per_user;
    pthread_mutex_init(&s->mu, NULL);
    *out = s;
    return 0;
}

void order_store_destroy(order_store *s)
{
    struct ouser *u, *next;
    if (!s) return;
    for (u = s->lru_head; u; u = next) {
        next = u->lnext;
        free(u->v);
        free(u);
    }
    free(s->buckets);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static struct ouser **bucket_of(order_store *s, const char *user)
{
    return &s->buckets[hash_str(user) & (s->nbuckets - 1)];
}

static struct ouser *find_user(order_store *s, const char *user)
{
    for (struct ouser *u = *bucket_of(s, user); u; u = u->hnext)
        if (strcmp(u->name, user) == 0) return u;
    return NULL;
}

static void lru_unlink(order_store *s, struct ouser *u)
{
    if (u->lprev)
        u->lprev->lnext = u->lnext;
    else
        s->lru_head = u->lnext;
    if (u->lnext)
        u->lnext->lprev = u->lprev;
    else
        s->lru_tail = u->lprev;
    u->lprev = u->lnext = NULL;
}

static void lru_push_front(order_store *s, struct ouser *u)
{
    u->lnext = s->lru_head;
    u->lprev = NULL;
    if (s->lru_head) s->lru_head->lprev = u;
    s->lru_head = u;
    if (!s->lru_tail) s->lru_tail = u;
}

static void drop_user(order_store *s, struct ouser *u)
{
    struct ouser **pp = bucket_of(s, u->name);
    while (*pp != u) pp = &(*pp)->hnext;
    *pp = u->hnext;
    lru_unlink(s, u);
    s->nusers--;
    s->norders -= u->n;
    free(u->v);
    free(u);
}

static struct ouser *new_user(order_store *s, const char *user)
{
    size_t len = strlen(user);
    struct ouser *u = calloc(1, sizeof *u + len + 1), **b;
    if (!u) return NULL;
    memcpy(u->name, user, len + 1);
    if (s->nusers == s->max_users) drop_user(s, s->lru_tail);
    b = bucket_of(s, user);
    u->hnext = *b;
    *b = u;
    lru_push_front(s, u);
    s->nusers++;
    return u;
}

static int find_order(const struct ouser *u, const char *id)
{
    for (size_t i = u->n; i-- > 0;)
        if (strcmp(u->v[i].id, id) == 0) return (int)i;
    return -1;
}

int order_store_add(order_store *s, const char *user, const order *o)
{
    struct ouser *u;
    int rc = 0;
    if (!user || strlen(user) >= ORDER_USER_MAX) return -EINVAL;
    pthread_mutex_lock(&s->mu);
    u = find_user(s, user);
    if (!u && (u = new_user(s, user)) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    lru_unlink(s, u);
    lru_push_front(s, u);
    if (u->n == s->per_user) { /* the oldest makes room */
        memmove(u->v, u->v + 1, (u->n - 1) * sizeof *u->v);
        u->n--;
        s->norders--;
    }
    if (u->n == u->cap) {
        size_t cap = u->cap ? u->cap * 2 : 8;
        order *v;
        if (cap > s->per_user) cap = s->per_user;
        v = realloc(u->v, cap * sizeof *v);
        if (!v) {
            rc = -ENOMEM;
            goto out;
        }
        u->v = v;
        u->cap = cap;
    }
    u->v[u->n++] = *o;
    s->norders++;
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int order_store_remove(order_store *s, const char *user, const char *id)
{
    struct ouser *u;
    int i, rc = -ENOENT;
    pthread_mutex_lock(&s->mu);
    if ((u = find_user(s, user)) != NULL && (i = find_order(u, id)) >= 0) {
        memmove(u->v + i, u->v + i + 1, (u->n - (size_t)i - 1) * sizeof *u->v);
        u->n--;
        s->norders--;
        rc = 0;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int order_store_get(order_store *s, const char *user, const char *id, order *out)
{
    struct ouser *u;
    int i, rc = -ENOENT;
    pthread_mutex_lock(&s->mu);
    if ((u = find_user(s, user)) != NULL && (i = find_order(u, id)) >= 0) {
        *out = u->v[i];
        rc = 0;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

size_t order_store_list(order_store *s, const char *user, order *out, size_t max)
{
    struct ouser *u;
    size_t n = 0;
    pthread_mutex_lock(&s->mu);
    if ((u = find_user(s, user)) != NULL)
        for (size_t i = u->n; i-- > 0 && n < max;) out[n++] = u->v[i];
    pthread_mutex_unlock(&s->mu);
    return n;
}

int order_store_fill(order_store *s, const char *user, const char *id, double price,
                     int64_t filled_ms)
{
    struct ouser *u;
    int i, rc = -ENOENT;
    pthread_mutex_lock(&s->mu);
    if ((u = find_user(s, user)) != NULL && (i = find_order(u, id)) >= 0) {
        u->v[i].status = ORDER_FILLED;
        u->v[i].price = price;
        u->v[i].filled_ms = filled_ms;
        rc = 0;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

size_t order_store_users(order_store *s)
{
    size_t n;
    pthread_mutex_lock(&s->mu);
    n = s->nusers;
    pthread_mutex_unlock(&s->mu);
    return n;
}

size_t order_store_count(order_store *s)
{
    size_t n;
    pthread_mutex_lock(&s->mu);
    n = s->norders;
    pthread_mutex_unlock(&s->mu);
    return n;
}
