/* quota.c - per-user byte budgets in a bounded table; see quota.h. */
#include "quota.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define QUOTA_WAYS 4   /* slots per bucket */
#define QUOTA_LOCKS 64 /* mutexes, each guarding every 64th bucket */

typedef struct slot {
    uint64_t key;   /* keyed hash of the user (0: empty) */
    double tokens;  /* bytes left */
    uint64_t at_ms; /* when tokens was last refilled */
} slot;

struct quota {
    double rate, burst;
    uint64_t seed;
    size_t nbuckets;
    pthread_mutex_t locks[QUOTA_LOCKS];
    slot slots[]; /* nbuckets * QUOTA_WAYS */
};

bool quota_bucket_take(double *tokens, uint64_t *at_ms, double rate, double burst, size_t n,
                       uint64_t now_ms)
{
    if (now_ms > *at_ms) {
        *tokens += (double)(now_ms - *at_ms) * rate / 1000.0;
        if (*tokens > burst) *tokens = burst;
        *at_ms = now_ms;
    }
    if ((double)n > *tokens) return false;
    *tokens -= (double)n;
    return true;
}

int quota_create(quota **out, size_t users, double rate, double burst)
{
    *out = NULL;
    if (users < 1 || !(rate > 0) || !(burst > 0)) return -EINVAL;
    size_t nb = (users + QUOTA_WAYS - 1) / QUOTA_WAYS;
    if (nb > SIZE_MAX / (QUOTA_WAYS * sizeof(slot)) - 1) return -EINVAL;
    quota *q = calloc(1, sizeof *q + nb * QUOTA_WAYS * sizeof(slot));
    if (!q) return -ENOMEM;
    q->rate = rate;
    q->burst = burst;
    q->nbuckets = nb;
    if (getrandom(&q->seed, sizeof q->seed, 0) != (ssize_t)sizeof q->seed)
        q->seed = (uint64_t)(uintptr_t)q ^ 0x9e3779b97f4a7c15ULL;
    for (int i = 0; i < QUOTA_LOCKS; i++) pthread_mutex_init(&q->locks[i], NULL);
    *out = q;
    return 0;
}

void quota_destroy(quota *q)
{
    if (!q) return;
    for (int i = 0; i < QUOTA_LOCKS; i++) pthread_mutex_destroy(&q->locks[i]);
    free(q);
}

/* FNV-1a over the key, seeded, then a splitmix64 finish: never 0. */
static uint64_t key_hash(uint64_t seed, const char *key)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ seed;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ULL;
    }
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
    return h ? h : 1;
}

bool quota_take(quota *q, const char *key, size_t n, uint64_t now_ms)
{
    uint64_t h = key_hash(q->seed, key);
    size_t b = (size_t)(h % q->nbuckets);
    slot *s = &q->slots[b * QUOTA_WAYS], *use = NULL;
    pthread_mutex_t *lock = &q->locks[b % QUOTA_LOCKS];
    pthread_mutex_lock(lock);
    for (int i = 0; i < QUOTA_WAYS && !use; i++)
        if (s[i].key == h) use = &s[i];
    for (int i = 0; i < QUOTA_WAYS && !use; i++) {
        /* empty, or a user whose budget is whole again: as good as absent */
        bool whole = now_ms >= s[i].at_ms &&
                     s[i].tokens + (double)(now_ms - s[i].at_ms) * q->rate / 1000.0 >= q->burst;
        if (s[i].key == 0 || whole) {
            use = &s[i];
            use->key = h;
            use->tokens = q->burst;
            use->at_ms = now_ms;
        }
    }
    if (!use) use = &s[0]; /* four users still paying: the newcomer shares the first budget */
    bool ok = quota_bucket_take(&use->tokens, &use->at_ms, q->rate, q->burst, n, now_ms);
    pthread_mutex_unlock(lock);
    return ok;
}
