/* ws_url.c - client URLs (ws_url.h). */
#include "ws_url.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ws_url_parse(const char *s, ws_url *u)
{
    memset(u, 0, sizeof *u);
    static const struct {
        const char *prefix, *scheme;
        bool tls;
    } schemes[] = {{"http://", "http", false},
                   {"https://", "https", true},
                   {"ws://", "ws", false},
                   {"wss://", "wss", true}};
    const char *rest = NULL;
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0] && !rest; i++) {
        size_t pl = strlen(schemes[i].prefix);
        if (strncmp(s, schemes[i].prefix, pl) != 0) continue;
        strcpy(u->scheme, schemes[i].scheme);
        u->tls = schemes[i].tls;
        rest = s + pl;
    }
    if (!rest) return -EINVAL;
    size_t auth_len = strcspn(rest, "/?#");
    const char *path = rest + auth_len;
    if (auth_len == 0 || auth_len > WS_URL_HOST_MAX + 6) return -EINVAL;
    char auth[WS_URL_HOST_MAX + 8];
    memcpy(auth, rest, auth_len);
    auth[auth_len] = '\0';
    if (strchr(auth, '@')) return -EINVAL; /* no userinfo: credentials never go in URLs */
    const char *host = auth, *port = NULL;
    size_t host_len;
    if (auth[0] == '[') {
        char *close = strchr(auth, ']');
        if (!close) return -EINVAL;
        host = auth + 1;
        host_len = (size_t)(close - host);
        if (close[1] == ':')
            port = close + 2;
        else if (close[1] != '\0')
            return -EINVAL;
    } else {
        char *colon = strchr(auth, ':');
        host_len = colon ? (size_t)(colon - auth) : auth_len;
        if (colon) port = colon + 1;
    }
    if (host_len == 0 || host_len > WS_URL_HOST_MAX) return -EINVAL;
    memcpy(u->host, host, host_len);
    u->host[host_len] = '\0';
    u->port = u->tls ? 443 : 80;
    if (port) {
        char *end;
        long p = strtol(port, &end, 10);
        if (*port == '\0' || *end != '\0' || p < 1 || p > 65535) return -EINVAL;
        u->port = (int)p;
    }
    if (*path == '#') path = "";
    size_t plen = strcspn(path, "#");
    if (plen > WS_URL_PATH_MAX - 1) return -EINVAL;
    if (plen == 0 || path[0] == '?') {
        u->path[0] = '/';
        memcpy(u->path + 1, path, plen);
        u->path[plen + 1] = '\0';
    } else {
        memcpy(u->path, path, plen);
        u->path[plen] = '\0';
    }
    for (const char *c = u->path; *c; c++)
        if ((unsigned char)*c <= 0x20 || *c == 0x7f) return -EINVAL;
    snprintf(u->hostport, sizeof u->hostport, strchr(u->host, ':') ? "[%s]:%d" : "%s:%d", u->host,
             u->port);
    return 0;
}
