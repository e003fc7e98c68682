/* users.h - the AUTH_USERS file: users and service clients, their crypt(3) password hashes
 * and topic permissions; password checks; permission patterns and scope narrowing.
 *
 * File format (docs/AUTH.md), one entry per line, fields separated by blanks:
 *
 *     user   NAME HASH [sub=PATTERN,...] [pub=PATTERN,...]
 *     client NAME HASH [sub=PATTERN,...] [pub=PATTERN,...]
 *
 * Blank lines and lines whose first non-blank character is '#' are ignored. NAME is 1..64
 * bytes of [A-Za-z0-9_-] (it becomes the token's sub and the NATS token of users.<sub>),
 * unique across users and clients. HASH is a crypt(3) hash of a current scheme ($6$
 * sha512crypt from `openssl passwd -6`, $y$ yescrypt, $2b$ bcrypt, ...), or "!" for a
 * locked entry. PATTERNs are topics with NATS wildcards ("*" one token, ">" the rest).
 *
 * The parser does no I/O; everything here but users_load() is pure and thread-safe on a
 * loaded (immutable) users table. */
#ifndef SC_AUTH_USERS_H
#define SC_AUTH_USERS_H

#include <errno.h>
#include <stddef.h>

#include "err.h"

enum users_kind { USERS_USER = 1, USERS_CLIENT = 2 };

enum {
    USERS_NAME_MAX = 64,
    USERS_PATTERNS_MAX = 64, /* per list */
    USERS_LINE_MAX = 8192,
    USERS_FILE_MAX = 4 << 20, /* bytes */
    USERS_SECRET_MAX = 1024,  /* longest password / client secret checked */
    USERS_SCOPE_MAX = 4096,   /* longest scope parameter */
};

/* Failures: -EINVAL (bad file or scope: the reason in err), -ENOMEM, -EIO (cannot read the
 * file). */

/* A set of topic permissions. Owns its strings (users_perms_clear frees them). */
typedef struct users_perms {
    char **sub;
    size_t nsub;
    char **pub;
    size_t npub;
} users_perms;

typedef struct users_entry {
    enum users_kind kind;
    char name[USERS_NAME_MAX + 1];
    char *hash; /* crypt(3) string, or "!" (locked) */
    users_perms perms;
    char **scopes; /* API scopes (scope=): the token's "scope" claim, e.g. sidecast.api */
    size_t nscopes;
    unsigned line; /* line number in the file, for messages */
} users_entry;

typedef struct users users;

/* Parses text (len bytes; need not be NUL-terminated). fname is used in messages only.
 * Returns 0 and *out (free with users_destroy), or -EINVAL with "FILE:LINE: reason" in
 * err, or -ENOMEM. Every hash is checked by hashing a probe with it, so a file of
 * expensive hashes (bcrypt) takes a moment to load. */
int users_parse(users **out, const char *text, size_t len, const char *fname, char *err,
                size_t errlen);
/* Reads the file at path (at most USERS_FILE_MAX bytes) and parses it. */
int users_load(users **out, const char *path, char *err, size_t errlen);
void users_destroy(users *u); /* accepts NULL */

size_t users_count(const users *u);
/* The entry named name of that kind, or NULL. The entry is owned by u. */
const users_entry *users_find(const users *u, enum users_kind kind, const char *name);

/* Checks secret against the entry's hash, in time that does not depend on whether name
 * exists or is locked: an unknown name is checked against a stand-in hash of the same
 * scheme and cost. Returns 1 and *out (may be NULL) on a match, 0 on any mismatch (unknown,
 * locked, wrong secret, secret too long), -ENOMEM on allocation failure. */
int users_verify(const users *u, enum users_kind kind, const char *name, const char *secret,
                 const users_entry **out);

/* 1 when name is a valid entry name: 1..64 bytes of [A-Za-z0-9_-]. */
int users_name_valid(const char *name);
/* 1 when p is a valid permission pattern: 1..128 bytes, '.'-separated tokens, each of
 * [A-Za-z0-9_-]+ or "*", or ">" as the last token. */
int users_pattern_valid(const char *p);
/* 1 when every topic matched by req is also matched by granted (both valid patterns). */
int users_pattern_covers(const char *granted, const char *req);

/* Deep copy of src into *dst. 0 or -ENOMEM (dst then empty). */
int users_perms_copy(users_perms *dst, const users_perms *src);
void users_perms_clear(users_perms *p); /* frees and zeroes; accepts a zeroed struct */

/* Narrows base to an OAuth scope: space-separated tokens "sub:PATTERN" / "pub:PATTERN",
 * each of which must be covered by a pattern of the same kind in base. *out gets exactly
 * the requested patterns (duplicates dropped). A NULL or empty scope copies base.
 * Returns 0, -EINVAL (reason in err, for an invalid_scope answer) or -ENOMEM. */
int users_perms_narrow(const users_perms *base, const char *scope, users_perms *out, char *err,
                       size_t errlen);
/* The API scopes a token of e carries, as its "scope" claim (space-separated), into buf:
 * every scope= of e when requested is NULL; else those of e named by the request's items
 * without a "sub:"/"pub:" prefix. Returns 0 (buf may be empty), or -EINVAL (a requested
 * scope e does not have, or buf too small: the reason in err). Pure. */
int users_api_scope(const users_entry *e, const char *requested, char *buf, size_t buflen,
                    char *err, size_t errlen);
/* A scope string without its API scope items (those without ':'), for users_perms_narrow:
 * into buf, which must hold strlen(scope) + 1 bytes. Pure. */
void users_perms_items(const char *scope, char *buf);
/* Writes perms as a scope string ("sub:a sub:b pub:c") into buf. 0, or -1 if too small. */
int users_perms_scope(const users_perms *p, char *buf, size_t buflen);

#endif
