/* fuzz_grants.c - libFuzzer target for the token endpoint's request handling
 * (services/auth/grants.c): the request bytes as auth gets them from the gateway (the
 * envelope with a form-decoded or JSON body, or a bare JSON object), parameter extraction,
 * scope narrowing, the three grants, revocation and JWKS.
 *
 * The first input byte picks what the rest feeds:
 *   0 (and anything not below)  request bytes -> grant_handle(GRANT_TOKEN)
 *   1                           request bytes -> grant_handle(GRANT_REFRESH)
 *   2                           request bytes -> grant_handle(GRANT_REVOKE)
 *   3                           claims JSON, signed for real as an access token, revoked
 *                               through grant_handle(GRANT_REVOKE) (the verify path)
 *   4                           request bytes -> grant_parse_params, grant_param and
 *                               grant_flag on every parameter name, and the "scope"
 *                               parameter narrowed against a user's permissions
 * No Redis: refresh tokens are disabled (store NULL), which is one of grants.c's real
 * configurations. The users' hashes are sha512crypt with 1000 rounds so that a password
 * check costs ~0.3 ms, not the production hash's tens of ms.
 * Oracles: every answer has a status in 200..599 and a body that is a JSON object; a 200
 * from the token endpoint carries an access token that verifies with the signer's key. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "../../services/auth/grants.h"
#include "../../services/auth/users.h"
#include "log.h"
#include "token.h"

#include <crypt.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOW 1800000000L
#define ISS "https://auth.sidecast.test"
#define AUD "sidecast"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static grant_cfg fz;
static users *fz_users;
static signkeys *fz_sk;
static const token_signer *fz_signer;
static token_keyset *fz_keys;
static const token_policy fz_pol = {ISS, AUD, 30, 0};

static void fz_init(void)
{
    char path[] = "/tmp/fuzz_grants.XXXXXX", users_text[1024], err[256];
    struct crypt_data cd;
    EVP_PKEY *pk;
    const char *h;
    FILE *f;
    int fd;

    log_init("fuzz_grants", LOG_ERROR);
    memset(&cd, 0, sizeof cd);
    h = crypt_r("wonderland", "$6$rounds=1000$fuzzsaltfuzzsalt$", &cd);
    if (h == NULL || h[0] != '$') abort();
    snprintf(users_text, sizeof users_text,
             "user alice %s sub=prices.*,users.alice,chat.> pub=chat.>\n"
             "user locked !\n"
             "client svc %s sub=> pub=orders.*\n",
             h, h);
    if (users_parse(&fz_users, users_text, strlen(users_text), "fuzz", err, sizeof err) != 0)
        abort();
    pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (pk == NULL || (fd = mkstemp(path)) < 0 || (f = fdopen(fd, "w")) == NULL) abort();
    PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    if (signkeys_open(&fz_sk, path, "k1") != 0) abort();
    unlink(path);
    EVP_PKEY_free(pk);
    fz_signer = signkeys_current(fz_sk);
    if ((fz_keys = signkeys_public(fz_sk)) == NULL) abort();
    fz.users = fz_users;
    fz.keys = fz_sk;
    fz.store = NULL;
    fz.issuer = ISS;
    fz.audience = AUD;
    fz.ws_url = "ws://127.0.0.1:8090/ws";
    fz.access_ttl = 300;
    fz.max_body = 16384;
}

static void fz_check(enum grant_op op, const char *req, size_t len)
{
    grant_reply out;
    json_t *body;

    grant_handle(&fz, op, req, len, NOW, "fuzz", &out);
    if (out.status < 200 || out.status > 599) abort();
    if (out.body != NULL) {
        if ((body = json_loads(out.body, 0, NULL)) == NULL || !json_is_object(body)) abort();
        if (op == GRANT_TOKEN && out.status == 200) {
            const char *tok = json_string_value(json_object_get(body, "access_token"));
            token_claims cl;
            if (tok == NULL || token_verify(fz_keys, &fz_pol, tok, NOW, &cl) != 0) abort();
            token_claims_clear(&cl);
        }
        json_decref(body);
    }
    grant_reply_clear(&out);
}

static void fz_params(const char *req, size_t len)
{
    static const char *names[] = {"grant_type",      "username",      "password", "client_id",
                                  "client_secret",   "refresh_token", "scope",    "token",
                                  "token_type_hint", "everywhere"};
    char err[160], nerr[256];
    json_t *params;
    const char *v;
    const users_entry *e = users_find(fz_users, USERS_USER, "alice");
    users_perms narrowed;

    if (grant_parse_params(req, len, 16384, &params, err, sizeof err) != 0) return;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        grant_param(params, names[i], &v);
        grant_flag(params, names[i]);
    }
    if (e != NULL && grant_param(params, "scope", &v) == GRANT_PARAM_OK) {
        memset(&narrowed, 0, sizeof narrowed);
        if (users_perms_narrow(&e->perms, v, &narrowed, nerr, sizeof nerr) == 0)
            users_perms_clear(&narrowed);
    }
    json_decref(params);
}

static void fz_revoke_signed(const char *claims, size_t len)
{
    json_t *c = json_loadb(claims, len, 0, NULL), *req;
    char *tok = NULL, *text;

    if (json_is_object(c) && token_sign(fz_signer, c, &tok) == 0) {
        req = json_pack("{s:s,s:{s:s}}", "method", "POST", "body", "token", tok);
        text = json_dumps(req, JSON_COMPACT);
        if (text != NULL) fz_check(GRANT_REVOKE, text, strlen(text));
        free(text);
        json_decref(req);
        free(tok);
    }
    json_decref(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    const char *req = (const char *)data + 1;

    if (!ready) {
        fz_init();
        ready = 1;
    }
    if (size < 1) return 0;
    switch (data[0]) {
    case 1: fz_check(GRANT_REFRESH, req, size - 1); break;
    case 2: fz_check(GRANT_REVOKE, req, size - 1); break;
    case 3: fz_revoke_signed(req, size - 1); break;
    case 4: fz_params(req, size - 1); break;
    default: fz_check(GRANT_TOKEN, req, size - 1); break;
    }
    return 0;
}
