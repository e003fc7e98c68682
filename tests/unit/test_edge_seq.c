/* test_edge_seq.c - a subscription's sequence arithmetic (services/edge/seq.c): the
 * duplicate window, gaps, what a subscribe with since asks for, held live events and the
 * seam where a replay hands over to live, then random interleavings of the two checked for
 * "every event after since exactly once, in order". */
#include "test.h"

#include "../../services/edge/seq.h"

#include <stdint.h>

/* What left a hold queue, in order. */
typedef struct out_log {
    uint64_t seq[1024];
    bool send[1024];
    int n;
} out_log;

static void log_emit(void *ud, void *item, uint64_t seq, bool send)
{
    out_log *l = ud;
    (void)item;
    if (l->n < 1024) {
        l->seq[l->n] = seq;
        l->send[l->n] = send;
        l->n++;
    }
}

TEST(duplicate_window)
{
    CHECK(!seq_is_dup(5, 0)); /* no position: nothing is a duplicate */
    CHECK(seq_is_dup(5, 5));
    CHECK(seq_is_dup(4, 5));
    CHECK(!seq_is_dup(6, 5));
    CHECK(seq_is_dup(10000 - (SEQ_DUP_WINDOW - 1), 10000));
    /* far behind: the stream started over (a new cluster), not a duplicate */
    CHECK(!seq_is_dup(10000 - SEQ_DUP_WINDOW, 10000));
    CHECK(!seq_is_dup(1, UINT64_MAX));
}

TEST(live_events_follow_skip_or_show_a_gap)
{
    seq_pos p = {0, 0};
    CHECK_EQ_INT(seq_live(&p, 42, 41), SEQ_LIVE_SEND); /* no position yet: whatever comes */
    seq_advance(&p, 42);
    CHECK_EQ_INT(p.first, 42);
    CHECK_EQ_INT(p.last, 42);
    CHECK_EQ_INT(seq_live(&p, 43, 42), SEQ_LIVE_SEND);
    CHECK_EQ_INT(seq_live(&p, 50, 42), SEQ_LIVE_SEND); /* 43..49 were other subjects' */
    CHECK_EQ_INT(seq_live(&p, 50, 0), SEQ_LIVE_SEND);  /* the subject's first event */
    CHECK_EQ_INT(seq_live(&p, 44, 43), SEQ_LIVE_GAP);  /* 43 never came */
    CHECK_EQ_INT(seq_live(&p, 42, 41), SEQ_LIVE_DUP);
    CHECK_EQ_INT(seq_live(&p, 40, 39), SEQ_LIVE_DUP);
    seq_advance(&p, 43);
    CHECK_EQ_INT(p.first, 42); /* first stays */
    CHECK_EQ_INT(p.last, 43);
    /* the stream started over: far behind is no duplicate, and becomes the position */
    seq_pos q = {5000, 9000};
    CHECK_EQ_INT(seq_live(&q, 3, 2), SEQ_LIVE_SEND);
    seq_advance(&q, 3);
    CHECK_EQ_INT(q.last, 3);
    CHECK_EQ_INT(seq_live(&q, 4, 3), SEQ_LIVE_SEND);
}

TEST(since_asks_for_a_seam_an_older_range_or_nothing)
{
    seq_pos none = {0, 0};
    CHECK_EQ_INT(seq_since(&none, 0), SEQ_SINCE_SEAM);
    CHECK_EQ_INT(seq_since(&none, 17), SEQ_SINCE_SEAM);
    seq_pos live = {10, 20};
    CHECK_EQ_INT(seq_since(&live, 5), SEQ_SINCE_BEFORE);  /* 6..9 are missing before first */
    CHECK_EQ_INT(seq_since(&live, 8), SEQ_SINCE_BEFORE);  /* 9 is */
    CHECK_EQ_INT(seq_since(&live, 9), SEQ_SINCE_NOTHING); /* first is since + 1 */
    CHECK_EQ_INT(seq_since(&live, 15), SEQ_SINCE_NOTHING);
    CHECK_EQ_INT(seq_since(&live, 30), SEQ_SINCE_NOTHING);
}

TEST(held_events_wait_for_their_gap_and_force_lets_all_out)
{
    seq_holdq q = {0};
    seq_pos p = {1, 11};
    out_log l = {0};
    uint64_t held[][2] = {{12, 11}, {14, 13}, {15, 14}};
    for (int i = 0; i < 3; i++) {
        REQUIRE(seq_hold_room(&q) == 0);
        seq_hold_push(&q, NULL, held[i][0], held[i][1]);
    }
    CHECK(!seq_hold_release(&q, &p, false, log_emit, &l)); /* 12 goes, 14 waits for 13 */
    CHECK_EQ_INT(l.n, 1);
    CHECK_EQ_INT(l.seq[0], 12);
    CHECK_EQ_INT(p.last, 12);
    CHECK_EQ_INT(q.n, 2);
    CHECK(!seq_hold_release(&q, &p, false, log_emit, &l)); /* nothing new: still waiting */
    CHECK_EQ_INT(l.n, 1);
    CHECK(seq_replayed(&p, 13)); /* the replay fills the gap */
    CHECK(seq_hold_release(&q, &p, false, log_emit, &l));
    CHECK_EQ_INT(l.n, 3);
    CHECK_EQ_INT(l.seq[1], 14);
    CHECK_EQ_INT(l.seq[2], 15);
    CHECK_EQ_INT(p.last, 15);
    /* force: the position is given up, every held event leaves, gap or not */
    seq_hold_room(&q);
    seq_hold_push(&q, NULL, 30, 29);
    seq_hold_room(&q);
    seq_hold_push(&q, NULL, 31, 30);
    CHECK(!seq_hold_release(&q, &p, false, log_emit, &l));
    CHECK(seq_hold_release(&q, &p, true, log_emit, &l));
    CHECK_EQ_INT(l.n, 5);
    CHECK(l.send[3] && l.send[4]);
    CHECK_EQ_INT(p.last, 31);
    seq_hold_free(&q);
}

TEST(held_duplicates_are_dropped_not_sent)
{
    seq_holdq q = {0};
    seq_pos p = {1, 8};
    out_log l = {0};
    seq_hold_room(&q);
    seq_hold_push(&q, NULL, 7, 6); /* the replay got there first */
    seq_hold_room(&q);
    seq_hold_push(&q, NULL, 9, 8);
    CHECK(seq_hold_release(&q, &p, false, log_emit, &l));
    CHECK_EQ_INT(l.n, 2);
    CHECK(!l.send[0]);
    CHECK(l.send[1]);
    CHECK_EQ_INT(p.last, 9);
    /* forced, a duplicate is still not sent */
    seq_hold_room(&q);
    seq_hold_push(&q, NULL, 5, 4);
    CHECK(seq_hold_release(&q, &p, true, log_emit, &l));
    CHECK(!l.send[2]);
    CHECK_EQ_INT(p.last, 9);
    seq_hold_free(&q);
}

TEST(the_hold_is_bounded)
{
    seq_holdq q = {0};
    for (uint64_t i = 1; i <= SEQ_HELD_MAX; i++) {
        REQUIRE(seq_hold_room(&q) == 0);
        seq_hold_push(&q, NULL, i, i - 1);
    }
    CHECK(!q.overflow);
    CHECK_EQ_INT(seq_hold_room(&q), -1);
    CHECK(q.overflow); /* the replay must fetch the rest */
    CHECK_EQ_INT(q.n, SEQ_HELD_MAX);
    seq_pos p = {0, 0};
    out_log l = {0};
    CHECK(seq_hold_release(&q, &p, true, log_emit, &l));
    seq_hold_free(&q);
}

/* The seam, as session.c drives it: a client subscribes with since while the topic is live.
 * Live events are held while the replay runs; after each replayed event the hold is
 * released as far as it follows on; once the replay reached what is held, the
 * subscription is live. Events are 1..n, one subject (prev = seq - 1); live starts at
 * `live_from` and may repeat events (NATS redelivery across a reconnect); the replay reads
 * the stream from since + 1 and ends when it passes the last live event held (or the
 * stream's end). Checked: every event after since is delivered exactly once, in order. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(uint64_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state % n;
}

static int run_seam(uint64_t n, uint64_t since, uint64_t live_from, int dup_every)
{
    seq_pos p = {0, 0};
    seq_holdq q = {0};
    out_log l = {0};
    bool catching_up = true;
    uint64_t replay_next = since + 1, live_next = live_from;
    /* subscribe with since on a fresh subscription: the seam */
    if (seq_since(&p, since) != SEQ_SINCE_SEAM) return -1;
    p.last = since;
    int steps = 0;
    while ((live_next <= n || (catching_up && replay_next <= n)) && steps++ < 10000) {
        bool live_turn = live_next <= n && (!catching_up || replay_next > n || rnd(2));
        if (live_turn) {
            uint64_t seq = live_next;
            if (!(dup_every && rnd((uint64_t)dup_every) == 0)) live_next++; /* else again */
            if (catching_up) {
                if (seq_hold_room(&q) == 0) seq_hold_push(&q, NULL, seq, seq - 1);
                continue;
            }
            switch (seq_live(&p, seq, seq - 1)) {
            case SEQ_LIVE_SEND:
                seq_advance(&p, seq);
                log_emit(&l, NULL, seq, true);
                break;
            case SEQ_LIVE_DUP: break;
            case SEQ_LIVE_GAP: return -2; /* one subject, in order: never */
            }
        } else {
            uint64_t seq = replay_next++;
            if (seq_replayed(&p, seq)) log_emit(&l, NULL, seq, true);
            bool had = q.n > 0;
            if (seq_hold_release(&q, &p, false, log_emit, &l) && had && !q.overflow)
                catching_up = false; /* reached live */
        }
    }
    if (catching_up) seq_hold_release(&q, &p, true, log_emit, &l);
    seq_hold_free(&q);
    /* exactly since+1..n, each once, in order (duplicates were emitted with send false) */
    uint64_t want = since + 1;
    for (int i = 0; i < l.n; i++) {
        if (!l.send[i]) continue;
        if (l.seq[i] != want) return (int)i + 100;
        want++;
    }
    return want == n + 1 ? 0 : -3;
}

TEST(the_seam_delivers_every_event_once_in_order)
{
    CHECK_EQ_INT(run_seam(20, 5, 12, 0), 0);  /* replay 6..11, live from 12 */
    CHECK_EQ_INT(run_seam(20, 5, 3, 0), 0);   /* live overlaps what the replay reads */
    CHECK_EQ_INT(run_seam(20, 0, 1, 0), 0);   /* from the start */
    CHECK_EQ_INT(run_seam(20, 19, 20, 3), 0); /* one event, redelivered */
    for (int i = 0; i < 2000; i++) {
        uint64_t n = 2 + rnd(200);
        uint64_t since = rnd(n);
        uint64_t live_from = 1 + rnd(n);
        int dup_every = rnd(2) ? 0 : 2 + (int)rnd(3); /* 0: no redelivery */
        int rc = run_seam(n, since, live_from, dup_every);
        if (rc != 0) {
            char w[160];
            snprintf(w, sizeof w, "n=%llu since=%llu live_from=%llu dup_every=%d: %d",
                     (unsigned long long)n, (unsigned long long)since,
                     (unsigned long long)live_from, dup_every, rc);
            test__fail(__FILE__, __LINE__, w);
            return;
        }
    }
}

TEST_MAIN()
