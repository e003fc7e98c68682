/* bench_parent.c - the parent process of `sidecast bench connect|idle|fanout`: forks the
 * children, drives them through their phases over pipes ('G' go, 'S' stop), reads the
 * servers' CPU and RSS from /proc at the edges of the measured window, runs the publisher
 * (fanout), prints a progress line on stderr about once a second, then gathers the
 * children's final counts and histograms into the result line (or JSON object) on stdout. */
#include "bench_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "procstat.h" /* proc_cpu_s: the capacity tools read /proc the same way */

static const char *const target_names[] = {"sidecast", "nats", "ws"};
static const char *const mode_names[] = {"connect", "idle", "fanout"};

/* VmRSS of pid in KiB, or -1 */
static long proc_rss_kib(long pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long v = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) v = strtol(line + 6, NULL, 10);
    fclose(f);
    return v;
}

static double hist_upper_ms(size_t b)
{
    if (b < HIST_FINE) return (double)(b + 1) * 0.01;
    if (b < HIST_LEN - 1) return 100.0 + (double)(b - HIST_FINE + 1);
    return 10000.0;
}

/* The latency (ms) at quantile q (bucket upper bounds). */
static double hist_quantile(const uint64_t *h, uint64_t total, double q)
{
    if (total == 0) return 0;
    uint64_t want = (uint64_t)(q * (double)total), seen = 0;
    if (want >= total) want = total - 1;
    for (size_t b = 0; b < HIST_LEN; b++) {
        seen += h[b];
        if (seen > want) return hist_upper_ms(b);
    }
    return 10000.0;
}

static int read_full(int fd, void *p, size_t n)
{
    char *s = p;
    while (n) {
        ssize_t r = read(fd, s, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        s += r;
        n -= (size_t)r;
    }
    return 0;
}

/* A child process and what it reported. */
typedef struct child {
    pid_t pid;
    int cmd_fd, out_fd;
    bool ready, final, dead;
    crec last, fin;
} child;

/* A --pid server's CPU and RSS: before the first connection, at the window's start and end. */
typedef struct pidstat {
    double cpu0, cpu1;
    long rss_before, rss0, rss1;
} pidstat;

/* One run of the parent. */
typedef struct parent {
    const bench_opts *o;
    child ch[MAX_PROCS];
    int np;
    uint64_t *hist, *tmp; /* HIST_ALL: the children's final histograms summed; room for one */
    pidstat ps[MAX_PIDS];
    pubstate pub;
    pthread_t pth;
    bool pub_started;
    int64_t t0, next, last_t; /* progress line: the start, when the next is due, the last one */
    uint64_t last_ev;
} parent;

/* The result, from the children's final records. */
typedef struct result {
    crec a; /* the records summed (min, max, first and last where those are meant) */
    int finals;
    double client_cpu;
    uint64_t expect, loss;
    double window, span, setup_s, dps, hps, srv_cpu, p50, p99, p999;
    long rss_delta;
    bool complete;
} result;

/* Deliveries if every connection got its topic's messages (connection g has topic g % K). */
static uint64_t expected(const pubstate *p)
{
    const bench_opts *o = p->o;
    uint64_t e = 0;
    for (long k = 0; k < o->ntopics; k++) {
        long subs = o->conns / o->ntopics + (k < o->conns % o->ntopics);
        e += (uint64_t)p->per_topic[k] * (uint64_t)subs;
    }
    return e;
}

static void send_all(parent *pa, char cmd)
{
    for (int i = 0; i < pa->np; i++)
        if (!pa->ch[i].dead && write(pa->ch[i].cmd_fd, &cmd, 1) != 1) pa->ch[i].dead = true;
}

/* Reads what the children wrote within timeout_ms; final histograms are added to pa->hist. */
static void pump(parent *pa, int timeout_ms)
{
    child *ch = pa->ch;
    struct pollfd pf[MAX_PROCS];
    for (int i = 0; i < pa->np; i++)
        pf[i] = (struct pollfd){.fd = ch[i].dead ? -1 : ch[i].out_fd, .events = POLLIN};
    if (poll(pf, (nfds_t)pa->np, timeout_ms) <= 0) return;
    for (int i = 0; i < pa->np; i++) {
        if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        crec r;
        if (read_full(ch[i].out_fd, &r, sizeof r) != 0) {
            ch[i].dead = true;
            continue;
        }
        if (r.type == R_FINAL) {
            if (read_full(ch[i].out_fd, pa->tmp, HIST_ALL * sizeof *pa->tmp) != 0) {
                ch[i].dead = true;
                continue;
            }
            for (size_t b = 0; b < HIST_ALL; b++) pa->hist[b] += pa->tmp[b];
            ch[i].fin = r;
            ch[i].final = true;
        } else if (r.type == R_READY) {
            ch[i].ready = true;
            ch[i].last = r;
            ch[i].fin.t_last_ready = r.t_last_ready;
        } else {
            ch[i].last = r;
        }
    }
}

static void totals(const parent *pa, long *settled, long *ready, long *failed, uint64_t *events)
{
    *settled = *ready = *failed = 0;
    *events = 0;
    for (int i = 0; i < pa->np; i++) {
        *settled += pa->ch[i].last.settled;
        *ready += pa->ch[i].last.ready;
        *failed += pa->ch[i].last.failed;
        *events += pa->ch[i].last.events;
    }
}

/* The progress line on stderr, at most once a second (none with --quiet). */
static void progress(parent *pa, const char *phase)
{
    const bench_opts *o = pa->o;
    int64_t t = now_ns();
    if (o->quiet || t < pa->next) return;
    long settled, ready, failed;
    uint64_t ev;
    totals(pa, &settled, &ready, &failed, &ev);
    double dt = ns_s(t - pa->last_t);
    fprintf(stderr,
            "bench: %s %s %5.1fs %-9s up %ld/%ld failed %ld deliveries %" PRIu64 " (%.0f/s)\n",
            target_names[o->target], mode_names[o->mode], ns_s(t - pa->t0), phase, ready, o->conns,
            failed, ev, dt > 0 ? (double)(ev - pa->last_ev) / dt : 0);
    pa->last_ev = ev;
    pa->last_t = t;
    pa->next = t + 1000000000;
}

/* Reads the --pid servers' CPU and RSS: which 0 before the first connection, 1 at the start
 * of the window, 2 at its end. */
static void read_pids(parent *pa, int which)
{
    const bench_opts *o = pa->o;
    for (int i = 0; i < o->npids; i++) {
        double c = proc_cpu_s(o->pids[i]);
        long r = proc_rss_kib(o->pids[i]);
        if (which == 0) pa->ps[i].rss_before = r;
        if (which == 1) pa->ps[i].cpu0 = c, pa->ps[i].rss0 = r;
        if (which == 2) pa->ps[i].cpu1 = c, pa->ps[i].rss1 = r;
    }
}

/* One line for an idle step: the server's RSS growth over the connections ready so far. */
static void print_step(const parent *pa, int st, long ready, long failed, double setup_s)
{
    const bench_opts *o = pa->o;
    const pidstat *ps = pa->ps;
    long conns = o->steps[st], prev = st ? o->steps[st - 1] : 0;
    long rss_delta = o->npids ? ps[0].rss1 - ps[0].rss_before : 0;
    double hps = setup_s > 0 ? (double)(conns - prev) / setup_s : 0;
    if (!o->json) {
        printf("%s idle step %d: conns=%ld ready=%ld failed=%ld setup_s=%.3f handshakes_per_s=%.0f"
               " rss_delta_kib=%ld rss_per_conn_b=%.0f\n",
               target_names[o->target], st, conns, ready, failed, setup_s, hps, rss_delta,
               ready ? (double)rss_delta * 1024 / (double)ready : 0);
        fflush(stdout);
        return;
    }
    printf("{\"mode\":\"idle\",\"target\":\"%s\",\"step\":%d,\"conns\":%ld,\"procs\":%ld,"
           "\"threads\":%ld,\"topics\":%ld,\"tokens\":%ld,\"ready\":%ld,\"failed\":%ld,"
           "\"setup_s\":%.3f,\"handshakes_per_s\":%.1f,\"servers\":[",
           target_names[o->target], st, conns, o->procs, o->threads, o->ntopics, o->ntokens, ready,
           failed, setup_s, hps);
    for (int i = 0; i < o->npids; i++)
        printf("%s{\"pid\":%ld,\"rss_before_kib\":%ld,\"rss_end_kib\":%ld}", i ? "," : "",
               o->pids[i], ps[i].rss_before, ps[i].rss1);
    printf("],\"rss_delta_kib\":%ld,\"rss_per_conn_b\":%.0f,\"complete\":%s}\n", rss_delta,
           ready ? (double)rss_delta * 1024 / (double)ready : 0,
           ready == conns && failed == 0 ? "true" : "false");
    fflush(stdout);
}

/* Forks the children, each with its share of the connections: 0, or -1 (those forked so far
 * are in pa->ch, for reap). */
static int spawn(parent *pa)
{
    const bench_opts *o = pa->o;
    long per = o->conns / pa->np, extra = o->conns % pa->np, first = 0;
    fflush(stdout);
    fflush(stderr);
    for (int i = 0; i < pa->np; i++) {
        int cmd[2], out[2];
        if (pipe2(cmd, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) return -1;
        long n = per + (i < extra);
        pid_t pid = fork();
        if (pid < 0) return -1;
        if (pid == 0) {
            for (int j = 0; j < i; j++) close(pa->ch[j].cmd_fd), close(pa->ch[j].out_fd);
            close(cmd[1]);
            close(out[0]);
            _exit(bench_child_main(o, i, first, n, cmd[0], out[1]));
        }
        close(cmd[0]);
        close(out[1]);
        pa->ch[i] = (child){.pid = pid, .cmd_fd = cmd[1], .out_fd = out[0]};
        first += n;
    }
    return 0;
}

/* Closes the pipes (a child still running stops at their end) and waits for each child up
 * to 5 s, then kills it. */
static void reap(parent *pa)
{
    for (int i = 0; i < pa->np; i++) {
        child *c = &pa->ch[i];
        if (!c->pid) continue;
        close(c->cmd_fd);
        close(c->out_fd);
        int st;
        pid_t w = 0;
        for (int k = 0; k < 100 && (w = waitpid(c->pid, &st, WNOHANG)) == 0; k++) sleep_ms(50);
        if (w == 0) {
            kill(c->pid, SIGKILL);
            waitpid(c->pid, &st, 0);
        }
    }
}

/* Until every child is ready (or dead) or end passes, with the progress line. */
static void wait_ready(parent *pa, int64_t end)
{
    for (;;) {
        pump(pa, 100);
        progress(pa, "set-up");
        int nready = 0, ndead = 0;
        for (int i = 0; i < pa->np; i++) nready += pa->ch[i].ready, ndead += pa->ch[i].dead;
        if (nready + ndead >= pa->np || now_ns() > end) break;
    }
}

/* idle: holds the connections --seconds; with steps, a line per step and then the next step's
 * set-up. t_ready: when the first set-up ended. Returns when the last hold ended. */
static int64_t run_idle(parent *pa, int64_t t_ready)
{
    const bench_opts *o = pa->o;
    long settled, ready, failed;
    uint64_t ev;
    int64_t t_step = pa->t0, t_end = 0;
    for (int st = 0;; st++) {
        int64_t end = now_ns() + (int64_t)(o->seconds * 1e9);
        while (now_ns() < end) {
            pump(pa, 100);
            progress(pa, "holding");
        }
        read_pids(pa, 2);
        t_end = now_ns();
        if (o->nsteps < 2) break;
        totals(pa, &settled, &ready, &failed, &ev);
        print_step(pa, st, ready, failed, ns_s(t_ready - t_step));
        if (st + 1 >= o->nsteps) break;
        for (int i = 0; i < pa->np; i++) pa->ch[i].ready = false;
        t_step = now_ns();
        send_all(pa, 'G');
        wait_ready(pa, t_step + (int64_t)(o->setup_timeout * 1e9));
        t_ready = now_ns();
    }
    return t_end;
}

/* fanout: the publisher sends --rate events/s for --seconds; then waits until the ready
 * connections have every event or --drain s have passed. ready: connections ready after the
 * set-up (none: nothing is published). */
static void run_fanout(parent *pa, long ready)
{
    const bench_opts *o = pa->o;
    long settled, failed;
    uint64_t ev;
    pa->pub.total = (long)((double)o->rate * o->seconds);
    if (ready > 0 && pthread_create(&pa->pth, NULL, bench_pub_run, &pa->pub) == 0)
        pa->pub_started = true;
    int64_t drain_end = 0, hard = now_ns() + (int64_t)((o->seconds * 2 + 40 + o->drain) * 1e9);
    while (pa->pub_started && now_ns() < hard) {
        pump(pa, 100);
        progress(pa, "fan-out");
        if (!atomic_load(&pa->pub.done)) continue;
        if (!drain_end) drain_end = now_ns() + (int64_t)(o->drain * 1e9);
        totals(pa, &settled, &ready, &failed, &ev);
        if (ev >= expected(&pa->pub) * (uint64_t)ready / (uint64_t)o->conns || now_ns() > drain_end)
            break;
    }
    read_pids(pa, 2);
}

/* Stops the children and reads their final records (at most 15 s); joins the publisher. */
static void collect(parent *pa)
{
    send_all(pa, 'S');
    int64_t collect_end = now_ns() + (int64_t)((CLOSE_TIMEOUT_S + 10) * 1e9);
    for (;;) {
        int nfinal = 0, ndead = 0;
        for (int i = 0; i < pa->np; i++)
            nfinal += pa->ch[i].final, ndead += pa->ch[i].dead && !pa->ch[i].final;
        if (nfinal + ndead >= pa->np || now_ns() > collect_end) break;
        pump(pa, 100);
    }
    if (pa->pub_started) pthread_join(pa->pth, NULL);
    pa->pub_started = false;
}

/* The result of the window [t_window0, t_window1] from the children's final records. */
static void aggregate(const parent *pa, int64_t t_window0, int64_t t_window1, result *r)
{
    const bench_opts *o = pa->o;
    crec *a = &r->a;
    memset(r, 0, sizeof *r);
    a->min_ev = UINT64_MAX;
    for (int i = 0; i < pa->np; i++) {
        if (!pa->ch[i].final) continue;
        r->finals++;
        const crec *f = &pa->ch[i].fin;
        a->settled += f->settled;
        a->ready += f->ready;
        a->failed += f->failed;
        a->lost += f->lost;
        a->unclean += f->unclean;
        a->complete += f->complete;
        a->events += f->events;
        a->gaps += f->gaps;
        a->disorder += f->disorder;
        a->other += f->other;
        a->error_frames += f->error_frames;
        a->bad_frames += f->bad_frames;
        a->send_errors += f->send_errors;
        a->pings += f->pings;
        a->deflate_conns += f->deflate_conns;
        a->compressed += f->compressed;
        a->tls_full += f->tls_full;
        a->tls_resumed += f->tls_resumed;
        a->lat_n += f->lat_n;
        a->lat_kn += f->lat_kn;
        if (f->ready && f->min_ev < a->min_ev) a->min_ev = f->min_ev;
        if (f->max_ev > a->max_ev) a->max_ev = f->max_ev;
        if (f->lat_max > a->lat_max) a->lat_max = f->lat_max;
        if (f->t_first_open && (!a->t_first_open || f->t_first_open < a->t_first_open))
            a->t_first_open = f->t_first_open;
        if (f->t_last_ready > a->t_last_ready) a->t_last_ready = f->t_last_ready;
        if (f->t_first_event && (!a->t_first_event || f->t_first_event < a->t_first_event))
            a->t_first_event = f->t_first_event;
        if (f->t_last_event > a->t_last_event) a->t_last_event = f->t_last_event;
        r->client_cpu += f->cpu_s;
    }
    if (a->min_ev == UINT64_MAX) a->min_ev = 0;
    /* what the ready connections should have got (a failed one is counted in "failed") */
    r->expect = o->mode == M_FANOUT ? expected(&pa->pub) * (uint64_t)a->ready / (uint64_t)o->conns
                                    : 0;
    uint64_t unique = a->events - (a->disorder < a->events ? a->disorder : a->events);
    r->loss = r->expect > unique ? r->expect - unique : 0;
    r->window = ns_s(t_window1 - t_window0);
    r->span = a->t_last_event > a->t_first_event ? ns_s(a->t_last_event - a->t_first_event) : 0;
    r->setup_s = a->t_last_ready > a->t_first_open ? ns_s(a->t_last_ready - a->t_first_open) : 0;
    r->dps = r->span > 0 ? (double)a->events / r->span : 0;
    r->hps = r->setup_s > 0 ? (double)a->ready / r->setup_s : 0;
    r->srv_cpu = o->npids ? pa->ps[0].cpu1 - pa->ps[0].cpu0 : 0;
    r->rss_delta = o->npids ? pa->ps[0].rss1 - pa->ps[0].rss_before : 0;
    r->complete = r->finals == pa->np && a->failed == 0 && a->ready == o->conns && a->lost == 0 &&
                  (o->mode != M_FANOUT || (r->loss == 0 && a->gaps == 0 && a->disorder == 0));
    r->p50 = hist_quantile(pa->hist, a->lat_n, 0.50);
    r->p99 = hist_quantile(pa->hist, a->lat_n, 0.99);
    r->p999 = hist_quantile(pa->hist, a->lat_n, 0.999);
}

/* The result as one JSON object on stdout. */
static void print_json(const parent *pa, const result *r)
{
    const bench_opts *o = pa->o;
    const crec *a = &r->a;
    const pubstate *pub = &pa->pub;
    printf("{\"mode\":\"%s\",\"target\":\"%s\",\"conns\":%ld,\"procs\":%ld,\"threads\":%ld,"
           "\"topics\":%ld,\"tokens\":%ld,\"ready\":%d,\"failed\":%d,\"lost_conns\":%d,"
           "\"unclean_closes\":%d,\"window_s\":%.3f,\"setup_s\":%.3f,"
           "\"handshakes_per_s\":%.1f",
           mode_names[o->mode], target_names[o->target], o->conns, o->procs, o->threads, o->ntopics,
           o->ntokens, a->ready, a->failed, a->lost, a->unclean, r->window, r->setup_s, r->hps);
    if (o->mode == M_FANOUT)
        printf(",\"rate\":%ld,\"size\":%ld,\"seconds\":%.3f,\"published\":%ld,"
               "\"publish_errors\":%ld,\"publish_s\":%.3f,\"synced\":%s,\"synced_s\":%.3f,"
               "\"expected\":%" PRIu64 ",\"deliveries\":%" PRIu64 ",\"loss\":%" PRIu64
               ",\"gaps\":%" PRIu64 ",\"disorder\":%" PRIu64 ",\"min_per_conn\":%" PRIu64
               ",\"max_per_conn\":%" PRIu64 ",\"deliveries_per_s\":%.1f,\"span_s\":%.3f",
               o->rate, o->size, o->seconds, atomic_load(&pub->sent), atomic_load(&pub->errors),
               pub->took_s, pub->synced ? "true" : "false", pub->synced_s, r->expect, a->events,
               r->loss, a->gaps, a->disorder, a->min_ev, a->max_ev, r->dps, r->span);
    printf(",\"latency\":\"%s\",\"lat_samples\":%" PRIu64 ",\"lat_p50_ms\":%.3f,"
           "\"lat_p99_ms\":%.3f,\"lat_p999_ms\":%.3f,\"lat_max_ms\":%.3f",
           o->mode == M_CONNECT ? "handshake" : "delivery", a->lat_n, r->p50, r->p99, r->p999,
           (double)a->lat_max / 1e6);
    if (o->mode == M_FANOUT)
        printf(",\"lat_sock_samples\":%" PRIu64 ",\"lat_sock_p50_ms\":%.3f,"
               "\"lat_sock_p99_ms\":%.3f,\"lat_sock_p999_ms\":%.3f",
               a->lat_kn, hist_quantile(pa->hist + HIST_LEN, a->lat_kn, 0.50),
               hist_quantile(pa->hist + HIST_LEN, a->lat_kn, 0.99),
               hist_quantile(pa->hist + HIST_LEN, a->lat_kn, 0.999));
    printf(",\"other\":%" PRIu64 ",\"error_frames\":%" PRIu64 ",\"bad_frames\":%" PRIu64
           ",\"send_errors\":%" PRIu64 ",\"pings\":%" PRIu64 ",\"client_cpu_s\":%.3f",
           a->other, a->error_frames, a->bad_frames, a->send_errors, a->pings, r->client_cpu);
    printf(",\"deflate\":%s,\"deflate_conns\":%" PRIu64 ",\"compressed_frames\":%" PRIu64,
           o->deflate ? "true" : "false", a->deflate_conns, a->compressed);
    printf(",\"tls\":%s,\"resume\":%s,\"tls_full\":%" PRIu64 ",\"tls_resumed\":%" PRIu64,
           o->tls ? "true" : "false", o->resume ? "true" : "false", a->tls_full, a->tls_resumed);
    printf(",\"servers\":[");
    for (int i = 0; i < o->npids; i++)
        printf("%s{\"pid\":%ld,\"cpu_s\":%.3f,\"rss_before_kib\":%ld,\"rss_start_kib\":%ld,"
               "\"rss_end_kib\":%ld}",
               i ? "," : "", o->pids[i], pa->ps[i].cpu1 - pa->ps[i].cpu0, pa->ps[i].rss_before,
               pa->ps[i].rss0, pa->ps[i].rss1);
    printf("]");
    if (o->npids) {
        printf(",\"server_cpu_s\":%.3f,\"server_cpu_pct\":%.1f,\"rss_delta_kib\":%ld,"
               "\"rss_per_conn_b\":%.0f",
               r->srv_cpu, r->window > 0 ? 100 * r->srv_cpu / r->window : 0, r->rss_delta,
               a->ready ? (double)r->rss_delta * 1024 / a->ready : 0);
        if (o->mode == M_FANOUT)
            printf(",\"cpu_us_per_delivery\":%.4f",
                   a->events ? r->srv_cpu * 1e6 / (double)a->events : 0);
        if (o->mode == M_CONNECT)
            printf(",\"handshakes_per_cpu_s\":%.1f", r->srv_cpu > 0 ? a->ready / r->srv_cpu : 0);
    }
    printf(",\"complete\":%s}\n", r->complete ? "true" : "false");
}

/* The result as one key=value line on stdout. */
static void print_text(const parent *pa, const result *r)
{
    const bench_opts *o = pa->o;
    const crec *a = &r->a;
    const pubstate *pub = &pa->pub;
    printf("%s %s: conns=%ld ready=%d failed=%d lost=%d setup_s=%.3f handshakes_per_s=%.0f",
           target_names[o->target], mode_names[o->mode], o->conns, a->ready, a->failed, a->lost,
           r->setup_s, r->hps);
    if (o->mode == M_FANOUT)
        printf(" published=%ld expected=%" PRIu64 " deliveries=%" PRIu64 " loss=%" PRIu64
               " gaps=%" PRIu64 " disorder=%" PRIu64 " deliveries_per_s=%.0f",
               atomic_load(&pub->sent), r->expect, a->events, r->loss, a->gaps, a->disorder,
               r->dps);
    printf(" %s_p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f",
           o->mode == M_CONNECT ? "handshake" : "lat", r->p50, r->p99, r->p999,
           (double)a->lat_max / 1e6);
    if (o->mode == M_FANOUT)
        printf(" sock_p50_ms=%.3f sock_p99_ms=%.3f",
               hist_quantile(pa->hist + HIST_LEN, a->lat_kn, 0.50),
               hist_quantile(pa->hist + HIST_LEN, a->lat_kn, 0.99));
    if (o->npids) {
        printf(" server_cpu_s=%.3f rss_delta_kib=%ld rss_per_conn_b=%.0f", r->srv_cpu, r->rss_delta,
               a->ready ? (double)r->rss_delta * 1024 / a->ready : 0);
        if (o->mode == M_FANOUT && a->events)
            printf(" cpu_us_per_delivery=%.3f", r->srv_cpu * 1e6 / (double)a->events);
        if (o->mode == M_CONNECT && r->srv_cpu > 0)
            printf(" handshakes_per_cpu_s=%.0f", a->ready / r->srv_cpu);
    }
    if (o->tls) printf(" tls_full=%" PRIu64 " tls_resumed=%" PRIu64, a->tls_full, a->tls_resumed);
    printf(" client_cpu_s=%.2f complete=%s\n", r->client_cpu, r->complete ? "yes" : "no");
}

/* --hist FILE: the latency histogram (bucket upper bound ms, count, cumulative fraction). */
static void write_hist(const parent *pa, const result *r)
{
    const bench_opts *o = pa->o;
    const crec *a = &r->a;
    FILE *f = fopen(o->hist_file, "w");
    if (!f) return;
    fprintf(f, "# %s %s: upper bound ms, count, cumulative fraction\n", target_names[o->target],
            o->mode == M_CONNECT ? "handshake" : "delivery");
    uint64_t seen = 0;
    for (size_t b = 0; b < HIST_LEN; b++) {
        if (!pa->hist[b]) continue;
        seen += pa->hist[b];
        fprintf(f, "%.3f %" PRIu64 " %.6f\n", hist_upper_ms(b), pa->hist[b],
                (double)seen / (double)a->lat_n);
    }
    fclose(f);
}

int bench_run_parent(const bench_opts *o)
{
    signal(SIGPIPE, SIG_IGN);
    parent *pa = calloc(1, sizeof *pa);
    if (!pa) return 1;
    pa->o = o;
    pa->np = (int)o->procs;
    pa->pub.o = o;
    int rc = 1;
    if (spawn(pa) != 0) goto out;
    pa->hist = calloc(HIST_ALL, sizeof *pa->hist);
    pa->tmp = calloc(HIST_ALL, sizeof *pa->tmp);
    if (!pa->hist || !pa->tmp) goto out;
    if (o->mode == M_FANOUT && bench_pub_connect(&pa->pub) != 0) {
        fprintf(stderr, "bench: fanout needs a reachable --nats\n");
        goto out;
    }
    read_pids(pa, 0);
    if (o->mode == M_CONNECT) read_pids(pa, 1); /* the window is the set-up itself */
    pa->t0 = pa->last_t = now_ns();
    send_all(pa, 'G');
    wait_ready(pa, pa->t0 + (int64_t)(o->setup_timeout * 1e9));
    int64_t t_ready = now_ns();
    long settled, ready, failed;
    uint64_t ev;
    totals(pa, &settled, &ready, &failed, &ev);
    long want = o->nsteps > 1 ? o->steps[0] : o->conns;
    if (settled < want && !o->quiet)
        fprintf(stderr, "bench: set-up timed out: %ld of %ld connections settled\n", settled, want);
    if (o->mode == M_CONNECT)
        read_pids(pa, 2);
    else
        read_pids(pa, 1);
    int64_t t_window0 = now_ns(), t_window1 = t_window0;
    if (o->mode == M_IDLE) {
        t_window1 = run_idle(pa, t_ready);
    } else if (o->mode == M_FANOUT) {
        run_fanout(pa, ready);
        t_window1 = now_ns();
    } else { /* connect: the window is the set-up */
        t_window0 = pa->t0;
        t_window1 = t_ready;
    }
    collect(pa);
    result r;
    aggregate(pa, t_window0, t_window1, &r);
    if (o->json)
        print_json(pa, &r);
    else
        print_text(pa, &r);
    fflush(stdout);
    if (o->hist_file) write_hist(pa, &r);
    rc = r.complete ? 0 : 3;
out:
    if (pa->pub_started) pthread_join(pa->pth, NULL);
    if (pa->pub.b) bus_destroy(pa->pub.b, 2000);
    reap(pa);
    free(pa->hist);
    free(pa->tmp);
    free(pa);
    return rc;
}
