/* sc_wire.c - the C client library's pure parts: URLs, the handshake's answer, messages. */
#include "sc_wire.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "err.h"
#include "proto/msg.h"

int sc_wire_url_parse(const char *s, sc_wire_url *u)
{
    int rc = ws_url_parse(s, u);
    if (rc == 0 && strcmp(u->scheme, "ws") != 0 && strcmp(u->scheme, "wss") != 0) rc = -EINVAL;
    return rc;
}

/* The value of header name in head[0..len) (lines after the status line), trimmed; NULL when
 * absent. */
static const char *head_get(const char *head, size_t len, const char *name, size_t *vl)
{
    size_t nl = strlen(name);
    const char *p = memchr(head, '\n', len), *end = head + len;
    while (p && p + 1 < end) {
        const char *line = p + 1;
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol) break;
        if ((size_t)(eol - line) > nl && line[nl] == ':' && strncasecmp(line, name, nl) == 0) {
            const char *v = line + nl + 1, *ve = eol;
            while (v < ve && (*v == ' ' || *v == '\t')) v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) ve--;
            *vl = (size_t)(ve - v);
            return v;
        }
        p = eol;
    }
    return NULL;
}

int sc_wire_handshake_parse(const char *buf, size_t len, const char *accept, int *status)
{
    *status = 0;
    size_t scan = len < SC_WIRE_HEAD_MAX ? len : SC_WIRE_HEAD_MAX;
    const char *e = memmem(buf, scan, "\r\n\r\n", 4);
    if (!e) return len >= SC_WIRE_HEAD_MAX ? -EPROTO : SC_EINCOMPLETE;
    size_t hl = (size_t)(e - buf) + 4;
    if (hl < 12 || strncmp(buf, "HTTP/1.1 ", 9) != 0) return -EPROTO;
    int st = 0;
    for (int i = 9; i < 12; i++) {
        if (buf[i] < '0' || buf[i] > '9') return -EPROTO;
        st = st * 10 + (buf[i] - '0');
    }
    *status = st;
    if (st != 101) return -EPROTO;
    size_t vl;
    const char *v = head_get(buf, hl - 2, "Sec-WebSocket-Accept", &vl);
    if (!v || vl != strlen(accept) || memcmp(v, accept, vl) != 0) return -EPROTO;
    v = head_get(buf, hl - 2, "Upgrade", &vl);
    if (!v || vl != 9 || strncasecmp(v, "websocket", 9) != 0) return -EPROTO;
    v = head_get(buf, hl - 2, "Sec-WebSocket-Protocol", &vl);
    if (v && (vl != 11 || memcmp(v, "sidecast.v1", 11) != 0)) return -EPROTO;
    if (head_get(buf, hl - 2, "Sec-WebSocket-Extensions", &vl)) return -EPROTO; /* none offered */
    return (int)hl;
}

static void copy_str(char *dst, size_t cap, json_t *v)
{
    const char *s = json_string_value(v);
    snprintf(dst, cap, "%s", s ? s : "");
}

/* The end of the JSON value starting at p (text already known to be valid JSON): past its
 * closing quote or bracket, or its last scalar byte. */
static const char *value_end(const char *p, const char *e)
{
    int depth = 0;
    bool in_str = false;
    for (; p < e; p++) {
        char ch = *p;
        if (in_str) {
            if (ch == '\\')
                p++;
            else if (ch == '"') {
                in_str = false;
                if (depth == 0) return p + 1;
            }
        } else if (ch == '"') {
            in_str = true;
        } else if (ch == '{' || ch == '[') {
            depth++;
        } else if (ch == '}' || ch == ']') {
            if (depth == 0) return p; /* a scalar ended by its container */
            if (--depth == 0) return p + 1;
        } else if (depth == 0 &&
                   (ch == ',' || ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r')) {
            return p;
        }
    }
    return e;
}

/* The raw text of the top-level "data" member. The edge writes it after members (type,
 * topic, seq, id) whose values cannot hold the text "data":, so the first one is it; members
 * after it (the edge's "skipped" of mode latest) are left alone. Checked to be one JSON
 * value; else -1. */
static int raw_data(const char *text, size_t len, const char **d, size_t *dl)
{
    const char *p = memmem(text, len, "\"data\":", 7);
    if (!p) return -1;
    const char *s = p + 7, *e = text + len;
    while (s < e && (*s == ' ' || *s == '\n' || *s == '\r' || *s == '\t')) s++;
    const char *end = value_end(s, e);
    if (end <= s || msg_json_check(s, (size_t)(end - s), MSG_DEPTH_CAP) != SC_OK) return -1;
    *d = s;
    *dl = (size_t)(end - s);
    return 0;
}

int sc_wire_parse(const char *text, size_t len, sc_wire_msg *m)
{
    memset(m, 0, sizeof *m);
    m->seq = -1;
    json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
    const char *type = json_string_value(json_object_get(o, "type"));
    int rc = -EPROTO;
    if (!json_is_object(o) || !type) goto out;
    static const struct {
        const char *name;
        sc_wire_type type;
    } types[] = {{"welcome", SC_WIRE_WELCOME},
                 {"subscribed", SC_WIRE_SUBSCRIBED},
                 {"unsubscribed", SC_WIRE_UNSUBSCRIBED},
                 {"event", SC_WIRE_EVENT},
                 {"ack", SC_WIRE_ACK},
                 {"error", SC_WIRE_ERROR},
                 {"token_expiring", SC_WIRE_TOKEN_EXPIRING},
                 {"refreshed", SC_WIRE_REFRESHED},
                 {"pong", SC_WIRE_PONG},
                 {"rpc_result", SC_WIRE_RPC_RESULT}};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strcmp(type, types[i].name) == 0) m->type = types[i].type;
    json_t *id = json_object_get(o, "id");
    if (json_is_integer(id)) {
        m->id_int = true;
        m->id_num = json_integer_value(id);
    } else if (json_is_string(id)) {
        m->has_id_str = json_string_length(id) <= SC_WIRE_ID_MAX;
        copy_str(m->id_str, sizeof m->id_str, id);
    }
    json_t *topic = json_object_get(o, "topic");
    if (topic && (!json_is_string(topic) || json_string_length(topic) > SC_WIRE_TOPIC_MAX))
        goto out;
    copy_str(m->topic, sizeof m->topic, topic);
    json_t *exp = json_object_get(o, "expires_at");
    if (json_is_integer(exp)) m->expires_at = json_integer_value(exp);
    switch (m->type) {
    case SC_WIRE_EVENT: {
        json_t *seq = json_object_get(o, "seq");
        if (!topic || !json_is_integer(seq) || json_integer_value(seq) < 0) goto out;
        m->seq = json_integer_value(seq);
        json_t *sk = json_object_get(o, "skipped");
        if (json_is_integer(sk) && json_integer_value(sk) > 0) m->skipped = json_integer_value(sk);
        if (!json_object_get(o, "data")) {
            m->data = "null";
            m->data_len = 4;
        } else if (raw_data(text, len, &m->data, &m->data_len) < 0) {
            goto out;
        }
        break;
    }
    case SC_WIRE_RPC_RESULT:
        if (!m->id_int) goto out;
        if (!json_object_get(o, "data")) {
            m->data = "null";
            m->data_len = 4;
        } else if (raw_data(text, len, &m->data, &m->data_len) < 0) {
            goto out;
        }
        break;
    case SC_WIRE_ERROR: {
        copy_str(m->code, sizeof m->code, json_object_get(o, "code"));
        copy_str(m->message, sizeof m->message, json_object_get(o, "message"));
        json_t *oldest = json_object_get(o, "oldest");
        if (json_is_integer(oldest)) m->oldest = json_integer_value(oldest);
        if (!m->code[0]) goto out;
        break;
    }
    case SC_WIRE_ACK: m->duplicate = json_is_true(json_object_get(o, "duplicate")); break;
    case SC_WIRE_WELCOME:
        copy_str(m->conn_id, sizeof m->conn_id, json_object_get(o, "conn_id"));
        copy_str(m->edge, sizeof m->edge, json_object_get(o, "edge"));
        break;
    case SC_WIRE_SUBSCRIBED:
    case SC_WIRE_UNSUBSCRIBED:
        if (!topic) goto out;
        break;
    default: break;
    }
    rc = 0;
out:
    json_decref(o);
    return rc;
}

int sc_wire_topic_valid(const char *s) { return msg_topic_valid(s, strlen(s)); }

/* Appends what fmt writes; -ENOSPC when out is full. */
static int put(char *out, size_t cap, size_t *at, const char *s, size_t n)
{
    if (*at + n + 1 > cap) return -ENOSPC;
    memcpy(out + *at, s, n);
    *at += n;
    out[*at] = '\0';
    return 0;
}

int sc_wire_subscribe(char *out, size_t cap, const char *topic, int64_t id, int64_t since,
                      bool since_last, bool latest)
{
    if (!sc_wire_topic_valid(topic)) return -EINVAL;
    char sin[40] = "";
    if (since >= 0)
        snprintf(sin, sizeof sin, ",\"since\":%" PRId64, since);
    else if (since_last)
        snprintf(sin, sizeof sin, ",\"since\":\"last\"");
    int n = snprintf(out, cap, "{\"type\":\"subscribe\",\"topic\":\"%s\",\"id\":%" PRId64 "%s%s}",
                     topic, id, sin, latest ? ",\"mode\":\"latest\"" : "");
    return n < 0 || (size_t)n >= cap ? -ENOSPC : n;
}

int sc_wire_unsubscribe(char *out, size_t cap, const char *topic)
{
    if (!sc_wire_topic_valid(topic)) return -EINVAL;
    int n = snprintf(out, cap, "{\"type\":\"unsubscribe\",\"topic\":\"%s\"}", topic);
    return n < 0 || (size_t)n >= cap ? -ENOSPC : n;
}

int sc_wire_publish(char *out, size_t cap, const char *topic, const char *id, const char *data,
                    size_t data_len)
{
    if (!sc_wire_topic_valid(topic) || strlen(id) > SC_WIRE_ID_MAX ||
        msg_json_check(data, data_len, MSG_JSON_MAX_DEPTH) != SC_OK)
        return -EINVAL;
    int n = snprintf(out, cap, "{\"type\":\"publish\",\"topic\":\"%s\",\"id\":", topic);
    if (n < 0 || (size_t)n >= cap) return -ENOSPC;
    size_t at = (size_t)n;
    int il = msg_json_string(out + at, cap - at, id, strlen(id));
    if (il < 0) return -ENOSPC;
    at += (size_t)il;
    if (put(out, cap, &at, ",\"data\":", 8) < 0 || put(out, cap, &at, data, data_len) < 0 ||
        put(out, cap, &at, "}", 1) < 0)
        return -ENOSPC;
    return (int)at;
}

int sc_wire_rpc(char *out, size_t cap, const char *method, int64_t id, const char *data,
                size_t data_len)
{
    if (!sc_wire_topic_valid(method) || msg_json_check(data, data_len, MSG_JSON_MAX_DEPTH) != SC_OK)
        return -EINVAL;
    int n = snprintf(out, cap,
                     "{\"type\":\"rpc\",\"id\":%" PRId64 ",\"method\":\"%s\",\"data\":", id,
                     method);
    if (n < 0 || (size_t)n >= cap) return -ENOSPC;
    size_t at = (size_t)n;
    if (put(out, cap, &at, data, data_len) < 0 || put(out, cap, &at, "}", 1) < 0) return -ENOSPC;
    return (int)at;
}

int sc_wire_refresh(char *out, size_t cap, const char *token)
{
    int n = snprintf(out, cap, "{\"type\":\"refresh\",\"token\":");
    if (n < 0 || (size_t)n >= cap) return -ENOSPC;
    size_t at = (size_t)n;
    int tl = msg_json_string(out + at, cap - at, token, strlen(token));
    if (tl < 0) return -ENOSPC;
    at += (size_t)tl;
    if (put(out, cap, &at, "}", 1) < 0) return -ENOSPC;
    return (int)at;
}

int64_t sc_wire_backoff(int attempt, int64_t base_ms, int64_t cap_ms, uint64_t rnd)
{
    if (base_ms <= 0 || cap_ms <= 0) return 0;
    int64_t ceil = base_ms;
    for (int i = 0; i < attempt && ceil < cap_ms; i++) ceil *= 2;
    if (ceil > cap_ms) ceil = cap_ms;
    return (int64_t)(rnd % (uint64_t)(ceil + 1));
}

bool sc_wire_close_retryable(int code)
{
    switch (code) {
    case 1002:
    case 1007:
    case 1008:
    case 1009:
    case 4003: return false;
    default: return true;
    }
}
