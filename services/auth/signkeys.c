/* signkeys.c - auth's signing keys; see signkeys.h. */
#include "signkeys.h"

#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#define SIGNKEYS_KID_MAX 127

typedef struct retired {
    struct retired *next;
    token_signer *s;
} retired;

struct signkeys {
    pthread_mutex_t mu; /* cur, prev, pub, retired */
    _Atomic(token_signer *) cur;
    token_signer *prev;
    token_keyset *pub; /* the public keys of cur and prev */
    retired *retired;  /* signers before prev, kept until close */
    char *path;
};

/* The public JWK of s without its kid: two signers with equal ones hold the same key. */
static json_t *public_jwk(const token_signer *s)
{
    char *text = token_signer_jwks(s);
    json_t *doc = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    json_t *k = json_incref(json_array_get(json_object_get(doc, "keys"), 0));
    json_decref(doc);
    if (k) json_object_del(k, "kid");
    return k;
}

/* {"keys":[cur, prev]} as text, malloc'd. */
static char *jwks_of(const token_signer *cur, const token_signer *prev)
{
    json_t *doc = json_object(), *keys = json_array();
    const token_signer *two[2] = {cur, prev};
    for (int i = 0; i < 2 && doc && keys; i++) {
        if (!two[i]) continue;
        char *text = token_signer_jwks(two[i]);
        json_t *d = text ? json_loads(text, 0, NULL) : NULL;
        free(text);
        json_t *k = json_array_get(json_object_get(d, "keys"), 0);
        if (k) json_array_append(keys, k);
        json_decref(d);
    }
    char *out = NULL;
    if (doc && keys && json_object_set(doc, "keys", keys) == 0 && json_array_size(keys) > 0)
        out = json_dumps(doc, JSON_COMPACT);
    json_decref(keys);
    json_decref(doc);
    return out;
}

/* The "kid: NAME" line before the first PEM block of path, or "" (then the thumbprint). */
static void kid_line(const char *path, char *kid, size_t cap)
{
    kid[0] = '\0';
    FILE *f = fopen(path, "r");
    char line[256];
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "-----BEGIN", 10) == 0) break;
        if (strncmp(line, "kid:", 4) != 0) continue;
        const char *v = line + 4;
        while (*v == ' ' || *v == '\t') v++;
        size_t n = strcspn(v, "\r\n");
        while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t')) n--;
        snprintf(kid, cap, "%.*s", (int)n, v);
        break;
    }
    if (f) fclose(f);
}

/* Makes s current, prev the one it replaces; under mu. */
static int install(signkeys *k, token_signer *s)
{
    token_signer *old = atomic_load(&k->cur);
    char *jwks = jwks_of(s, old);
    token_keyset *pub = NULL;
    if (!jwks || token_keyset_parse(&pub, jwks, strlen(jwks)) != 0) {
        free(jwks);
        return -ENOMEM;
    }
    free(jwks);
    if (k->prev) {
        retired *r = malloc(sizeof *r);
        if (!r) {
            token_keyset_destroy(pub);
            return -ENOMEM;
        }
        *r = (retired){k->retired, k->prev};
        k->retired = r;
    }
    k->prev = old;
    token_keyset_destroy(k->pub);
    k->pub = pub;
    atomic_store(&k->cur, s);
    return 0;
}

int signkeys_open(signkeys **out, const char *path, const char *kid)
{
    *out = NULL;
    signkeys *k = calloc(1, sizeof *k);
    if (!k || !(k->path = strdup(path))) {
        free(k);
        return -ENOMEM;
    }
    pthread_mutex_init(&k->mu, NULL);
    token_signer *s = NULL;
    int rc = token_signer_load(&s, path, kid);
    if (rc == 0) rc = install(k, s);
    if (rc != 0) {
        token_signer_destroy(s);
        signkeys_close(k);
        return rc;
    }
    *out = k;
    return 0;
}

const token_signer *signkeys_current(signkeys *k) { return atomic_load(&k->cur); }

token_keyset *signkeys_public(signkeys *k)
{
    if (!k) return NULL;
    pthread_mutex_lock(&k->mu);
    token_keyset *ks = token_keyset_ref(k->pub);
    pthread_mutex_unlock(&k->mu);
    return ks;
}

char *signkeys_jwks(signkeys *k)
{
    pthread_mutex_lock(&k->mu);
    char *out = jwks_of(atomic_load(&k->cur), k->prev);
    pthread_mutex_unlock(&k->mu);
    return out;
}

int signkeys_reload(signkeys *k)
{
    char kid[SIGNKEYS_KID_MAX + 1];
    kid_line(k->path, kid, sizeof kid);
    token_signer *s = NULL;
    int rc = token_signer_load(&s, k->path, kid); /* "" : the thumbprint */
    if (rc != 0) {
        log_warn("signing key not reloaded: the old one signs on", "path=%s error=\"%s\"", k->path,
                 sc_strerror(rc));
        return rc;
    }
    pthread_mutex_lock(&k->mu);
    token_signer *cur = atomic_load(&k->cur);
    json_t *a = public_jwk(cur), *b = public_jwk(s);
    bool same = a && b && json_equal(a, b);
    json_decref(a);
    json_decref(b);
    if (!same && strcmp(token_signer_kid(s), token_signer_kid(cur)) == 0)
        rc = -EINVAL;
    else if (!same)
        rc = install(k, s);
    pthread_mutex_unlock(&k->mu);
    if (same || rc != 0) {
        if (rc == -EINVAL)
            log_warn("signing key not reloaded: a new key needs a new kid", "kid=%s",
                     token_signer_kid(s));
        else if (rc != 0)
            log_warn("signing key not reloaded", "error=\"%s\"", sc_strerror(rc));
        token_signer_destroy(s);
        return same ? 0 : rc;
    }
    log_info("signing key changed", "kid=%s alg=%s previous=%s", token_signer_kid(s),
             token_signer_alg(s), token_signer_kid(k->prev));
    return 1;
}

void signkeys_close(signkeys *k)
{
    if (!k) return;
    for (retired *r = k->retired, *n; r; r = n) {
        n = r->next;
        token_signer_destroy(r->s);
        free(r);
    }
    token_signer_destroy(k->prev);
    token_signer_destroy(atomic_load(&k->cur));
    token_keyset_destroy(k->pub);
    pthread_mutex_destroy(&k->mu);
    free(k->path);
    free(k);
}
