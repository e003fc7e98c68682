/* meta.c - request ids, trace context, bearer credentials, media types, CORS origins;
 * see meta.h. */
#include "meta.h"

#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

static const char meta_hexdigits[] = "0123456789abcdef";

/* Random bytes for ids, taken from a per-thread buffer that libcrypto's generator refills
 * META_RAND_BUF bytes at a time: one RAND_bytes call per request id and traceparent cost
 * ~11% of the gateway's instructions per request (callgrind). The bytes are the same
 * generator's; they never leave the thread before use, and the gateway does not fork. */
#define META_RAND_BUF 1024
static __thread unsigned char meta_rand[META_RAND_BUF];
static __thread size_t meta_rand_left;

static void meta_random_hex(char *out, size_t nbytes)
{
    unsigned char raw[32];
    if (nbytes > sizeof raw) nbytes = sizeof raw;
    if (meta_rand_left < nbytes) {
        if (RAND_bytes(meta_rand, META_RAND_BUF) == 1) {
            meta_rand_left = META_RAND_BUF;
        } else if (getrandom(raw, nbytes, 0) != (ssize_t)nbytes) {
            /* libcrypto's generator failed and so did the kernel's (it does not for requests
             * this small once the pool is initialised) */
            memset(raw, 0x5a, nbytes);
        }
    }
    if (meta_rand_left >= nbytes) {
        memcpy(raw, meta_rand + META_RAND_BUF - meta_rand_left, nbytes);
        memset(meta_rand + META_RAND_BUF - meta_rand_left, 0, nbytes); /* used once only */
        meta_rand_left -= nbytes;
    }
    for (size_t i = 0; i < nbytes; i++) {
        out[2 * i] = meta_hexdigits[raw[i] >> 4];
        out[2 * i + 1] = meta_hexdigits[raw[i] & 15];
    }
    out[2 * nbytes] = '\0';
}

int meta_request_id_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > META_RID_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-'))
            return 0;
    }
    return 1;
}

void meta_request_id_new(char out[33]) { meta_random_hex(out, 16); }

static int meta_is_lhex(const char *s, size_t n, int *all_zero)
{
    int zero = 1;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return 0;
        if (c != '0') zero = 0;
    }
    if (all_zero) *all_zero = zero;
    return 1;
}

int meta_traceparent_parse(const char *s, char trace_id[33], char flags[3])
{
    int zero;
    if (!s) return -1;
    size_t n = strlen(s);
    if (n < META_TRACEPARENT_LEN) return -1;
    if (!meta_is_lhex(s, 2, NULL) || (s[0] == 'f' && s[1] == 'f')) return -1;
    int v00 = s[0] == '0' && s[1] == '0';
    if (v00 && n != META_TRACEPARENT_LEN) return -1;
    if (!v00 && n > META_TRACEPARENT_LEN && s[META_TRACEPARENT_LEN] != '-') return -1;
    if (s[2] != '-' || s[35] != '-' || s[52] != '-') return -1;
    if (!meta_is_lhex(s + 3, 32, &zero) || zero) return -1;
    if (!meta_is_lhex(s + 36, 16, &zero) || zero) return -1;
    if (!meta_is_lhex(s + 53, 2, NULL)) return -1;
    memcpy(trace_id, s + 3, 32);
    trace_id[32] = '\0';
    memcpy(flags, s + 53, 2);
    flags[2] = '\0';
    return 0;
}

void meta_traceparent_format(const char trace_id[33], const char span_id[17], const char flags[3],
                             char out[META_TRACEPARENT_LEN + 1])
{
    snprintf(out, META_TRACEPARENT_LEN + 1, "00-%.32s-%.16s-%.2s", trace_id, span_id, flags);
}

int meta_traceparent_next(const char *incoming, char out[META_TRACEPARENT_LEN + 1])
{
    char trace[33], flags[3], span[17];
    int continued = meta_traceparent_parse(incoming, trace, flags) == 0;
    if (!continued) {
        meta_random_hex(trace, 16);
        strcpy(flags, "01");
    } else if (incoming[0] != '0' || incoming[1] != '0') {
        /* a later version: we speak 00, which defines only the sampled bit */
        int f = (flags[1] >= 'a' ? flags[1] - 'a' + 10 : flags[1] - '0') & 1;
        strcpy(flags, f ? "01" : "00");
    }
    do meta_random_hex(span, 8);
    while (strcmp(span, "0000000000000000") == 0);
    meta_traceparent_format(trace, span, flags, out);
    return continued;
}

static int meta_b64token_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~' || c == '+' || c == '/';
}

int meta_bearer(const char *header, const char **tok, size_t *len)
{
    if (!header) return META_BEARER_NONE;
    while (*header == ' ' || *header == '\t') header++;
    if (strncasecmp(header, "Bearer", 6) != 0) return META_BEARER_NONE;
    const char *p = header + 6;
    if (*p != ' ' && *p != '\t' && *p != '\0') return META_BEARER_NONE; /* "Bearerx" */
    while (*p == ' ' || *p == '\t') p++;
    size_t n = 0;
    while (meta_b64token_char(p[n])) n++;
    size_t body = n;
    while (p[n] == '=') n++;
    size_t end = n;
    while (p[end] == ' ' || p[end] == '\t') end++;
    if (body == 0 || p[end] != '\0') return META_BEARER_INVALID;
    *tok = p;
    *len = n;
    return META_BEARER_OK;
}

/* Compares s[0..n) with lit, ignoring case. */
static int meta_ieq(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(s, lit, n) == 0;
}

enum meta_ctype meta_content_type(const char *value)
{
    if (!value) return META_CT_NONE;
    while (*value == ' ' || *value == '\t') value++;
    if (!*value) return META_CT_NONE;
    const char *semi = strchr(value, ';');
    size_t n = semi ? (size_t)(semi - value) : strlen(value);
    while (n > 0 && (value[n - 1] == ' ' || value[n - 1] == '\t')) n--;
    enum meta_ctype t = META_CT_OTHER;
    if (meta_ieq(value, n, "application/json")) {
        t = META_CT_JSON;
    } else if (meta_ieq(value, n, "application/x-www-form-urlencoded")) {
        t = META_CT_FORM;
    } else if (n > 17 && strncasecmp(value, "application/", 12) == 0 &&
               strncasecmp(value + n - 5, "+json", 5) == 0) {
        t = META_CT_JSON;
    }
    if (t == META_CT_OTHER) return t;
    /* parameters: only a charset matters, and only UTF-8 (or its ASCII subset) is read */
    while (semi) {
        const char *p = semi + 1;
        semi = strchr(p, ';');
        size_t plen = semi ? (size_t)(semi - p) : strlen(p);
        while (plen > 0 && (*p == ' ' || *p == '\t')) p++, plen--;
        while (plen > 0 && (p[plen - 1] == ' ' || p[plen - 1] == '\t')) plen--;
        if (plen >= 8 && strncasecmp(p, "charset=", 8) == 0) {
            const char *cs = p + 8;
            size_t cl = plen - 8;
            if (cl >= 2 && cs[0] == '"' && cs[cl - 1] == '"') cs++, cl -= 2;
            if (!meta_ieq(cs, cl, "utf-8") && !meta_ieq(cs, cl, "utf8") &&
                !meta_ieq(cs, cl, "us-ascii"))
                return META_CT_OTHER;
        }
    }
    return t;
}

int meta_origin_allowed(const char *list, const char *origin)
{
    if (!list || !origin || !*origin) return 0;
    size_t olen = strlen(origin);
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',') p++;
        const char *end = p;
        while (*end && *end != ',') end++;
        size_t n = (size_t)(end - p);
        while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
        if (n == 1 && p[0] == '*') return 1;
        if (n == olen && n > 0 && memcmp(p, origin, n) == 0) return 1;
        p = end;
    }
    return 0;
}

int meta_content_length(const char *value, unsigned long long *out)
{
    unsigned long long v = 0;
    size_t n = 0;
    if (!value) return -1;
    for (; value[n]; n++) {
        if (value[n] < '0' || value[n] > '9' || n >= 19) return -1;
        v = v * 10 + (unsigned long long)(value[n] - '0');
    }
    if (n == 0) return -1;
    *out = v;
    return 0;
}

int meta_scope_has(const char *claim, const char *want)
{
    size_t n = strlen(want);
    for (const char *p = claim; p && *p;) {
        while (*p == ' ') p++;
        const char *q = p;
        while (*q && *q != ' ') q++;
        if ((size_t)(q - p) == n && n && memcmp(p, want, n) == 0) return 1;
        p = q;
    }
    return 0;
}
