/* seq.h - the sequence arithmetic of a subscription: duplicates, gaps, the live events held
 * while a replay catches up, and the seam where the replay hands over to live.
 *
 * Every event of a topic carries its stream sequence (seq) and the sequence of the previous
 * event of the same subject (prev, 0 for the first). A subscription's position is the first
 * and last seq delivered to it (0: none yet); between the two it has seen every event of
 * the topic. session.c drives it; these functions decide, and hold nothing but what they
 * are given (held items are opaque pointers: session.c's frames). Pure: no I/O, no clock,
 * no locks; the queue allocates. The three that run for every live event and recipient are
 * inline. Prefix seq_. */
#ifndef EDGE_SEQ_H
#define EDGE_SEQ_H

#include <assert.h>
#include <stdbool.h>
#include <stdint.h>

#define SEQ_DUP_WINDOW 4096 /* a seq this close behind the last one is a duplicate */
#define SEQ_HELD_MAX 256    /* live events held per subscription while it catches up */

typedef struct seq_pos {
    uint64_t first, last; /* first and last seq delivered (0: none) */
} seq_pos;

/* True when seq was delivered already: not newer than last and less than SEQ_DUP_WINDOW
 * behind it. One further behind means the stream started over (a new cluster): not a
 * duplicate, it becomes the new position. */
static inline bool seq_is_dup(uint64_t seq, uint64_t last)
{
    return last && seq <= last && last - seq < SEQ_DUP_WINDOW;
}

/* Records that seq was delivered: the first one also starts the position. */
static inline void seq_advance(seq_pos *p, uint64_t seq)
{
    assert(seq != 0);
    if (!p->first) p->first = seq;
    p->last = seq;
}

/* What to do with a live event on a subscription that is not catching up. */
enum seq_live {
    SEQ_LIVE_SEND, /* it follows on (or there is no position yet): deliver it, then advance */
    SEQ_LIVE_DUP,  /* delivered already: drop it */
    SEQ_LIVE_GAP,  /* events between last and it never came: catch up from last, hold it */
};
static inline enum seq_live seq_live(const seq_pos *p, uint64_t seq, uint64_t prev)
{
    if (seq_is_dup(seq, p->last)) return SEQ_LIVE_DUP;
    if (p->last && prev > p->last && seq > p->last) return SEQ_LIVE_GAP;
    return SEQ_LIVE_SEND;
}

/* What a subscribe with since asks of a subscription at p. */
enum seq_since {
    SEQ_SINCE_NOTHING, /* everything after since was delivered, or is being: nothing to do */
    SEQ_SINCE_SEAM,    /* nothing delivered yet: position := since, replay up to live */
    SEQ_SINCE_BEFORE,  /* live already, since is older than first: replay (since, first)
                        * beside the live flow, which goes on untouched */
};
enum seq_since seq_since(const seq_pos *p, uint64_t since);

/* Live events held back while the subscription catches up, in arrival order. */
typedef struct seq_held {
    void *item;
    uint64_t seq, prev;
} seq_held;

typedef struct seq_holdq {
    seq_held *v;
    uint32_t n, cap;
    bool overflow; /* a live event found no room: the replay must fetch it from the stream */
} seq_holdq;

/* Makes room for one more event: 0, or -1 when SEQ_HELD_MAX are held (or memory is short),
 * which sets overflow. */
int seq_hold_room(seq_holdq *q);
/* Appends an event after seq_hold_room said 0. */
void seq_hold_push(seq_holdq *q, void *item, uint64_t seq, uint64_t prev);

/* Called for each event leaving the queue, in order: send is true when it is to be
 * delivered (p already advanced past it), false when it is a duplicate to drop. The item is
 * the caller's again either way. */
typedef void (*seq_emit_fn)(void *ud, void *item, uint64_t seq, bool send);

/* Lets out the held events that follow on from p: a duplicate is dropped, an event whose
 * prev is past p->last waits (a gap the replay has yet to fill) and so does everything
 * after it. With force every event leaves (the position is given up): duplicates still
 * dropped. Returns true when nothing is held any more. */
bool seq_hold_release(seq_holdq *q, seq_pos *p, bool force, seq_emit_fn emit, void *ud);

/* The seam: a replayed event reaches the subscription. Returns true when it is to be
 * delivered (p advanced), false for a duplicate (live delivered it first). */
bool seq_replayed(seq_pos *p, uint64_t seq);

/* Frees the queue's array; the items must have been taken out (emit) by then. */
void seq_hold_free(seq_holdq *q);

#endif
