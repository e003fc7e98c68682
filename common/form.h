/* form.h - percent-decoding and application/x-www-form-urlencoded parsing (bodies and query
 * strings), into JSON objects of strings.
 *
 * Pure: no I/O, no logging. Decoded text must be valid UTF-8 without NUL bytes, because it
 * ends up in JSON strings that services read. Prefix form_. */
#ifndef SC_FORM_H
#define SC_FORM_H

#include <stddef.h>
#include <jansson.h>

enum form_err {
    FORM_OK = 0,
    FORM_EBAD = -1,     /* bad %-escape, encoded NUL, invalid UTF-8, empty name (strict) */
    FORM_EDUP = -2,     /* a name given twice (strict) */
    FORM_ETOOMANY = -3, /* more pairs than allowed */
    FORM_ENOMEM = -4,
};

/* Flags of form_parse. */
enum {
    FORM_STRICT = 1, /* reject duplicate and empty names (request bodies, RFC 6749 §3.2);
                        otherwise the first value of a name wins and empty names are skipped
                        (query strings) */
};

/* Percent-decodes src[0..len) into dst, which must hold len + 1 bytes; '+' becomes a space
 * when plus_space is set. dst is NUL-terminated. Returns the decoded length, or FORM_EBAD
 * for a malformed escape, an encoded NUL or a result that is not valid UTF-8. */
long form_pct_decode(const char *src, size_t len, int plus_space, char *dst);

/* 1 when s[0..len) is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
int form_utf8_valid(const char *s, size_t len);

/* Parses "a=1&b=x+y" into a new JSON object {"a":"1","b":"x y"}; a pair without '=' has the
 * value "". Empty pairs ("&&") are skipped. At most max_pairs pairs (0: 256). On FORM_OK
 * *out is a new reference the caller releases; on error *out is NULL and err (may be NULL)
 * holds a short reason that may name the offending parameter (never its value). */
int form_parse(const char *s, size_t len, int flags, size_t max_pairs, json_t **out, char *err,
               size_t errlen);

/* Short description of a form_err. */
const char *form_strerror(int err);

#endif
