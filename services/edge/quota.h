/* quota.h - byte budgets per user, shared by every worker of an edge: how many bytes of
 * client publishes one user may send through this edge, whatever the number of its
 * connections (each connection has its own, smaller, budget in the session).
 *
 * A token bucket per user (`rate` bytes a second, up to `burst`), in a fixed table of
 * buckets of four slots, hashed with a per-process random key. Memory is bounded however
 * many users come: a user whose bucket has refilled is as good as absent, so its slot is
 * taken over; when the four slots of a bucket all hold users still paying for recent
 * publishes, a newcomer shares the first one (two users may then share a budget: never
 * more bytes than one budget allows, never an allocation). A mutex per bucket group.
 *
 * Threads: any. Prefix quota_. */
#ifndef EDGE_QUOTA_H
#define EDGE_QUOTA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct quota quota;

/* users: about how many users may be paying at once (the table's size; >= 1); rate and
 * burst > 0 (bytes a second, bytes). 0 or -ENOMEM / -EINVAL. */
int quota_create(quota **out, size_t users, double rate, double burst);
void quota_destroy(quota *q); /* NULL ok */

/* Takes n bytes from key's budget at now_ms (a monotonic clock in ms): true when the
 * budget had them (and they are taken), false when not (nothing taken). */
bool quota_take(quota *q, const char *key, size_t n, uint64_t now_ms);

/* The same arithmetic for one bucket the caller owns (a connection's publish bytes, its
 * message rate): tokens refills at rate a second up to burst since *at_ms; n taken when
 * there. Pure. */
bool quota_bucket_take(double *tokens, uint64_t *at_ms, double rate, double burst, size_t n,
                       uint64_t now_ms);

#endif
