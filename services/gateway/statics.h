/* statics.h - the static demo page: files under GATEWAY_STATIC_DIR served for GET/HEAD.
 *
 * A request path maps to a file only through statics_rel_path() (decoded, no empty, dot or
 * hidden segments, no backslash or NUL) and is opened one component at a time below the
 * directory with O_NOFOLLOW, so neither ".." nor a symbolic link leads outside it. */
#ifndef GW_STATICS_H
#define GW_STATICS_H

#include <stddef.h>
#include <stdint.h>

#define STATICS_MAX_FILE (64ull * 1024 * 1024)

typedef struct statics statics;

/* Opens the directory. Returns 0 and *out, or a negative errno. */
int statics_create(statics **out, const char *dir);
void statics_destroy(statics *s); /* accepts NULL */

/* Maps a raw request path to a relative file path in out ("/" -> "index.html",
 * "/a/" -> "a/index.html"). Returns 0, or -1 when the path may not name a file. Pure. */
int statics_rel_path(const char *raw_path, char *out, size_t outlen);

/* Media type for a file name, by extension ("application/octet-stream" if unknown). */
const char *statics_content_type(const char *name);

/* Opens the file for a raw request path: 0 with *fd (caller owns it) and *size, or
 * -ENOENT (no such file, not a regular file, or a path that may not name one) or another
 * negative errno. */
int statics_open(const statics *s, const char *raw_path, int *fd, uint64_t *size,
                 const char **ctype);

#endif
