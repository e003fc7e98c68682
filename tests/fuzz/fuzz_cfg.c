/* fuzz_cfg.c - libFuzzer target for configuration values (common/cfg.c) and the Redis URL
 * parser (common/rds.c): everything a process reads from its environment at start.
 *
 * The first input byte picks what the rest (a NUL-free string) feeds:
 *   0-5  cfg_parse_value with an option of that type (string, integer with bounds, bool,
 *        address, file, log level)
 *   6    cfg_split_addr
 *   7    rds_url_parse
 * Oracles: an accepted integer is all digits and lies within its bounds; a split address has a port
 * in 0..65535 and a host that fits; a parsed Redis URL has a port in 1..65535 and a database
 * >= 0, and a refused one gets an error of the parser's own words (nothing quoted from the
 * URL, which may hold a password); the rest is for the sanitizers. */
#include "cfg.h"
#include "rds.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096) return 0;
    char *text = malloc(size);
    if (!text) return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    char err[256];
    long lval = 0;
    int ival = 0;
    char *sval = NULL;
    switch (data[0] % 8) {
    case 0:
    case 4: { /* strings and files: any text, or a readable path */
        cfg_opt o = {"FUZZ", data[0] % 8 == 0 ? CFG_STR : CFG_FILE, NULL, "", 0, 0, 0, &sval};
        (void)cfg_parse_value(&o, text, err, sizeof err);
        break;
    }
    case 1: {
        cfg_opt o = {"FUZZ", CFG_INT, NULL, "", 0, 3, 1000000, &lval};
        if (cfg_parse_value(&o, text, err, sizeof err) == 0) { /* validates, stores nothing */
            char *end;
            lval = strtol(text, &end, 10);
            if (*end || lval < 3 || lval > 1000000) abort();
        }
        break;
    }
    case 2: {
        cfg_opt o = {"FUZZ", CFG_BOOL, NULL, "", 0, 0, 0, &ival};
        (void)cfg_parse_value(&o, text, err, sizeof err);
        break;
    }
    case 3:
    case 5: {
        cfg_opt o = {"FUZZ", data[0] % 8 == 3 ? CFG_ADDR : CFG_LEVEL,         NULL, "", 0, 0,
                     0,      data[0] % 8 == 3 ? (void *)&sval : (void *)&ival};
        (void)cfg_parse_value(&o, text, err, sizeof err);
        break;
    }
    case 6: {
        char host[64];
        int port = -1;
        if (cfg_split_addr(text, host, sizeof host, &port) == 0) {
            if (port < 0 || port > 65535 || strnlen(host, sizeof host) >= sizeof host) abort();
        }
        break;
    }
    default: {
        rds_url u;
        if (rds_url_parse(text, &u, err, sizeof err) == 0) {
            if (u.port < 1 || u.port > 65535 || u.db < 0) abort();
        } else {
            /* errors quote nothing from the URL (which may hold a password): printable
             * ASCII text of the parser's own */
            for (const char *p = err; *p; p++)
                if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e) abort();
            if (strchr(err, '@')) abort();
        }
        break;
    }
    }
    free(text);
    return 0;
}
