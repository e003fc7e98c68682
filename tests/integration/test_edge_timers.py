"""The edge's clocks and counts: token_expiring ahead of exp, close 4001 at exp, an in-band
refresh that keeps the connection past the first token's exp; server pings and the pong
deadline; the connection limit.

Auth issues 10 s tokens here; the edge warns 6 s before exp, pings after 1 s of silence,
drops a peer that stays silent 3 s more, and takes at most 4 connections.

The tests wait for what the edge shows (a message, a close, a ping, a metric), never for a
duration, and assert no upper bound on one. The only clock comparisons left are lower
bounds that a loaded machine cannot break: the edge's warning and its 4001 close are not
seen before their wall-clock time (seeing them later is never a failure)."""
import threading
import time

import harness
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
    warn = ws.recv_json(20, type="token_expiring")
    assert warn["expires_at"] == w["expires_at"], (w, warn)
    # lower bounds only (whole seconds, hence the extra second): received no earlier than
    # the warning time and exp; a late arrival under load is not a failure
    assert time.time() >= w["expires_at"] - 7, "warned too early"
    code, _ = ws.expect_close(20)
    assert code == 4001, code
    assert time.time() >= w["expires_at"] - 1, "closed before exp"


def test_refresh_keeps_the_connection(st):
    """ws refreshes in band; control holds the same first token and does not. Once control
    is closed 4001 (the edge enforced the first token's exp) and the first exp is past, ws
    still answers. The new token is minted for 120 s, so its own exp cannot end ws while
    the test runs, however slow the machine."""
    first = st.token("alice")["access_token"]
    ws = WS.connect(st.edge_url, token=first)
    w = ws.recv_json(5, type="welcome")
    control = WS.connect(st.edge_url, token=first)
    assert control.recv_json(5, type="welcome")["expires_at"] == w["expires_at"]
    ctl = {"msgs": []}

    def watch_control():  # reads control (answering pings) until the edge closes it
        try:
            while True:
                ctl["msgs"].append(control.recv_json(60 * harness.SLOW)["type"])
        except wsclient.ConnectionClosed as e:
            ctl["code"] = e.code
        except Exception as e:  # noqa: BLE001 - reported below
            ctl["error"] = e
    th = threading.Thread(target=watch_control, daemon=True)
    th.start()
    ws.recv_json(20, type="token_expiring")
    ws.send_json({"type": "refresh", "token": harness.mint(st, "alice", exp_in=120)})
    r = ws.recv_json(5, type="refreshed")
    assert r["expires_at"] > w["expires_at"], (w, r)
    # ws pings (reading it answers the edge's pings) until the edge has closed control at
    # the first token's exp; each ping on ws gets its pong meanwhile
    n = 0
    while th.is_alive():  # bounded: control's read gives up after 60 s
        n += 1
        ws.send_json({"type": "ping", "id": n})
        assert ws.recv_json(10, type="pong")["id"] == n
        th.join(0.3)  # waits for control's close, not for a duration
    assert ctl.get("code") == 4001 and ctl["msgs"] == ["token_expiring"], ctl
    # The edge checks exp against whole seconds of the wall clock, so ws's timer (were the
    # refresh ignored) could fire up to a second after control's: read ws until the wall
    # clock is past that second (a lower bound). What is waited for must NOT happen: a
    # close, which recv_json would raise; nothing else is sent to ws meanwhile.
    while time.time() < w["expires_at"] + 1.5:
        try:
            m = ws.recv_json(0.3)
            raise AssertionError("unexpected message: %r" % m)
        except TimeoutError:
            pass
    # two round trips: the edge runs its due timers after each read, so a close due by now
    # would come before the second pong
    for i in ("a", "b"):
        ws.send_json({"type": "ping", "id": i})
        assert ws.recv_json(10, type="pong")["id"] == i
    ws.close()


def test_ping_then_drop_without_pong(st):
    aborts = st.edge_metric("sc_edge_aborts_total") or 0
    quiet = WS.connect(st.edge_url, token=st.token("alice")["access_token"])
    quiet.auto_pong = False
    quiet.recv_json(5, type="welcome")
    f = quiet.recv_frame(10)  # after 1 s of silence
    assert f.opcode == wsclient.OP_PING, f
    # no pong: dropped without a closing handshake (1006: not the 4001 of the token's exp),
    # and the edge counts it as an abort
    code, _ = quiet.expect_close(15)
    assert code == 1006, code
    harness.wait_for(lambda: st.edge_metric("sc_edge_aborts_total") > aborts,
                     what="the drop counted in sc_edge_aborts_total")
    live = WS.connect(st.edge_url, token=st.token("bob")["access_token"])
    live.recv_json(5, type="welcome")

    def second_ping():
        try:
            live.recv_message(0.2)  # reading answers pings (auto_pong); no data expected
        except TimeoutError:
            pass
        return len(live.pings) >= 2
    # the edge pings again only once the last ping was answered (an unanswered one ends in
    # the drop above): a second ping shows that the first pong kept the connection
    harness.wait_for(second_ping, timeout=20, what="a second ping on the live connection")
    live.send_json({"type": "ping", "id": "still"})
    assert live.recv_json(5, type="pong")["id"] == "still"
    live.close()


def test_connection_limit_answers_503(st):
    tok = st.token("bob")["access_token"]
    # /metrics is a connection too: read it while there is room
    full = st.edge_metric('sc_edge_rejected_total{reason="full"}') or 0
    held = [WS.connect(st.edge_url, token=tok) for _ in range(4)]
    for ws in held:
        ws.recv_json(5, type="welcome")
    try:
        WS.connect(st.edge_url, token=tok)
        raise AssertionError("a fifth connection was accepted")
    except HandshakeError as e:
        assert e.status == 503, e.status
    held.pop().close()

    def room_again():
        # the edge frees the slot once it has seen the close: until then, 503 again
        try:
            return WS.connect(st.edge_url, token=tok)
        except HandshakeError as e:
            assert e.status == 503, e.status
            return None
    ws = harness.wait_for(room_again, what="room for a connection after one closed")
    ws.recv_json(5, type="welcome")
    for w in held + [ws]:
        w.close()
    # the refusal was the edge's limit (counted before the handshake)
    harness.wait_for(lambda: (st.edge_metric('sc_edge_rejected_total{reason="full"}') or 0)
                     > full, what='sc_edge_rejected_total{reason="full"} counting the 503')
