/* tmpl.c - request templates with ${references}; see tmpl.h. */
#include "tmpl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One scan step over a template string: a literal run, or one reference. */
enum tmpl_tok { TOK_END, TOK_TEXT, TOK_REF, TOK_ERR };

typedef struct tmpl_scan {
    const char *s;
    size_t len, pos;
    const char *tok; /* TEXT: the literal bytes; REF: the reference between ${ and } */
    size_t toklen;
    int escape; /* TEXT produced by "$${": the literal is "${" */
} tmpl_scan;

static int tmpl_ref_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
}

static enum tmpl_tok tmpl_next(tmpl_scan *sc, char *err, size_t errlen)
{
    const char *s = sc->s;
    size_t i = sc->pos, len = sc->len;
    sc->escape = 0;
    if (i >= len) return TOK_END;
    if (s[i] == '$' && len - i >= 3 && s[i + 1] == '$' && s[i + 2] == '{') {
        sc->tok = "${";
        sc->toklen = 2;
        sc->escape = 1;
        sc->pos = i + 3;
        return TOK_TEXT;
    }
    if (s[i] == '$' && len - i >= 2 && s[i + 1] == '{') {
        size_t j = i + 2;
        while (j < len && s[j] != '}') {
            if (!tmpl_ref_char(s[j])) {
                snprintf(err, errlen, "bad character in reference at offset %zu", j);
                return TOK_ERR;
            }
            j++;
        }
        if (j >= len) {
            snprintf(err, errlen, "unterminated reference at offset %zu", i);
            return TOK_ERR;
        }
        sc->tok = s + i + 2;
        sc->toklen = j - (i + 2);
        sc->pos = j + 1;
        if (sc->toklen == 0 || sc->toklen > TMPL_MAX_REF) {
            snprintf(err, errlen, "empty or too long reference at offset %zu", i);
            return TOK_ERR;
        }
        return TOK_REF;
    }
    /* literal up to the next "$${" or "${" */
    size_t j = i + 1;
    while (j < len && !(s[j] == '$' && j + 1 < len && (s[j + 1] == '{' || s[j + 1] == '$'))) j++;
    sc->tok = s + i;
    sc->toklen = j - i;
    sc->pos = j;
    return TOK_TEXT;
}

/* Validates the dotted form of a reference: segments non-empty, count bounded. */
static int tmpl_ref_valid(const char *ref, size_t len, size_t *rootlen, char *err, size_t errlen)
{
    size_t segs = 1, start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || ref[i] == '.') {
            if (i == start) {
                snprintf(err, errlen, "empty field in reference ${%.*s}", (int)len, ref);
                return -1;
            }
            if (segs == 1) *rootlen = i;
            if (i < len && ++segs > TMPL_MAX_SEGMENTS) {
                snprintf(err, errlen, "reference ${%.*s} is too deep", (int)len, ref);
                return -1;
            }
            start = i + 1;
        }
    }
    return 0;
}

static int tmpl_check_value(const json_t *v, int depth, tmpl_ref_fn ref_ok, void *ud, char *err,
                            size_t errlen)
{
    if (depth > TMPL_MAX_DEPTH) {
        snprintf(err, errlen, "template nested deeper than %d", TMPL_MAX_DEPTH);
        return -1;
    }
    if (json_is_object(v)) {
        const char *k;
        const json_t *m;
        json_object_foreach((json_t *)v, k, m) {
            if (tmpl_check_value(m, depth + 1, ref_ok, ud, err, errlen) != 0) return -1;
        }
        return 0;
    }
    if (json_is_array(v)) {
        size_t i;
        const json_t *m;
        json_array_foreach(v, i, m) {
            if (tmpl_check_value(m, depth + 1, ref_ok, ud, err, errlen) != 0) return -1;
        }
        return 0;
    }
    if (!json_is_string(v)) return 0;
    tmpl_scan sc = {.s = json_string_value(v), .len = json_string_length(v)};
    for (;;) {
        enum tmpl_tok t = tmpl_next(&sc, err, errlen);
        if (t == TOK_END) return 0;
        if (t == TOK_ERR) return -1;
        if (t != TOK_REF) continue;
        size_t rootlen = 0;
        if (tmpl_ref_valid(sc.tok, sc.toklen, &rootlen, err, errlen) != 0) return -1;
        if (ref_ok && !ref_ok(sc.tok, sc.toklen, rootlen, ud)) {
            snprintf(err, errlen, "unknown reference ${%.*s}", (int)sc.toklen, sc.tok);
            return -1;
        }
    }
}

int tmpl_check(const json_t *tmpl, tmpl_ref_fn ref_ok, void *ud, char *err, size_t errlen)
{
    char dummy[8];
    if (!err || !errlen) err = dummy, errlen = sizeof dummy;
    return tmpl_check_value(tmpl, 0, ref_ok, ud, err, errlen);
}

/* Records a failed reference: its root, and a message quoting it. */
static void tmpl_blame(tmpl_error *e, const char *ref, size_t len, const char *what)
{
    size_t rootlen = 0;
    while (rootlen < len && ref[rootlen] != '.') rootlen++;
    snprintf(e->root, sizeof e->root, "%.*s", (int)rootlen, ref);
    snprintf(e->msg, sizeof e->msg, "%s ${%.*s}", what, (int)len, ref);
}

/* Resolves a dotted reference in ctx; borrowed value or NULL. */
static const json_t *tmpl_lookup(const json_t *ctx, const char *ref, size_t len)
{
    const json_t *cur = ctx;
    size_t start = 0;
    char seg[TMPL_MAX_REF + 1];
    for (size_t i = 0; i <= len; i++) {
        if (i < len && ref[i] != '.') continue;
        size_t n = i - start;
        memcpy(seg, ref + start, n);
        seg[n] = '\0';
        start = i + 1;
        if (json_is_object(cur)) {
            cur = json_object_get(cur, seg);
        } else if (json_is_array(cur)) {
            char *end;
            if (seg[0] < '0' || seg[0] > '9') return NULL;
            unsigned long idx = strtoul(seg, &end, 10);
            if (*end || n > 9) return NULL;
            cur = json_array_get(cur, idx);
        } else {
            return NULL;
        }
        if (!cur) return NULL;
    }
    return cur;
}

/* Appends the text form of a scalar to buf; -1 when v cannot be interpolated. */
static int tmpl_append(char *buf, size_t *used, const char *s, size_t n)
{
    if (*used + n > TMPL_MAX_STRING) return -1;
    memcpy(buf + *used, s, n);
    *used += n;
    return 0;
}

static int tmpl_append_value(char *buf, size_t *used, const json_t *v)
{
    char num[64];
    int n;
    switch (json_typeof(v)) {
    case JSON_STRING: return tmpl_append(buf, used, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        n = snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return tmpl_append(buf, used, num, (size_t)n);
    case JSON_REAL:
        n = snprintf(num, sizeof num, "%.17g", json_real_value(v));
        return tmpl_append(buf, used, num, (size_t)n);
    case JSON_TRUE: return tmpl_append(buf, used, "true", 4);
    case JSON_FALSE: return tmpl_append(buf, used, "false", 5);
    default: return -1;
    }
}

static json_t *tmpl_render_string(const json_t *v, const json_t *ctx, tmpl_error *e)
{
    tmpl_scan sc = {.s = json_string_value(v), .len = json_string_length(v)};
    /* A string that is exactly one reference takes the referenced value, with its type. */
    tmpl_scan probe = sc;
    if (tmpl_next(&probe, e->msg, sizeof e->msg) == TOK_REF && probe.pos == probe.len) {
        const json_t *r = tmpl_lookup(ctx, probe.tok, probe.toklen);
        if (!r) {
            tmpl_blame(e, probe.tok, probe.toklen, "unresolved reference");
            return NULL;
        }
        json_t *copy = json_deep_copy(r);
        if (!copy) snprintf(e->msg, sizeof e->msg, "out of memory");
        return copy;
    }
    char *buf = malloc(TMPL_MAX_STRING);
    size_t used = 0;
    if (!buf) {
        snprintf(e->msg, sizeof e->msg, "out of memory");
        return NULL;
    }
    for (;;) {
        enum tmpl_tok t = tmpl_next(&sc, e->msg, sizeof e->msg);
        if (t == TOK_END) break;
        if (t == TOK_ERR) goto error;
        if (t == TOK_TEXT) {
            if (tmpl_append(buf, &used, sc.tok, sc.toklen) != 0) {
                snprintf(e->msg, sizeof e->msg, "rendered string longer than %d bytes",
                         TMPL_MAX_STRING);
                goto error;
            }
            continue;
        }
        const json_t *r = tmpl_lookup(ctx, sc.tok, sc.toklen);
        if (!r) {
            tmpl_blame(e, sc.tok, sc.toklen, "unresolved reference");
            goto error;
        }
        if (tmpl_append_value(buf, &used, r) != 0) {
            tmpl_blame(e, sc.tok, sc.toklen,
                       "cannot interpolate (not a string, number or "
                       "boolean, or too long)");
            goto error;
        }
    }
    /* Interpolated values are JSON strings already checked by jansson, literals come from
     * a parsed template: the result is valid UTF-8 unless a value holds a NUL. */
    json_t *out = json_stringn(buf, used);
    if (!out) snprintf(e->msg, sizeof e->msg, "rendered string is not valid text");
    free(buf);
    return out;
error:
    free(buf);
    return NULL;
}

static json_t *tmpl_render_value(const json_t *v, const json_t *ctx, int depth, tmpl_error *e)
{
    if (depth > TMPL_MAX_DEPTH) {
        snprintf(e->msg, sizeof e->msg, "template nested deeper than %d", TMPL_MAX_DEPTH);
        return NULL;
    }
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        json_t *o = json_object();
        const char *k;
        const json_t *m;
        if (!o) goto oom;
        json_object_foreach((json_t *)v, k, m) {
            json_t *r = tmpl_render_value(m, ctx, depth + 1, e);
            if (!r || json_object_set_new(o, k, r) != 0) {
                json_decref(o);
                return NULL;
            }
        }
        return o;
    }
    case JSON_ARRAY: {
        json_t *a = json_array();
        size_t i;
        const json_t *m;
        if (!a) goto oom;
        json_array_foreach(v, i, m) {
            json_t *r = tmpl_render_value(m, ctx, depth + 1, e);
            if (!r || json_array_append_new(a, r) != 0) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    case JSON_STRING: return tmpl_render_string(v, ctx, e);
    default: {
        json_t *c = json_deep_copy(v);
        if (!c) goto oom;
        return c;
    }
    }
oom:
    snprintf(e->msg, sizeof e->msg, "out of memory");
    return NULL;
}

json_t *tmpl_render(const json_t *tmpl, const json_t *ctx, tmpl_error *e)
{
    tmpl_error dummy;
    if (!e) e = &dummy;
    e->msg[0] = e->root[0] = '\0';
    return tmpl_render_value(tmpl, ctx, 0, e);
}
