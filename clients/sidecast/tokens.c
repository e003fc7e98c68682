/* tokens.c - the token file: load, atomic save, fill from a token endpoint's answer. */
#include "tokens.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "net.h"

int tok_path(const char *env_file, const char *home, char *out, size_t cap)
{
    int n;
    if (env_file && *env_file)
        n = snprintf(out, cap, "%s", env_file);
    else if (home && *home)
        n = snprintf(out, cap, "%s/.config/sidecast/token.json", home);
    else
        return -ENOENT;
    return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

static int copy_str(json_t *o, const char *key, char *dst, size_t cap, int required)
{
    json_t *v = json_object_get(o, key);
    if (!v) {
        if (required) return -EINVAL;
        dst[0] = '\0';
        return 0;
    }
    if (!json_is_string(v) || json_string_length(v) >= cap ||
        strlen(json_string_value(v)) != json_string_length(v))
        return -EINVAL;
    memcpy(dst, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

int tok_load(const char *path, tok_set *t)
{
    memset(t, 0, sizeof *t);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return -errno;
    char *buf = malloc(TOK_FILE_MAX + 1);
    int rc = -EINVAL;
    json_t *o = NULL;
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fd, buf + len, TOK_FILE_MAX + 1 - len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            rc = -errno;
            goto out;
        }
        if (r == 0) break;
        len += (size_t)r;
        if (len > TOK_FILE_MAX) goto out;
    }
    o = json_loadb(buf, len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(o)) goto out;
    json_t *exp = json_object_get(o, "expires_at"), *iat = json_object_get(o, "issued_at");
    if (!json_is_integer(exp)) goto out;
    t->expires_at = json_integer_value(exp);
    t->issued_at = json_is_integer(iat) ? json_integer_value(iat) : 0;
    if (copy_str(o, "user", t->user, sizeof t->user, 0) < 0 ||
        copy_str(o, "access_token", t->access_token, sizeof t->access_token, 1) < 0 ||
        copy_str(o, "refresh_token", t->refresh_token, sizeof t->refresh_token, 0) < 0 ||
        copy_str(o, "ws_url", t->ws_url, sizeof t->ws_url, 0) < 0 ||
        copy_str(o, "gateway", t->gateway, sizeof t->gateway, 0) < 0)
        goto out;
    rc = 0;
out:
    if (rc < 0) tok_clear(t);
    json_decref(o);
    explicit_bzero(buf, len < TOK_FILE_MAX + 1 ? len : TOK_FILE_MAX + 1);
    free(buf);
    close(fd);
    return rc;
}

/* mkdir -p of path's directory, 0700 for what is created. */
static int make_dirs(const char *path)
{
    char dir[4096];
    if (strlen(path) >= sizeof dir) return -ENAMETOOLONG;
    strcpy(dir, path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) return 0;
    *slash = '\0';
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(dir, 0700) < 0 && errno != EEXIST) return -errno;
        *p = '/';
    }
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) return -errno;
    return 0;
}

int tok_save(const char *path, const tok_set *t)
{
    int rc = make_dirs(path);
    if (rc < 0) return rc;
    json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:s}", "user", t->user, "access_token",
                          t->access_token, "refresh_token", t->refresh_token, "expires_at",
                          (json_int_t)t->expires_at, "issued_at", (json_int_t)t->issued_at,
                          "ws_url", t->ws_url, "gateway", t->gateway);
    if (!o) return -ENOMEM;
    char *text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!text) return -ENOMEM;
    size_t len = strlen(text);
    char tmp[4200];
    unsigned char rnd[6];
    if (net_random(rnd, sizeof rnd) < 0) memset(rnd, 0, sizeof rnd);
    if (snprintf(tmp, sizeof tmp, "%s.tmp-%d-%02x%02x%02x", path, (int)getpid(), rnd[0], rnd[1],
                 rnd[2]) >= (int)sizeof tmp) {
        rc = -ENAMETOOLONG;
        goto out;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    rc = 0;
    if (fchmod(fd, 0600) < 0) rc = -errno; /* whatever the umask said */
    for (size_t off = 0; rc == 0 && off < len;) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0)
            rc = -errno;
        else
            off += (size_t)w;
    }
    if (rc == 0 && write(fd, "\n", 1) != 1) rc = -EIO;
    if (rc == 0 && fsync(fd) < 0) rc = -errno;
    if (close(fd) < 0 && rc == 0) rc = -errno;
    if (rc == 0 && rename(tmp, path) < 0) rc = -errno;
    if (rc < 0) unlink(tmp);
out:
    explicit_bzero(text, len);
    free(text);
    return rc;
}

int tok_from_grant(tok_set *t, const char *json, size_t len)
{
    json_t *o = json_loadb(json, len, 0, NULL);
    int rc = -EINVAL;
    json_t *ei = json_object_get(o, "expires_in");
    if (!json_is_object(o) || !json_is_integer(ei) || json_integer_value(ei) <= 0) goto out;
    tok_set n = *t;
    if (copy_str(o, "access_token", n.access_token, sizeof n.access_token, 1) < 0 ||
        copy_str(o, "refresh_token", n.refresh_token, sizeof n.refresh_token, 0) < 0 ||
        copy_str(o, "ws_url", n.ws_url, sizeof n.ws_url, 0) < 0 || n.access_token[0] == '\0') {
        explicit_bzero(&n, sizeof n);
        goto out;
    }
    if (n.refresh_token[0] == '\0') /* no rotation in this answer: keep the old one */
        memcpy(n.refresh_token, t->refresh_token, sizeof n.refresh_token);
    if (n.ws_url[0] == '\0') memcpy(n.ws_url, t->ws_url, sizeof n.ws_url);
    n.issued_at = net_wall_s();
    n.expires_at = n.issued_at + json_integer_value(ei);
    *t = n;
    explicit_bzero(&n, sizeof n);
    rc = 0;
out:
    json_decref(o);
    return rc;
}

void tok_clear(tok_set *t) { explicit_bzero(t, sizeof *t); }
