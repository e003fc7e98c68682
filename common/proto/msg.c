/* msg.c - sidecast.v1 JSON messages: client message parser (a non-allocating JSON check
 * first, then jansson for the tree; id and data are cut from the raw text), edge message
 * encoders into caller buffers, JSON check and string escaping for bus data. The decisions
 * are listed in msg.h. */
#include "msg.h"
#include "topic.h"

#include <jansson.h>

#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* ---- output buffer: writes what fits, counts everything ---- */

typedef struct wbuf {
    char *p;
    size_t cap;
    size_t len; /* bytes the output needs so far; past cap once something did not fit */
} wbuf;

static void w_raw(wbuf *w, const char *s, size_t n)
{
    if (n == 0) return;
    if (n <= w->cap && w->len <= w->cap - n) memcpy(w->p + w->len, s, n);
    w->len = w->len > SIZE_MAX - n ? SIZE_MAX : w->len + n;
}

#define w_lit(w, s) w_raw((w), (s), sizeof(s) - 1)

static void w_u64(wbuf *w, uint64_t v)
{
    char tmp[20];
    size_t i = sizeof tmp;

    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    w_raw(w, tmp + i, sizeof tmp - i);
}

static void w_i64(wbuf *w, int64_t v)
{
    if (v < 0) {
        w_lit(w, "-");
        w_u64(w, (uint64_t)0 - (uint64_t)v);
    } else {
        w_u64(w, (uint64_t)v);
    }
}

/* Length of the UTF-8 sequence at s[0..n) (n >= 1), Unicode Table 3-7. *ok tells whether it
 * is a whole valid character; if not, the length is that of the maximal subpart (>= 1),
 * which is what one U+FFFD replaces (Unicode §3.9, "U+FFFD substitution of maximal
 * subparts"). */
static size_t utf8_next(const unsigned char *s, size_t n, bool *ok)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t need;

    *ok = false;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0)
            lo = 0xA0; /* no overlongs */
        else if (c == 0xED)
            hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0)
            lo = 0x90; /* no overlongs */
        else if (c == 0xF4)
            hi = 0x8F; /* nothing above U+10FFFF */
    } else {
        return 1; /* ASCII is not handled here; 80..C1, F5..FF never start a character */
    }
    for (size_t i = 1; i <= need; i++) {
        if (i >= n || s[i] < lo || s[i] > hi) return i;
        lo = 0x80;
        hi = 0xBF;
    }
    *ok = true;
    return need + 1;
}

static void w_escape(wbuf *w, unsigned char c)
{
    static const char hex[] = "0123456789abcdef";
    char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};

    switch (c) {
    case '"': w_lit(w, "\\\""); break;
    case '\\': w_lit(w, "\\\\"); break;
    case '\b': w_lit(w, "\\b"); break;
    case '\f': w_lit(w, "\\f"); break;
    case '\n': w_lit(w, "\\n"); break;
    case '\r': w_lit(w, "\\r"); break;
    case '\t': w_lit(w, "\\t"); break;
    default: w_raw(w, u, sizeof u); break;
    }
}

/* s[0..n) as a JSON string literal; see msg_json_string. Runs of plain bytes are copied
 * whole. */
static void w_str(wbuf *w, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0, run = 0;

    w_lit(w, "\"");
    if (n == 0) {
        w_lit(w, "\"");
        return;
    }
    while (i < n) {
        unsigned char c = s[i];
        bool ok;
        size_t k;

        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            i++;
            continue;
        }
        if (c < 0x80) {
            w_raw(w, str + run, i - run);
            w_escape(w, c);
            run = ++i;
            continue;
        }
        k = utf8_next(s + i, n - i, &ok);
        /* U+2028 and U+2029 are valid JSON but end a line in JavaScript source. */
        if (ok && !(c == 0xE2 && s[i + 1] == 0x80 && (s[i + 2] & 0xFE) == 0xA8)) {
            i += k;
            continue;
        }
        w_raw(w, str + run, i - run);
        if (ok)
            w_raw(w, s[i + 2] == 0xA8 ? "\\u2028" : "\\u2029", 6);
        else
            w_lit(w, "\xEF\xBF\xBD");
        i += k;
        run = i;
    }
    w_raw(w, str + run, i - run);
    w_lit(w, "\"");
}

static void w_cstr(wbuf *w, const char *s) { w_str(w, s ? s : "", s ? strlen(s) : 0); }

/* Ends the output: NUL-terminates it and returns its length, or -1 when it did not fit. */
static int w_end(wbuf *w)
{
    if (w->len >= w->cap || w->len > INT_MAX) return -1;
    w->p[w->len] = '\0';
    return (int)w->len;
}

int msg_json_string(char *out, size_t cap, const char *s, size_t n)
{
    wbuf w = {out, cap, 0};

    w_str(&w, s, n);
    return w_end(&w);
}

size_t msg_json_string_len(const char *s, size_t n)
{
    wbuf w = {NULL, 0, 0};

    w_str(&w, s, n);
    return w.len;
}

/* ---- JSON check (RFC 8259), no allocation ---- */

static size_t skip_ws(const unsigned char *s, size_t n, size_t i)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++;
    return i;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Reads "\uXXXX" at s[i..n) (i at the backslash). Returns the code unit, or -1. */
static long read_u_escape(const unsigned char *s, size_t n, size_t i)
{
    long v = 0;

    if (n - i < 6 || s[i] != '\\' || s[i + 1] != 'u') return -1;
    for (size_t k = i + 2; k < i + 6; k++) {
        int h = hexval(s[k]);
        if (h < 0) return -1;
        v = v * 16 + h;
    }
    return v;
}

/* Scans the string literal at s[*i] == '"'; on success *i is just past the closing quote. */
static bool scan_string(const unsigned char *s, size_t n, size_t *pi)
{
    size_t i = *pi + 1;

    while (i < n) {
        unsigned char c = s[i];

        if (c == '"') {
            *pi = i + 1;
            return true;
        }
        if (c < 0x20) return false;
        if (c >= 0x80) {
            bool ok;
            i += utf8_next(s + i, n - i, &ok);
            if (!ok) return false;
            continue;
        }
        if (c != '\\') {
            i++;
            continue;
        }
        if (i + 1 >= n) return false;
        if (s[i + 1] != 'u') {
            if (strchr("\"\\/bfnrt", s[i + 1]) == NULL || s[i + 1] == '\0') return false;
            i += 2;
            continue;
        }
        long u = read_u_escape(s, n, i);
        if (u < 0 || (u >= 0xDC00 && u <= 0xDFFF)) return false; /* lone low surrogate */
        i += 6;
        if (u >= 0xD800 && u <= 0xDBFF) {
            long lo = read_u_escape(s, n, i);
            if (lo < 0xDC00 || lo > 0xDFFF) return false; /* high surrogate without its low half */
            i += 6;
        }
    }
    return false;
}

static size_t scan_digits(const unsigned char *s, size_t n, size_t i)
{
    while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    return i;
}

/* Scans the number at s[*pi]; on success *pi is just past it. */
static bool scan_number(const unsigned char *s, size_t n, size_t *pi)
{
    size_t i = *pi, j;

    if (i < n && s[i] == '-') i++;
    if (i < n && s[i] == '0') {
        i++;
    } else {
        j = scan_digits(s, n, i);
        if (j == i) return false;
        i = j;
    }
    if (i < n && s[i] == '.') {
        j = scan_digits(s, n, i + 1);
        if (j == i + 1) return false;
        i = j;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        j = scan_digits(s, n, i);
        if (j == i) return false;
        i = j;
    }
    *pi = i;
    return true;
}

static bool scan_literal(const unsigned char *s, size_t n, size_t *pi, const char *lit)
{
    size_t len = strlen(lit);

    if (n - *pi < len || memcmp(s + *pi, lit, len) != 0) return false;
    *pi += len;
    return true;
}

enum scan_state { SCAN_VALUE, SCAN_KEY, SCAN_AFTER };

int msg_json_check(const char *text, size_t len, int max_depth)
{
    const unsigned char *s = (const unsigned char *)text;
    char open[MSG_DEPTH_CAP]; /* '{' or '[' per level */
    enum scan_state st = SCAN_VALUE;
    int depth = 0;
    size_t i = 0;

    if (text == NULL) return SC_EJSON;
    if (max_depth < 1) max_depth = 1;
    if (max_depth > MSG_DEPTH_CAP) max_depth = MSG_DEPTH_CAP;
    for (;;) {
        i = skip_ws(s, len, i);
        if (st == SCAN_AFTER) {
            if (depth == 0) return i == len ? SC_OK : SC_EJSON;
            if (i >= len) return SC_EJSON;
            if (s[i] == ',') {
                i++;
                st = open[depth - 1] == '{' ? SCAN_KEY : SCAN_VALUE;
            } else if (s[i] == (open[depth - 1] == '{' ? '}' : ']')) {
                i++;
                depth--;
            } else {
                return SC_EJSON;
            }
            continue;
        }
        if (i >= len) return SC_EJSON;
        if (st == SCAN_KEY) {
            if (s[i] != '"' || !scan_string(s, len, &i)) return SC_EJSON;
            i = skip_ws(s, len, i);
            if (i >= len || s[i] != ':') return SC_EJSON;
            i++;
            st = SCAN_VALUE;
            continue;
        }
        /* SCAN_VALUE */
        switch (s[i]) {
        case '{':
        case '[':
            if (depth >= max_depth) return SC_ETOOLARGE;
            open[depth++] = (char)s[i];
            i = skip_ws(s, len, i + 1);
            if (i < len && s[i] == (open[depth - 1] == '{' ? '}' : ']')) {
                i++;
                depth--;
                st = SCAN_AFTER;
            } else {
                st = open[depth - 1] == '{' ? SCAN_KEY : SCAN_VALUE;
            }
            continue;
        case '"':
            if (!scan_string(s, len, &i)) return SC_EJSON;
            break;
        case 't':
            if (!scan_literal(s, len, &i, "true")) return SC_EJSON;
            break;
        case 'f':
            if (!scan_literal(s, len, &i, "false")) return SC_EJSON;
            break;
        case 'n':
            if (!scan_literal(s, len, &i, "null")) return SC_EJSON;
            break;
        default:
            if (s[i] != '-' && (s[i] < '0' || s[i] > '9')) return SC_EJSON;
            if (!scan_number(s, len, &i)) return SC_EJSON;
            break;
        }
        st = SCAN_AFTER;
    }
}

int msg_json_valid(const char *text, size_t len)
{
    return msg_json_check(text, len, MSG_JSON_MAX_DEPTH) == SC_OK;
}

/* ---- client message parser ---- */

static const struct {
    const char *name;
    msg_type type;
} msg_types[] = {
    {"auth", MSG_AUTH},       {"subscribe", MSG_SUBSCRIBE}, {"unsubscribe", MSG_UNSUBSCRIBE},
    {"publish", MSG_PUBLISH}, {"refresh", MSG_REFRESH},     {"ping", MSG_PING},
    {"rpc", MSG_RPC},
};

const char *msg_type_name(msg_type type)
{
    for (size_t i = 0; i < sizeof msg_types / sizeof msg_types[0]; i++)
        if (msg_types[i].type == type) return msg_types[i].name;
    return "";
}

const char *msg_code(int status)
{
    switch (status) {
    case SC_EJSON: return "bad_json";
    case SC_EMALFORMED: return "bad_message";
    case SC_ETYPE: return "unknown_type";
    case SC_ETOPIC: return "bad_topic";
    case SC_ETOOLARGE: return "too_large";
    default: return "internal";
    }
}

int msg_topic_valid(const char *topic, size_t len)
{
    return len <= MSG_TOPIC_MAX && topic_valid_n(topic, len);
}

void msg_in_clear(msg_in *in)
{
    if (in == NULL) return;
    free(in->token);
    free(in->data);
    memset(in, 0, sizeof *in);
    in->since = -1;
}

static int fail(msg_in *out, int rc, const char *why)
{
    out->error = why;
    return rc;
}

/* ---- raw member text: ids and data are passed on as the client wrote them ---- */

/* The raw text of one parsed message: the member values are cut from it, so numbers,
 * escapes and key order reach the other side byte for byte (jansson would print 0.1 as
 * 0.10000000000000001). */
typedef struct raw_msg {
    const unsigned char *s;
    size_t n;
    json_t *root; /* the same text parsed: an object without duplicate keys */
} raw_msg;

/* Index of a scalar or container value starting at s[i], in text that is valid JSON. */
static size_t skip_value(const unsigned char *s, size_t n, size_t i)
{
    size_t depth = 0;

    if (s[i] != '{' && s[i] != '[' && s[i] != '"') {
        while (i < n && strchr(",}] \t\r\n", s[i]) == NULL) i++;
        return i;
    }
    do {
        if (s[i] == '"') {
            scan_string(s, n, &i);
            continue;
        }
        if (s[i] == '{' || s[i] == '[')
            depth++;
        else if (s[i] == '}' || s[i] == ']')
            depth--;
        i++;
    } while (depth > 0 && i < n);
    return i;
}

/* Finds the raw value of member key of the root object: *off and *vlen. jansson keeps the
 * members in text order and the text has no duplicate keys, so the member's position among
 * jansson's keys is its position in the text (this also copes with escaped key names). */
static bool raw_member(const raw_msg *r, const char *key, size_t *off, size_t *vlen)
{
    const unsigned char *s = r->s;
    size_t idx = 0, i, end;
    void *it;

    for (it = json_object_iter(r->root); it != NULL; it = json_object_iter_next(r->root, it)) {
        if (strcmp(json_object_iter_key(it), key) == 0) break;
        idx++;
    }
    if (it == NULL) return false;
    i = skip_ws(s, r->n, 0) + 1; /* past '{' */
    for (size_t k = 0;; k++) {
        i = skip_ws(s, r->n, i);
        scan_string(s, r->n, &i);    /* the key */
        i = skip_ws(s, r->n, i) + 1; /* past ':' */
        i = skip_ws(s, r->n, i);
        end = skip_value(s, r->n, i);
        if (k == idx || end >= r->n) {
            *off = i;
            *vlen = end - i;
            return k == idx;
        }
        i = skip_ws(s, r->n, end) + 1; /* past ',' */
    }
}

/* Copies valid JSON s[0..n) without whitespace outside strings to dst (NULL: only counts).
 * Returns the length. */
static size_t compact_copy(char *dst, const unsigned char *s, size_t n)
{
    bool in_str = false, esc = false;
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];

        if (in_str) {
            if (esc)
                esc = false;
            else if (c == '\\')
                esc = true;
            else if (c == '"')
                in_str = false;
        } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            continue;
        } else if (c == '"') {
            in_str = true;
        }
        if (dst != NULL) dst[o] = (char)c;
        o++;
    }
    return o;
}

/* "id": absent/null, a string of at most MSG_ID_STR_MAX bytes, or an integer; kept as the
 * client wrote it. */
static int parse_id(const raw_msg *r, msg_in *out)
{
    json_t *v = json_object_get(r->root, "id");
    size_t off, n;

    if (v == NULL || json_is_null(v)) return SC_OK;
    if (!(json_is_string(v) && json_string_length(v) <= MSG_ID_STR_MAX) && !json_is_integer(v))
        return fail(out, SC_EMALFORMED,
                    "\"id\" must be a string of at most 64 bytes or an integer");
    /* Each byte of the value takes at most 6 bytes of text ("\u0041"), a character of
     * 2..4 bytes at most 3 per byte: 2 + 6 * 64 <= MSG_ID_JSON_MAX. */
    if (!raw_member(r, "id", &off, &n) || n == 0 || n > MSG_ID_JSON_MAX)
        return fail(out, SC_EMALFORMED, "\"id\" too long");
    memcpy(out->id, r->s + off, n);
    out->id[n] = '\0';
    return SC_OK;
}

static int parse_type(json_t *root, msg_in *out)
{
    json_t *v = json_object_get(root, "type");
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);

    if (s == NULL) return fail(out, SC_EMALFORMED, "missing or non-string \"type\"");
    for (size_t i = 0; i < sizeof msg_types / sizeof msg_types[0]; i++) {
        if (strlen(msg_types[i].name) == n && memcmp(msg_types[i].name, s, n) == 0) {
            out->type = msg_types[i].type;
            return SC_OK;
        }
    }
    return fail(out, SC_ETYPE, "unknown message type");
}

static int parse_topic(json_t *root, msg_in *out)
{
    json_t *v = json_object_get(root, "topic");
    size_t n = json_string_length(v);

    if (v == NULL) return fail(out, SC_EMALFORMED, "missing \"topic\"");
    if (!json_is_string(v)) return fail(out, SC_EMALFORMED, "\"topic\" must be a string");
    if (!msg_topic_valid(json_string_value(v), n))
        return fail(out, SC_ETOPIC,
                    "topic must be 1-128 bytes of [A-Za-z0-9_-] tokens separated by dots");
    memcpy(out->topic, json_string_value(v), n);
    out->topic[n] = '\0';
    return SC_OK;
}

static int parse_method(json_t *root, msg_in *out)
{
    json_t *v = json_object_get(root, "method");
    size_t n = json_string_length(v);

    if (v == NULL) return fail(out, SC_EMALFORMED, "missing \"method\"");
    if (!json_is_string(v)) return fail(out, SC_EMALFORMED, "\"method\" must be a string");
    if (!msg_topic_valid(json_string_value(v), n))
        return fail(out, SC_EMALFORMED,
                    "method must be 1-128 bytes of [A-Za-z0-9_-] tokens separated by dots");
    memcpy(out->topic, json_string_value(v), n);
    out->topic[n] = '\0';
    return SC_OK;
}

static int parse_since(json_t *root, msg_in *out)
{
    json_t *v = json_object_get(root, "since");
    json_int_t s;

    if (v == NULL || json_is_null(v)) return SC_OK;
    if (json_is_string(v) && strcmp(json_string_value(v), "last") == 0 &&
        json_string_length(v) == 4) {
        out->since = MSG_SINCE_LAST;
        return SC_OK;
    }
    if (!json_is_integer(v) || (s = json_integer_value(v)) < 0 || s > MSG_SINCE_MAX)
        return fail(out, SC_EMALFORMED, "\"since\" must be an integer 0..2^53 or \"last\"");
    out->since = s;
    return SC_OK;
}

static int parse_mode(json_t *root, msg_in *out)
{
    json_t *v = json_object_get(root, "mode");

    if (v == NULL || json_is_null(v)) return SC_OK;
    if (!json_is_string(v) || json_string_length(v) != 6 ||
        strcmp(json_string_value(v), "latest") != 0)
        return fail(out, SC_EMALFORMED, "\"mode\" must be \"latest\" (or absent)");
    out->latest = true;
    return SC_OK;
}

static int parse_token(json_t *root, const msg_limits *lim, msg_in *out)
{
    json_t *v = json_object_get(root, "token");
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);

    if (s == NULL) return fail(out, SC_EMALFORMED, "missing or non-string \"token\"");
    if (n > lim->max_token) return fail(out, SC_ETOOLARGE, "token too large");
    if (n == 0 || memchr(s, '\0', n) != NULL)
        return fail(out, SC_EMALFORMED, "malformed \"token\"");
    if ((out->token = malloc(n + 1)) == NULL) return fail(out, -ENOMEM, "out of memory");
    memcpy(out->token, s, n + 1);
    out->token_len = n;
    return SC_OK;
}

static int parse_data(const raw_msg *r, const msg_limits *lim, msg_in *out)
{
    size_t off, n;

    if (json_object_get(r->root, "data") == NULL)
        return fail(out, SC_EMALFORMED, "missing \"data\"");
    if (!raw_member(r, "data", &off, &n) || n == 0)
        return fail(out, SC_EMALFORMED, "malformed \"data\"");
    out->data_len = compact_copy(NULL, r->s + off, n);
    if (out->data_len > lim->max_data) return fail(out, SC_ETOOLARGE, "data too large");
    if ((out->data = malloc(out->data_len + 1)) == NULL) return fail(out, -ENOMEM, "out of memory");
    compact_copy(out->data, r->s + off, n);
    out->data[out->data_len] = '\0';
    return SC_OK;
}

/* Parses the text with jansson once the pre-check passed; maps its failures. */
static int load(const char *text, size_t len, json_t **root, msg_in *out)
{
    json_error_t jerr;

    *root = json_loadb(text, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (*root != NULL) return SC_OK;
    switch (json_error_code(&jerr)) {
    case json_error_duplicate_key: return fail(out, SC_EJSON, "duplicate key");
    case json_error_numeric_overflow: return fail(out, SC_EJSON, "number out of range");
    case json_error_out_of_memory: return fail(out, -ENOMEM, "out of memory");
    default: return fail(out, SC_EJSON, "invalid JSON");
    }
}

int msg_parse(const char *text, size_t len, const msg_limits *lim, msg_in *out)
{
    static const msg_limits defaults = MSG_LIMITS_DEFAULT;
    json_t *root = NULL;
    raw_msg r;
    int rc;

    memset(out, 0, sizeof *out);
    out->since = -1;
    if (lim == NULL) lim = &defaults;
    if (len > lim->max_text) return fail(out, SC_ETOOLARGE, "message too large");
    if (len > 0 && memchr(text, '\0', len) != NULL)
        return fail(out, SC_EJSON, "NUL byte in message");
    rc = msg_json_check(text, len, lim->max_depth);
    if (rc == SC_ETOOLARGE) return fail(out, rc, "JSON nested too deep");
    if (rc != SC_OK) return fail(out, rc, "invalid JSON");
    if ((rc = load(text, len, &root, out)) != SC_OK) goto done;
    if (!json_is_object(root)) {
        rc = fail(out, SC_EMALFORMED, "message must be a JSON object");
        goto done;
    }
    r = (raw_msg){(const unsigned char *)text, len, root};
    if ((rc = parse_id(&r, out)) != SC_OK || (rc = parse_type(root, out)) != SC_OK) goto done;
    switch (out->type) {
    case MSG_AUTH:
    case MSG_REFRESH: rc = parse_token(root, lim, out); break;
    case MSG_SUBSCRIBE:
        if ((rc = parse_topic(root, out)) == SC_OK && (rc = parse_since(root, out)) == SC_OK)
            rc = parse_mode(root, out);
        break;
    case MSG_UNSUBSCRIBE: rc = parse_topic(root, out); break;
    case MSG_PUBLISH:
        if ((rc = parse_topic(root, out)) == SC_OK) rc = parse_data(&r, lim, out);
        break;
    case MSG_RPC:
        if ((rc = parse_method(root, out)) != SC_OK) break;
        if (out->id[0] == '\0') {
            rc = fail(out, SC_EMALFORMED, "an rpc needs an \"id\" to answer to");
            break;
        }
        if (json_object_get(root, "data") == NULL || json_is_null(json_object_get(root, "data"))) {
            if ((out->data = malloc(5)) == NULL) {
                rc = fail(out, -ENOMEM, "out of memory");
                break;
            }
            memcpy(out->data, "null", 5);
            out->data_len = 4;
        } else {
            rc = parse_data(&r, lim, out);
        }
        break;
    case MSG_PING:
    case MSG_NONE: break;
    }
done:
    json_decref(root);
    if (rc != SC_OK) {
        free(out->token);
        free(out->data);
        out->token = out->data = NULL;
        out->token_len = out->data_len = 0;
        out->topic[0] = '\0';
        out->since = -1;
        out->latest = false;
    }
    return rc;
}

/* ---- edge -> client encoders ---- */

static void w_id(wbuf *w, const char *id_json)
{
    if (id_json != NULL && id_json[0] != '\0') {
        w_lit(w, ",\"id\":");
        w_raw(w, id_json, strlen(id_json));
    }
}

int msg_event_build(char *out, size_t cap, const char *topic, uint64_t seq, const char *data_json,
                    size_t data_len)
{
    wbuf w = {out, cap, 0};

    w_lit(&w, "{\"type\":\"event\",\"topic\":");
    w_cstr(&w, topic);
    w_lit(&w, ",\"seq\":");
    w_u64(&w, seq);
    w_lit(&w, ",\"data\":");
    if (data_len == 0 || data_json == NULL)
        w_lit(&w, "null");
    else
        w_raw(&w, data_json, data_len);
    w_lit(&w, "}");
    return w_end(&w);
}

size_t msg_event_size(size_t topic_len, size_t data_len)
{
    const size_t fixed = sizeof "{\"type\":\"event\",\"topic\":\"\",\"seq\":,\"data\":}" + 20;

    if (topic_len > SIZE_MAX / 8 || data_len > SIZE_MAX / 2) return SIZE_MAX;
    return fixed + 6 * topic_len + (data_len < 4 ? 4 : data_len);
}

int msg_welcome_build(char *out, size_t cap, const char *conn_id, const char *user,
                      int64_t expires_at, const char *edge)
{
    wbuf w = {out, cap, 0};

    w_lit(&w, "{\"type\":\"welcome\",\"conn_id\":");
    w_cstr(&w, conn_id);
    w_lit(&w, ",\"user\":");
    w_cstr(&w, user);
    w_lit(&w, ",\"expires_at\":");
    w_i64(&w, expires_at);
    w_lit(&w, ",\"edge\":");
    w_cstr(&w, edge);
    w_lit(&w, "}");
    return w_end(&w);
}

static int topic_msg(char *out, size_t cap, const char *head, size_t head_len, const char *topic)
{
    wbuf w = {out, cap, 0};

    w_raw(&w, head, head_len);
    w_cstr(&w, topic);
    w_lit(&w, "}");
    return w_end(&w);
}

int msg_subscribed_build(char *out, size_t cap, const char *topic)
{
    static const char head[] = "{\"type\":\"subscribed\",\"topic\":";
    return topic_msg(out, cap, head, sizeof head - 1, topic);
}

int msg_unsubscribed_build(char *out, size_t cap, const char *topic)
{
    static const char head[] = "{\"type\":\"unsubscribed\",\"topic\":";
    return topic_msg(out, cap, head, sizeof head - 1, topic);
}

static int id_msg(char *out, size_t cap, const char *head, size_t head_len, const char *id)
{
    wbuf w = {out, cap, 0};

    w_raw(&w, head, head_len);
    w_id(&w, id);
    w_lit(&w, "}");
    return w_end(&w);
}

int msg_ack_build(char *out, size_t cap, const char *id_json)
{
    static const char head[] = "{\"type\":\"ack\"";
    return id_msg(out, cap, head, sizeof head - 1, id_json);
}

int msg_pong_build(char *out, size_t cap, const char *id_json)
{
    static const char head[] = "{\"type\":\"pong\"";
    return id_msg(out, cap, head, sizeof head - 1, id_json);
}

int msg_error_build(char *out, size_t cap, const char *id_json, const char *code,
                    const char *message)
{
    wbuf w = {out, cap, 0};

    w_lit(&w, "{\"type\":\"error\"");
    w_id(&w, id_json);
    w_lit(&w, ",\"code\":");
    w_cstr(&w, code);
    w_lit(&w, ",\"message\":");
    w_cstr(&w, message);
    w_lit(&w, "}");
    return w_end(&w);
}

int msg_replay_error_build(char *out, size_t cap, const char *topic, const char *code,
                           const char *message, uint64_t oldest)
{
    wbuf w = {out, cap, 0};

    w_lit(&w, "{\"type\":\"error\",\"code\":");
    w_cstr(&w, code);
    w_lit(&w, ",\"message\":");
    w_cstr(&w, message);
    w_lit(&w, ",\"topic\":");
    w_cstr(&w, topic);
    if (oldest) {
        w_lit(&w, ",\"oldest\":");
        w_u64(&w, oldest);
    }
    w_lit(&w, "}");
    return w_end(&w);
}

static int expiry_msg(char *out, size_t cap, const char *head, size_t head_len, int64_t expires_at)
{
    wbuf w = {out, cap, 0};

    w_raw(&w, head, head_len);
    w_i64(&w, expires_at);
    w_lit(&w, "}");
    return w_end(&w);
}

int msg_token_expiring_build(char *out, size_t cap, int64_t expires_at)
{
    static const char head[] = "{\"type\":\"token_expiring\",\"expires_at\":";
    return expiry_msg(out, cap, head, sizeof head - 1, expires_at);
}

int msg_refreshed_build(char *out, size_t cap, int64_t expires_at)
{
    static const char head[] = "{\"type\":\"refreshed\",\"expires_at\":";
    return expiry_msg(out, cap, head, sizeof head - 1, expires_at);
}

int msg_rpc_result_build(char *out, size_t cap, const char *id_json, const char *data_json,
                         size_t data_len)
{
    wbuf w = {out, cap, 0};

    w_lit(&w, "{\"type\":\"rpc_result\"");
    w_id(&w, id_json);
    w_lit(&w, ",\"data\":");
    if (data_len == 0 || data_json == NULL)
        w_lit(&w, "null");
    else
        w_raw(&w, data_json, data_len);
    w_lit(&w, "}");
    return w_end(&w);
}

size_t msg_rpc_result_size(size_t id_len, size_t data_len)
{
    return sizeof "{\"type\":\"rpc_result\",\"id\":,\"data\":null}" + id_len + data_len;
}

int msg_ack_stored_build(char *out, size_t cap, const char *id_json, int duplicate)
{
    wbuf w = {out, cap, 0};

    w_lit(&w, "{\"type\":\"ack\"");
    w_id(&w, id_json);
    if (duplicate)
        w_lit(&w, ",\"duplicate\":true}");
    else
        w_lit(&w, ",\"duplicate\":false}");
    return w_end(&w);
}
