/* net.c - blocking-with-deadline TCP I/O and URL parsing for the sidecast client. */
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

int64_t net_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t net_wall_s(void) { return (int64_t)time(NULL); }

int net_random(void *p, size_t n) { return RAND_bytes(p, (int)n) == 1 ? 0 : -EIO; }

int net_url_parse(const char *s, net_url *u)
{
    memset(u, 0, sizeof *u);
    const char *rest;
    if (strncmp(s, "http://", 7) == 0) {
        strcpy(u->scheme, "http");
        rest = s + 7;
    } else if (strncmp(s, "ws://", 5) == 0) {
        strcpy(u->scheme, "ws");
        rest = s + 5;
    } else if (strncmp(s, "https://", 8) == 0 || strncmp(s, "wss://", 6) == 0) {
        return -EPROTONOSUPPORT;
    } else {
        return -EINVAL;
    }
    size_t auth_len = strcspn(rest, "/?#");
    const char *path = rest + auth_len;
    if (auth_len == 0 || auth_len > NET_HOST_MAX + 6) return -EINVAL;
    char auth[NET_HOST_MAX + 8];
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
    if (host_len == 0 || host_len > NET_HOST_MAX) return -EINVAL;
    memcpy(u->host, host, host_len);
    u->host[host_len] = '\0';
    u->port = 80;
    if (port) {
        char *end;
        long p = strtol(port, &end, 10);
        if (*port == '\0' || *end != '\0' || p < 1 || p > 65535) return -EINVAL;
        u->port = (int)p;
    }
    if (*path == '#') path = "";
    size_t plen = strcspn(path, "#");
    if (plen > NET_PATH_MAX - 1) return -EINVAL;
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

static int wait_fd(int fd, short events, int64_t deadline, int interruptible)
{
    for (;;) {
        int64_t left = deadline - net_now_ms();
        if (left <= 0) return -ETIMEDOUT;
        struct pollfd pfd = {.fd = fd, .events = events};
        int rc = poll(&pfd, 1, left > 60000 ? 60000 : (int)left);
        if (rc > 0) return 0;
        if (rc < 0) {
            if (errno != EINTR) return -errno;
            if (interruptible) return -EINTR;
        }
    }
}

int net_connect(const char *host, int port, int64_t deadline)
{
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host, service, &hints, &res);
    if (gai != 0) return gai == EAI_SYSTEM ? -errno : -EHOSTUNREACH;
    int err = -ECONNREFUSED;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        ai->ai_protocol);
        if (fd < 0) {
            err = -errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            freeaddrinfo(res);
            return fd;
        }
        if (errno == EINPROGRESS) {
            int rc = wait_fd(fd, POLLOUT, deadline, 1);
            int soerr = 0;
            socklen_t sl = sizeof soerr;
            if (rc == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0) {
                freeaddrinfo(res);
                return fd;
            }
            err = rc < 0 ? rc : -(soerr ? soerr : ECONNREFUSED);
        } else {
            err = -errno;
        }
        close(fd);
        if (err == -ETIMEDOUT || err == -EINTR) break;
    }
    freeaddrinfo(res);
    return err;
}

int net_write_all(int fd, const void *p, size_t n, int64_t deadline)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w > 0) {
            c += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return -errno;
        int rc = wait_fd(fd, POLLOUT, deadline, 0);
        if (rc < 0) return rc;
    }
    return 0;
}

ssize_t net_read(int fd, void *p, size_t n, int64_t deadline)
{
    for (;;) {
        ssize_t r = recv(fd, p, n, 0);
        if (r >= 0) return r;
        if (errno == EINTR) return -EINTR;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return -errno;
        int rc = wait_fd(fd, POLLIN, deadline, 1);
        if (rc < 0) return rc;
    }
}
