"""The end-to-end flow through the compose stack (tests/compose/run.sh starts it): a token from
the gateway, a WebSocket to edge-1, a price tick, an order answered 202 whose fill is pushed to
the inbox, then edge-2 resuming the same topic with `since` from the shared stream.

Usage: e2e.py GATEWAY_PORT EDGE1_PORT EDGE2_PORT (everything on 127.0.0.1). Prints one line
per step; exits 0 when every step passed, 1 at the first failure (with the reason)."""
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import wsclient  # noqa: E402
from harness import form, http, wait_for  # noqa: E402


def step(msg):
    print("compose e2e: " + msg, flush=True)


def next_event(ws, want, seen, timeout=15.0):
    """Reads events until want(msg) holds; every prices.BTC seq on the way goes into seen."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("no matching message within %.0f s" % timeout)
        msg = ws.recv_json(timeout=left)
        if msg.get("type") == "event" and msg.get("topic") == "prices.BTC":
            seen.append(msg["seq"])
        if want(msg):
            return msg


def main():
    gw_port, e1_port, e2_port = (int(a) for a in sys.argv[1:4])
    gw = "http://127.0.0.1:%d" % gw_port

    wait_for(lambda: http("GET", gw + "/readyz", timeout=2).status == 200, timeout=30,
             what="gateway /readyz")
    step("gateway %s is ready" % gw)

    body, hdrs = form(grant_type="password", username="alice", password="wonderland")
    r = http("POST", gw + "/auth/token", body, hdrs)
    assert r.status == 200, r
    tok = r.json()
    assert tok["token_type"] == "Bearer" and tok["refresh_token"], tok
    step("POST /auth/token: 200, access token for alice (expires_in %s, ws_url %s)"
         % (tok["expires_in"], tok["ws_url"]))

    r = http("GET", gw + "/.well-known/jwks.json")
    assert r.status == 200 and [k["kid"] for k in r.json()["keys"]] == ["dev-1"], r
    step("GET /.well-known/jwks.json: 200, kid dev-1")

    btc = []
    url1 = wsclient.ws_url("ws://127.0.0.1:%d/ws" % e1_port, access_token=tok["access_token"])
    with wsclient.WS.connect(url1, timeout=10) as ws:
        hello = ws.recv_json(type="welcome")
        assert hello["user"] == "alice" and hello["edge"] == "edge-1", hello
        step("edge-1: welcome %s (conn %s)" % (hello["user"], hello["conn_id"]))
        ws.send_json({"type": "subscribe", "topic": "prices.BTC"})
        next_event(ws, lambda m: m.get("type") == "subscribed", btc)
        tick = next_event(ws, lambda m: m.get("type") == "event"
                          and m.get("topic") == "prices.BTC", btc)
        assert "price" in tick["data"], tick
        step("edge-1: tick on prices.BTC, seq %d, price %s" % (tick["seq"], tick["data"]["price"]))

        r = http("POST", gw + "/api/orders", {"symbol": "BTC", "qty": 1},
                 {"Authorization": "Bearer " + tok["access_token"]})
        assert r.status == 202, r
        oid = r.json()["order_id"]
        step("POST /api/orders: 202, order_id %s" % oid)
        fill = next_event(ws, lambda m: m.get("type") == "event" and m.get("topic") == "user"
                          and m["data"].get("order_id") == oid, btc)
        assert fill["data"]["type"] == "order_filled", fill
        step("edge-1: fill of %s pushed to alice's inbox (seq %d)" % (oid, fill["seq"]))
        if len(btc) < 2:
            next_event(ws, lambda m: len(btc) >= 2, btc)
        ws.close()

    # The other edge shares the stream: resuming from the first tick replays the second.
    url2 = wsclient.ws_url("ws://127.0.0.1:%d/ws" % e2_port, access_token=tok["access_token"])
    with wsclient.WS.connect(url2, timeout=10) as ws:
        hello = ws.recv_json(type="welcome")
        assert hello["edge"] == "edge-2", hello
        ws.send_json({"type": "subscribe", "topic": "prices.BTC", "since": btc[0]})
        again = []
        first = next_event(ws, lambda m: m.get("type") == "event"
                           and m.get("topic") == "prices.BTC", again)
        assert first["seq"] == btc[1], (first, btc)
        step("edge-2: welcome, subscribe prices.BTC since %d replays seq %d first, as edge-1 "
             "saw it" % (btc[0], first["seq"]))
        ws.close()
    step("passed")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # noqa: BLE001 - reported as the failed step
        step("FAILED: %s: %s" % (type(e).__name__, e))
        sys.exit(1)
