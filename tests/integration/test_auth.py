"""auth over NATS: every grant, the RFC 6749 §5.2 error shapes, refresh rotation, reuse
detection (family revocation), RFC 7009 revocation and the auth.revoked events, JWKS,
metrics, Redis outages, start-up validation of the users file, and that no secret is
ever logged. Requests go straight to the auth.* subjects with tests/tools/busctl (the
gateway's HTTP mapping is tested with the gateway)."""
import base64
import hashlib
import json
import os
import subprocess
import threading
import time

import harness
import natspub

SERVICES = ("auth",)
# Failed-login throttling is off here (the timing test alone fails ten logins of alice);
# tests/integration/test_auth_throttle.py covers it.
ENV = {"auth": {"REFRESH_REUSE_WINDOW_S": "120", "AUTH_LOGIN_MAX_FAILURES": "0"}}

ALICE = {"grant_type": "password", "username": "alice", "password": "wonderland"}
BOB = {"grant_type": "password", "username": "bob", "password": "builder"}

_seen_tokens = []  # every refresh/access token handed out, to scan the logs for later


def req(st, subject, body, envelope=True, raw=None):
    """One request to auth; returns (status, parsed JSON body or None)."""
    if raw is not None:
        data = raw
    elif envelope:
        data = json.dumps({"method": "POST", "path": "/auth/token", "params": {}, "query": {},
                           "body": body})
    else:
        data = json.dumps(body)
    out = st.busctl("req", subject, data, 5000)
    assert out and out[0] == "status=ok", "no reply from %s: %r" % (subject, out)
    status = 200
    for line in out[1:-1]:
        if line.startswith("hdr Sidecast-Status: "):
            status = int(line.split(": ", 1)[1])
    try:
        doc = json.loads(out[-1])
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        for k in ("access_token", "refresh_token"):
            if k in doc:
                _seen_tokens.append(doc[k])
    return status, doc


def claims(jwt):
    payload = jwt.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    return json.loads(base64.urlsafe_b64decode(payload))


def header(jwt):
    h = jwt.split(".")[0]
    h += "=" * (-len(h) % 4)
    return json.loads(base64.urlsafe_b64decode(h))


def assert_error(status, doc, want_status, code):
    assert status == want_status, (status, doc)
    assert isinstance(doc, dict) and doc.get("error") == code, doc
    assert isinstance(doc.get("error_description"), str) and doc["error_description"], doc
    assert set(doc) == {"error", "error_description"}, doc


def login(st, who=ALICE):
    status, doc = req(st, "auth.token", who)
    assert status == 200, (status, doc)
    return doc


def redis_key(token):
    return "sc:rt:" + hashlib.sha256(token.encode()).hexdigest()


class Revoked:
    """Collects auth.revoked events in the background."""

    def __init__(self, st, seconds=8):
        self.p = st.busctl_bg("sub", "auth.revoked", seconds)
        self.lines = []
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.append(line.decode().strip())

    def events(self, n, timeout=5.0):
        harness.wait_for(lambda: len(self.lines) >= n, timeout=timeout, what="auth.revoked")
        return [json.loads(l.split(" ", 1)[1]) for l in self.lines]

    def close(self):
        self.p.kill()
        self.p.wait()


# ---- JWKS ----------------------------------------------------------------------------------

def test_jwks(st):
    status, doc = req(st, "auth.jwks", None, raw="")
    assert status == 200
    keys = doc["keys"]
    assert len(keys) == 1
    k = keys[0]
    assert k["kid"] == "dev-1" and k["alg"] == "ES256" and k["kty"] == "EC" and k["use"] == "sig"
    assert "d" not in k


# ---- password grant ------------------------------------------------------------------------

def test_password_grant(st):
    t0 = int(time.time())
    doc = login(st)
    t1 = time.time()
    assert set(doc) == {"access_token", "token_type", "expires_in", "refresh_token", "ws_url"}, doc
    assert doc["token_type"] == "Bearer"
    assert doc["expires_in"] == 300
    assert doc["ws_url"].startswith("ws://")
    assert len(doc["refresh_token"]) == 43
    h = header(doc["access_token"])
    assert h == {"alg": "ES256", "typ": "JWT", "kid": "dev-1"}, h
    c = claims(doc["access_token"])
    assert c["iss"] == "sidecast" and c["aud"] == "sidecast" and c["sub"] == "alice"
    assert c["exp"] - c["iat"] == 300 and c["nbf"] == c["iat"] and t0 <= c["iat"] <= t1
    assert len(c["jti"]) == 32
    assert c["sub_topics"] == ["prices.*", "chat.>"] and c["pub_topics"] == ["chat.>"]
    assert len(c["sid"]) == 32
    # Redis holds only the hash of the refresh token
    out = st.redis_cmd("HGETALL", redis_key(doc["refresh_token"]))
    assert "active" in out and "alice" in out and c["sid"] in out, out
    assert doc["refresh_token"] not in st.redis_cmd("KEYS", "*")
    ttl = int(st.redis_cmd("TTL", redis_key(doc["refresh_token"])).strip())
    # 7 days from the login, less no more than the time since (a lower bound on the TTL)
    assert 604800 - (time.time() - t0) - 1 <= ttl <= 604800, ttl
    # every login has its own jti and family
    c2 = claims(login(st)["access_token"])
    assert c2["jti"] != c["jti"] and c2["sid"] != c["sid"]


def test_bob_permissions_and_bare_body(st):
    status, doc = req(st, "auth.token", BOB, envelope=False)
    assert status == 200, doc
    c = claims(doc["access_token"])
    assert c["sub"] == "bob" and c["sub_topics"] == ["prices.*"] and c["pub_topics"] == []


def test_scope_narrowing(st):
    status, doc = req(st, "auth.token", dict(ALICE, scope="sub:prices.BTC pub:chat.room1"))
    assert status == 200, doc
    c = claims(doc["access_token"])
    assert c["sub_topics"] == ["prices.BTC"] and c["pub_topics"] == ["chat.room1"]
    # the family keeps the narrowed scope across refreshes
    status, doc2 = req(st, "auth.refresh", {"refresh_token": doc["refresh_token"]})
    assert status == 200, doc2
    c = claims(doc2["access_token"])
    assert c["sub_topics"] == ["prices.BTC"] and c["pub_topics"] == ["chat.room1"]
    status, doc3 = req(st, "auth.token", dict(BOB, scope="pub:chat.x"))
    assert_error(status, doc3, 400, "invalid_scope")
    # a malformed scope on a refresh is refused before the token is spent
    status, doc4 = req(st, "auth.refresh", {"refresh_token": doc2["refresh_token"],
                                            "scope": "write:everything"})
    assert_error(status, doc4, 400, "invalid_scope")
    status, doc4 = req(st, "auth.refresh", {"refresh_token": doc2["refresh_token"],
                                            "scope": "sub:prices.BTC"})
    assert status == 200, doc4
    assert claims(doc4["access_token"])["pub_topics"] == []


def test_password_errors(st):
    cases = [
        (dict(ALICE, password="nope"), 400, "invalid_grant"),
        (dict(ALICE, username="nobody"), 400, "invalid_grant"),
        (dict(ALICE, password=""), 400, "invalid_request"),
        ({"grant_type": "password", "username": "alice"}, 400, "invalid_request"),
        ({"grant_type": "password", "password": "x"}, 400, "invalid_request"),
        (dict(ALICE, username=["alice", "bob"]), 400, "invalid_request"),
        ({"username": "alice", "password": "wonderland"}, 400, "invalid_request"),
        ({"grant_type": "authorization_code", "code": "x"}, 400, "unsupported_grant_type"),
        ({"grant_type": "implicit"}, 400, "unsupported_grant_type"),
        # a user is not a client
        ({"grant_type": "client_credentials", "client_id": "alice",
          "client_secret": "wonderland"}, 401, "invalid_client"),
    ]
    for body, code, err in cases:
        status, doc = req(st, "auth.token", body)
        assert_error(status, doc, code, err)
    # malformed JSON and repeated parameters
    status, doc = req(st, "auth.token", None, raw="{not json")
    assert_error(status, doc, 400, "invalid_request")
    status, doc = req(st, "auth.token", None,
                      raw='{"body":{"grant_type":"password","grant_type":"password"}}')
    assert_error(status, doc, 400, "invalid_request")
    status, doc = req(st, "auth.token", None, raw='{"method":"POST","body":"grant_type=x"}')
    assert_error(status, doc, 400, "invalid_request")
    # unknown parameters are ignored
    status, doc = req(st, "auth.token", dict(ALICE, client_id="web", foo="bar"))
    assert status == 200, doc


def _auth_metric(st, series):
    body = harness.http("GET", "http://127.0.0.1:%d/metrics" % st.auth_admin_port).body.decode()
    for line in body.splitlines():
        if line.startswith(series + " "):
            return int(float(line.split()[-1]))
    return 0


def test_failed_login_hashes_unknown_names_too(st):
    """An unknown user costs what a known user with a wrong password costs: auth hashes the
    attempt against a dummy hash of the file's own scheme and cost, so the answer's timing
    does not tell which user names exist. Shown by auth's count of the hashes it ran, by
    what they ran against, not by timing the answers (a loaded machine makes medians lie):
    each attempt is exactly one hash, against the entry for alice and against the dummy
    for a name the file lacks. The medians are printed, for the record only."""
    import statistics
    entry, dummy = ('sc_auth_password_hashes_total{against="entry"}',
                    'sc_auth_password_hashes_total{against="dummy"}')
    nc = natspub.Nats(st.nats_url)

    def one(body):
        data = json.dumps({"method": "POST", "path": "/auth/token", "params": {}, "query": {},
                           "body": body})
        t0 = time.monotonic()
        nc.request("auth.token", data)
        return time.monotonic() - t0
    try:
        e0, d0 = _auth_metric(st, entry), _auth_metric(st, dummy)
        known, unknown = [], []
        for _ in range(5):
            known.append(one(dict(ALICE, password="nope")))
        assert (_auth_metric(st, entry), _auth_metric(st, dummy)) == (e0 + 5, d0)
        for _ in range(5):
            unknown.append(one(dict(ALICE, username="mallory")))
        assert (_auth_metric(st, entry), _auth_metric(st, dummy)) == (e0 + 5, d0 + 5)
    finally:
        nc.close()
    print("  median answer: known name %.2f ms, unknown name %.2f ms (not asserted)"
          % (statistics.median(known) * 1e3, statistics.median(unknown) * 1e3))


# ---- client credentials --------------------------------------------------------------------

def test_client_credentials(st):
    secret = st.read_secret("producer.secret")
    status, doc = req(st, "auth.token", {"grant_type": "client_credentials",
                                         "client_id": "producer", "client_secret": secret})
    assert status == 200, doc
    assert "refresh_token" not in doc  # RFC 6749 §4.4.3
    c = claims(doc["access_token"])
    assert c["sub"] == "producer" and "sid" not in c
    status, doc = req(st, "auth.token", {"grant_type": "client_credentials",
                                         "client_id": "producer", "client_secret": secret + "x"})
    assert_error(status, doc, 401, "invalid_client")
    status, doc = req(st, "auth.token", {"grant_type": "client_credentials",
                                         "client_id": "ghost", "client_secret": secret})
    assert_error(status, doc, 401, "invalid_client")
    status, doc = req(st, "auth.token", {"grant_type": "client_credentials",
                                         "client_id": "producer"})
    assert_error(status, doc, 400, "invalid_request")


# ---- refresh -------------------------------------------------------------------------------

def test_refresh_rotation(st):
    d1 = login(st)
    r1 = d1["refresh_token"]
    sid = claims(d1["access_token"])["sid"]
    status, d2 = req(st, "auth.refresh", {"refresh_token": r1})  # the refresh subject
    assert status == 200, d2
    r2 = d2["refresh_token"]
    assert r2 != r1 and len(r2) == 43
    c = claims(d2["access_token"])
    assert c["sub"] == "alice" and c["sid"] == sid
    assert "rotated" in st.redis_cmd("HGET", redis_key(r1), "state")
    assert "active" in st.redis_cmd("HGET", redis_key(r2), "state")
    # the used token shrinks to what reuse detection needs and lives for the reuse window
    # only (REFRESH_REUSE_WINDOW_S=120 here), not for the refresh-token lifetime
    assert st.redis_cmd("HGET", redis_key(r1), "scope").strip() == ""
    assert 0 < int(st.redis_cmd("TTL", redis_key(r1))) <= 120
    assert int(st.redis_cmd("TTL", redis_key(r2))) > 120
    status, d3 = req(st, "auth.token", {"grant_type": "refresh_token", "refresh_token": r2})
    assert status == 200, d3
    assert claims(d3["access_token"])["sid"] == sid
    # auth.refresh takes only refresh grants
    status, doc = req(st, "auth.refresh", dict(ALICE))
    assert_error(status, doc, 400, "unsupported_grant_type")


def test_refresh_errors(st):
    for tok in ("x" * 43, "short", "not/base64url+chars-------------------------"):
        status, doc = req(st, "auth.token", {"grant_type": "refresh_token", "refresh_token": tok})
        assert_error(status, doc, 400, "invalid_grant")
    status, doc = req(st, "auth.token", {"grant_type": "refresh_token"})
    assert_error(status, doc, 400, "invalid_request")


def test_reuse_revokes_family(st):
    sub = Revoked(st)
    try:
        d1 = login(st)
        sid = claims(d1["access_token"])["sid"]
        other = login(st)  # another session of alice: must survive
        status, d2 = req(st, "auth.refresh", {"refresh_token": d1["refresh_token"]})
        assert status == 200
        status, doc = req(st, "auth.refresh", {"refresh_token": d1["refresh_token"]})  # reuse
        assert_error(status, doc, 400, "invalid_grant")
        status, doc = req(st, "auth.refresh", {"refresh_token": d2["refresh_token"]})
        assert_error(status, doc, 400, "invalid_grant")
        assert "revoked" in st.redis_cmd("HGET", "sc:rtfam:" + sid, "state")
        ev = sub.events(1)
        assert {"sub": "alice", "family": sid, "reason": "reuse"} in ev, ev
        status, doc = req(st, "auth.refresh", {"refresh_token": other["refresh_token"]})
        assert status == 200, doc
    finally:
        sub.close()


def test_concurrent_refresh_only_one_wins(st):
    for _ in range(3):
        r = login(st)["refresh_token"]
        results = [None, None]

        def go(i):
            results[i] = req(st, "auth.refresh", {"refresh_token": r})
        ts = [threading.Thread(target=go, args=(i,)) for i in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        statuses = sorted(s for s, _ in results)
        assert statuses == [200, 400], results


# ---- revocation ----------------------------------------------------------------------------

def test_revoke_family(st):
    sub = Revoked(st)
    try:
        d = login(st)
        keep = login(st)
        sid = claims(d["access_token"])["sid"]
        status, doc = req(st, "auth.revoke", {"token": d["refresh_token"],
                                              "token_type_hint": "refresh_token"})
        assert status == 200 and doc == {}, doc
        status, doc = req(st, "auth.refresh", {"refresh_token": d["refresh_token"]})
        assert_error(status, doc, 400, "invalid_grant")
        ev = sub.events(1)
        assert {"sub": "alice", "family": sid, "reason": "revoked"} in ev, ev
        status, doc = req(st, "auth.refresh", {"refresh_token": keep["refresh_token"]})
        assert status == 200, doc
    finally:
        sub.close()


def test_revoke_with_access_token(st):
    d = login(st)
    status, doc = req(st, "auth.revoke", {"token": d["access_token"],
                                          "token_type_hint": "access_token"})
    assert status == 200 and doc == {}
    status, doc = req(st, "auth.refresh", {"refresh_token": d["refresh_token"]})
    assert_error(status, doc, 400, "invalid_grant")


def test_revoke_everywhere(st):
    sub = Revoked(st)
    try:
        a = login(st)
        b = login(st)
        bob = login(st, BOB)
        status, doc = req(st, "auth.revoke", {"token": a["refresh_token"], "everywhere": True})
        assert status == 200 and doc == {}
        for d in (a, b):
            status, doc = req(st, "auth.refresh", {"refresh_token": d["refresh_token"]})
            assert_error(status, doc, 400, "invalid_grant")
        ev = sub.events(1)
        assert {"sub": "alice", "reason": "logout_all"} in ev, ev
        # form bodies carry strings: "true" works as well; other users are untouched
        status, doc = req(st, "auth.refresh", {"refresh_token": bob["refresh_token"]})
        assert status == 200
        status, doc = req(st, "auth.revoke", {"token": doc["refresh_token"],
                                              "logout_all": "true"})
        assert status == 200
        ev = sub.events(2)
        assert {"sub": "bob", "reason": "logout_all"} in ev, ev
        assert "0" == st.redis_cmd("EXISTS", "sc:rtuser:alice").strip()
    finally:
        sub.close()


def test_stale_refresh_token_revokes_nothing(st):
    """A refresh token that is no longer active (rotated, or of a revoked family) is an invalid
    token to auth.revoke: 200 and nothing changes, with or without `everywhere` (RFC 7009
    2.2). It used to log its user out of every device: anyone who saw a rotated token could
    end every session of the user, again after each new login."""
    sub = Revoked(st)
    try:
        dev1 = login(st)
        dev2 = login(st)
        status, dev1b = req(st, "auth.refresh", {"refresh_token": dev1["refresh_token"]})
        assert status == 200, dev1b
        gone = login(st)
        status, doc = req(st, "auth.revoke", {"token": gone["refresh_token"]})
        assert status == 200 and doc == {}
        ev = sub.events(1)
        assert ev == [{"sub": "alice", "family": claims(gone["access_token"])["sid"],
                       "reason": "revoked"}], ev
        # the rotated token, and the token of a revoked family, each with everywhere
        for stale in (dev1["refresh_token"], gone["refresh_token"]):
            status, doc = req(st, "auth.revoke", {"token": stale, "everywhere": True})
            assert status == 200 and doc == {}, doc
        # both devices still refresh; dev1's family was not revoked either
        for d in (dev2, dev1b):
            status, doc = req(st, "auth.refresh", {"refresh_token": d["refresh_token"]})
            assert status == 200, doc
        assert "active" in st.redis_cmd("HGET", "sc:rtfam:" + claims(dev1["access_token"])["sid"],
                                        "state")
        # no event either: the next one on the subject is bob's own revocation
        bob = login(st, BOB)
        status, doc = req(st, "auth.revoke", {"token": bob["refresh_token"]})
        assert status == 200
        ev = sub.events(2)
        assert len(ev) == 2 and ev[1]["sub"] == "bob", ev
    finally:
        sub.close()


def test_revoke_unknown_and_errors(st):
    for tok in ("garbage", "y" * 43, "a.b.c"):
        status, doc = req(st, "auth.revoke", {"token": tok})
        assert status == 200 and doc == {}, (tok, status, doc)
    status, doc = req(st, "auth.revoke", {"token_type_hint": "refresh_token"})
    assert_error(status, doc, 400, "invalid_request")


# ---- operations ----------------------------------------------------------------------------

def test_user_set_is_pruned_of_ended_families(st):
    """sc:rtuser:<sub> (the families "log out everywhere" revokes) loses its ended families
    once a login takes it past 64 members, and never an active one. (It is pruned when a
    login brings it to 65, 129, ... members: pruning on every login past 64 walked the whole
    set each time, which a name with many live sessions paid on every login.)"""
    key = "sc:rtuser:bob"
    st.redis_cmd("DEL", key)  # bob's earlier families: not counted here
    docs = [login(st, BOB) for _ in range(64)]
    assert st.redis_cmd("SCARD", key).strip() == "64"
    for d in docs[:10]:
        status, doc = req(st, "auth.revoke", {"token": d["refresh_token"]})
        assert status == 200 and doc == {}, doc
    assert st.redis_cmd("SCARD", key).strip() == "64"  # revoked, still members
    last = login(st, BOB)  # the 65th member: the ten ended families go
    members = set(st.redis_cmd("SMEMBERS", key).split())
    live = {claims(d["access_token"])["sid"] for d in docs[10:] + [last]}
    ended = {claims(d["access_token"])["sid"] for d in docs[:10]}
    assert members == live, (len(members), len(live), len(members & ended))
    # an active family from before the pruning still refreshes, and logout_all still ends all
    status, doc = req(st, "auth.refresh", {"refresh_token": docs[10]["refresh_token"]})
    assert status == 200, doc
    status, doc = req(st, "auth.revoke", {"token": doc["refresh_token"], "everywhere": True})
    assert status == 200
    for d in (docs[11], last):
        status, doc = req(st, "auth.refresh", {"refresh_token": d["refresh_token"]})
        assert_error(status, doc, 400, "invalid_grant")


def test_admin_endpoints(st):
    base = "http://127.0.0.1:%d" % st.auth_admin_port
    assert harness.http("GET", base + "/healthz").status == 200
    r = harness.http("GET", base + "/readyz")
    assert r.status == 200 and b"redis=up" in r.body, r
    m = harness.http("GET", base + "/metrics").body.decode()
    for needle in ('sc_auth_tokens_issued_total{grant="password"}',
                   'sc_auth_tokens_issued_total{grant="refresh_token"}',
                   'sc_auth_tokens_issued_total{grant="client_credentials"}',
                   'sc_auth_failures_total{error="invalid_grant"}',
                   "sc_redis_up 1"):
        assert needle in m, needle
    reuse = [l for l in m.splitlines() if l.startswith("sc_auth_refresh_reuse_total ")]
    assert reuse and int(reuse[0].split()[1]) >= 1, reuse


def test_redis_outage(st):
    d = login(st)
    st.procs["redis"].stop()
    try:
        status, doc = req(st, "auth.refresh", {"refresh_token": d["refresh_token"]})
        assert_error(status, doc, 503, "temporarily_unavailable")
        # access tokens need no Redis: the password grant degrades to no refresh token
        status, doc = req(st, "auth.token", ALICE)
        assert status == 200 and "refresh_token" not in doc and "sid" not in claims(
            doc["access_token"]), doc
        status, doc = req(st, "auth.token", {"grant_type": "client_credentials",
                                             "client_id": "producer",
                                             "client_secret": st.read_secret("producer.secret")})
        assert status == 200, doc
        status, doc = req(st, "auth.revoke", {"token": d["refresh_token"]})
        assert_error(status, doc, 503, "temporarily_unavailable")
        base = "http://127.0.0.1:%d" % st.auth_admin_port
        harness.wait_for(lambda: b"redis=down" in harness.http("GET", base + "/readyz").body,
                         what="readyz redis=down")
        assert harness.http("GET", base + "/readyz").status == 200  # degraded, still ready
        harness.wait_for(lambda: "sc_redis_up 0" in harness.http(
            "GET", base + "/metrics").body.decode(), what="sc_redis_up 0")
    finally:
        st.start_redis()
    # reconnects by itself (Redis restarted empty: old tokens are gone)
    harness.wait_for(lambda: "refresh_token" in req(st, "auth.token", ALICE)[1], timeout=15,
                     what="refresh tokens after Redis restart")
    d = login(st)
    status, doc = req(st, "auth.refresh", {"refresh_token": d["refresh_token"]})
    assert status == 200, doc


def test_no_secrets_in_log(st):
    log = open(st.procs["auth"].log_path, encoding="utf-8", errors="replace").read()
    assert "msg=\"token issued\"" in log
    for secret in ["wonderland", "builder", st.read_secret("producer.secret"), "$6$"]:
        assert secret not in log, secret
    for tok in _seen_tokens:
        assert tok not in log, "a token is in the log"
    for line in log.splitlines():
        assert "eyJ" not in line, line


def test_redis_password_with_a_slash_connects_and_stays_out_of_the_log(st):
    """A Redis password holding '/', '?' and '#' (generated base64 secrets hold '/') works in
    REDIS_URL unescaped and shows up in no log line; it used to be logged in clear by the
    config line (the mask stopped at the first '/') and then refused as a bad host."""
    secret = "pa/ss?w#" + os.urandom(4).hex()
    port = harness.free_port()
    st.procs["redis-pw"] = harness.Proc("redis-pw", [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--requirepass", secret], {}, st.dir)
    harness.wait_for(lambda: "PONG" in subprocess.run(
        ["redis-cli", "-p", str(port), "-a", secret, "--no-auth-warning", "ping"],
        capture_output=True, text=True).stdout, what="redis with a password")
    procs = []
    for name, pw in (("auth-redispw", secret), ("auth-redisbad", "wrong/" + secret)):
        e = st.service_env("auth")
        e.update({"ADMIN_LISTEN": "127.0.0.1:%d" % harness.free_port(),
                  "REDIS_URL": "redis://:%s@127.0.0.1:%d/0" % (pw, port)})
        p = harness.Proc(name, [os.path.join(harness.BUILD, "auth")], e, st.dir)
        st.procs[name] = p
        procs.append(p)

    def log_of(p):
        with open(p.log_path, "rb") as f:
            return f.read().decode(errors="replace")
    harness.wait_for(lambda: 'msg="redis connected"' in log_of(procs[0]), timeout=15,
                     what="auth connected to Redis with the password")
    harness.wait_for(lambda: 'msg="redis connect failed"' in log_of(procs[1]), timeout=15,
                     what="auth refused by Redis with a wrong password")
    for p in procs:
        log = log_of(p)
        assert ":****@127.0.0.1:%d/0" % port in log, log[-1500:]  # the config line, masked
        assert "pa/ss" not in log, "a Redis password is in %s's log" % p.name
    for n in ("auth-redispw", "auth-redisbad", "redis-pw"):
        st.procs.pop(n).stop()


# ---- start-up ------------------------------------------------------------------------------

def _run_auth(st, **env):
    e = dict(os.environ)
    e.update(st.service_env("auth"))
    e["ADMIN_LISTEN"] = "127.0.0.1:0"
    e.update(env)
    return subprocess.run([os.path.join(harness.BUILD, "auth")], env=e, capture_output=True,
                          timeout=20, stdin=subprocess.DEVNULL)


def test_locked_user_cannot_refresh(st):
    """A user locked in the users file ("!" for the hash) since the session began: the
    password grant is refused, and so is every refresh of the old session (its family is
    dropped), not only new logins."""
    d = login(st)
    path = os.path.join(st.keys, "users.conf")
    original = open(path).read()
    lines = [l.split() for l in original.splitlines()]
    locked = "\n".join(" ".join(p[:2] + ["!"] + p[3:]) if len(p) > 2 and p[:2] == ["user", "alice"]
                       else " ".join(p) for p in lines) + "\n"
    assert locked != original
    try:
        with open(path, "w") as f:
            f.write(locked)
        st.stop_service("auth")
        st.start_service("auth")
        status, doc = req(st, "auth.token", ALICE)
        assert_error(status, doc, 400, "invalid_grant")
        status, doc = req(st, "auth.refresh", {"refresh_token": d["refresh_token"]})
        assert_error(status, doc, 400, "invalid_grant")
    finally:
        with open(path, "w") as f:
            f.write(original)
        st.stop_service("auth")
        st.start_service("auth")
    status, doc = req(st, "auth.refresh", {"refresh_token": d["refresh_token"]})
    assert_error(status, doc, 400, "invalid_grant")  # the family stays dropped


def test_help(st):
    r = subprocess.run([os.path.join(harness.BUILD, "auth"), "--help"], capture_output=True,
                       timeout=10)
    assert r.returncode == 0
    out = r.stdout.decode()
    for name in ("AUTH_USERS", "JWT_PRIVATE_KEY", "ACCESS_TOKEN_TTL", "REFRESH_TOKEN_TTL",
                 "REDIS_URL", "ADMIN_LISTEN"):
        assert name in out, name


def test_bad_users_file_exits(st):
    bad = os.path.join(st.dir, "bad-users.conf")
    with open(bad, "w") as f:
        f.write("# ok\nuser alice ! sub=prices.*\nuser bob ! sub=a..b\n")
    r = _run_auth(st, AUTH_USERS=bad)
    err = r.stderr.decode()
    assert r.returncode == 2, (r.returncode, err)
    assert "AUTH_USERS" in err and bad + ":3:" in err, err
    # a bad value of a numeric setting names the variable
    r = _run_auth(st, ACCESS_TOKEN_TTL="5")
    assert r.returncode == 2 and "ACCESS_TOKEN_TTL" in r.stderr.decode()
    r = _run_auth(st, REDIS_URL="http://x")
    assert r.returncode == 2 and "REDIS_URL" in r.stderr.decode()
