/* rds.h - the one Redis wrapper (hiredis). Status codes are translated here: callers see 0 or
 * a negative code from enum rds_err, never a hiredis error.
 *
 * One blocking connection per rds object, shared by every thread through a mutex: a command
 * holds the mutex for at most the command timeout. A failed or timed-out connection is
 * dropped; the next command (or rds_ping) after a backoff delay (100 ms doubling to 5 s)
 * reconnects. While the backoff runs, commands fail at once with -ENOTCONN instead of
 * waiting, so a dead Redis never stalls callers for long. */
#ifndef SC_RDS_H
#define SC_RDS_H

#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>

#include "err.h"

/* Failures: -ENOTCONN (connect failed, I/O error, or the backoff is running), -ETIMEDOUT
 * (connect or command deadline passed; the connection is dropped), -EINVAL (bad URL or
 * argument), -ENOMEM, SC_EREPLY (Redis answered with an error reply, logged), -EIO (any
 * other failure, logged). */

/* A parsed REDIS_URL: redis://[[user]:password@]host[:port][/db]. */
typedef struct rds_url {
    char host[256];
    int port;           /* default 6379 */
    int db;             /* default 0 */
    char user[128];     /* empty: none (AUTH password only) */
    char password[256]; /* empty: no AUTH; %XX escapes decoded */
} rds_url;

/* Parses url into *out. Pure. Returns 0, or -EINVAL with a reason in err (never
 * containing the password). "rediss://" (TLS) is rejected: hiredis 0.14 has no TLS. */
int rds_url_parse(const char *url, rds_url *out, char *err, size_t errlen);

typedef struct rds rds;

/* The Redis password for a URL without one, filled through RDS_CFG_OPTIONS (cfg.h):
 *   REDIS_PASSWORD   used by rds_create when REDIS_URL carries no password (the URL's wins) */
typedef struct rds_security {
    char *password;
} rds_security;
extern rds_security rds_cfg_security;
#define RDS_CFG_OPTIONS                                                                            \
    {                                                                                              \
        "REDIS_PASSWORD", CFG_STR, "", "Redis password (or :password@ in REDIS_URL, which wins)",  \
            CFG_SECRET, 0, 0, &rds_cfg_security.password                                           \
    }

/* Why the process must not start on url: it carries no password and REDIS_PASSWORD is
 * empty, and allow_open (DEV_INSECURE_BUS) is false. NULL when it may (or url is empty: no
 * Redis), a static message otherwise. Pure (reads rds_cfg_security). */
const char *rds_auth_problem(const char *url, bool allow_open);

/* Creates the client and tries a first connection. An unreachable server is not an error
 * (the client reconnects later; see rds_up). timeout_ms bounds connect and every command.
 * name: shown in CLIENT LIST (CLIENT SETNAME), may be NULL. Returns 0 and *out, or
 * -EINVAL (bad URL, logged) / -ENOMEM. */
int rds_create(rds **out, const char *url, int timeout_ms, const char *name);
/* Closes and frees; accepts NULL. No command may be running. */
void rds_destroy(rds *r);

/* 1 when the last connect/command succeeded (the connection is believed up), else 0.
 * Lock-free; for /readyz and metrics. */
int rds_up(const rds *r);
/* Sends PING (reconnecting first if the backoff allows): 0 or a negative rds_err. */
int rds_ping(rds *r);

/* Runs one command given as argc strings (binary-safe lengths in argvlen; argvlen may be NULL
 * for NUL-terminated strings). On 0, *reply is the reply (never an error reply); the caller
 * frees it with freeReplyObject(). reply may be NULL to discard the reply. */
int rds_commandv(rds *r, redisReply **reply, int argc, const char **argv, const size_t *argvlen);

/* A Lua script run with EVALSHA, falling back to EVAL (which loads it) on NOSCRIPT. */
typedef struct rds_script {
    const char *source;
    char sha1[41]; /* filled by rds_script_init */
} rds_script;
/* Computes the SHA-1 of source (kept by pointer, must outlive the script). */
void rds_script_init(rds_script *s, const char *source);
/* Runs the script with nkeys keys followed by nargs arguments (NUL-terminated strings; at
 * most 4093 together, -EINVAL beyond). Reply ownership as for rds_commandv. */
int rds_eval(rds *r, const rds_script *s, redisReply **reply, int nkeys, const char **keys,
             int nargs, const char **args);

#endif
