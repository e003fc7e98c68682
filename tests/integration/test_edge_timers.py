"""The edge's clocks and counts: token_expiring ahead of exp, close 4001 at exp, an in-band
refresh that keeps the connection past the first token's exp; server pings and the pong
deadline; the connection limit.

Auth issues 10 s tokens here; the edge warns 6 s before exp, pings after 1 s of silence,
drops a peer that stays silent 3 s more, and takes at most 4 connections."""
import time

import wsclient
from wsclient import WS, HandshakeError

SERVICES = ("auth", "edge")
ENV = {"auth": {"ACCESS_TOKEN_TTL": "10"},
       "edge": {"EDGE_TOKEN_WARNING_S": "6", "EDGE_PING_INTERVAL_MS": "1000",
                "EDGE_PONG_TIMEOUT_MS": "3000", "EDGE_MAX_CONNECTIONS": "4"}}


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
    ws.recv_json(10, type="token_expiring")  # 4 s after the first token: a new one ends later
    ws.send_json({"type": "refresh", "token": st.token("alice")["access_token"]})
    r = ws.recv_json(5, type="refreshed")
    assert r["expires_at"] > w["expires_at"], (w, r)
    while time.time() < w["expires_at"] + 1:  # past the first token's exp: still open
        ws.send_json({"type": "ping"})  # and reading answers the edge's pings
        ws.recv_json(5, type="pong")
        time.sleep(0.3)
    ws.send_json({"type": "ping", "id": 1})
    assert ws.recv_json(5, type="pong")["id"] == 1
    ws.close()


def test_ping_then_drop_without_pong(st):
    quiet = WS.connect(st.edge_url, token=st.token("alice")["access_token"])
    quiet.auto_pong = False
    quiet.recv_json(5, type="welcome")
    f = quiet.recv_frame(5)  # after 1 s of silence
    assert f.opcode == wsclient.OP_PING, f
    t0 = time.monotonic()
    code, _ = quiet.expect_close(5)  # no pong: dropped without a closing handshake
    assert code == 1006 and time.monotonic() - t0 < 6, code
    live = WS.connect(st.edge_url, token=st.token("bob")["access_token"])
    live.recv_json(5, type="welcome")
    for _ in range(3):  # the client that answers pings (as it reads) stays
        try:
            live.recv_message(1.0)
        except TimeoutError:
            pass
    live.send_json({"type": "ping", "id": "still"})
    assert live.recv_json(5, type="pong")["id"] == "still"
    assert len(live.pings) >= 1, live.pings
    live.close()


def test_connection_limit_answers_503(st):
    tok = st.token("bob")["access_token"]
    held = [WS.connect(st.edge_url, token=tok) for _ in range(4)]
    for ws in held:
        ws.recv_json(5, type="welcome")
    try:
        WS.connect(st.edge_url, token=tok)
        raise AssertionError("a fifth connection was accepted")
    except HandshakeError as e:
        assert e.status == 503, e.status
    held.pop().close()
    time.sleep(0.3)
    ws = WS.connect(st.edge_url, token=tok)  # room again
    ws.recv_json(5, type="welcome")
    for w in held + [ws]:
        w.close()
