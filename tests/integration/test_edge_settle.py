"""A new subscription is confirmed with NATS (one PING/PONG round trip, taken by the
fabric's settler thread) before its client hears "welcome" or "subscribed", and the worker
never waits for that round trip: with NATS frozen (SIGSTOP), a client whose inbox is new
waits for the round trip to fail, while a client already live on the same worker (one
worker here) gets its pong meanwhile. Once NATS is back, the new client's inbox works. The
tests wait for what the edge and NATS show (metrics, replies), never for a duration."""
import json
import signal
import threading

import harness
from wsclient import WS

SERVICES = ("auth", "edge")
ENV = {"edge": {"EDGE_WORKERS": "1"}}


def _settle_failures(st):
    n = st.edge_metric('sc_edge_settle_flushes_total{result="failed"}')
    assert n is not None, "no sc_edge_settle_flushes_total{result=\"failed\"}"
    return n


def test_a_frozen_nats_holds_the_new_client_not_the_worker(st):
    """Ordered by what is observed, not by durations: alice's pong comes while bob's welcome
    is still held and before the round trip has failed; bob's welcome comes after it."""
    alice = WS.connect(st.edge_url, token=st.token("alice")["access_token"])
    alice.recv_json(5, type="welcome")
    bob_token = st.token("bob")["access_token"]  # auth needs NATS: before the freeze
    failed_before = _settle_failures(st)
    conns_before = st.edge_metric("sc_edge_connections")
    got = {}

    def connect_bob():
        try:
            ws = WS.connect(st.edge_url, token=bob_token, timeout=10)
            got["welcome"] = ws.recv_json(10, type="welcome")
            got["failures_at_welcome"] = _settle_failures(st)
            got["ws"] = ws
        except Exception as e:  # reported by the main thread
            got["error"] = e

    st.procs["nats"].freeze()  # stopped before bob connects: his round trip cannot succeed
    try:
        th = threading.Thread(target=connect_bob)
        th.start()
        # bob's upgrade is in: his inbox waits for the round trip
        harness.wait_for(lambda: st.edge_metric("sc_edge_connections") > conns_before,
                         what="bob's connection on the edge")
        alice.send_json({"type": "ping", "id": 5})
        pong = alice.recv_json(5, type="pong")
        assert pong.get("id") == 5, pong
        # the worker answered while bob was still held by the pending round trip
        assert "welcome" not in got and "error" not in got, got
        assert _settle_failures(st) == failed_before, "the round trip ended before the pong"
        th.join(15)
    finally:
        st.procs["nats"].signal(signal.SIGCONT)
    assert "error" not in got, got
    assert got["welcome"]["user"] == "bob", got
    # bob's welcome waited for the round trip: by then it had failed
    assert got["failures_at_welcome"] > failed_before, got
    bob = got["ws"]
    # NATS is back and has bob's inbox subscription (sent before the freeze was noticed)
    def delivered():
        st.busctl("pub", "users.bob", json.dumps({"n": 1}))
        try:
            return bob.recv_json(1, type="event")
        except TimeoutError:
            return None
    m = harness.wait_for(delivered, timeout=10, what="bob's inbox delivering")
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
        harness.wait_for(lambda: st.edge_metric("sc_edge_subscriptions") == base + 1,
                         what="prices.blocker entered on the worker")
        conns = st.edge_metric("sc_edge_connections")
        for t in churn:
            ws = WS.connect(st.edge_url, token=tok)
            ws.send_json({"type": "subscribe", "topic": t})
            ws.sock.close()  # gone before the welcome or the subscription
        # every one of them gone on the edge too, while NATS is still frozen
        harness.wait_for(lambda: st.edge_metric("sc_edge_connections") == conns,
                         what="the churned connections closed on the edge")
    finally:
        st.procs["nats"].signal(signal.SIGCONT)
    assert live.recv_json(10, type="subscribed")["topic"] == "prices.blocker"
    harness.wait_for(lambda: not _nats_subjects(st, "live.events.prices.churn") and
                     st.edge_metric("sc_edge_subscriptions") == base + 1, timeout=10,
                     what="no churned name left subscribed, the gauge back to base + 1")
    # a new client of one of those names: subscribed for real
    live.subscribe(churn[3])
    assert _nats_subjects(st, "live.events.prices.churn") == ["live.events." + churn[3]]
    st.busctl("pub", "events." + churn[3], json.dumps({"n": 7}))
    ev = live.recv_json(5, type="event", topic=churn[3])
    assert ev["data"] == {"n": 7}, ev
    live.close()
