/* ws_key.c - the keys of the WebSocket opening handshake (ws_key.h). */
#include "ws_key.h"

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <pthread.h>
#include <string.h>

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

void ws_key_client(const uint8_t nonce[16], char out[WS_KEY_LEN + 1])
{
    EVP_EncodeBlock((unsigned char *)out, nonce, 16); /* 24 characters and a NUL */
}

/* SHA-1 fetched once: SHA1() fetches it from the provider registry (under its lock) on every
 * call, which is most of the cost of an accept key. */
static EVP_MD *sha1_md;
static pthread_once_t sha1_once = PTHREAD_ONCE_INIT;

static void sha1_fetch(void) { sha1_md = EVP_MD_fetch(NULL, "SHA1", NULL); }

void ws_key_accept(const char *key, char out[WS_KEY_ACCEPT_LEN + 1])
{
    unsigned char in[24 + sizeof ws_guid - 1], md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    memcpy(in, key, 24);
    memcpy(in + 24, ws_guid, sizeof ws_guid - 1);
    pthread_once(&sha1_once, sha1_fetch);
    if (!sha1_md || EVP_Digest(in, sizeof in, md, &mdlen, sha1_md, NULL) != 1 ||
        mdlen != SHA_DIGEST_LENGTH)
        SHA1(in, sizeof in, md); /* no fetched digest (out of memory): the slow way */
    EVP_EncodeBlock((unsigned char *)out, md, SHA_DIGEST_LENGTH);
}
