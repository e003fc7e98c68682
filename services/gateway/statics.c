/* statics.c - safe static files below one directory; see statics.h. */
#include "statics.h"

#include "form.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATICS_MAX_PATH 512

struct statics {
    int dirfd;
};

int statics_create(statics **out, const char *dir)
{
    statics *s = calloc(1, sizeof *s);
    if (!s) return -ENOMEM;
    s->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->dirfd < 0) {
        int e = errno;
        free(s);
        return -e;
    }
    *out = s;
    return 0;
}

void statics_destroy(statics *s)
{
    if (!s) return;
    close(s->dirfd);
    free(s);
}

int statics_rel_path(const char *raw_path, char *out, size_t outlen)
{
    size_t n = strlen(raw_path);
    if (n == 0 || raw_path[0] != '/' || n > STATICS_MAX_PATH || outlen < n + 11) return -1;
    long d = form_pct_decode(raw_path + 1, n - 1, 0, out);
    if (d < 0) return -1;
    size_t len = (size_t)d;
    if (len == 0 || out[len - 1] == '/') {
        memcpy(out + len, "index.html", 11);
        len += 10;
    }
    /* every segment: non-empty, not hidden (so neither "." nor ".."), no backslash */
    const char *seg = out;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && out[i] != '/') {
            if (out[i] == '\\') return -1;
            continue;
        }
        if (out + i == seg || seg[0] == '.') return -1;
        seg = out + i + 1;
    }
    return 0;
}

const char *statics_content_type(const char *name)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".htm", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".json", "application/json"},
        {".txt", "text/plain; charset=utf-8"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".jpg", "image/jpeg"},
        {".jpeg", "image/jpeg"},
        {".gif", "image/gif"},
        {".ico", "image/x-icon"},
        {".webp", "image/webp"},
        {".wasm", "application/wasm"},
        {".map", "application/json"},
    };
    const char *dot = strrchr(name, '.');
    const char *slash = strrchr(name, '/');
    if (dot && (!slash || dot > slash)) {
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            if (strcasecmp(dot, types[i].ext) == 0) return types[i].type;
    }
    return "application/octet-stream";
}

int statics_open(const statics *s, const char *raw_path, int *fd, uint64_t *size,
                 const char **ctype)
{
    char rel[STATICS_MAX_PATH + 16];
    struct stat st;
    if (statics_rel_path(raw_path, rel, sizeof rel) != 0) return -ENOENT;
    int cur = s->dirfd;
    char *comp = rel;
    for (;;) {
        char *slash = strchr(comp, '/');
        int last = slash == NULL;
        if (slash) *slash = '\0';
        int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | (last ? O_NONBLOCK : O_DIRECTORY);
        int next = openat(cur, comp, flags);
        int err = errno;
        if (cur != s->dirfd) close(cur);
        if (next < 0) return err == ELOOP || err == ENOTDIR ? -ENOENT : -err;
        if (last) {
            cur = next;
            break;
        }
        cur = next;
        comp = slash + 1;
    }
    if (fstat(cur, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > STATICS_MAX_FILE) {
        close(cur);
        return -ENOENT;
    }
    /* the file was opened non-blocking only to be safe from FIFOs; reads may block again */
    int fl = fcntl(cur, F_GETFL);
    if (fl >= 0) fcntl(cur, F_SETFL, fl & ~O_NONBLOCK);
    *fd = cur;
    *size = (uint64_t)st.st_size;
    *ctype = statics_content_type(comp); /* the last component */
    return 0;
}
