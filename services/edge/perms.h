/* perms.h - a token's permissions (its sub_topics, pub_topics and rpc_methods patterns), interned
 * per worker: the sessions whose tokens carry the same lists share one set, instead of each
 * keeping the token's JSON arrays (a few hundred bytes per connection, most of them alike).
 * A table belongs to one worker thread and is not locked. Prefix perms_. */
#ifndef EDGE_PERMS_H
#define EDGE_PERMS_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#define PERMS_BUCKETS 256 /* chained */
#define PERMS_MAX 8192    /* bytes of a set's patterns: no token is longer */

typedef struct perms {
    struct perms *next;
    unsigned long hash;
    uint32_t refs;
    uint32_t len;     /* bytes of pats */
    uint32_t pub_off; /* where the pub_topics patterns start in pats */
    uint32_t rpc_off; /* where the rpc_methods patterns start */
    char pats[];      /* the sub_topics patterns, then the pub_topics, then the rpc_methods
                       * ones, each ended by NUL */
} perms;

typedef struct perms_table {
    perms *buckets[PERMS_BUCKETS];
} perms_table;

/* Where a token's patterns are (JWT_SUB_TOPICS_CLAIM, JWT_PUB_TOPICS_CLAIM: a token from
 * another identity provider names them its own way), and the lists for a token without
 * the claim (JWT_DEFAULT_SUB_TOPICS / _PUB_: JSON arrays of strings). NULL members: the
 * claims sub_topics and pub_topics, and no default. */
typedef struct perms_source {
    const char *sub_claim, *pub_claim;
    const json_t *sub_default, *pub_default;
    /* the methods a client may call over its socket (JWT_RPC_CLAIM, JWT_DEFAULT_RPC_METHODS;
     * NULL: the claim rpc_methods, no default) */
    const char *rpc_claim;
    const json_t *rpc_default;
} perms_source;

/* The table's set equal to the claims' patterns (a new reference), or NULL (no memory, or
 * patterns beyond any token's size). A claim is an array of patterns or a string of them
 * separated by spaces or commas; a pattern that is not a string, or holds "\u0000", is left
 * out: it would match no topic. src NULL: the defaults above. */
perms *perms_get(perms_table *t, const json_t *claims, const perms_source *src);
/* Drops a reference; the last one frees the set. NULL ok. */
void perms_put(perms_table *t, perms *p);
/* Whether topic matches one of the set's patterns: pub_topics when pub, else sub_topics.
 * NULL (no token taken yet) allows nothing. */
bool perms_allow(const perms *p, bool pub, const char *topic);
/* Whether method matches one of the set's rpc_methods patterns. NULL allows nothing. */
bool perms_allow_rpc(const perms *p, const char *method);

#endif
