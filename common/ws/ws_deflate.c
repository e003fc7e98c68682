/* ws_deflate.c - permessage-deflate (RFC 7692): offers, answer, one-message compression and
 * bounded inflation; see ws_deflate.h. */
#include "ws_deflate.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

static const uint8_t sync_tail[4] = {0x00, 0x00, 0xff, 0xff};

/* ---- negotiation ---------------------------------------------------------------------------- */

static bool is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool is_ows(char c) { return c == ' ' || c == '\t'; }

typedef struct cursor {
    const char *p, *e;
} cursor;

static void skip_ows(cursor *c)
{
    while (c->p < c->e && is_ows(*c->p)) c->p++;
}

/* A token at c; its length (0: none). */
static size_t take_token(cursor *c, const char **tok)
{
    *tok = c->p;
    while (c->p < c->e && is_tchar((unsigned char)*c->p)) c->p++;
    return (size_t)(c->p - *tok);
}

/* A quoted-string at c (RFC 9110 §5.6.4), unescaped into out (cap bytes, NUL-terminated).
 * Its length, or -1 when malformed or longer than cap - 1. c is left past the closing quote
 * even then (a comma inside it must not be taken for a list separator). */
static int take_quoted(cursor *c, char *out, size_t cap)
{
    size_t o = 0;
    bool bad = false;
    c->p++; /* the opening quote */
    while (c->p < c->e && *c->p != '"') {
        char ch = *c->p++;
        if (ch == '\\') {
            if (c->p == c->e) return -1;
            ch = *c->p++;
        }
        if (((unsigned char)ch < 0x20 && ch != '\t') || ch == 0x7F || o + 1 >= cap)
            bad = true;
        else
            out[o++] = ch;
    }
    if (c->p == c->e) return -1;
    c->p++; /* the closing quote */
    out[o] = '\0';
    return bad ? -1 : (int)o;
}

/* Moves c past the next list separator that is not inside a quoted-string (or to the end). */
static void skip_element(cursor *c)
{
    bool quoted = false;
    while (c->p < c->e) {
        char ch = *c->p++;
        if (quoted && ch == '\\' && c->p < c->e)
            c->p++;
        else if (ch == '"')
            quoted = !quoted;
        else if (ch == ',' && !quoted)
            return;
    }
}

/* A window-bits value (RFC 7692 §7.1.2: 1*DIGIT without a leading zero, 8..15). */
static int window_bits(const char *v, size_t n)
{
    if (n == 1 && (v[0] == '8' || v[0] == '9')) return v[0] - '0';
    if (n == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5') return 10 + v[1] - '0';
    return -1;
}

enum {
    P_SERVER_NCT = 1,
    P_CLIENT_NCT = 2,
    P_SERVER_MWB = 4,
    P_CLIENT_MWB = 8,
};

/* Judges one parameter of a permessage-deflate offer. seen: the parameters so far. */
static bool param_ok(const char *name, size_t nn, bool has_value, const char *v, size_t vn,
                     unsigned *seen, ws_pmd *pm)
{
    static const struct {
        const char *name;
        unsigned bit;
    } known[] = {
        {"server_no_context_takeover", P_SERVER_NCT},
        {"client_no_context_takeover", P_CLIENT_NCT},
        {"server_max_window_bits", P_SERVER_MWB},
        {"client_max_window_bits", P_CLIENT_MWB},
    };
    unsigned bit = 0;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (nn == strlen(known[i].name) && strncasecmp(name, known[i].name, nn) == 0)
            bit = known[i].bit;
    if (!bit || (*seen & bit)) return false; /* unknown or repeated (§7: decline the offer) */
    *seen |= bit;
    switch (bit) {
    case P_SERVER_NCT:
    case P_CLIENT_NCT: return !has_value;
    case P_SERVER_MWB: {
        int b = has_value ? window_bits(v, vn) : -1;
        if (b < 0) return false;
        pm->server_max_window_bits = (uint8_t)b;
        return true;
    }
    default: /* P_CLIENT_MWB: the value is optional (§7.1.2.2) */
        return !has_value || window_bits(v, vn) >= 0;
    }
}

/* Parses the offer at c up to its end (the next ',' or the end of the list; c is left past
 * it). True when it is an acceptable permessage-deflate offer, with *pm filled. */
static bool parse_offer(cursor *c, ws_pmd *pm)
{
    const char *name;
    size_t nn = take_token(c, &name);
    bool ok = nn == 18 && strncasecmp(name, "permessage-deflate", 18) == 0;
    unsigned seen = 0;

    if (nn == 0) {
        skip_element(c);
        return false;
    }
    memset(pm, 0, sizeof *pm);
    for (;;) {
        skip_ows(c);
        if (c->p == c->e) return ok;
        if (*c->p == ',') {
            c->p++;
            return ok;
        }
        if (*c->p != ';') break; /* broken syntax */
        c->p++;
        skip_ows(c);
        const char *pname, *v = NULL;
        size_t pn = take_token(c, &pname), vn = 0;
        char qv[16];
        bool has_value = false;
        if (pn == 0) break;
        skip_ows(c);
        if (c->p < c->e && *c->p == '=') {
            c->p++;
            skip_ows(c);
            has_value = true;
            if (c->p < c->e && *c->p == '"') {
                int q = take_quoted(c, qv, sizeof qv);
                if (q < 0) ok = false; /* a value no parameter of ours can have */
                v = qv;
                vn = q < 0 ? 0 : (size_t)q;
            } else if ((vn = take_token(c, &v)) == 0) {
                break;
            }
        }
        if (ok && !param_ok(pname, pn, has_value, v, vn, &seen, pm))
            ok = false; /* declined; the rest of the offer is still read past */
    }
    skip_element(c);
    return false;
}

int ws_pmd_offer(const char *p, size_t n, ws_pmd *out)
{
    cursor c = {p, p + n};
    ws_pmd pm;

    while (c.p < c.e) {
        skip_ows(&c);
        if (c.p < c.e && *c.p == ',') { /* empty list element (RFC 9110 §5.6.1) */
            c.p++;
            continue;
        }
        if (c.p == c.e) break;
        if (parse_offer(&c, &pm)) {
            *out = pm;
            return 1;
        }
    }
    return 0;
}

int ws_pmd_response(char *out, size_t cap, const ws_pmd *pm)
{
    int n;
    if (pm->server_max_window_bits)
        n = snprintf(out, cap,
                     "permessage-deflate; server_no_context_takeover; "
                     "client_no_context_takeover; server_max_window_bits=%u",
                     pm->server_max_window_bits);
    else
        n = snprintf(out, cap,
                     "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
    return n >= 0 && (size_t)n < cap ? n : -1;
}

bool ws_pmd_fits_window(const ws_pmd *pm, size_t len)
{
    return !pm->server_max_window_bits || len <= ((size_t)1 << pm->server_max_window_bits);
}

/* ---- compression -------------------------------------------------------------------------- */

int ws_pmd_deflate_init(z_stream *z)
{
    memset(z, 0, sizeof *z);
    return deflateInit2(z, WS_PMD_LEVEL, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) == Z_OK ? 0 : -1;
}

int ws_pmd_inflate_init(z_stream *z)
{
    memset(z, 0, sizeof *z);
    return inflateInit2(z, -15) == Z_OK ? 0 : -1;
}

long ws_pmd_compress(z_stream *z, const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
    if (n > UINT_MAX || deflateReset(z) != Z_OK) return -1;
    if (cap > UINT_MAX) cap = UINT_MAX;
    z->next_in = (Bytef *)(uintptr_t)in;
    z->avail_in = (uInt)n;
    z->next_out = out;
    z->avail_out = (uInt)cap;
    int rc = deflate(z, Z_SYNC_FLUSH);
    /* avail_out == 0: the flush may not be complete, i.e. it did not fit */
    if (rc != Z_OK || z->avail_in != 0 || z->avail_out == 0) return -1;
    size_t len = cap - z->avail_out;
    if (len < sizeof sync_tail || memcmp(out + len - sizeof sync_tail, sync_tail, 4) != 0)
        return -1;
    return (long)(len - sizeof sync_tail);
}

int ws_pmd_inflate(z_stream *z, const uint8_t *in, size_t n, size_t max, uint8_t **buf, size_t *cap,
                   size_t *out_len)
{
    size_t limit = max < SIZE_MAX ? max + 1 : max; /* one byte more shows "too big" */
    size_t have = 0, left = n;
    bool tail_given = false;

    if (inflateReset(z) != Z_OK) return WS_PMD_CORRUPT;
    z->avail_in = 0;
    for (;;) {
        if (z->avail_in == 0) {
            if (left > 0) {
                z->next_in = (Bytef *)(uintptr_t)(in + (n - left));
                z->avail_in = left > UINT_MAX ? UINT_MAX : (uInt)left;
                left -= z->avail_in;
            } else if (!tail_given) {
                z->next_in = (Bytef *)(uintptr_t)sync_tail;
                z->avail_in = sizeof sync_tail;
                tail_given = true;
            }
        }
        if (have == *cap) {
            if (*cap >= limit) return WS_PMD_TOO_BIG;
            size_t want = *cap * 2;
            if (want < 4096) want = 4096;
            if (want > limit) want = limit;
            uint8_t *nb = realloc(*buf, want);
            if (!nb) return WS_PMD_NOMEM;
            *buf = nb;
            *cap = want;
        }
        size_t room = *cap - have;
        z->next_out = *buf + have;
        z->avail_out = room > UINT_MAX ? UINT_MAX : (uInt)room;
        uInt in_before = z->avail_in;
        int rc = inflate(z, Z_SYNC_FLUSH);
        size_t made = (size_t)(z->next_out - (*buf + have));
        have += made;
        if (have > max) return WS_PMD_TOO_BIG;
        if (rc == Z_STREAM_END) break; /* a final block (BFINAL): anything after it is not data */
        if (rc == Z_MEM_ERROR) return WS_PMD_NOMEM;
        if (rc != Z_OK && rc != Z_BUF_ERROR) return WS_PMD_CORRUPT;
        /* Everything given, the tail included, and room left: all output is out. */
        if (tail_given && z->avail_in == 0 && z->avail_out > 0) break;
        if (made == 0 && z->avail_in == in_before && z->avail_out > 0 && z->avail_in > 0)
            return WS_PMD_CORRUPT; /* no progress possible (does not happen with zlib) */
    }
    *out_len = have;
    return 0;
}
