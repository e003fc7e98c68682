/* fuzz_client_wire.c - libFuzzer target for the C client library's pure parts
 * (clients/c/sc_wire.c): the first byte picks what the rest is.
 *   0: a handshake answer head, checked against a fixed accept key;
 *   1: an edge message (sc_wire_parse);
 *   2: the client's encoders with fuzzed topic, id and data (split at NUL bytes), whose output
 *      the edge's own parser (msg_parse) must read back as the same message.
 * Oracles: a head's length lies within the input; a parsed message's data lies within the
 * text and is one JSON value; every string is terminated inside its array; an encoded
 * publish or subscribe that the edge's parser reads is the same topic (and id); the sanitizers
 * report the rest. */
#include "../../clients/c/sc_wire.h"
#include "err.h"
#include "proto/msg.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_str(const char *s, size_t cap)
{
    if (!memchr(s, '\0', cap)) abort();
}

static void encoders(const char *in, size_t n)
{
    /* topic \0 id \0 data */
    const char *topic = in, *z1 = memchr(in, '\0', n);
    if (!z1) return;
    const char *id = z1 + 1, *z2 = memchr(id, '\0', n - (size_t)(id - in));
    if (!z2) return;
    const char *d = z2 + 1;
    size_t dl = n - (size_t)(d - in);
    char out[4096];
    int k = sc_wire_publish(out, sizeof out, topic, id, d, dl);
    if (k >= 0) {
        if ((size_t)k != strlen(out)) abort();
        msg_in m = {0};
        /* the edge may refuse it for its own limits (depth 32, duplicate keys, big numbers);
         * what it reads must be what was meant */
        if (msg_parse(out, (size_t)k, NULL, &m) == SC_OK &&
            (m.type != MSG_PUBLISH || strcmp(m.topic, topic) != 0 || m.id[0] != '"'))
            abort();
        msg_in_clear(&m);
    } else if (k != -EINVAL && k != -ENOSPC) {
        abort();
    }
    k = sc_wire_subscribe(out, sizeof out, topic, 7, (int64_t)(dl & 0xffff) - 1, dl & 1, dl & 2);
    if (k >= 0) {
        msg_in m = {0};
        if (msg_parse(out, (size_t)k, NULL, &m) != SC_OK || m.type != MSG_SUBSCRIBE ||
            strcmp(m.topic, topic) != 0 || strcmp(m.id, "7") != 0)
            abort();
        msg_in_clear(&m);
    }
    k = sc_wire_refresh(out, sizeof out, id);
    if (k >= 0 && (size_t)k != strlen(out)) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int what = data[0] % 3;
    char *buf = malloc(size); /* exactly the input: ASan sees a read past it */
    if (!buf) return 0;
    size_t n = size - 1;
    memcpy(buf, data + 1, n);
    if (what == 0) {
        int st;
        int hl = sc_wire_handshake_parse(buf, n, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", &st);
        if (hl >= 0 && ((size_t)hl > n || st != 101)) abort();
        if (hl < 0 && hl != SC_EINCOMPLETE && hl != -EPROTO) abort();
    } else if (what == 1) {
        sc_wire_msg m;
        int rc = sc_wire_parse(buf, n, &m);
        if (rc != 0 && rc != -EPROTO) abort();
        if (rc == 0) {
            check_str(m.topic, sizeof m.topic);
            check_str(m.id_str, sizeof m.id_str);
            check_str(m.code, sizeof m.code);
            check_str(m.message, sizeof m.message);
            if (m.data) {
                bool inside = m.data >= buf && m.data + m.data_len <= buf + n;
                if (!inside && strcmp(m.data, "null") != 0) abort();
                if (inside && msg_json_check(m.data, m.data_len, MSG_DEPTH_CAP) != SC_OK) abort();
            }
            if (m.type == SC_WIRE_EVENT && (m.seq < 0 || !m.data)) abort();
        }
    } else {
        char *z = malloc(n + 1);
        if (z) {
            memcpy(z, buf, n);
            z[n] = '\0';
            encoders(z, n);
            free(z);
        }
    }
    free(buf);
    return 0;
}
