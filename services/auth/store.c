/* store.c - refresh-token families in Redis, every state change one Lua script (atomic). */
#include "store.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "b64url.h"

#define PREFIX "sc:"

struct rtstore {
    rds *r;
    long ttl;
    char ttl_s[24];
    char reuse_s[24]; /* how long a rotated token is remembered, to catch its reuse */
    char max_s[24];   /* a family's absolute lifetime (0: none) */
    long max_age;
    rds_script issue, rotate, revoke_token, revoke_family, revoke_user, login_check, login_failed;
};

/* Failed logins per name. KEYS: counter. ARGV: max. {seconds until the name may try again
 * (0: it may now), failures counted}: with none counted, a success has nothing to clear
 * (one Redis round trip fewer per login). */
static const char lua_login_check[] = "local n = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
                                      "if n < tonumber(ARGV[1]) then return {0, n} end\n"
                                      "local t = redis.call('TTL', KEYS[1])\n"
                                      "if t < 1 then return {1, n} end\n"
                                      "return {t, n}\n";

/* KEYS: counter. ARGV: window (s). The window starts at the first failure. */
static const char lua_login_failed[] = "local n = redis.call('INCR', KEYS[1])\n"
                                       "if n == 1 or redis.call('TTL', KEYS[1]) < 0 then\n"
                                       "  redis.call('EXPIRE', KEYS[1], ARGV[1])\n"
                                       "end\n"
                                       "return n\n";

/* KEYS: rt, fam, user. ARGV: sub, fam, scope, ttl, now, prefix. The user's set is pruned of
 * ended families when this login brings it to 65, 129, ... members: pruned on every login
 * past 64, a name with many live sessions (a script that logs in each run) paid a walk of
 * the whole set per login (4 names logging in for 4 s: Redis's CPU per login 340 -> 106 µs). */
static const char lua_issue[] =
    "local ttl = tonumber(ARGV[4])\n"
    "redis.call('HSET', KEYS[2], 'sub', ARGV[1], 'state', 'active', 'created', ARGV[5])\n"
    "redis.call('EXPIRE', KEYS[2], ttl)\n"
    "redis.call('HSET', KEYS[1], 'sub', ARGV[1], 'fam', ARGV[2], 'state', 'active',\n"
    "           'scope', ARGV[3], 'iat', ARGV[5])\n"
    "redis.call('EXPIRE', KEYS[1], ttl)\n"
    "redis.call('SADD', KEYS[3], ARGV[2])\n"
    "local n = redis.call('SCARD', KEYS[3])\n"
    "if n > 64 and n % 64 == 1 then\n"
    "  for _, f in ipairs(redis.call('SMEMBERS', KEYS[3])) do\n"
    "    if redis.call('HGET', ARGV[6] .. 'rtfam:' .. f, 'state') ~= 'active' then\n"
    "      redis.call('SREM', KEYS[3], f)\n"
    "    end\n"
    "  end\n"
    "end\n"
    "redis.call('EXPIRE', KEYS[3], ttl)\n"
    "return 1\n";

/* KEYS: old rt, new rt. ARGV: ttl, now, prefix, reuse window, max lifetime (0: none). A
 * family older than the max lifetime is ended ('expired'); otherwise the successor and the
 * family live at most until that end. The old token shrinks to what
 * reuse detection needs (sub, fam, state) and lives only for the reuse window: a user who
 * refreshes every few minutes would otherwise keep one full record per rotation for the
 * whole refresh-token lifetime (hundreds of KB per user per week). */
static const char lua_rotate[] =
    "local t = redis.call('HMGET', KEYS[1], 'sub', 'fam', 'state', 'scope')\n"
    "if not t[1] or not t[2] then return {'unknown'} end\n"
    "local fk = ARGV[3] .. 'rtfam:' .. t[2]\n"
    "if redis.call('HGET', fk, 'state') ~= 'active' then return {'revoked', t[1], t[2]} end\n"
    "local ttl = tonumber(ARGV[1])\n"
    "local maxage = tonumber(ARGV[5])\n"
    "if maxage > 0 then\n"
    "  local created = redis.call('HGET', fk, 'created')\n"
    "  if not created then\n"
    "    created = ARGV[2]\n"
    "    redis.call('HSET', fk, 'created', created)\n"
    "  end\n"
    "  local left = tonumber(created) + maxage - tonumber(ARGV[2])\n"
    "  if left <= 0 then\n"
    "    redis.call('HSET', fk, 'state', 'revoked', 'reason', 'expired')\n"
    "    return {'expired', t[1], t[2]}\n"
    "  end\n"
    "  if left < ttl then ttl = left end\n"
    "end\n"
    "if t[3] ~= 'active' then\n"
    "  redis.call('HSET', fk, 'state', 'revoked', 'reason', 'reuse')\n"
    "  return {'reuse', t[1], t[2]}\n"
    "end\n"
    "local scope = t[4] or ''\n"
    "redis.call('HSET', KEYS[1], 'state', 'rotated')\n"
    "redis.call('HDEL', KEYS[1], 'scope', 'iat')\n"
    "local keep = tonumber(ARGV[4])\n"
    "if keep < redis.call('TTL', KEYS[1]) then redis.call('EXPIRE', KEYS[1], keep) end\n"
    "redis.call('HSET', KEYS[2], 'sub', t[1], 'fam', t[2], 'state', 'active',\n"
    "           'scope', scope, 'iat', ARGV[2])\n"
    "redis.call('EXPIRE', KEYS[2], ttl)\n"
    "redis.call('EXPIRE', fk, ttl)\n"
    "local uk = ARGV[3] .. 'rtuser:' .. t[1]\n"
    "redis.call('SADD', uk, t[2])\n"
    "redis.call('EXPIRE', uk, tonumber(ARGV[1])) -- the user's other families: the full ttl\n"
    "return {'ok', t[1], t[2], scope}\n";

/* KEYS: rt. ARGV: prefix. Only the active token of an active family revokes anything: a
 * rotated token, or one whose family has ended, is an invalid token (RFC 7009 2.2) and
 * changes nothing; {'stale'} tells the caller so. */
static const char lua_revoke_token[] =
    "local t = redis.call('HMGET', KEYS[1], 'sub', 'fam', 'state')\n"
    "if not t[1] or not t[2] then return {} end\n"
    "local fk = ARGV[1] .. 'rtfam:' .. t[2]\n"
    "if t[3] ~= 'active' or redis.call('HGET', fk, 'state') ~= 'active' then\n"
    "  return {'stale'}\n"
    "end\n"
    "redis.call('HSET', fk, 'state', 'revoked', 'reason', 'revoke')\n"
    "return {t[1], t[2]}\n";

/* KEYS: fam. */
static const char lua_revoke_family[] =
    "if redis.call('EXISTS', KEYS[1]) == 1 then\n"
    "  redis.call('HSET', KEYS[1], 'state', 'revoked', 'reason', 'revoke')\n"
    "end\n"
    "return 1\n";

/* KEYS: user set. ARGV: prefix. */
static const char lua_revoke_user[] =
    "local n = 0\n"
    "for _, f in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
    "  local k = ARGV[1] .. 'rtfam:' .. f\n"
    "  if redis.call('HGET', k, 'state') == 'active' then\n"
    "    redis.call('HSET', k, 'state', 'revoked', 'reason', 'logout_all')\n"
    "    n = n + 1\n"
    "  end\n"
    "end\n"
    "redis.call('DEL', KEYS[1])\n"
    "return n\n";

int rtstore_create(rtstore **out, rds *r, long ttl, long reuse_window, long max_age)
{
    rtstore *s = calloc(1, sizeof *s);

    *out = NULL;
    if (!s) return -ENOMEM;
    s->r = r;
    s->ttl = ttl;
    snprintf(s->ttl_s, sizeof s->ttl_s, "%ld", ttl);
    snprintf(s->reuse_s, sizeof s->reuse_s, "%ld", reuse_window < ttl ? reuse_window : ttl);
    s->max_age = max_age > 0 ? max_age : 0;
    snprintf(s->max_s, sizeof s->max_s, "%ld", s->max_age);
    rds_script_init(&s->issue, lua_issue);
    rds_script_init(&s->rotate, lua_rotate);
    rds_script_init(&s->revoke_token, lua_revoke_token);
    rds_script_init(&s->revoke_family, lua_revoke_family);
    rds_script_init(&s->revoke_user, lua_revoke_user);
    rds_script_init(&s->login_check, lua_login_check);
    rds_script_init(&s->login_failed, lua_login_failed);
    *out = s;
    return 0;
}

void rtstore_destroy(rtstore *s) { free(s); }

int rtstore_up(const rtstore *s) { return s && rds_up(s->r); }

void rtstore_hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

/* SHA-256 fetched once: EVP_sha256() in EVP_Digest looks the algorithm up in the default
 * provider on every call (OpenSSL 3), two locks and a hash table per refresh token. */
static EVP_MD *sha256;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static void sha256_fetch(void) { sha256 = EVP_MD_fetch(NULL, "SHA256", NULL); }
static const EVP_MD *md_sha256(void)
{
    pthread_once(&sha256_once, sha256_fetch);
    return sha256 ? sha256 : EVP_sha256();
}

/* Random bytes for refresh tokens, family ids and jtis, taken from a per-thread buffer that
 * libcrypto's generator refills RAND_POOL bytes at a time: one RAND_bytes call per value
 * cost ~6,700 instructions and a getpid(2) (OpenSSL 3's fork check), three per password
 * grant (~20,000 of its ~137,000 instructions outside libjwt and the hash) and two per
 * refresh; the refill costs ~900 per grant (bench/auth_instr.sh). The bytes are the same
 * generator's; each is handed out once and wiped from the buffer as it is, never leaves the thread
 * before use, and auth does not fork. (The gateway's request ids do the same: gateway/meta.c.) */
#define RAND_POOL 512
static __thread unsigned char rand_pool[RAND_POOL];
static __thread size_t rand_left;

/* n (<= RAND_POOL) random bytes into out: 0, or -1 when the generator fails. */
static int random_bytes(unsigned char *out, size_t n)
{
    if (n > RAND_POOL) return -1;
    if (rand_left < n) {
        rand_left = 0;
        if (RAND_bytes(rand_pool, RAND_POOL) != 1) {
            explicit_bzero(rand_pool, RAND_POOL);
            return -1;
        }
        rand_left = RAND_POOL;
    }
    unsigned char *p = rand_pool + (RAND_POOL - rand_left);
    memcpy(out, p, n);
    explicit_bzero(p, n); /* used once only */
    rand_left -= n;
    return 0;
}

int rtstore_random_hex(char *buf, size_t n)
{
    unsigned char b[64];
    if (n > sizeof b || random_bytes(b, n) < 0) return -1;
    rtstore_hex(b, n, buf);
    explicit_bzero(b, sizeof b);
    return 0;
}

int rtstore_token_shape(const char *tok)
{
    size_t i;
    if (!tok) return 0;
    for (i = 0; tok[i]; i++) {
        char c = tok[i];
        if (i >= STORE_TOKEN_LEN) return 0;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return 0;
    }
    return i == STORE_TOKEN_LEN;
}

static int new_token(char tok[STORE_TOKEN_LEN + 1])
{
    unsigned char b[32];
    int rc = -1;

    if (random_bytes(b, sizeof b) == 0 && b64url_encode(b, sizeof b, tok, STORE_TOKEN_LEN + 1) == 0)
        rc = 0;
    explicit_bzero(b, sizeof b);
    return rc;
}

/* key = "sc:rt:" + hex(SHA-256(token)). */
static int token_key(const char *tok, char key[80])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    int o;

    if (EVP_Digest(tok, strlen(tok), md, &mdlen, md_sha256(), NULL) != 1 || mdlen != 32) return -1;
    o = sizeof PREFIX "rt:" - 1;
    memcpy(key, PREFIX "rt:", (size_t)o);
    rtstore_hex(md, mdlen, key + o);
    return 0;
}

static int fam_valid(const char *fam)
{
    size_t i;
    for (i = 0; fam[i]; i++)
        if (!((fam[i] >= '0' && fam[i] <= '9') || (fam[i] >= 'a' && fam[i] <= 'f'))) return 0;
    return i == STORE_FAMILY_LEN;
}

static void copy_str(char *dst, size_t cap, const redisReply *r)
{
    size_t n = 0;
    if (r && r->type == REDIS_REPLY_STRING) n = r->len < cap - 1 ? r->len : cap - 1;
    if (n) memcpy(dst, r->str, n);
    dst[n] = '\0';
}

static void fill_info(rtstore_info *info, redisReply **el, size_t n)
{
    memset(info, 0, sizeof *info);
    if (n > 0) copy_str(info->sub, sizeof info->sub, el[0]);
    if (n > 1) copy_str(info->fam, sizeof info->fam, el[1]);
    if (n > 2) copy_str(info->scope, sizeof info->scope, el[2]);
}

int rtstore_issue(rtstore *s, const char *sub, const char *fam, const char *scope,
                  char token[STORE_TOKEN_LEN + 1])
{
    char rk[80], fk[80], uk[128], now[24];
    int rc;

    if (!fam_valid(fam) || strlen(sub) > 64 || strlen(scope) > STORE_SCOPE_MAX) return -EINVAL;
    if (new_token(token) < 0 || token_key(token, rk) < 0) return -EIO;
    snprintf(fk, sizeof fk, PREFIX "rtfam:%s", fam);
    snprintf(uk, sizeof uk, PREFIX "rtuser:%s", sub);
    snprintf(now, sizeof now, "%lld", (long long)time(NULL));
    char first_ttl[24]; /* the first token lives no longer than the family may */
    snprintf(first_ttl, sizeof first_ttl, "%ld",
             s->max_age && s->max_age < s->ttl ? s->max_age : s->ttl);
    const char *keys[3] = {rk, fk, uk};
    const char *args[6] = {sub, fam, scope, first_ttl, now, PREFIX};
    rc = rds_eval(s->r, &s->issue, NULL, 3, keys, 6, args);
    if (rc < 0) explicit_bzero(token, STORE_TOKEN_LEN + 1);
    return rc;
}

int rtstore_rotate(rtstore *s, const char *old, char new_token_out[STORE_TOKEN_LEN + 1],
                   rtstore_info *info)
{
    char ok_key[80], nk[80], now[24];
    redisReply *rep = NULL;
    int rc;

    memset(info, 0, sizeof *info);
    if (!rtstore_token_shape(old)) return RT_UNKNOWN;
    if (token_key(old, ok_key) < 0 || new_token(new_token_out) < 0 ||
        token_key(new_token_out, nk) < 0)
        return -EIO;
    snprintf(now, sizeof now, "%lld", (long long)time(NULL));
    const char *keys[2] = {ok_key, nk};
    const char *args[5] = {s->ttl_s, now, PREFIX, s->reuse_s, s->max_s};
    rc = rds_eval(s->r, &s->rotate, &rep, 2, keys, 5, args);
    if (rc < 0) goto done;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 1 ||
        rep->element[0]->type != REDIS_REPLY_STRING) {
        rc = -EIO;
        goto done;
    }
    fill_info(info, rep->element + 1, rep->elements - 1);
    if (strcmp(rep->element[0]->str, "ok") == 0)
        rc = RT_OK;
    else if (strcmp(rep->element[0]->str, "reuse") == 0)
        rc = RT_REUSE;
    else if (strcmp(rep->element[0]->str, "revoked") == 0)
        rc = RT_REVOKED;
    else if (strcmp(rep->element[0]->str, "expired") == 0)
        rc = RT_EXPIRED;
    else
        rc = RT_UNKNOWN;
done:
    if (rep) freeReplyObject(rep);
    if (rc != RT_OK) explicit_bzero(new_token_out, STORE_TOKEN_LEN + 1);
    return rc;
}

int rtstore_revoke_token(rtstore *s, const char *token, rtstore_info *info)
{
    char k[80];
    redisReply *rep = NULL;
    int rc;

    memset(info, 0, sizeof *info);
    if (!rtstore_token_shape(token)) return 0;
    if (token_key(token, k) < 0) return -EIO;
    const char *keys[1] = {k};
    const char *args[1] = {PREFIX};
    rc = rds_eval(s->r, &s->revoke_token, &rep, 1, keys, 1, args);
    if (rc < 0) return rc;
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements >= 2) {
        fill_info(info, rep->element, rep->elements);
        rc = RT_REVOKE_DONE;
    } else if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 1) {
        rc = RT_REVOKE_STALE;
    } else {
        rc = RT_REVOKE_UNKNOWN;
    }
    freeReplyObject(rep);
    return rc;
}

int rtstore_revoke_family(rtstore *s, const char *fam)
{
    char fk[80];
    if (!fam_valid(fam)) return 0; /* cannot exist */
    snprintf(fk, sizeof fk, PREFIX "rtfam:%s", fam);
    const char *keys[1] = {fk};
    return rds_eval(s->r, &s->revoke_family, NULL, 1, keys, 0, NULL);
}

int rtstore_revoke_user(rtstore *s, const char *sub)
{
    char uk[128];
    redisReply *rep = NULL;
    int rc;

    if (strlen(sub) > 64) return -EINVAL;
    snprintf(uk, sizeof uk, PREFIX "rtuser:%s", sub);
    const char *keys[1] = {uk};
    const char *args[1] = {PREFIX};
    rc = rds_eval(s->r, &s->revoke_user, &rep, 1, keys, 1, args);
    if (rc < 0) return rc;
    rc = rep->type == REDIS_REPLY_INTEGER ? (int)rep->integer : 0;
    freeReplyObject(rep);
    return rc;
}

/* The counter's key: the name hashed, so that any name a client sends makes a key of one
 * fixed size (and none of it shows in Redis). */
static int login_key(char kind, const char *name, char *out, size_t cap)
{
    unsigned char md[32];
    unsigned int mdl = 0;
    char hex[33];
    if (EVP_Digest(name, strlen(name), md, &mdl, md_sha256(), NULL) != 1 || mdl < 16) return -1;
    rtstore_hex(md, 16, hex);
    return snprintf(out, cap, PREFIX "loginfail:%c:%s", kind, hex) < (int)cap ? 0 : -1;
}

long rtstore_login_blocked(rtstore *s, char kind, const char *name, long max, int *failures)
{
    char k[80], mx[24];
    redisReply *rep = NULL;
    long rc = 0;
    *failures = 1; /* unknown: a success then clears, as if there were some */
    if (max <= 0 || login_key(kind, name, k, sizeof k) < 0) return 0;
    snprintf(mx, sizeof mx, "%ld", max);
    const char *keys[1] = {k};
    const char *args[1] = {mx};
    int e = rds_eval(s->r, &s->login_check, &rep, 1, keys, 1, args);
    if (e < 0) return e;
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
        rep->element[0]->type == REDIS_REPLY_INTEGER &&
        rep->element[1]->type == REDIS_REPLY_INTEGER) {
        rc = (long)rep->element[0]->integer;
        *failures = rep->element[1]->integer > 0;
    }
    freeReplyObject(rep);
    return rc;
}

int rtstore_login_failed(rtstore *s, char kind, const char *name, long window)
{
    char k[80], w[24];
    if (window <= 0 || login_key(kind, name, k, sizeof k) < 0) return 0;
    snprintf(w, sizeof w, "%ld", window);
    const char *keys[1] = {k};
    const char *args[1] = {w};
    return rds_eval(s->r, &s->login_failed, NULL, 1, keys, 1, args);
}

int rtstore_login_ok(rtstore *s, char kind, const char *name)
{
    char k[80];
    if (login_key(kind, name, k, sizeof k) < 0) return 0;
    const char *argv[2] = {"DEL", k};
    redisReply *rep = NULL;
    int rc = rds_commandv(s->r, &rep, 2, argv, NULL);
    if (rep) freeReplyObject(rep);
    return rc < 0 ? rc : 0;
}
