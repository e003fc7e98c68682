/* admin.h - /healthz, /readyz and /metrics over HTTP (libmicrohttpd).
 *
 * Services without an HTTP port of their own (auth, producer) start an admin server on
 * ADMIN_LISTEN; the gateway and the edge answer the same paths on their main port through
 * admin_answer(). /readyz asks the service's ready callback, which returns 1 when ready and
 * may write a short detail string (e.g. "nats=down"). */
#ifndef SC_ADMIN_H
#define SC_ADMIN_H

#include <stddef.h>

struct MHD_Connection;

typedef int (*admin_ready_fn)(void *ud, char *detail, size_t detaillen);

typedef struct admin admin;

/* Starts a server thread on listen ("host:port"). ready may be NULL (always ready).
 * Returns 0 and *out, or a negative errno-style code after logging why. */
int admin_create(admin **out, const char *listen, admin_ready_fn ready, void *ud);
/* Stops and frees; accepts NULL. */
void admin_destroy(admin *a);
/* Port actually bound (useful when listen asked for port 0). */
int admin_port(const admin *a);

/* Answers GET /healthz, /readyz or /metrics on an MHD connection. Returns 1 if the path was
 * one of them (a response was queued; *mhd_result holds MHD's result), 0 otherwise. */
int admin_answer(struct MHD_Connection *c, const char *method, const char *url,
                 admin_ready_fn ready, void *ud, int *mhd_result);

#endif
