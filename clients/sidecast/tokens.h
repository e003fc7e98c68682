/* tokens.h - the sidecast client's token file: what `sidecast login` obtained, read by
 * every other command and rewritten when a refresh rotates the tokens.
 *
 * JSON {"user","access_token","refresh_token","expires_at","issued_at","ws_url","gateway"},
 * mode 0600 in a 0700 directory, replaced atomically (temporary file + rename) so a reader
 * never sees half a file and a crash never loses the old one. Prefix tok_. */
#ifndef SIDECAST_TOKENS_H
#define SIDECAST_TOKENS_H

#include <stddef.h>
#include <stdint.h>

#define TOK_ACCESS_MAX 8192
#define TOK_REFRESH_MAX 1024
#define TOK_URL_MAX 1024
#define TOK_USER_MAX 128
#define TOK_FILE_MAX 65536

typedef struct tok_set {
    char user[TOK_USER_MAX + 1];
    char access_token[TOK_ACCESS_MAX + 1];
    char refresh_token[TOK_REFRESH_MAX + 1];
    char ws_url[TOK_URL_MAX + 1];
    char gateway[TOK_URL_MAX + 1];
    int64_t expires_at; /* access token's exp, epoch seconds */
    int64_t issued_at;  /* when it was obtained, epoch seconds */
} tok_set;

/* The token file's path into out (cap bytes): env_file when not NULL/empty (the value of
 * $SIDECAST_TOKEN_FILE), else home/.config/sidecast/token.json. 0, -ENOENT (no home),
 * -ENAMETOOLONG. */
int tok_path(const char *env_file, const char *home, char *out, size_t cap);

/* Reads path into *t. 0; -ENOENT (never logged in); -EINVAL (not a token file); -errno. */
int tok_load(const char *path, tok_set *t);

/* Writes *t to path atomically with mode 0600, creating missing directories with 0700.
 * 0 or -errno. */
int tok_save(const char *path, const tok_set *t);

/* Fills *t from a token endpoint's 200 answer (JSON text); user and gateway are kept.
 * 0, or -EINVAL when a member is missing, of the wrong type or too long. */
int tok_from_grant(tok_set *t, const char *json, size_t len);

/* Wipes the secrets in *t. */
void tok_clear(tok_set *t);

#endif
