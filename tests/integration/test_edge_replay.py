"""Replay of missed events: subscribe {topic, since} against real NATS JetStream and the edge.

What is sent is known exactly (each event carries a counter), so every test checks the
events received for order, gaps and duplicates: replay then live with no gap and no
duplicate at the seam while events keep coming; the user inbox; history_gone with the
oldest retained position; the per-replay limit; a reader too slow for the whole replay is
paced rather than closed, but one that reads nothing is closed 4008 (its held live events
count in the outbound bound, and a stalled replay has a deadline); several replays at once.
"""
import json
import socket
import threading
import time

import harness
import natspub
from wsclient import WS

SERVICES = ("auth", "edge")
ENV = {"edge": {"EDGE_REPLAY_MAX_EVENTS": "300", "EDGE_OUTBOUND_LIMIT": "262144",
                "EDGE_RATE_LIMIT": "200", "EDGE_RATE_BURST": "400",
                "EDGE_STALL_TIMEOUT_MS": "8000"}}
STREAM = "SIDECAST"
INBOX_STREAM = "SIDECAST_INBOX"  # users.>, kept apart from topic traffic


def _connect(st, user="alice"):
    ws = WS.connect(st.edge_url, token=st.token(user)["access_token"])
    ws.recv_json(5, type="welcome")
    return ws


def _publish(nc, subject, first, count, pause=0.0, size=0):
    for n in range(first, first + count):
        body = {"n": n}
        if size:
            body["pad"] = "x" * size
        nc.pub(subject, body)
        if pause:  # spreads a live flow over a replay; nothing waits for it or times it
            time.sleep(pause)
    nc.flush()


def _collect(ws, topic, until_n, timeout=15.0):
    """Events of topic until one with data.n == until_n: [(seq, n)], plus other messages."""
    got, other = [], []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = ws.recv_json(max(0.1, deadline - time.monotonic()))
        if m.get("type") == "event" and m.get("topic") == topic:
            got.append((m["seq"], m["data"]["n"]))
            if m["data"]["n"] == until_n:
                return got, other
        else:
            other.append(m)
    raise AssertionError("timed out: %d events, last %r, other %r" % (
        len(got), got[-1:] if got else None, other[-3:]))


def _check_exact(got, first, last, what):
    ns = [n for _, n in got]
    seqs = [s for s, _ in got]
    lost = sorted(set(range(first, last + 1)) - set(ns))
    dups = len(ns) - len(set(ns))
    print("  %s: expected %d..%d, received %d, lost %d, duplicated %d"
          % (what, first, last, len(ns), len(lost), dups))
    assert not lost and not dups, (lost[:10], dups)
    assert ns == list(range(first, last + 1)), "out of order"
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "seq not increasing"


def test_replay_then_live_without_gap_or_duplicate(st):
    nc = natspub.Nats(st.nats_url)
    topic = "chat.replay1"
    a = _connect(st)
    a.subscribe(topic)
    _publish(nc, "events." + topic, 1, 20)
    got, _ = _collect(a, topic, 20)
    _check_exact(got, 1, 20, "first client")
    since = got[9][0]  # the 10th event's seq: the next client saw 1..10
    a.close()
    _publish(nc, "events." + topic, 21, 100)  # missed while away
    # live events keep coming while the replay runs, across the seam
    pub = threading.Thread(target=_publish, args=(natspub.Nats(st.nats_url),
                                                   "events." + topic, 121, 200, 0.002))
    b = _connect(st)
    pub.start()
    b.subscribe(topic, since)
    got, other = _collect(b, topic, 320)
    pub.join()
    assert not [m for m in other if m.get("type") == "error"], other
    _check_exact(got, 11, 320, "replay + live")
    b.close()
    nc.close()


def test_since_at_the_newest_event_replays_nothing(st):
    nc = natspub.Nats(st.nats_url)
    topic = "chat.replay2"
    _publish(nc, "events." + topic, 1, 5)
    last = nc.last_seq(STREAM, "events." + topic)
    ws = _connect(st)
    ws.subscribe(topic, last)
    _publish(nc, "events." + topic, 6, 3)
    got, _ = _collect(ws, topic, 8)
    _check_exact(got, 6, 8, "live after since=newest")
    ws.close()
    nc.close()


def test_inbox_replay(st):
    nc = natspub.Nats(st.nats_url)
    ws = _connect(st)
    _publish(nc, "users.alice", 1, 3)
    got, _ = _collect(ws, "user", 3)
    since = got[0][0]
    ws.close()
    _publish(nc, "users.alice", 4, 10)  # the user is away
    ws = _connect(st)
    ws.subscribe("user", since)
    _publish(nc, "users.alice", 14, 3)
    got, _ = _collect(ws, "user", 16)
    _check_exact(got, 2, 16, "inbox replay + live")
    ws.close()
    nc.close()


def test_inbox_in_order_when_live_events_come_before_the_resubscribe(st):
    """Inbox events published between welcome and the client's subscribe {user, since} are
    held, so the replay and the live flow join in order (EDGE_INBOX_HOLD_MS)."""
    nc = natspub.Nats(st.nats_url)
    _publish(nc, "users.alice", 100, 1)
    since = nc.last_seq(INBOX_STREAM, "users.alice")
    _publish(nc, "users.alice", 101, 5)  # missed while away
    ws = _connect(st)
    bus_in = st.edge_metric("sc_edge_bus_messages_total")
    _publish(nc, "users.alice", 106, 5)  # live, before the client resubscribes
    # the edge has them from NATS before the subscribe is sent
    harness.wait_for(lambda: st.edge_metric("sc_edge_bus_messages_total") >= bus_in + 5,
                     what="the 5 live inbox events on the edge")
    ws.subscribe("user", since)
    _publish(nc, "users.alice", 111, 2)
    got, _ = _collect(ws, "user", 112)
    _check_exact(got, 101, 112, "inbox: missed, live before resubscribe, live after")
    ws.close()
    # without a resubscribe the held events go out when EDGE_INBOX_HOLD_MS (0.5 s) ends.
    # The client sends nothing, so nothing else ends the hold before the edge's first ping
    # (after 25 s of silence, whose pong could): _collect's 15 s is a hang guard below that,
    # not a measure of the hold.
    ws = _connect(st)
    _publish(nc, "users.alice", 113, 1)
    got, _ = _collect(ws, "user", 113, timeout=15)
    assert [n for _, n in got] == [113], got
    ws.close()
    nc.close()


def test_history_gone_reports_oldest_then_live(st):
    nc = natspub.Nats(st.nats_url)
    topic = "chat.gone"
    _publish(nc, "events." + topic, 1, 5)
    since = nc.last_seq(STREAM, "events." + topic) - 2  # the client saw 1..3
    nc.purge(STREAM, "events." + topic)  # 4 and 5 age out before it comes back
    _publish(nc, "events." + topic, 6, 2)
    oldest = nc.last_seq(STREAM, "events." + topic) - 1  # event 6
    ws = _connect(st)
    ws.subscribe(topic, since)
    err = ws.recv_json(5, type="error")
    print("  history_gone:", err)
    assert err["code"] == "history_gone" and err["topic"] == topic, err
    assert err["oldest"] == oldest, (err, oldest)
    _publish(nc, "events." + topic, 8, 2)
    got, _ = _collect(ws, topic, 9)
    assert [n for _, n in got] == [8, 9], got  # live only: the client decides what to reload
    # and since = oldest - 1 gets everything retained
    ws2 = _connect(st)
    ws2.subscribe(topic, oldest - 1)
    got, _ = _collect(ws2, topic, 9)
    _check_exact(got, 6, 9, "retained after history_gone")
    ws.close()
    ws2.close()
    nc.close()


def test_since_beyond_the_stream_is_history_gone(st):
    ws = _connect(st)
    ws.subscribe("chat.nowhere", 10 ** 12)
    err = ws.recv_json(5, type="error")
    assert err["code"] == "history_gone" and "oldest" not in err, err
    ws.close()


def test_replay_limit_then_live(st):
    nc = natspub.Nats(st.nats_url)
    topic = "chat.long"
    _publish(nc, "events." + topic, 1, 1)
    since = nc.last_seq(STREAM, "events." + topic)
    _publish(nc, "events." + topic, 2, 400)  # over EDGE_REPLAY_MAX_EVENTS=300
    ws = _connect(st)
    ws.subscribe(topic, since)
    got, other = [], []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        m = ws.recv_json(5)
        if m.get("type") == "event":
            got.append(m["data"]["n"])
        elif m.get("type") == "error":
            other.append(m)
            break
    assert other and other[0]["code"] == "replay_limit", other
    assert got == list(range(2, 302)), (len(got), got[:3], got[-3:])
    _publish(nc, "events." + topic, 402, 2)
    got2, _ = _collect(ws, topic, 403)
    assert [n for _, n in got2] == [402, 403], got2
    ws.close()
    nc.close()


def _tcp_queued(local_port, remote_port):
    """Bytes the kernel holds for the loopback TCP socket local_port -> remote_port (its
    send queue plus its unread receive queue, from /proc/net/tcp), 0 if none."""
    with open("/proc/net/tcp") as f:
        for row in f.read().splitlines()[1:]:
            cols = row.split()
            lp, rp = (int(c.rsplit(":", 1)[1], 16) for c in cols[1:3])
            if (lp, rp) == (local_port, remote_port):
                tx, rx = (int(q, 16) for q in cols[4].split(":"))
                return tx + rx
    return 0


def test_slow_reader_is_paced_not_closed(st):
    """9 MB to replay (more than the kernel's socket buffers), 256 KB outbound bound: the
    replay waits for the socket to drain instead of overflowing the queue (close 4008)."""
    nc = natspub.Nats(st.nats_url)
    topic = "chat.slow"
    _publish(nc, "events." + topic, 1, 1)
    since = nc.last_seq(STREAM, "events." + topic)
    size = 32000
    _publish(nc, "events." + topic, 2, 280, size=size)
    replayed = st.edge_metric("sc_edge_replayed_total") or 0
    ws = _connect(st)
    ws.subscribe(topic, since)
    # Not reading until the edge has to pace: what it took from the stream for this client
    # (counted low: the pad only), less what the kernel holds on both sides of the socket
    # (read after, so counted high), is at most its own queue for it; once that reaches half
    # the bound the replay waits for it to drain (an unpaced replay would go on to the bound
    # and close the client 4008, which the checks below catch).
    port = ws.sock.getsockname()[1]

    def edge_queue():
        handed = (st.edge_metric("sc_edge_replayed_total") or 0) - replayed
        kernel = _tcp_queued(st.edge_port, port) + _tcp_queued(port, st.edge_port)
        return handed * size - kernel
    bound = int(ENV["edge"]["EDGE_OUTBOUND_LIMIT"])
    harness.wait_for(lambda: edge_queue() >= bound // 2, timeout=30,
                     what="the edge's queue for the client at half its bound")
    got, other = _collect(ws, topic, 281, timeout=60)
    assert not [m for m in other if m.get("type") == "error"], other
    _check_exact(got, 2, 281, "paced replay")
    ws.close()
    nc.close()


def _stalled_reader(st, nc, topic):
    """A client that subscribes with since to 9 MB of history and then reads nothing (a
    small receive buffer, so that the edge's queue fills instead of the kernel's)."""
    _publish(nc, "events." + topic, 1, 1)
    since = nc.last_seq(STREAM, "events." + topic)
    _publish(nc, "events." + topic, 2, 280, size=32000)
    ws = _connect(st)
    ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ws.subscribe(topic, since)
    return ws


def _slow_closes(st, why):
    """The edge's "slow client closed" lines (debug) with why=WHY, as dicts of their fields."""
    with open(st.procs["edge"].log_path, encoding="utf-8", errors="replace") as f:
        lines = [l for l in f if 'msg="slow client closed"' in l and 'why="%s"' % why in l]
    return [dict(kv.split("=", 1) for kv in l.split() if "=" in kv) for l in lines]


def _closed_by_the_edge(st, ws, before, why):
    """Waits until the edge has closed one more connection 4008 for why; returns that
    close's log fields. (What such a client reads afterwards is best effort: a peer that
    reads nothing may never see the close frame behind the frame it stopped reading.)"""
    harness.wait_for(lambda: len(_slow_closes(st, why)) > before, timeout=30,
                     what="the edge closing the client 4008 (%s)" % why)
    ws.abort()
    return _slow_closes(st, why)[-1]


def test_live_events_held_for_a_reader_count_in_its_bound(st):
    """Live events held back while a subscription catches up count in EDGE_OUTBOUND_LIMIT
    (256 KB here): 40 events of 16 kB arriving while a client that reads nothing replays are
    too many, and it is closed 4008 "too slow". They used to be held outside the bound (up
    to 256 per topic, on up to EDGE_MAX_SUBSCRIPTIONS topics), and the client was never
    closed."""
    nc = natspub.Nats(st.nats_url)
    before = len(_slow_closes(st, "too slow"))
    ws = _stalled_reader(st, nc, "chat.held")
    _publish(nc, "events.chat.held", 282, 40, size=16000)
    fields = _closed_by_the_edge(st, ws, before, "too slow")
    assert int(fields["held"]) > 0, fields  # the held events are what passed the bound
    print("  closed 4008 with %s bytes queued and %s held (bound %s)"
          % (fields["queued"], fields["held"], fields["bound"]))
    nc.close()


def test_a_stalled_replay_is_closed_4008(st):
    """A client that reads nothing while it replays, on a quiet topic, is closed 4008
    "replay stalled" after EDGE_STALL_TIMEOUT_MS (8 s here). It used to be polled every
    50 ms for ever, keeping its queue and its replay."""
    nc = natspub.Nats(st.nats_url)
    before = len(_slow_closes(st, "replay stalled"))
    ws = _stalled_reader(st, nc, "chat.stalled")
    fields = _closed_by_the_edge(st, ws, before, "replay stalled")
    print("  closed 4008 (replay stalled) with %s bytes queued" % fields["queued"])
    nc.close()


def test_many_replays_at_once(st):
    nc = natspub.Nats(st.nats_url)
    topics = ["chat.many%d" % i for i in range(8)]
    sinces = {}
    for t in topics:
        _publish(nc, "events." + t, 1, 1)
        sinces[t] = nc.last_seq(STREAM, "events." + t)
        _publish(nc, "events." + t, 2, 60)
    clients = [_connect(st) for _ in topics]
    for c, t in zip(clients, topics):
        c.subscribe(t, sinces[t])
    for c, t in zip(clients, topics):
        got, _ = _collect(c, t, 61)
        _check_exact(got, 2, 61, t)
        c.close()
    m = __import__("harness").http("GET", "http://127.0.0.1:%d/metrics" % st.edge_port)
    text = m.body.decode()
    assert "sc_edge_replays_total" in text and "sc_edge_replayed_total" in text
    nc.close()
