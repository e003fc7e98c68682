/* keys.h - a verifier's token keys while it runs (gateway, edge): the keys of its file
 * (JWT_PUBLIC_KEYS) and those auth announces on the bus, as one keyset that every
 * verification takes a reference to, so that keys change without a restart and without
 * dropping a connection.
 *
 * Four ways in: keys_reload (SIGHUP: the file again; a bad file is logged and the keys
 * stay), an OpenID provider's JWKS URL (keys_attach_url), auth's JWKS on SUBJ_AUTH_KEYS (published
 * when auth starts or changes its signing key), and a token whose kid nobody knows, which asks auth
 * for its JWKS (SUBJ_AUTH_JWKS), at most once per refresh_min_ms. For one kid, the file's key wins
 * over the URL's, and the URL's over the bus's. The bus's keys are as trustworthy as the bus: only
 * auth may publish SUBJ_AUTH_KEYS (deploy/config/nats-auth.conf). Any thread. Prefix keys_. */
#ifndef SC_KEYS_H
#define SC_KEYS_H

#include <stddef.h>

#include "bus.h"
#include "token.h"

typedef struct keys keys;

/* Reads path (JWKS or PEM public keys; NULL or "": no file, keys from the URL or the bus
 * only). 0 and *out, or SC_EKEY / -ENOMEM after logging. */
int keys_open(keys **out, const char *path, int refresh_min_ms);
/* Listens for auth's announcements on b and lets an unknown kid ask for them. b must
 * outlive k until keys_close. 0 or a negative code. */
int keys_attach_bus(keys *k, bus *b);
/* Fetches keys from an https:// JWKS URL (an OpenID provider's jwks_uri) now and then in a
 * thread of its own: again when the answer's Cache-Control max-age runs out (default
 * 300 s; at least refresh_min_ms, at most a day), and at once when a token names an
 * unknown kid (rate-limited with the bus's refresh). ca_file (may be NULL) replaces the
 * system's trust store for it. At most 64 KiB, 5 s, https only (redirects too). A failed
 * fetch keeps the keys it had and is retried, backing off to 60 s. 0, or -EINVAL (not
 * https), -ENOMEM, -EAGAIN. */
int keys_attach_url(keys *k, const char *url, const char *ca_file);
/* The file again (SIGHUP). 0, or a negative code with the keys unchanged. */
int keys_reload(keys *k);
/* token_verify with the current keys. An unknown kid (SC_EKID) also asks auth for its keys
 * when a refresh is due; the token is still refused (its client tries again). */
int keys_verify(keys *k, const token_policy *pol, const char *token, long now, token_claims *out);
/* Keys known right now. */
size_t keys_count(keys *k);
/* Unsubscribes and frees (after bus_destroy or before; NULL ok). */
void keys_close(keys *k);

#endif
