/* session_map.c - a worker's topic map: the sessions subscribed to each key ("e:<topic>",
 * "u:<user>"), and the worker's interest in the fabric (fab_watch) while a key has members.
 * See session_int.h. */
#include "session_int.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned long key_hash(const char *s)
{
    unsigned long h = 5381;
    while (*s) h = h * 33 + (unsigned char)*s++;
    return h % MAP_BUCKETS;
}

tentry *smap_find(wstate *ws, const char *key)
{
    for (tentry *t = ws->buckets[key_hash(key)]; t; t = t->next)
        if (strcmp(t->key, key) == 0) return t;
    return NULL;
}

static void smap_drop(wstate *ws, tentry *t);

/* Adds s to key's members. Returns the record, or NULL (no memory / fabric refused);
 * *wait as fab_watch's (0: NATS has the subscription). */
sub_rec *smap_join(wstate *ws, session *s, enum fab_kind kind, const char *name, uint64_t *wait)
{
    char key[300];
    snprintf(key, sizeof key, "%c:%s", (char)kind, name);
    tentry *t = smap_find(ws, key);
    if (!t) {
        size_t kl = strlen(key);
        if (!(t = calloc(1, sizeof *t + kl + 1))) return NULL;
        memcpy(t->key, key, kl + 1);
        if (fab_watch(ws->port, kind, name, &t->wait_seq) != 0) {
            free(t);
            return NULL;
        }
        unsigned long h = key_hash(key);
        t->next = ws->buckets[h];
        ws->buckets[h] = t;
    }
    sub_rec *r = NULL;
    if (t->n == t->cap) {
        uint32_t ncap = t->cap ? t->cap * 2 : 1; /* an inbox has one member, most often */
        sub_rec **nm = realloc(t->members, sizeof *nm * ncap);
        if (!nm) goto oom;
        t->members = nm;
        t->cap = ncap;
    }
    if (!(r = calloc(1, sizeof *r))) goto oom;
    r->t = t;
    r->s = s;
    r->idx = t->n;
    t->members[t->n++] = r;
    /* wait_seq: what the entry's first member waited for. Confirmed since: no wait. Still
     * pending: the same wait. Over but failed (NATS away): a new flush for this member. */
    *wait = 0;
    if (t->wait_seq && t->wait_seq > fab_port_live(ws->port)) {
        if (t->wait_seq <= fab_port_settled(ws->port)) t->wait_seq = fab_port_ticket(ws->port);
        *wait = t->wait_seq;
    }
    return r;
oom:
    if (t->n == 0) smap_drop(ws, t); /* a new entry must not keep its NATS interest */
    return NULL;
}

/* Unlinks an entry with no member and drops the worker's interest in it. */
static void smap_drop(wstate *ws, tentry *t)
{
    unsigned long h = key_hash(t->key);
    tentry **pp = &ws->buckets[h];
    while (*pp != t) pp = &(*pp)->next;
    *pp = t->next;
    fab_unwatch(ws->port, (enum fab_kind)t->key[0], t->key + 2);
    free(t->members);
    free(t);
}

void smap_leave(wstate *ws, sub_rec *r)
{
    tentry *t = r->t;
    assert(t->n > 0 && r->idx < t->n && t->members[r->idx] == r);
    if (r->cu) {
        replay_cancel(r->cu->r);
        catchup_free(r->cu);
    }
    session_conflate_drop(r);
    t->members[r->idx] = t->members[--t->n];
    t->members[r->idx]->idx = r->idx;
    free(r);
    if (t->n == 0) smap_drop(ws, t); /* last local member */
}
