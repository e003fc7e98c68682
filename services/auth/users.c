/* users.c - parser of the AUTH_USERS file, password checks and permission patterns. */
#include "users.h"

#include "metrics.h"

#include <crypt.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

struct users {
    users_entry *e; /* sorted by name */
    size_t n;
    const char *dummy[3]; /* per kind: a hash of the scheme and cost used for unknown names */
};

/* A valid sha512crypt hash (of a random string nobody knows), for a file without entries. */
static const char fallback_hash[] =
    "$6$h9FqSupeSvx8MnAv$gXSej1M/.7mPNB9S5CroDTc9wA6u0XBRG8oi/.574M4wZ6EZMPZnTei8LUPuPlRqHXP/"
    "fA6ZtaK3HoqtxJENX/";

/* ---- patterns ----------------------------------------------------------------------- */

static int name_char(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

int users_name_valid(const char *name)
{
    size_t n = 0;
    if (!name) return 0;
    for (; name[n]; n++)
        if (!name_char((unsigned char)name[n]) || n >= USERS_NAME_MAX) return 0;
    return n > 0;
}

int users_pattern_valid(const char *p)
{
    size_t len, i = 0;

    if (!p) return 0;
    len = strlen(p);
    if (len == 0 || len > 128) return 0;
    while (i < len) {
        size_t start = i;
        while (i < len && p[i] != '.') i++;
        size_t tlen = i - start;
        if (tlen == 0) return 0; /* empty token: leading, trailing or double dot */
        if (tlen == 1 && p[start] == '>') {
            if (i != len) return 0; /* ">" only as the last token */
        } else if (!(tlen == 1 && p[start] == '*')) {
            for (size_t k = start; k < i; k++)
                if (!name_char((unsigned char)p[k])) return 0;
        }
        if (i < len) {
            i++;
            if (i == len) return 0; /* trailing dot */
        }
    }
    return 1;
}

/* Next '.'-separated token of *s: sets tok/tlen and advances; 0 when none is left. */
static int next_tok(const char **s, const char **tok, size_t *tlen)
{
    const char *p = *s;
    if (!p || !*p) return 0;
    const char *dot = strchr(p, '.');
    *tok = p;
    *tlen = dot ? (size_t)(dot - p) : strlen(p);
    *s = dot ? dot + 1 : p + *tlen;
    return 1;
}

int users_pattern_covers(const char *granted, const char *req)
{
    const char *g = granted, *r = req, *gt, *rt;
    size_t gl, rl;

    for (;;) {
        if (!next_tok(&g, &gt, &gl)) return !next_tok(&r, &rt, &rl);
        if (gl == 1 && *gt == '>') return next_tok(&r, &rt, &rl); /* one or more tokens */
        if (!next_tok(&r, &rt, &rl)) return 0;
        if (rl == 1 && *rt == '>') return 0;
        if (gl == 1 && *gt == '*') continue;
        if (rl == 1 && *rt == '*') return 0;
        if (gl != rl || memcmp(gt, rt, gl) != 0) return 0;
    }
}

/* ---- perms -------------------------------------------------------------------------- */

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

void users_perms_clear(users_perms *p)
{
    if (!p) return;
    strv_free(p->sub, p->nsub);
    strv_free(p->pub, p->npub);
    memset(p, 0, sizeof *p);
}

static int strv_has(char *const *v, size_t n, const char *s, size_t slen)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(v[i]) == slen && memcmp(v[i], s, slen) == 0) return 1;
    return 0;
}

/* Appends a copy of s[0..slen) to *v (capacity USERS_PATTERNS_MAX). */
static int strv_push(char ***v, size_t *n, const char *s, size_t slen)
{
    if (!*v) {
        *v = calloc(USERS_PATTERNS_MAX, sizeof **v);
        if (!*v) return -ENOMEM;
    }
    if (*n >= USERS_PATTERNS_MAX) return -EINVAL;
    char *c = strndup(s, slen);
    if (!c) return -ENOMEM;
    (*v)[(*n)++] = c;
    return 0;
}

int users_perms_copy(users_perms *dst, const users_perms *src)
{
    memset(dst, 0, sizeof *dst);
    for (size_t i = 0; i < src->nsub; i++)
        if (strv_push(&dst->sub, &dst->nsub, src->sub[i], strlen(src->sub[i])) < 0) goto error;
    for (size_t i = 0; i < src->npub; i++)
        if (strv_push(&dst->pub, &dst->npub, src->pub[i], strlen(src->pub[i])) < 0) goto error;
    return 0;
error:
    users_perms_clear(dst);
    return -ENOMEM;
}

int users_perms_narrow(const users_perms *base, const char *scope, users_perms *out, char *err,
                       size_t errlen)
{
    const char *p = scope;
    char pat[130];
    int rc;

    memset(out, 0, sizeof *out);
    if (!scope || !*scope) return users_perms_copy(out, base);
    if (strlen(scope) > USERS_SCOPE_MAX) {
        snprintf(err, errlen, "scope too long");
        return -EINVAL;
    }
    while (*p) {
        size_t n;
        int is_sub;
        char **have;
        size_t nhave, i;

        if (*p == ' ') {
            p++;
            continue;
        }
        n = strcspn(p, " ");
        if (n > 4 && memcmp(p, "sub:", 4) == 0)
            is_sub = 1;
        else if (n > 4 && memcmp(p, "pub:", 4) == 0)
            is_sub = 0;
        else {
            snprintf(err, errlen, "unknown scope (expected sub:PATTERN or pub:PATTERN)");
            goto invalid;
        }
        if (n - 4 >= sizeof pat) {
            snprintf(err, errlen, "scope pattern too long");
            goto invalid;
        }
        memcpy(pat, p + 4, n - 4);
        pat[n - 4] = '\0';
        if (!users_pattern_valid(pat)) {
            snprintf(err, errlen, "invalid topic pattern in scope");
            goto invalid;
        }
        have = is_sub ? base->sub : base->pub;
        nhave = is_sub ? base->nsub : base->npub;
        for (i = 0; i < nhave; i++)
            if (users_pattern_covers(have[i], pat)) break;
        if (i == nhave) {
            snprintf(err, errlen, "scope %s:%s exceeds the granted permissions",
                     is_sub ? "sub" : "pub", pat);
            goto invalid;
        }
        if (is_sub ? !strv_has(out->sub, out->nsub, pat, n - 4)
                   : !strv_has(out->pub, out->npub, pat, n - 4)) {
            rc = is_sub ? strv_push(&out->sub, &out->nsub, pat, n - 4)
                        : strv_push(&out->pub, &out->npub, pat, n - 4);
            if (rc == -EINVAL) {
                snprintf(err, errlen, "too many scope patterns");
                goto invalid;
            }
            if (rc < 0) {
                users_perms_clear(out);
                return rc;
            }
        }
        p += n;
    }
    return 0;
invalid:
    users_perms_clear(out);
    return -EINVAL;
}

int users_perms_scope(const users_perms *p, char *buf, size_t buflen)
{
    size_t o = 0;

    if (buflen == 0) return -1;
    buf[0] = '\0';
    for (int k = 0; k < 2; k++) {
        char **v = k == 0 ? p->sub : p->pub;
        size_t n = k == 0 ? p->nsub : p->npub;
        for (size_t i = 0; i < n; i++) {
            int w = snprintf(buf + o, buflen - o, "%s%s:%s", o ? " " : "", k ? "pub" : "sub", v[i]);
            if (w < 0 || (size_t)w >= buflen - o) return -1;
            o += (size_t)w;
        }
    }
    return 0;
}

/* ---- parser ------------------------------------------------------------------------- */

static int fail(char *err, size_t errlen, const char *fname, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int fail(char *err, size_t errlen, const char *fname, unsigned line, const char *fmt, ...)
{
    char why[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    snprintf(err, errlen, "%s:%u: %s", fname ? fname : "users", line, why);
    return -EINVAL;
}

static void entry_clear(users_entry *e)
{
    free(e->hash);
    users_perms_clear(&e->perms);
    strv_free(e->scopes, e->nscopes);
    e->scopes = NULL;
    e->nscopes = 0;
}

void users_destroy(users *u)
{
    if (!u) return;
    for (size_t i = 0; i < u->n; i++) entry_clear(&u->e[i]);
    free(u->e);
    free(u);
}

size_t users_count(const users *u) { return u ? u->n : 0; }

/* 0 when hash is usable: a current crypt(3) scheme whose output has the hash's shape. */
static int hash_check(const char *hash, const char **why)
{
    struct crypt_data *cd;
    const char *res;
    int ok;

    if (strcmp(hash, "!") == 0) return 0;
    if (hash[0] != '$') {
        *why = "hash must be a crypt(3) string starting with '$' (or \"!\" for locked)";
        return -1;
    }
    switch (crypt_checksalt(hash)) {
    case CRYPT_SALT_OK: break;
    case CRYPT_SALT_METHOD_LEGACY:
        *why = "legacy hash scheme; use `openssl passwd -6` (sha512crypt) or yescrypt";
        return -1;
    default: *why = "unsupported or malformed hash"; return -1;
    }
    cd = calloc(1, sizeof *cd);
    if (!cd) {
        *why = "out of memory";
        return -1;
    }
    res = crypt_rn("sidecast-probe", hash, cd, sizeof *cd);
    /* A well-formed hash reproduces its own setting and length. */
    const char *last = strrchr(hash, '$');
    size_t setting_len = (size_t)(last - hash);
    ok = res && res[0] == '$' && strlen(res) == strlen(hash) &&
         strncmp(res, hash, setting_len) == 0;
    explicit_bzero(cd, sizeof *cd);
    free(cd);
    if (!ok) {
        *why = "malformed hash";
        return -1;
    }
    return 0;
}

/* Parses "a,b,c" into v. Returns 0 or -1 with why. */
static int parse_list(const char *s, size_t n, char ***v, size_t *nv, const char **why)
{
    size_t i = 0;
    char pat[130];

    while (i < n) {
        size_t k = i;
        while (k < n && s[k] != ',') k++;
        if (k - i >= sizeof pat || k == i) {
            *why = "empty or too long topic pattern";
            return -1;
        }
        memcpy(pat, s + i, k - i);
        pat[k - i] = '\0';
        if (!users_pattern_valid(pat)) {
            *why = "invalid topic pattern (tokens of [A-Za-z0-9_-], '*', trailing '>')";
            return -1;
        }
        if (!strv_has(*v, *nv, pat, k - i)) {
            int rc = strv_push(v, nv, pat, k - i);
            if (rc == -EINVAL) {
                *why = "too many topic patterns (max 64)";
                return -1;
            }
            if (rc < 0) {
                *why = "out of memory";
                return -1;
            }
        }
        i = k + 1;
        if (k + 1 == n) {
            *why = "trailing comma in pattern list";
            return -1;
        }
    }
    return 0;
}

/* Parses one non-comment line into e. 0 or -EINVAL/ENOMEM (err filled). */
static int parse_line(users_entry *e, const char *s, size_t n, const char *fname, unsigned line,
                      char *err, size_t errlen)
{
    const char *tok[8];
    size_t tlen[8], nt = 0, i = 0;
    int have_sub = 0, have_pub = 0, have_scope = 0;
    const char *why = NULL;

    while (i < n) {
        while (i < n && (s[i] == ' ' || s[i] == '\t')) i++;
        if (i == n) break;
        if (nt == 8) return fail(err, errlen, fname, line, "too many fields");
        tok[nt] = s + i;
        while (i < n && s[i] != ' ' && s[i] != '\t') i++;
        tlen[nt] = (size_t)(s + i - tok[nt]);
        nt++;
    }
    if (nt < 3)
        return fail(err, errlen, fname, line,
                    "expected: user|client NAME HASH [sub=...] [pub=...] [scope=...]");
    if (tlen[0] == 4 && memcmp(tok[0], "user", 4) == 0)
        e->kind = USERS_USER;
    else if (tlen[0] == 6 && memcmp(tok[0], "client", 6) == 0)
        e->kind = USERS_CLIENT;
    else
        return fail(err, errlen, fname, line, "first field must be \"user\" or \"client\"");
    if (tlen[1] > USERS_NAME_MAX) return fail(err, errlen, fname, line, "name too long (max 64)");
    memcpy(e->name, tok[1], tlen[1]);
    e->name[tlen[1]] = '\0';
    if (!users_name_valid(e->name))
        return fail(err, errlen, fname, line, "name must be 1..64 bytes of [A-Za-z0-9_-]");
    e->line = line;
    e->hash = strndup(tok[2], tlen[2]);
    if (!e->hash) return -ENOMEM;
    if (tlen[2] > 512 || hash_check(e->hash, &why) < 0)
        /* the message names the entry, never echoes the hash */
        return fail(err, errlen, fname, line, "%s: %s", e->name, why ? why : "hash too long");
    for (size_t t = 3; t < nt; t++) {
        int is_sub;
        if (tlen[t] >= 6 && memcmp(tok[t], "scope=", 6) == 0) {
            if (have_scope++) return fail(err, errlen, fname, line, "scope= given twice");
            if (parse_list(tok[t] + 6, tlen[t] - 6, &e->scopes, &e->nscopes, &why) < 0)
                return fail(err, errlen, fname, line, "scope=: %s", why);
            for (size_t k = 0; k < e->nscopes; k++)
                if (strpbrk(e->scopes[k], "*>"))
                    return fail(err, errlen, fname, line,
                                "scope=: a scope is a name (tokens of [A-Za-z0-9_-] "
                                "separated by '.'), no wildcards");
            continue;
        }
        if (tlen[t] >= 4 && memcmp(tok[t], "sub=", 4) == 0)
            is_sub = 1;
        else if (tlen[t] >= 4 && memcmp(tok[t], "pub=", 4) == 0)
            is_sub = 0;
        else
            return fail(err, errlen, fname, line,
                        "unknown field (expected sub=..., pub=... or scope=...)");
        if (is_sub ? have_sub++ : have_pub++)
            return fail(err, errlen, fname, line, "%s= given twice", is_sub ? "sub" : "pub");
        if (parse_list(tok[t] + 4, tlen[t] - 4, is_sub ? &e->perms.sub : &e->perms.pub,
                       is_sub ? &e->perms.nsub : &e->perms.npub, &why) < 0)
            return fail(err, errlen, fname, line, "%s", why);
    }
    return 0;
}

static int entry_cmp(const void *a, const void *b)
{
    const users_entry *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->line < y->line ? -1 : x->line > y->line);
}

int users_parse(users **out, const char *text, size_t len, const char *fname, char *err,
                size_t errlen)
{
    users *u;
    size_t cap = 0, pos = 0;
    unsigned line = 0;
    int rc = -ENOMEM;

    *out = NULL;
    if (errlen) err[0] = '\0';
    if (len > USERS_FILE_MAX) return fail(err, errlen, fname, 0, "file too large");
    u = calloc(1, sizeof *u);
    if (!u) return -ENOMEM;
    while (pos < len) {
        const char *s = text + pos;
        const char *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) : len - pos;
        size_t k = 0;

        pos += n + (nl ? 1 : 0);
        line++;
        if (n > 0 && s[n - 1] == '\r') n--;
        if (n > USERS_LINE_MAX) {
            rc = fail(err, errlen, fname, line, "line too long");
            goto error;
        }
        if (memchr(s, '\0', n)) {
            rc = fail(err, errlen, fname, line, "NUL byte");
            goto error;
        }
        while (k < n && (s[k] == ' ' || s[k] == '\t')) k++;
        if (k == n || s[k] == '#') continue;
        if (u->n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            users_entry *ne = realloc(u->e, ncap * sizeof *ne);
            if (!ne) goto error;
            u->e = ne;
            cap = ncap;
        }
        memset(&u->e[u->n], 0, sizeof u->e[u->n]);
        u->n++;
        rc = parse_line(&u->e[u->n - 1], s, n, fname, line, err, errlen);
        if (rc < 0) goto error;
    }
    if (u->n) qsort(u->e, u->n, sizeof *u->e, entry_cmp);
    for (size_t i = 1; i < u->n; i++) {
        if (strcmp(u->e[i - 1].name, u->e[i].name) == 0) {
            rc = fail(err, errlen, fname, u->e[i].line,
                      "%s: name already defined on line %u (names are unique across users "
                      "and clients)",
                      u->e[i].name, u->e[i - 1].line);
            goto error;
        }
    }
    /* Stand-in hashes for unknown names: the first real hash of the kind, else of any. */
    for (size_t i = 0; i < u->n; i++) {
        if (u->e[i].hash[0] != '$') continue;
        if (!u->dummy[u->e[i].kind]) u->dummy[u->e[i].kind] = u->e[i].hash;
    }
    for (int k = USERS_USER; k <= USERS_CLIENT; k++) {
        if (!u->dummy[k]) u->dummy[k] = u->dummy[k == USERS_USER ? USERS_CLIENT : USERS_USER];
        if (!u->dummy[k]) u->dummy[k] = fallback_hash;
    }
    *out = u;
    return 0;
error:
    if (rc == -ENOMEM && errlen) snprintf(err, errlen, "%s: out of memory", fname);
    users_destroy(u);
    return rc;
}

int users_load(users **out, const char *path, char *err, size_t errlen)
{
    FILE *f;
    char *buf;
    size_t n;
    int rc;

    *out = NULL;
    f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -EIO;
    }
    buf = malloc((size_t)USERS_FILE_MAX + 1);
    if (!buf) {
        fclose(f);
        return -ENOMEM;
    }
    n = fread(buf, 1, (size_t)USERS_FILE_MAX + 1, f);
    if (ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        fclose(f);
        free(buf);
        return -EIO;
    }
    fclose(f);
    rc = users_parse(out, buf, n, path, err, errlen);
    free(buf);
    return rc;
}

const users_entry *users_find(const users *u, enum users_kind kind, const char *name)
{
    size_t lo = 0, hi;

    if (!u || !name) return NULL;
    hi = u->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, u->e[mid].name);
        if (c == 0) return u->e[mid].kind == kind ? &u->e[mid] : NULL;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

static metric *hashes_entry, *hashes_dummy;
static pthread_once_t hash_metrics_once = PTHREAD_ONCE_INIT;
static void hash_metrics_init(void)
{
    static const char help[] = "password and secret checks, by the hash they ran against";
    hashes_entry = metrics_counter("sc_auth_password_hashes_total", "against=\"entry\"", help);
    hashes_dummy = metrics_counter("sc_auth_password_hashes_total", "against=\"dummy\"", help);
}

int users_verify(const users *u, enum users_kind kind, const char *name, const char *secret,
                 const users_entry **out)
{
    const users_entry *e;
    const char *setting, *res;
    struct crypt_data *cd;
    int match;

    if (out) *out = NULL;
    if (!u || !secret || strlen(secret) > USERS_SECRET_MAX) return 0;
    e = users_find(u, kind, name);
    setting = e && e->hash[0] == '$' ? e->hash : u->dummy[kind];
    /* every attempt costs one hash of the file's scheme, whether the name exists or not:
     * counted, so that a test sees the unknown name hashed without timing it (the lookup
     * takes the registry's mutex: nothing beside a hash of several ms) */
    bool dummy = !(e && e->hash == setting);
    pthread_once(&hash_metrics_once, hash_metrics_init); /* not a registry look-up per login */
    metric_inc(dummy ? hashes_dummy : hashes_entry);
    cd = calloc(1, sizeof *cd);
    if (!cd) return -ENOMEM;
    res = crypt_rn(secret, setting, cd, sizeof *cd);
    match = res && strlen(res) == strlen(setting) &&
            CRYPTO_memcmp(res, setting, strlen(setting)) == 0;
    explicit_bzero(cd, sizeof *cd);
    free(cd);
    /* Unknown and locked entries were hashed like the others, and fail here. */
    if (!match || !e || e->hash[0] != '$') return 0;
    if (out) *out = e;
    return 1;
}

void users_perms_items(const char *scope, char *buf)
{
    size_t o = 0;
    for (const char *p = scope; p && *p;) {
        while (*p == ' ') p++;
        const char *q = p;
        while (*q && *q != ' ') q++;
        if (q > p && memchr(p, ':', (size_t)(q - p))) {
            if (o) buf[o++] = ' ';
            memcpy(buf + o, p, (size_t)(q - p));
            o += (size_t)(q - p);
        }
        p = q;
    }
    buf[o] = '\0';
}

int users_api_scope(const users_entry *e, const char *requested, char *buf, size_t buflen,
                    char *err, size_t errlen)
{
    size_t o = 0;
    if (buflen == 0) return -EINVAL;
    buf[0] = '\0';
    for (size_t i = 0; !requested && i < e->nscopes; i++) {
        size_t n = strlen(e->scopes[i]);
        if (o + n + 2 > buflen) goto toolong;
        if (o) buf[o++] = ' ';
        memcpy(buf + o, e->scopes[i], n + 1);
        o += n;
    }
    for (const char *p = requested; p && *p;) {
        while (*p == ' ') p++;
        const char *q = p;
        while (*q && *q != ' ') q++;
        size_t n = (size_t)(q - p);
        if (n && !memchr(p, ':', n)) {
            if (!strv_has(e->scopes, e->nscopes, p, n)) {
                if (err && errlen)
                    snprintf(err, errlen, "scope %.*s is not granted to %s", (int)(n > 64 ? 64 : n),
                             p, e->name);
                return -EINVAL;
            }
            if (o + n + 2 > buflen) goto toolong;
            if (o) buf[o++] = ' ';
            memcpy(buf + o, p, n);
            o += n;
            buf[o] = '\0';
        }
        p = q;
    }
    return 0;
toolong:
    if (err && errlen) snprintf(err, errlen, "too many scopes");
    return -EINVAL;
}
