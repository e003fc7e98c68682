/* fills.h - pending order fills: a bounded min-heap of due times (pure, fillq_) and the
 * timer thread that pops due fills and hands them to a callback (filler_). Fills are never
 * waited for in a NATS callback: the handler adds one here and returns. */
#ifndef SC_PRODUCER_FILLS_H
#define SC_PRODUCER_FILLS_H

#include <stddef.h>
#include <stdint.h>

#include "orders.h"

typedef struct fill_job {
    int64_t due_ms; /* CLOCK_MONOTONIC ms */
    uint64_t seq;   /* set by fillq_push: equal due times fire in insertion order */
    char user[ORDER_USER_MAX];
    order o;
} fill_job;

/* The heap. Storage grows on demand up to max entries. */
typedef struct fillq {
    fill_job *v;
    size_t n, cap, max;
    uint64_t next_seq;
} fillq;

void fillq_init(fillq *q, size_t max);
void fillq_clear(fillq *q); /* frees the storage; q may be initialised again */
/* Copies *j in: 0, -ENOSPC when max entries are pending, -ENOMEM. */
int fillq_push(fillq *q, const fill_job *j);
/* The earliest job (NULL when empty); valid until the next push/pop. */
const fill_job *fillq_peek(const fillq *q);
/* Removes the earliest job into *out: 0 or -ENOENT. */
int fillq_pop(fillq *q, fill_job *out);

typedef void (*filler_fn)(const fill_job *j, void *ud);

typedef struct filler filler;

/* Starts the timer thread; fn runs on it, once per job when due, outside every lock of this
 * module. Returns 0 and *out, or a negative errno. */
int filler_start(filler **out, size_t max_pending, filler_fn fn, void *ud);
/* Stops and joins the thread, drops the jobs not yet due (logged), frees; accepts NULL. */
void filler_stop(filler *f);
/* Schedules *j (copied) delay_ms from now: 0, -ENOSPC (max_pending reached), -ENOMEM. */
int filler_add(filler *f, const fill_job *j, long delay_ms);
size_t filler_pending(filler *f);

/* CLOCK_MONOTONIC in ms. */
int64_t fills_now_ms(void);

#endif
