/* service.h - auth on the bus: subscribes auth.token, auth.refresh, auth.revoke and auth.jwks
 * in queue group "auth", runs each request through grants.c on nats.c's delivery thread,
 * publishes auth.revoked events and replies with Sidecast-Status (+ one HTTP header). */
#ifndef SC_AUTH_SERVICE_H
#define SC_AUTH_SERVICE_H

#include "bus.h"
#include "grants.h"

typedef struct authsvc authsvc;

/* Subscribes. b and g are borrowed and must outlive the service. workers: how many
 * subscriptions share auth.token / auth.refresh (each has its own delivery thread, so up to
 * that many password hashes run in parallel). Returns 0 and *out, or a negative bus_err. */
int authsvc_start(authsvc **out, bus *b, const grant_cfg *g, int workers);
/* Unsubscribes (waiting for running handlers) and frees; accepts NULL. */
void authsvc_stop(authsvc *s);

#endif
