/* log.c - one line per event on stderr; see log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static const char *log_service = "sidecast";
static volatile int log_min = LOG_INFO;
static const char *const log_names[] = {"debug", "info", "warn", "error"};

void log_init(const char *service, enum log_level level)
{
    log_service = service;
    log_min = level;
}

void log_set_level(enum log_level level) { log_min = level; }

int log_enabled(enum log_level level) { return (int)level >= log_min; }

int log_level_parse(const char *s, enum log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, log_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    if (strcasecmp(s, "warning") == 0) {
        *out = LOG_WARN;
        return 0;
    }
    return -1;
}

/* Appends msg quoted, escaping quotes, backslashes and control bytes so one event stays one
 * line whatever the caller passes. */
static size_t log_quote(char *dst, size_t cap, const char *msg)
{
    size_t n = 0;
    if (n < cap) dst[n++] = '"';
    for (const unsigned char *p = (const unsigned char *)msg; *p && n + 5 < cap; p++) {
        if (*p == '"' || *p == '\\') {
            dst[n++] = '\\';
            dst[n++] = (char)*p;
        } else if (*p < 0x20 || *p == 0x7f) {
            n += (size_t)snprintf(dst + n, cap - n, "\\x%02x", *p);
        } else {
            dst[n++] = (char)*p;
        }
    }
    if (n < cap) dst[n++] = '"';
    return n;
}

void log_write(enum log_level level, const char *msg, const char *fields, ...)
{
    if ((int)level < log_min) return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t cap = sizeof(line) - 2; /* room for '\n' */
    int n = snprintf(line, cap,
                     "time=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s service=%s msg=",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, log_names[level], log_service);
    size_t len = n > 0 ? (size_t)n : 0;
    len += log_quote(line + len, cap - len, msg);
    if (fields && fields[0] && len + 1 < cap) {
        line[len++] = ' ';
        va_list ap;
        va_start(ap, fields);
        int m = vsnprintf(line + len, cap - len, fields, ap);
        va_end(ap);
        if (m > 0) len += (size_t)m < cap - len ? (size_t)m : cap - len - 1;
    }
    /* Fields are the caller's text: keep one event on one line. */
    for (size_t i = 0; i < len; i++)
        if (line[i] == '\n' || line[i] == '\r') line[i] = ' ';
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
