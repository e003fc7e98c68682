/* signkeys.h - auth's signing keys: the one that signs now and the one before it, changed in
 * place on SIGHUP so that auth need not restart to rotate its key.
 *
 * The previous key stays in the JWKS (auth.jwks, auth.keys, /.well-known/jwks.json) and in
 * the set auth recognises its own tokens with, so tokens it signed before the change stay
 * verifiable everywhere until they expire. A key's kid: JWT_KID for the key auth starts
 * with; after a change, a "kid: NAME" line before the PEM block in JWT_PRIVATE_KEY, or the
 * key's RFC 7638 thumbprint. A signer is never freed while auth runs (a key change is rare,
 * and a signature in flight on another thread keeps using the signer it started with).
 * Any thread. Prefix signkeys_. */
#ifndef SC_AUTH_SIGNKEYS_H
#define SC_AUTH_SIGNKEYS_H

#include "token.h"

typedef struct signkeys signkeys;

/* Loads path with kid. 0 and *out, or a negative code after logging why. */
int signkeys_open(signkeys **out, const char *path, const char *kid);
/* The signer to sign with now; valid until signkeys_close. */
const token_signer *signkeys_current(signkeys *k);
/* A reference to the public keys of the current and the previous signer (release with
 * token_keyset_destroy), or NULL (also for k NULL). */
token_keyset *signkeys_public(signkeys *k);
/* Their JWKS ({"keys":[current, previous]}), malloc'd, or NULL. */
char *signkeys_jwks(signkeys *k);
/* The key file again: 1 when it holds a new key (it signs from now on), 0 when it is the
 * key in use, or a negative code (logged; the keys are unchanged). */
int signkeys_reload(signkeys *k);
void signkeys_close(signkeys *k); /* NULL ok */

#endif
