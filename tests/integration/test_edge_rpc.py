"""RPC over the socket (sidecast.v1 "rpc"): {"type":"rpc","id":...,"method":...,"data":...}
becomes a NATS request to rpc.<method> with the caller's identity in headers; the reply comes
back as {"type":"rpc_result","id":...,"data":...} or an error with a code.

Real processes: the producer answers rpc.prices.quote (a known symbol: its price; an unknown
one: refused with not_found); echosvc answers rpc.echo.who (echoes the headers it got),
rpc.echo.slow (3 s: past EDGE_RPC_TIMEOUT_MS) and rpc.echo.bad (not JSON). Methods come from
the token's rpc_methods claim; EDGE_RPC_INFLIGHT bounds the calls in flight per connection.
"""
import time

import harness
from wsclient import WS

SERVICES = ("auth", "edge", "producer")
ECHO_SUBJECTS = ("rpc.echo.who", "rpc.echo.slow", "rpc.echo.bad")
# under 3 s (echo.slow answers then) whatever SLOW is, and time enough for a normal call
ENV = {"edge": {"EDGE_RPC_TIMEOUT_MS": "1000" if harness.SLOW == 1 else "2000",
                "EDGE_RPC_INFLIGHT": "2"}}


def _ws(st, methods=("prices.*", "echo.*", "nobody.home"), user="alice"):
    tok = harness.mint(st, sub=user, rpc_methods=list(methods))
    ws = WS.connect(st.edge_url, token=tok)
    assert ws.recv_json(5, type="welcome")["user"] == user
    return ws


def _call(ws, method, data=None, id_="c1", timeout=10):
    msg = {"type": "rpc", "id": id_, "method": method}
    if data is not None:
        msg["data"] = data
    ws.send_json(msg)
    while True:
        m = ws.recv_json(timeout)
        if m.get("id") == id_:
            return m


def _rpc_metric(st, result):
    return st.edge_metric('sc_edge_rpc_total{result="%s"}' % result) or 0


def test_a_method_answers_with_its_data(st):
    ws = _ws(st)
    r = _call(ws, "prices.quote", {"symbol": "BTC"})
    assert r["type"] == "rpc_result" and r["id"] == "c1", r
    assert r["data"]["symbol"] == "BTC" and r["data"]["price"] > 0, r
    r = _call(ws, "echo.who", {"n": 7, "s": "é"}, id_=42)
    assert r["type"] == "rpc_result" and r["id"] == 42, r
    assert r["data"]["subject"] == "rpc.echo.who", r
    assert r["data"]["user"] == "alice", r  # the identity travels in Sidecast-User
    assert r["data"]["request"] == {"n": 7, "s": "é"}, r
    r = _call(ws, "echo.who", id_="no-data")  # no "data": null is sent
    assert r["type"] == "rpc_result" and r["data"]["request"] is None, r
    ws.close()
    print("  prices.quote ETH: %.2f; echo.who saw user alice and the data as sent"
          % _call(_ws(st), "prices.quote", {"symbol": "ETH"})["data"]["price"])


def test_errors_have_codes(st):
    ws = _ws(st)
    before = {k: _rpc_metric(st, k) for k in ("refused", "no_responders", "timeout", "error")}
    r = _call(ws, "prices.quote", {"symbol": "NOPE"})
    assert r["type"] == "error" and r["code"] == "not_found", r
    assert r["message"] == "no such symbol", r  # the service's own message
    r = _call(ws, "nobody.home")
    assert r["type"] == "error" and r["code"] == "no_responders", r
    t0 = time.monotonic()
    r = _call(ws, "echo.slow", {})
    assert r["type"] == "error" and r["code"] == "timeout", r
    waited = time.monotonic() - t0
    r = _call(ws, "echo.bad", {})
    assert r["type"] == "error" and r["code"] == "bad_reply", r
    r = _call(ws, "admin.kick", {})  # not in the token's rpc_methods
    assert r["type"] == "error" and r["code"] == "forbidden", r
    ws.send_json({"type": "rpc", "method": "prices.quote"})  # no id to answer to
    r = ws.recv_json(5, type="error")
    assert r["code"] == "bad_message", r
    ws.send_json({"type": "rpc", "id": 1, "method": "bad method!"})
    r = ws.recv_json(5, type="error")
    assert r["code"] == "bad_message" and r["id"] == 1, r
    after = {k: _rpc_metric(st, k) for k in before}
    assert after["refused"] >= before["refused"] + 2, (before, after)  # not_found, forbidden
    assert after["no_responders"] == before["no_responders"] + 1, (before, after)
    assert after["timeout"] == before["timeout"] + 1, (before, after)
    assert after["error"] == before["error"] + 1, (before, after)  # bad_reply
    ws.close()
    print("  not_found (with the service's message), no_responders, timeout after %.1f s, "
          "bad_reply, forbidden, bad_message: each an error with its code" % waited)


def test_calls_in_flight_are_bounded_and_a_closed_connection_drops_its_replies(st):
    ws = _ws(st)
    busy = _rpc_metric(st, "busy")
    for i in range(3):  # EDGE_RPC_INFLIGHT=2: the third is refused at once
        ws.send_json({"type": "rpc", "id": "s%d" % i, "method": "echo.slow", "data": {}})
    r = ws.recv_json(5)
    assert r["type"] == "error" and r["id"] == "s2" and r["code"] == "busy", r
    assert _rpc_metric(st, "busy") == busy + 1
    got = sorted(ws.recv_json(10)["id"] for _ in range(2))  # both time out, in any order
    assert got == ["s0", "s1"], got
    # calls in flight when the connection closes: their replies find nobody, the edge is fine
    ws2 = _ws(st)
    for i in range(2):
        ws2.send_json({"type": "rpc", "id": i, "method": "echo.slow", "data": {}})
    ws2.abort()
    time.sleep(1.5 * harness.SLOW)  # past the timeout: the replies (timeouts) come and go
    r = _call(ws, "prices.quote", {"symbol": "SOL"})
    assert r["type"] == "rpc_result", r
    ws.close()
    print("  2 in flight, the 3rd: busy; a connection closed with 2 calls pending: no harm")


def test_methods_from_a_string_claim_or_none(st):
    tok = harness.mint(st, sub="bob", rpc_methods="prices.quote echo.who")
    ws = WS.connect(st.edge_url, token=tok)
    ws.recv_json(5, type="welcome")
    assert _call(ws, "echo.who", {})["type"] == "rpc_result"
    assert _call(ws, "echo.slow", {})["code"] == "forbidden"
    ws.close()
    tok = harness.mint(st, sub="bob")  # no rpc_methods claim, no default: nothing
    ws = WS.connect(st.edge_url, token=tok)
    ws.recv_json(5, type="welcome")
    assert _call(ws, "prices.quote", {"symbol": "BTC"})["code"] == "forbidden"
    ws.close()
    print("  rpc_methods as a space-separated string works; without the claim nothing may "
          "be called")


