/* ws_url.h - the URLs a client of the edge and the gateway is given: http://, https://, ws://
 * and wss://, taken apart for a connect and a request line. Shared by the CLI and libsidecast.
 * Pure: no I/O, no allocation. Prefix ws_url_. */
#ifndef WS_URL_H
#define WS_URL_H

#include <stdbool.h>

#define WS_URL_HOST_MAX 255
#define WS_URL_PATH_MAX 2048

typedef struct ws_url {
    char scheme[8];                      /* "http", "https", "ws" or "wss" */
    bool tls;                            /* https or wss */
    char host[WS_URL_HOST_MAX + 1];      /* name or address, without [] for IPv6 */
    int port;                            /* explicit, else 80 (http, ws) or 443 (https, wss) */
    char path[WS_URL_PATH_MAX + 1];      /* path and query, "/" when absent */
    char hostport[WS_URL_HOST_MAX + 10]; /* as the Host header wants it */
} ws_url;

/* Parses s. Returns 0, or -EINVAL for anything that is not
 * (http|https|ws|wss)://host[:port][/path] (no userinfo, port 1-65535, no space or control
 * character in the path; a fragment is dropped). */
int ws_url_parse(const char *s, ws_url *u);

#endif
