/* presence.h - who is connected where: this edge's connections, projected into Redis.
 *
 * The edge keeps its own connections in memory (the truth for this process) and a thread
 * mirrors them into Redis, where every edge and presence.get can see them:
 *
 *   sc:presence:user:<sub>     hash  "<edge>/<conn>" -> "<connected_at, Unix s>"
 *   sc:presence:conns:<edge>   set   "<sub>\t<conn>": what this edge registered (reaping)
 *   sc:presence:edge:<edge>    string with a TTL: the edge's heartbeat
 *   sc:presence:edges          set   every edge that registered something
 *
 * An entry counts only while its edge's heartbeat lives, so a killed edge's connections
 * vanish from answers within PRESENCE_TTL_S; every edge also reaps the entries of edges
 * whose heartbeat is gone (one at a time, under a short Redis lock). Routing never reads
 * Redis: events reach connections through NATS subjects alone.
 *
 * Redis down: the edge goes on serving; presence is "degraded" (readyz detail, metric),
 * limit checks let connections in, and when Redis answers again this edge's entries are
 * rewritten from memory (stale ones of its own removed first).
 *
 * MAX_CONNECTIONS_PER_USER > 0: a new connection is registered by a Lua script that counts
 * the user's live entries on every edge and refuses when the limit is reached (atomic, so
 * two edges cannot both let the last one in).
 *
 * Threads: presence_add/remove from any worker; one presence thread talks to Redis;
 * verdicts come back through the callback on the presence thread. presence.get arrives on
 * nats.c's thread and is queued to the presence thread, which answers it (a Redis call must
 * not hold up the thread that carries every event). Prefix presence_. */
#ifndef EDGE_PRESENCE_H
#define EDGE_PRESENCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bus.h"

typedef struct presence presence;

/* A limit check's answer, on the presence thread: forward it to the worker. */
typedef void (*presence_verdict_fn)(void *ud, int worker, uint64_t conn, bool allowed);

typedef struct presence_cfg {
    const char *redis_url;
    const char *edge_id;
    int ttl_s;         /* heartbeat TTL; refreshed every ttl/3 */
    long max_per_user; /* 0: no limit */
    presence_verdict_fn verdict;
    void *verdict_ud;
} presence_cfg;

/* Starts the thread (Redis may be down: degraded until it answers) and, when b is given,
 * answers presence.get in the queue group "edge". 0 or a negative code. */
int presence_create(presence **out, const presence_cfg *cfg, bus *b);
/* Removes this edge's entries from Redis (bounded), stops the thread, frees. NULL ok. */
void presence_destroy(presence *p);

/* A connection of user opened (check: ask for a verdict first; the connection counts once
 * allowed). Any thread. */
void presence_add(presence *p, const char *user, uint64_t conn, int worker, bool check);
/* It closed (only after presence_add). Any thread. */
void presence_remove(presence *p, const char *user, uint64_t conn);

/* Occupancy: this edge now has subscribers for topic (on), or no more (off); called by the
 * fabric for the process's first and last interest in a topic. Any thread. Redis keeps, per
 * topic, the edges that have subscribers (sc:presence:occ:<topic>, and per edge its topics,
 * sc:presence:occ_edge:<edge>); when a topic gains its first or loses its last live edge,
 * the presence thread publishes occupancy.<topic> {"topic","occupied":bool,"ts"}. A dead
 * edge's topics are vacated when the reaper takes it out; a clean stop vacates at once. While
 * Redis is away nothing is announced (the rewrite after it puts this edge's topics back
 * without announcing). occupancy.get {"topic"} answers {"topic","occupied","edges"}. */
void presence_occupancy(presence *p, const char *topic, bool on);

/* presence.get's access rule: true when caller (Sidecast-User; NULL: a service on the bus)
 * may see user's presence: caller is user, or sub_topics_json (the token's sub_topics as
 * the gateway passes them, or NULL) has a pattern matching "presence.<user>". Pure. */
bool presence_may_read(const char *caller, const char *sub_topics_json, const char *user);

/* 1 when Redis is not being kept up to date right now. */
int presence_degraded(const presence *p);

#endif
