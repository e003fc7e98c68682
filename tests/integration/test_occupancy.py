"""Occupancy: occupancy.<topic> {"topic","occupied","ts"} when a topic gains its first or
loses its last subscriber across all edges (presence's Redis keeps which edges hold which
topic), and presence.occupancy {"topic"} for the state now. Two real edges, one Redis; a
killed edge's topics are vacated when another edge reaps it (PRESENCE_TTL_S). The sample
producer with PRODUCER_TICK_WHEN_WATCHED=1 ticks a symbol only while it is watched."""
import json
import signal
import time

import harness
from wsclient import WS

SERVICES = ("auth", "edge", "edge2", "producer")
ENV = {"edge": {"PRESENCE_TTL_S": "3"},
       "producer": {"PRODUCER_TICK_WHEN_WATCHED": "true", "PRODUCER_TICK_MS": "200"}}


def _ws(st, edge="edge"):
    tok = harness.mint(st, sub="alice", sub_topics=("prices.*", "news.*"))
    ws = WS.connect(st.edge_url_of(edge), token=tok)
    ws.recv_json(5, type="welcome")
    return ws


def _state(st, topic):
    lines = st.busctl("req", "presence.occupancy", json.dumps({"topic": topic}), 3000)
    return json.loads(lines[-1])


class Events:
    """occupancy.> as busctl sees it, read without blocking past a deadline."""

    def __init__(self, st):
        self.p = st.busctl_bg("sub", "occupancy.news.>", 60)
        self.got = []

    def next(self, timeout=10):
        deadline = time.monotonic() + timeout * harness.SLOW
        import select
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.p.stdout], [], [], 0.2)
            if r:
                line = self.p.stdout.readline().decode().strip()
                if line:
                    subject, data = line.split(" ", 1)
                    return subject, json.loads(data)
        return None

    def none_within(self, seconds):
        return self.next(seconds / harness.SLOW) is None

    def stop(self):
        self.p.terminate()
        self.p.wait(10)


def test_first_and_last_subscriber_across_edges(st):
    ev = Events(st)
    try:
        a = _ws(st, "edge")
        a.subscribe("news.today")
        subject, e = ev.next()
        assert subject == "occupancy.news.today" and e["occupied"] is True, (subject, e)
        assert _state(st, "news.today") == {"topic": "news.today", "occupied": True, "edges": 1}
        b = _ws(st, "edge2")  # a second edge, a second watcher: no event
        b.subscribe("news.today")
        assert ev.none_within(1.0)
        assert _state(st, "news.today")["edges"] == 2
        a.send_json({"type": "unsubscribe", "topic": "news.today"})
        a.recv_json(5, type="unsubscribed")
        assert ev.none_within(1.0)  # edge2 still has one
        b.close()  # the last one goes
        subject, e = ev.next()
        assert subject == "occupancy.news.today" and e["occupied"] is False, (subject, e)
        assert _state(st, "news.today")["occupied"] is False
        a.close()
    finally:
        ev.stop()
    print("  occupied at the first subscriber (edge), silent for the second (edge2) and the "
          "first leaving, vacated when the last left")


def test_a_killed_edge_is_vacated_by_the_reaper(st):
    ev = Events(st)
    try:
        w = _ws(st, "edge2")
        w.subscribe("news.flash")
        assert ev.next()[1]["occupied"] is True
        st.kill("edge2", signal.SIGKILL)  # no clean stop: its heartbeat must run out
        w.abort()
        t0 = time.monotonic()
        subject, e = ev.next(30)
        assert subject == "occupancy.news.flash" and e["occupied"] is False, (subject, e)
        waited = time.monotonic() - t0
    finally:
        ev.stop()
        st.restart("edge2")
    print("  edge2 killed with a watcher: vacated %.1f s later (the heartbeat's TTL, then "
          "the reaper)" % waited)


def test_the_producer_ticks_only_while_watched(st):
    sub = st.busctl_bg("sub", "events.prices.SOL", 2)
    quiet = [line for line in sub.stdout.read().decode().splitlines() if line.strip()]
    sub.wait(10)
    assert quiet == ["ready"] or quiet == [], quiet  # nobody watches SOL: no ticks
    ws = _ws(st)
    ws.subscribe("prices.SOL")
    ev = ws.recv_json(10, type="event")
    assert ev["topic"] == "prices.SOL", ev
    ws.close()
    time.sleep(1.0 * harness.SLOW)  # the vacated event reaches the producer
    sub = st.busctl_bg("sub", "events.prices.SOL", 2)
    after = [line for line in sub.stdout.read().decode().splitlines() if line.strip()]
    sub.wait(10)
    assert after in (["ready"], []), after
    print("  SOL: no ticks unwatched, ticks once watched, none again after the last watcher")
