/* form.c - percent-decoding and x-www-form-urlencoded parsing; see form.h. */
#include "form.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FORM_DEFAULT_MAX_PAIRS 256
#define FORM_ERR_NAME_MAX 48 /* bytes of a parameter name quoted in an error message */

static int form_hex(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int form_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        unsigned c = *p;
        if (c < 0x80) {
            p++;
            continue;
        }
        size_t n;
        unsigned min, cp;
        if (c >= 0xC2 && c <= 0xDF)
            n = 1, min = 0x80, cp = c & 0x1F;
        else if (c >= 0xE0 && c <= 0xEF)
            n = 2, min = 0x800, cp = c & 0x0F;
        else if (c >= 0xF0 && c <= 0xF4)
            n = 3, min = 0x10000, cp = c & 0x07;
        else
            return 0;
        if ((size_t)(end - p) < n + 1) return 0;
        for (size_t i = 1; i <= n; i++) {
            if ((p[i] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        p += n + 1;
    }
    return 1;
}

long form_pct_decode(const char *src, size_t len, int plus_space, char *dst)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = src[i];
        if (c == '%') {
            int hi, lo;
            if (len - i < 3) return SC_EMALFORMED;
            hi = form_hex((unsigned char)src[i + 1]);
            lo = form_hex((unsigned char)src[i + 2]);
            if (hi < 0 || lo < 0) return SC_EMALFORMED;
            c = (char)(hi * 16 + lo);
            if (c == '\0') return SC_EMALFORMED;
            i += 2;
        } else if (c == '+' && plus_space) {
            c = ' ';
        } else if (c == '\0') {
            return SC_EMALFORMED;
        }
        dst[o++] = c;
    }
    dst[o] = '\0';
    if (!form_utf8_valid(dst, o)) return SC_EMALFORMED;
    return (long)o;
}

/* Copies a decoded name into an error message, cut on a UTF-8 boundary. */
static void form_errf(char *err, size_t errlen, const char *what, const char *name)
{
    if (!err || !errlen) return;
    size_t n = strlen(name);
    if (n > FORM_ERR_NAME_MAX) {
        n = FORM_ERR_NAME_MAX;
        while (n > 0 && ((unsigned char)name[n] & 0xC0) == 0x80) n--;
    }
    snprintf(err, errlen, "%s '%.*s'", what, (int)n, name);
}

static void form_err0(char *err, size_t errlen, const char *what)
{
    if (err && errlen) snprintf(err, errlen, "%s", what);
}

int form_parse(const char *s, size_t len, int flags, size_t max_pairs, json_t **out, char *err,
               size_t errlen)
{
    int rc = SC_OK;
    size_t npairs = 0;
    char *buf = NULL;
    json_t *obj = json_object();
    *out = NULL;
    if (!max_pairs) max_pairs = FORM_DEFAULT_MAX_PAIRS;
    /* name and value of one pair, each NUL-terminated: at most len + 2 bytes ("a" -> "a\0\0") */
    if (!obj || !(buf = malloc(len + 2))) {
        rc = -ENOMEM;
        form_err0(err, errlen, "out of memory");
        goto error;
    }
    size_t i = 0;
    while (len > 0 && i <= len) {
        const char *pair = s + i;
        const char *amp = memchr(pair, '&', len - i);
        size_t plen = amp ? (size_t)(amp - pair) : len - i;
        i += plen + 1;
        if (plen == 0) continue;
        if (++npairs > max_pairs) {
            rc = SC_ETOOLARGE;
            form_err0(err, errlen, "too many parameters");
            goto error;
        }
        const char *eq = memchr(pair, '=', plen);
        size_t nlen = eq ? (size_t)(eq - pair) : plen;
        /* name and value decode into one buffer: name first, value right after its NUL */
        long dn = form_pct_decode(pair, nlen, 1, buf);
        if (dn < 0) {
            rc = SC_EMALFORMED;
            form_err0(err, errlen, "malformed parameter name encoding");
            goto error;
        }
        char *val = buf + dn + 1;
        long dv = eq ? form_pct_decode(eq + 1, plen - nlen - 1, 1, val) : 0;
        if (!eq) val[0] = '\0';
        if (dv < 0) {
            rc = SC_EMALFORMED;
            form_errf(err, errlen, "malformed encoding in parameter", buf);
            goto error;
        }
        if (dn == 0) {
            if (flags & FORM_STRICT) {
                rc = SC_EMALFORMED;
                form_err0(err, errlen, "empty parameter name");
                goto error;
            }
            continue;
        }
        if (json_object_get(obj, buf)) {
            if (flags & FORM_STRICT) {
                rc = SC_EDUPLICATE;
                form_errf(err, errlen, "duplicate parameter", buf);
                goto error;
            }
            continue; /* first value wins */
        }
        json_t *v = json_stringn_nocheck(val, (size_t)dv);
        if (!v || json_object_set_new_nocheck(obj, buf, v) != 0) {
            rc = -ENOMEM;
            form_err0(err, errlen, "out of memory");
            goto error;
        }
    }
    free(buf);
    *out = obj;
    return SC_OK;
error:
    free(buf);
    json_decref(obj);
    return rc;
}
