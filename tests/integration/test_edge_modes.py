"""The two subscription modes of sidecast.v1 against the real edge, NATS and JetStream.

since "last": the topic's latest retained event first, then live ones, with no gap and no
repeat at the seam; refused where the namespace keeps no history, and on the inbox.

mode "latest" (conflation): a client that reads nothing for a while is not closed 4008 on a
topic it subscribed to with mode "latest": while its queue is over EDGE_CONFLATE_AFTER the
newest event replaces the one waiting, and the next event it gets says how many it skipped.
Beside it, the same flow to a subscription without the mode closes its client 4008, as
before. Every event carries a counter, so each check is exact."""
import json
import os
import tempfile
import time

import harness
import natspub
import wsclient
from wsclient import WS

SERVICES = ("auth", "edge")
TOPICS = os.path.join(tempfile.mkdtemp(prefix="sidecast-modes-"), "topics.json")
with open(TOPICS, "w") as _f:
    json.dump({"namespaces": [{"prefix": "nohist", "history": False}]}, _f)
ENV = {"edge": {"EDGE_TOPICS": TOPICS, "EDGE_OUTBOUND_LIMIT": "262144",
                "EDGE_CONFLATE_AFTER": "32768"}}


def _ws(st, user="alice"):
    ws = WS.connect(st.edge_url, token=harness.mint(st, sub=user,
                                                    sub_topics=("prices.*", "nohist.*")))
    ws.recv_json(5, type="welcome")
    return ws


def _reply(ws, msg, timeout=10):
    """The answer to msg: its subscribed or its error."""
    ws.send_json(msg)
    for _ in range(50):
        r = ws.recv_json(timeout)
        if r.get("type") in ("subscribed", "error"):
            return r
    raise AssertionError("no answer to %r" % (msg,))


def _no_event(ws, topic, seconds):
    try:
        m = ws.recv_json(seconds, type="event", topic=topic)
    except (TimeoutError, AssertionError):
        return
    raise AssertionError("an event nobody asked for: %r" % (m,))


def test_since_last_hands_the_latest_event_first_then_live(st):
    nc = natspub.Nats(st.nats_url)
    empty = _ws(st)
    assert _reply(empty, {"type": "subscribe", "topic": "prices.LASTX",
                          "since": "last"})["type"] == "subscribed"
    _no_event(empty, "prices.LASTX", 1)  # nothing retained: nothing, then live
    for n in (1, 2, 3):
        nc.pub("events.prices.LAST", {"n": n})
    nc.flush()
    ws = _ws(st)
    assert _reply(ws, {"type": "subscribe", "topic": "prices.LAST",
                       "since": "last"})["type"] == "subscribed"
    first = ws.recv_json(10, type="event", topic="prices.LAST")
    assert first["data"] == {"n": 3}, first
    nc.pub("events.prices.LAST", {"n": 4})
    nc.flush()
    nxt = ws.recv_json(10, type="event", topic="prices.LAST")
    assert nxt["data"] == {"n": 4} and nxt["seq"] > first["seq"], (first, nxt)
    nc.pub("events.prices.LASTX", {"n": 9})
    nc.flush()
    assert empty.recv_json(10, type="event", topic="prices.LASTX")["data"] == {"n": 9}
    nc.close()
    for w in (empty, ws):
        w.close()
    print("  since last: seq %d (the last of 3) first, then seq %d live; an empty topic: live"
          % (first["seq"], nxt["seq"]))


def test_since_last_is_refused_where_it_cannot_be_kept(st):
    ws = _ws(st)
    r = _reply(ws, {"type": "subscribe", "topic": "nohist.a", "since": "last", "id": 1})
    assert r["type"] == "error" and r["code"] == "history_off" and r["id"] == 1, r
    r = _reply(ws, {"type": "subscribe", "topic": "user", "since": "last", "id": 2})
    assert r["type"] == "error" and r["code"] == "bad_message" and r["id"] == 2, r
    r = _reply(ws, {"type": "subscribe", "topic": "prices.A", "since": "first", "id": 3})
    assert r["type"] == "error" and r["code"] == "bad_message", r
    r = _reply(ws, {"type": "subscribe", "topic": "prices.A", "mode": "fastest", "id": 4})
    assert r["type"] == "error" and r["code"] == "bad_message", r
    assert "latest" in r["message"], r
    # the connection lives on: a good subscribe still works
    assert _reply(ws, {"type": "subscribe", "topic": "prices.A"})["type"] == "subscribed"
    ws.close()


def test_mode_latest_conflates_a_slow_reader_instead_of_closing_it(st):
    topic, total, blob = "prices.CONF", 1200, "x" * 16000
    slow = _ws(st)
    assert _reply(slow, {"type": "subscribe", "topic": topic,
                         "mode": "latest"})["type"] == "subscribed"
    plain = _ws(st)
    assert _reply(plain, {"type": "subscribe", "topic": topic})["type"] == "subscribed"
    before = st.edge_metric("sc_edge_conflated_total") or 0
    nc = natspub.Nats(st.nats_url)
    # 19 MB for two clients that read nothing: far over the kernel's buffers and the
    # 256 KiB bound
    for n in range(total):
        nc.pub("events." + topic, {"n": n, "blob": blob})
        if n % 50 == 49:
            nc.flush()
    nc.flush()
    nc.close()
    harness.wait_for(lambda: (st.edge_metric("sc_edge_conflated_total") or 0) > before,
                     timeout=30, what="the edge conflating the slow reader's events")
    # the subscription without the mode: closed 4008 as before
    code = None
    for _ in range(total + 10):
        try:
            plain.recv_message(10)
        except wsclient.ConnectionClosed as e:
            code = e.code
            break
    assert code == 4008, code
    # the one with it: every event it gets is newer than the last, the gaps are exactly
    # what it was told it skipped, and the last event arrives
    got, skipped, told = [], 0, 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        m = slow.recv_json(10, type="event", topic=topic)
        n, k = m["data"]["n"], m.get("skipped", 0)
        assert n - (got[-1] if got else -1) - 1 == k, (got[-1:], n, k)
        if k:
            told += 1
        skipped += k
        got.append(n)
        if n == total - 1:
            break
    assert got and got[-1] == total - 1, got[-5:]
    assert got == sorted(set(got)), "out of order or repeated"
    assert len(got) + skipped == total, (len(got), skipped)
    assert told > 0 and skipped > 0, (told, skipped)
    conflated = (st.edge_metric("sc_edge_conflated_total") or 0) - before
    assert conflated >= skipped, (conflated, skipped)  # every skip counted
    slow.ping(b"alive", timeout=10)  # still open
    slow.close()
    print("  %d events of 16 kB: the plain subscriber closed 4008; the latest one got %d, "
          "told of %d skipped in %d events, the last one included" % (
              total, len(got), skipped, told))
