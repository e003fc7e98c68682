"""Token lifetime on the edge: token_expiring ahead of exp, close 4001 at exp, and an
in-band refresh that keeps the connection past the first token's exp.

Auth issues 10 s tokens here; the edge warns 6 s before exp."""
import time

from wsclient import WS

SERVICES = ("auth", "edge")
ENV = {"auth": {"ACCESS_TOKEN_TTL": "10"}, "edge": {"EDGE_TOKEN_WARNING_S": "6"}}


def test_expiring_then_closed_4001(st):
    tok = st.token("alice")
    ws = WS.connect(st.edge_url, token=tok["access_token"])
    w = ws.recv_json(5, type="welcome")
    warn = ws.recv_json(10, type="token_expiring")
    assert warn["expires_at"] == w["expires_at"], (w, warn)
    assert time.time() >= w["expires_at"] - 7, "warned too early"
    code, _ = ws.expect_close(10)
    assert code == 4001, code
    assert time.time() >= w["expires_at"] - 1, "closed before exp"


def test_refresh_keeps_the_connection(st):
    ws = WS.connect(st.edge_url, token=st.token("alice")["access_token"])
    w = ws.recv_json(5, type="welcome")
    ws.recv_json(10, type="token_expiring")
    time.sleep(1.1)  # the next token gets a later exp
    ws.send_json({"type": "refresh", "token": st.token("alice")["access_token"]})
    r = ws.recv_json(5, type="refreshed")
    assert r["expires_at"] > w["expires_at"], (w, r)
    while time.time() < w["expires_at"] + 1:  # past the first token's exp: still open
        time.sleep(0.2)
    ws.send_json({"type": "ping", "id": 1})
    assert ws.recv_json(5, type="pong")["id"] == 1
    ws.close()
