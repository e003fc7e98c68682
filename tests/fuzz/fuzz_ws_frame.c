/* fuzz_ws_frame.c - libFuzzer target for common/ws/ws_frame.c and ws_reader.c.
 *
 * Input: byte 0 flags (bit 0: structured, bit 1: grow the message buffer on demand instead of
 * giving a fixed one, bit 2: client side, i.e. unmasked frames), byte 1 picks max_message,
 * bytes 2-3 seed the chunking, then the stream. Raw mode feeds the rest as is; structured
 * mode reads it as frame specs [first header byte][length byte][payload...] (length byte
 * 0-127 as is, 128-254 times 131, 255: 65535 + the next byte) and builds
 * well-formed masked frames from them, so the fuzzer reaches fragmentation, UTF-8 and close
 * handling instead of stopping at the mask bit.
 * The stream goes through ws_reader three ways: whole, in random chunk sizes (0..300 bytes,
 * empty feeds included) with the chosen buffer mode, and through a reference that sees the
 * whole stream at once and assembles messages the simple way. All three must produce the
 * same events (type, code, reason, length, payload hash). Plus invariants on every event.
 *
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined tests/fuzz/fuzz_ws_frame.c \
 *   common/ws/ws_frame.c common/ws/ws_reader.c common/ws/utf8.c -o fuzz_ws_frame */
#include "ws/utf8.h"
#include "ws/ws_frame.h"
#include "ws/ws_reader.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ASSERT(c)                                                                                  \
    do {                                                                                           \
        if (!(c)) __builtin_trap();                                                                \
    } while (0)

#define MAX_STREAM (1u << 20)
#define MAXEV 256

static const size_t max_messages[8] = {0, 1, 3, 125, 126, 1000, 65536, 200000};

typedef struct evrec {
    int type;
    uint16_t code;
    int err;
    size_t len;
    uint64_t hash;
} evrec;
typedef struct evlog {
    size_t n;
    evrec ev[MAXEV];
} evlog;

static uint64_t fnv(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static void log_add(evlog *l, int type, const uint8_t *p, size_t len, uint16_t code, int err)
{
    if (l->n < MAXEV) l->ev[l->n++] = (evrec){type, code, err, len, fnv(p, len)};
}

static uint32_t rng_next(uint32_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

/* ---- the reader under test ---- */

static void check_event(const ws_event *ev, size_t max_message)
{
    switch (ev->type) {
    case WS_EV_TEXT:
        ASSERT(utf8_valid(ev->data, ev->len));
        /* fall through */
    case WS_EV_BINARY: ASSERT(ev->data != NULL && ev->len <= max_message); break;
    case WS_EV_PING:
    case WS_EV_PONG: ASSERT(ev->data != NULL && ev->len <= WS_FRAME_CTRL_MAX); break;
    case WS_EV_CLOSE: {
        ASSERT(ev->code == WS_CLOSE_NO_STATUS || ws_frame_close_code_valid(ev->code));
        ASSERT(ev->data != NULL && ev->len <= WS_FRAME_CTRL_MAX - 2);
        ASSERT(utf8_valid(ev->data, ev->len));
        /* what we would echo parses back to the same */
        uint8_t out[WS_FRAME_CTRL_MAX];
        const uint8_t *reason;
        size_t n = ws_frame_close_encode(out, ev->code == WS_CLOSE_NO_STATUS ? 0 : ev->code,
                                         (const char *)ev->data, ev->len),
               rlen;
        uint16_t code;
        ws_frame_err err;
        ASSERT(ws_frame_close_parse(out, n, &code, &reason, &rlen, &err) == 0);
        ASSERT(code == ev->code && rlen == ev->len);
        ASSERT(rlen == 0 || memcmp(reason, ev->data, rlen) == 0);
        break;
    }
    case WS_EV_ERROR:
        ASSERT(ev->code == 1002 || ev->code == 1007 || ev->code == 1009);
        ASSERT(ev->code == ws_frame_err_code(ev->err));
        ASSERT(ws_frame_err_str(ev->err)[0] != '\0');
        break;
    default: ASSERT(0);
    }
}

/* chunk_seed 0: the whole stream in one call. */
static void run_reader(const uint8_t *stream, size_t n, size_t max_message, bool from_client,
                       bool on_demand, uint32_t chunk_seed, evlog *log)
{
    ws_reader r;
    ws_reader_config cfg = {from_client, max_message};
    size_t cap = on_demand ? 0 : (max_message < n ? max_message : n);
    uint8_t *mbuf = cap ? malloc(cap) : NULL;
    uint8_t *chunk = malloc(n ? n : 1);
    size_t off = 0;
    bool finished = false;

    memset(log, 0, sizeof *log);
    ws_reader_init(&r, &cfg, mbuf, cap);
    while (off < n || chunk_seed) {
        size_t k = n - off;
        if (chunk_seed) {
            k = rng_next(&chunk_seed) % 301;
            if (k > n - off) k = n - off;
        }
        memcpy(chunk, stream + off, k); /* a fresh read buffer */
        uint8_t *in = chunk;
        size_t left = k;
        do {
            ws_event ev;
            size_t used = ws_reader_feed(&r, in, left, &ev);
            ASSERT(used <= left);
            in += used;
            left -= used;
            if (ev.type == WS_EV_NONE) {
                ASSERT(left == 0);
                break;
            }
            ASSERT(!finished);
            if (ev.type == WS_EV_NEED_BUFFER) {
                size_t keep = ws_reader_buffered(&r);
                ASSERT(ev.len > cap && ev.len <= max_message && keep <= cap);
                uint8_t *nb = malloc(ev.len); /* moved every time */
                if (keep) memcpy(nb, mbuf, keep);
                free(mbuf);
                mbuf = nb;
                cap = ev.len;
                ws_reader_set_buffer(&r, mbuf, cap);
                continue;
            }
            check_event(&ev, max_message);
            log_add(log, ev.type, ev.data, ev.len, ev.code, ev.err);
            if (ev.type == WS_EV_CLOSE || ev.type == WS_EV_ERROR) finished = true;
        } while (left > 0);
        off += k;
        if (off == n) break;
    }
    free(chunk);
    free(mbuf);
}

/* ---- the reference: whole stream, simple assembly ---- */

/* Table 3-7 over s[0..n): index of the first impossible byte or n; *boundary: end of the last
 * complete character before that. */
static size_t ref_utf8(const uint8_t *s, size_t n, size_t *boundary)
{
    size_t i = 0;
    *boundary = 0;
    while (i < n) {
        uint8_t c = s[i], lo = 0x80, hi = 0xBF;
        int need;
        if (c < 0x80) {
            *boundary = ++i;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c == 0xE0) {
            need = 2, lo = 0xA0;
        } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
            need = 2;
        } else if (c == 0xED) {
            need = 2, hi = 0x9F;
        } else if (c == 0xF0) {
            need = 3, lo = 0x90;
        } else if (c >= 0xF1 && c <= 0xF3) {
            need = 3;
        } else if (c == 0xF4) {
            need = 3, hi = 0x8F;
        } else {
            return i;
        }
        size_t j = i + 1;
        for (int k = 0; k < need; k++, j++) {
            if (j == n) return n;
            if (k == 0 ? (s[j] < lo || s[j] > hi) : (s[j] < 0x80 || s[j] > 0xBF)) return j;
        }
        *boundary = i = j;
    }
    return n;
}

static void reference(uint8_t *s, size_t n, size_t max_message, bool from_client, evlog *log)
{
    ws_frame_rules rules = {from_client, 0, max_message};
    uint8_t *acc = malloc(n ? n : 1);
    size_t pos = 0, msg_len = 0, checked = 0; /* acc[0..checked) ends on a character */
    int msg_op = 0;

    memset(log, 0, sizeof *log);
    for (;;) {
        ws_frame_header h;
        ws_frame_err err = WS_ERR_NONE;
        int rc = ws_frame_decode(s + pos, n - pos, &rules, &h, &err);
        if (rc == SC_EINCOMPLETE) break;
        if (rc < 0) {
            log_add(log, WS_EV_ERROR, NULL, 0, ws_frame_err_code(err), err);
            break;
        }
        pos += (size_t)rc;
        int op = h.opcode;
        if (op == WS_OP_CONT) {
            if (!msg_op) {
                log_add(log, WS_EV_ERROR, NULL, 0, 1002, WS_ERR_CONT);
                break;
            }
            if (msg_len + h.len > max_message) {
                log_add(log, WS_EV_ERROR, NULL, 0, 1009, WS_ERR_MSG_SIZE);
                break;
            }
        } else if (op == WS_OP_TEXT || op == WS_OP_BINARY) {
            if (msg_op) {
                log_add(log, WS_EV_ERROR, NULL, 0, 1002, WS_ERR_INTERLEAVE);
                break;
            }
            msg_op = op;
            msg_len = checked = 0;
        }
        size_t avail = h.len < n - pos ? (size_t)h.len : n - pos;
        if (h.masked)
            for (size_t i = 0; i < avail; i++) s[pos + i] ^= h.mask[i & 3];
        if (op >= 8) {
            if (avail < h.len) break;
            const uint8_t *p = s + pos;
            if (op == WS_OP_CLOSE) {
                uint16_t code = WS_CLOSE_NO_STATUS;
                size_t b;
                if (avail == 1) {
                    log_add(log, WS_EV_ERROR, NULL, 0, 1002, WS_ERR_CLOSE_LEN);
                    break;
                }
                if (avail >= 2) {
                    code = (uint16_t)(p[0] << 8 | p[1]);
                    bool ok = (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
                              (code >= 3000 && code <= 4999);
                    if (!ok) {
                        log_add(log, WS_EV_ERROR, NULL, 0, 1002, WS_ERR_CLOSE_CODE);
                        break;
                    }
                    if (ref_utf8(p + 2, avail - 2, &b) != avail - 2 || b != avail - 2) {
                        log_add(log, WS_EV_ERROR, NULL, 0, 1007, WS_ERR_CLOSE_UTF8);
                        break;
                    }
                }
                log_add(log, WS_EV_CLOSE, avail > 2 ? p + 2 : p, avail > 2 ? avail - 2 : 0, code,
                        0);
                break;
            }
            log_add(log, op == WS_OP_PING ? WS_EV_PING : WS_EV_PONG, p, avail, 0, 0);
            pos += avail;
            continue;
        }
        memcpy(acc + msg_len, s + pos, avail);
        msg_len += avail;
        if (msg_op == WS_OP_TEXT) {
            size_t b, bad = ref_utf8(acc + checked, msg_len - checked, &b);
            if (bad < msg_len - checked) {
                log_add(log, WS_EV_ERROR, NULL, 0, 1007, WS_ERR_UTF8);
                break;
            }
            checked += b;
        }
        if (avail < h.len) break;
        pos += avail;
        if (h.fin) {
            if (msg_op == WS_OP_TEXT && checked != msg_len) {
                log_add(log, WS_EV_ERROR, NULL, 0, 1007, WS_ERR_UTF8);
                break;
            }
            log_add(log, msg_op == WS_OP_TEXT ? WS_EV_TEXT : WS_EV_BINARY, acc, msg_len, 0, 0);
            msg_op = 0;
            msg_len = 0;
        }
    }
    free(acc);
}

static void logs_equal(const evlog *a, const evlog *b)
{
    ASSERT(a->n == b->n);
    for (size_t i = 0; i < a->n; i++) {
        ASSERT(a->ev[i].type == b->ev[i].type);
        ASSERT(a->ev[i].code == b->ev[i].code);
        ASSERT(a->ev[i].err == b->ev[i].err);
        ASSERT(a->ev[i].len == b->ev[i].len);
        ASSERT(a->ev[i].hash == b->ev[i].hash);
    }
}

/* Structured mode: frame specs to masked (or, client side, unmasked) frames. */
static size_t build(const uint8_t *in, size_t n, bool masked, uint8_t *out)
{
    size_t i = 0, o = 0;
    uint32_t kseed = 0x12345678u;
    while (i + 2 <= n) {
        uint8_t b0 = in[i], lb = in[i + 1];
        size_t len = lb; /* 0..127: 7-bit lengths and the 126/127 boundary */
        i += 2;
        if (lb == 0xFF)
            len = 65535 + (i < n ? in[i++] : 0); /* 16/64-bit boundary */
        else if (lb & 0x80)
            len = (size_t)(lb & 0x7F) * 131; /* 16-bit lengths up to ~16 KB */
        if (o + WS_FRAME_HEADER_MAX + len > MAX_STREAM) break;
        uint32_t kv = rng_next(&kseed);
        uint8_t key[4];
        memcpy(key, &kv, 4);
        o += ws_frame_header_encode(out + o, b0 & 0x0F, (b0 & 0x80) != 0, b0 & 0x70, len,
                                    masked ? key : NULL);
        for (size_t k = 0; k < len; k++) /* payload from the input, repeated */
            out[o + k] = i < n ? in[i + k % (n - i)] : (uint8_t)'a';
        size_t used = len < n - i ? len : n - i;
        if (masked) ws_frame_unmask(out + o, len, key, 0);
        o += len;
        i += used;
    }
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t stream[MAX_STREAM];
    if (size < 4) return 0;
    bool structured = data[0] & 1, on_demand = (data[0] & 2) != 0, client_side = data[0] & 4;
    size_t max_message = max_messages[data[1] & 7];
    uint32_t seed = (uint32_t)data[2] << 8 | data[3] | 1u;
    const uint8_t *rest = data + 4;
    size_t n = size - 4;
    bool from_client = !client_side;

    if (structured) {
        n = build(rest, n, from_client, stream);
    } else {
        if (n > MAX_STREAM) n = MAX_STREAM;
        memcpy(stream, rest, n);
    }

    evlog whole, chunked, ref;
    run_reader(stream, n, max_message, from_client, false, 0, &whole);
    run_reader(stream, n, max_message, from_client, on_demand, seed, &chunked);
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, stream, n);
    reference(copy, n, max_message, from_client, &ref);
    free(copy);
    logs_equal(&whole, &ref);
    logs_equal(&chunked, &ref);

    /* the header decoder on the raw bytes: sane lengths, and a complete header stays the
     * same header when more bytes follow */
    ws_frame_rules rules = {from_client, (uint8_t)(data[0] & 0x70), max_message};
    ws_frame_header h1, h2;
    ws_frame_err e1 = WS_ERR_NONE, e2 = WS_ERR_NONE;
    int r1 = ws_frame_decode(rest, size - 4, &rules, &h1, &e1);
    ASSERT(r1 == SC_EINCOMPLETE || r1 == SC_EMALFORMED || (r1 >= 2 && r1 <= 14));
    if (r1 > 0) {
        ASSERT((size_t)r1 <= size - 4);
        ASSERT(ws_frame_decode(rest, (size_t)r1, &rules, &h2, &e2) == r1);
        ASSERT(h1.len == h2.len && h1.opcode == h2.opcode && h1.fin == h2.fin);
        ASSERT(h1.len <= max_message || (h1.opcode & 8));
        uint8_t enc[WS_FRAME_HEADER_MAX];
        size_t el = ws_frame_header_encode(enc, h1.opcode, h1.fin, h1.rsv, h1.len,
                                           h1.masked ? h1.mask : NULL);
        ASSERT(ws_frame_decode(enc, el, &rules, &h2, &e2) == (int)el);
        ASSERT(h1.len == h2.len && h1.opcode == h2.opcode && h1.rsv == h2.rsv);
    } else if (r1 == SC_EMALFORMED) {
        ASSERT(e1 != WS_ERR_NONE);
    }
    return 0;
}
