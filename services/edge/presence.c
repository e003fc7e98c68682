/* presence.c - this edge's connections mirrored into Redis; see presence.h.
 *
 * Workers append operations to a bounded queue and signal; the presence thread takes the
 * whole queue at once and applies it with one script call per operation. Any Redis failure
 * makes presence degraded: queued operations are dropped (checks answered "allowed"), and
 * once Redis answers a heartbeat again this edge's entries are rewritten from the
 * in-memory table, which is never dropped. */
#include "presence.h"

#include "contract.h"
#include "log.h"
#include "metrics.h"
#include "proto/topic.h"
#include "rds.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PFX "sc:presence:"
#define TABLE_BUCKETS 4096
#define QUEUE_MAX 100000 /* operations waiting; over: dropped, and a full rewrite follows */
#define REAP_EVERY_S 10
#define RESYNC_BATCH 200
#define OCC_BUCKETS 1024
#define APPLY_BATCH 256 /* registrations and removals written in one script run */
#define LINGER_MS                                                                                  \
    2 /* registrations and removals gather this long before a round, so a                          \
       * burst of connections costs the edge a wake-up and a Redis round                           \
       * trip per round, not per connection; a check or a get ends it */

enum op_kind { OP_ADD, OP_CHECK, OP_REMOVE, OP_GET, OP_OCC_ON, OP_OCC_OFF, OP_OCC_GET };

typedef struct op {
    struct op *next;
    enum op_kind kind;
    int worker;
    uint64_t conn;
    long at;
    bus_msg *msg; /* OP_GET: the presence.get request, answered on the presence thread */
    char user[];
} op;

/* A topic this edge has subscribers for (occupancy), as the in-memory truth. */
typedef struct occ_topic {
    struct occ_topic *next;
    char topic[];
} occ_topic;

/* This edge's connection, as the in-memory truth. */
typedef struct entry {
    struct entry *next;
    uint64_t conn;
    long at;
    bool counted; /* registered (or allowed while degraded): part of a rewrite */
    char user[];
} entry;

struct presence {
    presence_cfg cfg;
    char edge[128];
    rds *r;
    bus_sub *get_sub;
    bus *b;
    pthread_t thread;
    pthread_mutex_t lock; /* queue, table, stop */
    pthread_cond_t cond;
    op *head, **tail;
    size_t queued;
    bool overflow, stop;
    bool idle;   /* the thread waits for work: the next operation wakes it */
    bool urgent; /* a check or a get is queued: no lingering */
    entry *table[TABLE_BUCKETS];
    occ_topic *occ[OCC_BUCKETS]; /* topics with subscribers here (presence_occupancy) */
    bus_sub *occ_sub;            /* occupancy.get */
    _Atomic int degraded;
    bool need_rewrite;
    bool beaten;      /* a heartbeat was written before */
    struct batch *bt; /* the presence thread's batch of writes */
    metric *m_degraded, *m_ops, *m_refused, *m_reaped, *m_occupied, *m_vacated;
};

/* Registers one connection; with ARGV[3] > 0, only while the user has fewer live entries
 * (entries whose edge's heartbeat exists). Returns 1, or 0 when refused. */
static const char ADD_LUA[] =
    "local lim = tonumber(ARGV[3])\n"
    "if lim > 0 then\n"
    "  local n = 0\n"
    "  for _, k in ipairs(redis.call('HKEYS', KEYS[1])) do\n"
    "    local e = string.match(k, '^(.*)/[^/]*$')\n"
    "    if e and redis.call('EXISTS', ARGV[4] .. 'edge:' .. e) == 1 then n = n + 1 end\n"
    "  end\n"
    "  if n >= lim then return 0 end\n"
    "end\n"
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])\n"
    "redis.call('SADD', KEYS[2], ARGV[5])\n"
    "return 1\n";

static const char REMOVE_LUA[] = "redis.call('HDEL', KEYS[1], ARGV[1])\n"
                                 "redis.call('SREM', KEYS[2], ARGV[2])\n"
                                 "return 1\n";

/* Registrations ('a') and removals ('r') without a limit check, in order, in one round trip:
 * ARGV[1] prefix, ARGV[2] edge, then kind, user, conn, at for each. */
static const char BATCH_LUA[] = "local pfx, edge = ARGV[1], ARGV[2]\n"
                                "local ck = pfx .. 'conns:' .. edge\n"
                                "for i = 3, #ARGV - 3, 4 do\n"
                                "  local uk = pfx .. 'user:' .. ARGV[i + 1]\n"
                                "  local field = edge .. '/' .. ARGV[i + 2]\n"
                                "  local member = ARGV[i + 1] .. '\\t' .. ARGV[i + 2]\n"
                                "  if ARGV[i] == 'a' then\n"
                                "    redis.call('HSET', uk, field, ARGV[i + 3])\n"
                                "    redis.call('SADD', ck, member)\n"
                                "  else\n"
                                "    redis.call('HDEL', uk, field)\n"
                                "    redis.call('SREM', ck, member)\n"
                                "  end\n"
                                "end\n"
                                "return 1\n";

/* Removes every entry an edge registered (KEYS[1] = its conns set; ARGV[1] = prefix,
 * ARGV[2] = edge). */
static const char REAP_LUA[] =
    "local n = 0\n"
    "for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
    "  local sub, conn = string.match(m, '^(.*)\\t([^\\t]*)$')\n"
    "  if sub then\n"
    "    redis.call('HDEL', ARGV[1] .. 'user:' .. sub, ARGV[2] .. '/' .. conn)\n"
    "    n = n + 1\n"
    "  end\n"
    "end\n"
    "redis.call('DEL', KEYS[1])\n"
    "return n\n";

/* The user's live entries, as field, value pairs. */
static const char LIST_LUA[] =
    "local out = {}\n"
    "local h = redis.call('HGETALL', KEYS[1])\n"
    "for i = 1, #h, 2 do\n"
    "  local e = string.match(h[i], '^(.*)/[^/]*$')\n"
    "  if e and redis.call('EXISTS', ARGV[1] .. 'edge:' .. e) == 1 then\n"
    "    out[#out + 1] = h[i]\n"
    "    out[#out + 1] = h[i + 1]\n"
    "  end\n"
    "end\n"
    "return out\n";

/* Occupancy: KEYS[1] the topic's set of edges, KEYS[2] this edge's set of topics; ARGV[1]
 * edge, ARGV[2] topic, ARGV[3] "on" or "off", ARGV[4] the prefix. Returns {changed, live}:
 * whether the set changed, and how many of its edges have a live heartbeat afterwards (a
 * dead edge's member waits for the reaper but counts for nothing). */
static const char OCC_LUA[] =
    "local changed\n"
    "if ARGV[3] == 'on' then\n"
    "  changed = redis.call('SADD', KEYS[1], ARGV[1])\n"
    "  redis.call('SADD', KEYS[2], ARGV[2])\n"
    "else\n"
    "  changed = redis.call('SREM', KEYS[1], ARGV[1])\n"
    "  redis.call('SREM', KEYS[2], ARGV[2])\n"
    "end\n"
    "local live = 0\n"
    "for _, e in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
    "  if e == ARGV[1] or redis.call('EXISTS', ARGV[4] .. 'edge:' .. e) == 1 then\n"
    "    live = live + 1\n"
    "  end\n"
    "end\n"
    "return {changed, live}\n";

/* Removes an edge from every topic it held (KEYS[1] its set of topics; ARGV[1] edge,
 * ARGV[2] prefix, ARGV[3] "1": the edge itself counts as gone). Returns the topics left
 * with no live edge: they were vacated. */
static const char OCC_REAP_LUA[] =
    "local vacated = {}\n"
    "for _, t in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
    "  local k = ARGV[2] .. 'occ:' .. t\n"
    "  redis.call('SREM', k, ARGV[1])\n"
    "  local live = 0\n"
    "  for _, e in ipairs(redis.call('SMEMBERS', k)) do\n"
    "    if redis.call('EXISTS', ARGV[2] .. 'edge:' .. e) == 1 then live = live + 1 end\n"
    "  end\n"
    "  if live == 0 then vacated[#vacated + 1] = t end\n"
    "end\n"
    "redis.call('DEL', KEYS[1])\n"
    "return vacated\n";

/* How many live edges hold the topic (KEYS[1]; ARGV[1] prefix). */
static const char OCC_COUNT_LUA[] =
    "local live = 0\n"
    "for _, e in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
    "  if redis.call('EXISTS', ARGV[1] .. 'edge:' .. e) == 1 then live = live + 1 end\n"
    "end\n"
    "return live\n";

static rds_script add_script, remove_script, reap_script, list_script, batch_script, occ_script,
    occ_reap_script, occ_count_script;

static long wall_s(void) { return (long)time(NULL); }

/* ---- the in-memory table (lock held) ----------------------------------------------------- */

static entry **table_slot(presence *p, uint64_t conn)
{
    entry **pp = &p->table[conn % TABLE_BUCKETS];
    while (*pp && (*pp)->conn != conn) pp = &(*pp)->next;
    return pp;
}

/* ---- the queue (any thread) -------------------------------------------------------------- */

static void reply_json(presence *p, bus_msg *msg, int status, json_t *body);

/* Returns 0, or -1 when the queue is full (or no memory): the operation was dropped. */
static int enqueue(presence *p, enum op_kind kind, const char *user, uint64_t conn, int worker,
                   long at, bus_msg *msg)
{
    size_t ul = strlen(user);
    op *o = malloc(sizeof *o + ul + 1);
    if (o) {
        o->next = NULL;
        o->kind = kind;
        o->worker = worker;
        o->conn = conn;
        o->at = at;
        o->msg = msg;
        memcpy(o->user, user, ul + 1);
    }
    pthread_mutex_lock(&p->lock);
    if (!o || p->queued >= QUEUE_MAX) {
        if (kind != OP_GET) p->overflow = true; /* the rewrite after it puts Redis right */
        pthread_mutex_unlock(&p->lock);
        if (kind == OP_CHECK && p->cfg.verdict)
            p->cfg.verdict(p->cfg.verdict_ud, worker, conn, true);
        free(o);
        return -1;
    }
    *p->tail = o;
    p->tail = &o->next;
    p->queued++;
    bool urgent = kind == OP_CHECK || kind == OP_GET;
    if (urgent) p->urgent = true;
    if (urgent || p->idle) { /* lingering: what comes meanwhile joins the round unasked */
        p->idle = false;
        pthread_cond_signal(&p->cond);
    }
    pthread_mutex_unlock(&p->lock);
    return 0;
}

void presence_add(presence *p, const char *user, uint64_t conn, int worker, bool check)
{
    size_t ul = strlen(user);
    long at = wall_s();
    entry *e = malloc(sizeof *e + ul + 1);
    if (e) {
        e->conn = conn;
        e->at = at;
        e->counted = !check;
        memcpy(e->user, user, ul + 1);
        pthread_mutex_lock(&p->lock);
        entry **slot = table_slot(p, conn);
        if (*slot) { /* cannot happen: conn ids are unique */
            free(e);
        } else {
            e->next = NULL;
            *slot = e;
        }
        pthread_mutex_unlock(&p->lock);
    }
    enqueue(p, check && p->cfg.max_per_user > 0 ? OP_CHECK : OP_ADD, user, conn, worker, at, NULL);
}

void presence_remove(presence *p, const char *user, uint64_t conn)
{
    pthread_mutex_lock(&p->lock);
    entry **slot = table_slot(p, conn);
    entry *e = *slot;
    if (e) *slot = e->next;
    pthread_mutex_unlock(&p->lock);
    free(e);
    enqueue(p, OP_REMOVE, user, conn, -1, 0, NULL);
}

int presence_degraded(const presence *p) { return atomic_load(&p->degraded); }

static unsigned long occ_hash(const char *s)
{
    unsigned long h = 5381;
    while (*s) h = h * 33 + (unsigned char)*s++;
    return h % OCC_BUCKETS;
}

void presence_occupancy(presence *p, const char *topic, bool on)
{
    size_t tl = strlen(topic);
    occ_topic *t = on ? malloc(sizeof *t + tl + 1) : NULL, *gone = NULL;
    pthread_mutex_lock(&p->lock);
    occ_topic **pp = &p->occ[occ_hash(topic)];
    while (*pp && strcmp((*pp)->topic, topic) != 0) pp = &(*pp)->next;
    if (on && t && !*pp) {
        memcpy(t->topic, topic, tl + 1);
        t->next = NULL;
        *pp = t;
        t = NULL;
    } else if (!on && *pp) {
        gone = *pp;
        *pp = gone->next;
    }
    pthread_mutex_unlock(&p->lock);
    free(t);
    free(gone);
    enqueue(p, on ? OP_OCC_ON : OP_OCC_OFF, topic, 0, -1, 0, NULL);
}

/* ---- Redis (presence thread) ------------------------------------------------------------- */

static void set_degraded(presence *p, bool on, const char *why)
{
    if (on && !atomic_exchange(&p->degraded, 1)) {
        log_warn("presence degraded: redis unavailable, serving on", "reason=\"%s\"", why);
        metric_set(p->m_degraded, 1);
    } else if (!on && atomic_exchange(&p->degraded, 0)) {
        log_info("presence restored", "edge=%s", p->edge);
        metric_set(p->m_degraded, 0);
    }
    if (on) p->need_rewrite = true;
}

static int heartbeat(presence *p)
{
    char key[256], ttl[24], now[24];
    snprintf(key, sizeof key, PFX "edge:%s", p->edge);
    snprintf(ttl, sizeof ttl, "%d", p->cfg.ttl_s);
    snprintf(now, sizeof now, "%ld", wall_s());
    /* GET: the old value tells whether the key outlived the last beat. If not, Redis lost
     * data (a restart without persistence, a flush) or this edge stalled past the TTL:
     * either way its entries may be gone too, so they are rewritten. */
    const char *set[] = {"SET", key, now, "EX", ttl, "GET"};
    const char *add[] = {"SADD", PFX "edges", p->edge};
    redisReply *old = NULL;
    int rc = rds_commandv(p->r, &old, 6, set, NULL);
    if (rc == 0) {
        if (old->type == REDIS_REPLY_NIL && p->beaten && !p->need_rewrite) {
            log_warn("presence heartbeat was gone (Redis restarted or flushed?): rewriting",
                     "edge=%s", p->edge);
            p->need_rewrite = true;
        }
        p->beaten = true;
        freeReplyObject(old);
        rc = rds_commandv(p->r, NULL, 3, add, NULL);
    }
    return rc;
}

/* occupancy.<topic>: a topic gained its first or lost its last subscriber, all edges. */
static void occ_publish(presence *p, const char *topic, bool occupied)
{
    char subject[200], body[300];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(subject, sizeof subject, "%s%s", SUBJ_OCCUPANCY_PREFIX, topic);
    int n = snprintf(body, sizeof body, "{\"topic\":\"%s\",\"occupied\":%s,\"ts\":%lld}", topic,
                     occupied ? "true" : "false",
                     (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    metric_inc(occupied ? p->m_occupied : p->m_vacated);
    if (p->b && n > 0 && (size_t)n < sizeof body &&
        bus_publish(p->b, subject, NULL, body, (size_t)n, NULL, 0) != 0)
        log_warn("occupancy not published", "topic=%s occupied=%d", topic, occupied);
}

/* One topic of this edge on or off in Redis; publishes the topic's transition, if any. */
static int occ_apply(presence *p, bool on, const char *topic)
{
    char tkey[300], ekey[256];
    snprintf(tkey, sizeof tkey, PFX "occ:%s", topic);
    snprintf(ekey, sizeof ekey, PFX "occ_edge:%s", p->edge);
    const char *keys[] = {tkey, ekey};
    const char *args[] = {p->edge, topic, on ? "on" : "off", PFX};
    redisReply *rep = NULL;
    int rc = rds_eval(p->r, &occ_script, &rep, 2, keys, 4, args);
    if (rc == 0 && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2) {
        long long changed = rep->element[0]->integer, live = rep->element[1]->integer;
        if (changed == 1 && ((on && live == 1) || (!on && live == 0))) occ_publish(p, topic, on);
    }
    if (rep) freeReplyObject(rep);
    return rc;
}

/* Takes an edge out of every topic it held; with announce, publishes the topics left empty. */
static int occ_reap(presence *p, const char *edge, bool announce)
{
    char ekey[256];
    snprintf(ekey, sizeof ekey, PFX "occ_edge:%s", edge);
    const char *keys[] = {ekey};
    const char *args[] = {edge, PFX};
    redisReply *rep = NULL;
    int rc = rds_eval(p->r, &occ_reap_script, &rep, 1, keys, 2, args);
    for (size_t i = 0; rc == 0 && announce && rep->type == REDIS_REPLY_ARRAY && i < rep->elements;
         i++)
        if (rep->element[i]->str) occ_publish(p, rep->element[i]->str, false);
    if (rep) freeReplyObject(rep);
    return rc;
}

/* Removes every entry of edge (this one, or one whose heartbeat is gone). */
static int reap_edge(presence *p, const char *edge, long long *count)
{
    char conns[256];
    snprintf(conns, sizeof conns, PFX "conns:%s", edge);
    const char *keys[] = {conns};
    const char *args[] = {PFX, edge};
    redisReply *rep = NULL;
    int rc = rds_eval(p->r, &reap_script, &rep, 1, keys, 2, args);
    if (rc == 0 && count) *count = rep->type == REDIS_REPLY_INTEGER ? rep->integer : 0;
    if (rep) freeReplyObject(rep);
    return rc;
}

static int apply(presence *p, enum op_kind kind, const char *user, uint64_t conn, long at,
                 bool *allowed)
{
    char ukey[300], ckey[256], field[192], member[300], atv[24], lim[24];
    snprintf(ukey, sizeof ukey, PFX "user:%s", user);
    snprintf(ckey, sizeof ckey, PFX "conns:%s", p->edge);
    snprintf(field, sizeof field, "%s/%llu", p->edge, (unsigned long long)conn);
    snprintf(member, sizeof member, "%s\t%llu", user, (unsigned long long)conn);
    const char *keys[] = {ukey, ckey};
    redisReply *rep = NULL;
    int rc;
    metric_inc(p->m_ops);
    if (kind == OP_REMOVE) {
        const char *args[] = {field, member};
        rc = rds_eval(p->r, &remove_script, &rep, 2, keys, 2, args);
    } else {
        snprintf(atv, sizeof atv, "%ld", at);
        snprintf(lim, sizeof lim, "%ld", kind == OP_CHECK ? p->cfg.max_per_user : 0L);
        const char *args[] = {field, atv, lim, PFX, member};
        rc = rds_eval(p->r, &add_script, &rep, 2, keys, 5, args);
        if (rc == 0 && allowed) *allowed = !(rep->type == REDIS_REPLY_INTEGER && rep->integer == 0);
    }
    if (rep) freeReplyObject(rep);
    return rc;
}

/* Up to APPLY_BATCH registrations/removals in one script run (one round trip instead of one
 * per connection: a burst of 10k connects is 40 round trips). */
struct batch {
    int n;
    const char *args[2 + 4 * APPLY_BATCH];
    char conn[APPLY_BATCH][24], at[APPLY_BATCH][24];
};
typedef struct batch batch;

static void batch_add(batch *b, enum op_kind kind, const char *user, uint64_t conn, long at)
{
    int i = b->n++;
    snprintf(b->conn[i], sizeof b->conn[i], "%llu", (unsigned long long)conn);
    snprintf(b->at[i], sizeof b->at[i], "%ld", at);
    b->args[2 + 4 * i] = kind == OP_REMOVE ? "r" : "a";
    b->args[3 + 4 * i] = user;
    b->args[4 + 4 * i] = b->conn[i];
    b->args[5 + 4 * i] = b->at[i];
}

/* Writes and empties the batch (the users it points to must live until then). */
static int batch_flush(presence *p, batch *b)
{
    if (b->n == 0) return 0;
    b->args[0] = PFX;
    b->args[1] = p->edge;
    metric_add(p->m_ops, b->n);
    int rc = rds_eval(p->r, &batch_script, NULL, 0, NULL, 2 + 4 * b->n, b->args);
    b->n = 0;
    return rc;
}

/* This edge's entries in Redis := the in-memory table. */
static int rewrite(presence *p)
{
    long long stale = 0;
    int rc = reap_edge(p, p->edge, &stale);
    if (rc != 0) return rc;
    /* snapshot the table under the lock, write it without */
    size_t n = 0, cap = 256;
    entry **snap = malloc(sizeof *snap * cap);
    if (!snap) return -ENOMEM;
    pthread_mutex_lock(&p->lock);
    for (int b = 0; b < TABLE_BUCKETS; b++) {
        for (entry *e = p->table[b]; e; e = e->next) {
            if (!e->counted) continue;
            if (n == cap) {
                entry **ns = realloc(snap, sizeof *ns * cap * 2);
                if (!ns) break;
                snap = ns;
                cap *= 2;
            }
            size_t ul = strlen(e->user);
            entry *c = malloc(sizeof *c + ul + 1);
            if (!c) break;
            memcpy(c, e, sizeof *c + ul + 1);
            snap[n++] = c;
        }
    }
    pthread_mutex_unlock(&p->lock);
    /* the presence thread's batch: empty here (every round sends what it batched), and
     * empty again after the last flush, which runs whether or not Redis took it */
    for (size_t i = 0; i < n && rc == 0; i++) {
        batch_add(p->bt, OP_ADD, snap[i]->user, snap[i]->conn, snap[i]->at);
        if (p->bt->n == APPLY_BATCH || i + 1 == n) rc = batch_flush(p, p->bt);
    }
    for (size_t i = 0; i < n; i++) free(snap[i]);
    free(snap);
    /* occupancy: this edge's topics again, silently (what changed meanwhile is not told) */
    size_t ntopics = 0, tcap = 0;
    char **topics = NULL; /* a snapshot, written without the lock */
    pthread_mutex_lock(&p->lock);
    for (int b = 0; b < OCC_BUCKETS; b++)
        for (occ_topic *t = p->occ[b]; t; t = t->next) {
            if (ntopics == tcap) {
                char **nt = realloc(topics, sizeof *nt * (tcap ? tcap * 2 : 64));
                if (!nt) break;
                topics = nt;
                tcap = tcap ? tcap * 2 : 64;
            }
            if ((topics[ntopics] = strdup(t->topic)) != NULL) ntopics++;
        }
    pthread_mutex_unlock(&p->lock);
    if (rc == 0) rc = occ_reap(p, p->edge, false);
    char ekey[256];
    snprintf(ekey, sizeof ekey, PFX "occ_edge:%s", p->edge);
    for (size_t i = 0; i < ntopics && rc == 0; i++) {
        char tkey[300];
        snprintf(tkey, sizeof tkey, PFX "occ:%s", topics[i]);
        const char *sadd1[] = {"SADD", tkey, p->edge};
        const char *sadd2[] = {"SADD", ekey, topics[i]};
        rc = rds_commandv(p->r, NULL, 3, sadd1, NULL);
        if (rc == 0) rc = rds_commandv(p->r, NULL, 3, sadd2, NULL);
    }
    for (size_t i = 0; i < ntopics; i++) free(topics[i]);
    free(topics);
    if (rc == 0)
        log_info("presence rewritten", "edge=%s connections=%zu stale_removed=%lld topics=%zu",
                 p->edge, n, stale, ntopics);
    return rc;
}

/* Reaps one edge whose heartbeat is gone, if another edge is not doing it already. */
static void reap_dead(presence *p)
{
    redisReply *edges = NULL;
    const char *smembers[] = {"SMEMBERS", PFX "edges"};
    if (rds_commandv(p->r, &edges, 2, smembers, NULL) != 0) return;
    for (size_t i = 0; edges->type == REDIS_REPLY_ARRAY && i < edges->elements; i++) {
        const char *e = edges->element[i]->str;
        if (!e || strcmp(e, p->edge) == 0) continue;
        char hb[256], lock[256];
        snprintf(hb, sizeof hb, PFX "edge:%s", e);
        snprintf(lock, sizeof lock, PFX "reap:%s", e);
        redisReply *r = NULL;
        const char *exists[] = {"EXISTS", hb};
        if (rds_commandv(p->r, &r, 2, exists, NULL) != 0) break;
        bool alive = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
        freeReplyObject(r);
        if (alive) continue;
        const char *setnx[] = {"SET", lock, p->edge, "NX", "EX", "30"};
        r = NULL;
        if (rds_commandv(p->r, &r, 6, setnx, NULL) != 0) break;
        bool mine = r->type == REDIS_REPLY_STATUS;
        freeReplyObject(r);
        if (!mine) continue;
        long long n = 0;
        if (reap_edge(p, e, &n) == 0) {
            const char *srem[] = {"SREM", PFX "edges", e};
            rds_commandv(p->r, NULL, 3, srem, NULL);
            metric_add(p->m_reaped, n);
            occ_reap(p, e, true); /* the topics only it held are vacated now */
            log_info("presence of a dead edge reaped", "edge=%s connections=%lld", e, n);
        }
    }
    freeReplyObject(edges);
}

static void answer_get(presence *p, bus_msg *msg);
static void answer_occ_get(presence *p, bus_msg *msg);

/* Sends the batch of registrations and removals, then frees their ops. */
static void send_batch(presence *p, op **written)
{
    if (p->bt->n > 0) {
        int rc = batch_flush(p, p->bt);
        if (rc != 0) set_degraded(p, true, sc_strerror(rc));
    }
    while (*written) {
        op *o = *written;
        *written = o->next;
        free(o);
    }
}

static void *presence_main(void *arg)
{
    presence *p = arg;
    long next_beat = 0, next_reap = wall_s() + REAP_EVERY_S;
    int beat_every = p->cfg.ttl_s / 3 > 0 ? p->cfg.ttl_s / 3 : 1;
    pthread_mutex_lock(&p->lock);
    while (!p->stop) {
        if (p->head && !p->urgent && p->queued < APPLY_BATCH) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec += LINGER_MS * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            /* a check, a get or the stop ends it early: they signal */
            while (!p->stop && !p->urgent &&
                   pthread_cond_timedwait(&p->cond, &p->lock, &ts) != ETIMEDOUT) {
            }
        }
        op *list = p->head;
        bool overflow = p->overflow;
        p->head = NULL;
        p->tail = &p->head;
        p->queued = 0;
        p->overflow = false;
        p->urgent = false;
        pthread_mutex_unlock(&p->lock);

        long now = wall_s();
        bool redis_ok = !atomic_load(&p->degraded);
        if (now >= next_beat || !redis_ok) { /* degraded: every round tries Redis again */
            int rc = heartbeat(p);
            redis_ok = rc == 0;
            if (rc != 0)
                set_degraded(p, true, sc_strerror(rc));
            else
                next_beat = now + beat_every;
        }
        if (overflow) p->need_rewrite = true;
        if (p->need_rewrite && redis_ok) {
            int rc = rewrite(p);
            if (rc == 0) {
                p->need_rewrite = false;
                set_degraded(p, false, NULL);
            } else {
                set_degraded(p, true, sc_strerror(rc));
            }
        }
        op *written = NULL; /* batched ops: their user names live until the batch is sent */
        while (list) {
            op *o = list;
            list = o->next;
            if (o->kind == OP_ADD || o->kind == OP_REMOVE) {
                if (atomic_load(&p->degraded)) { /* the rewrite after it puts Redis right */
                    free(o);
                    continue;
                }
                batch_add(p->bt, o->kind, o->user, o->conn, o->at);
                o->next = written;
                written = o;
                if (p->bt->n == APPLY_BATCH) send_batch(p, &written);
                continue;
            }
            send_batch(p, &written); /* in order: what came before this op first */
            if (o->kind == OP_GET) {
                answer_get(p, o->msg);
                free(o);
                continue;
            }
            if (o->kind == OP_OCC_GET) {
                answer_occ_get(p, o->msg);
                free(o);
                continue;
            }
            if (o->kind == OP_OCC_ON || o->kind == OP_OCC_OFF) {
                /* degraded: dropped; the rewrite after it puts this edge's topics back */
                int rc = atomic_load(&p->degraded) ? 0
                                                   : occ_apply(p, o->kind == OP_OCC_ON, o->user);
                if (rc != 0) set_degraded(p, true, sc_strerror(rc));
                free(o);
                continue;
            }
            bool allowed = true;
            if (!atomic_load(&p->degraded)) {
                int rc = apply(p, o->kind, o->user, o->conn, o->at, &allowed);
                if (rc != 0) {
                    set_degraded(p, true, sc_strerror(rc));
                    allowed = true; /* Redis down: serve, count later */
                }
            }
            if (o->kind == OP_CHECK) {
                pthread_mutex_lock(&p->lock);
                entry **slot = table_slot(p, o->conn);
                if (*slot && allowed) (*slot)->counted = true;
                pthread_mutex_unlock(&p->lock);
                if (!allowed) metric_inc(p->m_refused);
                if (p->cfg.verdict) p->cfg.verdict(p->cfg.verdict_ud, o->worker, o->conn, allowed);
            }
            free(o);
        }
        send_batch(p, &written);
        if (now >= next_reap && !atomic_load(&p->degraded)) {
            reap_dead(p);
            next_reap = now + REAP_EVERY_S;
        }

        pthread_mutex_lock(&p->lock);
        if (!p->head && !p->stop) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec += 200 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            p->idle = true;
            pthread_cond_timedwait(&p->cond, &p->lock, &ts);
            p->idle = false;
        }
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* ---- presence.get ----------------------------------------------------------------------- */

static void reply_json(presence *p, bus_msg *msg, int status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (bus_msg_reply(msg) && *bus_msg_reply(msg))
        bus_respond_json(p->b, msg, text ? status : 500,
                         text ? text
                              : "{\"error\":\"internal_error\",\"message\":\"out of memory\"}");
    free(text);
}

static bool user_valid(const char *u)
{
    size_t n = strlen(u);
    if (n == 0 || n > 128) return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)u[i] < 0x21 || u[i] == 0x7f) return false;
    return true;
}

/* Who may see a user's presence: the user, a caller whose token grants subscribing to
 * "presence.<user>" (the gateway passes the token's sub_topics as Sidecast-Sub-Topics), and a
 * back-end service asking on the bus directly (no Sidecast-User: NATS is the trust boundary,
 * docs/SECURITY.md §4). */
bool presence_may_read(const char *caller, const char *sub_topics_json, const char *user)
{
    if (!caller) return true;
    if (strcmp(caller, user) == 0) return true;
    if (!sub_topics_json) return false;
    char topic[160];
    if ((size_t)snprintf(topic, sizeof topic, "presence.%s", user) >= sizeof topic) return false;
    json_t *pats = json_loads(sub_topics_json, 0, NULL), *v;
    size_t i;
    bool ok = false;
    json_array_foreach(pats, i, v) {
        if (json_is_string(v) && topic_match(json_string_value(v), topic) == 1) ok = true;
    }
    json_decref(pats);
    return ok;
}

/* presence.get, on the presence thread (Redis calls block: never on nats.c's thread, which
 * also carries every event of this edge). */
static void answer_get(presence *p, bus_msg *msg)
{
    json_t *env = json_loadb(bus_msg_data(msg), bus_msg_len(msg), 0, NULL);
    const char *user = json_string_value(json_object_get(json_object_get(env, "params"), "user"));
    if (!user || !user_valid(user)) {
        reply_json(p, msg, 400,
                   json_pack("{s:s, s:s}", "error", "invalid_request", "message",
                             "params.user: a user id of 1 to 128 visible bytes"));
        goto done;
    }
    if (!presence_may_read(bus_msg_header(msg, HDR_USER), bus_msg_header(msg, HDR_SCOPE_SUB),
                           user)) {
        reply_json(p, msg, 403,
                   json_pack("{s:s, s:s}", "error", "forbidden", "message",
                             "only the user, or a token that may subscribe to "
                             "presence.<user>, sees a user's presence"));
        goto done;
    }
    char ukey[300];
    snprintf(ukey, sizeof ukey, PFX "user:%s", user);
    const char *keys[] = {ukey};
    const char *args[] = {PFX};
    redisReply *rep = NULL;
    if (rds_eval(p->r, &list_script, &rep, 1, keys, 1, args) != 0) {
        reply_json(p, msg, 503,
                   json_pack("{s:s, s:s}", "error", "unavailable", "message",
                             "presence store unavailable"));
        goto done;
    }
    json_t *conns = json_array();
    for (size_t i = 0; rep->type == REDIS_REPLY_ARRAY && i + 1 < rep->elements; i += 2) {
        const char *field = rep->element[i]->str, *at = rep->element[i + 1]->str;
        const char *slash = field ? strrchr(field, '/') : NULL;
        if (!slash || !at) continue;
        char edge[160], conn_id[200];
        snprintf(edge, sizeof edge, "%.*s", (int)(slash - field), field);
        snprintf(conn_id, sizeof conn_id, "%s-%s", edge, slash + 1);
        json_array_append_new(conns, json_pack("{s:s, s:s, s:I}", "conn_id", conn_id, "edge", edge,
                                               "connected_at", (json_int_t)strtoll(at, NULL, 10)));
    }
    freeReplyObject(rep);
    reply_json(p, msg, 200,
               json_pack("{s:s, s:I, s:o}", "user", user, "count",
                         (json_int_t)json_array_size(conns), "connections", conns));
done:
    json_decref(env);
    bus_msg_destroy(msg);
}

/* occupancy.get {"topic":...} -> {"topic":...,"occupied":bool,"edges":N}, on the presence
 * thread: how many live edges have subscribers for the topic right now. */
static void answer_occ_get(presence *p, bus_msg *msg)
{
    json_t *req = json_loadb(bus_msg_data(msg), bus_msg_len(msg), 0, NULL);
    const char *topic = json_string_value(json_object_get(req, "topic"));
    if (!topic || !topic_valid(topic)) {
        reply_json(p, msg, 400,
                   json_pack("{s:s, s:s}", "error", "invalid_request", "message",
                             "topic: a concrete topic"));
        goto done;
    }
    char tkey[300];
    snprintf(tkey, sizeof tkey, PFX "occ:%s", topic);
    const char *keys[] = {tkey};
    const char *args[] = {PFX};
    redisReply *rep = NULL;
    if (atomic_load(&p->degraded) ||
        rds_eval(p->r, &occ_count_script, &rep, 1, keys, 1, args) != 0) {
        if (rep) freeReplyObject(rep);
        reply_json(p, msg, 503,
                   json_pack("{s:s, s:s}", "error", "unavailable", "message",
                             "occupancy store unavailable"));
        goto done;
    }
    json_int_t live = rep->type == REDIS_REPLY_INTEGER ? (json_int_t)rep->integer : 0;
    freeReplyObject(rep);
    reply_json(p, msg, 200,
               json_pack("{s:s, s:b, s:I}", "topic", topic, "occupied", live > 0, "edges", live));
done:
    json_decref(req);
    bus_msg_destroy(msg);
}

static void on_occ_get(bus_msg *msg, void *ud)
{
    presence *p = ud;
    if (enqueue(p, OP_OCC_GET, "", 0, -1, 0, msg) != 0) {
        reply_json(p, msg, 503,
                   json_pack("{s:s, s:s}", "error", "unavailable", "message",
                             "occupancy busy, try again"));
        bus_msg_destroy(msg);
    }
}

/* nats.c thread: hands the request to the presence thread (a full queue: 503 at once). */
static void on_get(bus_msg *msg, void *ud)
{
    presence *p = ud;
    if (enqueue(p, OP_GET, "", 0, -1, 0, msg) != 0) {
        reply_json(p, msg, 503,
                   json_pack("{s:s, s:s}", "error", "unavailable", "message",
                             "presence busy, try again"));
        bus_msg_destroy(msg);
    }
}

/* ---- life -------------------------------------------------------------------------------- */

int presence_create(presence **out, const presence_cfg *cfg, bus *b)
{
    if (!add_script.source) {
        rds_script_init(&add_script, ADD_LUA);
        rds_script_init(&remove_script, REMOVE_LUA);
        rds_script_init(&reap_script, REAP_LUA);
        rds_script_init(&list_script, LIST_LUA);
        rds_script_init(&batch_script, BATCH_LUA);
        rds_script_init(&occ_script, OCC_LUA);
        rds_script_init(&occ_reap_script, OCC_REAP_LUA);
        rds_script_init(&occ_count_script, OCC_COUNT_LUA);
    }
    presence *p = calloc(1, sizeof *p);
    if (!p) return -ENOMEM;
    if (!(p->bt = calloc(1, sizeof *p->bt))) {
        free(p);
        return -ENOMEM;
    }
    p->cfg = *cfg;
    snprintf(p->edge, sizeof p->edge, "%s", cfg->edge_id);
    p->cfg.edge_id = p->edge;
    p->cfg.redis_url = NULL;
    p->b = b;
    p->tail = &p->head;
    p->need_rewrite = true; /* a restarted edge with the same id: its old entries go */
    pthread_mutex_init(&p->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cond, &ca);
    pthread_condattr_destroy(&ca);
    p->m_degraded = metrics_gauge("sc_edge_presence_degraded", NULL,
                                  "1 while Redis is not kept up to date (serving goes on)");
    p->m_ops = metrics_counter("sc_edge_presence_ops_total", NULL,
                               "presence registrations and removals written to Redis");
    p->m_refused = metrics_counter("sc_edge_presence_refused_total", NULL,
                                   "connections refused by MAX_CONNECTIONS_PER_USER (4009)");
    p->m_reaped = metrics_counter("sc_edge_presence_reaped_total", NULL,
                                  "entries of dead edges removed by this edge");
    static const char occ_help[] = "occupancy events published by this edge (occupancy.<topic>)";
    p->m_occupied = metrics_counter("sc_edge_occupancy_events_total", "state=\"occupied\"",
                                    occ_help);
    p->m_vacated = metrics_counter("sc_edge_occupancy_events_total", "state=\"vacated\"", occ_help);
    int rc = rds_create(&p->r, cfg->redis_url, 500, "sidecast-edge-presence");
    if (rc == 0 && pthread_create(&p->thread, NULL, presence_main, p) != 0) rc = -EAGAIN;
    if (rc == 0) pthread_setname_np(p->thread, "edge-presence");
    if (rc != 0) {
        rds_destroy(p->r);
        pthread_cond_destroy(&p->cond);
        pthread_mutex_destroy(&p->lock);
        free(p);
        return rc;
    }
    if (b && bus_subscribe(b, SUBJ_PRESENCE_GET, "edge", on_get, p, &p->get_sub) != 0)
        log_warn("presence.get not subscribed", "edge=%s", p->edge);
    if (b && bus_subscribe(b, SUBJ_OCCUPANCY_GET, "edge", on_occ_get, p, &p->occ_sub) != 0)
        log_warn("occupancy.get not subscribed", "edge=%s", p->edge);
    *out = p;
    return 0;
}

void presence_destroy(presence *p)
{
    if (!p) return;
    bus_unsubscribe(p->get_sub);
    bus_unsubscribe(p->occ_sub);
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
    pthread_join(p->thread, NULL);
    /* a clean stop: this edge's entries and heartbeat go now, not at the TTL */
    if (rds_up(p->r) || rds_ping(p->r) == 0) {
        char hb[256];
        snprintf(hb, sizeof hb, PFX "edge:%s", p->edge);
        const char *del[] = {"DEL", hb};
        if (reap_edge(p, p->edge, NULL) == 0) rds_commandv(p->r, NULL, 2, del, NULL);
        occ_reap(p, p->edge, true); /* after the heartbeat: this edge counts as gone */
    }
    rds_destroy(p->r);
    for (op *o = p->head, *next; o; o = next) {
        next = o->next;
        if (o->msg) bus_msg_destroy(o->msg); /* unanswered: the caller times out */
        free(o);
    }
    for (int b = 0; b < TABLE_BUCKETS; b++)
        for (entry *e = p->table[b], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    for (int b = 0; b < OCC_BUCKETS; b++)
        for (occ_topic *t = p->occ[b], *next; t; t = next) {
            next = t->next;
            free(t);
        }
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
    free(p->bt);
    free(p);
}
