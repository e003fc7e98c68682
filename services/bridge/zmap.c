/* zmap.c - the bridge's route file parser, topic mapping and payload conversion (pure). */
#include "zmap.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "err.h"
#include "proto/msg.h"

/* ---- parsing ------------------------------------------------------------------------- */

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static int printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f || *s == '"' || *s == '\\') return 0;
    return 1;
}

static int endpoint_ok(const char *e)
{
    size_t n = strlen(e);
    if (n == 0 || n > ZMAP_MAX_ENDPOINT_LEN || !printable(e)) return 0;
    /* the transports a bridge to other machines or processes means; inproc:// is only
     * reachable from inside this process */
    return (strncmp(e, "tcp://", 6) == 0 && n > 6) || (strncmp(e, "ipc://", 6) == 0 && n > 6);
}

/* Checks a template: literal topic characters, ${topic}, and ${1} when prefix. Substitutes
 * "x" for each variable and checks the result is a topic, so that "a..${1}" or "${1}." are
 * refused at start and not at every message. */
static int template_ok(const char *t, int prefix, char *why, size_t whylen)
{
    char sample[ZMAP_MAX_TEMPLATE + 1];
    size_t o = 0;
    if (!*t) return snprintf(why, whylen, "empty"), 0;
    if (strlen(t) > ZMAP_MAX_TEMPLATE)
        return snprintf(why, whylen, "longer than %d bytes", ZMAP_MAX_TEMPLATE), 0;
    for (const char *p = t; *p;) {
        if (p[0] == '$' && p[1] == '{') {
            const char *end = strchr(p, '}');
            size_t vl = end ? (size_t)(end - p - 2) : 0;
            if (end && vl == 5 && strncmp(p + 2, "topic", 5) == 0) {
            } else if (end && vl == 1 && p[2] == '1') {
                if (!prefix) {
                    snprintf(why, whylen, "${1} needs a prefix match (one ending in *)");
                    return 0;
                }
            } else {
                snprintf(why, whylen, "%.*s is not a variable (${topic}, ${1})",
                         end ? (int)(end - p + 1) : 2, p);
                return 0;
            }
            sample[o++] = 'x';
            p = end + 1;
            continue;
        }
        sample[o++] = *p++;
    }
    sample[o] = '\0';
    if (!topic_valid(sample)) {
        snprintf(why, whylen,
                 "\"%s\" does not make a valid topic (tokens of [A-Za-z0-9_-] "
                 "separated by single dots)",
                 t);
        return 0;
    }
    return 1;
}

static char *dupn(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static int one_of(const char *key, const char *const *keys)
{
    for (; *keys; keys++)
        if (strcmp(key, *keys) == 0) return 1;
    return 0;
}

static int parse_rules(json_t *map, zmap_endpoint *ep, const char *at, char *err, size_t errlen)
{
    static const char *const keys[] = {"match", "topic", NULL};
    if (!json_is_array(map) || json_array_size(map) == 0)
        return fail(err, errlen, "%s.map: must be a non-empty array of {match, topic}", at);
    if (json_array_size(map) > ZMAP_MAX_RULES)
        return fail(err, errlen, "%s.map: more than %d rules", at, ZMAP_MAX_RULES);
    ep->rules = calloc(json_array_size(map), sizeof *ep->rules);
    if (!ep->rules) return fail(err, errlen, "out of memory");
    for (size_t i = 0; i < json_array_size(map); i++) {
        json_t *r = json_array_get(map, i), *m, *t;
        const char *key;
        json_t *v;
        char why[256];
        if (!json_is_object(r))
            return fail(err, errlen, "%s.map[%zu]: must be an object {match, topic}", at, i);
        json_object_foreach(r, key, v) {
            if (!one_of(key, keys))
                return fail(err, errlen, "%s.map[%zu]: unknown key \"%s\"", at, i, key);
        }
        m = json_object_get(r, "match");
        t = json_object_get(r, "topic");
        if (!json_is_string(m))
            return fail(err, errlen, "%s.map[%zu].match: missing or not a string", at, i);
        size_t ml = json_string_length(m);
        if (ml > ZMAP_MAX_MATCH || memchr(json_string_value(m), '\0', ml))
            return fail(err, errlen, "%s.map[%zu].match: longer than %d bytes or holds NUL", at, i,
                        ZMAP_MAX_MATCH);
        zmap_rule *rule = &ep->rules[ep->nrules];
        const char *ms = json_string_value(m);
        rule->prefix = ml > 0 && ms[ml - 1] == '*';
        rule->matchlen = rule->prefix ? ml - 1 : ml;
        if (!json_is_string(t))
            return fail(err, errlen, "%s.map[%zu].topic: missing or not a string", at, i);
        if (!template_ok(json_string_value(t), rule->prefix, why, sizeof why))
            return fail(err, errlen, "%s.map[%zu].topic: %s", at, i, why);
        rule->match = dupn(ms, rule->matchlen);
        rule->topic = strdup(json_string_value(t));
        ep->nrules++;
        if (!rule->match || !rule->topic) return fail(err, errlen, "out of memory");
    }
    return 0;
}

/* A SUB socket with no "subscribe": what its rules can match. */
static int default_subscribe(zmap_endpoint *ep)
{
    ep->subscribe = calloc(ep->nrules, sizeof *ep->subscribe);
    if (!ep->subscribe) return -1;
    for (size_t i = 0; i < ep->nrules; i++) {
        const zmap_rule *r = &ep->rules[i];
        if (r->prefix && r->matchlen == 0) { /* "*": everything, and nothing else needed */
            for (size_t j = 0; j < ep->nsubscribe; j++) free(ep->subscribe[j]);
            ep->nsubscribe = 0;
            ep->subscribe[ep->nsubscribe++] = strdup("");
            return ep->subscribe[0] ? 0 : -1;
        }
        if (!(ep->subscribe[ep->nsubscribe++] = dupn(r->match, r->matchlen))) return -1;
    }
    return 0;
}

static int parse_endpoint(json_t *e, size_t idx, zmap_endpoint *ep, char *err, size_t errlen)
{
    static const char *const keys[] = {"endpoint", "socket",   "bind", "topic_frame", "subscribe",
                                       "payload",  "sequence", "map",  NULL};
    char at[32];
    const char *key, *s;
    json_t *v;
    snprintf(at, sizeof at, "endpoints[%zu]", idx);
    if (!json_is_object(e)) return fail(err, errlen, "%s: must be an object", at);
    json_object_foreach(e, key, v) {
        if (!one_of(key, keys)) return fail(err, errlen, "%s: unknown key \"%s\"", at, key);
    }
    v = json_object_get(e, "endpoint");
    if (!json_is_string(v) || !endpoint_ok(json_string_value(v)))
        return fail(err, errlen,
                    "%s.endpoint: must be a ZeroMQ address \"tcp://host:port\" or "
                    "\"ipc://path\" (at most %d printable bytes)",
                    at, ZMAP_MAX_ENDPOINT_LEN);
    if (!(ep->endpoint = strdup(json_string_value(v)))) return fail(err, errlen, "out of memory");

    v = json_object_get(e, "socket");
    s = json_string_value(v);
    if (s && strcmp(s, "sub") == 0)
        ep->socket = ZMAP_SUB;
    else if (s && strcmp(s, "pull") == 0)
        ep->socket = ZMAP_PULL;
    else
        return fail(err, errlen, "%s.socket: must be \"sub\" or \"pull\"", at);

    v = json_object_get(e, "bind");
    if (v && !json_is_boolean(v)) return fail(err, errlen, "%s.bind: must be true or false", at);
    ep->bind = json_is_true(v);
    v = json_object_get(e, "topic_frame");
    if (v && !json_is_boolean(v))
        return fail(err, errlen, "%s.topic_frame: must be true or false", at);
    ep->topic_frame = v ? json_is_true(v) : ep->socket == ZMAP_SUB;
    if (ep->socket == ZMAP_SUB && !ep->topic_frame)
        return fail(err, errlen,
                    "%s.topic_frame: a sub socket filters on its first frame, which is the "
                    "topic; false is for pull only",
                    at);

    v = json_object_get(e, "payload");
    s = v ? json_string_value(v) : "json";
    if (s && strcmp(s, "json") == 0)
        ep->payload = ZMAP_JSON;
    else if (s && strcmp(s, "text") == 0)
        ep->payload = ZMAP_TEXT;
    else if (s && strcmp(s, "base64") == 0)
        ep->payload = ZMAP_BASE64;
    else
        return fail(err, errlen, "%s.payload: must be \"json\", \"text\" or \"base64\"", at);

    v = json_object_get(e, "sequence");
    s = v ? json_string_value(v) : "none";
    if (s && strcmp(s, "le32") == 0)
        ep->seq_le32 = 1;
    else if (!s || strcmp(s, "none") != 0)
        return fail(err, errlen, "%s.sequence: must be \"none\" or \"le32\"", at);

    if (parse_rules(json_object_get(e, "map"), ep, at, err, errlen) < 0) return -1;

    v = json_object_get(e, "subscribe");
    if (v && ep->socket != ZMAP_SUB)
        return fail(err, errlen, "%s.subscribe: only a sub socket subscribes", at);
    if (v) {
        if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > ZMAP_MAX_SUBSCRIBE)
            return fail(err, errlen, "%s.subscribe: must be an array of 1 to %d strings", at,
                        ZMAP_MAX_SUBSCRIBE);
        ep->subscribe = calloc(json_array_size(v), sizeof *ep->subscribe);
        if (!ep->subscribe) return fail(err, errlen, "out of memory");
        for (size_t i = 0; i < json_array_size(v); i++) {
            json_t *p = json_array_get(v, i);
            if (!json_is_string(p) || json_string_length(p) > ZMAP_MAX_MATCH ||
                memchr(json_string_value(p), '\0', json_string_length(p)))
                return fail(err, errlen,
                            "%s.subscribe[%zu]: must be a string of at most %d "
                            "bytes without NUL",
                            at, i, ZMAP_MAX_MATCH);
            if (!(ep->subscribe[ep->nsubscribe++] = strdup(json_string_value(p))))
                return fail(err, errlen, "out of memory");
        }
    } else if (ep->socket == ZMAP_SUB && default_subscribe(ep) < 0) {
        return fail(err, errlen, "out of memory");
    }
    return 0;
}

int zmap_parse(const char *text, size_t len, zmap **out, char *err, size_t errlen)
{
    json_error_t je;
    json_t *doc = NULL, *eps;
    const char *key;
    json_t *v;
    zmap *m = NULL;
    int rc = -1;

    *out = NULL;
    if (len > ZMAP_MAX_FILE) return fail(err, errlen, "larger than %d bytes", ZMAP_MAX_FILE);
    doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!doc) {
        fail(err, errlen, "not JSON: %s (line %d, column %d)", je.text, je.line, je.column);
        goto done;
    }
    if (!json_is_object(doc)) {
        fail(err, errlen, "must be an object {\"endpoints\": [...]}");
        goto done;
    }
    json_object_foreach(doc, key, v) {
        if (strcmp(key, "endpoints") != 0) {
            fail(err, errlen, "unknown key \"%s\" (only \"endpoints\")", key);
            goto done;
        }
    }
    eps = json_object_get(doc, "endpoints");
    if (!json_is_array(eps) || json_array_size(eps) == 0 ||
        json_array_size(eps) > ZMAP_MAX_ENDPOINTS) {
        fail(err, errlen, "endpoints: must be an array of 1 to %d endpoints", ZMAP_MAX_ENDPOINTS);
        goto done;
    }
    if (!(m = calloc(1, sizeof *m)) || !(m->v = calloc(json_array_size(eps), sizeof *m->v))) {
        fail(err, errlen, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < json_array_size(eps); i++) {
        m->n++;
        if (parse_endpoint(json_array_get(eps, i), i, &m->v[i], err, errlen) < 0) goto done;
        for (size_t j = 0; j < i; j++)
            if (strcmp(m->v[j].endpoint, m->v[i].endpoint) == 0) {
                fail(err, errlen, "endpoints[%zu].endpoint: %s is endpoints[%zu] already", i,
                     m->v[i].endpoint, j);
                goto done;
            }
    }
    *out = m;
    m = NULL;
    rc = 0;
done:
    zmap_destroy(m);
    json_decref(doc);
    return rc;
}

void zmap_destroy(zmap *m)
{
    if (!m) return;
    for (size_t i = 0; i < m->n; i++) {
        zmap_endpoint *ep = &m->v[i];
        free(ep->endpoint);
        for (size_t j = 0; j < ep->nsubscribe; j++) free(ep->subscribe[j]);
        free(ep->subscribe);
        for (size_t j = 0; j < ep->nrules; j++) {
            free(ep->rules[j].match);
            free(ep->rules[j].topic);
        }
        free(ep->rules);
    }
    free(m->v);
    free(m);
}

/* ---- mapping ------------------------------------------------------------------------- */

static const zmap_rule *find_rule(const zmap_endpoint *ep, const char *t, size_t n, size_t *idx)
{
    for (size_t i = 0; i < ep->nrules; i++) {
        const zmap_rule *r = &ep->rules[i];
        if (r->prefix ? n >= r->matchlen && memcmp(t, r->match, r->matchlen) == 0
                      : n == r->matchlen && memcmp(t, r->match, n) == 0) {
            *idx = i;
            return r;
        }
    }
    return NULL;
}

/* Appends s[0..n) to out at *o, up to TOPIC_MAX + 1 bytes (one more than a topic may have,
 * so that an overlong result is seen as such). */
static void put(char *out, size_t *o, const char *s, size_t n)
{
    size_t room = TOPIC_MAX + 1 - *o;
    if (n > room) n = room;
    memcpy(out + *o, s, n);
    *o += n;
}

int zmap_topic(const zmap_endpoint *ep, const char *t, size_t n, char out[TOPIC_MAX + 1])
{
    char buf[TOPIC_MAX + 2] = "";
    size_t idx, o = 0;
    const zmap_rule *r = find_rule(ep, t, n, &idx);
    out[0] = '\0';
    if (!r) return -ENOENT;
    for (const char *p = r->topic; *p;) {
        if (p[0] == '$' && p[1] == '{') { /* zmap_parse let only ${topic} and ${1} through */
            if (p[2] == '1')
                put(buf, &o, t + r->matchlen, n - r->matchlen);
            else
                put(buf, &o, t, n);
            p = strchr(p, '}') + 1;
        } else {
            put(buf, &o, p++, 1);
        }
    }
    if (o > TOPIC_MAX || !topic_valid_n(buf, o) || memchr(buf, '\0', o)) {
        size_t k = o > TOPIC_MAX ? TOPIC_MAX : o;
        memcpy(out, buf, k);
        out[k] = '\0';
        return SC_ETOPIC;
    }
    memcpy(out, buf, o);
    out[o] = '\0';
    return (int)idx;
}

/* ---- payload ------------------------------------------------------------------------- */

int zmap_data(enum zmap_payload mode, const void *b, size_t n, size_t max, char **out,
              size_t *outlen)
{
    size_t need;
    char *d;
    *out = NULL;
    *outlen = 0;
    switch (mode) {
    case ZMAP_JSON:
        if (n > max) return SC_ETOOLARGE;
        if (!msg_json_valid(b, n)) return SC_EJSON;
        if (!(d = dupn(b, n))) return -ENOMEM;
        *out = d;
        *outlen = n;
        return 0;
    case ZMAP_TEXT:
        if (n > max) return SC_ETOOLARGE; /* the string is never shorter than its bytes */
        need = msg_json_string_len(b, n);
        if (need > max) return SC_ETOOLARGE;
        if (!(d = malloc(need + 1))) return -ENOMEM;
        if (msg_json_string(d, need + 1, b, n) < 0) {
            free(d);
            return SC_ETOOLARGE;
        }
        *out = d;
        *outlen = need;
        return 0;
    case ZMAP_BASE64:
        need = 4 * ((n + 2) / 3) + 2; /* and the quotes */
        if (n > max || need > max || n > (size_t)0x3fffffff) return SC_ETOOLARGE;
        if (!(d = malloc(need + 2))) return -ENOMEM; /* + NUL of EVP_EncodeBlock, + NUL */
        d[0] = '"';
        EVP_EncodeBlock((unsigned char *)d + 1, b, (int)n);
        d[need - 1] = '"';
        d[need] = '\0';
        *out = d;
        *outlen = need;
        return 0;
    }
    return -EINVAL;
}

int64_t zmap_le32(const void *f, size_t n)
{
    const unsigned char *p = f;
    if (n != 4) return -1;
    return (int64_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                     (uint32_t)p[3] << 24);
}
