/* form.h - percent-decoding and application/x-www-form-urlencoded parsing (bodies and query
 * strings), into JSON objects of strings.
 *
 * Pure: no I/O, no logging. Decoded text must be valid UTF-8 without NUL bytes, because it
 * ends up in JSON strings that services read. Prefix form_. */
#ifndef SC_FORM_H
#define SC_FORM_H

#include <errno.h>
#include <jansson.h>
#include <stddef.h>

#include "err.h"

/* Failures: SC_EMALFORMED (bad %-escape, encoded NUL, invalid UTF-8, empty name when
 * strict), SC_EDUPLICATE (a name given twice, strict), SC_ETOOLARGE (more pairs than
 * allowed), -ENOMEM. */

/* Flags of form_parse. */
enum {
    FORM_STRICT = 1, /* reject duplicate and empty names (request bodies, RFC 6749 §3.2);
                        otherwise the first value of a name wins and empty names are skipped
                        (query strings) */
};

/* Percent-decodes src[0..len) into dst, which must hold len + 1 bytes; '+' becomes a space
 * when plus_space is set. dst is NUL-terminated. Returns the decoded length, or SC_EMALFORMED
 * for a malformed escape, an encoded NUL or a result that is not valid UTF-8. */
long form_pct_decode(const char *src, size_t len, int plus_space, char *dst);

/* 1 when s[0..len) is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
int form_utf8_valid(const char *s, size_t len);

/* Parses "a=1&b=x+y" into a new JSON object {"a":"1","b":"x y"}; a pair without '=' has the
 * value "". Empty pairs ("&&") are skipped. At most max_pairs pairs (0: 256). On SC_OK
 * *out is a new reference the caller releases; on error *out is NULL and err (may be NULL)
 * holds a short reason that may name the offending parameter (never its value). */
int form_parse(const char *s, size_t len, int flags, size_t max_pairs, json_t **out, char *err,
               size_t errlen);

#endif
