"""The producer over real NATS, behind the gateway and the edge: the orders API (202 with an
order_id, 400 with reasons, get/list scoped to the caller), the fill pushed to the user's
inbox on a WebSocket, price ticks on prices.*, the chat relay client.chat.> ->
events.chat.<room>, the admin port, and a clean exit on SIGTERM (teardown)."""
import json
import time

import harness
from wsclient import WS

SERVICES = ("auth", "gateway", "edge", "producer")
ENV = {"producer": {"PRODUCER_FILL_DELAY_MS": "300", "PRODUCER_TICK_MS": "100",
                    "PRODUCER_ORDERS_PER_USER": "5"}}


def _token(st, user="alice"):
    return st.token(user)["access_token"]


def _auth(tok):
    return {"Authorization": "Bearer " + tok}


def _connect(st, tok):
    ws = WS.connect(st.edge_url, token=tok)
    ws.recv_json(5, type="welcome")
    return ws


def _admin(st, path):
    return harness.http("GET", "http://127.0.0.1:%d%s" % (st.producer_admin_port, path))


def test_admin_port(st):
    assert _admin(st, "/healthz").status == 200
    r = _admin(st, "/readyz")
    assert r.status == 200 and r.json()["status"] == "ready", r
    m = _admin(st, "/metrics")
    assert m.status == 200 and b"sc_producer_ticks_total" in m.body, m


def test_order_accepted_then_filled_on_the_websocket(st):
    tok = _token(st)
    ws = _connect(st, tok)
    try:
        t_order = time.time()
        r = st.gw("POST", "/api/orders", {"symbol": "BTC", "qty": 1}, _auth(tok))
        assert r.status == 202, r
        body = r.json()
        oid = body["order_id"]
        assert oid.startswith("o-") and len(oid) == 18, body
        assert body == {"order_id": oid, "status": "accepted", "symbol": "BTC", "qty": 1,
                        "side": "buy"}, body
        ev = ws.recv_json(5, type="event")
        assert ev["topic"] == "user", ev
        d = ev["data"]
        assert d["type"] == "order_filled" and d["order_id"] == oid, d
        assert d["symbol"] == "BTC" and d["qty"] == 1 and d["side"] == "buy", d
        assert 33500 <= d["price"] <= 134000, d
        # milliseconds of the wall clock, between the order and its event's arrival
        assert int(t_order * 1000) <= d["filled_at"] <= time.time() * 1000, (t_order, d)
    finally:
        ws.close()
    # the stored order now says filled
    r = st.gw("GET", "/api/orders/" + oid, headers=_auth(tok))
    assert r.status == 200, r
    o = r.json()
    assert o["order_id"] == oid and o["status"] == "filled" and o["user_id"] == "alice", o
    assert o["price"] == d["price"] and o["side"] == "buy", o


def test_sell_with_fractional_qty(st):
    tok = _token(st)
    r = st.gw("POST", "/api/orders", {"symbol": "SOL", "qty": 2.5, "side": "sell"}, _auth(tok))
    assert r.status == 202, r
    b = r.json()
    assert b["symbol"] == "SOL" and b["qty"] == 2.5 and b["side"] == "sell", b


def test_bad_orders_are_400_with_reasons(st):
    tok = _token(st)
    for body, word in [
        ({"qty": 1}, "symbol"),
        ({"symbol": "DOGE", "qty": 1}, "symbol"),
        ({"symbol": "BTC"}, "qty"),
        ({"symbol": "BTC", "qty": 0}, "qty"),
        ({"symbol": "BTC", "qty": -3}, "qty"),
        ({"symbol": "BTC", "qty": 1000001}, "qty"),
        ({"symbol": "BTC", "qty": "1"}, "qty"),
        ({"symbol": "BTC", "qty": 1, "side": "short"}, "side"),
        ([1, 2], "object"),
    ]:
        r = st.gw("POST", "/api/orders", json.dumps(body),
                  dict(_auth(tok), **{"Content-Type": "application/json"}))
        assert r.status == 400, (body, r)
        e = r.json()
        assert e["error"] == "invalid_request" and word in e["message"], (body, e)
    r = st.gw("POST", "/api/orders", headers=_auth(tok))  # no body at all
    assert r.status == 400 and r.json()["error"] == "invalid_request", r


def test_orders_need_a_token(st):
    r = st.gw("POST", "/api/orders", {"symbol": "BTC", "qty": 1})
    assert r.status == 401, r


def test_get_and_list_are_scoped_to_the_caller(st):
    alice, bob = _token(st, "alice"), _token(st, "bob")
    ids = []
    for i in range(7):
        r = st.gw("POST", "/api/orders", {"symbol": "ETH", "qty": i + 1}, _auth(alice))
        assert r.status == 202, r
        ids.append(r.json()["order_id"])
    r = st.gw("GET", "/api/orders", headers=_auth(alice))
    assert r.status == 200, r
    listed = r.json()["orders"]
    # newest first, bounded by PRODUCER_ORDERS_PER_USER=5
    assert [o["order_id"] for o in listed] == ids[::-1][:5], listed
    assert all(o["user_id"] == "alice" for o in listed), listed
    r = st.gw("GET", "/api/orders/" + ids[-1], headers=_auth(alice))
    assert r.status == 200 and r.json()["qty"] == 7, r
    r = st.gw("GET", "/api/orders/" + ids[-1], headers=_auth(bob))
    assert r.status == 404 and r.json()["error"] == "not_found", r
    r = st.gw("GET", "/api/orders/" + ids[0], headers=_auth(alice))  # dropped by the bound
    assert r.status == 404, r
    r = st.gw("GET", "/api/orders/nope", headers=_auth(alice))
    assert r.status == 404, r
    r = st.gw("GET", "/api/orders", headers=_auth(bob))
    assert r.status == 200 and r.json() == {"orders": []}, r


def test_price_ticks_reach_a_subscriber(st):
    ws = _connect(st, _token(st, "bob"))
    t_start = time.time()
    try:
        ws.subscribe("prices.BTC")
        seen = []
        while len(seen) < 3:
            ev = ws.recv_json(5, type="event")
            assert ev["topic"] == "prices.BTC", ev
            ev["t_recv"] = time.time()
            seen.append(ev)
        for ev in seen:
            d = ev["data"]
            assert d["symbol"] == "BTC" and 33500 <= d["price"] <= 134000, d
            # milliseconds of the wall clock: not after the tick arrived, and not from
            # before the test (beyond a minute's slack for a tick made before it subscribed)
            assert t_start * 1000 - 60000 <= d["ts"] <= ev["t_recv"] * 1000, (t_start, ev)
        assert seen[0]["seq"] < seen[1]["seq"] < seen[2]["seq"], seen
    finally:
        ws.close()


def test_chat_publish_comes_back_as_an_event(st):
    # alice's fills from the order tests above (PRODUCER_FILL_DELAY_MS) may still reach her
    # inbox on this connection: only chat.lobby events are this test's.
    ws = _connect(st, _token(st, "alice"))
    try:
        ws.subscribe("chat.lobby")
        ws.send_json({"type": "publish", "topic": "chat.lobby", "data": "hello all",
                      "id": "c1"})
        ev = ws.recv_json(5, type="event", topic="chat.lobby")
        d = ev["data"]
        assert d["author"] == "alice" and d["data"] == "hello all", d
        assert d["text"] == "hello all" and isinstance(d["ts"], int), d
        ws.send_json({"type": "publish", "topic": "chat.lobby", "data": {"emoji": "wave"}})
        ev = ws.recv_json(5, type="event", topic="chat.lobby")
        assert ev["data"]["author"] == "alice" and ev["data"]["data"] == {"emoji": "wave"}, ev
    finally:
        ws.close()


def _metric(st, line_start):
    for line in _admin(st, "/metrics").body.decode().splitlines():
        if line.startswith(line_start + " "):
            return int(line.split()[1])
    return 0


def test_chat_without_user_header_is_ignored(st):
    relayed = _metric(st, "sc_producer_chat_relayed_total")
    st.busctl("pub", "client.chat.lobby", json.dumps("anonymous"))
    harness.wait_for(lambda: _metric(st, "sc_producer_chat_dropped_total") >= 1, timeout=5,
                     what="chat drop counted")
    assert _metric(st, "sc_producer_chat_relayed_total") == relayed


def test_metrics_count_orders_fills_and_chat(st):
    m = _admin(st, "/metrics").body.decode()
    for needle in ('sc_producer_orders_total{result="accepted"}',
                   'sc_producer_orders_total{result="invalid"}',
                   "sc_producer_fills_total", "sc_producer_chat_relayed_total",
                   "sc_producer_pending_fills"):
        assert needle in m, needle
    fills = [l for l in m.splitlines() if l.startswith("sc_producer_fills_total ")]
    assert fills and int(fills[0].split()[1]) >= 1, fills
