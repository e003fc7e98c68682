/* bench_int.h - what the files of `sidecast bench` share, and only they: bench.c (the command
 * line and its options), bench_child.c (a client process and its worker threads),
 * bench_nats.c (the NATS protocol spoken to nats-server's WebSocket listener), bench_tls.c
 * (wss://: the client side of TLS over the same non-blocking sockets), bench_pub.c (the NATS
 * publisher) and bench_parent.c (the parent: children, phases, result). The public interface
 * is bench.h.
 *
 * The options are filled once by bench.c and passed down as a const bench_opts *; after the
 * fork each child keeps its own copy in its bench_proc, which its worker threads read and
 * never write. A conn and its worker belong to one worker thread. */
#ifndef SC_CLI_BENCH_INT_H
#define SC_CLI_BENCH_INT_H

#include "bench.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "bus.h"

/* OpenSSL's types, as <openssl/ssl.h> names them (only bench_tls.c includes it). */
typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_session_st SSL_SESSION;

#define MAX_CONNS_PROC 19000 /* per process: the open-file limit is 20,000 */
#define MAX_CONNS 200000
#define MAX_PROCS 32
#define MAX_THREADS 16
#define MAX_TOPICS 256
#define MAX_SOURCES 64
#define MAX_PIDS 16
#define MAX_STEPS 16
#define RBUF_SIZE (64 * 1024) /* one read buffer per thread, reused by every connection */
/* wss://: ciphertext read per call, so that it and the unfinished record left from the last
 * read (at most 16 KiB + 256 + 5) decrypt to no more than RBUF_SIZE */
#define TLS_READ_MAX (RBUF_SIZE - 17 * 1024)
#define PART_MAX (1024 * 1024)            /* largest server frame (nats-server coalesces MSGs) */
#define FRAME_PAYLOAD_MAX (PART_MAX - 16) /* largest server frame payload accepted */
#define NATS_PART_MAX (72 * 1024)         /* an unfinished NATS message (max_payload 64 KiB) */
#define HEAD_MAX 4096
#define TOKEN_MAX 4096
#define TOPIC_MAX 100
#define CLOSE_TIMEOUT_S 5.0
#define MAX_SECONDS 3600
#define ERR_PRINT_MAX 3
#define HIST_FINE 10000  /* latency: 10 µs buckets up to 100 ms ... */
#define HIST_COARSE 9900 /* ... then 1 ms buckets up to 10 s, then one overflow */
#define HIST_LEN (HIST_FINE + HIST_COARSE + 1)
/* Two histograms in one array: latency to the client's read, then (fan-out) latency to the
 * kernel's receipt of the frame in the client's socket (SO_TIMESTAMPNS). */
#define HIST_ALL (2 * HIST_LEN)
#define PUB_SIZE_MIN 48
#define PUB_SIZE_MAX 8192
#define PUB_RATE_MAX 1000000
#define PUB_TOTAL_MAX 20000000

enum target { T_SIDECAST, T_NATS, T_WS };
enum mode { M_CONNECT, M_IDLE, M_FANOUT };

/* ---- time and bytes ------------------------------------------------------------------------- */

static inline int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline double ns_s(int64_t ns) { return (double)ns / 1e9; }

static inline void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static inline bool has_prefix(const uint8_t *p, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    return n >= l && memcmp(p, lit, l) == 0;
}

/* ---- options (bench.c) ---------------------------------------------------------------------- */

/* One run's command line, checked. tokens (and the strings they point to) are cli_bench's;
 * nats and hist_file point into argv. Filled once, then passed down read-only: after the
 * fork each child keeps its own copy in its bench_proc. */
typedef struct bench_opts {
    int mode, target;
    char host[64];
    int port;
    char path[128];
    struct sockaddr_in addr; /* host:port, loopback */
    char **tokens;
    long ntokens;
    long conns, procs, threads, concurrency, ntopics, rate, size;
    double seconds, setup_timeout, drain;
    char topic[TOPIC_MAX + 1];
    char prefix[32]; /* NATS subject prefix of a topic ("events.") */
    const char *nats;
    long pids[MAX_PIDS];
    int npids;
    struct in_addr sources[MAX_SOURCES];
    int nsources;
    bool json, quiet, fast_close, deflate;
    bool tls, resume;   /* wss:// URL; --resume: reuse a TLS session (see bench_tls.c) */
    const char *cacert; /* --cacert FILE (argv): the CA wss:// servers are verified with */
    const char *hist_file;
    long steps[MAX_STEPS]; /* idle: connection counts to stop at, ascending; the last is conns */
    int nsteps;
} bench_opts;

/* Topic k of o's ntopics into out: TOPIC, or TOPIC.k when there are several. */
void bench_topic_name(const bench_opts *o, int k, char *out, size_t cap);

/* ---- child -> parent records (bench_child.c writes, bench_parent.c reads) ------------------- */

typedef struct crec { /* child -> parent */
    uint32_t type;    /* R_PROGRESS, R_READY, R_FINAL (HIST_ALL counts follow) */
    int32_t conns, settled, ready, failed, lost, unclean, complete;
    uint64_t events, gaps, disorder, other, error_frames, bad_frames, send_errors, pings;
    uint64_t lat_n, min_ev, max_ev, deflate_conns, compressed;
    int64_t lat_max, t_first_open, t_last_ready, t_first_event, t_last_event;
    double cpu_s;
    uint64_t lat_kn;                /* samples in the socket-receipt histogram */
    uint64_t tls_full, tls_resumed; /* wss://: ready connections by handshake kind */
} crec;
enum { R_PROGRESS = 1, R_READY = 2, R_FINAL = 3 };

/* One child process, fork()ed by the parent before any thread exists: n connections
 * numbered from first; commands on cmd_fd ('G': open them, or the next idle step's; 'S':
 * close them), records to out_fd. Returns its exit code. */
int bench_child_main(const bench_opts *o, int index, long first, long n, int cmd_fd, int out_fd);

/* ---- the client: one child process (bench_child.c, bench_nats.c) ---------------------------- */

enum cstate {
    C_IDLE,
    C_CONNECTING,
    C_TLS, /* wss://: TLS handshake under way */
    C_UPGRADE,
    C_WELCOME,     /* sidecast, ws: waiting for "welcome"; nats: for INFO */
    C_SUBSCRIBING, /* waiting for "subscribed" (nats: the PONG after SUB) */
    C_READY,
    C_CLOSING,
    C_DONE,
};

typedef struct conn {
    int fd;
    uint8_t state, topic;
    bool settled, failed, lost, clean, deflate; /* deflate: permessage-deflate agreed */
    bool tls_up;                                /* wss://: handshake done */
    uint32_t plen, pcap, nlen, ncap;
    uint8_t *part; /* carried-over bytes of an unfinished frame or head */
    uint8_t *nbuf; /* nats: carried-over bytes of an unfinished protocol line or message */
    uint32_t events, gaps, disorder;
    uint64_t last_i, last_seq;
    long gindex; /* global connection number: token and source address */
    int64_t t_open;
    SSL *ssl; /* wss:// only (NULL: plain), with memory BIOs (bench_tls.c) */
} conn;

enum phase { PH_WAIT, PH_SETUP, PH_MEASURE, PH_CLOSE, PH_STOP };

/* The client frames every connection sends the same, built once per process, masked. */
typedef struct bench_frames {
    uint8_t sub_frame[MAX_TOPICS][TOPIC_MAX * 2 + 96]; /* subscribe (nats: CONNECT+SUB+PING) */
    uint16_t sub_len[MAX_TOPICS];
    char topic_field[MAX_TOPICS][TOPIC_MAX + 24]; /* "topic":"<topic>" */
    uint8_t close_frame[8];
    size_t close_len;
} bench_frames;

struct worker;

/* One child process: its options, frames, connections and threads, and what they share (the
 * phase, set by the main thread, and counts). */
typedef struct bench_proc {
    bench_opts o;
    bench_frames fr;
    conn *conns;  /* n, split among the threads */
    SSL_CTX *tls; /* wss://: the process's client context (bench_tls_ctx), else NULL */
    long n;
    struct worker *ws; /* nthreads, started of them running */
    int nthreads, started;
    int64_t hard_deadline;
    _Atomic int phase; /* enum phase */
    _Atomic int settled, failed, workers_closed;
} bench_proc;

typedef struct worker {
    bench_proc *p;
    int epfd;
    conn *conns;
    int n, next, inflight, max_inflight;
    _Atomic int limit; /* connections to open by now (idle steps) */
    bool close_started, closed_reported;
    int open_after_close;
    uint8_t *rbuf, *nscratch;
    uint8_t *cbuf;     /* wss://: TLS_READ_MAX bytes of ciphertext read */
    SSL_SESSION *sess; /* --resume: the session of this thread's first connection */
    bool resume_off;   /* --resume: the first connection gave no session to reuse */
    uint64_t tls_full, tls_resumed;
    uint32_t rng;
    uint64_t *hist; /* HIST_ALL */
    uint64_t lat_kn;
    int64_t t_sock;   /* the last read's kernel receipt time (monotonic ns), 0: none */
    int64_t real_off; /* CLOCK_REALTIME - CLOCK_MONOTONIC, ns */
    _Atomic uint64_t events;
    _Atomic int ready;
    uint64_t other, error_frames, bad_frames, send_errors, pings, lat_n, compressed;
    int64_t lat_max, t_first_open, t_last_ready, t_first_event, t_last_event;
    int printed;
    /* permessage-deflate (--deflate): one inflate stream per thread, reset per message (the
     * server takes no context over), and its output buffer */
    z_stream zi;
    bool zi_ready;
    uint8_t *ibuf;
    size_t icap;
    pthread_t th;
} worker;

/* bench_child.c, for bench_nats.c: a connection's life, on its worker's thread. */

/* Ends c: failed (or lost, once it was ready), why on stderr for the first few. */
void bench_conn_fail(worker *w, conn *c, const char *why);
/* Sends one masked client frame of len (at most 240) bytes: 0, or -1 (send_errors). */
int bench_send_frame(worker *w, conn *c, uint8_t op, const void *payload, size_t len);
/* Sends c's pre-built subscribe frame, then waits for its answer; fails c when it cannot. */
void bench_send_subscribe(worker *w, conn *c);
/* c is ready (welcome, subscribed, PONG). */
void bench_become_ready(worker *w, conn *c);
/* A delivered event's data {"t":T,"i":I,...} at p: latency, loss and order. */
void bench_on_data(worker *w, conn *c, const uint8_t *p, size_t n, int64_t t_read);

/* ---- nats-server's WebSocket listener (bench_nats.c) ---------------------------------------- */

/* One operation of the NATS server protocol. */
typedef enum bench_nats_kind {
    BN_MSG,  /* data, len: the message's payload */
    BN_INFO, /* data, len: the line, without its CRLF (so for the rest) */
    BN_PING,
    BN_PONG,
    BN_ERR,   /* -ERR */
    BN_OTHER, /* +OK and anything else: ignored */
} bench_nats_kind;

typedef struct bench_nats_op {
    bench_nats_kind kind;
    const uint8_t *data; /* points into the input */
    size_t len;
} bench_nats_op;

/* Pure: the first operation in p[0..n). Returns its length (line and payload with their
 * CRLFs, > 0) with *op; SC_EINCOMPLETE when not all of it is there (call again with the same
 * bytes and more); SC_ETOOLARGE for a MSG whose announced payload is over NATS_PART_MAX - 512
 * (known from its line alone). Nothing is kept between calls. */
int bench_nats_next(const uint8_t *p, size_t n, bench_nats_op *op);

/* The payload of one server frame of c: a piece of the NATS protocol stream, acted on (data,
 * handshake, PING); an operation cut across frames is carried over in c->nbuf (bounded by
 * NATS_PART_MAX). */
void bench_nats_payload(worker *w, conn *c, const uint8_t *p, size_t n, int64_t t_read);

/* The text of the subscribe frame for topic (CONNECT, SUB prefix+topic, PING) into out:
 * snprintf's result. */
int bench_nats_subscribe_text(char *out, size_t cap, const char *prefix, const char *topic);

/* ---- wss:// (bench_tls.c) ------------------------------------------------------------------- */

/* Return codes of bench_tls_input besides a plaintext length. */
enum { BT_FAIL = -1, BT_CLOSED = -2 };

/* The client context of a wss:// run: TLS 1.2 or 1.3, ALPN http/1.1, the server's chain
 * verified against o->cacert and its certificate checked for o->host (an IP address: its
 * subjectAltName). There is no way to turn verification off. NULL, and why on stderr. */
SSL_CTX *bench_tls_ctx(const bench_opts *o);
/* After c's TCP connect: an SSL for c (memory BIOs, w->sess offered when --resume has one),
 * its ClientHello written to c->fd. 0, or BT_FAIL with why. */
int bench_tls_start(worker *w, conn *c, char *why, size_t whylen);
/* Ciphertext in[0, n) read from c->fd: the handshake moved on (c->tls_up once it is done)
 * and whatever it completes decrypted into out (at most cap bytes; cap must hold all of it:
 * n + one unfinished record, see TLS_READ_MAX). Returns the plaintext length (>= 0),
 * BT_CLOSED (the server's close_notify) or BT_FAIL with why. Anything TLS itself has to
 * send is written to c->fd on the way. */
long bench_tls_input(worker *w, conn *c, const uint8_t *in, size_t n, uint8_t *out, size_t cap,
                     char *why, size_t whylen);
/* Encrypts p[0, n) and writes the records to c->fd whole: 0, or -1. */
int bench_tls_write(conn *c, const void *p, size_t n);
/* c became ready over TLS: counts a full or resumed handshake; with --resume and no session
 * yet, keeps c's (a TLS 1.3 ticket, read by now) in w->sess. */
void bench_tls_ready(worker *w, conn *c);
/* Frees c's SSL (no close_notify: the socket is closed with close(2)). NULL ssl ok. */
void bench_tls_free(conn *c);
/* Frees what a worker thread kept for TLS (its session, its ciphertext buffer). */
void bench_tls_worker_free(worker *w);
/* NULL ok. */
void bench_tls_ctx_free(SSL_CTX *ctx);

/* ---- the publisher (bench_pub.c) ------------------------------------------------------------ */

typedef struct pubstate {
    const bench_opts *o;
    bus *b;
    long total; /* messages to send */
    _Atomic long sent, errors;
    long per_topic[MAX_TOPICS];
    _Atomic bool done;
    double took_s, synced_s;
    bool synced;
} pubstate;

/* Connects p->b to p->o->nats, waiting up to 5 s: 0, or -1 (said on stderr when the
 * connection does not come up). */
int bench_pub_connect(pubstate *p);
/* Publishes p->total events at p->o->rate (each {"t":NOW_NS,"i":COUNTER,"pad":"x..."} of
 * o->size bytes, topics in turn), then waits until NATS has read them all, and sets done. A
 * pthread start routine (arg: the pubstate), also called directly; returns NULL. */
void *bench_pub_run(void *arg);

/* ---- the parent (bench_parent.c) ------------------------------------------------------------ */

/* Forks the children, drives the phases, runs the publisher (fanout), prints the result.
 * Returns the exit code: 0 complete, 3 not, 1 failure. */
int bench_run_parent(const bench_opts *o);

#endif
