/* log.h - one line per event on stderr.
 *
 * Format: time=2026-11-28T21:11:22.123Z level=info service=auth msg="token issued" k=v ...
 * Fields are a printf-style string of key=value pairs written by the caller. Never pass a
 * token, password or secret as a field: nothing here can tell a secret from a name.
 * Thread-safe: each line is written with one write(2). */
#ifndef SC_LOG_H
#define SC_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Sets the service name shown on every line (pointer kept, must outlive logging). */
void log_init(const char *service, enum log_level level);
/* Parses "debug|info|warn|error"; returns 0 and sets *out, or -1. */
int log_level_parse(const char *s, enum log_level *out);
void log_set_level(enum log_level level);
int log_enabled(enum log_level level);

/* msg: a short constant phrase (quoted in the output); fields: printf format of k=v pairs. */
void log_write(enum log_level level, const char *msg, const char *fields, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(msg, ...)                                                                        \
    do {                                                                                           \
        if (log_enabled(LOG_DEBUG)) log_write(LOG_DEBUG, msg, __VA_ARGS__);                        \
    } while (0)
#define log_info(msg, ...) log_write(LOG_INFO, msg, __VA_ARGS__)
#define log_warn(msg, ...) log_write(LOG_WARN, msg, __VA_ARGS__)
#define log_error(msg, ...) log_write(LOG_ERROR, msg, __VA_ARGS__)

#endif
