/* tlsctx.h - a server's TLS settings and certificate, reloadable while connections run.
 *
 * One tlsctx wraps the OpenSSL SSL_CTX that new connections are made from: TLS 1.2 and 1.3
 * only, forward-secret AEAD suites only (the ones tlsrec.c carries on), ALPN "http/1.1", no
 * renegotiation, no compression, session resumption by stateless tickets (no per-session
 * memory on the server; one ticket per TLS 1.3 handshake). OpenSSL runs the handshake;
 * tlsctx_take_keys hands the traffic keys to the record layer after it. tlsctx_reload builds a new
 * SSL_CTX from the files and swaps it in: connections made before keep the old one (OpenSSL counts
 * its references), new ones get the new one; the ticket keys carry over, so a client resumes across
 * a reload. A reload that fails changes nothing.
 *
 * Threads: every function may be called from any thread (a mutex guards the swap).
 * Prefix tlsctx_. */
#ifndef WS_TLSCTX_H
#define WS_TLSCTX_H

#include <stddef.h>
#include <stdint.h>

typedef struct tlsctx tlsctx;
typedef struct ssl_st SSL;
struct tlsrec_keys;

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
/* Once SSL_do_handshake returned 1 on ssl: what the record layer (tlsrec.h) needs to carry
 * the connection on without it - version, suite, the application traffic secrets (1.3,
 * caught from OpenSSL's key log) or the master secret and randoms (1.2), and how many
 * records each way the handshake already sealed with them (1.3: the session tickets sent).
 * 0, or a negative code (a suite tlsrec does not do, data OpenSSL read past the handshake).
 * The caller wipes k after use. */
int tlsctx_take_keys(SSL *ssl, struct tlsrec_keys *k);
/* The leaf certificate's notAfter (Unix time). */
int64_t tlsctx_not_after(tlsctx *t);
/* NULL ok. Connections still using an SSL made from it keep what they need. */
void tlsctx_destroy(tlsctx *t);

#endif
