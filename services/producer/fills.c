/* fills.c - the pending-fill heap and its timer thread. */
#include "fills.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

static int earlier(const fill_job *a, const fill_job *b)
{
    return a->due_ms < b->due_ms || (a->due_ms == b->due_ms && a->seq < b->seq);
}

void fillq_init(fillq *q, size_t max)
{
    memset(q, 0, sizeof *q);
    q->max = max;
}

void fillq_clear(fillq *q)
{
    free(q->v);
    q->v = NULL;
    q->n = q->cap = 0;
}

int fillq_push(fillq *q, const fill_job *j)
{
    size_t i;
    if (q->n >= q->max) return -ENOSPC;
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 64;
        fill_job *v;
        if (cap > q->max) cap = q->max;
        v = realloc(q->v, cap * sizeof *v);
        if (!v) return -ENOMEM;
        q->v = v;
        q->cap = cap;
    }
    i = q->n++;
    q->v[i] = *j;
    q->v[i].seq = q->next_seq++;
    while (i > 0) { /* sift up */
        size_t p = (i - 1) / 2;
        fill_job t;
        if (!earlier(&q->v[i], &q->v[p])) break;
        t = q->v[i];
        q->v[i] = q->v[p];
        q->v[p] = t;
        i = p;
    }
    return 0;
}

const fill_job *fillq_peek(const fillq *q) { return q->n ? &q->v[0] : NULL; }

int fillq_pop(fillq *q, fill_job *out)
{
    size_t i = 0;
    if (!q->n) return -ENOENT;
    *out = q->v[0];
    q->v[0] = q->v[--q->n];
    for (;;) { /* sift down */
        size_t l = 2 * i + 1, r = l + 1, m = i;
        fill_job t;
        if (l < q->n && earlier(&q->v[l], &q->v[m])) m = l;
        if (r < q->n && earlier(&q->v[r], &q->v[m])) m = r;
        if (m == i) break;
        t = q->v[i];
        q->v[i] = q->v[m];
        q->v[m] = t;
        i = m;
    }
    return 0;
}

int64_t fills_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct filler {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    fillq q;
    int stop;
    filler_fn fn;
    void *ud;
};

static void *filler_main(void *arg)
{
    filler *f = arg;
    fill_job j;

    pthread_mutex_lock(&f->mu);
    while (!f->stop) {
        const fill_job *top = fillq_peek(&f->q);
        int64_t now = fills_now_ms();
        if (!top) {
            pthread_cond_wait(&f->cv, &f->mu);
            continue;
        }
        if (top->due_ms > now) {
            struct timespec until = {(time_t)(top->due_ms / 1000),
                                     (long)(top->due_ms % 1000) * 1000000L};
            pthread_cond_timedwait(&f->cv, &f->mu, &until);
            continue; /* re-check: stop, or an earlier job may have arrived */
        }
        fillq_pop(&f->q, &j);
        pthread_mutex_unlock(&f->mu);
        f->fn(&j, f->ud);
        pthread_mutex_lock(&f->mu);
    }
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

int filler_start(filler **out, size_t max_pending, filler_fn fn, void *ud)
{
    filler *f;
    pthread_condattr_t ca;
    int rc;

    *out = NULL;
    if (!fn || max_pending < 1) return -EINVAL;
    f = calloc(1, sizeof *f);
    if (!f) return -ENOMEM;
    fillq_init(&f->q, max_pending);
    f->fn = fn;
    f->ud = ud;
    pthread_mutex_init(&f->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&f->cv, &ca);
    pthread_condattr_destroy(&ca);
    rc = pthread_create(&f->thread, NULL, filler_main, f);
    if (rc != 0) {
        log_error("fill thread not started", "err=\"%s\"", strerror(rc));
        pthread_cond_destroy(&f->cv);
        pthread_mutex_destroy(&f->mu);
        free(f);
        return -rc;
    }
    *out = f;
    return 0;
}

void filler_stop(filler *f)
{
    if (!f) return;
    pthread_mutex_lock(&f->mu);
    f->stop = 1;
    pthread_cond_signal(&f->cv);
    pthread_mutex_unlock(&f->mu);
    pthread_join(f->thread, NULL);
    if (f->q.n) log_warn("pending fills dropped at shutdown", "count=%zu", f->q.n);
    fillq_clear(&f->q);
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

int filler_add(filler *f, const fill_job *j, long delay_ms)
{
    fill_job copy = *j;
    int rc;
    copy.due_ms = fills_now_ms() + (delay_ms > 0 ? delay_ms : 0);
    pthread_mutex_lock(&f->mu);
    rc = fillq_push(&f->q, &copy);
    /* Wake the thread only when the new job is the earliest: it sleeps until the top's time. */
    if (rc == 0 && fillq_peek(&f->q)->seq == f->q.next_seq - 1) pthread_cond_signal(&f->cv);
    pthread_mutex_unlock(&f->mu);
    return rc;
}

size_t filler_pending(filler *f)
{
    size_t n;
    pthread_mutex_lock(&f->mu);
    n = f->q.n;
    pthread_mutex_unlock(&f->mu);
    return n;
}
