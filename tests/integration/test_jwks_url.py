"""JWT_JWKS_URL (common/keys.c): the gateway and the edge fetch the keys of an identity
provider's JWKS endpoint over https (libcurl), at start, again when its Cache-Control
max-age runs out, and when a token names a kid they do not know; a bad answer keeps the
keys they had; an http:// URL is refused at start.

The endpoint here is a small https server in this module (its own CA, a certificate for
127.0.0.1, Cache-Control as the test sets it), serving keys the test makes, so that each
rule can be checked on its own. Tokens issued by a real OpenID provider are the next
step (issue 18, item 6)."""
import base64
import http.server
import json
import os
import ssl
import subprocess
import tempfile
import threading

import harness
from harness import mint, wait_for
from wsclient import WS

DIR = tempfile.mkdtemp(prefix="sidecast-jwks-")
PORT = harness.free_port()
URL = "https://127.0.0.1:%d/jwks" % PORT


def _openssl(*args):
    subprocess.run(["openssl"] + list(args), cwd=DIR, check=True, capture_output=True,
                   timeout=60)


def _b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _ec_key(name):
    """A P-256 key pair: (private key path, its public JWK with kid name)."""
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", name + ".pem")
    der = subprocess.run(["openssl", "pkey", "-in", os.path.join(DIR, name + ".pem"), "-pubout",
                          "-outform", "DER"], check=True, capture_output=True).stdout
    point = der[-65:]  # SubjectPublicKeyInfo ends with the uncompressed point 04 || X || Y
    assert point[0] == 4
    return (os.path.join(DIR, name + ".pem"),
            {"kty": "EC", "crv": "P-256", "x": _b64(point[1:33]), "y": _b64(point[33:]),
             "kid": name, "use": "sig", "alg": "ES256"})


class Provider:
    """What the endpoint serves: a JWKS (or a status and body) with a Cache-Control."""
    status = 200
    body = b"{}"
    cache = "max-age=300"
    hits = 0
    lock = threading.Lock()

    @classmethod
    def serve(cls, jwks=None, status=200, body=None, cache="max-age=300"):
        with cls.lock:
            cls.status = status
            cls.body = body if body is not None else json.dumps(jwks).encode()
            cls.cache = cache


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        with Provider.lock:
            Provider.hits += 1
            status, body, cache = Provider.status, Provider.body, Provider.cache
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", cache)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _start_provider():
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=sidecast-jwks-ca")
    with open(os.path.join(DIR, "san.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
             "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.cnf")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(DIR, "server.pem"), os.path.join(DIR, "server.key"))
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()


KEY1, JWK1 = _ec_key("idp-1")
KEY2, JWK2 = _ec_key("idp-2")
Provider.serve({"keys": [JWK1]})
_start_provider()

SERVICES = ("gateway", "edge")
_VERIFIER = {"JWT_JWKS_URL": URL, "JWT_JWKS_CA": os.path.join(DIR, "ca.pem"),
             "JWT_KEYS_REFRESH_MIN_S": "1"}
ENV = {"gateway": dict(_VERIFIER),
       "edge": dict(_VERIFIER, JWT_SUB_TOPICS_CLAIM="topics",
                    JWT_DEFAULT_SUB_TOPICS="prices.*,status")}
URL_LOADED = 'sc_token_keys_loaded_total{source="url"}'


def _metric(url, series):
    for line in harness.http("GET", url + "/metrics").body.decode().splitlines():
        if line.startswith(series + " "):
            return int(float(line.split()[-1]))
    return 0


def _both(st, series):
    return (_metric(st.gateway_url, series),
            _metric("http://127.0.0.1:%d" % st.edge_port, series))


def _edge_accepts(st, token):
    ws = WS.connect(st.edge_url, token=token)
    try:
        return ws.recv_json(10).get("type") == "welcome"
    except Exception:  # noqa: BLE001 - closed 4001: not accepted
        return False
    finally:
        ws.close()


def _gateway_accepts(st, token):
    """401 is the token refused; past the check the route's service is absent (503)."""
    return st.gw("GET", "/api/orders", headers={"Authorization": "Bearer " + token}).status != 401


def test_keys_fetched_at_start(st):
    g, e = _both(st, URL_LOADED)
    assert g >= 1 and e >= 1, (g, e)
    tok = mint(st, kid="idp-1", key=KEY1)
    assert _edge_accepts(st, tok) and _gateway_accepts(st, tok)
    assert _edge_accepts(st, mint(st))  # JWT_PUBLIC_KEYS still counts beside the URL


def test_an_unknown_kid_fetches_the_keys_again(st):
    Provider.serve({"keys": [JWK1, JWK2]})
    before = _both(st, URL_LOADED)
    tok = mint(st, kid="idp-2", key=KEY2)
    # the first sight of idp-2 is refused, and makes each verifier fetch the URL at once
    _edge_accepts(st, tok)
    _gateway_accepts(st, tok)
    wait_for(lambda: all(a > b for a, b in zip(_both(st, URL_LOADED), before)), timeout=15,
             what="the gateway and the edge to fetch the JWKS again")
    assert _edge_accepts(st, tok) and _gateway_accepts(st, tok)


def _kick(st):
    """A token of a kid nobody lists: each verifier fetches the URL at once (at most once a
    second here, JWT_KEYS_REFRESH_MIN_S=1, so wait for the window to pass first)."""
    stranger = os.path.join(DIR, "idp-1.pem")
    before = _both(st, "sc_token_keys_refreshes_total")

    def kicked():
        tok = mint(st, kid="kick-%d" % os.getpid(), key=stranger)
        _edge_accepts(st, tok)
        _gateway_accepts(st, tok)
        return all(a > b for a, b in zip(_both(st, "sc_token_keys_refreshes_total"), before))
    wait_for(kicked, timeout=15, interval=0.3, what="an unknown kid to make both verifiers fetch")


def test_cache_control_max_age_is_followed(st):
    """Once an answer says max-age=1, the verifiers fetch again on their own, with no token
    asking (the floor is JWT_KEYS_REFRESH_MIN_S, 1 s here)."""
    Provider.serve({"keys": [JWK1, JWK2]}, cache="public, max-age=1")
    _kick(st)  # the answer with the short age
    before = _both(st, URL_LOADED)
    try:
        wait_for(lambda: all(a >= b + 2 for a, b in zip(_both(st, URL_LOADED), before)),
                 timeout=20, what="two more fetches by each verifier, paced by max-age")
    finally:
        Provider.serve({"keys": [JWK1, JWK2]})
        _kick(st)  # back to 300 s


def test_a_bad_answer_keeps_the_keys(st):
    before = _both(st, "sc_token_keys_rejected_total")
    Provider.serve(status=500, body=b"oops")
    try:
        _kick(st)
        wait_for(lambda: all(a > b for a, b in
                             zip(_both(st, "sc_token_keys_rejected_total"), before)),
                 timeout=20, what="the failed fetch counted")
        tok = mint(st, kid="idp-1", key=KEY1)
        assert _edge_accepts(st, tok) and _gateway_accepts(st, tok)
    finally:
        Provider.serve({"keys": [JWK1, JWK2]})


def test_a_plain_http_url_is_refused_at_start(st):
    e = dict(os.environ)
    e.update(st.service_env("edge"))
    e.update({"JWT_JWKS_URL": "http://127.0.0.1:%d/jwks" % PORT, "EDGE_LISTEN": "127.0.0.1:0"})
    r = subprocess.run([os.path.join(harness.BUILD, "edge")], env=e, capture_output=True,
                       timeout=30, stdin=subprocess.DEVNULL)
    err = (r.stdout + r.stderr).decode(errors="replace")
    assert r.returncode == 2 and "JWT_JWKS_URL: an https:// URL is required" in err, \
        (r.returncode, err[-800:])


def test_the_token_of_a_stranger_stays_out(st):
    """A key the endpoint does not list: refused, even after the fetch it causes."""
    stranger, _ = _ec_key("stranger")
    tok = mint(st, kid="idp-1", key=stranger)  # a listed kid, the wrong key: bad signature
    assert not _edge_accepts(st, tok) and not _gateway_accepts(st, tok)
    tok = mint(st, kid="nobody", key=stranger)
    assert not _edge_accepts(st, tok) and not _gateway_accepts(st, tok)


def _subscribe(st, token, topic):
    ws = WS.connect(st.edge_url, token=token)
    try:
        ws.recv_json(10, type="welcome")
        ws.send_json({"type": "subscribe", "topic": topic, "id": 1})
        return ws.recv_json(10)["type"]  # "subscribed", or "error" (forbidden)
    finally:
        ws.close()


def test_topics_from_a_claim_of_another_name_or_a_default(st):
    """A provider's token carries no sub_topics: the edge reads JWT_SUB_TOPICS_CLAIM
    ("topics" here, a space-separated string) and, for a token without it, the default
    list (JWT_DEFAULT_SUB_TOPICS)."""
    named = mint(st, kid="idp-1", key=KEY1, sub_topics=None, topics="news.* chat.>")
    assert _subscribe(st, named, "news.today") == "subscribed"
    assert _subscribe(st, named, "chat.room.1") == "subscribed"
    assert _subscribe(st, named, "prices.BTC") == "error"
    plain = mint(st, kid="idp-1", key=KEY1, sub_topics=None)
    assert _subscribe(st, plain, "prices.BTC") == "subscribed"
    assert _subscribe(st, plain, "status") == "subscribed"
    assert _subscribe(st, plain, "news.today") == "error"
    old_style = mint(st, kid="idp-1", key=KEY1, sub_topics=["news.*"])  # not the claim now
    assert _subscribe(st, old_style, "news.today") == "error"


def test_a_bad_default_pattern_is_refused_at_start(st):
    e = dict(os.environ)
    e.update(st.service_env("edge"))
    e.update({"JWT_DEFAULT_SUB_TOPICS": "prices.*,bad pattern", "EDGE_LISTEN": "127.0.0.1:0"})
    r = subprocess.run([os.path.join(harness.BUILD, "edge")], env=e, capture_output=True,
                       timeout=30, stdin=subprocess.DEVNULL)
    err = (r.stdout + r.stderr).decode(errors="replace")
    assert r.returncode == 2 and "JWT_DEFAULT_SUB_TOPICS" in err, (r.returncode, err[-800:])

