/* fuzz_msg.c - libFuzzer target for common/proto/msg.c, the sidecast.v1 message codec.
 *
 * Every input goes, whole, through:
 *   1. msg_parse, with the default limits and with tight ones. Oracles: an accepted message
 *      has a known type, a valid topic where the type has one, a token / data within the
 *      limits, data and id texts that jansson loads to the same values it reads from the
 *      whole message, an id that is a JSON string or integer; a rejected
 *      one owns nothing and has a reason. The replies built from it (error, ack, pong, and
 *      event for a publish) must load with jansson.
 *   2. msg_json_check against jansson (inputs without NUL bytes, where jansson stops): if
 *      ours accepts, jansson must too unless a number overflows; if ours rejects as invalid,
 *      jansson must reject.
 *   3. msg_json_string: the output must be valid JSON (both checkers) holding a string, of
 *      the length msg_json_string_len said, equal to the input when no U+FFFD was needed.
 *
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Icommon \
 *   tests/fuzz/fuzz_msg.c common/proto/msg.c $(pkg-config --cflags --libs jansson) \
 *   -o fuzz_msg */
#include "proto/msg.h"

#include <jansson.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_LOAD_FLAGS (JSON_DECODE_ANY | JSON_ALLOW_NUL)

/* Aborts unless text[0..len) is one JSON value of jansson type want (or any when -1). */
static void fuzz_must_load(const char *text, size_t len, int want)
{
    json_error_t err;
    json_t *j = json_loadb(text, len, FUZZ_LOAD_FLAGS | JSON_REJECT_DUPLICATES, &err);

    if (j == NULL || (want >= 0 && (int)json_typeof(j) != want)) abort();
    if (msg_json_check(text, len, MSG_DEPTH_CAP) != SC_OK) abort();
    json_decref(j);
}

static void fuzz_replies(const msg_in *m, int rc)
{
    static char out[1 << 17];
    int n;

    n = msg_error_build(out, sizeof out, m->id, msg_code(rc), rc ? m->error : "ok");
    if (n < 0) abort();
    fuzz_must_load(out, (size_t)n, JSON_OBJECT);
    n = msg_ack_build(out, sizeof out, m->id);
    if (n < 0) abort();
    fuzz_must_load(out, (size_t)n, JSON_OBJECT);
    n = msg_pong_build(out, sizeof out, m->id);
    if (n < 0) abort();
    fuzz_must_load(out, (size_t)n, JSON_OBJECT);
    if (rc == SC_OK && m->type == MSG_PUBLISH) {
        if (msg_event_size(strlen(m->topic), m->data_len) > sizeof out) return;
        n = msg_event_build(out, sizeof out, m->topic, (uint64_t)1 << 53, m->data, m->data_len);
        if (n < 0 || (size_t)n + 1 > msg_event_size(strlen(m->topic), m->data_len)) abort();
        fuzz_must_load(out, (size_t)n, JSON_OBJECT);
    }
}

/* Aborts unless raw (JSON text cut from the message) holds the value jansson reads for
 * member key of the message text. */
static void fuzz_same_member(const char *text, size_t len, const char *key, const char *raw)
{
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL);
    json_t *v = json_loadb(raw, strlen(raw), FUZZ_LOAD_FLAGS, NULL);

    if (v == NULL || !json_equal(json_object_get(root, key), v)) abort();
    json_decref(v);
    json_decref(root);
}

static void fuzz_parse(const char *text, size_t len, const msg_limits *lim)
{
    msg_in m;
    int rc = msg_parse(text, len, lim, &m);
    json_t *j;

    if (rc == SC_OK) {
        if (m.type == MSG_NONE || m.error != NULL) abort();
        if ((m.type == MSG_SUBSCRIBE || m.type == MSG_UNSUBSCRIBE || m.type == MSG_PUBLISH) &&
            !msg_topic_valid(m.topic, strlen(m.topic)))
            abort();
        if ((m.type == MSG_AUTH || m.type == MSG_REFRESH) &&
            (m.token == NULL || m.token_len == 0 || m.token_len > lim->max_token ||
             strlen(m.token) != m.token_len))
            abort();
        if (m.type == MSG_PUBLISH) {
            if (m.data == NULL || m.data_len > lim->max_data || strlen(m.data) != m.data_len)
                abort();
            fuzz_must_load(m.data, m.data_len, -1);
            fuzz_same_member(text, len, "data", m.data);
        }
        if (m.id[0] != '\0') fuzz_same_member(text, len, "id", m.id);
        if (m.since < -1 || m.since > MSG_SINCE_MAX || (m.since != -1 && m.type != MSG_SUBSCRIBE))
            abort();
    } else {
        if (m.token != NULL || m.data != NULL || m.error == NULL || m.error[0] == '\0' ||
            m.topic[0] != '\0')
            abort();
        if (strcmp(msg_code(rc), "internal") == 0 && rc != -ENOMEM) abort();
    }
    if (m.id[0] != '\0') {
        j = json_loadb(m.id, strlen(m.id), FUZZ_LOAD_FLAGS, NULL);
        if (!json_is_integer(j) && !(json_is_string(j) && json_string_length(j) <= 64)) abort();
        json_decref(j);
    }
    fuzz_replies(&m, rc);
    msg_in_clear(&m);
}

static void fuzz_check(const char *text, size_t len)
{
    json_error_t err;
    json_t *j;
    int ours = msg_json_check(text, len, MSG_DEPTH_CAP);

    int low = msg_json_check(text, len, MSG_JSON_MAX_DEPTH);

    if (low != ours && low != SC_ETOOLARGE)
        abort(); /* a lower depth limit can only turn a result into SC_ETOOLARGE */
    if (memchr(text, '\0', len) != NULL) {
        if (ours == SC_OK) abort();
        return;
    }
    j = json_loadb(text, len, FUZZ_LOAD_FLAGS, &err);
    if (ours == SC_OK && j == NULL && json_error_code(&err) != json_error_numeric_overflow) abort();
    if (ours == SC_EJSON && j != NULL) abort();
    json_decref(j);
}

static void fuzz_string(const char *s, size_t n)
{
    size_t need = msg_json_string_len(s, n);
    char *out = malloc(need + 1);
    json_t *j;
    int len;

    if (out == NULL) return;
    len = msg_json_string(out, need + 1, s, n);
    if (len < 0 || (size_t)len != need || msg_json_string(out, need, s, n) != -1) abort();
    len = msg_json_string(out, need + 1, s, n);
    fuzz_must_load(out, (size_t)len, JSON_STRING);
    j = json_loadb(out, (size_t)len, FUZZ_LOAD_FLAGS, NULL);
    /* no U+FFFD in the result that was not in the input: the input came back unchanged */
    if (memmem(json_string_value(j), json_string_length(j), "\xef\xbf\xbd", 3) == NULL &&
        (json_string_length(j) != n || memcmp(json_string_value(j), s, n) != 0))
        abort();
    json_decref(j);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const msg_limits def = MSG_LIMITS_DEFAULT;
    static const msg_limits tight = {1024, 64, 32, 4};
    const char *text = (const char *)data;

    fuzz_parse(text, size, &def);
    fuzz_parse(text, size, &tight);
    fuzz_check(text, size);
    fuzz_string(text, size);
    return 0;
}
