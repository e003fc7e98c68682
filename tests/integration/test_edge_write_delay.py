"""EDGE_WRITE_DELAY_MS: events wait up to the delay so that the events after them share their
writes; a reply to the client never waits, and takes the waiting events with it.

The delay here is 5 s, so that "waited" and "did not wait" are seconds apart: the checks
are that an event is not written before most of the delay has passed (it cannot come early
however loaded the machine is) and that a reply comes well inside it."""
import json
import time

from wsclient import WS

DELAY_S = 5.0
SERVICES = ("auth", "edge")
ENV = {"edge": {"EDGE_WRITE_DELAY_MS": str(int(DELAY_S * 1000))}}


def _connect(st):
    ws = WS.connect(st.edge_url, token=st.token("alice")["access_token"])
    ws.recv_json(5, type="welcome")
    return ws


def _publish(st, topic, i):
    st.busctl("pub", "events." + topic, json.dumps({"i": i}))


def test_events_wait_for_the_delay_and_keep_their_order(st):
    ws = _connect(st)
    ws.subscribe("prices.delay")
    t0 = time.monotonic()
    for i in range(5):
        _publish(st, "prices.delay", i)
    got = []
    while len(got) < 5:
        m = ws.recv_json(DELAY_S + 10, type="event")
        got.append((m["data"]["i"], time.monotonic() - t0))
    assert [i for i, _ in got] == list(range(5)), got
    assert got[0][1] >= DELAY_S * 0.8, "written before the delay: %r" % got
    ws.close()


def test_a_reply_does_not_wait_and_takes_the_events_along(st):
    ws = _connect(st)
    ws.subscribe("prices.reply")
    other = _connect(st)
    other.subscribe("prices.reply")
    _publish(st, "prices.reply", 1)
    time.sleep(0.3)  # the event is queued (held) on both connections by now
    t0 = time.monotonic()
    ws.send_json({"type": "ping", "id": 9})
    seen = []
    while len(seen) < 2:
        seen.append(ws.recv_json(DELAY_S + 10))
    took = time.monotonic() - t0
    kinds = sorted(m["type"] for m in seen)
    assert kinds == ["event", "pong"], seen
    assert took < DELAY_S * 0.7, "the reply waited %.2f s" % took
    # the other connection's event still arrives (at the latest when the delay ends)
    assert other.recv_json(DELAY_S + 10, type="event")["data"]["i"] == 1
    ws.close()
    other.close()
