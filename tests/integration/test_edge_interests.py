"""The edge's table of NATS interests (services/edge/fabric.c) past its first size: one
connection holds 2,500 topics, more than twice the 1,024 buckets the table starts with, so
it doubles twice while subscriptions come in and every later lookup, delivery and removal
runs on the grown table. Events reach the topics they were published on and no other;
unsubscribing half of them removes exactly those NATS subscriptions (the
sc_edge_subscriptions gauge) and their events stop."""
import json
import time

import natspub
from wsclient import WS

N = 2500
SERVICES = ("auth", "edge")
ENV = {"edge": {"EDGE_MAX_SUBSCRIPTIONS": "3000", "EDGE_RATE_LIMIT": "100000",
                "EDGE_RATE_BURST": "100000"}}


def _gauge(st):
    n = st.edge_metric("sc_edge_subscriptions")
    assert n is not None, "no sc_edge_subscriptions"
    return n


def _wait_gauge(st, want, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        got = _gauge(st)
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def _send_all(ws, kind, topics, reply):
    """kind for every topic, in batches of 250, each batch's replies read before the next."""
    for i in range(0, len(topics), 250):
        batch = topics[i:i + 250]
        for t in batch:
            ws.send_json({"type": kind, "topic": t})
        seen = {ws.recv_json(10, type=reply)["topic"] for _ in batch}
        assert seen == set(batch), sorted(set(batch) - seen)[:5]


def _publish(nc, topics, tag):
    for t in topics:
        nc.pub("events." + t, json.dumps({"tag": tag, "topic": t}).encode())
    nc.flush()


def _events(ws, count, timeout=10):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        try:
            m = ws.recv_json(max(0.1, deadline - time.monotonic()), type="event")
        except TimeoutError:
            break
        got.append((m["topic"], m["data"]["tag"], m["data"]["topic"]))
    return got


def test_thousands_of_topics_on_one_connection(st):
    topics = ["prices.t%04d" % i for i in range(N)]
    ws = WS.connect(st.edge_url, token=st.token("alice")["access_token"])
    ws.recv_json(5, type="welcome")
    base = _wait_gauge(st, 1)  # the user's inbox
    assert base == 1, base
    _send_all(ws, "subscribe", topics, "subscribed")
    assert _wait_gauge(st, base + N) == base + N

    nc = natspub.Nats(st.nats_url)
    try:
        sample = topics[::97] + [topics[-1]]
        _publish(nc, sample, "all")
        got = _events(ws, len(sample))
        assert sorted(got) == sorted((t, "all", t) for t in sample), got[:5]

        gone, kept = topics[::2], topics[1::2]
        _send_all(ws, "unsubscribe", gone, "unsubscribed")
        assert _wait_gauge(st, base + len(kept)) == base + len(kept)
        # the first kept topic's event comes after every unsubscribed one: once it is here,
        # anything published on a removed topic would have been too
        probe = gone[::61] + [gone[-1]] + kept[::83] + [kept[-1]]
        _publish(nc, probe, "half")
        got = _events(ws, len(kept[::83]) + 1, timeout=10)
        want = sorted((t, "half", t) for t in kept[::83] + [kept[-1]])
        assert sorted(got) == want, (got[:5], want[:5])
        extra = _events(ws, 1, timeout=0.5)
        assert extra == [], extra
    finally:
        nc.close()
    ws.close()
    assert _wait_gauge(st, 0) == 0
