"""EDGE_WRITE_DELAY_MS: events wait up to the delay so that the events after them share their
writes; a reply to the client never waits, and takes the waiting events with it.

The delay here is 5 s. Nothing is judged by how fast it comes: the checks are the order of
what a connection receives and lower bounds only (an event is not written before most of
its delay has passed, which no load can make happen early)."""
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
    # a lower bound: held for the delay from the first event's queuing (after t0)
    assert got[0][1] >= DELAY_S * 0.8, "written before the delay: %r" % got
    ws.close()


def _key(m):
    return ("event", m["data"]["i"]) if m["type"] == "event" else (m["type"], m.get("id"))


def test_a_reply_does_not_wait_and_takes_the_events_along(st):
    """One round: event a is published, then a ping is sent, then event b. When a comes
    before the pong and b after it (a was queued when the ping was read, b was not), the
    pong took a along, and the write that carried them ended the wait: b starts a wait of
    its own and cannot come before a whole delay after it was published. A pong that waited
    for a's delay, or a write that left a's wait running, would bring b early. A round that
    raced the other way (the ping read before a was queued, or after b was) shows nothing
    and is played again."""
    ws = _connect(st)
    ws.subscribe("prices.reply")
    other = _connect(st)
    other.subscribe("prices.reply")
    orders = []
    for rnd in range(4):  # bounded: a round races the wrong way rarely
        a, b = 2 * rnd, 2 * rnd + 1
        t_a = time.monotonic()
        _publish(st, "prices.reply", a)
        ws.send_json({"type": "ping", "id": rnd})
        seen = []  # (key, arrival)

        def read(timeout):
            m = ws.recv_json(timeout)
            seen.append((_key(m), time.monotonic()))
        # b is published 0.4 delays after a, ws read meanwhile. Not a check and not a
        # synchronisation (the order received says which case a round was): it puts b
        # inside a's delay, so that an edge whose pong waited for that delay, or whose
        # write after the pong left a's wait running, would write b before b's own delay.
        read_until = t_a + 0.4 * DELAY_S
        while time.monotonic() < read_until:
            try:
                read(max(0.01, read_until - time.monotonic()))
            except TimeoutError:
                pass
        t_b = time.monotonic()
        _publish(st, "prices.reply", b)
        want = {("event", a), ("pong", rnd), ("event", b)}
        while not want <= {k for k, _ in seen}:
            read(2 * DELAY_S + 10)  # a hang guard
        keys = [k for k, _ in seen]
        assert sorted(keys) == sorted(want), seen  # nothing else on the connection
        orders.append(keys)
        if keys == [("event", a), ("pong", rnd), ("event", b)]:
            b_at = dict(seen)[("event", b)]
            assert b_at - t_b >= DELAY_S * 0.8, \
                "b came %.2f s after it was published: its wait began before the pong's " \
                "write (%r)" % (b_at - t_b, seen)
            break
        print("  round %d raced (%r), played again" % (rnd, keys))
    else:
        raise AssertionError("no round where the pong came between a and b: %r" % orders)
    # the other connection's events still arrive, in order (at the latest when the delay
    # ends)
    got = [other.recv_json(2 * DELAY_S + 10, type="event")["data"]["i"]
           for _ in range(2 * (rnd + 1))]
    assert got == list(range(2 * (rnd + 1))), got
    ws.close()
    other.close()
