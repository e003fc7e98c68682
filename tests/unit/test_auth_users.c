/* Unit tests of auth's pure code: the users-file parser, password checks, permission
 * patterns and scope narrowing, request parameter handling and the grants that need no
 * Redis (the refresh-token store is left out: store == NULL behaves like Redis down). */
#include "../../services/auth/grants.h"
#include "../../services/auth/users.h"
#include "log.h"
#include "metrics.h"
#include "test.h"
#include "token.h"

#include <crypt.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

/* A sha512crypt hash of pw with few rounds (fast tests). Returns a static buffer. */
static const char *mkhash(const char *pw, unsigned long rounds)
{
    static char out[CRYPT_OUTPUT_SIZE];
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    struct crypt_data cd;
    memset(&cd, 0, sizeof cd);
    if (!crypt_gensalt_rn("$6$", rounds, NULL, 0, setting, sizeof setting)) return NULL;
    const char *h = crypt_rn(pw, setting, &cd, sizeof cd);
    if (!h) return NULL;
    snprintf(out, sizeof out, "%s", h);
    return out;
}

static users *parse(const char *text, char *err, size_t errlen, int *rc)
{
    users *u = NULL;
    *rc = users_parse(&u, text, strlen(text), "users.conf", err, errlen);
    return u;
}

/* ---- parser ------------------------------------------------------------------------- */

TEST(users_parse_valid_file)
{
    char text[4096], err[256];
    char ha[200], hb[200];
    int rc;
    snprintf(ha, sizeof ha, "%s", mkhash("wonderland", 1000));
    snprintf(hb, sizeof hb, "%s", mkhash("secret", 1000));
    snprintf(text, sizeof text,
             "# comment\n"
             "\n"
             "   # indented comment\n"
             "user alice %s sub=prices.*,chat.> pub=chat.>\r\n"
             "user\tbob\t%s\tsub=prices.*\n"
             "client producer %s pub=prices.*\n"
             "user carol !\n"
             "user dave %s sub= pub=",
             ha, hb, hb, ha);
    users *u = parse(text, err, sizeof err, &rc);
    REQUIRE(rc == 0 && u);
    CHECK_EQ_INT(users_count(u), 5);
    const users_entry *a = users_find(u, USERS_USER, "alice");
    REQUIRE(a);
    CHECK_EQ_INT(a->perms.nsub, 2);
    CHECK_STR(a->perms.sub[0], "prices.*");
    CHECK_STR(a->perms.sub[1], "chat.>");
    CHECK_EQ_INT(a->perms.npub, 1);
    CHECK_STR(a->perms.pub[0], "chat.>");
    CHECK_EQ_INT(a->line, 4);
    const users_entry *b = users_find(u, USERS_USER, "bob");
    REQUIRE(b);
    CHECK_EQ_INT(b->perms.nsub, 1);
    CHECK_EQ_INT(b->perms.npub, 0);
    CHECK(users_find(u, USERS_CLIENT, "producer") != NULL);
    CHECK(users_find(u, USERS_USER, "producer") == NULL); /* kinds do not mix */
    CHECK(users_find(u, USERS_CLIENT, "alice") == NULL);
    CHECK(users_find(u, USERS_USER, "nobody") == NULL);
    const users_entry *d = users_find(u, USERS_USER, "dave");
    REQUIRE(d);
    CHECK_EQ_INT(d->perms.nsub + d->perms.npub, 0);
    users_destroy(u);
}

TEST(users_api_scopes)
{
    char text[1024], err[256], out[256];
    int rc;
    snprintf(text, sizeof text, "client svc %s sub=a.* scope=sidecast.api,ops\nuser u %s\n",
             mkhash("s", 1000), mkhash("s", 1000));
    users *u = parse(text, err, sizeof err, &rc);
    REQUIRE(rc == 0 && u);
    const users_entry *e = users_find(u, USERS_CLIENT, "svc");
    REQUIRE(e && e->nscopes == 2);
    CHECK(users_api_scope(e, NULL, out, sizeof out, err, sizeof err) == 0);
    CHECK_STR(out, "sidecast.api ops"); /* no scope parameter: every scope= */
    CHECK(users_api_scope(e, "sub:a.b ops", out, sizeof out, err, sizeof err) == 0);
    CHECK_STR(out, "ops"); /* asked: only those */
    CHECK(users_api_scope(e, "sub:a.b", out, sizeof out, err, sizeof err) == 0);
    CHECK_STR(out, "");
    CHECK(users_api_scope(e, "admin", out, sizeof out, err, sizeof err) == -EINVAL);
    CHECK(strstr(err, "admin") != NULL);
    CHECK(users_api_scope(e, NULL, out, 5, err, sizeof err) == -EINVAL); /* too small */
    const users_entry *plain = users_find(u, USERS_USER, "u");
    REQUIRE(plain);
    CHECK(users_api_scope(plain, NULL, out, sizeof out, err, sizeof err) == 0);
    CHECK_STR(out, "");
    users_perms_items("sub:a.b  ops pub:c", out);
    CHECK_STR(out, "sub:a.b pub:c");
    users_destroy(u);
    snprintf(text, sizeof text, "client svc %s scope=a.*\n", mkhash("s", 1000));
    CHECK(parse(text, err, sizeof err, &rc) == NULL && strstr(err, "no wildcards"));
    snprintf(text, sizeof text, "client svc %s scope=a scope=b\n", mkhash("s", 1000));
    CHECK(parse(text, err, sizeof err, &rc) == NULL && strstr(err, "twice"));
}

TEST(users_parse_empty_file)
{
    char err[128];
    int rc;
    users *u = parse("", err, sizeof err, &rc);
    REQUIRE(rc == 0 && u);
    CHECK_EQ_INT(users_count(u), 0);
    /* an unknown name is still checked (against the built-in stand-in hash) and fails */
    CHECK_EQ_INT(users_verify(u, USERS_USER, "x", "y", NULL), 0);
    users_destroy(u);
}

/* Each bad line must fail with "users.conf:LINE:" and a reason containing `why`. */
TEST(users_parse_rejects_bad_lines)
{
    char h[200], bad[512], err[256];
    snprintf(h, sizeof h, "%s", mkhash("pw", 1000));
    struct {
        const char *fmt; /* %s: a good hash */
        const char *why;
    } cases[] = {
        {"admin alice %s", "first field"},
        {"user alice", "expected"},
        {"user al.ice %s", "name must be"},
        {"user al/ice %s", "name must be"},
        {"user aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa %s", "name"},
        {"user alice plaintext", "crypt(3)"},
        {"user alice $1$abcdefgh$0123456789012345678901", "legacy"},
        {"user alice $6$saltsalt$tooshort", "malformed"},
        {"user alice $zz$abc$def", "hash"},
        {"user alice %s sub=prices..x", "invalid topic pattern"},
        {"user alice %s sub=prices.>.x", "invalid topic pattern"},
        {"user alice %s sub=pri ces", "unknown field"},
        {"user alice %s sub=a sub=b", "given twice"},
        {"user alice %s sub=a,", "trailing comma"},
        {"user alice %s sub=,a", "empty"},
        {"user alice %s sub=a.b.", "invalid topic pattern"},
        {"user alice %s pub=*x", "invalid topic pattern"},
        {"user alice %s topics=a", "unknown field"},
        {"user alice %s sub=a pub=b x y z w", "too many fields"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char line[400];
        int rc;
        const char *at = strstr(cases[i].fmt, "%s");
        if (at)
            snprintf(line, sizeof line, "%.*s%s%s", (int)(at - cases[i].fmt), cases[i].fmt, h,
                     at + 2);
        else
            snprintf(line, sizeof line, "%s", cases[i].fmt);
        snprintf(bad, sizeof bad, "# header\nuser ok %.200s\n%.290s\n", h, line);
        users *u = parse(bad, err, sizeof err, &rc);
        if (rc != -EINVAL || u != NULL) {
            printf("  case %zu accepted: %s\n", i, line);
            CHECK(rc == -EINVAL);
            users_destroy(u);
            continue;
        }
        if (strncmp(err, "users.conf:3: ", 14) != 0 || !strstr(err, cases[i].why)) {
            printf("  case %zu: err=\"%s\" want \"%s\"\n", i, err, cases[i].why);
            CHECK(0);
        }
        /* the hash never appears in the message */
        CHECK(strstr(err, h) == NULL);
    }
}

TEST(users_parse_duplicates_and_limits)
{
    char h[200], text[8192], err[256];
    int rc, o;
    snprintf(h, sizeof h, "%s", mkhash("pw", 1000));

    snprintf(text, sizeof text, "user alice %s\nclient bob %s\nuser bob %s\n", h, h, h);
    users *u = parse(text, err, sizeof err, &rc);
    CHECK(rc == -EINVAL && !u);
    CHECK(strstr(err, "users.conf:3:") != NULL);
    CHECK(strstr(err, "line 2") != NULL);

    o = snprintf(text, sizeof text, "user alice %s sub=", h);
    for (int i = 0; i < 65; i++)
        o += snprintf(text + o, sizeof text - (size_t)o, "%st%d", i ? "," : "", i);
    u = parse(text, err, sizeof err, &rc);
    CHECK(rc == -EINVAL && !u);
    CHECK(strstr(err, "too many") != NULL);

    /* duplicates within one list are folded, not counted twice */
    snprintf(text, sizeof text, "user alice %s sub=a,a,b\n", h);
    u = parse(text, err, sizeof err, &rc);
    REQUIRE(rc == 0 && u);
    CHECK_EQ_INT(users_find(u, USERS_USER, "alice")->perms.nsub, 2);
    users_destroy(u);

    char withnul[] = "user alice x\0y\n";
    u = NULL;
    rc = users_parse(&u, withnul, sizeof withnul - 1, "f", err, sizeof err);
    CHECK(rc == -EINVAL && strstr(err, "NUL"));
}

/* The documented example must stay loadable (tests run from the repository root). */
TEST(users_example_file_parses)
{
    users *u = NULL;
    char err[256];
    int rc = users_load(&u, "deploy/config/users.example", err, sizeof err);
    if (rc == -EIO) return; /* run from elsewhere: nothing to check */
    if (rc != 0) printf("  %s\n", err);
    REQUIRE(rc == 0);
    CHECK_EQ_INT(users_count(u), 3);
    const users_entry *a = users_find(u, USERS_USER, "alice");
    REQUIRE(a);
    CHECK_EQ_INT(a->perms.nsub, 2);
    CHECK(users_find(u, USERS_CLIENT, "producer") != NULL);
    CHECK_EQ_INT(users_verify(u, USERS_USER, "alice", "wonderland", NULL), 0); /* locked */
    users_destroy(u);
}

TEST(users_load_missing_file)
{
    users *u = NULL;
    char err[256];
    CHECK_EQ_INT(users_load(&u, "/nonexistent/users.conf", err, sizeof err), -EIO);
    CHECK(strstr(err, "/nonexistent/users.conf") != NULL);
    CHECK(u == NULL);
}

/* ---- passwords ---------------------------------------------------------------------- */

TEST(users_verify_passwords)
{
    char text[2048], err[256], ha[200];
    int rc;
    snprintf(ha, sizeof ha, "%s", mkhash("wonderland", 1000));
    char hs[200];
    snprintf(hs, sizeof hs, "%s", mkhash("s3cret", 1000));
    snprintf(text, sizeof text, "user alice %s\nclient svc %s\nuser locked !\n", ha, hs);
    users *u = parse(text, err, sizeof err, &rc);
    REQUIRE(rc == 0);
    const users_entry *e = NULL;
    CHECK_EQ_INT(users_verify(u, USERS_USER, "alice", "wonderland", &e), 1);
    CHECK(e && strcmp(e->name, "alice") == 0);
    CHECK_EQ_INT(users_verify(u, USERS_USER, "alice", "Wonderland", &e), 0);
    CHECK(e == NULL);
    CHECK_EQ_INT(users_verify(u, USERS_USER, "alice", "", NULL), 0);
    CHECK_EQ_INT(users_verify(u, USERS_USER, "nobody", "wonderland", NULL), 0);
    CHECK_EQ_INT(users_verify(u, USERS_USER, "svc", "s3cret", NULL), 0); /* wrong kind */
    CHECK_EQ_INT(users_verify(u, USERS_CLIENT, "svc", "s3cret", NULL), 1);
    CHECK_EQ_INT(users_verify(u, USERS_USER, "locked", "", NULL), 0);
    CHECK_EQ_INT(users_verify(u, USERS_USER, "locked", "!", NULL), 0);
    char *longpw = malloc(USERS_SECRET_MAX + 2);
    memset(longpw, 'a', USERS_SECRET_MAX + 1);
    longpw[USERS_SECRET_MAX + 1] = '\0';
    CHECK_EQ_INT(users_verify(u, USERS_USER, "alice", longpw, NULL), 0);
    free(longpw);
    users_destroy(u);
}

/* An unknown user costs a hash computation of the same scheme and cost as a known one. */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

TEST(users_verify_unknown_user_costs_the_same)
{
    char text[1024], err[256];
    int rc;
    snprintf(text, sizeof text, "user alice %s\n", mkhash("pw", 200000));
    users *u = parse(text, err, sizeof err, &rc);
    REQUIRE(rc == 0);
    /* CPU time of this thread, not wall-clock: the hash is pure computation, and a loaded
     * machine's preemption would otherwise decide the result (it did, once in ~30 runs). */
    double known = 1e9, unknown = 1e9;
    for (int i = 0; i < 3; i++) {
        double t0 = cpu_s();
        users_verify(u, USERS_USER, "alice", "wrong", NULL);
        double t1 = cpu_s();
        users_verify(u, USERS_USER, "mallory", "wrong", NULL);
        double t2 = cpu_s();
        if (t1 - t0 < known) known = t1 - t0;
        if (t2 - t1 < unknown) unknown = t2 - t1;
    }
    if (unknown <= known * 0.7 || unknown >= known * 1.3)
        printf("  known=%.1fms unknown=%.1fms\n", known * 1e3, unknown * 1e3);
    CHECK(unknown > known * 0.7);
    CHECK(unknown < known * 1.3);
    users_destroy(u);
}

/* ---- patterns and scopes ------------------------------------------------------------ */

TEST(users_pattern_validity)
{
    const char *good[] = {"a", "prices.BTC", "prices.*", "chat.>", ">",
                          "*", "*.*",        "a-b_c.D9", "a.*.c.>"};
    const char *bad[] = {"",   ".",  "a.", ".a",  "a..b", "a.>.b", ">.a",
                         "a*", "*a", "a>", "a b", "a/b",  "é",     NULL};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        if (!users_pattern_valid(good[i])) printf("  rejected %s\n", good[i]);
        CHECK(users_pattern_valid(good[i]));
    }
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        if (users_pattern_valid(bad[i])) printf("  accepted %s\n", bad[i]);
        CHECK(!users_pattern_valid(bad[i]));
    }
    char longp[200];
    memset(longp, 'a', 129);
    longp[129] = '\0';
    CHECK(!users_pattern_valid(longp));
    longp[128] = '\0';
    CHECK(users_pattern_valid(longp));
    CHECK(users_name_valid("alice"));
    CHECK(!users_name_valid("a.b"));
    CHECK(!users_name_valid(""));
    CHECK(!users_name_valid(NULL));
}

TEST(users_pattern_coverage)
{
    struct {
        const char *g, *r;
        int want;
    } c[] = {
        {"prices.*", "prices.BTC", 1},
        {"prices.*", "prices.*", 1},
        {"prices.*", "prices.>", 0},
        {"prices.*", "prices.BTC.x", 0},
        {"prices.*", "prices", 0},
        {"chat.>", "chat.room1", 1},
        {"chat.>", "chat.room1.x", 1},
        {"chat.>", "chat.*", 1},
        {"chat.>", "chat.>", 1},
        {"chat.>", "chat", 0},
        {">", "anything.at.all", 1},
        {">", ">", 1},
        {"a.b", "a.b", 1},
        {"a.b", "a.c", 0},
        {"a.b", "a.*", 0},
        {"a.b", "a.bb", 0},
        {"*.x", "y.x", 1},
        {"*.x", "*.x", 1},
        {"*.x", "y.z", 0},
        {"a.*.c", "a.b.c", 1},
        {"a.*.c", "a.>", 0},
        {"prices.*", "chat.x", 0},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        int got = users_pattern_covers(c[i].g, c[i].r);
        if (got != c[i].want) printf("  covers(%s, %s) = %d\n", c[i].g, c[i].r, got);
        CHECK_EQ_INT(got, c[i].want);
    }
}

TEST(users_scope_narrowing)
{
    char *sub[] = {"prices.*", "chat.>"}, *pub[] = {"chat.>"};
    users_perms base = {sub, 2, pub, 1}, out;
    char err[200], buf[256];

    CHECK_EQ_INT(users_perms_narrow(&base, NULL, &out, err, sizeof err), 0);
    CHECK_EQ_INT(out.nsub, 2);
    CHECK_EQ_INT(out.npub, 1);
    CHECK_EQ_INT(users_perms_scope(&out, buf, sizeof buf), 0);
    CHECK_STR(buf, "sub:prices.* sub:chat.> pub:chat.>");
    users_perms_clear(&out);

    CHECK_EQ_INT(users_perms_narrow(&base, "sub:prices.BTC  sub:prices.BTC pub:chat.room1", &out,
                                    err, sizeof err),
                 0);
    CHECK_EQ_INT(out.nsub, 1);
    CHECK_STR(out.sub[0], "prices.BTC");
    CHECK_EQ_INT(out.npub, 1);
    CHECK_STR(out.pub[0], "chat.room1");
    users_perms_clear(&out);

    CHECK_EQ_INT(users_perms_narrow(&base, "sub:chat.room1", &out, err, sizeof err), 0);
    CHECK_EQ_INT(out.npub, 0); /* a scope asks for exactly what it names */
    users_perms_clear(&out);

    CHECK_EQ_INT(users_perms_narrow(&base, "pub:prices.BTC", &out, err, sizeof err), -EINVAL);
    CHECK(strstr(err, "exceeds") != NULL);
    CHECK_EQ_INT(users_perms_narrow(&base, "sub:prices.>", &out, err, sizeof err), -EINVAL);
    CHECK_EQ_INT(users_perms_narrow(&base, "read", &out, err, sizeof err), -EINVAL);
    CHECK(strstr(err, "unknown scope") != NULL);
    CHECK_EQ_INT(users_perms_narrow(&base, "sub:a..b", &out, err, sizeof err), -EINVAL);
    CHECK_EQ_INT(users_perms_narrow(&base, "sub:", &out, err, sizeof err), -EINVAL);
    CHECK(out.nsub == 0 && out.sub == NULL);

    users_perms cp;
    CHECK_EQ_INT(users_perms_copy(&cp, &base), 0);
    CHECK_STR(cp.sub[1], "chat.>");
    users_perms_clear(&cp);
    CHECK_EQ_INT(users_perms_scope(&base, buf, 8), -1);
}

/* ---- request parameters ------------------------------------------------------------- */

TEST(grant_params_envelope_and_bare)
{
    json_t *p;
    char err[160];
    const char *v;
    const char *env = "{\"method\":\"POST\",\"path\":\"/auth/token\",\"params\":{},\"query\":"
                      "{\"grant_type\":\"client_credentials\"},"
                      "\"body\":{\"grant_type\":\"password\"}}";
    REQUIRE(grant_parse_params(env, strlen(env), 0, &p, err, sizeof err) == 0);
    CHECK_EQ_INT(grant_param(p, "grant_type", &v), GRANT_PARAM_OK);
    CHECK_STR(v, "password"); /* the body, never the query string */
    json_decref(p);

    const char *bare = "{\"grant_type\":\"password\",\"username\":\"alice\"}";
    REQUIRE(grant_parse_params(bare, strlen(bare), 0, &p, err, sizeof err) == 0);
    CHECK_EQ_INT(grant_param(p, "username", &v), GRANT_PARAM_OK);
    CHECK_STR(v, "alice");
    json_decref(p);

    const char *nobody = "{\"method\":\"POST\",\"path\":\"/auth/token\",\"body\":null}";
    REQUIRE(grant_parse_params(nobody, strlen(nobody), 0, &p, err, sizeof err) == 0);
    CHECK(json_is_object(p) && json_object_size(p) == 0);
    json_decref(p);

    const char *bad[] = {"",
                         "[]",
                         "\"x\"",
                         "{\"body\":\"grant_type=password\"}",
                         "{",
                         "{\"a\":1,\"a\":2}",
                         "{\"body\":{\"u\":1,\"u\":1}}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        p = NULL;
        CHECK_EQ_INT(grant_parse_params(bad[i], strlen(bad[i]), 0, &p, err, sizeof err), -1);
        CHECK(p == NULL);
    }
    CHECK_EQ_INT(grant_parse_params(bare, strlen(bare), 10, &p, err, sizeof err), -1);
    CHECK(strstr(err, "too large") != NULL);
}

TEST(grant_param_types)
{
    json_t *p = json_loads("{\"s\":\"x\",\"e\":\"\",\"n\":null,\"i\":5,\"a\":[\"x\",\"y\"],"
                           "\"t\":true,\"ts\":\"true\",\"f\":\"no\"}",
                           0, NULL);
    const char *v;
    REQUIRE(p);
    CHECK_EQ_INT(grant_param(p, "s", &v), GRANT_PARAM_OK);
    CHECK_EQ_INT(grant_param(p, "e", &v), GRANT_PARAM_ABSENT);
    CHECK_EQ_INT(grant_param(p, "n", &v), GRANT_PARAM_ABSENT);
    CHECK_EQ_INT(grant_param(p, "missing", &v), GRANT_PARAM_ABSENT);
    CHECK_EQ_INT(grant_param(p, "i", &v), GRANT_PARAM_BAD);
    CHECK_EQ_INT(grant_param(p, "a", &v), GRANT_PARAM_BAD);
    CHECK(grant_flag(p, "t"));
    CHECK(grant_flag(p, "ts"));
    CHECK(!grant_flag(p, "f"));
    CHECK(!grant_flag(p, "missing"));
    json_decref(p);
    char *e = grant_error_json("invalid_request", "say \"why\"");
    CHECK_STR(e, "{\"error\":\"invalid_request\",\"error_description\":\"say \\\"why\\\"\"}");
    free(e);
}

/* ---- grants without Redis ----------------------------------------------------------- */

static struct {
    int ready;
    users *u;
    signkeys *sk;
    token_keyset *keys;
    grant_cfg g;
    char secret[32];
} fx;

/* A throw-away EC key, users alice/bob and client svc; store NULL (Redis "down"). */
static int fixture(void)
{
    char keypath[] = "/tmp/sc-test-key-XXXXXX", text[2048], err[256];
    char ha[200];
    EVP_PKEY *pk;
    FILE *f;
    int fd, rc;

    if (fx.ready) return 0;
    log_init("test", LOG_ERROR);
    pk = EVP_EC_gen("P-256");
    if (!pk) return -1;
    fd = mkstemp(keypath);
    if (fd < 0 || !(f = fdopen(fd, "w"))) return -1;
    PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    EVP_PKEY_free(pk);
    rc = signkeys_open(&fx.sk, keypath, "test-1");
    unlink(keypath);
    if (rc < 0) return -1;
    if (!(fx.keys = signkeys_public(fx.sk))) return -1;
    char hb[200], hs[200];
    snprintf(fx.secret, sizeof fx.secret, "svc-secret");
    /* mkhash returns one static buffer: copy each result */
    snprintf(ha, sizeof ha, "%s", mkhash("wonderland", 1000));
    snprintf(hb, sizeof hb, "%s", mkhash("builder", 1000));
    snprintf(hs, sizeof hs, "%s", mkhash(fx.secret, 1000));
    snprintf(text, sizeof text,
             "user alice %s sub=prices.*,chat.> pub=chat.>\n"
             "user bob %s sub=prices.*\n"
             "client svc %s sub=prices.* pub=prices.*\n",
             ha, hb, hs);
    if (users_parse(&fx.u, text, strlen(text), "t", err, sizeof err) < 0) return -1;
    fx.g = (grant_cfg){.users = fx.u,
                       .keys = fx.sk,
                       .store = NULL,
                       .issuer = "sidecast",
                       .audience = "sidecast",
                       .ws_url = "ws://localhost:8090/ws",
                       .access_ttl = 300,
                       .max_body = 16384};
    fx.ready = 1;
    return 0;
}

/* Runs one request; returns the parsed body (caller decrefs) and fills status/header. */
static json_t *call(enum grant_op op, const char *req, int *status, const char **hdr)
{
    grant_reply r;
    json_t *j;
    grant_handle(&fx.g, op, req, strlen(req), (long)time(NULL), "t-1", &r);
    *status = r.status;
    if (hdr) *hdr = r.http_header;
    j = r.body ? json_loads(r.body, 0, NULL) : NULL;
    CHECK(r.event == NULL);
    grant_reply_clear(&r);
    return j;
}

static void check_error(json_t *j, const char *code)
{
    REQUIRE(j);
    CHECK_STR(json_string_value(json_object_get(j, "error")), code);
    CHECK(json_is_string(json_object_get(j, "error_description")));
    CHECK_EQ_INT(json_object_size(j), 2);
}

TEST(grant_password_without_redis)
{
    int st;
    const char *hdr;
    REQUIRE(fixture() == 0);
    json_t *j = call(GRANT_TOKEN,
                     "{\"method\":\"POST\",\"path\":\"/auth/token\",\"body\":{\"grant_type\":"
                     "\"password\",\"username\":\"alice\",\"password\":\"wonderland\"}}",
                     &st, &hdr);
    CHECK_EQ_INT(st, 200);
    CHECK_STR(hdr, "Cache-Control: no-store");
    REQUIRE(j);
    CHECK_STR(json_string_value(json_object_get(j, "token_type")), "Bearer");
    CHECK_EQ_INT(json_integer_value(json_object_get(j, "expires_in")), 300);
    CHECK_STR(json_string_value(json_object_get(j, "ws_url")), "ws://localhost:8090/ws");
    CHECK(json_object_get(j, "refresh_token") == NULL); /* no store: no refresh token */

    token_policy pol = {"sidecast", "sidecast", 30, 0};
    token_claims c;
    REQUIRE(token_verify(fx.keys, &pol, json_string_value(json_object_get(j, "access_token")),
                         (long)time(NULL), &c) == SC_OK);
    CHECK_STR(c.sub, "alice");
    CHECK_STR(c.kid, "test-1");
    CHECK_EQ_INT(strlen(c.jti), 32);
    CHECK_EQ_INT(c.exp - c.iat, 300);
    CHECK_EQ_INT(c.nbf, c.iat);
    json_t *subs = json_object_get(c.payload, "sub_topics");
    CHECK_EQ_INT(json_array_size(subs), 2);
    CHECK_STR(json_string_value(json_array_get(subs, 0)), "prices.*");
    CHECK_STR(json_string_value(json_array_get(json_object_get(c.payload, "pub_topics"), 0)),
              "chat.>");
    CHECK(json_object_get(c.payload, "sid") == NULL);
    token_claims_clear(&c);
    json_decref(j);

    /* bob has no pub permission: an empty array, not a missing claim */
    j = call(GRANT_TOKEN,
             "{\"grant_type\":\"password\",\"username\":\"bob\",\"password\":\"builder\"}", &st,
             NULL);
    CHECK_EQ_INT(st, 200);
    REQUIRE(j);
    REQUIRE(token_verify(fx.keys, &pol, json_string_value(json_object_get(j, "access_token")),
                         (long)time(NULL), &c) == SC_OK);
    CHECK(json_is_array(json_object_get(c.payload, "pub_topics")));
    CHECK_EQ_INT(json_array_size(json_object_get(c.payload, "pub_topics")), 0);
    token_claims_clear(&c);
    json_decref(j);
}

TEST(grant_password_errors)
{
    int st;
    REQUIRE(fixture() == 0);
    struct {
        const char *req;
        int status;
        const char *code;
    } c[] = {
        {"{\"grant_type\":\"password\",\"username\":\"alice\",\"password\":\"nope\"}", 400,
         "invalid_grant"},
        {"{\"grant_type\":\"password\",\"username\":\"zed\",\"password\":\"wonderland\"}", 400,
         "invalid_grant"},
        {"{\"grant_type\":\"password\",\"username\":\"svc\",\"password\":\"svc-secret\"}", 400,
         "invalid_grant"},
        {"{\"grant_type\":\"password\",\"username\":\"alice\"}", 400, "invalid_request"},
        {"{\"grant_type\":\"password\",\"password\":\"x\"}", 400, "invalid_request"},
        {"{\"grant_type\":\"password\",\"username\":\"\",\"password\":\"x\"}", 400,
         "invalid_request"},
        {"{\"grant_type\":\"password\",\"username\":[\"a\",\"b\"],\"password\":\"x\"}", 400,
         "invalid_request"},
        {"{\"grant_type\":\"password\",\"username\":7,\"password\":\"x\"}", 400, "invalid_request"},
        {"{\"username\":\"alice\",\"password\":\"wonderland\"}", 400, "invalid_request"},
        {"{\"grant_type\":\"implicit\"}", 400, "unsupported_grant_type"},
        {"{\"grant_type\":\"authorization_code\",\"code\":\"x\"}", 400, "unsupported_grant_type"},
        {"not json", 400, "invalid_request"},
        {"{\"grant_type\":\"password\",\"grant_type\":\"password\"}", 400, "invalid_request"},
        {"{\"grant_type\":\"password\",\"username\":\"alice\",\"password\":\"wonderland\","
         "\"scope\":\"pub:prices.BTC\"}",
         400, "invalid_scope"},
        /* unknown fields are fine */
        {"{\"grant_type\":\"password\",\"username\":\"alice\",\"password\":\"wonderland\","
         "\"client_id\":\"web\",\"extra\":1}",
         200, NULL},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        json_t *j = call(GRANT_TOKEN, c[i].req, &st, NULL);
        if (st != c[i].status) printf("  case %zu: status %d\n", i, st);
        CHECK_EQ_INT(st, c[i].status);
        if (c[i].code) check_error(j, c[i].code);
        json_decref(j);
    }
}

TEST(grant_scope_narrows_token)
{
    int st;
    REQUIRE(fixture() == 0);
    json_t *j = call(GRANT_TOKEN,
                     "{\"grant_type\":\"password\",\"username\":\"alice\",\"password\":"
                     "\"wonderland\",\"scope\":\"sub:prices.BTC\"}",
                     &st, NULL);
    CHECK_EQ_INT(st, 200);
    REQUIRE(j);
    CHECK_STR(json_string_value(json_object_get(j, "scope")), "sub:prices.BTC");
    token_policy pol = {"sidecast", "sidecast", 30, 0};
    token_claims c;
    REQUIRE(token_verify(fx.keys, &pol, json_string_value(json_object_get(j, "access_token")),
                         (long)time(NULL), &c) == SC_OK);
    CHECK_EQ_INT(json_array_size(json_object_get(c.payload, "sub_topics")), 1);
    CHECK_EQ_INT(json_array_size(json_object_get(c.payload, "pub_topics")), 0);
    token_claims_clear(&c);
    json_decref(j);
}

TEST(grant_client_credentials)
{
    int st;
    const char *hdr;
    REQUIRE(fixture() == 0);
    json_t *j = call(GRANT_TOKEN,
                     "{\"body\":{\"grant_type\":\"client_credentials\",\"client_id\":\"svc\","
                     "\"client_secret\":\"svc-secret\"}}",
                     &st, &hdr);
    CHECK_EQ_INT(st, 200);
    REQUIRE(j);
    CHECK(json_object_get(j, "refresh_token") == NULL); /* RFC 6749 §4.4.3 */
    token_policy pol = {"sidecast", "sidecast", 30, 0};
    token_claims c;
    REQUIRE(token_verify(fx.keys, &pol, json_string_value(json_object_get(j, "access_token")),
                         (long)time(NULL), &c) == SC_OK);
    CHECK_STR(c.sub, "svc");
    token_claims_clear(&c);
    json_decref(j);

    const char *bad[] = {
        "{\"grant_type\":\"client_credentials\",\"client_id\":\"svc\",\"client_secret\":\"x\"}",
        "{\"grant_type\":\"client_credentials\",\"client_id\":\"nope\",\"client_secret\":\"x\"}",
        "{\"grant_type\":\"client_credentials\",\"client_id\":\"alice\","
        "\"client_secret\":\"wonderland\"}",
    };
    for (size_t i = 0; i < 3; i++) {
        j = call(GRANT_TOKEN, bad[i], &st, &hdr);
        CHECK_EQ_INT(st, 401);
        CHECK(hdr && strncmp(hdr, "WWW-Authenticate: Basic", 23) == 0);
        check_error(j, "invalid_client");
        json_decref(j);
    }
    j = call(GRANT_TOKEN, "{\"grant_type\":\"client_credentials\",\"client_id\":\"svc\"}", &st,
             NULL);
    CHECK_EQ_INT(st, 400);
    check_error(j, "invalid_request");
    json_decref(j);
}

TEST(grant_refresh_and_revoke_without_redis)
{
    int st;
    const char *hdr;
    REQUIRE(fixture() == 0);
    const char *rt = "{\"grant_type\":\"refresh_token\",\"refresh_token\":"
                     "\"MyxiQ4uUEpPyINpLrXOZFJ_93uIOQGv81QlT4BIyO0U\"}";
    json_t *j = call(GRANT_TOKEN, rt, &st, &hdr);
    CHECK_EQ_INT(st, 503);
    CHECK_STR(hdr, "Retry-After: 1");
    check_error(j, "temporarily_unavailable");
    json_decref(j);
    j = call(GRANT_REFRESH, "{\"refresh_token\":\"x\"}", &st, NULL);
    CHECK_EQ_INT(st, 503);
    json_decref(j);
    j = call(GRANT_REFRESH, "{}", &st, NULL);
    CHECK_EQ_INT(st, 400);
    check_error(j, "invalid_request");
    json_decref(j);
    j = call(GRANT_REFRESH, "{\"grant_type\":\"password\",\"username\":\"a\",\"password\":\"b\"}",
             &st, NULL);
    CHECK_EQ_INT(st, 400);
    check_error(j, "unsupported_grant_type");
    json_decref(j);

    /* RFC 7009: unknown or malformed tokens are "revoked" fine */
    j = call(GRANT_REVOKE, "{\"token\":\"whatever\"}", &st, NULL);
    CHECK_EQ_INT(st, 200);
    CHECK(j && json_object_size(j) == 0);
    json_decref(j);
    j = call(GRANT_REVOKE, "{\"token\":\"a.b.c\",\"token_type_hint\":\"access_token\"}", &st, NULL);
    CHECK_EQ_INT(st, 200);
    json_decref(j);
    j = call(GRANT_REVOKE, "{\"token_type_hint\":\"refresh_token\"}", &st, NULL);
    CHECK_EQ_INT(st, 400);
    check_error(j, "invalid_request");
    json_decref(j);
    j = call(GRANT_REVOKE, "{\"token\":\"MyxiQ4uUEpPyINpLrXOZFJ_93uIOQGv81QlT4BIyO0U\"}", &st,
             NULL);
    CHECK_EQ_INT(st, 503); /* a refresh-shaped token needs the store */
    json_decref(j);
}

TEST(grant_jwks)
{
    int st;
    const char *hdr;
    REQUIRE(fixture() == 0);
    json_t *j = call(GRANT_JWKS, "", &st, &hdr);
    CHECK_EQ_INT(st, 200);
    CHECK(hdr && strstr(hdr, "max-age") != NULL);
    REQUIRE(j);
    json_t *k = json_array_get(json_object_get(j, "keys"), 0);
    CHECK_STR(json_string_value(json_object_get(k, "kid")), "test-1");
    CHECK(json_object_get(k, "d") == NULL); /* never the private part */
    json_decref(j);
}

TEST(grant_request_too_large)
{
    int st;
    REQUIRE(fixture() == 0);
    size_t n = fx.g.max_body + 10;
    char *big = malloc(n + 1);
    memset(big, ' ', n);
    big[0] = '{';
    big[n - 1] = '}';
    big[n] = '\0';
    json_t *j = call(GRANT_TOKEN, big, &st, NULL);
    CHECK_EQ_INT(st, 413);
    check_error(j, "invalid_request");
    json_decref(j);
    free(big);
}

/* Writes a new P-256 private key to path, after a "kid:" line when kid is not NULL. */
static int write_key(const char *path, const char *kid)
{
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    FILE *f = pk ? fopen(path, "w") : NULL;
    if (!f) {
        EVP_PKEY_free(pk);
        return -1;
    }
    if (kid) fprintf(f, "kid: %s\n", kid);
    PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    EVP_PKEY_free(pk);
    return 0;
}

static size_t jwks_count(signkeys *k, const char *want_first_kid)
{
    char *text = signkeys_jwks(k);
    json_t *doc = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    json_t *keys = json_object_get(doc, "keys");
    size_t n = json_array_size(keys);
    const char *kid = json_string_value(json_object_get(json_array_get(keys, 0), "kid"));
    if (want_first_kid && (!kid || strcmp(kid, want_first_kid) != 0)) n = 0;
    json_decref(doc);
    return n;
}

TEST(signkeys_change_in_place)
{
    char path[] = "/tmp/sc-signkeys-XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    close(fd);
    REQUIRE(write_key(path, NULL) == 0);
    signkeys *k = NULL;
    REQUIRE(signkeys_open(&k, path, "one") == 0);
    CHECK_EQ_INT(jwks_count(k, "one"), 1);
    CHECK_EQ_INT(signkeys_reload(k), 0); /* the same key: nothing changes */
    CHECK_STR(token_signer_kid(signkeys_current(k)), "one");
    REQUIRE(write_key(path, "one") == 0); /* a new key under the old kid: refused */
    CHECK_EQ_INT(signkeys_reload(k), -EINVAL);
    CHECK_STR(token_signer_kid(signkeys_current(k)), "one");
    REQUIRE(write_key(path, "two") == 0);
    CHECK_EQ_INT(signkeys_reload(k), 1);
    CHECK_STR(token_signer_kid(signkeys_current(k)), "two");
    CHECK_EQ_INT(jwks_count(k, "two"), 2); /* the new key, then the one before it */
    token_keyset *pub = signkeys_public(k);
    CHECK_EQ_INT(token_keyset_count(pub), 2);
    REQUIRE(write_key(path, NULL) == 0); /* no kid line: the thumbprint names it */
    CHECK_EQ_INT(signkeys_reload(k), 1);
    CHECK_EQ_INT(strlen(token_signer_kid(signkeys_current(k))), 43);
    CHECK_EQ_INT(jwks_count(k, NULL), 2);     /* "one" is gone: two keys at most */
    CHECK_EQ_INT(token_keyset_count(pub), 2); /* a reference taken earlier still holds */
    token_keyset_destroy(pub);
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    fputs("not a key\n", f);
    fclose(f);
    CHECK(signkeys_reload(k) < 0); /* a bad file: the key in use signs on */
    CHECK_EQ_INT(strlen(token_signer_kid(signkeys_current(k))), 43);
    CHECK(signkeys_public(NULL) == NULL);
    unlink(path);
    signkeys_close(k);
}

TEST(store_hex_and_random_hex)
{
    static const unsigned char in[] = {0x00, 0x0f, 0xa5, 0xff, 0x10};
    char out[2 * sizeof in + 1];
    memset(out, 'x', sizeof out);
    rtstore_hex(in, sizeof in, out);
    CHECK_STR(out, "000fa5ff10");
    rtstore_hex(in, 0, out);
    CHECK_STR(out, "");
    char a[33], b[33];
    CHECK_EQ_INT(rtstore_random_hex(a, 16), 0);
    CHECK_EQ_INT(rtstore_random_hex(b, 16), 0);
    CHECK_EQ_INT((int)strlen(a), 32);
    CHECK_EQ_INT((int)strspn(a, "0123456789abcdef"), 32);
    CHECK(strcmp(a, b) != 0);
    char big[200];
    CHECK_EQ_INT(rtstore_random_hex(big, 65), -1);
    /* the bytes come from a per-thread buffer refilled 512 at a time: across refills none
     * is handed out twice, and none is the wiped (zero) remainder of a used slice */
    static char many[48][129];
    for (int i = 0; i < 48; i++) {
        CHECK_EQ_INT(rtstore_random_hex(many[i], 64), 0);
        CHECK((int)strspn(many[i], "0") < 16);
        for (int j = 0; j < i; j++) CHECK(strcmp(many[i], many[j]) != 0);
    }
}

/* The CPU counters bench/authgoals.sh reads move with a password grant (their amounts are
 * timing: not checked). */
static int64_t counter(const char *name)
{
    size_t len = 0;
    char *text = metrics_render(&len), *p = text ? strstr(text, name) : NULL;
    int64_t v = -1;
    while (p && p > text && p[-1] != '\n') p = strstr(p + 1, name); /* the sample, not # HELP */
    if (p) v = strtoll(p + strlen(name), NULL, 10);
    free(text);
    return v;
}

TEST(grant_counts_signing_and_hash_cpu)
{
    int st;
    REQUIRE(fixture() == 0);
    int64_t s0 = counter("sc_auth_sign_cpu_nanoseconds_total ");
    int64_t h0 = counter("sc_auth_password_hash_cpu_nanoseconds_total ");
    REQUIRE(s0 >= 0 && h0 >= 0);
    json_t *j = call(GRANT_TOKEN,
                     "{\"grant_type\":\"password\",\"username\":\"alice\",\"password\":"
                     "\"wonderland\"}",
                     &st, NULL);
    CHECK_EQ_INT(st, 200);
    json_decref(j);
    CHECK(counter("sc_auth_sign_cpu_nanoseconds_total ") > s0);
    CHECK(counter("sc_auth_password_hash_cpu_nanoseconds_total ") > h0);
}

/* The hand-written answer is what jansson wrote before: same keys, order and escaping. */
static void answer_like_jansson(const char *tok, long ttl, const char *url, const char *rt,
                                const char *scope)
{
    json_t *o = json_pack("{s:s, s:s, s:I, s:s}", "access_token", tok, "token_type", "Bearer",
                          "expires_in", (json_int_t)ttl, "ws_url", url);
    REQUIRE(o);
    if (rt) json_object_set_new(o, "refresh_token", json_string(rt));
    if (scope && *scope) json_object_set_new(o, "scope", json_string(scope));
    char *want = json_dumps(o, JSON_COMPACT), *got = grant_answer_json(tok, ttl, url, rt, scope);
    REQUIRE(want && got);
    CHECK_STR(got, want);
    json_t *back = json_loads(got, JSON_REJECT_DUPLICATES, NULL);
    CHECK(back && json_equal(back, o));
    json_decref(back);
    free(want);
    free(got);
    json_decref(o);
}

TEST(grant_answer_json)
{
    answer_like_jansson("eyJh.eyJz.c2ln", 300, "ws://localhost:8090/ws", NULL, NULL);
    answer_like_jansson("a.b.c", 0, "wss://x/ws", "AbC-_0123456789abcdefghijklmnopqrstuvwxyzABCD",
                        "");
    answer_like_jansson("a.b.c", 86400, "wss://x/\"q\"\\", "rt", "sub:prices.* pub:chat.>");
    answer_like_jansson("a.b.c", -1, "ws://h/\x01\x1f\t\n", "rt", "caf\xc3\xa9 sub:a\"b");
    char all[130]; /* every ASCII byte, each escape kind at once (the size is exact) */
    for (int i = 1; i < 128; i++) all[i - 1] = (char)i;
    all[127] = '\0';
    answer_like_jansson(all, 1L << 40, all, all, all);
}

TEST_MAIN()
