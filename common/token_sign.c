/* token_sign.c - signing access tokens (auth) through libjwt, with the signer's own key and
 * pinned algorithm, and the signer's public key as a JWKS. */
#include "token_int.h"

#include "log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>

/* ---- signing ----------------------------------------------------------------------------- */

int token_signer_load(token_signer **out, const char *pem_path, const char *kid)
{
    token_signer *s = NULL;
    EVP_PKEY *pk = NULL;
    BIO *in = NULL, *pem = NULL;
    char *text = NULL, *data = NULL;
    const char *why = "unknown";
    size_t len = 0, sig_len;
    long n;
    int rc;

    if (out == NULL) return SC_EKEY;
    *out = NULL;
    if ((rc = token_read_file(pem_path, TOKEN_MAX_KEYFILE, &text, &len)) != 0)
        return rc; /* logged */
    rc = -ENOMEM;
    if ((s = calloc(1, sizeof *s)) == NULL || (in = BIO_new_mem_buf(text, (int)len)) == NULL) {
        why = "out of memory";
        goto error;
    }
    rc = SC_EKEY;
    if ((pk = PEM_read_bio_PrivateKey(in, NULL, token_no_passphrase, NULL)) == NULL) {
        why = "no unencrypted PEM private key";
        goto error;
    }
    if ((rc = token_key_profile(pk, &s->alg, &s->jalg, &sig_len, &why)) != 0) goto error;
    rc = SC_EKEY;
    if (kid != NULL && kid[0] != '\0') {
        if (!token_kid_valid(kid, strlen(kid))) {
            why = "kid empty, too long or not printable ASCII";
            goto error;
        }
        memcpy(s->kid, kid, strlen(kid) + 1);
    } else if ((rc = token_jwk_thumbprint(pk, s->kid, sizeof s->kid)) != 0) {
        why = "cannot compute the key's thumbprint";
        goto error;
    }
    /* libjwt re-reads the key from PEM on every signature: hand it one unencrypted PKCS#8
     * block written here (the file may hold other blocks), in memory that is wiped on free. */
    rc = SC_EKEY;
    if ((pem = BIO_new(BIO_s_secmem())) == NULL ||
        PEM_write_bio_PrivateKey(pem, pk, NULL, NULL, 0, NULL, NULL) != 1 ||
        (n = BIO_get_mem_data(pem, &data)) <= 0 || n > INT_MAX - 1) {
        why = "cannot encode the private key";
        goto error;
    }
    if ((s->pem = malloc((size_t)n + 1)) == NULL) {
        rc = -ENOMEM;
        why = "out of memory";
        goto error;
    }
    memcpy(s->pem, data, (size_t)n);
    s->pem[n] = '\0';
    s->pem_len = (int)n;
    s->pkey = pk;
    BIO_free(pem);
    BIO_free(in);
    OPENSSL_cleanse(text, len);
    free(text);
    *out = s;
    return 0;
error:
    log_warn("signing key rejected", "path=%s reason=\"%s\"", pem_path, why);
    BIO_free(pem);
    BIO_free(in);
    EVP_PKEY_free(pk);
    token_signer_destroy(s);
    OPENSSL_cleanse(text, len);
    free(text);
    ERR_clear_error();
    return rc;
}

void token_signer_destroy(token_signer *s)
{
    if (s == NULL) return;
    if (s->pem != NULL) {
        OPENSSL_cleanse(s->pem, (size_t)s->pem_len);
        free(s->pem);
    }
    EVP_PKEY_free(s->pkey);
    free(s);
}

const char *token_signer_alg(const token_signer *s) { return s ? s->alg : NULL; }

const char *token_signer_kid(const token_signer *s) { return s ? s->kid : NULL; }

int token_sign(const token_signer *s, const json_t *payload, char **out)
{
    jwt_t *jwt = NULL;
    char *body = NULL, *tok = NULL;
    int rc = SC_ECLAIMS;

    if (out == NULL) return SC_ECLAIMS;
    *out = NULL;
    if (s == NULL || !json_is_object(payload)) goto done;
    if ((body = json_dumps(payload, JSON_COMPACT)) == NULL) {
        rc = -ENOMEM;
        goto done;
    }
    if (strlen(body) > TOKEN_SIGN_MAX_BODY) {
        rc = SC_ETOOLARGE;
        goto done;
    }
    rc = -ENOMEM;
    if (jwt_new(&jwt) != 0) goto done;
    rc = SC_EKEY;
    if (jwt_set_alg(jwt, s->jalg, (const unsigned char *)s->pem, s->pem_len) != 0 ||
        jwt_add_header(jwt, "kid", s->kid) != 0)
        goto done;
    rc = SC_ECLAIMS;
    if (jwt_add_grants_json(jwt, body) != 0) goto done;
    if ((tok = jwt_encode_str(jwt)) == NULL) {
        rc = errno == ENOMEM ? -ENOMEM : SC_EKEY;
        goto done;
    }
    *out = tok; /* libjwt 1.10 allocates with malloc(): the caller's free() matches */
    rc = 0;
done:
    jwt_free(jwt);
    free(body);
    if (rc != 0) ERR_clear_error();
    return rc;
}

char *token_signer_jwks(const token_signer *s)
{
    json_t *jwk = NULL, *doc = NULL;
    char *text = NULL;

    if (s == NULL || (jwk = token_jwk_public(s->pkey)) == NULL) goto done;
    if (json_object_set_new(jwk, "kid", json_string(s->kid)) != 0 ||
        json_object_set_new(jwk, "alg", json_string(s->alg)) != 0 ||
        json_object_set_new(jwk, "use", json_string("sig")) != 0)
        goto done;
    if ((doc = json_pack("{s:[O]}", "keys", jwk)) == NULL) goto done;
    text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
done:
    json_decref(doc);
    json_decref(jwk);
    return text;
}
