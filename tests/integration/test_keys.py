"""Signing keys that change while the gateway and the edge run (common/keys.c): auth's key
learnt from the bus, a second key added to JWT_PUBLIC_KEYS and taken on SIGHUP, a bad file
on SIGHUP keeping the keys, a token of an unknown kid asking auth for its keys once per
JWT_KEYS_REFRESH_MIN_S, and auth restarted with a new signing key while clients stay
connected: old tokens stay valid, new ones carry the new kid and pass everywhere, and no
connection drops."""
import base64
import json
import os
import shutil
import signal
import subprocess
import time

from harness import b64url, http, mint, wait_for, _der_to_raw
from wsclient import WS

SERVICES = ("auth", "gateway", "edge")


def _metric(url, series):
    body = http("GET", url + "/metrics").body.decode()
    for line in body.splitlines():
        if line.startswith(series + " "):
            return int(float(line.split()[-1]))
    return 0


def _edge(st, series):
    return _metric("http://127.0.0.1:%d" % st.edge_port, series)


def _gw(st, series):
    return _metric(st.gateway_url, series)


LOADED = 'sc_token_keys_loaded_total{source="%s"}'


def _new_key(st, name):
    """A new EC P-256 key pair in the stack's key directory: (private PEM path, public PEM)."""
    priv = os.path.join(st.keys, name + ".pem")
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out",
                    priv], check=True, capture_output=True)
    pub = subprocess.run(["openssl", "pkey", "-in", priv, "-pubout"], check=True,
                         capture_output=True).stdout.decode()
    return priv, pub


def _mint_with(priv, kid, sub="alice"):
    """An ES256 token like mint()'s, signed with priv and naming kid."""
    now = int(time.time())
    head = {"alg": "ES256", "typ": "JWT", "kid": kid}
    claims = {"iss": "sidecast", "aud": "sidecast", "sub": sub, "iat": now - 1,
              "nbf": now - 1, "exp": now + 300, "jti": "k%d" % time.monotonic_ns(),
              "sub_topics": ["prices.*"], "pub_topics": []}
    signing_input = b64url(json.dumps(head).encode()) + "." + b64url(json.dumps(claims).encode())
    der = subprocess.run(["openssl", "dgst", "-sha256", "-sign", priv],
                         input=signing_input.encode(), capture_output=True, check=True).stdout
    return signing_input + "." + b64url(_der_to_raw(der))


def _edge_accepts(st, token):
    ws = WS.connect(st.edge_url, token=token)
    try:
        m = ws.recv_json(10)
        return m.get("type") == "welcome"
    except Exception:  # noqa: BLE001 - closed 4001 (or anything else): not accepted
        return False
    finally:
        ws.close()


def _gateway_accepts(st, token):
    """401 is the gateway refusing the token; anything else got past the check (the route's
    service is not running here, so a passed check ends in 503)."""
    r = st.gw("GET", "/api/orders", headers={"Authorization": "Bearer " + token})
    return r.status != 401


def _sighup_and_wait(st, series, names=("gateway", "edge")):
    before = {"gateway": _gw(st, series), "edge": _edge(st, series)}
    for n in names:
        st.procs[n].signal(signal.SIGHUP)
    wait_for(lambda: _gw(st, series) > before["gateway"] and _edge(st, series) > before["edge"],
             timeout=15, what="gateway and edge to take the keys file (%s)" % series)


def test_an_unknown_kid_asks_auth_once(st):
    """Five tokens of a kid nobody has: all refused, and one request for auth's keys (the
    default JWT_KEYS_REFRESH_MIN_S is 10 s), not five."""
    series = "sc_token_keys_refreshes_total"
    before = _edge(st, series)
    priv, _ = _new_key(st, "stranger")
    for _ in range(5):
        assert not _edge_accepts(st, _mint_with(priv, "nobody-knows"))
    wait_for(lambda: _edge(st, series) >= before + 1, timeout=10, what="a refresh")
    assert _edge(st, series) == before + 1, (before, _edge(st, series))
    # and the answer was taken: auth's key once more, from the bus
    wait_for(lambda: _edge(st, LOADED % "bus") >= 2, timeout=10, what="auth's keys again")


def test_verifiers_learn_auths_key_from_the_bus(st):
    wait_for(lambda: _edge(st, LOADED % "bus") >= 1 and _gw(st, LOADED % "bus") >= 1,
             timeout=15, what="auth's JWKS at the edge and the gateway")
    assert _edge_accepts(st, st.token("alice")["access_token"])


def test_sighup_adds_a_key_without_dropping_a_connection(st):
    held = WS.connect(st.edge_url, token=st.token("alice")["access_token"])
    held.recv_json(5, type="welcome")
    held.subscribe("prices.KEYS")
    priv, pub = _new_key(st, "second")
    tok = _mint_with(priv, "dev-2")
    assert not _edge_accepts(st, tok) and not _gateway_accepts(st, tok)
    path = os.path.join(st.keys, "public.pem")
    shutil.copy(path, path + ".orig")
    with open(path, "a") as f:
        f.write("kid: dev-2\n" + pub)
    _sighup_and_wait(st, LOADED % "file")
    assert _edge_accepts(st, tok) and _gateway_accepts(st, tok)
    assert _edge_accepts(st, mint(st))  # the first key still counts
    st.busctl("pub", "events.prices.KEYS", json.dumps({"after": "sighup"}))
    assert held.recv_json(10, type="event")["data"] == {"after": "sighup"}  # still connected
    held.close()
    shutil.copy(path + ".orig", path)
    _sighup_and_wait(st, LOADED % "file")


def test_a_bad_file_on_sighup_keeps_the_keys(st):
    path = os.path.join(st.keys, "public.pem")
    shutil.copy(path, path + ".good")
    with open(path, "w") as f:
        f.write("-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n")
    try:
        _sighup_and_wait(st, "sc_token_keys_rejected_total")
        assert _edge_accepts(st, mint(st)) and _gateway_accepts(st, mint(st))
    finally:
        shutil.copy(path + ".good", path)


def test_auth_restarted_with_a_new_key_nobody_restarts(st):
    """The drill: auth comes back signing with a new key (dev-3) while a client is connected.
    The verifiers learn the key from auth's announcement, with no restart and no SIGHUP;
    tokens of the old key stay valid (it is still in JWT_PUBLIC_KEYS); the connected client
    keeps its connection."""
    old = st.token("alice")["access_token"]
    held = WS.connect(st.edge_url, token=old)
    held.recv_json(5, type="welcome")
    held.subscribe("prices.DRILL")
    priv, _ = _new_key(st, "third")
    bus_before = {"e": _edge(st, LOADED % "bus"), "g": _gw(st, LOADED % "bus")}
    st.kill("auth", signal.SIGTERM)
    st.procs["auth"].env.update({"JWT_PRIVATE_KEY": priv, "JWT_KID": "dev-3"})
    st.restart("auth")
    wait_for(lambda: _edge(st, LOADED % "bus") > bus_before["e"] and
             _gw(st, LOADED % "bus") > bus_before["g"],
             timeout=15, what="the new key announced to the edge and the gateway")
    new = st.token("alice")["access_token"]
    assert _kid(new) == "dev-3", _kid(new)
    assert _edge_accepts(st, new) and _gateway_accepts(st, new)
    assert _edge_accepts(st, old) and _gateway_accepts(st, old)
    st.busctl("pub", "events.prices.DRILL", json.dumps({"after": "rotation"}))
    assert held.recv_json(10, type="event")["data"] == {"after": "rotation"}
    held.close()


def _kid(token):
    return json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["kid"]


def test_auth_changes_its_key_on_sighup(st):
    """auth takes a new key in place (SIGHUP, the key file with a "kid:" line) and announces
    the new key and the one before it. The verifiers' own file here holds neither (a
    stranger's key only), so the old tokens pass only because auth announced the previous
    key with the new one; nothing restarts and the connected client stays connected."""
    old = st.token("alice")["access_token"]
    held = WS.connect(st.edge_url, token=old)
    held.recv_json(5, type="welcome")
    held.subscribe("prices.HUP")
    path = os.path.join(st.keys, "public.pem")
    shutil.copy(path, path + ".keep")
    _, stranger = _new_key(st, "stranger2")
    try:
        with open(path, "w") as f:
            f.write("kid: stranger\n" + stranger)
        _sighup_and_wait(st, LOADED % "file")
        assert _edge_accepts(st, old) and _gateway_accepts(st, old)  # auth's, from the bus
        priv = st.procs["auth"].env["JWT_PRIVATE_KEY"]
        new_priv, _ = _new_key(st, "fourth")
        with open(new_priv) as f:
            pem = f.read()
        with open(priv, "w") as f:
            f.write("kid: dev-4\n" + pem)
        before = {"e": _edge(st, LOADED % "bus"), "g": _gw(st, LOADED % "bus")}
        st.procs["auth"].signal(signal.SIGHUP)
        wait_for(lambda: _edge(st, LOADED % "bus") > before["e"] and
                 _gw(st, LOADED % "bus") > before["g"],
                 timeout=15, what="auth's new key announced")
        new = st.token("alice")["access_token"]
        assert _kid(new) == "dev-4" and _kid(old) != "dev-4", (_kid(new), _kid(old))
        assert _edge_accepts(st, new) and _gateway_accepts(st, new)
        assert _edge_accepts(st, old) and _gateway_accepts(st, old)  # the previous key
        jwks = json.loads(st.gw("GET", "/.well-known/jwks.json").body)
        assert [k["kid"] for k in jwks["keys"]] == ["dev-4", _kid(old)], jwks
        st.busctl("pub", "events.prices.HUP", json.dumps({"after": "auth sighup"}))
        assert held.recv_json(10, type="event")["data"] == {"after": "auth sighup"}
        held.close()
    finally:
        shutil.copy(path + ".keep", path)
        _sighup_and_wait(st, LOADED % "file")
