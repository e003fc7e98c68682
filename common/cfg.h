/* cfg.h - one configuration table per service, read from the environment at start.
 *
 * Each service declares a static array of cfg_opt pointing at the fields of its own config
 * struct. cfg_load() handles --help, reads every variable, validates it and fills the fields;
 * a bad value prints "NAME: reason" and makes cfg_load() return -1 (the caller exits 2).
 * Values are logged once with secrets masked (cfg_log). Nothing else in the project calls
 * getenv(). */
#ifndef SC_CFG_H
#define SC_CFG_H

#include <stddef.h>

enum cfg_type {
    CFG_STR,   /* char ** : any string (may be empty unless CFG_REQUIRED) */
    CFG_INT,   /* long *  : decimal integer within [min, max] */
    CFG_BOOL,  /* int *   : true/false/1/0/yes/no/on/off */
    CFG_ADDR,  /* char ** : HOST:PORT, port 0..65535 (0: any free port); empty allowed
                * unless CFG_REQUIRED */
    CFG_FILE,  /* char ** : path of a readable file (empty allowed unless CFG_REQUIRED) */
    CFG_LEVEL, /* int *   : log level debug|info|warn|error */
};

enum { CFG_SECRET = 1, CFG_REQUIRED = 2 };

typedef struct cfg_opt {
    const char *name; /* environment variable */
    enum cfg_type type;
    const char *def; /* default as text; NULL means "" */
    const char *help;
    int flags;     /* CFG_SECRET | CFG_REQUIRED */
    long min, max; /* CFG_INT bounds (both 0: any non-negative long) */
    void *dst;
} cfg_opt;

/* Reads argv for --help/-h (prints the table with defaults to stdout, exits 0) and any other
 * argument (an error). Then loads every option. Returns 0, or -1 after printing the first
 * problem to stderr as "service: config: NAME: reason". Strings are owned by the cfg module
 * and live until exit. */
int cfg_load(const char *service, const cfg_opt *opts, size_t n, int argc, char **argv);

/* Validates one value as cfg_load would; 0 or -1 with a reason in err (pure, for tests). */
int cfg_parse_value(const cfg_opt *opt, const char *text, char *err, size_t errlen);

/* Copies in to out (cap bytes) with the credentials of every URL in it masked as "****"
 * (user:****@host, ****@host for a token), whatever characters the password holds. */
void cfg_mask_url(const char *in, char *out, size_t cap);

/* Logs every option (secrets shown as "****") at info level. */
void cfg_log(const cfg_opt *opts, size_t n);

/* Splits "host:port" (host may be [v6]); host written into host (NUL-terminated). 0 or -1. */
int cfg_split_addr(const char *addr, char *host, size_t hostlen, int *port);

struct sockaddr_storage;
/* Resolves "host:port" ("*" or an empty host: every address) for bind(2): 0, or -EINVAL. */
int cfg_resolve_addr(const char *addr, struct sockaddr_storage *ss, unsigned *sslen);

#define CFG_COUNT(a) (sizeof(a) / sizeof((a)[0]))

#endif
