/* bench_parent.c - the parent process of `sidecast bench connect|idle|fanout`: forks the
 * children, drives them through their phases over pipes ('G' go, 'S' stop), reads the
 * servers' CPU and RSS from /proc at the edges of the measured window, runs the publisher
 * (fanout), prints a progress line on stderr about once a second, then gathers the
 * children's final counts and histograms into the result line (or JSON object) on stdout. */
#include "bench_int.h"

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

typedef struct child {
    pid_t pid;
    int cmd_fd, out_fd;
    bool ready, final, dead;
    crec last, fin;
} child;

typedef struct pidstat {
    double cpu0, cpu1;
    long rss_before, rss0, rss1;
} pidstat;

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

static void send_all(child *ch, int n, char cmd)
{
    for (int i = 0; i < n; i++)
        if (!ch[i].dead && write(ch[i].cmd_fd, &cmd, 1) != 1) ch[i].dead = true;
}

/* Reads what the children wrote within timeout_ms; hist accumulates final histograms. */
static void pump(child *ch, int n, int timeout_ms, uint64_t *hist, uint64_t *tmp)
{
    struct pollfd pf[MAX_PROCS];
    for (int i = 0; i < n; i++) pf[i] = (struct pollfd){.fd = ch[i].dead ? -1 : ch[i].out_fd,
                                                        .events = POLLIN};
    if (poll(pf, (nfds_t)n, timeout_ms) <= 0) return;
    for (int i = 0; i < n; i++) {
        if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        crec r;
        if (read_full(ch[i].out_fd, &r, sizeof r) != 0) {
            ch[i].dead = true;
            continue;
        }
        if (r.type == R_FINAL) {
            if (read_full(ch[i].out_fd, tmp, HIST_ALL * sizeof *tmp) != 0) {
                ch[i].dead = true;
                continue;
            }
            for (size_t b = 0; b < HIST_ALL; b++) hist[b] += tmp[b];
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

static void totals(child *ch, int n, long *settled, long *ready, long *failed, uint64_t *events)
{
    *settled = *ready = *failed = 0;
    *events = 0;
    for (int i = 0; i < n; i++) {
        *settled += ch[i].last.settled;
        *ready += ch[i].last.ready;
        *failed += ch[i].last.failed;
        *events += ch[i].last.events;
    }
}

static void progress(const bench_opts *o, child *ch, int n, int64_t t0, int64_t *next,
                     uint64_t *last_ev, int64_t *last_t, const char *phase)
{
    int64_t t = now_ns();
    if (o->quiet || t < *next) return;
    long settled, ready, failed;
    uint64_t ev;
    totals(ch, n, &settled, &ready, &failed, &ev);
    double dt = ns_s(t - *last_t);
    fprintf(stderr,
            "bench: %s %s %5.1fs %-9s up %ld/%ld failed %ld deliveries %" PRIu64
            " (%.0f/s)\n",
            target_names[o->target], mode_names[o->mode], ns_s(t - t0), phase, ready, o->conns,
            failed, ev, dt > 0 ? (double)(ev - *last_ev) / dt : 0);
    *last_ev = ev;
    *last_t = t;
    *next = t + 1000000000;
}

static void read_pids(const bench_opts *o, pidstat *ps, int which)
{
    for (int i = 0; i < o->npids; i++) {
        double c = proc_cpu_s(o->pids[i]);
        long r = proc_rss_kib(o->pids[i]);
        if (which == 0) ps[i].rss_before = r;
        if (which == 1) ps[i].cpu0 = c, ps[i].rss0 = r;
        if (which == 2) ps[i].cpu1 = c, ps[i].rss1 = r;
    }
}

/* One line for an idle step: the server's RSS growth over the connections ready so far. */
static void print_step(const bench_opts *o, int st, long ready, long failed, double setup_s,
                       const pidstat *ps)
{
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

int bench_run_parent(const bench_opts *o)
{
    signal(SIGPIPE, SIG_IGN);
    child ch[MAX_PROCS];
    memset(ch, 0, sizeof ch);
    int np = (int)o->procs;
    long per = o->conns / np, extra = o->conns % np, first = 0;
    fflush(stdout);
    fflush(stderr);
    for (int i = 0; i < np; i++) {
        int cmd[2], out[2];
        if (pipe2(cmd, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) return 1;
        long n = per + (i < extra);
        pid_t pid = fork();
        if (pid < 0) return 1;
        if (pid == 0) {
            for (int j = 0; j < i; j++) close(ch[j].cmd_fd), close(ch[j].out_fd);
            close(cmd[1]);
            close(out[0]);
            _exit(bench_child_main(o, i, first, n, cmd[0], out[1]));
        }
        close(cmd[0]);
        close(out[1]);
        ch[i] = (child){.pid = pid, .cmd_fd = cmd[1], .out_fd = out[0]};
        first += n;
    }
    uint64_t *hist = calloc(HIST_ALL, sizeof *hist), *tmp = calloc(HIST_ALL, sizeof *tmp);
    pidstat ps[MAX_PIDS];
    memset(ps, 0, sizeof ps);
    pubstate pub;
    memset(&pub, 0, sizeof pub);
    pub.o = o;
    pthread_t pth;
    bool pub_started = false;
    int rc = 1;
    if (!hist || !tmp) goto out;
    if (o->mode == M_FANOUT && bench_pub_connect(&pub) != 0) {
        fprintf(stderr, "bench: fanout needs a reachable --nats\n");
        goto out;
    }
    read_pids(o, ps, 0);
    if (o->mode == M_CONNECT) read_pids(o, ps, 1); /* the window is the set-up itself */
    int64_t t0 = now_ns(), next = 0, last_t = t0, t_go = t0;
    uint64_t last_ev = 0;
    send_all(ch, np, 'G');
    /* set-up */
    int64_t setup_end = t0 + (int64_t)(o->setup_timeout * 1e9);
    for (;;) {
        pump(ch, np, 100, hist, tmp);
        progress(o, ch, np, t0, &next, &last_ev, &last_t, "set-up");
        int nready = 0, ndead = 0;
        for (int i = 0; i < np; i++) nready += ch[i].ready, ndead += ch[i].dead;
        if (nready + ndead >= np || now_ns() > setup_end) break;
    }
    int64_t t_ready = now_ns();
    long settled, ready, failed;
    uint64_t ev;
    totals(ch, np, &settled, &ready, &failed, &ev);
    long want = o->nsteps > 1 ? o->steps[0] : o->conns;
    if (settled < want && !o->quiet)
        fprintf(stderr, "bench: set-up timed out: %ld of %ld connections settled\n", settled,
                want);
    if (o->mode == M_CONNECT) read_pids(o, ps, 2);
    else read_pids(o, ps, 1);
    int64_t t_window0 = now_ns(), t_window1 = t_window0;
    if (o->mode == M_IDLE) {
        int64_t t_step = t0;
        for (int st = 0;; st++) {
            int64_t end = now_ns() + (int64_t)(o->seconds * 1e9);
            while (now_ns() < end) {
                pump(ch, np, 100, hist, tmp);
                progress(o, ch, np, t0, &next, &last_ev, &last_t, "holding");
            }
            read_pids(o, ps, 2);
            t_window1 = now_ns();
            if (o->nsteps < 2) break;
            totals(ch, np, &settled, &ready, &failed, &ev);
            print_step(o, st, ready, failed, ns_s(t_ready - t_step), ps);
            if (st + 1 >= o->nsteps) break;
            for (int i = 0; i < np; i++) ch[i].ready = false;
            t_step = now_ns();
            send_all(ch, np, 'G');
            int64_t step_end = t_step + (int64_t)(o->setup_timeout * 1e9);
            for (;;) {
                pump(ch, np, 100, hist, tmp);
                progress(o, ch, np, t0, &next, &last_ev, &last_t, "set-up");
                int nready = 0, ndead = 0;
                for (int i = 0; i < np; i++) nready += ch[i].ready, ndead += ch[i].dead;
                if (nready + ndead >= np || now_ns() > step_end) break;
            }
            t_ready = now_ns();
        }
    } else if (o->mode == M_FANOUT) {
        pub.total = (long)((double)o->rate * o->seconds);
        if (ready > 0 && pthread_create(&pth, NULL, bench_pub_run, &pub) == 0) pub_started = true;
        int64_t drain_end = 0, hard = now_ns() + (int64_t)((o->seconds * 2 + 40 + o->drain) * 1e9);
        while (pub_started && now_ns() < hard) {
            pump(ch, np, 100, hist, tmp);
            progress(o, ch, np, t0, &next, &last_ev, &last_t, "fan-out");
            if (!atomic_load(&pub.done)) continue;
            if (!drain_end) drain_end = now_ns() + (int64_t)(o->drain * 1e9);
            totals(ch, np, &settled, &ready, &failed, &ev);
            if (ev >= expected(&pub) * (uint64_t)ready / (uint64_t)o->conns ||
                now_ns() > drain_end)
                break;
        }
        read_pids(o, ps, 2);
        t_window1 = now_ns();
    } else {
        t_window0 = t_go;
        t_window1 = t_ready;
    }
    /* close and collect */
    send_all(ch, np, 'S');
    int64_t collect_end = now_ns() + (int64_t)((CLOSE_TIMEOUT_S + 10) * 1e9);
    for (;;) {
        int nfinal = 0, ndead = 0;
        for (int i = 0; i < np; i++) nfinal += ch[i].final, ndead += ch[i].dead && !ch[i].final;
        if (nfinal + ndead >= np || now_ns() > collect_end) break;
        pump(ch, np, 100, hist, tmp);
    }
    if (pub_started) pthread_join(pth, NULL);
    pub_started = false;

    /* aggregate */
    crec a;
    memset(&a, 0, sizeof a);
    a.min_ev = UINT64_MAX;
    int finals = 0;
    double client_cpu = 0;
    for (int i = 0; i < np; i++) {
        if (!ch[i].final) continue;
        finals++;
        crec *r = &ch[i].fin;
        a.settled += r->settled;
        a.ready += r->ready;
        a.failed += r->failed;
        a.lost += r->lost;
        a.unclean += r->unclean;
        a.complete += r->complete;
        a.events += r->events;
        a.gaps += r->gaps;
        a.disorder += r->disorder;
        a.other += r->other;
        a.error_frames += r->error_frames;
        a.bad_frames += r->bad_frames;
        a.send_errors += r->send_errors;
        a.pings += r->pings;
        a.deflate_conns += r->deflate_conns;
        a.compressed += r->compressed;
        a.lat_n += r->lat_n;
        a.lat_kn += r->lat_kn;
        if (r->ready && r->min_ev < a.min_ev) a.min_ev = r->min_ev;
        if (r->max_ev > a.max_ev) a.max_ev = r->max_ev;
        if (r->lat_max > a.lat_max) a.lat_max = r->lat_max;
        if (r->t_first_open && (!a.t_first_open || r->t_first_open < a.t_first_open))
            a.t_first_open = r->t_first_open;
        if (r->t_last_ready > a.t_last_ready) a.t_last_ready = r->t_last_ready;
        if (r->t_first_event && (!a.t_first_event || r->t_first_event < a.t_first_event))
            a.t_first_event = r->t_first_event;
        if (r->t_last_event > a.t_last_event) a.t_last_event = r->t_last_event;
        client_cpu += r->cpu_s;
    }
    if (a.min_ev == UINT64_MAX) a.min_ev = 0;
    /* what the ready connections should have got (a failed one is counted in "failed") */
    uint64_t expect = o->mode == M_FANOUT ? expected(&pub) * (uint64_t)a.ready / (uint64_t)o->conns
                                         : 0;
    uint64_t unique = a.events - (a.disorder < a.events ? a.disorder : a.events);
    uint64_t loss = expect > unique ? expect - unique : 0;
    double window = ns_s(t_window1 - t_window0);
    double span = a.t_last_event > a.t_first_event ? ns_s(a.t_last_event - a.t_first_event) : 0;
    double setup_s = a.t_last_ready > a.t_first_open ? ns_s(a.t_last_ready - a.t_first_open) : 0;
    double dps = span > 0 ? (double)a.events / span : 0;
    double hps = setup_s > 0 ? (double)a.ready / setup_s : 0;
    double srv_cpu = o->npids ? ps[0].cpu1 - ps[0].cpu0 : 0;
    long rss_delta = o->npids ? ps[0].rss1 - ps[0].rss_before : 0;
    bool complete = finals == np && a.failed == 0 && a.ready == o->conns && a.lost == 0 &&
                    (o->mode != M_FANOUT || (loss == 0 && a.gaps == 0 && a.disorder == 0));
    double p50 = hist_quantile(hist, a.lat_n, 0.50), p99 = hist_quantile(hist, a.lat_n, 0.99),
           p999 = hist_quantile(hist, a.lat_n, 0.999);
    if (o->json) {
        printf("{\"mode\":\"%s\",\"target\":\"%s\",\"conns\":%ld,\"procs\":%ld,\"threads\":%ld,"
               "\"topics\":%ld,\"tokens\":%ld,\"ready\":%d,\"failed\":%d,\"lost_conns\":%d,"
               "\"unclean_closes\":%d,\"window_s\":%.3f,\"setup_s\":%.3f,"
               "\"handshakes_per_s\":%.1f",
               mode_names[o->mode], target_names[o->target], o->conns, o->procs, o->threads,
               o->ntopics, o->ntokens, a.ready, a.failed, a.lost, a.unclean, window, setup_s, hps);
        if (o->mode == M_FANOUT)
            printf(",\"rate\":%ld,\"size\":%ld,\"seconds\":%.3f,\"published\":%ld,"
                   "\"publish_errors\":%ld,\"publish_s\":%.3f,\"synced\":%s,\"synced_s\":%.3f,"
                   "\"expected\":%" PRIu64 ",\"deliveries\":%" PRIu64 ",\"loss\":%" PRIu64
                   ",\"gaps\":%" PRIu64 ",\"disorder\":%" PRIu64 ",\"min_per_conn\":%" PRIu64
                   ",\"max_per_conn\":%" PRIu64 ",\"deliveries_per_s\":%.1f,\"span_s\":%.3f",
                   o->rate, o->size, o->seconds, atomic_load(&pub.sent), atomic_load(&pub.errors),
                   pub.took_s, pub.synced ? "true" : "false", pub.synced_s, expect, a.events,
                   loss, a.gaps, a.disorder, a.min_ev, a.max_ev, dps, span);
        printf(",\"latency\":\"%s\",\"lat_samples\":%" PRIu64 ",\"lat_p50_ms\":%.3f,"
               "\"lat_p99_ms\":%.3f,\"lat_p999_ms\":%.3f,\"lat_max_ms\":%.3f",
               o->mode == M_CONNECT ? "handshake" : "delivery", a.lat_n, p50, p99, p999,
               (double)a.lat_max / 1e6);
        if (o->mode == M_FANOUT)
            printf(",\"lat_sock_samples\":%" PRIu64 ",\"lat_sock_p50_ms\":%.3f,"
                   "\"lat_sock_p99_ms\":%.3f,\"lat_sock_p999_ms\":%.3f",
                   a.lat_kn, hist_quantile(hist + HIST_LEN, a.lat_kn, 0.50),
                   hist_quantile(hist + HIST_LEN, a.lat_kn, 0.99),
                   hist_quantile(hist + HIST_LEN, a.lat_kn, 0.999));
        printf(",\"other\":%" PRIu64 ",\"error_frames\":%" PRIu64 ",\"bad_frames\":%" PRIu64
               ",\"send_errors\":%" PRIu64 ",\"pings\":%" PRIu64 ",\"client_cpu_s\":%.3f",
               a.other, a.error_frames, a.bad_frames, a.send_errors, a.pings, client_cpu);
        printf(",\"deflate\":%s,\"deflate_conns\":%" PRIu64 ",\"compressed_frames\":%" PRIu64,
               o->deflate ? "true" : "false", a.deflate_conns, a.compressed);
        printf(",\"servers\":[");
        for (int i = 0; i < o->npids; i++)
            printf("%s{\"pid\":%ld,\"cpu_s\":%.3f,\"rss_before_kib\":%ld,\"rss_start_kib\":%ld,"
                   "\"rss_end_kib\":%ld}",
                   i ? "," : "", o->pids[i], ps[i].cpu1 - ps[i].cpu0, ps[i].rss_before,
                   ps[i].rss0, ps[i].rss1);
        printf("]");
        if (o->npids) {
            printf(",\"server_cpu_s\":%.3f,\"server_cpu_pct\":%.1f,\"rss_delta_kib\":%ld,"
                   "\"rss_per_conn_b\":%.0f",
                   srv_cpu, window > 0 ? 100 * srv_cpu / window : 0, rss_delta,
                   a.ready ? (double)rss_delta * 1024 / a.ready : 0);
            if (o->mode == M_FANOUT)
                printf(",\"cpu_us_per_delivery\":%.4f",
                       a.events ? srv_cpu * 1e6 / (double)a.events : 0);
            if (o->mode == M_CONNECT)
                printf(",\"handshakes_per_cpu_s\":%.1f", srv_cpu > 0 ? a.ready / srv_cpu : 0);
        }
        printf(",\"complete\":%s}\n", complete ? "true" : "false");
    } else {
        printf("%s %s: conns=%ld ready=%d failed=%d lost=%d setup_s=%.3f handshakes_per_s=%.0f",
               target_names[o->target], mode_names[o->mode], o->conns, a.ready, a.failed, a.lost,
               setup_s, hps);
        if (o->mode == M_FANOUT)
            printf(" published=%ld expected=%" PRIu64 " deliveries=%" PRIu64 " loss=%" PRIu64
                   " gaps=%" PRIu64 " disorder=%" PRIu64 " deliveries_per_s=%.0f",
                   atomic_load(&pub.sent), expect, a.events, loss, a.gaps, a.disorder, dps);
        printf(" %s_p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f",
               o->mode == M_CONNECT ? "handshake" : "lat", p50, p99, p999, (double)a.lat_max / 1e6);
        if (o->mode == M_FANOUT)
            printf(" sock_p50_ms=%.3f sock_p99_ms=%.3f",
                   hist_quantile(hist + HIST_LEN, a.lat_kn, 0.50),
                   hist_quantile(hist + HIST_LEN, a.lat_kn, 0.99));
        if (o->npids) {
            printf(" server_cpu_s=%.3f rss_delta_kib=%ld rss_per_conn_b=%.0f", srv_cpu, rss_delta,
                   a.ready ? (double)rss_delta * 1024 / a.ready : 0);
            if (o->mode == M_FANOUT && a.events)
                printf(" cpu_us_per_delivery=%.3f", srv_cpu * 1e6 / (double)a.events);
            if (o->mode == M_CONNECT && srv_cpu > 0)
                printf(" handshakes_per_cpu_s=%.0f", a.ready / srv_cpu);
        }
        printf(" client_cpu_s=%.2f complete=%s\n", client_cpu, complete ? "yes" : "no");
    }
    fflush(stdout);
    if (o->hist_file) {
        FILE *f = fopen(o->hist_file, "w");
        if (f) {
            fprintf(f, "# %s %s: upper bound ms, count, cumulative fraction\n",
                    target_names[o->target], o->mode == M_CONNECT ? "handshake" : "delivery");
            uint64_t seen = 0;
            for (size_t b = 0; b < HIST_LEN; b++) {
                if (!hist[b]) continue;
                seen += hist[b];
                fprintf(f, "%.3f %" PRIu64 " %.6f\n", hist_upper_ms(b), hist[b],
                        (double)seen / (double)a.lat_n);
            }
            fclose(f);
        }
    }
    rc = complete ? 0 : 3;
out:
    if (pub_started) pthread_join(pth, NULL);
    if (pub.b) bus_destroy(pub.b, 2000);
    for (int i = 0; i < np; i++) {
        if (!ch[i].pid) continue;
        close(ch[i].cmd_fd);
        close(ch[i].out_fd);
        int st;
        pid_t w = 0;
        for (int k = 0; k < 100 && (w = waitpid(ch[i].pid, &st, WNOHANG)) == 0; k++) sleep_ms(50);
        if (w == 0) {
            kill(ch[i].pid, SIGKILL);
            waitpid(ch[i].pid, &st, 0);
        }
    }
    free(hist);
    free(tmp);
    return rc;
}
