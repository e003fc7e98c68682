/* loop.h - one worker thread's event loop: epoll for file events, a timer wheel for
 * deadlines, a before-sleep hook, and a wake-up that other threads may call.
 *
 * Everything but loop_wake() belongs to the thread that runs the loop. File events are
 * registered with an embedded loop_io (the owner keeps it alive until loop_del); timers are
 * embedded loop_timer nodes (one per deadline kind a connection has), re-armed freely.
 * Prefix loop_. */
#ifndef EDGE_LOOP_H
#define EDGE_LOOP_H

#include <stdint.h>

typedef struct loop loop;
typedef struct loop_io loop_io;
typedef struct loop_timer loop_timer;

/* Called with the epoll events (EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP, EPOLLRDHUP). */
typedef void (*loop_io_fn)(loop_io *io, uint32_t events);
/* Called once when the timer is due; it is no longer armed then (re-arm inside if wanted). */
typedef void (*loop_timer_fn)(loop_timer *t);

struct loop_io {
    int fd;
    loop_io_fn fn;
};

struct loop_timer {
    loop_timer *next, *prev; /* NULL/NULL when not armed */
    uint64_t when;           /* ms, loop clock */
    loop_timer_fn fn;
};

/* Timer granularity: deadlines fire up to one tick late, never early. */
#define LOOP_TICK_MS 50

int loop_create(loop **out);
/* Frees the loop; registered fds are not closed (they belong to their owners). NULL ok. */
void loop_destroy(loop *l);

/* Registers io->fd for events (EPOLLET is added: drain until EAGAIN). 0 or -errno. */
int loop_add(loop *l, loop_io *io, uint32_t events);
int loop_mod(loop *l, loop_io *io, uint32_t events);
/* Unregisters; safe to call before close(fd). */
void loop_del(loop *l, loop_io *io);

/* The loop's clock in ms (CLOCK_MONOTONIC, refreshed once per iteration). */
uint64_t loop_now(const loop *l);
/* Arms t to fire at `when` (loop clock, ms); re-arming moves it. */
void loop_timer_set(loop *l, loop_timer *t, uint64_t when);
/* The next wait for events ends by `when` (loop clock, ms) at the latest, whatever the wheel's
 * tick: for a deadline finer than LOOP_TICK_MS. One-shot: it covers the next wait only. */
void loop_wake_by(loop *l, uint64_t when);
void loop_timer_cancel(loop_timer *t);
static inline int loop_timer_armed(const loop_timer *t) { return t->prev != 0; }

/* Called at the end of every iteration, after file events and timers: where deferred work
 * (flushing write queues, freeing connections) happens. */
void loop_set_before_sleep(loop *l, void (*fn)(void *ud), void *ud);
/* Called on the loop's thread after another thread called loop_wake(). */
void loop_set_wake(loop *l, void (*fn)(void *ud), void *ud);
/* Any thread: makes the loop run its wake callback soon. */
void loop_wake(loop *l);

/* One iteration: waits at most one tick for events, dispatches them, runs due timers and the
 * before-sleep hook. Returns 0, or -errno when epoll_wait failed other than by EINTR. */
int loop_run_once(loop *l);

#endif
