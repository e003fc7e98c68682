/* ws_key.h - the keys of the WebSocket opening handshake (RFC 6455 4.1, 4.2.2): the client's
 * Sec-WebSocket-Key and the Sec-WebSocket-Accept that answers it. Used by the server's
 * handshake (ws_http.c) and by the clients (the CLI, libsidecast). Pure: no I/O, no
 * randomness of its own (the caller brings the nonce). Prefix ws_key_. */
#ifndef WS_KEY_H
#define WS_KEY_H

#include <stdint.h>

#define WS_KEY_LEN 24        /* base64 of the 16-byte nonce */
#define WS_KEY_ACCEPT_LEN 28 /* base64 of a SHA-1 */

/* Sec-WebSocket-Key for a client's handshake: base64 of nonce (16 random bytes), written to
 * out as WS_KEY_LEN characters and a NUL. */
void ws_key_client(const uint8_t nonce[16], char out[WS_KEY_LEN + 1]);

/* Sec-WebSocket-Accept for key (the WS_KEY_LEN characters of Sec-WebSocket-Key):
 * base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")), written to out as
 * WS_KEY_ACCEPT_LEN characters and a NUL. Thread-safe. */
void ws_key_accept(const char *key, char out[WS_KEY_ACCEPT_LEN + 1]);

#endif
