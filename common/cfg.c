/* cfg.c - configuration from the environment, validated once at start; see cfg.h. */
#include "cfg.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define CFG_MAX_VALUE 4096

static const char *const cfg_type_names[] = {"string",    "integer", "bool",
                                             "host:port", "file",    "level"};

int cfg_split_addr(const char *addr, char *host, size_t hostlen, int *port)
{
    const char *colon;
    size_t hl;
    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');
        if (!end || end[1] != ':') return -1;
        hl = (size_t)(end - addr - 1);
        addr++;
        colon = end + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon) return -1;
        hl = (size_t)(colon - addr);
    }
    if (hl >= hostlen) return -1;
    memcpy(host, addr, hl);
    host[hl] = '\0';
    const char *p = colon + 1;
    if (!*p) return -1;
    long v = 0;
    for (; *p; p++) {
        if (!isdigit((unsigned char)*p)) return -1;
        v = v * 10 + (*p - '0');
        if (v > 65535) return -1;
    }
    *port = (int)v;
    return 0;
}

int cfg_resolve_addr(const char *addr, struct sockaddr_storage *ss, unsigned *sslen)
{
    char host[256], port[8];
    int p;
    if (cfg_split_addr(addr, host, sizeof host, &p) != 0) return -EINVAL;
    snprintf(port, sizeof port, "%d", p);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    const char *h = (host[0] == '\0' || strcmp(host, "*") == 0) ? NULL : host;
    if (getaddrinfo(h, port, &hints, &res) != 0 || !res) return -EINVAL;
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sslen = (unsigned)res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static int cfg_parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) return *out = 1, 0;
        if (strcasecmp(s, no[i]) == 0) return *out = 0, 0;
    }
    return -1;
}

/* Validates text and, when store is set, writes it into opt->dst. */
static int cfg_apply(const cfg_opt *opt, const char *text, char *err, size_t errlen, int store)
{
    if (strlen(text) > CFG_MAX_VALUE) {
        snprintf(err, errlen, "value longer than %d bytes", CFG_MAX_VALUE);
        return -1;
    }
    if ((opt->flags & CFG_REQUIRED) && text[0] == '\0') {
        snprintf(err, errlen, "required (%s)", opt->help);
        return -1;
    }
    switch (opt->type) {
    case CFG_STR: break;
    case CFG_INT: {
        char *end;
        errno = 0;
        long v = strtol(text, &end, 10);
        long min = opt->min, max = opt->max;
        if (min == 0 && max == 0) max = 0x7fffffffL;
        if (text[0] == '\0' || *end != '\0' || errno == ERANGE || isspace((unsigned char)text[0])) {
            snprintf(err, errlen, "not an integer: \"%.64s\"", text);
            return -1;
        }
        if (v < min || v > max) {
            snprintf(err, errlen, "%ld is out of range %ld..%ld", v, min, max);
            return -1;
        }
        if (store) *(long *)opt->dst = v;
        return 0;
    }
    case CFG_BOOL: {
        int b;
        if (cfg_parse_bool(text, &b) != 0) {
            snprintf(err, errlen, "not a boolean (true/false): \"%.64s\"", text);
            return -1;
        }
        if (store) *(int *)opt->dst = b;
        return 0;
    }
    case CFG_ADDR: {
        char host[256];
        int port;
        if (text[0] == '\0') break; /* none (CFG_REQUIRED refused it above) */
        if (cfg_split_addr(text, host, sizeof host, &port) != 0 || host[0] == '\0') {
            snprintf(err, errlen, "not HOST:PORT: \"%.64s\"", text);
            return -1;
        }
        break;
    }
    case CFG_FILE:
        if (text[0] && access(text, R_OK) != 0) {
            snprintf(err, errlen, "cannot read file \"%.200s\": %s", text, strerror(errno));
            return -1;
        }
        break;
    case CFG_LEVEL: {
        enum log_level l;
        if (log_level_parse(text, &l) != 0) {
            snprintf(err, errlen, "not a log level (debug|info|warn|error): \"%.64s\"", text);
            return -1;
        }
        if (store) *(int *)opt->dst = (int)l;
        return 0;
    }
    }
    if (store) {
        char *copy = strdup(text);
        if (!copy) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        *(char **)opt->dst = copy;
    }
    return 0;
}

int cfg_parse_value(const cfg_opt *opt, const char *text, char *err, size_t errlen)
{
    return cfg_apply(opt, text, err, errlen, 0);
}

static void cfg_help(const char *service, const cfg_opt *opts, size_t n)
{
    printf("Usage: %s [--help]\n\nConfigured by environment variables:\n\n", service);
    for (size_t i = 0; i < n; i++) {
        const char *def = opts[i].def ? opts[i].def : "";
        printf("  %-26s %-9s %s\n", opts[i].name, cfg_type_names[opts[i].type], opts[i].help);
        if ((opts[i].flags & CFG_REQUIRED) && !def[0])
            printf("  %-26s           (required)\n", "");
        else
            printf("  %-26s           default: %s\n", "",
                   (opts[i].flags & CFG_SECRET) && def[0] ? "****" : (def[0] ? def : "(empty)"));
        if (opts[i].type == CFG_INT && (opts[i].min || opts[i].max))
            printf("  %-26s           range: %ld..%ld\n", "", opts[i].min, opts[i].max);
    }
}

int cfg_load(const char *service, const cfg_opt *opts, size_t n, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            cfg_help(service, opts, n);
            exit(0);
        }
        fprintf(stderr,
                "%s: unknown argument \"%s\" (configuration comes from the environment; "
                "see --help)\n",
                service, argv[i]);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const char *env = getenv(opts[i].name);
        const char *text = env ? env : (opts[i].def ? opts[i].def : "");
        char err[512];
        if (cfg_apply(&opts[i], text, err, sizeof err, 1) != 0) {
            fprintf(stderr, "%s: config: %s: %s\n", service, opts[i].name, err);
            return -1;
        }
    }
    return 0;
}

/* Masks the credentials of every URL in in (redis://:pass@host, nats://user:pass@host,
 * nats://token@host, comma-separated lists): the userinfo ends at the last '@' before the
 * next URL, so a password holding ',', '@', '/', '?' or '#' is masked whole. The
 * whole value is masked before it is cut to cap, so a cut never shows a secret's tail. */
void cfg_mask_url(const char *in, char *out, size_t cap)
{
    size_t n = strlen(in);
    char *buf = malloc(n * 2 + 16);
    if (!buf) {
        snprintf(out, cap, "%s", "****");
        return;
    }
    size_t o = 0;
    const char *p = in;
    for (;;) {
        const char *scheme = strstr(p, "://");
        if (!scheme) break;
        const char *start = scheme + 3;
        /* this URL ends where the next one's scheme begins (after a ','), or at the end */
        const char *next = strstr(start, "://");
        const char *seg_end = in + n;
        if (next) {
            const char *c = next;
            while (c > start && c[-1] != ',') c--;
            seg_end = c > start ? c - 1 : next;
        }
        if (seg_end < start) seg_end = start;
        /* The last '@' of the URL, not of its authority: nats.c splits there too, so a
         * password holding '/', '?' or '#' connects and must be masked whole. An '@' in a
         * path masks a little too much, never too little. */
        const char *at = NULL;
        for (const char *c = start; c < seg_end; c++)
            if (*c == '@') at = c;
        memcpy(buf + o, p, (size_t)(start - p));
        o += (size_t)(start - p);
        if (at) {
            const char *colon = memchr(start, ':', (size_t)(at - start));
            const char *from = colon ? colon + 1 : start;
            memcpy(buf + o, start, (size_t)(from - start));
            o += (size_t)(from - start);
            memcpy(buf + o, "****", 4);
            o += 4;
            p = at;
        } else {
            p = start;
        }
    }
    size_t rest = strlen(p);
    memcpy(buf + o, p, rest);
    o += rest;
    buf[o] = '\0';
    snprintf(out, cap, "%s", buf);
    free(buf);
}

void cfg_log(const cfg_opt *opts, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char val[512];
        switch (opts[i].type) {
        case CFG_INT: snprintf(val, sizeof val, "%ld", *(long *)opts[i].dst); break;
        case CFG_BOOL:
            snprintf(val, sizeof val, "%s", *(int *)opts[i].dst ? "true" : "false");
            break;
        case CFG_LEVEL: {
            static const char *const names[] = {"debug", "info", "warn", "error"};
            int l = *(int *)opts[i].dst;
            snprintf(val, sizeof val, "%s", l >= 0 && l < 4 ? names[l] : "?");
            break;
        }
        default: {
            const char *s = *(char **)opts[i].dst;
            if (opts[i].flags & CFG_SECRET)
                snprintf(val, sizeof val, "%s", s && s[0] ? "****" : "");
            else
                cfg_mask_url(s ? s : "", val, sizeof val);
        }
        }
        log_info("config", "key=%s value=\"%s\"", opts[i].name, val);
    }
}
