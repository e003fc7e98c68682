/* iplimit.c - see iplimit.h. */
#include "iplimit.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

typedef struct slot {
    uint8_t key[16];
    uint32_t n; /* 0: empty */
} slot;

struct iplimit {
    pthread_mutex_t lock;
    uint32_t max_per_ip;
    uint32_t mask; /* slots - 1 (a power of two, at least twice max_addrs) */
    uint32_t used, max_used;
    uint64_t k0, k1; /* the hash key */
    slot *slots;
};

int iplimit_create(iplimit **out, uint32_t max_per_ip, uint32_t max_addrs)
{
    if (max_per_ip < 1 || max_addrs < 1 || max_addrs > (1u << 28)) return -EINVAL;
    iplimit *l = calloc(1, sizeof *l);
    if (!l) return -ENOMEM;
    uint32_t n = 16;
    while (n < 2 * max_addrs) n *= 2;
    if (!(l->slots = calloc(n, sizeof *l->slots))) {
        free(l);
        return -ENOMEM;
    }
    uint64_t k[2] = {0x9e3779b97f4a7c15ull, 0xbf58476d1ce4e5b9ull};
    (void)RAND_bytes((unsigned char *)k, sizeof k); /* on failure: the fixed key above */
    l->k0 = k[0] | 1;
    l->k1 = k[1];
    l->mask = n - 1;
    l->max_per_ip = max_per_ip;
    l->max_used = max_addrs;
    pthread_mutex_init(&l->lock, NULL);
    *out = l;
    return 0;
}

void iplimit_destroy(iplimit *l)
{
    if (!l) return;
    pthread_mutex_destroy(&l->lock);
    free(l->slots);
    free(l);
}

int iplimit_key(const struct sockaddr *sa, uint8_t key[16])
{
    memset(key, 0, 16);
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        key[10] = key[11] = 0xff; /* as an IPv4-mapped IPv6 address */
        memcpy(key + 12, &a->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        const uint8_t *b = a->sin6_addr.s6_addr;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(b, mapped, 12) == 0)
            memcpy(key, b, 16); /* an IPv4 peer on a dual-stack socket: its address */
        else
            memcpy(key, b, 8); /* the /64 */
        return 0;
    }
    return -1;
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint32_t home(const iplimit *l, const uint8_t key[16])
{
    uint64_t a, b;
    memcpy(&a, key, 8);
    memcpy(&b, key + 8, 8);
    return (uint32_t)mix(mix(a ^ l->k0) + (b ^ l->k1)) & l->mask;
}

/* The slot holding key, or the empty slot where it would go. Lock held. */
static uint32_t find(const iplimit *l, const uint8_t key[16])
{
    uint32_t i = home(l, key);
    while (l->slots[i].n && memcmp(l->slots[i].key, key, 16) != 0) i = (i + 1) & l->mask;
    return i;
}

int iplimit_acquire(iplimit *l, const uint8_t key[16])
{
    int ok = 0;
    pthread_mutex_lock(&l->lock);
    uint32_t i = find(l, key);
    slot *s = &l->slots[i];
    if (s->n) {
        if (s->n < l->max_per_ip) {
            s->n++;
            ok = 1;
        }
    } else if (l->used < l->max_used) {
        memcpy(s->key, key, 16);
        s->n = 1;
        l->used++;
        ok = 1;
    }
    pthread_mutex_unlock(&l->lock);
    return ok;
}

void iplimit_release(iplimit *l, const uint8_t key[16])
{
    pthread_mutex_lock(&l->lock);
    uint32_t i = find(l, key);
    if (l->slots[i].n && --l->slots[i].n == 0) {
        /* backward-shift deletion: pull later entries of the run into the hole when their
         * home slot does not lie cyclically between the hole and themselves */
        l->used--;
        uint32_t hole = i, j = i;
        for (;;) {
            j = (j + 1) & l->mask;
            if (!l->slots[j].n) break;
            uint32_t h = home(l, l->slots[j].key);
            bool stays = hole <= j ? (hole < h && h <= j) : (hole < h || h <= j);
            if (stays) continue;
            l->slots[hole] = l->slots[j];
            hole = j;
        }
        l->slots[hole].n = 0;
    }
    pthread_mutex_unlock(&l->lock);
}

uint32_t iplimit_count(iplimit *l, const uint8_t key[16])
{
    pthread_mutex_lock(&l->lock);
    uint32_t n = l->slots[find(l, key)].n;
    pthread_mutex_unlock(&l->lock);
    return n;
}

uint32_t iplimit_sources(iplimit *l)
{
    pthread_mutex_lock(&l->lock);
    uint32_t n = l->used;
    pthread_mutex_unlock(&l->lock);
    return n;
}
