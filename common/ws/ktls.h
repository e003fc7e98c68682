/* ktls.h - kernel TLS (kTLS) for the sending direction of an established connection.
 *
 * After OpenSSL's handshake the record layer (tlsrec.h) holds the traffic keys. Where the
 * kernel offers the "tls" ULP (Linux CONFIG_TLS, module tls loaded) and the suite is one it
 * carries (TLS 1.2 and 1.3 with AES-128-GCM, AES-256-GCM or ChaCha20-Poly1305: all that
 * tlsrec does), the write key, IV and next record sequence number go to the kernel
 * (setsockopt SOL_TLS TLS_TX): from then on plaintext written to the socket leaves as TLS
 * application-data records, so a connection's frames go out with the one writev of the
 * plain path. Reading stays in tlsrec (TLS_RX is not used). Records of another type
 * (alerts: close_notify) need a control message (ktls_send_alert). The kernel cannot move a
 * TLS 1.3 write key on (no KeyUpdate for TX before Linux 6.13): the caller ends a connection
 * whose peer asks for one, and closes before 2^24 records (wsc.c).
 *
 * Threads: none of its own; the socket's worker calls. Prefix ktls_. */
#ifndef WS_KTLS_H
#define WS_KTLS_H

#include "tlsrec.h"

#include <linux/tls.h>
#include <stddef.h>

/* What TLS_TX takes, for each AEAD tlsrec does. */
typedef union ktls_info {
    struct tls_crypto_info base;
    struct tls12_crypto_info_aes_gcm_128 gcm128;
    struct tls12_crypto_info_aes_gcm_256 gcm256;
    struct tls12_crypto_info_chacha20_poly1305 chacha;
} ktls_info;

/* Pure: fills *info with r's sending state (version, cipher, key, salt and IV, the next
 * record's sequence number; TLS 1.2 AES-GCM: the explicit nonce, which tlsrec takes from the
 * sequence number). Returns the size to give setsockopt, or SC_ECERT for an AEAD it does not
 * know. The caller wipes *info after use (it holds the key). */
int ktls_tx_info(const tlsrec *r, ktls_info *info);

/* Hands r's sending state to the kernel on the TCP socket fd: attaches the "tls" ULP, then
 * TLS_TX. 0: every later write(2)/writev(2) on fd is sealed by the kernel. Otherwise a
 * negative errno (-ENOENT: the kernel has no "tls" ULP; -ENOPROTOOPT/-EOPNOTSUPP/-EINVAL:
 * no such cipher there) and fd sends unsealed bytes as before (a ULP without TLS_TX passes
 * writes through). Call before anything is written after the handshake. */
int ktls_tx_enable(int fd, const tlsrec *r);

/* Sends one alert record (level 1 warning, 2 fatal; desc TLSREC_A_*) on a kTLS socket.
 * Non-blocking, best effort: 0, or a negative errno (-EAGAIN: the socket is full). */
int ktls_send_alert(int fd, uint8_t level, uint8_t desc);

#endif
