/* contract.h - the bus contract every process shares: subject names, header names and
 * limits that cross process boundaries. Services never include each other's code; what
 * they agree on lives here (and in DESIGN.md / docs/BUS.md). */
#ifndef SC_CONTRACT_H
#define SC_CONTRACT_H

/* Subjects */
#define SUBJ_AUTH_TOKEN "auth.token"
#define SUBJ_AUTH_REFRESH "auth.refresh"
#define SUBJ_AUTH_REVOKE "auth.revoke"
#define SUBJ_AUTH_JWKS "auth.jwks"
#define SUBJ_AUTH_REVOKED "auth.revoked"
#define SUBJ_AUTH_KEYS "auth.keys" /* auth announces its JWKS: at start and on a new key */
#define SUBJ_PRESENCE_GET "presence.get"
/* occupancy.<topic>: {"topic","occupied":bool,"ts"} when a topic gains its first or loses its
 * last subscriber, all edges together; presence.occupancy {"topic"} ->
 * {"topic","occupied","edges"} (not under occupancy.: a topic may be called anything) */
#define SUBJ_OCCUPANCY_PREFIX "occupancy."
#define SUBJ_OCCUPANCY_GET "presence.occupancy"
#define SUBJ_EVENTS_PREFIX "events."
#define SUBJ_USERS_PREFIX "users."
#define SUBJ_CLIENT_PREFIX "client."
#define SUBJ_RPC_PREFIX "rpc." /* a client's rpc: rpc.<method>, a request the edge forwards */
/* The server API (docs/BACKENDS.md): requests of back ends and of the gateway's /api/v1
 * routes, answered by one edge (queue group "edge"). */
#define SUBJ_API_PREFIX "api."
#define SUBJ_API_PUBLISH "api.publish"
#define SUBJ_API_BROADCAST "api.broadcast"
#define SUBJ_API_DISCONNECT "api.disconnect"
#define SUBJ_API_PRESENCE_USER "api.presence.user"
#define SUBJ_API_PRESENCE_TOPIC "api.presence.topic"
#define SUBJ_API_HISTORY "api.history"
#define SUBJ_API_COUNTS "api.counts"
/* Edge to every edge (no queue), each answers the reply subject: edges.disconnect
 * {"user"|"conn","code","reason"} -> {"edge","closed"}; edges.counts {} -> {"edge",
 * "connections","users","topics"}. Only edges may publish edges.> */
#define SUBJ_EDGES_DISCONNECT "edges.disconnect"
#define SUBJ_EDGES_COUNTS "edges.counts"
#define QUEUE_EDGE "edge"
/* hooks.connect, hooks.subscribe.<topic>, hooks.publish.<topic>: requests the edge asks the
 * back end ({"allow":bool,...}; the topic in the subject, so a service answers for its own
 * prefix); hooks.disconnect: a notification (docs/BACKENDS.md) */
#define SUBJ_HOOKS_PREFIX "hooks."

/* Queue groups */
#define QUEUE_AUTH "auth"

/* Headers on requests from the gateway to services */
#define HDR_USER "Sidecast-User"             /* the token's sub, absent on public routes */
#define HDR_REQUEST_ID "Sidecast-Request-Id" /* per HTTP request, echoed to the client */
#define HDR_TRACEPARENT "traceparent"        /* W3C trace context */
#define HDR_SCOPE_SUB "Sidecast-Sub-Topics"  /* JSON array from the token, when present */
/* Header on replies: the HTTP status the gateway answers with (default 200). */
#define HDR_STATUS "Sidecast-Status"
/* Header on replies: extra HTTP header to pass through, as "Name: value" (one only). */
#define HDR_HTTP_HEADER "Sidecast-Http-Header"
/* Header on an rpc's reply: the call failed with this error code (a word such as "refused"
 * or "not_found"); the body, when a JSON string, is the message the client sees. */
#define HDR_RPC_ERROR "Sidecast-Error"
/* Headers on what the edge sends for a connection (client publishes, rpc requests) */
#define HDR_CONN "Sidecast-Conn" /* the connection's id on its edge */
#define HDR_EDGE "Sidecast-Edge" /* the edge's EDGE_ID */
#define HDR_INFO "Sidecast-Info" /* hooks.connect's "info" for the connection (JSON object) */
#define INFO_MAX 1024            /* bytes of that JSON, compact, at most */

/* A gateway request's data is one JSON object:
 *   {"method":"POST","path":"/api/orders","params":{...},"query":{...},"body":<json|null>}
 * params: path {param}s; query: the query string's first value per key; body: the request
 * body parsed as JSON, or an object of strings for application/x-www-form-urlencoded.
 * A reply's data is the JSON response body. */

#define BUS_MAX_PAYLOAD (1024 * 1024)

#endif
