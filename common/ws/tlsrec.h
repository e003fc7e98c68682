/* tlsrec.h - the TLS record layer of an established connection, without OpenSSL's SSL object.
 *
 * OpenSSL does the handshake; once it is done, the traffic keys move here (tlsrec_init) and
 * the SSL object is freed: an OpenSSL 3 SSL holds ~14 KB per idle connection even with its
 * buffers released, a tlsrec ~200 bytes, so an idle wss:// connection costs little more than
 * a plain one. This is what the kernel does with kTLS, in user space: seal and open records
 * with the AEAD of the negotiated suite, and nothing else. Suites (both are AEAD only):
 *   TLS 1.3  TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256
 *   TLS 1.2  ECDHE_{ECDSA,RSA}_WITH_AES_{128,256}_GCM_SHA{256,384}, ..._CHACHA20_POLY1305
 * Post-handshake: TLS 1.3 KeyUpdate both ways (tlsrec_open says when one is owed), alerts;
 * anything else (renegotiation, post-handshake auth, tickets from a client) is an error.
 *
 * Pure: no I/O, no logging. The cipher work uses a caller's EVP_CIPHER_CTX (one per thread:
 * the worker's), keyed per record. Prefix tlsrec_. */
#ifndef WS_TLSREC_H
#define WS_TLSREC_H

#include <stddef.h>
#include <stdint.h>

typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;

#define TLSREC_HEADER 5
#define TLSREC_MAX_PLAIN 16384
/* Bytes a sealed record adds to its plaintext, at most (header, explicit nonce, type, tag). */
#define TLSREC_MAX_OVERHEAD (TLSREC_HEADER + 8 + 1 + 16)
/* The largest record tlsrec_open accepts (TLS 1.3's bound: 2^14 + 256 after the header). */
#define TLSREC_MAX_RECORD (TLSREC_HEADER + TLSREC_MAX_PLAIN + 256)
/* Most pieces of plaintext one tlsrec_seal takes. */
#define TLSREC_MAX_PIECES 64
/* TLS 1.3: records under one write key before we move it on (RFC 8446 §5.5 bounds AES-GCM
 * at 2^24.5 full-size records). */
#define TLSREC_REKEY_AT (1ull << 24)

enum { TLSREC_CHANGE_CIPHER = 20, TLSREC_ALERT = 21, TLSREC_HANDSHAKE = 22, TLSREC_DATA = 23 };

/* TLS alert descriptions sent on errors (RFC 8446 §6). */
enum {
    TLSREC_A_CLOSE_NOTIFY = 0,
    TLSREC_A_UNEXPECTED = 10,
    TLSREC_A_BAD_RECORD_MAC = 20,
    TLSREC_A_RECORD_OVERFLOW = 22,
    TLSREC_A_DECODE_ERROR = 50,
    TLSREC_A_INTERNAL = 80,
};

/* What the handshake leaves: everything the record layer needs, from tlsctx_take_keys. */
typedef struct tlsrec_keys {
    int version;        /* 0x0303 TLS 1.2, 0x0304 TLS 1.3 */
    uint16_t suite;     /* IANA cipher suite number */
    uint8_t secret[48]; /* 1.2: the master secret; 1.3: unused (see below) */
    uint8_t client_secret[48], server_secret[48]; /* 1.3: the application traffic secrets */
    uint8_t client_random[32], server_random[32]; /* 1.2 key expansion */
    uint64_t read_seq, write_seq;                 /* records each way under these keys already */
} tlsrec_keys;

/* tlsrec.aead: the suite's AEAD. */
enum { TLSREC_AES128_GCM, TLSREC_AES256_GCM, TLSREC_CHACHA20, TLSREC_AEADS };

typedef struct tlsrec {
    uint8_t v13;         /* TLS 1.3 */
    uint8_t aead;        /* TLSREC_AES128_GCM, ... */
    uint8_t keylen;      /* 16 or 32 */
    uint8_t hashlen;     /* 1.3: 32 or 48 (KeyUpdate) */
    uint8_t update_owed; /* 1.3: the peer asked for our KeyUpdate: seal it before more data */
    uint8_t rkey[32], wkey[32];
    uint8_t riv[12], wiv[12]; /* 1.2 GCM: the 4-byte salt in the first bytes */
    uint64_t rseq, wseq;
    uint8_t rsecret[48], wsecret[48]; /* 1.3: the current traffic secrets */
} tlsrec;

/* Sets up r for a server from the handshake's keys. 0, or SC_ECERT for a suite or version
 * this layer does not do (tlsctx only negotiates those it does), -ENOMEM. */
int tlsrec_init(tlsrec *r, const tlsrec_keys *k);
/* Wipes the keys. */
void tlsrec_clear(tlsrec *r);

/* The length of the record starting at p (header included) once TLSREC_HEADER bytes are
 * there: > 0; SC_EINCOMPLETE with fewer; SC_ETOOLARGE over TLSREC_MAX_RECORD or shorter than
 * its AEAD's minimum; SC_EMALFORMED for a type or version that is no record. */
long tlsrec_record_len(const tlsrec *r, const uint8_t *p, size_t n);

/* Opens one complete record rec[0..len) in place. Returns the content type (TLSREC_DATA,
 * TLSREC_ALERT, TLSREC_HANDSHAKE) with *plain and *plain_len inside rec, or a negative code with
 * *alert set to the alert to send (bad_record_mac, unexpected_message, ...). A TLS 1.3
 * KeyUpdate is handled here (the read key moves on; update_owed when the peer asked for
 * ours) and returned as TLSREC_HANDSHAKE with *plain_len 0. */
int tlsrec_open(tlsrec *r, EVP_CIPHER_CTX *cx, uint8_t *rec, size_t len, uint8_t **plain,
                size_t *plain_len, uint8_t *alert);

/* Seals pieces of plaintext (n pieces, total <= TLSREC_MAX_PLAIN) as one record of type into
 * out (room: total + TLSREC_MAX_OVERHEAD). Returns the record's length, or -1 (cipher
 * failure). */
long tlsrec_seal(tlsrec *r, EVP_CIPHER_CTX *cx, uint8_t type, const uint8_t *const *pieces,
                 const size_t *lens, int n, uint8_t *out);
/* True when a KeyUpdate must be sealed before the next record: the peer asked for one, or
 * the write key has sealed TLSREC_REKEY_AT records. */
static inline int tlsrec_update_due(const tlsrec *r)
{
    return r->v13 && (r->update_owed || r->wseq >= TLSREC_REKEY_AT);
}
/* Seals a KeyUpdate(update_not_requested) and moves the write key on (update_owed cleared). Out
 * needs TLSREC_MAX_OVERHEAD + 4 bytes. Length or -1. */
long tlsrec_seal_key_update(tlsrec *r, EVP_CIPHER_CTX *cx, uint8_t *out);
/* Seals an alert (fatal, or close_notify as a warning). Length or -1. */
long tlsrec_seal_alert(tlsrec *r, EVP_CIPHER_CTX *cx, uint8_t desc, uint8_t *out);

#endif
