/* seq.c - a subscription's sequence arithmetic; see seq.h. */
#include "seq.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

enum seq_since seq_since(const seq_pos *p, uint64_t since)
{
    if (!p->last) return SEQ_SINCE_SEAM;
    if (since + 1 < p->first) return SEQ_SINCE_BEFORE;
    return SEQ_SINCE_NOTHING;
}

int seq_hold_room(seq_holdq *q)
{
    if (q->n < q->cap) return 0;
    uint32_t ncap = q->cap ? q->cap * 2 : 8;
    seq_held *nv = ncap <= SEQ_HELD_MAX ? realloc(q->v, sizeof *nv * ncap) : NULL;
    if (!nv) {
        q->overflow = true;
        return -1;
    }
    q->v = nv;
    q->cap = ncap;
    return 0;
}

void seq_hold_push(seq_holdq *q, void *item, uint64_t seq, uint64_t prev)
{
    assert(q->n < q->cap);
    q->v[q->n++] = (seq_held){item, seq, prev};
}

bool seq_hold_release(seq_holdq *q, seq_pos *p, bool force, seq_emit_fn emit, void *ud)
{
    uint32_t i = 0;
    for (; i < q->n; i++) {
        seq_held *h = &q->v[i];
        bool dup = seq_is_dup(h->seq, p->last);
        if (!force && !dup && h->prev > p->last) break; /* a gap yet */
        if (!dup) seq_advance(p, h->seq);
        emit(ud, h->item, h->seq, !dup);
    }
    if (i > 0) {
        memmove(q->v, q->v + i, sizeof *q->v * (q->n - i));
        q->n -= i;
    }
    return q->n == 0;
}

bool seq_replayed(seq_pos *p, uint64_t seq)
{
    if (seq_is_dup(seq, p->last)) return false;
    seq_advance(p, seq);
    return true;
}

void seq_hold_free(seq_holdq *q)
{
    assert(q->n == 0);
    free(q->v);
    q->v = NULL;
    q->cap = 0;
}
