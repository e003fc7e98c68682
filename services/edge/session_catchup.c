/* session_catchup.c - a subscription catching up from the stream: the replay it runs
 * (replay.c), the live events held meanwhile and the hand-over to live, driven by the
 * sequence arithmetic of seq.c. See session_int.h. */
#include "session_int.h"

#include "contract.h"
#include "proto/msg.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void catchup_free(catchup *cu)
{
    for (uint32_t i = 0; i < cu->held.n; i++) {
        wsc_frame *f = cu->held.v[i].item;
        if (cu->rec) wsc_conn_unhold(cu->rec->s->c, wsc_frame_size(f));
        wsc_frame_unref(f);
    }
    cu->held.n = 0;
    seq_hold_free(&cu->held);
    if (cu->rec) cu->rec->cu = NULL;
    free(cu);
}

static const char *rec_topic(const sub_rec *rec)
{
    return rec->t->key[0] == FAB_USER ? "user" : rec->t->key + 2;
}

/* Queues an event on rec's connection: the frame itself, or for a Server-Sent Events stream
 * the same message with its id (live: from the live flow, in the stream's order; prev: its
 * subject's previous seq). */
static int conn_send_event(sub_rec *rec, wsc_frame *f, uint64_t seq, uint64_t prev, bool live)
{
    if (rec->s->sse) return sse_send_event(rec, f, seq, prev, live);
    return wsc_conn_send_event(rec->s->c, f);
}

static void send_event(sub_rec *rec, wsc_frame *f, uint64_t seq)
{
    if (conn_send_event(rec, f, seq, 0, false) == 0) rec->s->ws->delivered++;
}

/* Keeps a live event back until the replay reaches it. What is held counts in the
 * connection's outbound bound: a client that reads nothing while it catches up on many
 * topics is closed 4008 like one that reads nothing live. No room: the stream has it, the
 * replay will fetch it. */
static void hold(catchup *cu, wsc_frame *f, uint64_t seq, uint64_t prev)
{
    if (seq_hold_room(&cu->held) != 0) return;
    if (wsc_conn_hold(cu->rec->s->c, wsc_frame_size(f)) != 0) return; /* closing: 4008 */
    seq_hold_push(&cu->held, wsc_frame_ref(f), seq, prev);
}

static void held_out(void *ud, void *item, uint64_t seq, bool send)
{
    sub_rec *rec = ud;
    wsc_frame *f = item;
    wsc_conn_unhold(rec->s->c, wsc_frame_size(f)); /* counted as queued now, if sent */
    if (send) send_event(rec, f, seq);
    wsc_frame_unref(f);
}

/* Sends the held live events that follow on from the subscription's position (every one
 * not yet delivered when force: the position is given up). True when none is left. */
static bool catchup_release(catchup *cu, bool force)
{
    return seq_hold_release(&cu->held, &cu->rec->pos, force, held_out, cu->rec);
}

/* Whether the replay may send its next event: not while the connection's queue is over
 * half its bound. A connection that stays that full for stall_ms reads nothing: it is
 * closed 4008 rather than polled, with its held events, for ever. */
static bool cu_ready(void *ud)
{
    catchup *cu = ud;
    session *s = cu->rec->s;
    const session_cfg *cfg = &s->ws->ctx->cfg;
    if (wsc_conn_queued(s->c) < cfg->max_outbound / 2) {
        cu->stalled_since = 0;
        return true;
    }
    uint64_t now = loop_now(wsc_worker_loop(wsc_conn_worker(s->c)));
    if (!cu->stalled_since)
        cu->stalled_since = now ? now : 1;
    else if (cfg->stall_ms > 0 && now - cu->stalled_since >= (uint64_t)cfg->stall_ms)
        wsc_conn_close_slow(s->c, "replay stalled");
    return false;
}

static bool cu_event(void *ud, uint64_t seq, const char *data, size_t len)
{
    catchup *cu = ud;
    sub_rec *rec = cu->rec;
    if (cu->until && seq >= cu->until) { /* bounded: the live flow has the rest */
        cu->r = NULL;
        catchup_free(cu);
        return false;
    }
    if (cu->until || !seq_is_dup(seq, rec->pos.last)) {
        wsc_frame *f = fab_frame_event(rec_topic(rec), seq, data, len);
        if (!f) { /* no memory: give the position up rather than skip an event silently */
            wsc_conn_close(rec->s->c, WS_CLOSE_INTERNAL, "out of memory");
            return true;
        }
        if (cu->until || seq_replayed(&rec->pos, seq)) send_event(rec, f, seq);
        wsc_frame_unref(f);
    }
    if (cu->until) return true;
    /* the replay reached the held live events: they go out, and the subscription is live */
    bool had = cu->held.n > 0;
    if (catchup_release(cu, false) && had && !cu->held.overflow) {
        cu->r = NULL;
        catchup_free(cu);
        return false;
    }
    return true;
}

static bool cu_end(void *ud, enum replay_end why, uint64_t oldest)
{
    catchup *cu = ud;
    sub_rec *rec = cu->rec;
    char out[REPLY_MAX];
    const char *topic = rec_topic(rec);
    if (why == REPLAY_CAUGHT_UP && !cu->until && !catchup_release(cu, false))
        return true; /* live events wait behind a gap (a replica behind the leader): again */
    switch (why) {
    case REPLAY_CAUGHT_UP: break;
    case REPLAY_GONE:
        session_reply(rec->s, out,
                      msg_replay_error_build(out, sizeof out, topic, "history_gone",
                                             "events after since are no longer retained", oldest));
        if (!cu->until) rec->pos = (seq_pos){0, 0}; /* no position: live from here */
        break;
    case REPLAY_LIMIT:
        session_reply(rec->s, out,
                      msg_replay_error_build(out, sizeof out, topic, "replay_limit",
                                             "too many events to replay", 0));
        break;
    case REPLAY_FAILED:
        session_reply(rec->s, out,
                      msg_replay_error_build(out, sizeof out, topic, "replay_failed",
                                             "history unavailable", 0));
        break;
    }
    if (why != REPLAY_CAUGHT_UP && !cu->until) {
        /* the position is given up: what is held goes out, and live goes on from it */
        if (why != REPLAY_GONE) rec->pos = (seq_pos){0, 0};
        catchup_release(cu, true);
    }
    cu->r = NULL;
    catchup_free(cu);
    return false;
}

static const replay_ops catchup_ops = {cu_ready, cu_event, cu_end};

/* Ends a hold without a replay: what is held goes out, in order, and rec is live. */
void catchup_release_hold(sub_rec *rec)
{
    catchup *cu = rec->cu;
    if (!cu || cu->r) return;
    catchup_release(cu, true);
    catchup_free(cu);
}

/* Replays rec's topic after since: seam mode (until 0) or beside live (until > 0). */
void catchup_start(sub_rec *rec, uint64_t since, bool check, uint64_t until)
{
    wstate *ws = rec->s->ws;
    char subject[300];
    snprintf(subject, sizeof subject, "%s%s",
             rec->t->key[0] == FAB_USER ? SUBJ_USERS_PREFIX : SUBJ_EVENTS_PREFIX, rec->t->key + 2);
    if (rec->pending) session_conflate_send(rec); /* older than what the replay sends */
    catchup *cu = rec->cu; /* a hold without a replay (the inbox at connect) goes on */
    assert(!cu || !cu->r); /* one replay at a time per subscription */
    bool fresh = !cu;
    if (fresh && !(cu = calloc(1, sizeof *cu))) return;
    cu->rec = rec;
    cu->until = until;
    int64_t not_before = 0; /* the namespace's history_s: older events count as gone */
    if (rec->t->key[0] == FAB_EVENT) {
        int hs = ns_find(ws->ctx->ns, rec->t->key + 2)->history_s;
        if (hs > 0) {
            struct timespec now;
            clock_gettime(CLOCK_REALTIME, &now);
            not_before = ((int64_t)now.tv_sec - hs) * 1000 + now.tv_nsec / 1000000;
        }
    }
    if (!(cu->r = replay_start(ws->rq, rec->t->key[0] == FAB_USER, subject, since, check,
                               not_before, &catchup_ops, cu))) {
        if (fresh)
            free(cu);
        else
            catchup_release_hold(rec);
        return;
    }
    rec->cu = cu;
}

/* A subscribe with since on rec (new or not). */
void catchup_subscribe_since(sub_rec *rec, uint64_t since)
{
    if (rec->cu && !rec->cu->r && !rec->pos.last) { /* the inbox's hold: replay, then it */
        rec->s->inbox_hold_until = 0;
        rec->pos.last = since;
        catchup_start(rec, since, true, 0);
        return;
    }
    if (rec->cu) return; /* catching up already */
    switch (seq_since(&rec->pos, since)) {
    case SEQ_SINCE_SEAM: /* nothing delivered yet: replay, then live */
        rec->pos.last = since;
        catchup_start(rec, since, true, 0);
        break;
    case SEQ_SINCE_BEFORE: catchup_start(rec, since, true, rec->pos.first); break;
    case SEQ_SINCE_NOTHING: break;
    }
}

void catchup_subscribe_latest(sub_rec *rec)
{
    if (rec->cu || rec->pos.last) return;
    catchup_start(rec, REPLAY_LATEST, false, 0); /* seam mode: live is held until it is done */
}

/* Whether a live event goes out to rec now: it may be a duplicate (a replay sent it), or be
 * held while rec catches up, or show a gap (its subject's previous event never came), which
 * starts a catch-up and is held. */
bool catchup_live_accept(sub_rec *rec, wsc_frame *f, uint64_t seq, uint64_t prev)
{
    catchup *cu = rec->cu;
    if (cu && !cu->until) {
        hold(cu, f, seq, prev);
        return false;
    }
    switch (seq_live(&rec->pos, seq, prev)) {
    case SEQ_LIVE_DUP: metric_inc(session_m.dups); return false;
    case SEQ_LIVE_GAP:
        if (cu) break; /* a bounded replay runs beside live: it is not this gap's */
        metric_inc(session_m.gaps);
        catchup_start(rec, rec->pos.last, false, 0);
        if (rec->cu) {
            hold(rec->cu, f, seq, prev);
            return false;
        }
        break;
    case SEQ_LIVE_SEND: break;
    }
    seq_advance(&rec->pos, seq);
    return true;
}

/* Queues f on every local member of key. Events carry their stream sequence: one not newer
 * than the last seen here, and close behind it, is a duplicate (two NATS subscriptions
 * overlap for a moment when a topic's last subscriber leaves and a new one arrives at once)
 * and is dropped. One far behind means the stream started over (a new NATS cluster): it is
 * delivered and becomes the new position. Then each member judges it (catchup_live_accept). */
void catchup_deliver(wstate *ws, const char *key, wsc_frame *f, uint64_t seq, uint64_t prev)
{
    tentry *t = smap_find(ws, key);
    if (!t) return;
    if (seq) {
        if (seq_is_dup(seq, t->last_seq)) return;
        t->last_seq = seq;
    }
    for (uint32_t i = 0; i < t->n; i++) {
        sub_rec *rec = t->members[i];
        if (seq && !catchup_live_accept(rec, f, seq, prev)) continue;
        if ((rec->latest || rec->pending) && session_conflate(rec, f)) continue;
        if (conn_send_event(rec, f, seq, prev, true) == 0) ws->delivered++;
    }
}
