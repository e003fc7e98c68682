/* replay.h - paced walks through one subject of a JetStream stream, for a worker.
 *
 * A replay reads the retained messages of one subject after a position with JetStream
 * direct gets ($JS.API.DIRECT.GET.<stream>, which any replica of a stream with AllowDirect
 * answers; no consumer is created, so the NATS servers hold no state per replay, per user
 * or per connection). Optionally it first checks that the position itself is still
 * retained; if not, the history is gone and the subject's oldest retained sequence is
 * reported. Then it asks for the next message of the subject after the last one, one at a
 * time, and hands each to its owner until none is left, the owner says it has caught up,
 * or the replay's event limit is reached. The position counts as retained when the message
 * at that sequence is, or when the subject's oldest retained message comes right after it
 * (so since = oldest - 1 asks for everything retained). A replay from REPLAY_LATEST first
 * asks for the subject's last message and walks on from just before it (a namespace's
 * latest value on subscribe).
 *
 * Pacing. A queue per worker sends at most `inflight` requests at once for all its
 * replays; each replay has at most one in flight, and replays take turns (FIFO), so a long
 * replay cannot starve the others. Before each request the owner is asked whether its
 * connection can take more (its outbound queue); if not, the replay waits a tick.
 *
 * Threads. A replay_q belongs to one worker's loop; every call and callback is on that
 * thread. Replies arrive on nats.c threads and are handed over through a mailbox; the queue
 * calls loop_wake() and the loop's owner calls replay_q_poll() from its wake callback.
 * Prefix replay_. */
#ifndef EDGE_REPLAY_H
#define EDGE_REPLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bus.h"
#include "ws/loop.h"

typedef struct replay_q replay_q;
typedef struct replay replay;

enum replay_end {
    REPLAY_CAUGHT_UP, /* no message after the last one (the owner may ask to look again) */
    REPLAY_GONE,      /* the starting position is no longer retained */
    REPLAY_LIMIT,     /* max_events handed over */
    REPLAY_FAILED,    /* the stream did not answer (after retries) */
};

typedef struct replay_ops {
    /* May the owner take another event now (its connection's queue)? */
    bool (*ready)(void *ud);
    /* The next retained message of the subject, in order. Return true to go on, or false
     * when the owner needs no more: the replay is then freed, without an end call. */
    bool (*event)(void *ud, uint64_t seq, const char *data, size_t len);
    /* The replay is over: freed after this returns, unless why is REPLAY_CAUGHT_UP and the
     * owner returns true, which makes it look again a little later (at most
     * REPLAY_RETRIES times; then it ends with REPLAY_FAILED). oldest: for REPLAY_GONE, the
     * subject's oldest retained sequence (0: none retained). */
    bool (*end)(void *ud, enum replay_end why, uint64_t oldest);
} replay_ops;

#define REPLAY_RETRIES 40 /* looks again after REPLAY_CAUGHT_UP, REPLAY_RETRY_MS apart */
#define REPLAY_RETRY_MS 50

typedef struct replay_cfg {
    const char *stream;       /* JetStream stream name (events) */
    const char *inbox_stream; /* the stream of the users' inboxes (replay_start inbox) */
    int inflight;             /* requests in flight for the whole queue */
    uint64_t max_events;      /* per replay */
    int timeout_ms;           /* per request; a failed request is retried, 4 s in all */
} replay_cfg;

/* The queue of one worker's loop. The stream names are copied. 0 or a negative errno. */
int replay_q_create(replay_q **out, bus *b, loop *l, const replay_cfg *cfg);
/* Handles the replies that arrived (the loop's wake callback calls it). */
void replay_q_poll(replay_q *q);
/* Cancels what is left and waits (bounded) for the requests in flight. NULL ok. */
void replay_q_destroy(replay_q *q);

/* Starts a replay of `subject` after position `since` (the owner has seen every message up
 * to since), from the inbox stream when inbox, else the events stream; check: first make
 * sure since itself is retained; not_before_ms (Unix ms, 0: none): a first message stored
 * before it counts as no longer retained (REPLAY_GONE: a namespace's history_s). No callback
 * runs before this returns; callbacks must not cancel their own replay. NULL when out of
 * memory. */
replay *replay_start(replay_q *q, bool inbox, const char *subject, uint64_t since, bool check,
                     int64_t not_before_ms, const replay_ops *ops, void *ud);
/* since for a replay from the subject's last message (check and not_before_ms then unused);
 * none at all: REPLAY_CAUGHT_UP. */
#define REPLAY_LATEST UINT64_MAX
/* Stops a replay: no callback runs for it any more. */
void replay_cancel(replay *r);

#endif
