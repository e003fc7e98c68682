/* bench.c - `sidecast bench MODE`: many WebSocket connections from a few processes, against
 * the edge (sidecast.v1), nats-server's WebSocket listener (NATS protocol in WebSocket
 * frames) or a Node `ws` broadcast server (bench/peers/ws-broadcast.js); every server is fed
 * by the same NATS publisher. Modes (usage below and docs/CLI.md):
 *
 *   connect  open N connections as fast as they are accepted: handshakes/s (and per server
 *            CPU second), handshake latency
 *   idle     open N connections subscribed to a topic, hold them: server RSS per connection
 *   fanout   N subscribers of one or K topics, R messages/s published through NATS for S
 *            seconds: deliveries/s, loss and order, latency percentiles, server CPU/delivery
 *   publish  the publisher alone; tokens: mint distinct access tokens with a signing key
 *
 * Design (it replaces bench/wsbench.c): the parent forks --procs children before any thread
 * exists; each child runs --threads workers, each with its own epoll over non-blocking
 * sockets, a shared read buffer, and client frames built once (masked) where they do not
 * vary. Frames go through the ws library's codec (common/ws/ws_frame.h: ws_frame_decode with
 * a client's rules, the header encoder and masking; ws_deflate.h's ws_pmd_inflate for
 * compressed messages). Children report progress, "ready" and their final counts plus a
 * latency histogram through a pipe; the parent drives the phases through another (G:
 * connect, S: stop), reads the servers' CPU and RSS from /proc (--pid) at the edges of the
 * window, runs the publisher, prints a progress line on stderr about once a second and the
 * result on stdout.
 * Publisher events are {"t":CLOCK_MONOTONIC ns,"i":per-topic counter,"pad":"x..."}: receivers
 * compute latency from t and loss/duplicates/order from i, twice: to the client's read (what
 * an application sees, including the load generator's own queueing behind the sockets it
 * reads first) and to the kernel's receipt of the frame in the client's socket (SO_TIMESTAMPNS:
 * what the server delivered when; a read that takes several frames dates them all by its last
 * segment). Loopback only; every wait has a deadline.
 *
 * The files: bench.c (this one: the command lines, their checks and the bench_opts they
 * fill), bench_parent.c (the parent), bench_child.c (a client process and its threads),
 * bench_nats.c (the NATS protocol of --target nats), bench_pub.c (the publisher);
 * bench_int.h is what they share. */
#include "bench_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <jansson.h>

#include "bus.h"
#include "log.h"
#include "token.h"

static int raise_nofile(long need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
    if (rl.rlim_cur >= (rlim_t)need) return 0;
    if (rl.rlim_max < (rlim_t)need) return -1;
    rl.rlim_cur = (rlim_t)need;
    return setrlimit(RLIMIT_NOFILE, &rl);
}

/* Topic k of o's ntopics into out: TOPIC, or TOPIC.k when there are several. */
void bench_topic_name(const bench_opts *o, int k, char *out, size_t cap)
{
    if (o->ntopics > 1)
        snprintf(out, cap, "%s.%d", o->topic, k);
    else
        snprintf(out, cap, "%s", o->topic);
}

static const char usage_bench[] =
    "usage: sidecast bench connect|idle|fanout [OPTIONS]\n"
    "       sidecast bench publish --nats URL --topic T [--topics K] --rate R --seconds S\n"
    "       sidecast bench tokens --key PEM --count N [--kid KID] [--sub-topics PATTERN]\n"
    "                             [--ttl S] [--user-prefix P]\n"
    "Load generator for the edge and its peers (docs/BENCHMARKS.md). Loopback only.\n"
    "  --target sidecast|nats|ws  server kind (default sidecast): the edge (sidecast.v1),\n"
    "                        nats-server's WebSocket listener, bench/peers/ws-broadcast.js\n"
    "  --url ws://127.0.0.1:PORT/PATH | wss://127.0.0.1:PORT/PATH\n"
    "  --cacert FILE         wss://: the CA (PEM) the server's certificate must chain to; its\n"
    "                        subjectAltName must name the URL's address (always checked)\n"
    "  --resume              wss://: each thread's first connection alone, then its TLS\n"
    "                        session offered on every other (resumed handshakes)\n"
    "  --token T | --tokens FILE  access token(s), used round robin (sidecast)\n"
    "  --conns N --procs P --threads T   N connections from P processes of T threads each\n"
    "                        (idle: --conns N1,N2,... opens them in steps, a line each)\n"
    "  --concurrency C       handshakes in flight, all processes together (default 256)\n"
    "  --source A-B          bind to 127.0.0.A..B round robin (e.g. 127.0.0.1-127.0.0.8)\n"
    "  --topic T [--topics K]  subscribe to T (K > 1: T.0 .. T.K-1, connection i to i%K)\n"
    "  --nats URL --rate R --seconds S --size B   fanout's publisher: R msg/s for S s of B\n"
    "                        bytes on events.TOPIC (--prefix changes \"events.\")\n"
    "  --drain S             fanout: wait at most S s after publishing (default 5)\n"
    "  --seconds S           idle: hold the connections S s\n"
    "  --setup-timeout S     default 120\n"
    "  --pid PID[,PID]       server processes: CPU and RSS from /proc over the window\n"
    "  --json                one JSON result line on stdout; --hist FILE latency histogram\n"
    "  --quiet               no progress line on stderr\n"
    "  --fast-close          end with close(2), no closing handshake\n"
    "  --deflate             offer permessage-deflate (no context takeover either way) and\n"
    "                        inflate compressed messages (sidecast, ws)\n"
    "Exit: 0 every connection ready (fanout: and every event, in order), 3 not, 2 usage.\n";

static int parse_source(bench_opts *o, const char *s)
{
    char a[32], b[32];
    const char *dash = strchr(s, '-');
    if (!dash) {
        snprintf(a, sizeof a, "%s", s);
        snprintf(b, sizeof b, "%s", s);
    } else {
        if ((size_t)(dash - s) >= sizeof a) return -1;
        memcpy(a, s, (size_t)(dash - s));
        a[dash - s] = 0;
        snprintf(b, sizeof b, "%s", dash + 1);
    }
    struct in_addr x, y;
    if (inet_pton(AF_INET, a, &x) != 1 || inet_pton(AF_INET, b, &y) != 1) return -1;
    uint32_t lo = ntohl(x.s_addr), hi = ntohl(y.s_addr);
    if ((lo >> 24) != 127 || (hi >> 24) != 127 || hi < lo || hi - lo >= MAX_SOURCES) return -1;
    o->nsources = 0;
    for (uint32_t v = lo; v <= hi; v++) o->sources[o->nsources++].s_addr = htonl(v);
    return 0;
}

static int parse_url(bench_opts *o, const char *url)
{
    o->tls = strncmp(url, "wss://", 6) == 0;
    if (!o->tls && strncmp(url, "ws://", 5) != 0) return -1;
    const char *h = url + (o->tls ? 6 : 5), *colon = strchr(h, ':');
    if (!colon || (size_t)(colon - h) >= sizeof o->host) return -1;
    memcpy(o->host, h, (size_t)(colon - h));
    o->host[colon - h] = '\0';
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (p < 1 || p > 65535 || (*end != '/' && *end != '\0')) return -1;
    o->port = (int)p;
    snprintf(o->path, sizeof o->path, "%s", *end ? end : "/");
    if (strcmp(o->host, "localhost") == 0) snprintf(o->host, sizeof o->host, "127.0.0.1");
    struct in_addr a;
    if (inet_pton(AF_INET, o->host, &a) != 1 || (ntohl(a.s_addr) >> 24) != 127) return -1;
    o->addr.sin_family = AF_INET;
    o->addr.sin_port = htons((uint16_t)p);
    o->addr.sin_addr = a;
    return 0;
}

static bool topic_ok(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > TOPIC_MAX - 4) return false;
    for (size_t i = 0; i < n; i++) {
        char ch = t[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-' || ch == '.'))
            return false;
    }
    return true;
}

static bool token_ok(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > TOKEN_MAX - 64) return false;
    for (size_t i = 0; i < n; i++)
        if (t[i] <= ' ' || t[i] > '~') return false;
    return true;
}

static int load_tokens(bench_opts *o, const char *path, long max)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "bench: cannot read %s: %s\n", path, strerror(errno));
        return -1;
    }
    o->tokens = calloc((size_t)max, sizeof *o->tokens);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while (o->tokens && o->ntokens < max && (len = getline(&line, &cap, f)) > 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (len == 0) continue;
        if (!token_ok(line)) break;
        o->tokens[o->ntokens++] = strdup(line);
    }
    free(line);
    fclose(f);
    if (o->ntokens == 0) {
        fprintf(stderr, "bench: no token in %s\n", path);
        return -1;
    }
    return 0;
}

static int cmd_tokens(int argc, char **argv)
{
    const char *key = NULL, *kid = "dev-1", *subs = "prices.>", *prefix = "bench-";
    const char *iss = "sidecast", *aud = "sidecast";
    long count = 0, ttl = 3600;
    static const struct option opts[] = {
        {"key", required_argument, NULL, 'k'},    {"kid", required_argument, NULL, 'K'},
        {"count", required_argument, NULL, 'n'},  {"sub-topics", required_argument, NULL, 's'},
        {"ttl", required_argument, NULL, 't'},    {"user-prefix", required_argument, NULL, 'u'},
        {"issuer", required_argument, NULL, 'i'}, {"audience", required_argument, NULL, 'a'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
    int o;
    optind = 1;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'k': key = optarg; break;
        case 'K': kid = optarg; break;
        case 'n': count = strtol(optarg, NULL, 10); break;
        case 's': subs = optarg; break;
        case 't': ttl = strtol(optarg, NULL, 10); break;
        case 'u': prefix = optarg; break;
        case 'i': iss = optarg; break;
        case 'a': aud = optarg; break;
        case 'h': fputs(usage_bench, stdout); return 0;
        default: fputs(usage_bench, stderr); return 2;
        }
    }
    if (!key || count < 1 || count > MAX_CONNS || ttl < 60 || ttl > 86400) {
        fprintf(stderr,
                "bench tokens: need --key PEM, 1 <= --count <= %d, 60 <= --ttl <= "
                "86400\n",
                MAX_CONNS);
        return 2;
    }
    token_signer *s = NULL;
    if (token_signer_load(&s, key, kid) != 0) {
        fprintf(stderr, "bench tokens: cannot load the signing key %s\n", key);
        return 1;
    }
    long now = (long)time(NULL);
    int rc = 0;
    uint8_t rnd[8];
    for (long i = 0; i < count && rc == 0; i++) {
        char sub[128], jti[64];
        snprintf(sub, sizeof sub, "%s%ld", prefix, i);
        FILE *ur = fopen("/dev/urandom", "r");
        if (!ur || fread(rnd, 1, sizeof rnd, ur) != sizeof rnd) rc = 1;
        if (ur) fclose(ur);
        snprintf(jti, sizeof jti, "bench-%ld-%02x%02x%02x%02x%02x%02x%02x%02x", i, rnd[0], rnd[1],
                 rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
        json_t *claims = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:[s], s:[]}", "iss", iss,
                                   "aud", aud, "sub", sub, "iat", (json_int_t)now, "nbf",
                                   (json_int_t)now, "exp", (json_int_t)(now + ttl), "jti", jti,
                                   "sub_topics", subs, "pub_topics");
        char *tok = NULL;
        if (!claims || token_sign(s, claims, &tok) != 0)
            rc = 1;
        else
            printf("%s\n", tok);
        free(tok);
        json_decref(claims);
    }
    token_signer_destroy(s);
    if (rc) fprintf(stderr, "bench tokens: signing failed\n");
    return rc;
}

static int cmd_publish(const bench_opts *o)
{
    if (!o->nats || o->rate < 1 || o->seconds <= 0) {
        fprintf(stderr, "bench publish: need --nats, --topic, --rate, --seconds\n");
        return 2;
    }
    pubstate p;
    memset(&p, 0, sizeof p);
    p.o = o;
    if (bench_pub_connect(&p) != 0) return 1;
    p.total = (long)((double)o->rate * o->seconds);
    bench_pub_run(&p);
    printf("sent=%ld errors=%ld seconds=%.3f rate=%.0f size=%ld synced=%s synced_s=%.3f\n",
           atomic_load(&p.sent), atomic_load(&p.errors), p.took_s,
           p.took_s > 0 ? (double)atomic_load(&p.sent) / p.took_s : 0, o->size,
           p.synced ? "yes" : "no", p.synced_s);
    bus_destroy(p.b, 5000);
    return atomic_load(&p.errors) ? 1 : 0;
}

/* --conns N, or N1,N2,... ascending (idle: steps): 0, or -1. */
static int parse_steps(bench_opts *o, char *arg)
{
    char *p = arg, *end;
    o->nsteps = 0;
    while (*p && o->nsteps < MAX_STEPS) {
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || (o->nsteps && v <= o->steps[o->nsteps - 1]) ||
            (*end && *end != ','))
            return -1;
        o->steps[o->nsteps++] = v;
        p = *end ? end + 1 : end;
    }
    o->conns = o->nsteps ? o->steps[o->nsteps - 1] : 0;
    return 0;
}

/* --pid PID[,PID...]: 0, or -1. */
static int parse_pids(bench_opts *o, char *arg)
{
    char *s = arg, *end;
    while (*s && o->npids < MAX_PIDS) {
        long v = strtol(s, &end, 10);
        if (v <= 0 || end == s) return -1;
        o->pids[o->npids++] = v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return 0;
}

/* What the command line names, before it is checked and put into bench_opts. */
typedef struct bench_args {
    const char *url, *token, *tokens, *target, *topic;
} bench_args;

/* The options after the mode into o (defaults first) and a. Returns -1 to go on, else the
 * exit code (0 after --help, 2 for a bad option, said on stderr). */
static int parse_args(int argc, char **argv, bench_opts *o, bench_args *a)
{
    memset(o, 0, sizeof *o);
    o->conns = 1;
    o->procs = 1;
    o->threads = 1;
    o->concurrency = 256;
    o->ntopics = 1;
    o->size = 128;
    o->setup_timeout = 120;
    o->drain = 5;
    snprintf(o->prefix, sizeof o->prefix, "events.");
    *a = (bench_args){.target = "sidecast"};
    static const struct option longopts[] = {
        {"target", required_argument, NULL, 'a'},  {"url", required_argument, NULL, 'u'},
        {"token", required_argument, NULL, 'k'},   {"tokens", required_argument, NULL, 'K'},
        {"conns", required_argument, NULL, 'n'},   {"procs", required_argument, NULL, 'P'},
        {"threads", required_argument, NULL, 'T'}, {"concurrency", required_argument, NULL, 'c'},
        {"source", required_argument, NULL, 'S'},  {"topic", required_argument, NULL, 't'},
        {"topics", required_argument, NULL, 'm'},  {"rate", required_argument, NULL, 'r'},
        {"seconds", required_argument, NULL, 's'}, {"size", required_argument, NULL, 'z'},
        {"nats", required_argument, NULL, 'N'},    {"pid", required_argument, NULL, 'p'},
        {"json", no_argument, NULL, 'j'},          {"hist", required_argument, NULL, 'H'},
        {"drain", required_argument, NULL, 'd'},   {"setup-timeout", required_argument, NULL, 'o'},
        {"prefix", required_argument, NULL, 'x'},  {"quiet", no_argument, NULL, 'q'},
        {"fast-close", no_argument, NULL, 'F'},    {"deflate", no_argument, NULL, 'Z'},
        {"cacert", required_argument, NULL, 'C'},  {"resume", no_argument, NULL, 'R'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'a': a->target = optarg; break;
        case 'u': a->url = optarg; break;
        case 'k': a->token = optarg; break;
        case 'K': a->tokens = optarg; break;
        case 'n':
            if (parse_steps(o, optarg) != 0)
                return fputs("bench: --conns N or ascending N1,N2,...\n", stderr), 2;
            break;
        case 'P': o->procs = strtol(optarg, NULL, 10); break;
        case 'T': o->threads = strtol(optarg, NULL, 10); break;
        case 'c': o->concurrency = strtol(optarg, NULL, 10); break;
        case 'S':
            if (parse_source(o, optarg) != 0) {
                fprintf(stderr, "bench: --source wants 127.0.0.A[-127.0.0.B], at most %d\n",
                        MAX_SOURCES);
                return 2;
            }
            break;
        case 't': a->topic = optarg; break;
        case 'm': o->ntopics = strtol(optarg, NULL, 10); break;
        case 'r': o->rate = strtol(optarg, NULL, 10); break;
        case 's': o->seconds = strtod(optarg, NULL); break;
        case 'z': o->size = strtol(optarg, NULL, 10); break;
        case 'N': o->nats = optarg; break;
        case 'p':
            if (parse_pids(o, optarg) != 0) return fputs("bench: bad --pid\n", stderr), 2;
            break;
        case 'j': o->json = true; break;
        case 'H': o->hist_file = optarg; break;
        case 'd': o->drain = strtod(optarg, NULL); break;
        case 'o': o->setup_timeout = strtod(optarg, NULL); break;
        case 'x': snprintf(o->prefix, sizeof o->prefix, "%s", optarg); break;
        case 'q': o->quiet = true; break;
        case 'F': o->fast_close = true; break;
        case 'Z': o->deflate = true; break;
        case 'C': o->cacert = optarg; break;
        case 'R': o->resume = true; break;
        case 'h': fputs(usage_bench, stdout); return 0;
        default: fputs(usage_bench, stderr); return 2;
        }
    }
    return -1;
}

/* What every mode but tokens needs: the steps, the topic, the publisher's numbers. Returns
 * -1 to go on, else the exit code (2, said on stderr). */
static int check_common(bench_opts *o, const char *mode, const bench_args *a)
{
    if (o->nsteps > 1 && strcmp(mode, "idle") != 0)
        return fputs("bench: several --conns steps are for idle only\n", stderr), 2;
    const char *topic = a->topic ? a->topic : "prices.BTC";
    if (!topic_ok(topic) || strlen(o->prefix) + strlen(topic) > TOPIC_MAX + 4) {
        fprintf(stderr, "bench: bad --topic\n");
        return 2;
    }
    snprintf(o->topic, sizeof o->topic, "%s", topic);
    if (o->ntopics < 1 || o->ntopics > MAX_TOPICS || o->size < PUB_SIZE_MIN ||
        o->size > PUB_SIZE_MAX || o->rate < 0 || o->rate > PUB_RATE_MAX || o->seconds < 0 ||
        o->seconds > MAX_SECONDS || (double)o->rate * o->seconds > PUB_TOTAL_MAX || o->drain < 0 ||
        o->drain > 600 || o->setup_timeout <= 0 || o->setup_timeout > MAX_SECONDS) {
        fprintf(stderr,
                "bench: need 1 <= topics <= %d, %d <= size <= %d, rate <= %d, seconds "
                "<= %d, rate*seconds <= %d\n",
                MAX_TOPICS, PUB_SIZE_MIN, PUB_SIZE_MAX, PUB_RATE_MAX, MAX_SECONDS, PUB_TOTAL_MAX);
        return 2;
    }
    return -1;
}

/* What connect, idle and fanout need: mode, target, URL, sizes, publisher, tokens (loaded
 * into o->tokens), open files. Returns -1 to go on, else the exit code (2 for the command
 * line, 1 for the system; said on stderr). */
static int check_run(bench_opts *o, const char *mode, const bench_args *a)
{
    if (strcmp(mode, "connect") == 0)
        o->mode = M_CONNECT;
    else if (strcmp(mode, "idle") == 0)
        o->mode = M_IDLE;
    else if (strcmp(mode, "fanout") == 0)
        o->mode = M_FANOUT;
    else {
        fprintf(stderr, "bench: unknown mode %s\n\n%s", mode, usage_bench);
        return 2;
    }
    if (strcmp(a->target, "sidecast") == 0)
        o->target = T_SIDECAST;
    else if (strcmp(a->target, "nats") == 0)
        o->target = T_NATS;
    else if (strcmp(a->target, "ws") == 0)
        o->target = T_WS;
    else
        return fputs("bench: --target sidecast|nats|ws\n", stderr), 2;
    if (!a->url || parse_url(o, a->url) != 0) {
        fprintf(stderr, "bench: --url must be ws:// or wss://<loopback address>:PORT[/PATH]\n");
        return 2;
    }
    if (o->tls != (o->cacert != NULL) || (o->resume && !o->tls)) {
        fprintf(stderr, "bench: wss:// needs --cacert FILE (verification cannot be turned off);"
                        " --cacert and --resume are for wss:// only\n");
        return 2;
    }
    if (o->procs < 1 || o->procs > MAX_PROCS || o->threads < 1 || o->threads > MAX_THREADS ||
        o->conns < o->procs || o->conns > MAX_CONNS ||
        (o->conns + o->procs - 1) / o->procs > MAX_CONNS_PROC || o->concurrency < 1) {
        fprintf(stderr,
                "bench: need procs <= %d, threads <= %d, procs <= conns <= %d and at "
                "most %d connections per process\n",
                MAX_PROCS, MAX_THREADS, MAX_CONNS, MAX_CONNS_PROC);
        return 2;
    }
    if (o->mode == M_FANOUT && (!o->nats || o->rate < 1 || o->seconds <= 0)) {
        fprintf(stderr, "bench fanout: needs --nats URL, --rate R and --seconds S\n");
        return 2;
    }
    if (o->mode == M_IDLE && o->seconds <= 0) o->seconds = 1;
    if (a->token && a->tokens) return fputs("bench: --token or --tokens, not both\n", stderr), 2;
    if (a->token) {
        if (!token_ok(a->token)) return fputs("bench: --token is not a token\n", stderr), 2;
        o->tokens = calloc(1, sizeof *o->tokens);
        if (!o->tokens || !(o->tokens[0] = strdup(a->token))) return 1;
        o->ntokens = 1;
    } else if (a->tokens && load_tokens(o, a->tokens, o->conns) != 0) {
        return 2;
    }
    if (o->target == T_SIDECAST && o->ntokens == 0) {
        fprintf(stderr, "bench: --target sidecast needs --token or --tokens\n");
        return 2;
    }
    if (raise_nofile((o->conns + o->procs - 1) / o->procs + 64) != 0) {
        fprintf(stderr, "bench: cannot have %ld open files per process (ulimit -n)\n",
                (o->conns + o->procs - 1) / o->procs + 64);
        return 1;
    }
    return -1;
}

int cli_bench(int argc, char **argv)
{
    if (argc < 1 || strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0 ||
        strcmp(argv[0], "help") == 0) {
        fputs(usage_bench, argc < 1 ? stderr : stdout);
        return argc < 1 ? 2 : 0;
    }
    const char *mode = argv[0];
    if (strcmp(mode, "tokens") == 0) return cmd_tokens(argc, argv);
    log_init("sidecast-bench", LOG_WARN);
    bench_opts o;
    bench_args a;
    int rc = parse_args(argc, argv, &o, &a);
    if (rc < 0) rc = check_common(&o, mode, &a);
    if (rc < 0 && strcmp(mode, "publish") == 0) rc = cmd_publish(&o);
    if (rc < 0) rc = check_run(&o, mode, &a);
    if (rc < 0) rc = bench_run_parent(&o);
    for (long i = 0; i < o.ntokens; i++) free(o.tokens[i]);
    free(o.tokens);
    return rc;
}
