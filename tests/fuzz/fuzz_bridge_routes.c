/* fuzz_bridge_routes.c - libFuzzer target for the bridge's route file (services/bridge/zmap.c),
 * which is external input: a deployment's BRIDGE_ROUTES, and the ZeroMQ topics and bodies it
 * maps, which come from other systems.
 *
 * The first input byte picks what the rest feeds:
 *   0  route file text -> zmap_parse (then a few fixed topics are mapped through it)
 *   1  "TABLE\0TOPIC" -> zmap_parse, then zmap_topic of TOPIC (any bytes) on every endpoint
 *   2  a body -> zmap_data in each payload mode, with a bound from the second byte
 * Oracles: a parsed table respects every documented bound; a mapped topic is a valid topic
 * of at most TOPIC_MAX bytes; converted data is valid JSON for the edge (msg_json_valid) and
 * never longer than its bound; the rest is for the sanitizers. */
#include "../../services/bridge/zmap.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "proto/msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_table(const zmap *m)
{
    if (m->n < 1 || m->n > ZMAP_MAX_ENDPOINTS) abort();
    for (size_t i = 0; i < m->n; i++) {
        const zmap_endpoint *ep = &m->v[i];
        if (strlen(ep->endpoint) > ZMAP_MAX_ENDPOINT_LEN) abort();
        if (ep->nrules < 1 || ep->nrules > ZMAP_MAX_RULES) abort();
        if (ep->socket == ZMAP_SUB && (ep->nsubscribe < 1 || !ep->topic_frame)) abort();
        if (ep->socket == ZMAP_PULL && ep->nsubscribe != 0) abort();
        if (ep->nsubscribe > ZMAP_MAX_SUBSCRIBE && ep->nsubscribe > ep->nrules) abort();
        for (size_t r = 0; r < ep->nrules; r++)
            if (ep->rules[r].matchlen > ZMAP_MAX_MATCH ||
                strlen(ep->rules[r].topic) > ZMAP_MAX_TEMPLATE)
                abort();
    }
}

static void map_one(const zmap *m, const char *t, size_t n)
{
    char out[TOPIC_MAX + 1];
    for (size_t i = 0; i < m->n; i++) {
        int rc = zmap_topic(&m->v[i], t, n, out);
        if (strlen(out) > TOPIC_MAX) abort();
        if (rc >= 0) {
            if ((size_t)rc >= m->v[i].nrules || !topic_valid(out)) abort();
        } else if (rc != -ENOENT && rc != SC_ETOPIC) {
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    uint8_t mode = data[0] % 3;
    const char *rest = (const char *)data + 1;
    size_t n = size - 1;
    char err[512];
    zmap *m = NULL;

    switch (mode) {
    case 0:
        if (zmap_parse(rest, n, &m, err, sizeof err) == 0) {
            check_table(m);
            map_one(m, "prices.BTC", 10);
            map_one(m, "hashblock", 9);
            map_one(m, "", 0);
            zmap_destroy(m);
        } else if (m || !err[0]) {
            abort();
        }
        break;
    case 1: {
        const char *nul = memchr(rest, '\0', n);
        if (!nul) break;
        size_t tlen = (size_t)(nul - rest);
        if (zmap_parse(rest, tlen, &m, err, sizeof err) == 0) {
            check_table(m);
            map_one(m, nul + 1, n - tlen - 1);
            zmap_destroy(m);
        }
        break;
    }
    case 2: {
        if (n < 1) break;
        size_t max = (size_t)(uint8_t)rest[0] * 16;
        for (int p = ZMAP_JSON; p <= ZMAP_BASE64; p++) {
            char *d = NULL;
            size_t dl = 0;
            int rc = zmap_data((enum zmap_payload)p, rest + 1, n - 1, max, &d, &dl);
            if (rc == 0) {
                if (!d || dl > max || strlen(d) != dl || !msg_json_valid(d, dl)) abort();
            } else if (d || (rc != SC_ETOOLARGE && rc != SC_EJSON && rc != -ENOMEM)) {
                abort();
            }
            free(d);
        }
        break;
    }
    }
    return 0;
}
