/* perms.c - interned topic permissions; see perms.h. */
#include "perms.h"

#include "proto/topic.h"

#include <stdlib.h>
#include <string.h>

/* Appends one pattern v[0..n) to buf, NUL-ended; the new length, or -1 past cap. */
static long pack_one(char *buf, size_t len, size_t cap, const char *v, size_t n)
{
    if (n == 0 || memchr(v, '\0', n)) return (long)len; /* "\u0000": matches no topic */
    if (len + n + 1 > cap) return -1;
    memcpy(buf + len, v, n);
    buf[len + n] = '\0';
    return (long)(len + n + 1);
}

/* Appends the patterns of a claim to buf, each ended by NUL: an array's strings (anything
 * else in it never matches), or a string's words separated by spaces or commas (an OAuth
 * "scope"-style claim). Returns the new length, or -1 past cap. */
static long pack(char *buf, size_t len, size_t cap, const json_t *claim)
{
    long l = (long)len;
    if (json_is_string(claim)) {
        const char *v = json_string_value(claim), *end = v + json_string_length(claim);
        if (memchr(v, '\0', json_string_length(claim))) return l; /* "\u0000": none */
        while (v < end && l >= 0) {
            size_t n = strcspn(v, " ,");
            if (v + n > end) n = (size_t)(end - v);
            l = pack_one(buf, (size_t)l, cap, v, n);
            v += n + 1;
        }
        return l;
    }
    size_t i;
    const json_t *p;
    json_array_foreach(claim, i, p) {
        if (!json_is_string(p)) continue;
        l = pack_one(buf, (size_t)l, cap, json_string_value(p), json_string_length(p));
        if (l < 0) return -1;
    }
    return l;
}

/* The claim name of src (or dflt), and its value in claims, or src's default list. */
static const json_t *claim_of(const json_t *claims, const char *name, const char *dflt,
                              const json_t *fallback)
{
    const json_t *v = json_object_get(claims, name && name[0] ? name : dflt);
    return v ? v : fallback;
}

/* The worker's permission set equal to the payload's (a new reference), or NULL (no memory,
 * or patterns beyond any token's size). */
perms *perms_get(perms_table *t, const json_t *claims, const perms_source *src)
{
    static const perms_source none = {0};
    if (!src) src = &none;
    char buf[PERMS_MAX];
    long sl = pack(buf, 0, sizeof buf,
                   claim_of(claims, src->sub_claim, "sub_topics", src->sub_default));
    long rl = sl < 0 ? -1
                     : pack(buf, (size_t)sl, sizeof buf,
                            claim_of(claims, src->pub_claim, "pub_topics", src->pub_default));
    long pl = rl < 0 ? -1
                     : pack(buf, (size_t)rl, sizeof buf,
                            claim_of(claims, src->rpc_claim, "rpc_methods", src->rpc_default));
    if (pl < 0) return NULL;
    unsigned long h = 5381;
    for (long i = 0; i < pl; i++) h = h * 33 + (unsigned char)buf[i];
    h = h * 33 + (unsigned long)sl; /* where the lists part counts too */
    h = h * 33 + (unsigned long)rl;
    perms **head = &t->buckets[h % PERMS_BUCKETS];
    for (perms *p = *head; p; p = p->next) {
        if (p->hash == h && p->len == (uint32_t)pl && p->pub_off == (uint32_t)sl &&
            p->rpc_off == (uint32_t)rl && memcmp(p->pats, buf, (size_t)pl) == 0) {
            p->refs++;
            return p;
        }
    }
    perms *p = malloc(sizeof *p + (size_t)pl);
    if (!p) return NULL;
    p->hash = h;
    p->refs = 1;
    p->len = (uint32_t)pl;
    p->pub_off = (uint32_t)sl;
    p->rpc_off = (uint32_t)rl;
    memcpy(p->pats, buf, (size_t)pl);
    p->next = *head;
    *head = p;
    return p;
}

void perms_put(perms_table *t, perms *p)
{
    if (!p || --p->refs > 0) return;
    perms **pp = &t->buckets[p->hash % PERMS_BUCKETS];
    while (*pp != p) pp = &(*pp)->next;
    *pp = p->next;
    free(p);
}

/* pub: the pub_topics list, else sub_topics. No permissions (none taken yet): nothing. */
bool perms_allow(const perms *p, bool pub, const char *topic)
{
    if (!p) return false;
    size_t at = pub ? p->pub_off : 0, end = pub ? p->rpc_off : p->pub_off;
    while (at < end) {
        const char *pat = p->pats + at;
        if (topic_match(pat, topic)) return true;
        at += strlen(pat) + 1;
    }
    return false;
}

bool perms_allow_rpc(const perms *p, const char *method)
{
    if (!p) return false;
    for (size_t at = p->rpc_off; at < p->len;) {
        const char *pat = p->pats + at;
        if (topic_match(pat, method)) return true;
        at += strlen(pat) + 1;
    }
    return false;
}
