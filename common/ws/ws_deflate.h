/* ws_deflate.h - permessage-deflate (RFC 7692): the negotiation offer parser and answer, and
 * the compression of one message / inflation of one message with a z_stream the caller owns.
 *
 * The edge negotiates no context takeover in both directions (server_no_context_takeover;
 * client_no_context_takeover), so every message is compressed and inflated on its own: a
 * z_stream is reset between messages and needs no per-connection state. That is what lets
 * one worker keep one deflate and one inflate stream for all its connections, and the fabric
 * compress a broadcast once for every subscriber.
 *
 * The parser is pure (no I/O, no allocation); ws_pmd_compress and ws_pmd_inflate work on the
 * z_stream given and, for inflate, the caller's growable buffer. Prefix ws_pmd_. */
#ifndef EDGE_WS_DEFLATE_H
#define EDGE_WS_DEFLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* zlib's z_stream (<zlib.h>), kept out of this header so that ws_http.h users need no zlib. */
struct z_stream_s;

#define WS_PMD_RSV1 0x40        /* the "Per-Message Compressed" bit of a first frame */
#define WS_PMD_RESPONSE_MAX 128 /* room for every answer ws_pmd_response writes */

/* An accepted offer. */
typedef struct ws_pmd {
    /* server_max_window_bits the client asked for (8..15), echoed in the answer; 0 when it
     * did not ask. The edge compresses with a 15-bit window, so it sends a compressed message
     * to such a client only when the payload is at most 2^bits bytes (no back-reference can
     * reach further than the message itself); longer ones go out uncompressed. */
    uint8_t server_max_window_bits;
} ws_pmd;

/* Parses one Sec-WebSocket-Extensions value p[0..n) (a comma-separated list of offers,
 * RFC 6455 §9.1: name *(";" param ["=" (token | quoted-string)])) and picks the first
 * acceptable permessage-deflate offer (§5). Its parameters (§7.1) may be
 * server_no_context_takeover and client_no_context_takeover (no value),
 * server_max_window_bits (a value 8..15, required) and client_max_window_bits (value 8..15
 * optional); an offer with any other parameter, a parameter twice, a value where none is
 * allowed or a bad value, or broken syntax is declined and the next one is looked at (the
 * handshake goes on; other extensions are ignored). Returns 1 with *out filled, 0 when no
 * offer in the list is acceptable. */
int ws_pmd_offer(const char *p, size_t n, ws_pmd *out);

/* Writes the Sec-WebSocket-Extensions value answering pm (NUL-terminated):
 * "permessage-deflate; server_no_context_takeover; client_no_context_takeover" and
 * "; server_max_window_bits=N" when the client asked for it. client_max_window_bits is
 * never answered: the edge inflates with a 15-bit window, whatever the client uses.
 * Returns the length, or -1 when cap is too small (WS_PMD_RESPONSE_MAX is enough). */
int ws_pmd_response(char *out, size_t cap, const ws_pmd *pm);

/* True when a message of len payload bytes may be sent compressed to a peer that
 * negotiated pm (see server_max_window_bits). */
bool ws_pmd_fits_window(const ws_pmd *pm, size_t len);

/* Prepares z for ws_pmd_compress (raw deflate, 15-bit window, WS_PMD_LEVEL) / for
 * ws_pmd_inflate (raw inflate, 15-bit window). 0, or -1 (no memory). Release with
 * deflateEnd / inflateEnd. */
#define WS_PMD_LEVEL 6
int ws_pmd_deflate_init(struct z_stream_s *z);
int ws_pmd_inflate_init(struct z_stream_s *z);

/* Compresses one message in[0..n) as RFC 7692 §7.2.1 wants (raw deflate ending with an
 * empty stored block by Z_SYNC_FLUSH, whose 00 00 ff ff tail is removed) into out, whose
 * cap bytes must also hold the 4 bytes of the tail. z is reset first: no context is carried
 * from message to message. Returns the compressed length, or -1 when it does not fit (give
 * cap = n + 3 to get only results smaller than the message) or zlib failed. */
long ws_pmd_compress(struct z_stream_s *z, const uint8_t *in, size_t n, uint8_t *out, size_t cap);

#define WS_PMD_CORRUPT (-1) /* not a valid deflate stream: close 1007 */
#define WS_PMD_TOO_BIG (-2) /* inflates to more than max bytes: close 1009 */
#define WS_PMD_NOMEM (-3)

/* Inflates one compressed message in[0..n) (the 00 00 ff ff tail is added here, §7.2.2)
 * into *buf, a malloc'd buffer of *cap bytes owned by the caller (may be NULL / 0), grown
 * with realloc geometrically as needed but never past max + 1 bytes. z is reset first.
 * Returns 0 with *out_len (<= max), WS_PMD_TOO_BIG as soon as the output passes max bytes
 * (a zip bomb costs at most max + 1 bytes of memory and the time to inflate them),
 * WS_PMD_CORRUPT or WS_PMD_NOMEM. The buffer stays the caller's whatever the result. */
int ws_pmd_inflate(struct z_stream_s *z, const uint8_t *in, size_t n, size_t max, uint8_t **buf,
                   size_t *cap, size_t *out_len);

#endif
