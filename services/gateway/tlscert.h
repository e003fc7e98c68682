/* tlscert.h - the gateway's TLS certificate and key, loaded from two PEM files and replaced
 * on demand (SIGHUP) while connections stay open.
 *
 * Each successful load is one generation: the certificate chain (leaf first, then its
 * issuers, at most TLSCERT_MAX_CHAIN) and the private key, parsed for GnuTLS. New handshakes
 * take the current generation; a connection keeps a reference to the one its handshake used
 * until it closes, because GnuTLS keeps pointers to the chain and the key for the session's
 * life. A generation is freed when the store and every connection have let go of it.
 *
 * Threads: every function may be called from any thread. */
#ifndef GW_TLSCERT_H
#define GW_TLSCERT_H

#include <gnutls/abstract.h>
#include <stddef.h>
#include <stdint.h>

#define TLSCERT_MAX_CHAIN 16    /* certificates in the chain file */
#define TLSCERT_MAX_FILE 262144 /* bytes of either file */

typedef struct tlscert tlscert;
typedef struct tlscert_gen tlscert_gen;

/* Loads the pair from cert_path (PEM: the leaf, then its chain) and key_path (PEM private
 * key, unencrypted). Returns 0 and *out, or a negative code (-errno for a file that cannot
 * be read, SC_ECERT for a pair that cannot be used) with a reason in err (a file
 * that cannot be read, no certificate, a chain out of order, a key that cannot be parsed or
 * does not belong to the leaf). The reason names the certificate file by its path and the
 * key file as "key file" (its path is masked in the configuration log too), and never holds
 * key material. The paths are copied. */
int tlscert_open(tlscert **out, const char *cert_path, const char *key_path, char *err,
                 size_t errlen);

/* Reads both files again. On success the new pair serves every handshake from now on and 0
 * is returned; on failure the old pair stays, and a negative code and a reason (as above)
 * come back. Either way the outcome is counted in sc_gateway_tls_reloads_total{result} and
 * logged once (no key material). */
int tlscert_reload(tlscert *s);

/* The leaf's notAfter of the current pair, as a Unix time. */
int64_t tlscert_not_after(tlscert *s);

/* A reference to the current generation (never NULL): the caller passes it to
 * tlscert_release when the connection that uses it is gone. */
tlscert_gen *tlscert_acquire(tlscert *s);

/* Drops a reference taken by tlscert_acquire; accepts NULL. */
void tlscert_release(tlscert_gen *g);

/* The chain and the key of g, as a gnutls_certificate_retrieve_function2 hands them out.
 * They belong to g and live as long as a reference to it is held. */
void tlscert_gen_pair(tlscert_gen *g, gnutls_pcert_st **chain, unsigned *n, gnutls_privkey_t *key);

/* Drops the store's reference to its current generation and frees the store; connections
 * still holding a generation keep it until they release it. Accepts NULL. */
void tlscert_close(tlscert *s);

#endif
