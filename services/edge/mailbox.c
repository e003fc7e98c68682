/* mailbox.c - see mailbox.h. */
#include "mailbox.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define MBOX_FIRST 1024 /* elements in the first ring (or max, when smaller) */

int mbox_init(mbox *m, size_t elem, uint32_t max)
{
    memset(m, 0, sizeof *m);
    if (elem == 0 || max == 0 || max > (1u << 30)) return -EINVAL;
    m->elem = elem;
    m->max = max;
    m->cap = 1;
    while (m->cap < MBOX_FIRST && m->cap < max) m->cap *= 2;
    if (!(m->ring = malloc(elem * m->cap))) return -ENOMEM;
    if ((m->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
        int e = errno;
        free(m->ring);
        m->ring = NULL;
        return -e;
    }
    pthread_mutex_init(&m->lock, NULL);
    return 0;
}

static unsigned char *slot(const mbox *m, uint32_t i)
{
    return m->ring + (size_t)((m->head + i) & (m->cap - 1)) * m->elem;
}

void mbox_destroy(mbox *m, void (*release)(void *elem))
{
    if (!m->ring) return;
    for (uint32_t i = 0; release && i < m->count; i++) release(slot(m, i));
    free(m->ring);
    m->ring = NULL;
    close(m->efd);
    pthread_mutex_destroy(&m->lock);
}

int mbox_fd(const mbox *m) { return m->efd; }

/* Doubles the ring (lock held). The elements keep their order from index 0. */
static int grow(mbox *m)
{
    unsigned char *nr = malloc(m->elem * m->cap * 2);
    if (!nr) return -ENOMEM;
    uint32_t first = m->cap - m->head; /* elements from head to the end of the ring */
    if (first > m->count) first = m->count;
    memcpy(nr, m->ring + (size_t)m->head * m->elem, (size_t)first * m->elem);
    memcpy(nr + (size_t)first * m->elem, m->ring, (size_t)(m->count - first) * m->elem);
    free(m->ring);
    m->ring = nr;
    m->head = 0;
    m->cap *= 2;
    return 0;
}

int mbox_put(mbox *m, const void *elem)
{
    int rc = 0;
    pthread_mutex_lock(&m->lock);
    if (m->count >= m->max) {
        rc = -ENOBUFS;
    } else if (m->count == m->cap && grow(m) != 0) {
        rc = -ENOMEM;
    } else {
        memcpy(slot(m, m->count), elem, m->elem);
        rc = m->count++ == 0;
    }
    pthread_mutex_unlock(&m->lock);
    if (rc == 1) {
        uint64_t one = 1;
        while (write(m->efd, &one, sizeof one) < 0 && errno == EINTR) {
        }
    }
    return rc;
}

uint32_t mbox_take(mbox *m, void *out, uint32_t n)
{
    uint32_t got = 0;
    pthread_mutex_lock(&m->lock);
    while (got < n && m->count > 0) {
        uint32_t run = m->cap - m->head; /* contiguous elements from head */
        if (run > m->count) run = m->count;
        if (run > n - got) run = n - got;
        memcpy((unsigned char *)out + (size_t)got * m->elem, m->ring + (size_t)m->head * m->elem,
               (size_t)run * m->elem);
        m->head = (m->head + run) & (m->cap - 1);
        m->count -= run;
        got += run;
    }
    pthread_mutex_unlock(&m->lock);
    return got;
}

void mbox_ack(mbox *m)
{
    uint64_t v;
    while (read(m->efd, &v, sizeof v) < 0 && errno == EINTR) {
    }
}
