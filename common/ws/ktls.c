/* ktls.c - kernel TLS for sending; see ktls.h. The crypto_info layouts are linux/tls.h's;
 * the kernel builds each record's nonce as tlsrec does (TLS 1.3 and ChaCha20: IV XOR
 * sequence; TLS 1.2 AES-GCM: salt + explicit nonce, which it counts up from the IV given
 * per record, as tlsrec sends the sequence number). */
#include "ktls.h"

#include "err.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/crypto.h>

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

static void be64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (unsigned char)v;
}

/* The AES-GCM layouts differ only in the key's length: a 4-byte salt (the IV's first
 * bytes), an 8-byte IV (TLS 1.3: the rest of the IV; TLS 1.2: the explicit nonce, which the
 * kernel counts up from the sequence number) and the 8-byte record sequence number. */
static void gcm_fill(const tlsrec *r, unsigned char *key, size_t klen,
                     unsigned char salt[TLS_CIPHER_AES_GCM_128_SALT_SIZE],
                     unsigned char iv[TLS_CIPHER_AES_GCM_128_IV_SIZE],
                     unsigned char seq[TLS_CIPHER_AES_GCM_128_REC_SEQ_SIZE])
{
    memcpy(key, r->wkey, klen);
    memcpy(salt, r->wiv, TLS_CIPHER_AES_GCM_128_SALT_SIZE);
    if (r->v13)
        memcpy(iv, r->wiv + TLS_CIPHER_AES_GCM_128_SALT_SIZE, TLS_CIPHER_AES_GCM_128_IV_SIZE);
    else
        be64(iv, r->wseq);
    be64(seq, r->wseq);
}

int ktls_tx_info(const tlsrec *r, ktls_info *info)
{
    memset(info, 0, sizeof *info);
    info->base.version = r->v13 ? TLS_1_3_VERSION : TLS_1_2_VERSION;
    switch (r->aead) {
    case TLSREC_AES128_GCM: {
        struct tls12_crypto_info_aes_gcm_128 *g = &info->gcm128;
        g->info.cipher_type = TLS_CIPHER_AES_GCM_128;
        gcm_fill(r, g->key, sizeof g->key, g->salt, g->iv, g->rec_seq);
        return (int)sizeof *g;
    }
    case TLSREC_AES256_GCM: {
        struct tls12_crypto_info_aes_gcm_256 *g = &info->gcm256;
        g->info.cipher_type = TLS_CIPHER_AES_GCM_256;
        gcm_fill(r, g->key, sizeof g->key, g->salt, g->iv, g->rec_seq);
        return (int)sizeof *g;
    }
    case TLSREC_CHACHA20: {
        struct tls12_crypto_info_chacha20_poly1305 *c = &info->chacha;
        c->info.cipher_type = TLS_CIPHER_CHACHA20_POLY1305;
        memcpy(c->key, r->wkey, sizeof c->key);
        memcpy(c->iv, r->wiv, sizeof c->iv);
        be64(c->rec_seq, r->wseq);
        return (int)sizeof *c;
    }
    default: return SC_ECERT;
    }
}

int ktls_tx_enable(int fd, const tlsrec *r)
{
    ktls_info info;
    int len = ktls_tx_info(r, &info);
    if (len < 0) return len;
    int rc = 0;
    if (setsockopt(fd, IPPROTO_TCP, TCP_ULP, "tls", sizeof "tls") != 0 ||
        setsockopt(fd, SOL_TLS, TLS_TX, &info, (socklen_t)len) != 0)
        rc = -errno;
    OPENSSL_cleanse(&info, sizeof info);
    return rc;
}

int ktls_send_alert(int fd, uint8_t level, uint8_t desc)
{
    unsigned char alert[2] = {level, desc};
    union { /* aligned for struct cmsghdr */
        char buf[CMSG_SPACE(sizeof(unsigned char))];
        struct cmsghdr align;
    } cb;
    memset(&cb, 0, sizeof cb);
    struct iovec iov = {.iov_base = alert, .iov_len = sizeof alert};
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb.buf, .msg_controllen = sizeof cb.buf};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_TLS;
    cm->cmsg_type = TLS_SET_RECORD_TYPE;
    cm->cmsg_len = CMSG_LEN(sizeof(unsigned char));
    *CMSG_DATA(cm) = TLSREC_ALERT;
    ssize_t n;
    do {
        n = sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n == (ssize_t)sizeof alert ? 0 : n < 0 ? -errno : -EAGAIN;
}
