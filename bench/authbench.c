/* authbench - refresh_token grants per second that auth sustains (docs/CAPACITY.md).
 *
 *   authbench nats --nats URL [--subject auth.token] --chains C --seconds S [common options]
 *   authbench http --port PORT --chains C --seconds S [common options]
 *     common: [--user NAME|FMT] [--password PW] [--grant refresh|password] [--watch NAME=PID]...
 *   authbench sign --key PEM [--count N] [--password-hash HASH]
 *
 * C threads each hold one refresh-token chain: a password grant first (user NAME, or FMT
 * with %d replaced by the thread's index, e.g. u%d), then, once every thread has logged in,
 * refresh_token grants one after another for S seconds, each with the refresh token the
 * previous answer carried. Every refresh token is used exactly once, as a client does (a
 * second use would be a reuse and revoke the family). A failed refresh counts as an error
 * and the thread logs in again (outside the count).
 *
 * --grant password: every request is a password grant instead (a new family each time, the
 * hash checked each time); the counts then are password grants, not refreshes.
 *
 * sign: no servers. Signs N access tokens with the claims of a refresh (kid header, 9
 * claims) two ways and prints µs per token for each: token_sign, auth's own path through
 * libjwt (jwt_encode_str re-reads the PEM key on every call), and OpenSSL EVP with the same
 * key parsed once (the JWT assembled by hand: what signing without libjwt would cost). With
 * --password-hash, also the µs of one crypt(3) against HASH (the password "capacity").
 *
 * nats: requests go to auth over NATS (one connection, the parameter object as the body,
 * as the gateway's envelope would carry it). http: POST /auth/token to the gateway on
 * 127.0.0.1:PORT, form-encoded, one keep-alive connection per thread.
 *
 * Prints one line: refreshes, errors, refreshes/s, latency p50/p99, the CPU each --watch
 * process used over the window (user+system from /proc/PID/stat, as % of one core and µs
 * per refresh) and the load generator's own. Loopback only; every wait has a deadline. */
#include "b64url.h"
#include "bus.h"
#include "log.h"
#include "token.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <crypt.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "procstat.h"

#define MAX_CHAINS 256
#define MAX_WATCH 8
#define MAX_SECONDS 3600
#define HIST_US 1000000 /* latency: 1 µs buckets up to 1 s, then one overflow */
#define REQ_TIMEOUT_MS 5000
#define LOGIN_TRIES 5
#define RT_MAX 128
#define HTTP_BUF 65536

static bool use_http, password_grants;
static const char *nats_url, *subject = "auth.token", *user_fmt = "alice", *password = "wonderland";
static int http_port, nchains = 16;
static double seconds = 10;
static bus *B;
static atomic_int ready_count;
static atomic_int go; /* 1: measure; 2: stop */
static atomic_long refreshes, errors, relogins;
static _Atomic(unsigned long) *hist;

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* ---- one chain's transport ---------------------------------------------------------------- */

typedef struct chain {
    int idx;
    char user[80];
    char rt[RT_MAX];
    int fd; /* http */
    char *buf;
} chain;

/* Takes "refresh_token" out of a 200 answer's JSON. 0 or -1. */
static int take_rt(chain *c, const char *body, size_t len)
{
    json_error_t err;
    json_t *j = json_loadb(body, len, 0, &err);
    const char *rt = j ? json_string_value(json_object_get(j, "refresh_token")) : NULL;
    int rc = -1;
    if (rt && strlen(rt) < RT_MAX) {
        snprintf(c->rt, sizeof c->rt, "%s", rt);
        rc = 0;
    }
    json_decref(j);
    return rc;
}

static int nats_call(chain *c, bool login)
{
    json_t *req = login ? json_pack("{s:s, s:s, s:s}", "grant_type", "password", "username",
                                    c->user, "password", password)
                        : json_pack("{s:s, s:s}", "grant_type", "refresh_token", "refresh_token",
                                    c->rt);
    char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!body) return -1;
    bus_msg *r = NULL;
    int rc = bus_request(B, subject, body, strlen(body), NULL, 0, REQ_TIMEOUT_MS, &r);
    free(body);
    if (rc != 0) return -1;
    const char *st = bus_msg_header(r, "Sidecast-Status");
    rc = (!st || strcmp(st, "200") == 0) ? take_rt(c, bus_msg_data(r), bus_msg_len(r)) : -1;
    bus_msg_destroy(r);
    return rc;
}

static int http_connect(chain *c)
{
    if (c->fd >= 0) close(c->fd);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0) return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)http_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK); /* loopback only */
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return 0;
}

/* One request/response on the keep-alive connection. 0 with a new refresh token, or -1. */
static int http_call(chain *c, bool login)
{
    char body[512], req[1024];
    int bn = login
                 ? snprintf(body, sizeof body, "grant_type=password&username=%s&password=%s",
                            c->user, password)
                 : snprintf(body, sizeof body, "grant_type=refresh_token&refresh_token=%s", c->rt);
    if (bn < 0 || (size_t)bn >= sizeof body) return -1;
    int n = snprintf(req, sizeof req,
                     "POST /auth/token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Content-Type: application/x-www-form-urlencoded\r\n"
                     "Content-Length: %d\r\n\r\n%s",
                     bn, body);
    if (n < 0 || (size_t)n >= sizeof req) return -1;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (c->fd < 0 && http_connect(c) != 0) return -1;
        if (write(c->fd, req, (size_t)n) != n) { /* the server closed an idle connection */
            close(c->fd);
            c->fd = -1;
            continue;
        }
        size_t len = 0;
        double deadline = now_s() + REQ_TIMEOUT_MS / 1000.0;
        long clen = -1;
        char *hend = NULL;
        bool closed = false;
        while (now_s() < deadline) {
            if (hend && clen >= 0 && len >= (size_t)(hend - c->buf) + 4 + (size_t)clen) break;
            struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
            if (poll(&pfd, 1, 100) <= 0) continue;
            ssize_t r = read(c->fd, c->buf + len, HTTP_BUF - 1 - len);
            if (r <= 0) {
                closed = true;
                break;
            }
            len += (size_t)r;
            c->buf[len] = 0;
            if (!hend && (hend = strstr(c->buf, "\r\n\r\n"))) {
                for (char *l = strstr(c->buf, "\r\n"); l && l < hend; l = strstr(l + 2, "\r\n"))
                    if (strncasecmp(l + 2, "Content-Length:", 15) == 0) clen = atol(l + 17);
                if (clen < 0) clen = 0;
            }
            if (len >= HTTP_BUF - 1) break;
        }
        if (!hend || clen < 0 || len < (size_t)(hend - c->buf) + 4 + (size_t)clen) {
            close(c->fd);
            c->fd = -1;
            if (closed && len == 0) continue; /* closed before answering: once more */
            return -1;
        }
        if (strstr(c->buf, "Connection: close") && strstr(c->buf, "Connection: close") < hend) {
            close(c->fd);
            c->fd = -1;
        }
        if (strncmp(c->buf, "HTTP/1.1 200", 12) != 0) return -1;
        return take_rt(c, hend + 4, (size_t)clen);
    }
    return -1;
}

static int call(chain *c, bool login)
{
    return use_http ? http_call(c, login) : nats_call(c, login);
}

static int login(chain *c)
{
    for (int i = 0; i < LOGIN_TRIES; i++) {
        if (call(c, true) == 0) return 0;
        usleep(100000);
    }
    return -1;
}

static void *worker(void *arg)
{
    chain *c = arg;
    if (login(c) != 0) {
        fprintf(stderr, "authbench: chain %d: login failed\n", c->idx);
        atomic_fetch_add(&ready_count, 1);
        return NULL;
    }
    atomic_fetch_add(&ready_count, 1);
    for (int i = 0; i < 60000 && atomic_load(&go) == 0; i++) usleep(1000);
    while (atomic_load(&go) == 1) {
        double t0 = now_s();
        int rc = call(c, password_grants);
        double us = (now_s() - t0) * 1e6;
        if (atomic_load(&go) != 1) break; /* finished after the window: not counted */
        if (rc == 0) {
            atomic_fetch_add(&refreshes, 1);
            atomic_fetch_add(&hist[us < HIST_US ? (long)us : HIST_US], 1);
        } else {
            atomic_fetch_add(&errors, 1);
            atomic_fetch_add(&relogins, 1);
            if (login(c) != 0) break;
        }
    }
    return NULL;
}

static double pct(long total, double q)
{
    long want = (long)((double)total * q), acc = 0;
    for (long i = 0; i <= HIST_US; i++) {
        acc += (long)hist[i];
        if (acc > want) return (double)i / 1000.0;
    }
    return HIST_US / 1000.0;
}

/* ---- sign: libjwt beside a key parsed once ------------------------------------------------- */

static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The claims auth signs for a refresh of a user with one sub topic (grants.c issue). */
static json_t *refresh_claims(long now)
{
    return json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:[s], s:[], s:s}", "iss", "sidecast",
                     "aud", "sidecast", "sub", "u0", "iat", (json_int_t)now, "nbf", (json_int_t)now,
                     "exp", (json_int_t)(now + 300), "jti", "0123456789abcdef0123456789abcdef",
                     "sub_topics", "prices.*", "pub_topics", "sid",
                     "fedcba9876543210fedcba9876543210");
}

/* ES256 JWT with a parsed key: b64url(header).b64url(claims).b64url(r||s). malloc'd or NULL. */
static char *sign_evp(EVP_PKEY *pk, const char *kid, const json_t *claims)
{
    char hdr[160], *body = json_dumps(claims, JSON_COMPACT), *out = NULL;
    unsigned char der[80], raw[64];
    size_t dlen = sizeof der;
    snprintf(hdr, sizeof hdr, "{\"alg\":\"ES256\",\"kid\":\"%s\",\"typ\":\"JWT\"}", kid);
    size_t hl = b64url_encoded_len(strlen(hdr)), bl = body ? b64url_encoded_len(strlen(body)) : 0;
    size_t cap = hl + bl + b64url_encoded_len(64) + 3;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    ECDSA_SIG *sig = NULL;
    if (!body || !md || !(out = malloc(cap))) goto fail;
    if (b64url_encode(hdr, strlen(hdr), out, cap) != 0) goto fail;
    size_t o = strlen(out);
    out[o++] = '.';
    if (b64url_encode(body, strlen(body), out + o, cap - o) != 0) goto fail;
    o += strlen(out + o);
    if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pk) != 1 ||
        EVP_DigestSign(md, der, &dlen, (unsigned char *)out, o) != 1)
        goto fail;
    const unsigned char *p = der;
    if (!(sig = d2i_ECDSA_SIG(NULL, &p, (long)dlen))) goto fail;
    if (BN_bn2binpad(ECDSA_SIG_get0_r(sig), raw, 32) != 32 ||
        BN_bn2binpad(ECDSA_SIG_get0_s(sig), raw + 32, 32) != 32)
        goto fail;
    out[o++] = '.';
    if (b64url_encode(raw, 64, out + o, cap - o) != 0) goto fail;
    ECDSA_SIG_free(sig);
    EVP_MD_CTX_free(md);
    free(body);
    return out;
fail:
    ECDSA_SIG_free(sig);
    EVP_MD_CTX_free(md);
    free(body);
    free(out);
    return NULL;
}

static int sign_bench(const char *key, long count, const char *hash)
{
    token_signer *ts = NULL;
    if (token_signer_load(&ts, key, "dev-1") != 0) return 1;
    if (strcmp(token_signer_alg(ts), "ES256") != 0) {
        fprintf(stderr, "authbench sign: an ES256 key is needed (got %s)\n", token_signer_alg(ts));
        return 1;
    }
    FILE *f = fopen(key, "r");
    EVP_PKEY *pk = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
    if (f) fclose(f);
    json_t *claims = refresh_claims((long)time(NULL));
    if (!pk || !claims) return 1;
    double t[2] = {0, 0};
    for (int way = 0; way < 2; way++) {
        double t0 = thread_cpu_s();
        for (long i = 0; i < count; i++) {
            char *tok = NULL;
            if (way == 0 ? token_sign(ts, claims, &tok) != 0
                         : !(tok = sign_evp(pk, "dev-1", claims))) {
                fprintf(stderr, "authbench sign: signing failed\n");
                return 1;
            }
            free(tok);
        }
        t[way] = (thread_cpu_s() - t0) * 1e6 / (double)count;
    }
    printf("sign count=%ld libjwt_us=%.1f parsed_once_us=%.1f", count, t[0], t[1]);
    if (hash) {
        struct crypt_data *cd = calloc(1, sizeof *cd);
        long n = count < 20 ? count : 20; /* a hash costs ms */
        double t0 = thread_cpu_s();
        for (long i = 0; cd && i < n; i++) crypt_rn("capacity", hash, cd, sizeof *cd);
        printf(" password_hash_us=%.1f", (thread_cpu_s() - t0) * 1e6 / (double)n);
        free(cd);
    }
    printf("\n");
    json_decref(claims);
    EVP_PKEY_free(pk);
    token_signer_destroy(ts);
    return 0;
}

static void usage(void) __attribute__((noreturn));
static void usage(void)
{
    fprintf(stderr, "usage: authbench nats --nats URL [--subject S] | http --port PORT\n"
                    "                 --chains C --seconds S [--user NAME|FMT] [--password PW]"
                    " [--grant refresh|password] [--watch NAME=PID]...\n"
                    "       authbench sign --key PEM [--count N] [--password-hash HASH]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 2) usage();
    bool sign = strcmp(argv[1], "sign") == 0;
    if (strcmp(argv[1], "http") == 0)
        use_http = true;
    else if (strcmp(argv[1], "nats") != 0 && !sign)
        usage();
    const char *key = NULL, *hash = NULL;
    long count = 2000;
    const char *wname[MAX_WATCH];
    long wpid[MAX_WATCH];
    int nwatch = 0;
    static const struct option opts[] = {{"nats", 1, 0, 'n'},
                                         {"subject", 1, 0, 's'},
                                         {"port", 1, 0, 'p'},
                                         {"chains", 1, 0, 'c'},
                                         {"seconds", 1, 0, 't'},
                                         {"user", 1, 0, 'u'},
                                         {"password", 1, 0, 'w'},
                                         {"watch", 1, 0, 'W'},
                                         {"grant", 1, 0, 'g'},
                                         {"key", 1, 0, 'k'},
                                         {"count", 1, 0, 'N'},
                                         {"password-hash", 1, 0, 'H'},
                                         {0, 0, 0, 0}};
    optind = 2;
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'n': nats_url = optarg; break;
        case 's': subject = optarg; break;
        case 'p': http_port = atoi(optarg); break;
        case 'c': nchains = atoi(optarg); break;
        case 't': seconds = atof(optarg); break;
        case 'u': user_fmt = optarg; break;
        case 'w': password = optarg; break;
        case 'g':
            if (strcmp(optarg, "password") == 0)
                password_grants = true;
            else if (strcmp(optarg, "refresh") != 0)
                usage();
            break;
        case 'k': key = optarg; break;
        case 'N': count = atol(optarg); break;
        case 'H': hash = optarg; break;
        case 'W': {
            char *eq = strchr(optarg, '=');
            if (!eq || nwatch == MAX_WATCH) usage();
            *eq = 0;
            wname[nwatch] = optarg;
            wpid[nwatch++] = atol(eq + 1);
            break;
        }
        default: usage();
        }
    }
    if (sign) {
        if (!key || count < 1 || count > 1000000) usage();
        log_init("authbench", LOG_WARN);
        return sign_bench(key, count, hash);
    }
    if (nchains < 1 || nchains > MAX_CHAINS || seconds <= 0 || seconds > MAX_SECONDS) usage();
    if (use_http ? (http_port < 1 || http_port > 65535) : !nats_url) usage();
    log_init("authbench", LOG_WARN);
    hist = calloc(HIST_US + 1, sizeof *hist);
    if (!hist) return 1;
    if (!use_http) {
        if (bus_connect(&B, nats_url, "authbench") != 0) return 1;
        for (int i = 0; i < 100 && !bus_connected(B); i++) usleep(50000);
    }
    static chain chains[MAX_CHAINS];
    static pthread_t th[MAX_CHAINS];
    for (int i = 0; i < nchains; i++) {
        chain *c = &chains[i];
        c->idx = i;
        c->fd = -1;
        c->buf = malloc(HTTP_BUF);
        if (!c->buf) return 1;
        if (strstr(user_fmt, "%d"))
            snprintf(c->user, sizeof c->user, "%.*s%d%s", (int)(strstr(user_fmt, "%d") - user_fmt),
                     user_fmt, i, strstr(user_fmt, "%d") + 2);
        else
            snprintf(c->user, sizeof c->user, "%s", user_fmt);
        pthread_create(&th[i], NULL, worker, c);
    }
    for (int i = 0; i < 600 && atomic_load(&ready_count) < nchains; i++) usleep(100000);
    double c0[MAX_WATCH], c1[MAX_WATCH];
    for (int i = 0; i < nwatch; i++) c0[i] = proc_cpu_s(wpid[i]);
    double s0 = self_cpu_s(), t0 = now_s(), mb0 = machine_busy_s();
    atomic_store(&go, 1);
    while (now_s() < t0 + seconds) usleep(20000);
    atomic_store(&go, 2);
    double t1 = now_s(), s1 = self_cpu_s(), mb1 = machine_busy_s();
    for (int i = 0; i < nwatch; i++) c1[i] = proc_cpu_s(wpid[i]);
    long n = atomic_load(&refreshes);
    double el = t1 - t0;
    printf("%s chains=%d seconds=%.2f refreshes=%ld errors=%ld rps=%.0f p50_ms=%.2f "
           "p99_ms=%.2f",
           use_http ? "http" : "nats", nchains, el, n, atomic_load(&errors), (double)n / el,
           pct(n, 0.5), pct(n, 0.99));
    for (int i = 0; i < nwatch; i++) {
        double cpu = c0[i] >= 0 && c1[i] >= 0 ? c1[i] - c0[i] : 0;
        printf(" %s_cpu_pct=%.0f %s_us_per_refresh=%.1f", wname[i], 100 * cpu / el, wname[i],
               n ? cpu * 1e6 / (double)n : 0);
    }
    printf(" client_cpu_pct=%.0f machine_busy_pct=%.0f grant=%s\n", 100 * (s1 - s0) / el,
           100 * (mb1 - mb0) / el, password_grants ? "password" : "refresh");
    fflush(stdout);
    for (int i = 0; i < nchains; i++) pthread_join(th[i], NULL);
    if (B) bus_destroy(B, 1000);
    return 0;
}
