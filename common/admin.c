/* admin.c - /healthz, /readyz and /metrics over libmicrohttpd; see admin.h. */
#include "admin.h"
#include "cfg.h"
#include "log.h"
#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct admin {
    struct MHD_Daemon *d;
    admin_ready_fn ready;
    void *ud;
    int port;
};

static int admin_send(struct MHD_Connection *c, unsigned code, const char *ctype, char *body,
                      size_t len, enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    int ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}

int admin_answer(struct MHD_Connection *c, const char *method, const char *url,
                 admin_ready_fn ready, void *ud, int *mhd_result)
{
    if (strcmp(url, "/healthz") != 0 && strcmp(url, "/readyz") != 0 && strcmp(url, "/metrics") != 0)
        return 0;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        static char msg[] = "{\"error\":\"method_not_allowed\",\"message\":\"use GET\"}\n";
        *mhd_result = admin_send(c, 405, "application/json", msg, sizeof msg - 1,
                                 MHD_RESPMEM_PERSISTENT);
        return 1;
    }
    if (strcmp(url, "/healthz") == 0) {
        static char ok[] = "{\"status\":\"ok\"}\n";
        *mhd_result = admin_send(c, 200, "application/json", ok, sizeof ok - 1,
                                 MHD_RESPMEM_PERSISTENT);
    } else if (strcmp(url, "/readyz") == 0) {
        char detail[256] = "";
        int is_ready = ready ? ready(ud, detail, sizeof detail) : 1;
        char body[400];
        int n = snprintf(body, sizeof body, "{\"status\":\"%s\",\"detail\":\"%s\"}\n",
                         is_ready ? "ready" : "not_ready", detail);
        *mhd_result = admin_send(c, is_ready ? 200 : 503, "application/json", body,
                                 (size_t)n < sizeof body ? (size_t)n : sizeof body - 1,
                                 MHD_RESPMEM_MUST_COPY);
    } else {
        size_t len = 0;
        char *text = metrics_render(&len);
        if (!text) {
            static char oom[] = "out of memory\n";
            *mhd_result = admin_send(c, 500, "text/plain", oom, sizeof oom - 1,
                                     MHD_RESPMEM_PERSISTENT);
        } else {
            *mhd_result = admin_send(c, 200, "text/plain; version=0.0.4", text, len,
                                     MHD_RESPMEM_MUST_FREE);
        }
    }
    return 1;
}

static enum MHD_Result admin_handler(void *cls, struct MHD_Connection *c, const char *url,
                                     const char *method, const char *version,
                                     const char *upload_data, size_t *upload_data_size,
                                     void **con_cls)
{
    (void)version;
    (void)upload_data;
    admin *a = cls;
    if (*con_cls == NULL) { /* first call: headers only */
        *con_cls = a;
        return MHD_YES;
    }
    if (*upload_data_size) { /* admin paths take no body: drop it */
        *upload_data_size = 0;
        return MHD_YES;
    }
    int ret = MHD_NO;
    if (admin_answer(c, method, url, a->ready, a->ud, &ret)) return (enum MHD_Result)ret;
    static char nf[] = "{\"error\":\"not_found\",\"message\":\"no such path\"}\n";
    return (enum MHD_Result)admin_send(c, 404, "application/json", nf, sizeof nf - 1,
                                       MHD_RESPMEM_PERSISTENT);
}

int admin_create(admin **out, const char *listen, admin_ready_fn ready, void *ud)
{
    struct sockaddr_storage ss;
    unsigned sslen;
    admin *a = calloc(1, sizeof *a);
    if (!a) return -ENOMEM;
    a->ready = ready;
    a->ud = ud;
    if (cfg_resolve_addr(listen, &ss, &sslen) != 0) {
        log_error("admin listen address invalid", "listen=%s", listen);
        free(a);
        return -EINVAL;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
    a->d = MHD_start_daemon(flags, 0, NULL, NULL, admin_handler, a, MHD_OPTION_SOCK_ADDR,
                            (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT, 64u,
                            MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                            (size_t)16384, MHD_OPTION_END);
    if (!a->d) {
        log_error("admin server failed to start", "listen=%s errno=%d", listen, errno);
        free(a);
        return -EADDRINUSE;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(a->d, MHD_DAEMON_INFO_BIND_PORT);
    a->port = di ? di->port : 0;
    log_info("admin listening", "listen=%s port=%d", listen, a->port);
    *out = a;
    return 0;
}

void admin_destroy(admin *a)
{
    if (!a) return;
    MHD_stop_daemon(a->d);
    free(a);
}

int admin_port(const admin *a) { return a->port; }
