"""Tokens of a real OpenID provider, accepted at the gateway and the edge (issue 18, item 6).

The provider is panva's oidc-provider (npm; tests/oidc/idp.mjs configures it, `npm ci`
installs it on first use from tests/oidc/package-lock.json), on loopback with TLS under a
CA made here. It issues RFC 9068 access tokens (typ at+jwt, ES256, audience "sidecast",
the granted scope as a space-separated "scope" claim) by the client credentials grant.
Nothing here mints a token: each one comes from the provider's token endpoint. The
gateway and the edge know only JWT_JWKS_URL (the provider's jwks_uri), its CA, its issuer,
the audience, and that the topic patterns are in "scope"."""
import atexit
import base64
import json
import os
import select
import ssl
import subprocess
import tempfile
import urllib.parse
import urllib.request

import harness
import pki
from wsclient import WS

ROOT = harness.ROOT
IDP_DIR = os.path.join(ROOT, "tests", "oidc")
DIR = tempfile.mkdtemp(prefix="sidecast-oidc-")
PORT = harness.free_port()
ISSUER = "https://127.0.0.1:%d" % PORT
SECRET = base64.urlsafe_b64encode(os.urandom(18)).decode()


def _npm_ci():
    """node_modules as the lock pins it: installed once, again when the pin changed."""
    with open(os.path.join(IDP_DIR, "package.json")) as f:
        want = json.load(f)["dependencies"]["oidc-provider"]
    have = os.path.join(IDP_DIR, "node_modules", "oidc-provider", "package.json")
    if os.path.exists(have):
        with open(have) as f:
            if json.load(f).get("version") == want:
                return
    r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=IDP_DIR,
                       capture_output=True, timeout=300)
    assert r.returncode == 0, "npm ci in tests/oidc failed:\n%s" % r.stdout[-2000:]


def _start_idp():
    pki.CA(DIR).issue("server", san="IP:127.0.0.1")
    _npm_ci()
    env = dict(os.environ, IDP_PORT=str(PORT), IDP_CERT=os.path.join(DIR, "server.pem"),
               IDP_KEY=os.path.join(DIR, "server.key"), IDP_CLIENT_SECRET=SECRET)
    log = open(os.path.join(DIR, "idp.log"), "wb")
    p = subprocess.Popen(["node", os.path.join(IDP_DIR, "idp.mjs")], env=env,
                         stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
    atexit.register(lambda: (p.terminate(), p.wait(10)))
    ready, _, _ = select.select([p.stdout], [], [], 60)  # bounded: node may hang
    line = p.stdout.readline().decode().strip() if ready else "(nothing within 60 s)"
    assert line == "ready", "the OpenID provider did not start (%r); see %s" % (line, DIR)
    return p


IDP = _start_idp()
CTX = ssl.create_default_context(cafile=os.path.join(DIR, "ca.pem"))

SERVICES = ("gateway", "edge")
_VERIFIER = {"JWT_JWKS_URL": ISSUER + "/jwks", "JWT_JWKS_CA": os.path.join(DIR, "ca.pem"),
             "JWT_ISSUER": ISSUER, "JWT_AUDIENCE": "sidecast"}
ENV = {"gateway": dict(_VERIFIER, JWT_SUB_TOPICS_CLAIM="scope",
                      JWT_DEFAULT_SUB_TOPICS="public.*"),
       "edge": dict(_VERIFIER, JWT_SUB_TOPICS_CLAIM="scope")}
ECHO_SUBJECTS = ("echo.me",)
ROUTES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gateway_routes.json")


def _https(path, data=None, auth=None):
    req = urllib.request.Request(ISSUER + path, data=data)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, context=CTX, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _provider_token(scope, resource="urn:sidecast"):
    form = {"grant_type": "client_credentials", "resource": resource}
    if scope is not None:
        form["scope"] = scope
    status, doc = _https("/token", urllib.parse.urlencode(form).encode(),
        auth="sidecast-svc:" + SECRET)
    assert status == 200, (status, doc)
    return doc["access_token"]


def _part(tok, i):
    return json.loads(base64.urlsafe_b64decode(tok.split(".")[i] + "=="))


def _edge_session(st, token):
    ws = WS.connect(st.edge_url, token=token)
    welcome = ws.recv_json(10)
    return ws, welcome


def _subscribe(ws, topic):
    ws.send_json({"type": "subscribe", "topic": topic, "id": topic})
    m = ws.recv_json(10)
    return m["type"] if m["type"] != "error" else m.get("code")


def test_the_provider_is_an_openid_provider(st):
    status, conf = _https("/.well-known/openid-configuration")
    assert status == 200 and conf["issuer"] == ISSUER and conf["jwks_uri"] == ISSUER + "/jwks"
    tok = _provider_token("prices.* chat.>")
    head, claims = _part(tok, 0), _part(tok, 1)
    assert head["typ"] == "at+jwt" and head["alg"] == "ES256", head
    assert claims["iss"] == ISSUER and claims["aud"] == "sidecast", claims
    assert claims["scope"] == "prices.* chat.>" and "sub_topics" not in claims, claims


def test_its_tokens_pass_at_the_edge_with_the_scope_as_topics(st):
    ws, welcome = _edge_session(st, _provider_token("prices.* chat.>"))
    try:
        assert welcome["type"] == "welcome" and welcome["user"] == "sidecast-svc", welcome
        assert _subscribe(ws, "prices.BTC") == "subscribed"
        assert _subscribe(ws, "chat.room.1") == "subscribed"
        assert _subscribe(ws, "news.today") == "forbidden"  # not in the granted scope
    finally:
        ws.close()
    ws, welcome = _edge_session(st, _provider_token("news.*"))
    try:
        assert _subscribe(ws, "news.today") == "subscribed"
        assert _subscribe(ws, "prices.BTC") == "forbidden"
    finally:
        ws.close()


def test_its_tokens_pass_at_the_gateway(st):
    tok = _provider_token("prices.*")
    r = st.gw("GET", "/api/me", headers={"Authorization": "Bearer " + tok})
    assert r.status == 200, r  # past the check, answered by echosvc
    r = st.gw("GET", "/api/me", headers={"Authorization": "Bearer " + tok[:-6] + "AAAAAA"})
    assert r.status == 401, r


def test_the_gateway_passes_the_scope_on_as_the_topics(st):
    """JWT_SUB_TOPICS_CLAIM=scope: services see the scope's patterns in Sidecast-Sub-Topics
    (what presence.get checks); a token without the claim gets JWT_DEFAULT_SUB_TOPICS."""
    tok = _provider_token("prices.* chat.>")
    r = st.gw("GET", "/api/me", headers={"Authorization": "Bearer " + tok})
    assert r.status == 200, r
    doc = r.json()
    assert doc["user"] == "sidecast-svc", doc
    assert json.loads(doc["sub_topics"]) == ["prices.*", "chat.>"], doc
    tok = _provider_token(None)  # no scope asked: the token carries none
    assert "scope" not in _part(tok, 1) or not _part(tok, 1)["scope"], _part(tok, 1)
    r = st.gw("GET", "/api/me", headers={"Authorization": "Bearer " + tok})
    assert r.status == 200, r
    got = r.json()["sub_topics"]
    want = ["public.*"] if "scope" not in _part(tok, 1) else []
    assert json.loads(got) == want, (got, _part(tok, 1))


def _edge_accepts(st, token):
    try:
        ws, welcome = _edge_session(st, token)
    except Exception:  # noqa: BLE001 - closed 4001: refused
        return False
    ws.close()
    return welcome.get("type") == "welcome"


def test_a_token_for_another_api_or_tampered_is_refused(st):
    """The provider's own signature is not enough: a token it issued for another API
    (audience "another-api") is refused at the edge and the gateway, and so is one of ours
    with its claims changed."""
    other = _provider_token("prices.*", resource="urn:another-api")
    assert _part(other, 1)["aud"] == "another-api"
    assert not _edge_accepts(st, other)
    r = st.gw("GET", "/api/me", headers={"Authorization": "Bearer " + other})
    assert r.status == 401, r
    tok = _provider_token("prices.*")
    head, body, sig = tok.split(".")
    claims = _part(tok, 1)
    claims["scope"] = "prices.* news.*"  # a wider grant, under the provider's signature
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert not _edge_accepts(st, ".".join((head, body, sig)))
    assert _edge_accepts(st, tok)
