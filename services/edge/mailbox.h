/* mailbox.h - a bounded multi-producer, single-consumer queue that wakes its consumer's
 * event loop: a ring under a mutex plus an eventfd written only when the ring goes from
 * empty to not empty (so a burst costs one wake-up, not one per message).
 *
 * The fabric gives each I/O worker one, fed by nats.c's threads. Elements are fixed-size
 * values copied in and out (the fabric's hold references). The ring starts small and doubles
 * up to the bound; a put beyond the bound fails and the caller counts the drop.
 *
 * Threads: mbox_put from any thread; mbox_take, mbox_fd and mbox_destroy on the consumer's.
 * Prefix mbox_. */
#ifndef EDGE_MAILBOX_H
#define EDGE_MAILBOX_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mbox {
    pthread_mutex_t lock;
    unsigned char *ring; /* cap elements of elem bytes */
    size_t elem;
    uint32_t cap, head, count, max;
    int efd;
} mbox;

/* elem: bytes per element; max: the bound (at least 1). 0 or a negative errno. */
int mbox_init(mbox *m, size_t elem, uint32_t max);
/* Releases what is still queued (release(element) for each, when not NULL) and the fd. */
void mbox_destroy(mbox *m, void (*release)(void *elem));
/* Readable while a wake-up is pending. When it fires (level- or edge-triggered): mbox_ack,
 * then mbox_take until it returns 0. Taking without a wake-up (e.g. before sleeping) is fine:
 * the wake-up of what was taken then stays pending and fires once, for nothing. */
int mbox_fd(const mbox *m);
/* Clears the pending wake-up. Every put after it that finds the mailbox empty wakes again. */
void mbox_ack(mbox *m);
/* Copies elem in. 1: queued and the consumer was woken (the ring was empty), 0: queued,
 * -ENOBUFS: the mailbox holds max elements (nothing queued), -ENOMEM: could not grow. */
int mbox_put(mbox *m, const void *elem);
/* Moves up to n elements, oldest first, into out. Returns how many (0: empty). */
uint32_t mbox_take(mbox *m, void *out, uint32_t n);

#endif
