/* token_es256.c - ECDSA P-256 verification with a table precomputed for the key's point.
 *
 * Verifying (r, s) over the digest e computes u1*G + u2*Q with u1 = e/s, u2 = r/s (mod n).
 * OpenSSL multiplies G with a table it ships, but Q, the key, with 256 doublings on every
 * call: about three quarters of a verification here. A key's Q is fixed for its keyset's
 * life, so at load we give it a table of its own: a copy of the P-256 group whose generator
 * is Q, with EC_GROUP_precompute_mult (the same comb OpenSSL keeps for G; ~150 KB per
 * key). Then both products are fixed-base multiplications, and the rest is ECDSA's
 * verification equation (SEC 1 v2 §4.1.4, FIPS 186-4 §6.4.2) with OpenSSL's arithmetic:
 * 1 <= r, s < n; w = s^-1; X = (e*w)G + (r*w)Q; X is not infinity; X.x mod n == r
 * (checked without making X affine).
 * The digest is SHA-256 and P-256's order has 256 bits, so e is the digest as it is.
 * Only public values enter the computation, so nothing needs constant time. */
#include "token_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/obj_mac.h>

struct token_es256 {
    unsigned refs;            /* under reg_mu: the keysets holding it */
    unsigned char pub[65];    /* the key's point, uncompressed: names it in the registry */
    struct token_es256 *next; /* the registry's list */
    EC_GROUP *g;              /* P-256 as named: OpenSSL's own table for G */
    EC_GROUP *gq;             /* P-256 with Q as generator and a table made for it */
    BN_MONT_CTX *mont;        /* Montgomery form mod n, for s^-1 = s^(n-2) */
    BIGNUM *n2;               /* n - 2 */
    BIGNUM *p;                /* the field's prime */
};

/* X, Y and Z of a point, Jacobian; deprecated like the above, for the same era's reasons. */
static int jacobian(const EC_GROUP *g, const EC_POINT *pt, BIGNUM *x, BIGNUM *y, BIGNUM *z,
                    BN_CTX *ctx)
{
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    return EC_POINT_get_Jprojective_coordinates_GFp(g, pt, x, y, z, ctx);
#pragma GCC diagnostic pop
}

/* EC_GROUP_precompute_mult is deprecated in OpenSSL 3 (the EC_KEY era's interface) but
 * present and the only way to have a table made for a point other than the curve's G. */
static int precompute(EC_GROUP *g, BN_CTX *ctx)
{
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    return EC_GROUP_precompute_mult(g, ctx);
#pragma GCC diagnostic pop
}

/* Every table alive, by key. Making one takes ~120 ms of CPU here (OpenSSL converts the
 * table's 2,368 points to affine with its generic arithmetic), so keysets parsed again with
 * the same keys (a JWKS refetched, auth's keys announced again, a file reloaded) take the
 * table of the keyset before them instead of making another. Bounded by the keys of the
 * keysets alive (at most TOKEN_MAX_KEYS each); an entry goes with its last keyset. */
static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct token_es256 *reg_head;

static void es256_destroy(struct token_es256 *e)
{
    EC_GROUP_free(e->g);
    EC_GROUP_free(e->gq);
    BN_MONT_CTX_free(e->mont);
    BN_free(e->n2);
    BN_free(e->p);
    free(e);
}

void token_es256_free(struct token_es256 *e)
{
    struct token_es256 **pp;

    if (e == NULL) return;
    pthread_mutex_lock(&reg_mu);
    if (--e->refs > 0) {
        pthread_mutex_unlock(&reg_mu);
        return;
    }
    for (pp = &reg_head; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == e) {
            *pp = e->next;
            break;
        }
    }
    pthread_mutex_unlock(&reg_mu);
    es256_destroy(e);
}

struct token_es256 *token_es256_ref(struct token_es256 *e)
{
    if (e == NULL) return NULL;
    pthread_mutex_lock(&reg_mu);
    e->refs++;
    pthread_mutex_unlock(&reg_mu);
    return e;
}

/* The table alive for the uncompressed point pub, with a new reference, or NULL. */
static struct token_es256 *reg_find(const unsigned char *pub, size_t plen)
{
    struct token_es256 *e;

    if (plen != sizeof e->pub) return NULL;
    pthread_mutex_lock(&reg_mu);
    for (e = reg_head; e != NULL; e = e->next) {
        if (memcmp(e->pub, pub, plen) == 0) {
            e->refs++;
            break;
        }
    }
    pthread_mutex_unlock(&reg_mu);
    return e;
}

int token_es256_new(EVP_PKEY *pk, struct token_es256 **out)
{
    unsigned char pub[65];
    size_t plen = 0;
    struct token_es256 *e = NULL;
    EC_POINT *q = NULL, *chk = NULL;
    BN_CTX *ctx = NULL;
    int rc = SC_EKEY;

    *out = NULL;
    if (EVP_PKEY_get_octet_string_param(pk, OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof pub, &plen) != 1)
        return SC_EKEY;
    if ((*out = reg_find(pub, plen)) != NULL) return 0;
    if ((e = calloc(1, sizeof *e)) == NULL || (ctx = BN_CTX_new()) == NULL) {
        rc = -ENOMEM;
        goto done;
    }
    if ((e->g = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1)) == NULL ||
        (q = EC_POINT_new(e->g)) == NULL || EC_POINT_oct2point(e->g, q, pub, plen, ctx) != 1 ||
        EC_POINT_is_at_infinity(e->g, q) || EC_POINT_is_on_curve(e->g, q, ctx) != 1)
        goto done;
    if ((e->gq = EC_GROUP_dup(e->g)) == NULL ||
        EC_GROUP_set_generator(e->gq, q, EC_GROUP_get0_order(e->g), EC_GROUP_get0_cofactor(e->g)) !=
            1 ||
        precompute(e->gq, ctx) != 1)
        goto done;
    if ((e->mont = BN_MONT_CTX_new()) == NULL ||
        BN_MONT_CTX_set(e->mont, EC_GROUP_get0_order(e->g), ctx) != 1 ||
        (e->n2 = BN_dup(EC_GROUP_get0_order(e->g))) == NULL || BN_sub_word(e->n2, 2) != 1 ||
        (e->p = BN_new()) == NULL || EC_GROUP_get_curve(e->g, e->p, NULL, NULL, ctx) != 1) {
        rc = -ENOMEM;
        goto done;
    }
    /* 1*Q through the table must be Q: a table for anything else would verify nothing. */
    if ((chk = EC_POINT_new(e->g)) == NULL ||
        EC_POINT_mul(e->gq, chk, BN_value_one(), NULL, NULL, ctx) != 1 ||
        EC_POINT_cmp(e->g, chk, q, ctx) != 0)
        goto done;
    /* Named by the point as encoded uncompressed, whatever form the key came in. */
    if (EC_POINT_point2oct(e->g, q, POINT_CONVERSION_UNCOMPRESSED, e->pub, sizeof e->pub, ctx) !=
        sizeof e->pub)
        goto done;
    e->refs = 1;
    pthread_mutex_lock(&reg_mu);
    e->next = reg_head; /* a twin made meanwhile by another thread is harmless */
    reg_head = e;
    pthread_mutex_unlock(&reg_mu);
    *out = e;
    e = NULL;
    rc = 0;
done:
    EC_POINT_free(chk);
    EC_POINT_free(q);
    BN_CTX_free(ctx);
    if (e != NULL) es256_destroy(e);
    return rc;
}

int token_es256_verify(const struct token_es256 *e, const unsigned char md[32],
                       const unsigned char sig[64], BN_CTX *ctx)
{
    const BIGNUM *n = EC_GROUP_get0_order(e->g);
    BIGNUM *r, *s, *w, *u1, *u2, *x, *y, *z, *t;
    EC_POINT *p1 = NULL, *p2 = NULL;
    int rc = -ENOMEM;

    BN_CTX_start(ctx);
    r = BN_CTX_get(ctx);
    s = BN_CTX_get(ctx);
    w = BN_CTX_get(ctx);
    u1 = BN_CTX_get(ctx);
    u2 = BN_CTX_get(ctx);
    x = BN_CTX_get(ctx);
    y = BN_CTX_get(ctx);
    z = BN_CTX_get(ctx);
    if ((t = BN_CTX_get(ctx)) == NULL) goto done; /* a NULL means every later one is NULL */
    if (BN_bin2bn(sig, 32, r) == NULL || BN_bin2bn(sig + 32, 32, s) == NULL ||
        BN_bin2bn(md, 32, u1) == NULL)
        goto done;
    rc = SC_ESIG;
    if (BN_is_zero(r) || BN_is_zero(s) || BN_cmp(r, n) >= 0 || BN_cmp(s, n) >= 0) goto done;
    rc = -ENOMEM;
    /* n is prime, so s^-1 = s^(n-2) (Fermat), with the Montgomery context made at load:
     * more instructions than BN_mod_inverse's binary Euclid but less time here (a whole
     * token_verify 32 against 36 µs, bench/verifybench). */
    if (BN_mod_exp_mont(w, s, e->n2, n, ctx, e->mont) != 1 || BN_mod_mul(u1, u1, w, n, ctx) != 1 ||
        BN_mod_mul(u2, r, w, n, ctx) != 1 || (p1 = EC_POINT_new(e->g)) == NULL ||
        (p2 = EC_POINT_new(e->g)) == NULL)
        goto done;
    if (EC_POINT_mul(e->g, p1, u1, NULL, NULL, ctx) != 1 ||
        EC_POINT_mul(e->gq, p2, u2, NULL, NULL, ctx) != 1 ||
        EC_POINT_add(e->g, p1, p1, p2, ctx) != 1)
        goto done;
    rc = SC_ESIG;
    /* The sum in Jacobian coordinates (x, y, z): its affine x is x/z^2, so r*z^2 is compared
     * with x instead of inverting z (an inversion mod p: ~6 µs here, bench/verifybench). The
     * affine x is below p, so "affine x mod n == r" also holds when it is r + n, when that
     * is below p. */
    if (EC_POINT_is_at_infinity(e->g, p1) || jacobian(e->g, p1, x, y, z, ctx) != 1 ||
        BN_mod_sqr(z, z, e->p, ctx) != 1 || BN_mod_mul(t, r, z, e->p, ctx) != 1)
        goto done;
    if (BN_cmp(t, x) == 0 || (BN_add(t, r, n) == 1 && BN_cmp(t, e->p) < 0 &&
                              BN_mod_mul(t, t, z, e->p, ctx) == 1 && BN_cmp(t, x) == 0))
        rc = 0;
done:
    EC_POINT_free(p1);
    EC_POINT_free(p2);
    BN_CTX_end(ctx);
    return rc;
}
