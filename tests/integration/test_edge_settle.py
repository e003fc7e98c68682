"""A new subscription is confirmed with NATS (one PING/PONG round trip, taken by the
fabric's settler thread) before its client hears "welcome" or "subscribed", and the worker
never waits for that round trip: with NATS frozen (SIGSTOP), a client whose inbox is new
waits for the round trip to fail (1 s), while a client already live on the same worker (one
worker here) gets its pong at once. Once NATS is back, the new client's inbox works."""
import json
import signal
import threading
import time

import harness
from wsclient import WS

SERVICES = ("auth", "edge")
ENV = {"edge": {"EDGE_WORKERS": "1"}}


def _settle_failures(st):
    n = st.edge_metric('sc_edge_settle_flushes_total{result="failed"}')
    assert n is not None, "no sc_edge_settle_flushes_total{result=\"failed\"}"
    return n


def test_a_frozen_nats_holds_the_new_client_not_the_worker(st):
    alice = WS.connect(st.edge_url, token=st.token("alice")["access_token"])
    alice.recv_json(5, type="welcome")
    bob_token = st.token("bob")["access_token"]  # auth needs NATS: before the freeze
    failed_before = _settle_failures(st)
    got = {}

    def connect_bob():
        t0 = time.monotonic()
        try:
            ws = WS.connect(st.edge_url, token=bob_token, timeout=10)
            got["welcome"] = ws.recv_json(10, type="welcome")
            got["ws"] = ws
        except Exception as e:  # reported by the main thread
            got["error"] = e
        got["took"] = time.monotonic() - t0

    st.procs["nats"].signal(signal.SIGSTOP)
    try:
        th = threading.Thread(target=connect_bob)
        th.start()
        time.sleep(0.2)  # bob's handshake is in: his inbox waits for the round trip
        t0 = time.monotonic()
        alice.send_json({"type": "ping", "id": 5})
        pong = alice.recv_json(5, type="pong")
        took = time.monotonic() - t0
        assert pong.get("id") == 5, pong
        assert took < 0.5, "the worker waited for NATS: pong after %.2f s" % took
        th.join(15)
    finally:
        st.procs["nats"].signal(signal.SIGCONT)
    assert "error" not in got, got
    assert got["welcome"]["user"] == "bob", got
    assert got["took"] >= 0.8, "welcome before the round trip was over: %r" % got
    assert _settle_failures(st) > failed_before
    bob = got["ws"]
    # NATS is back and has bob's inbox subscription (sent before the freeze was noticed)
    deadline = time.monotonic() + 10
    while True:
        st.busctl("pub", "users.bob", json.dumps({"n": 1}))
        try:
            m = bob.recv_json(1, type="event")
            break
        except TimeoutError:
            assert time.monotonic() < deadline, "bob's inbox never delivered"
    assert m["topic"] == "user" and m["data"] == {"n": 1}, m
    bob.close()
    alice.close()


def _nats_subjects(st, prefix):
    """The subjects starting with prefix that nats-server holds subscriptions on."""
    r = harness.http("GET", "http://127.0.0.1:%d/connz?subs=1&limit=1024" % st.nats_mon_port)
    assert r.status == 200, r.status
    return sorted(s for c in r.json().get("connections", [])
                  for s in c.get("subscriptions_list", []) if s.startswith(prefix))


def test_names_left_before_their_subscription_is_made(st):
    """The settler makes the subscriptions: a name whose last client leaves while it waits
    for the settler (here, behind a round stuck on a frozen NATS) is never subscribed, or is
    unsubscribed once made, and a later client of the same name gets a working one."""
    tok = st.token("alice")["access_token"]
    live = WS.connect(st.edge_url, token=tok)
    live.recv_json(5, type="welcome")
    base = st.edge_metric("sc_edge_subscriptions")
    churn = ["prices.churn%02d" % i for i in range(20)]
    st.procs["nats"].signal(signal.SIGSTOP)
    try:
        # a round that waits for the frozen NATS: what comes next queues behind it
        live.send_json({"type": "subscribe", "topic": "prices.blocker", "id": "b"})
        time.sleep(0.2)
        for t in churn:
            ws = WS.connect(st.edge_url, token=tok)
            ws.send_json({"type": "subscribe", "topic": t})
            ws.sock.close()  # gone before the welcome or the subscription
        time.sleep(0.3)
    finally:
        st.procs["nats"].signal(signal.SIGCONT)
    assert live.recv_json(10, type="subscribed")["topic"] == "prices.blocker"
    deadline = time.monotonic() + 10
    while True:
        left = _nats_subjects(st, "live.events.prices.churn")
        gauge = st.edge_metric("sc_edge_subscriptions")
        if (not left and gauge == base + 1) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert left == [], left
    assert gauge == base + 1, (gauge, base)  # the inbox and prices.blocker
    # a new client of one of those names: subscribed for real
    live.subscribe(churn[3])
    assert _nats_subjects(st, "live.events.prices.churn") == ["live.events." + churn[3]]
    st.busctl("pub", "events." + churn[3], json.dumps({"n": 7}))
    ev = live.recv_json(5, type="event", topic=churn[3])
    assert ev["data"] == {"n": 7}, ev
    live.close()
