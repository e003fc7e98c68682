"""A new subscription is confirmed with NATS (one PING/PONG round trip, taken by the
fabric's settler thread) before its client hears "welcome" or "subscribed", and the worker
never waits for that round trip: with NATS frozen (SIGSTOP), a client whose inbox is new
waits for the round trip to fail (1 s), while a client already live on the same worker (one
worker here) gets its pong at once. Once NATS is back, the new client's inbox works."""
import json
import signal
import threading
import time

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
