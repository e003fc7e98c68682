/* tlsctx.h - a server's TLS settings and certificate, reloadable while connections run.
 *
 * One tlsctx wraps the OpenSSL SSL_CTX that new connections are made from: TLS 1.2 and 1.3
 * only, ALPN "http/1.1", no renegotiation, no compression, session resumption by stateless
 * tickets (no per-session memory on the server; one ticket per TLS 1.3 handshake), kTLS
 * asked for where the kernel and OpenSSL offer it. tlsctx_reload builds a new SSL_CTX from
 * the files and swaps it in: connections made before keep the old one (OpenSSL counts its
 * references), new ones get the new one; the ticket keys carry over, so a client resumes
 * across a reload. A reload that fails changes nothing.
 *
 * Threads: every function may be called from any thread (a mutex guards the swap).
 * Prefix tlsctx_. */
#ifndef WS_TLSCTX_H
#define WS_TLSCTX_H

#include <stddef.h>
#include <stdint.h>

typedef struct tlsctx tlsctx;
typedef struct ssl_st SSL;

/* Loads cert_file (PEM: the leaf, then its chain) and key_file (PEM private key, which must
 * match the leaf). Returns 0 and *out, or a negative SC_E code with why in err (never key
 * material). */
int tlsctx_create(tlsctx **out, const char *cert_file, const char *key_file, char *err,
                  size_t errlen);
/* Reads the same files again. 0 when the new pair is in use; otherwise a negative code with
 * why in err, and the old pair stays. */
int tlsctx_reload(tlsctx *t, char *err, size_t errlen);
/* A server-side SSL over fd from the current pair, or NULL (out of memory). */
SSL *tlsctx_new_ssl(tlsctx *t, int fd);
/* The leaf certificate's notAfter (Unix time). */
int64_t tlsctx_not_after(tlsctx *t);
/* NULL ok. Connections still using an SSL made from it keep what they need. */
void tlsctx_destroy(tlsctx *t);

#endif
