/* loop.c - epoll + timer wheel per worker thread; see loop.h. */
#include "loop.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define WHEEL_SLOTS 2048 /* x 50 ms = 102 s per turn; later deadlines wait in their slot */
#define MAX_EVENTS 256

struct loop {
    int ep;
    uint64_t now;
    uint64_t tick;                 /* last tick processed */
    loop_timer wheel[WHEEL_SLOTS]; /* list heads (sentinels) */
    loop_io wake_io;
    void (*before_sleep)(void *);
    void *before_sleep_ud;
    void (*wake)(void *);
    void *wake_ud;
    uint64_t wake_by; /* loop_wake_by: 0, or when the next wait must end */
};

static uint64_t clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void loop_on_wake(loop_io *io, uint32_t events)
{
    (void)events;
    loop *l = (loop *)((char *)io - offsetof(loop, wake_io));
    uint64_t v;
    while (read(io->fd, &v, sizeof v) > 0) {
    }
    if (l->wake) l->wake(l->wake_ud);
}

int loop_create(loop **out)
{
    loop *l = calloc(1, sizeof *l);
    if (!l) return -ENOMEM;
    l->ep = epoll_create1(EPOLL_CLOEXEC);
    l->wake_io.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    l->wake_io.fn = loop_on_wake;
    if (l->ep < 0 || l->wake_io.fd < 0) {
        int e = errno;
        if (l->ep >= 0) close(l->ep);
        if (l->wake_io.fd >= 0) close(l->wake_io.fd);
        free(l);
        return -e;
    }
    for (int i = 0; i < WHEEL_SLOTS; i++) l->wheel[i].next = l->wheel[i].prev = &l->wheel[i];
    l->now = clock_ms();
    l->tick = l->now / LOOP_TICK_MS;
    loop_add(l, &l->wake_io, EPOLLIN);
    *out = l;
    return 0;
}

void loop_destroy(loop *l)
{
    if (!l) return;
    close(l->wake_io.fd);
    close(l->ep);
    free(l);
}

int loop_add(loop *l, loop_io *io, uint32_t events)
{
    struct epoll_event ev = {.events = events | EPOLLET, .data.ptr = io};
    return epoll_ctl(l->ep, EPOLL_CTL_ADD, io->fd, &ev) == 0 ? 0 : -errno;
}

int loop_mod(loop *l, loop_io *io, uint32_t events)
{
    struct epoll_event ev = {.events = events | EPOLLET, .data.ptr = io};
    return epoll_ctl(l->ep, EPOLL_CTL_MOD, io->fd, &ev) == 0 ? 0 : -errno;
}

void loop_del(loop *l, loop_io *io) { epoll_ctl(l->ep, EPOLL_CTL_DEL, io->fd, NULL); }

uint64_t loop_now(const loop *l) { return l->now; }

void loop_timer_cancel(loop_timer *t)
{
    if (!t->prev) return;
    t->prev->next = t->next;
    t->next->prev = t->prev;
    t->next = t->prev = NULL;
}

void loop_timer_set(loop *l, loop_timer *t, uint64_t when)
{
    loop_timer_cancel(t);
    t->when = when;
    uint64_t tick = (when + LOOP_TICK_MS - 1) / LOOP_TICK_MS;
    if (tick <= l->tick) tick = l->tick + 1; /* never in a slot already passed */
    loop_timer *head = &l->wheel[tick % WHEEL_SLOTS];
    t->next = head;
    t->prev = head->prev;
    head->prev->next = t;
    head->prev = t;
}

void loop_set_before_sleep(loop *l, void (*fn)(void *), void *ud)
{
    l->before_sleep = fn;
    l->before_sleep_ud = ud;
}

void loop_set_wake(loop *l, void (*fn)(void *), void *ud)
{
    l->wake = fn;
    l->wake_ud = ud;
}

void loop_wake(loop *l)
{
    uint64_t one = 1;
    ssize_t w = write(l->wake_io.fd, &one, sizeof one);
    (void)w;
}

/* Fires the due timers of every tick passed since the last call. A slot's list is moved
 * aside first so a callback may re-arm its timer (even into this slot) safely. */
static void loop_run_timers(loop *l)
{
    uint64_t now_tick = l->now / LOOP_TICK_MS;
    if (now_tick - l->tick > WHEEL_SLOTS) l->tick = now_tick - WHEEL_SLOTS; /* long stall */
    while (l->tick < now_tick) {
        l->tick++; /* first, so a timer re-armed below lands in a slot still ahead */
        loop_timer *head = &l->wheel[l->tick % WHEEL_SLOTS];
        loop_timer pending;
        if (head->next == head) continue;
        pending.next = head->next;
        pending.prev = head->prev;
        pending.next->prev = &pending;
        pending.prev->next = &pending;
        head->next = head->prev = head;
        while (pending.next != &pending) {
            loop_timer *t = pending.next;
            loop_timer_cancel(t);
            if (t->when <= l->now)
                t->fn(t);
            else /* due on a later turn of the wheel */
                loop_timer_set(l, t, t->when);
        }
    }
}

void loop_wake_by(loop *l, uint64_t when)
{
    if (!l->wake_by || when < l->wake_by) l->wake_by = when;
}

int loop_run_once(loop *l)
{
    struct epoll_event evs[MAX_EVENTS];
    int timeout = LOOP_TICK_MS;
    if (l->wake_by) {
        uint64_t now = clock_ms();
        timeout = l->wake_by <= now                 ? 0
                  : l->wake_by - now < LOOP_TICK_MS ? (int)(l->wake_by - now)
                                                    : LOOP_TICK_MS;
        l->wake_by = 0;
    }
    int n = epoll_wait(l->ep, evs, MAX_EVENTS, timeout);
    if (n < 0 && errno != EINTR) return -errno;
    l->now = clock_ms();
    for (int i = 0; i < n; i++) {
        loop_io *io = evs[i].data.ptr;
        io->fn(io, evs[i].events);
    }
    loop_run_timers(l);
    if (l->before_sleep) l->before_sleep(l->before_sleep_ud);
    return 0;
}
