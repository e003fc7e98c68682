/* rds.c - one shared, mutex-guarded hiredis connection with lazy reconnect and backoff.
 *
 * Why blocking and not async: the callers (auth's NATS handlers, the edge's presence calls)
 * are already off any event loop, the commands are few and short, and a blocking context
 * with SO_RCVTIMEO/SO_SNDTIMEO gives every command a hard deadline in a few lines. */
#include "rds.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "log.h"

enum { BACKOFF_MIN_MS = 100, BACKOFF_MAX_MS = 5000, MAX_ARGS = 64, MAX_EVAL_ARGS = 4096 };

struct rds {
    pthread_mutex_t mu;
    redisContext *c; /* NULL while disconnected; guarded by mu */
    rds_url url;
    int timeout_ms;
    char name[64];
    long long next_try_ms; /* monotonic; no connect attempt before it */
    int backoff_ms;
    unsigned failures; /* consecutive failed connects, for log throttling */
    int ever_up;
    atomic_int up;
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- URL ---------------------------------------------------------------------------- */

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Copies src[0..n) into dst (size cap) decoding %XX. 0 or -1 (bad escape, too long, NUL). */
static int pct_decode(char *dst, size_t cap, const char *src, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int ch = (unsigned char)src[i];
        if (ch == '%') {
            int hi, lo;
            if (i + 2 >= n) return -1;
            hi = hexval((unsigned char)src[i + 1]);
            lo = hexval((unsigned char)src[i + 2]);
            if (hi < 0 || lo < 0) return -1;
            ch = hi * 16 + lo;
            if (ch == 0) return -1;
            i += 2;
        }
        if (o + 1 >= cap) return -1;
        dst[o++] = (char)ch;
    }
    dst[o] = '\0';
    return 0;
}

static int parse_uint(const char *s, size_t n, long max, long *out)
{
    long v = 0;
    if (n == 0 || n > 9) return -1;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i])) return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max) return -1;
    *out = v;
    return 0;
}

int rds_url_parse(const char *url, rds_url *out, char *err, size_t errlen)
{
    static const char scheme[] = "redis://";
    const char *p, *auth_end, *at, *host, *host_end, *port_s = NULL;
    long v;

    memset(out, 0, sizeof *out);
    out->port = 6379;
    if (!url) {
        snprintf(err, errlen, "empty URL");
        return -EINVAL;
    }
    if (strncmp(url, "rediss://", 9) == 0) {
        snprintf(err, errlen, "rediss:// (TLS) is not supported by this hiredis");
        return -EINVAL;
    }
    if (strncmp(url, scheme, sizeof scheme - 1) != 0) {
        snprintf(err, errlen, "must start with redis://");
        return -EINVAL;
    }
    p = url + sizeof scheme - 1;
    /* userinfo: the part before the last '@' of the URL, as nats.c splits its URLs, so a
     * password holding '/', '?' or '#' (base64 secrets do) works unencoded; cfg_mask_url
     * masks up to the same '@'. */
    at = strrchr(p, '@');
    auth_end = (at ? at + 1 : p) + strcspn(at ? at + 1 : p, "/?#");
    if (*auth_end == '?' || *auth_end == '#') {
        snprintf(err, errlen, "query strings and fragments are not supported");
        return -EINVAL;
    }
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon) {
            if (pct_decode(out->user, sizeof out->user, p, (size_t)(colon - p)) < 0 ||
                pct_decode(out->password, sizeof out->password, colon + 1,
                           (size_t)(at - colon - 1)) < 0) {
                snprintf(err, errlen, "bad user or password encoding");
                return -EINVAL;
            }
        } else if (pct_decode(out->password, sizeof out->password, p, (size_t)(at - p)) < 0) {
            snprintf(err, errlen, "bad password encoding");
            return -EINVAL;
        }
        host = at + 1;
    } else {
        host = p;
    }
    if (*host == '[') {
        const char *rb = memchr(host, ']', (size_t)(auth_end - host));
        if (!rb) {
            snprintf(err, errlen, "unterminated [IPv6] host");
            return -EINVAL;
        }
        host_end = rb + 1;
        if (host_end < auth_end) {
            if (*host_end != ':') {
                snprintf(err, errlen, "junk after [IPv6] host");
                return -EINVAL;
            }
            port_s = host_end + 1;
        }
        host++;
        host_end = rb;
    } else {
        const char *colon = memchr(host, ':', (size_t)(auth_end - host));
        host_end = colon ? colon : auth_end;
        if (colon) port_s = colon + 1;
    }
    if (host_end == host || (size_t)(host_end - host) >= sizeof out->host) {
        snprintf(err, errlen, "missing or too long host");
        return -EINVAL;
    }
    memcpy(out->host, host, (size_t)(host_end - host));
    out->host[host_end - host] = '\0';
    for (const char *q = out->host; *q; q++) {
        if (!isalnum((unsigned char)*q) && !strchr(".-_:", *q)) {
            snprintf(err, errlen, "bad character in host");
            return -EINVAL;
        }
    }
    if (port_s) {
        if (parse_uint(port_s, (size_t)(auth_end - port_s), 65535, &v) < 0 || v == 0) {
            snprintf(err, errlen, "bad port");
            return -EINVAL;
        }
        out->port = (int)v;
    }
    if (*auth_end == '/' && auth_end[1] != '\0') {
        if (parse_uint(auth_end + 1, strlen(auth_end + 1), 100000, &v) < 0) {
            snprintf(err, errlen, "bad database number");
            return -EINVAL;
        }
        out->db = (int)v;
    }
    return SC_OK;
}

/* ---- connection --------------------------------------------------------------------- */

/* Forgets a broken connection; logs the loss once (the outage, not every failed call). */
static void drop_locked(rds *r, const char *cmd, const char *why)
{
    if (r->c) {
        redisFree(r->c);
        r->c = NULL;
    }
    if (atomic_exchange(&r->up, 0))
        log_warn("redis connection lost", "host=%s port=%d cmd=%s err=\"%s\"", r->url.host,
                 r->url.port, cmd, why);
    /* The next call may reconnect at once; if that fails the backoff starts. */
    r->next_try_ms = 0;
    r->backoff_ms = BACKOFF_MIN_MS;
}

static void connect_failed_locked(rds *r, const char *why)
{
    r->failures++;
    /* First failure of an outage at warn, then about once a minute. */
    if (r->failures == 1 || r->failures % 12 == 0)
        log_warn("redis connect failed", "host=%s port=%d attempts=%u err=\"%s\"", r->url.host,
                 r->url.port, r->failures, why);
    else
        log_debug("redis connect failed", "host=%s port=%d attempts=%u err=\"%s\"", r->url.host,
                  r->url.port, r->failures, why);
    if (r->c) {
        redisFree(r->c);
        r->c = NULL;
    }
    atomic_store(&r->up, 0);
    r->next_try_ms = now_ms() + r->backoff_ms;
    r->backoff_ms = r->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff_ms * 2;
}

/* Runs a setup command on a fresh connection; 0 or -1 with why filled. */
static int setup_cmd(rds *r, int argc, const char **argv, char *why, size_t whylen)
{
    redisReply *rep = redisCommandArgv(r->c, argc, argv, NULL);
    if (!rep) {
        snprintf(why, whylen, "%s: %s", argv[0], r->c->errstr);
        return -1;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        /* Redis's messages (WRONGPASS, NOAUTH, ...) never echo the password. */
        snprintf(why, whylen, "%s: %.120s", argv[0], rep->str);
        freeReplyObject(rep);
        return -1;
    }
    freeReplyObject(rep);
    return 0;
}

static int connect_locked(rds *r)
{
    struct timeval tv = {r->timeout_ms / 1000, (r->timeout_ms % 1000) * 1000};
    char why[200];

    if (r->c) return SC_OK;
    if (now_ms() < r->next_try_ms) return -ENOTCONN;

    r->c = redisConnectWithTimeout(r->url.host, r->url.port, tv);
    if (!r->c) {
        connect_failed_locked(r, "out of memory");
        return -ENOMEM;
    }
    if (r->c->err) {
        snprintf(why, sizeof why, "%s", r->c->errstr);
        connect_failed_locked(r, why);
        return -ENOTCONN;
    }
    if (redisSetTimeout(r->c, tv) != REDIS_OK) {
        connect_failed_locked(r, "cannot set socket timeout");
        return -ENOTCONN;
    }
    (void)redisEnableKeepAlive(r->c);
    if (r->url.password[0]) {
        const char *av[3] = {"AUTH", r->url.user, r->url.password};
        int rc = r->url.user[0]
                     ? setup_cmd(r, 3, av, why, sizeof why)
                     : setup_cmd(r, 2, (const char *[]){"AUTH", r->url.password}, why, sizeof why);
        if (rc < 0) {
            connect_failed_locked(r, why);
            return -ENOTCONN;
        }
    }
    if (r->url.db != 0) {
        char db[16];
        snprintf(db, sizeof db, "%d", r->url.db);
        if (setup_cmd(r, 2, (const char *[]){"SELECT", db}, why, sizeof why) < 0) {
            connect_failed_locked(r, why);
            return -ENOTCONN;
        }
    }
    /* Also the probe that the server answers at all (a stopped server accepts TCP). An
     * error reply (an old server, ACL) is fine; an I/O error or timeout is not. */
    if (setup_cmd(r, 3, (const char *[]){"CLIENT", "SETNAME", r->name[0] ? r->name : "rds"}, why,
                  sizeof why) < 0 &&
        r->c->err) {
        connect_failed_locked(r, why);
        return -ENOTCONN;
    }
    log_info(r->ever_up ? "redis reconnected" : "redis connected", "host=%s port=%d db=%d",
             r->url.host, r->url.port, r->url.db);
    r->ever_up = 1;
    r->failures = 0;
    r->backoff_ms = BACKOFF_MIN_MS;
    r->next_try_ms = 0;
    atomic_store(&r->up, 1);
    return SC_OK;
}

rds_security rds_cfg_security;

const char *rds_auth_problem(const char *url, bool allow_open)
{
    rds_url u;
    char err[128];
    if (allow_open || !url || !url[0]) return NULL;
    if (rds_cfg_security.password && rds_cfg_security.password[0]) return NULL;
    if (rds_url_parse(url, &u, err, sizeof err) == 0 && u.password[0]) {
        explicit_bzero(&u, sizeof u);
        return NULL;
    }
    explicit_bzero(&u, sizeof u);
    return "REDIS_URL: no password (no :password@ in the URL, no REDIS_PASSWORD): refusing to "
           "start on an open Redis; set DEV_INSECURE_BUS=1 to allow it in development";
}

int rds_create(rds **out, const char *url, int timeout_ms, const char *name)
{
    char err[128];
    rds *r;

    *out = NULL;
    r = calloc(1, sizeof *r);
    if (!r) return -ENOMEM;
    if (rds_url_parse(url, &r->url, err, sizeof err) < 0) {
        log_error("bad redis url", "err=\"%s\"", err);
        free(r);
        return -EINVAL;
    }
    if (!r->url.password[0] && rds_cfg_security.password)
        snprintf(r->url.password, sizeof r->url.password, "%s", rds_cfg_security.password);
    if (timeout_ms <= 0) timeout_ms = 1000;
    r->timeout_ms = timeout_ms;
    if (name) snprintf(r->name, sizeof r->name, "%s", name);
    r->backoff_ms = BACKOFF_MIN_MS;
    atomic_init(&r->up, 0);
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_lock(&r->mu);
    (void)connect_locked(r);
    pthread_mutex_unlock(&r->mu);
    *out = r;
    return SC_OK;
}

void rds_destroy(rds *r)
{
    if (!r) return;
    if (r->c) redisFree(r->c);
    pthread_mutex_destroy(&r->mu);
    explicit_bzero(&r->url, sizeof r->url);
    free(r);
}

int rds_up(const rds *r) { return r && atomic_load(&((rds *)r)->up); }

/* Sends one command on the locked connection. Error replies are returned (not freed) when
 * keep_error is set, so rds_eval can look for NOSCRIPT. */
static int command_locked(rds *r, redisReply **reply, int argc, const char **argv,
                          const size_t *argvlen, int keep_error)
{
    redisReply *rep;
    int rc = connect_locked(r);

    if (rc < 0) return rc;
    rep = redisCommandArgv(r->c, argc, argv, argvlen);
    if (!rep) {
        int timed_out = r->c->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK);
        char why[128];
        snprintf(why, sizeof why, "%s", timed_out ? "timeout" : r->c->errstr);
        /* The stream is in an unknown state: drop it; reconnect at the next call. */
        drop_locked(r, argv[0], why);
        return timed_out ? -ETIMEDOUT : -ENOTCONN;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        if (keep_error) {
            *reply = rep;
            return SC_EREPLY;
        }
        log_warn("redis error reply", "cmd=%s err=\"%.160s\"", argv[0], rep->str);
        freeReplyObject(rep);
        return SC_EREPLY;
    }
    if (reply)
        *reply = rep;
    else
        freeReplyObject(rep);
    return SC_OK;
}

int rds_commandv(rds *r, redisReply **reply, int argc, const char **argv, const size_t *argvlen)
{
    int rc;

    if (reply) *reply = NULL;
    if (!r || argc <= 0 || !argv) return -EINVAL;
    pthread_mutex_lock(&r->mu);
    rc = command_locked(r, reply, argc, argv, argvlen, 0);
    pthread_mutex_unlock(&r->mu);
    return rc;
}

int rds_ping(rds *r)
{
    const char *av[1] = {"PING"};
    return rds_commandv(r, NULL, 1, av, NULL);
}

void rds_script_init(rds_script *s, const char *source)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    s->source = source;
    s->sha1[0] = '\0';
    if (EVP_Digest(source, strlen(source), md, &mdlen, EVP_sha1(), NULL) != 1 || mdlen != 20)
        return; /* empty sha: rds_eval then always sends EVAL */
    for (unsigned i = 0; i < mdlen; i++) snprintf(s->sha1 + 2 * i, 3, "%02x", md[i]);
}

int rds_eval(rds *r, const rds_script *s, redisReply **reply, int nkeys, const char **keys,
             int nargs, const char **args)
{
    const char *avs[MAX_ARGS], **av = avs; /* a batch (presence.c) takes more: malloc'd */
    char nk[16];
    redisReply *rep = NULL;
    int argc = 0, rc;

    if (reply) *reply = NULL;
    if (!r || !s || nkeys < 0 || nargs < 0 || nkeys + nargs + 3 > MAX_EVAL_ARGS) return -EINVAL;
    if (nkeys + nargs + 3 > MAX_ARGS && !(av = malloc(sizeof *av * (size_t)(nkeys + nargs + 3))))
        return -ENOMEM;
    snprintf(nk, sizeof nk, "%d", nkeys);
    av[argc++] = s->sha1[0] ? "EVALSHA" : "EVAL";
    av[argc++] = s->sha1[0] ? s->sha1 : s->source;
    av[argc++] = nk;
    for (int i = 0; i < nkeys; i++) av[argc++] = keys[i];
    for (int i = 0; i < nargs; i++) av[argc++] = args[i];

    pthread_mutex_lock(&r->mu);
    rc = command_locked(r, &rep, argc, av, NULL, 1);
    if (rc == SC_EREPLY && s->sha1[0] && strncmp(rep->str, "NOSCRIPT", 8) == 0) {
        freeReplyObject(rep);
        rep = NULL;
        av[0] = "EVAL";
        av[1] = s->source;
        rc = command_locked(r, &rep, argc, av, NULL, 1);
    }
    pthread_mutex_unlock(&r->mu);
    if (av != avs) free(av);
    if (rc == SC_EREPLY) {
        log_warn("redis script error", "err=\"%.160s\"", rep->str);
        freeReplyObject(rep);
        return SC_EREPLY;
    }
    if (rc < 0) return rc;
    if (reply)
        *reply = rep;
    else
        freeReplyObject(rep);
    return SC_OK;
}
