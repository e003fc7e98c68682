/* sendpath - what one small frame costs to send on a loopback TCP socket, sent the way the
 * edge sends it (one writev per connection per pass) against one io_uring submission that
 * carries the whole pass (IORING_OP_SENDMSG with MSG_DONTWAIT, so a full socket answers
 * -EAGAIN as writev would instead of being retried by the kernel). The measurement behind
 * the io_uring note in docs/BENCHMARKS.md (Findings).
 *
 *   sendpath [CONNS] [PASSES] [ROUNDS]     default 500 connections, 400 passes, 3 rounds
 *   sendpath CONNS PASSES ROUNDS FRAMES    FRAMES (2..64) frames per connection and pass, in
 *                                          one write: writev of FRAMES iovecs against the
 *                                          frames copied into one buffer and sent with send(2)
 *                                          (the edge's conn_flush since it gathers), per frame
 *
 * CONNS loopback connections; a reader thread drains their client ends (epoll). Each pass
 * sends one 120-byte message on every connection, then sleeps 2 ms (so each send finds an
 * idle socket, as at a low event rate). Printed per variant and round, per send: the sending
 * thread's CPU (user+sys, RUSAGE_THREAD), the whole process's (sender and reader), and the
 * whole machine's busy time from /proc/stat (everything: the kernel's softirq work charged
 * to nobody's process shows only there). Rounds alternate the variants. Bounded: at most
 * 5,000 connections (under the open-file limit), 10,000 passes, 20 rounds. */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_CONNS 5000
#define MSG 120

static int nconns = 500, npasses = 400, nrounds = 3, nframes = 1;
static int srv[MAX_CONNS], cli[MAX_CONNS];
static atomic_int stop_reader;

static double rusage_s(int who)
{
    struct rusage r;
    getrusage(who, &r);
    return (double)(r.ru_utime.tv_sec + r.ru_stime.tv_sec) +
           (double)(r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
}

/* Busy time of the whole machine in seconds (user, nice, system, irq, softirq, steal). */
static double machine_busy_s(void)
{
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return 0;
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n != 8) return 0;
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
}

static void *reader_main(void *arg)
{
    (void)arg;
    int ep = epoll_create1(0);
    if (ep < 0) return NULL;
    for (int i = 0; i < nconns; i++) {
        struct epoll_event e = {.events = EPOLLIN, .data.fd = cli[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, cli[i], &e);
    }
    static char buf[65536];
    struct epoll_event ev[256];
    while (!atomic_load(&stop_reader)) {
        int n = epoll_wait(ep, ev, 256, 100);
        for (int i = 0; i < n; i++)
            while (read(ev[i].data.fd, buf, sizeof buf) > 0) {
            }
    }
    close(ep);
    return NULL;
}

static int open_pairs(void)
{
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(l, (struct sockaddr *)&a, &al) != 0 || listen(l, 4096) != 0)
        return -1;
    for (int i = 0; i < nconns; i++) {
        cli[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (cli[i] < 0 || connect(cli[i], (struct sockaddr *)&a, sizeof a) != 0) return -1;
        srv[i] = accept(l, NULL, NULL);
        if (srv[i] < 0) return -1;
        setsockopt(srv[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(srv[i], F_SETFL, O_NONBLOCK);
        fcntl(cli[i], F_SETFL, O_NONBLOCK);
    }
    close(l);
    return 0;
}

/* One pass: a message on every connection. Returns the sends that went out whole. */
static long pass_writev(const char *msg)
{
    long sent = 0;
    for (int i = 0; i < nconns; i++) {
        struct iovec iov = {.iov_base = (void *)msg, .iov_len = MSG};
        if (writev(srv[i], &iov, 1) == MSG) sent++;
    }
    return sent;
}

/* One pass of nframes frames per connection in one write: one writev of nframes iovecs, or
 * (gather) the frames copied into one buffer first and sent with send(2). Returns the frames
 * of the writes that went out whole. */
static long pass_frames(const char *msg, bool gather)
{
    static char buf[64 * MSG];
    long sent = 0;
    for (int i = 0; i < nconns; i++) {
        struct iovec iov[64];
        for (int k = 0; k < nframes; k++) iov[k] = (struct iovec){(void *)msg, MSG};
        ssize_t n;
        if (gather) {
            for (int k = 0; k < nframes; k++) memcpy(buf + k * MSG, iov[k].iov_base, MSG);
            n = send(srv[i], buf, (size_t)nframes * MSG, MSG_NOSIGNAL);
        } else {
            n = writev(srv[i], iov, nframes);
        }
        if (n == (ssize_t)nframes * MSG) sent += nframes;
    }
    return sent;
}

static long pass_uring(struct io_uring *ring, const char *msg, struct iovec *iov, struct msghdr *mh)
{
    long sent = 0;
    int i = 0;
    while (i < nconns) {
        int queued = 0;
        for (; i < nconns; i++, queued++) {
            struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
            if (!sqe) break; /* the ring is full: submit what it holds */
            iov[i] = (struct iovec){.iov_base = (void *)msg, .iov_len = MSG};
            mh[i] = (struct msghdr){.msg_iov = &iov[i], .msg_iovlen = 1};
            io_uring_prep_sendmsg(sqe, srv[i], &mh[i], MSG_DONTWAIT | MSG_NOSIGNAL);
            io_uring_sqe_set_data64(sqe, (uint64_t)i);
        }
        if (io_uring_submit_and_wait(ring, (unsigned)queued) < 0) return -1;
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(ring, head, cqe) {
            if (cqe->res == MSG) sent++;
            seen++;
        }
        io_uring_cq_advance(ring, seen);
    }
    return sent;
}

int main(int argc, char **argv)
{
    if (argc > 1) nconns = atoi(argv[1]);
    if (argc > 2) npasses = atoi(argv[2]);
    if (argc > 3) nrounds = atoi(argv[3]);
    if (argc > 4) nframes = atoi(argv[4]);
    if (nconns < 1 || nconns > MAX_CONNS || npasses < 1 || npasses > 10000 || nrounds < 1 ||
        nrounds > 20 || nframes < 1 || nframes > 64) {
        fprintf(stderr,
                "usage: sendpath [CONNS 1..%d] [PASSES 1..10000] [ROUNDS 1..20] [FRAMES 1..64]\n",
                MAX_CONNS);
        return 2;
    }
    if (open_pairs() != 0) {
        fprintf(stderr, "sendpath: loopback connections failed: %s\n", strerror(errno));
        return 1;
    }
    struct io_uring ring;
    int urc = io_uring_queue_init(256, &ring, 0);
    if (urc < 0) {
        fprintf(stderr, "sendpath: io_uring unavailable here (%s)\n", strerror(-urc));
        return 1;
    }
    struct iovec *iov = calloc((size_t)nconns, sizeof *iov);
    struct msghdr *mh = calloc((size_t)nconns, sizeof *mh);
    pthread_t rt;
    if (!iov || !mh || pthread_create(&rt, NULL, reader_main, NULL) != 0) return 1;
    char msg[MSG];
    memset(msg, 'x', sizeof msg);
    usleep(100000);
    if (nframes > 1)
        printf(
            "%d connections, %d passes of %d %d-byte frames in one write each, per frame (us):\n",
            nconns, npasses, nframes, MSG);
    else
        printf("%d connections, %d passes of one %d-byte send each, per send (us):\n", nconns,
               npasses, MSG);
    for (int r = 0; r < nrounds * 2; r++) {
        int uring = r % 2;
        double t0 = rusage_s(RUSAGE_THREAD), p0 = rusage_s(RUSAGE_SELF), m0 = machine_busy_s();
        long sent = 0;
        for (int p = 0; p < npasses; p++) {
            long k = nframes > 1 ? pass_frames(msg, uring)
                     : uring     ? pass_uring(&ring, msg, iov, mh)
                                 : pass_writev(msg);
            if (k < 0) return 1;
            sent += k;
            usleep(2000);
        }
        double t1 = rusage_s(RUSAGE_THREAD), p1 = rusage_s(RUSAGE_SELF), m1 = machine_busy_s();
        if (sent == 0) return 1;
        printf("round %d %-7s sender %.2f  process %.2f  machine %.2f  (%ld %s)\n", r / 2 + 1,
               nframes > 1 ? (uring ? "gather" : "writev")
               : uring     ? "io_uring"
                           : "writev",
               (t1 - t0) * 1e6 / (double)sent, (p1 - p0) * 1e6 / (double)sent,
               (m1 - m0) * 1e6 / (double)sent, sent, nframes > 1 ? "frames" : "sends");
    }
    atomic_store(&stop_reader, 1);
    pthread_join(rt, NULL);
    io_uring_queue_exit(&ring);
    free(iov);
    free(mh);
    return 0;
}
