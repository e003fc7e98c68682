/* store.h - refresh tokens in Redis: issue, rotate (with reuse detection), revoke.
 *
 * A refresh token is 256 random bits, base64url (43 characters). Redis holds only its
 * SHA-256. Keys (prefix "sc:"; docs/AUTH.md):
 *   sc:rt:<sha256-hex>   hash {sub, fam, state=active|rotated, scope, iat[, rotated_at]}
 *                        TTL = refresh lifetime from its issue
 *   sc:rtfam:<family>    hash {sub, state=active|revoked, created}; TTL renewed on every
 *                        rotation, so it outlives every token of the family, but never
 *                        past created + the max lifetime (then the family is ended)
 *   sc:rtuser:<sub>      set of the user's family ids (for "log out everywhere"), same TTL
 * A token is usable only while its own state and its family's state are both "active".
 * Rotation is one Lua script, so two concurrent uses of one token cannot both succeed: the
 * second sees state=rotated, which counts as reuse and revokes the whole family.
 * All calls are thread-safe (rds serialises them). Errors are negative rds_err codes. */
#ifndef SC_AUTH_STORE_H
#define SC_AUTH_STORE_H

#include "rds.h"

enum {
    STORE_TOKEN_LEN = 43,  /* base64url of 32 bytes, no padding */
    STORE_FAMILY_LEN = 32, /* hex of 16 bytes */
    STORE_SCOPE_MAX = 4096,
};

typedef struct rtstore rtstore;

/* r is borrowed (must outlive the store). ttl: refresh-token lifetime in seconds, renewed
 * on every rotation; max_age: a family's absolute lifetime from its login (0: none). */
int rtstore_create(rtstore **out, rds *r, long ttl, long reuse_window, long max_age);
void rtstore_destroy(rtstore *s); /* accepts NULL */
int rtstore_up(const rtstore *s); /* 1 when Redis is believed reachable */

/* Fills buf (size > 2 * n) with the hex of n random bytes. 0 or -1. */
int rtstore_random_hex(char *buf, size_t n);

/* in[0..n) as lowercase hex into out (2n + 1 bytes, NUL-terminated). Pure. */
void rtstore_hex(const unsigned char *in, size_t n, char *out);
/* 1 when tok has the shape of a refresh token (43 base64url characters). Pure. */
int rtstore_token_shape(const char *tok);

/* Starts a family for sub with a first token. fam: a family id from rtstore_random_hex(16).
 * scope: the scope the family was granted ("" for the user's full permissions). On 0,
 * token holds the new refresh token. */
int rtstore_issue(rtstore *s, const char *sub, const char *fam, const char *scope,
                  char token[STORE_TOKEN_LEN + 1]);

enum rtstore_result {
    RT_OK = 0,      /* rotated: new token issued, info filled */
    RT_UNKNOWN = 1, /* no such token (never issued, or expired) */
    RT_REVOKED = 2, /* its family was revoked (info filled) */
    RT_REUSE = 3,   /* it had been rotated already: the family is now revoked (info filled) */
    RT_EXPIRED = 4, /* its family is older than the max lifetime: now ended (info filled) */
};

typedef struct rtstore_info {
    char sub[96];
    char fam[STORE_FAMILY_LEN + 1];
    char scope[STORE_SCOPE_MAX + 1];
} rtstore_info;

/* Rotates old: on RT_OK, new_token holds its successor in the same family. Returns an
 * rtstore_result (>= 0) or a negative rds_err. */
int rtstore_rotate(rtstore *s, const char *old, char new_token[STORE_TOKEN_LEN + 1],
                   rtstore_info *info);

/* What rtstore_revoke_token did. */
enum rtstore_revoke_result {
    RT_REVOKE_UNKNOWN = 0, /* no such token: nothing changed */
    RT_REVOKE_DONE = 1,  /* it was its family's active token: the family is revoked, info filled */
    RT_REVOKE_STALE = 2, /* rotated, or its family had ended: nothing changed */
};

/* Revokes the family of token when token is that family's active token. Returns an
 * rtstore_revoke_result (>= 0) or a negative rds_err. */
int rtstore_revoke_token(rtstore *s, const char *token, rtstore_info *info);
/* Revokes one family by id (idempotent). 0 or a negative rds_err. */
int rtstore_revoke_family(rtstore *s, const char *fam);
/* Revokes every family of sub. Returns how many were active, or a negative rds_err. */
int rtstore_revoke_user(rtstore *s, const char *sub);

/* Failed-login throttling, per name (kind 'u' user, 'c' client; the name is hashed into the
 * key, so unknown names count like known ones). blocked: seconds until name may try again
 * once it has max failures in the current window (0: allowed; max <= 0: off), or a
 * negative RDS_ code. failed: counts one failure; the window (seconds) starts at the
 * first. ok: a success clears the count; blocked sets *failures to 0 when there is none to
 * clear (1 when there are, or when it could not tell), so that a success need not call ok. */
long rtstore_login_blocked(rtstore *s, char kind, const char *name, long max, int *failures);
int rtstore_login_failed(rtstore *s, char kind, const char *name, long window);
int rtstore_login_ok(rtstore *s, char kind, const char *name);

#endif
