/* perms.c - interned topic permissions; see perms.h. */
#include "perms.h"

#include "proto/topic.h"

#include <stdlib.h>
#include <string.h>

/* Appends the string patterns of arr (anything else in it never matches) to buf, each ended
 * by NUL; returns the new length, or -1 past cap. */
static long pack(char *buf, size_t len, size_t cap, const json_t *arr)
{
    size_t i;
    const json_t *p;
    json_array_foreach(arr, i, p) {
        if (!json_is_string(p)) continue;
        size_t n = json_string_length(p);
        const char *v = json_string_value(p);
        if (memchr(v, '\0', n)) continue; /* "\u0000" in a pattern: matches no topic */
        if (len + n + 1 > cap) return -1;
        memcpy(buf + len, v, n + 1);
        len += n + 1;
    }
    return (long)len;
}

/* The worker's permission set equal to the payload's (a new reference), or NULL (no memory,
 * or patterns beyond any token's size). */
perms *perms_get(perms_table *t, const json_t *claims)
{
    char buf[PERMS_MAX];
    long sl = pack(buf, 0, sizeof buf, json_object_get(claims, "sub_topics"));
    long pl = sl < 0 ? -1
                     : pack(buf, (size_t)sl, sizeof buf, json_object_get(claims, "pub_topics"));
    if (pl < 0) return NULL;
    unsigned long h = 5381;
    for (long i = 0; i < pl; i++) h = h * 33 + (unsigned char)buf[i];
    h = h * 33 + (unsigned long)sl; /* where the lists part counts too */
    perms **head = &t->buckets[h % PERMS_BUCKETS];
    for (perms *p = *head; p; p = p->next) {
        if (p->hash == h && p->len == (uint32_t)pl && p->pub_off == (uint32_t)sl &&
            memcmp(p->pats, buf, (size_t)pl) == 0) {
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
    size_t at = pub ? p->pub_off : 0, end = pub ? p->len : p->pub_off;
    while (at < end) {
        const char *pat = p->pats + at;
        if (topic_match(pat, topic)) return true;
        at += strlen(pat) + 1;
    }
    return false;
}
