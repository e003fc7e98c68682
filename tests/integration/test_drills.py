"""Fault drills: two edges on a 3-node NATS cluster (stream replicas 3), clients that
reconnect, and one fault per drill while events flow.

The test publishes every event itself, through JetStream with an ack (jspub), each carrying
{"drill": id, "n": counter}, on a topic of its own (events.chat.drill.<id>) and on alice's
inbox (users.alice, topic "user"), so it knows exactly what was sent. Each drill client is a
raw WebSocket client (wsclient) holding alice's token; it subscribes to both topics with
`since` = the last seq it saw on each (at first: the stream's last sequence before the
drill), and when its connection ends it waits RECONNECT_DELAY_S (as a real client backs off)
and connects to the next edge of its list with `since` again. Every drill prints what was
sent and what each client received (count, lost, duplicated, out of order, closes, edges)
and asserts 0 lost and 0 duplicated for every client on both topics:

* drill_edge_sigkill: edge1 is killed with SIGKILL mid-stream; its clients see the TCP
  connection end (1006), reconnect to edge2 with since, and miss nothing;
* drill_edge_sigterm: edge1 gets SIGTERM; its clients get close 1001, reconnect to edge2,
  and miss nothing; edge1 exits 0;
* drill_nats_node: the NATS node edge1 is connected to (not the stream's leader) hangs for
  1 s (SIGSTOP: whatever it should forward meanwhile is lost), is killed with SIGKILL and
  restarted; no client is disconnected, and none misses an event (the edges reconnect to
  the other nodes and heal the gap in live delivery themselves);
* drill_nats_stream_leader: the node that leads the stream is killed with SIGKILL and
  restarted; publishing stalls until another node leads (the publisher retries until the
  ack), no client is disconnected, none misses an event;
* drill_redis: Redis is killed and restarted; no client is disconnected, events keep
  flowing, auth issues tokens again once Redis is back;
* drill_gateway: the gateway is killed; no client is disconnected, events keep flowing.

Until the edge replays (`subscribe {topic, since}`, issue 5) the edge drills lose the events
published while a client was away, and the NATS-node drill loses what the edge missed while
it reconnected: those drills fail with the counts printed. docs/DRILLS.md describes them.
"""
import json
import os
import signal
import subprocess
import threading
import time

import harness
import jspub
import wsclient
from wsclient import WS

NATS_CLUSTER = 3
SERVICES = ("auth", "gateway", "edge1", "edge2")
ENV = {"edge": {"EDGE_DRAIN_TIMEOUT_MS": "2000", "EDGE_CLOSE_TIMEOUT_MS": "1000",
                "EDGE_RATE_LIMIT": "200", "EDGE_RATE_BURST": "400"}}
STREAM = "SIDECAST"
INBOX_STREAM = "SIDECAST_INBOX"  # users.> apart from topic traffic
USER = "alice"
RATE = 40                 # events per second on each of the two subjects (default)
RECONNECT_DELAY_S = 0.3   # a client waits this long before it reconnects (events pile up)
SETTLE_S = 15.0           # after the last publish: time for every client to get everything
PUMP_S = 0.05


# the drill client ------------------------------------------------------------------------
class DrillClient:
    """One WebSocket client that follows seq per topic and reconnects with since."""

    def __init__(self, name, token, urls, topics, since, drill):
        self.name = name
        self.token = token
        self.urls = list(urls)         # edges in the order this client tries them
        self.at = 0                    # index in urls of the current (or next) edge
        self.topics = list(topics)
        self.drill = drill
        self.last = dict(since)   # topic -> the since of the next subscribe
        self.got = {t: [] for t in topics}       # data.n of this drill's events, wire order
        self.warm = {t: False for t in topics}   # a warm-up event (n = 0) arrived
        self.disorder = {t: 0 for t in topics}   # events whose seq was not above the last
        self.closes = []               # close codes of connections that ended
        self.edges = []                # edge ids from each welcome
        self.conn_ids = []             # conn_id from each welcome (presence)
        self.errors = []               # error messages from the edge
        self.ws = None
        self.reconnect_at = 0.0

    def connect(self):
        """Connects to the current edge or, failing that, the next ones (one round)."""
        for _ in range(len(self.urls)):
            url = self.urls[self.at]
            try:
                ws = WS.connect(url, token=self.token, timeout=3.0)
                w = ws.recv_json(3, type="welcome")
            except (OSError, wsclient.WSError, TimeoutError, AssertionError):
                self.at = (self.at + 1) % len(self.urls)
                continue
            self.ws = ws
            self.edges.append(w.get("edge"))
            self.conn_ids.append(w.get("conn_id"))
            for t in self.topics:
                ws.send_json({"type": "subscribe", "topic": t, "since": self.last[t]})
            return True
        self.reconnect_at = time.monotonic() + RECONNECT_DELAY_S
        return False

    def dropped(self):
        c = self.ws
        self.closes.append(c.close_received[0] if c.close_received else 1006)
        c.abort()
        self.ws = None
        self.at = (self.at + 1) % len(self.urls)
        self.reconnect_at = time.monotonic() + RECONNECT_DELAY_S

    def on_message(self, m):
        kind = m.get("type")
        if kind == "error":
            self.errors.append(m)
            return
        if kind != "event" or m.get("topic") not in self.last:
            return
        t, seq, data = m["topic"], m["seq"], m.get("data")
        if seq <= self.last[t]:
            self.disorder[t] += 1
        else:
            self.last[t] = seq
        if not isinstance(data, dict) or data.get("drill") != self.drill:
            return
        if data["n"] == 0:
            self.warm[t] = True
        else:
            self.got[t].append(data["n"])

    def stats(self, topic, count):
        got = self.got[topic]
        seen = set(got)
        lost = [n for n in range(1, count + 1) if n not in seen]
        return {"received": len(got), "lost": len(lost), "dup": len(got) - len(seen),
                "disorder": self.disorder[topic], "first_lost": lost[:10]}


def pump(clients, seconds=PUMP_S):
    """Reads what arrived for `seconds`, notices ended connections, reconnects the clients
    whose back-off is over."""
    live = [c for c in clients if c.ws is not None]
    if live:
        res = wsclient.drain_all([c.ws for c in live], count=1 << 30, timeout=seconds)
        for c, msgs in zip(live, res):
            for m in msgs:
                c.on_message(m)
            if c.ws.close_received is not None or c.ws.eof:
                c.dropped()
    else:
        time.sleep(seconds)
    now = time.monotonic()
    for c in clients:
        if c.ws is None and now >= c.reconnect_at:
            c.connect()


class Publisher(threading.Thread):
    """Publishes n = 1..count on every subject at RATE per second, each acked by JetStream."""

    def __init__(self, pub, subjects, count, drill, rate):
        super().__init__(daemon=True)
        self.pub, self.subjects, self.count, self.drill = pub, subjects, count, drill
        self.rate = rate
        self.sent = {s: 0 for s in subjects}
        self.error = None
        self.elapsed = 0.0
        self.halt = threading.Event()   # set: stop early (the drill failed)

    def run(self):
        t0 = time.monotonic()
        try:
            for n in range(1, self.count + 1):
                if self.halt.is_set():
                    break
                for s in self.subjects:
                    self.pub.publish(s, {"drill": self.drill, "n": n},
                                     "%s-%s-%d" % (self.drill, s, n))
                    self.sent[s] = n
                pause = t0 + n / self.rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
        except Exception as e:  # noqa: BLE001 - reported by the drill
            self.error = e
        self.elapsed = time.monotonic() - t0


# one drill -------------------------------------------------------------------------------
def run_drill(st, name, layout, actions, duration_s, prefer=None, rate=RATE):
    """Runs one drill and prints its report.

    layout: {client name: [edge names in the order the client tries them]};
    actions: [(seconds after the first publish, callable)], run in order on this thread;
    duration_s: how long events are published, `rate` per second on each subject; prefer:
    the NATS URL the publisher tries first. Returns (clients, count, topics)."""
    drill = "%s-%s" % (name, os.urandom(3).hex())
    topic = "chat.drill.%s" % drill
    topics = {topic: "events." + topic, "user": "users." + USER}
    count = int(rate * duration_s)
    pub = jspub.JSPublisher(st.nats_url, name="drill-" + name, prefer=prefer)
    clients = []
    p = None
    try:
        pub.connect()
        # each topic's seq is a position in its own stream: the inbox has one of its own
        since = {t: pub.stream_last_seq(INBOX_STREAM if t == "user" else STREAM) for t in topics}
        for cname, edges in layout.items():
            c = DrillClient(cname, st.token(USER)["access_token"],
                            [st.edge_url_of(e) for e in edges], list(topics), since, drill)
            assert c.connect(), "%s could not connect to %s" % (cname, edges)
            clients.append(c)
        st.drill_clients = clients  # for actions that look at the clients

        # warm-up: every client holds both subscriptions and has seen an event on each
        deadline = time.monotonic() + 10
        k = 0
        while not all(all(c.warm.values()) for c in clients):
            assert time.monotonic() < deadline, "warm-up: %r" % [(c.name, c.warm)
                                                                 for c in clients]
            if k % 5 == 0:
                for s in topics.values():
                    pub.publish(s, {"drill": drill, "n": 0}, "%s-%s-w%d" % (drill, s, k))
            k += 1
            pump(clients, 0.05)
        for c in clients:
            c.closes.clear()
            c.edges = c.edges[-1:]

        p = Publisher(pub, list(topics.values()), count, drill, rate)
        t0 = time.monotonic()
        p.start()
        todo = sorted(actions, key=lambda a: a[0])
        log = []
        while p.is_alive() or todo:  # bounded: the publisher ends within its retry deadlines
            assert time.monotonic() - t0 < duration_s + 60, "drill %s took too long" % name
            while todo and time.monotonic() - t0 >= todo[0][0]:
                fn = todo.pop(0)[1]
                a0 = time.monotonic()
                fn()
                log.append("  t=%.1fs %s (%.1fs)" % (a0 - t0, fn.__doc__ or fn.__name__,
                                                     time.monotonic() - a0))
            pump(clients)
        deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline:
            pump(clients)
            if all(c.ws is not None and all(c.stats(t, count)["lost"] == 0 for t in topics)
                   for c in clients):
                pump(clients, 0.3)  # anything extra (a duplicate) still on its way
                break
    finally:
        if p is not None:
            p.halt.set()
            p.join(25)
        for c in clients:
            if c.ws is not None:
                c.ws.abort()
        pub.close()

    print("drill %s (%.1fs): %d events on each of %s; publisher retries %d, reconnects %d%s"
          % (name, time.monotonic() - t0, count, ", ".join(topics.values()), pub.retries,
             pub.reconnects, "; PUBLISH ERROR %s" % p.error if p.error else ""))
    for line in log:
        print(line)
    for c in clients:
        print("  %-3s edges %-22s closes %-12s %s%s" % (
            c.name, "->".join(str(e) for e in c.edges), c.closes or "-",
            "  ".join("%s: got %d lost %d dup %d disorder %d" % (
                "user" if t == "user" else "topic", s["received"], s["lost"], s["dup"],
                s["disorder"]) + (" first lost %s" % s["first_lost"] if s["lost"] else "")
                for t, s in ((t, c.stats(t, count)) for t in topics)),
            "  errors %s" % c.errors if c.errors else ""))
    assert p.error is None, "publisher: %s" % p.error
    assert all(v == count for v in p.sent.values()), p.sent
    return clients, count, list(topics)


def assert_complete(clients, count, topics):
    bad = []
    for c in clients:
        assert not c.errors, "%s got errors %r" % (c.name, c.errors)
        for t in topics:
            s = c.stats(t, count)
            if s["lost"] or s["dup"] or s["disorder"]:
                bad.append("%s %s: lost %d dup %d disorder %d (first lost %s)" % (
                    c.name, "user" if t == "user" else "topic", s["lost"], s["dup"],
                    s["disorder"], s["first_lost"]))
    assert not bad, "; ".join(bad)


def assert_connected(clients):
    dropped = ["%s closed %s" % (c.name, c.closes) for c in clients if c.closes]
    assert not dropped, "clients were disconnected: %s" % ", ".join(dropped)


LAYOUT = {"c1": ["edge1", "edge2"], "c2": ["edge1", "edge2"], "c3": ["edge2", "edge1"]}


def _ensure_running(st, *names):
    for n in names:
        if not st.procs[n].alive():
            st.restart(n)


# the drills ------------------------------------------------------------------------------
def test_drill_edge_sigkill(st):
    def kill():
        """SIGKILL edge1"""
        st.kill("edge1", signal.SIGKILL)
    try:
        clients, count, topics = run_drill(st, "edge-sigkill", LAYOUT, [(1.5, kill)], 4.0)
    finally:
        _ensure_running(st, "edge1")
    for c in clients[:2]:
        assert c.closes == [1006] and c.edges == ["edge-1", "edge-2"], (c.name, c.closes,
                                                                         c.edges)
    assert_connected(clients[2:])
    assert_complete(clients, count, topics)


def test_drill_edge_sigterm(st):
    codes = []

    def term():
        """SIGTERM edge1 (drain)"""
        st.procs["edge1"].signal(signal.SIGTERM)

    def reap():
        """edge1 exited"""
        codes.append(st.procs["edge1"].wait_exit(10))
    try:
        clients, count, topics = run_drill(st, "edge-sigterm", LAYOUT,
                                           [(1.5, term), (3.5, reap)], 4.0)
    finally:
        _ensure_running(st, "edge1")
    assert codes == [0], "edge1 exit status after SIGTERM: %r" % codes
    for c in clients[:2]:
        assert c.closes == [1001] and c.edges == ["edge-1", "edge-2"], (c.name, c.closes,
                                                                         c.edges)
    assert_connected(clients[2:])
    assert_complete(clients, count, topics)


def stream_leader(pub):
    info = json.loads(pub.request("$JS.API.STREAM.INFO." + STREAM, b"", timeout=10))
    return (info.get("cluster") or {}).get("leader")


def move_stream_leader(st, away_from):
    """Makes a node other than `away_from` (a server name) the stream's leader, so that
    publishing goes on while that node is down and the edges on it miss live events."""
    pub = jspub.JSPublisher(st.nats_url, name="drill-stepdown")
    pub.connect()

    def moved():
        leader = stream_leader(pub)
        if leader and leader != away_from:
            return leader
        if leader:  # asks again while the old leader still holds it (an election is on)
            pub.request("$JS.API.STREAM.LEADER.STEPDOWN." + STREAM, b"", timeout=10)
        return None
    try:
        return harness.wait_for(moved, timeout=30, interval=0.5,
                                what="the stream leader away from %s" % away_from)
    finally:
        pub.close()


def test_drill_nats_node(st):
    victim = st.nats_node_of("edge1")
    assert victim, "edge1 is not connected to any NATS node"
    others = [i for i in range(1, NATS_CLUSTER + 1) if i != victim]
    leader = move_stream_leader(st, "nats%d" % victim)
    print("edge1 on nats%d, edge2 on nats%s, stream leader %s" % (
        victim, st.nats_node_of("edge2"), leader))

    def freeze():
        """SIGSTOP the NATS node of edge1 (it hangs: what it should forward is lost)"""
        st.procs["nats%d" % victim].signal(signal.SIGSTOP)

    def kill():
        """SIGKILL it"""
        st.kill_nats(victim, signal.SIGKILL)

    def restart():
        """restart it (until healthy)"""
        st.restart_nats(victim)
    try:
        clients, count, topics = run_drill(st, "nats-node", LAYOUT,
                                           [(1.5, freeze), (2.5, kill), (4.0, restart)], 6.0,
                                           prefer=st.nats_url_of(others[0]), rate=100)
    finally:
        _ensure_running(st, "nats%d" % victim)
    harness.wait_for(lambda: st.nats_node_of("edge1"), timeout=10,
                     what="edge1 connected to NATS again")
    assert_connected(clients)
    assert_complete(clients, count, topics)


def test_drill_nats_stream_leader(st):
    pub = jspub.JSPublisher(st.nats_url, name="drill-leader")
    pub.connect()
    try:
        leader = stream_leader(pub)
    finally:
        pub.close()
    assert leader, "the stream has no leader"
    victim = int(leader[len("nats"):])
    others = [i for i in range(1, NATS_CLUSTER + 1) if i != victim]
    print("stream leader %s; edge1 on nats%s, edge2 on nats%s" % (
        leader, st.nats_node_of("edge1"), st.nats_node_of("edge2")))

    def kill():
        """SIGKILL the stream leader's node"""
        st.kill_nats(victim, signal.SIGKILL)

    def restart():
        """restart it (until healthy)"""
        st.restart_nats(victim)
    try:
        clients, count, topics = run_drill(st, "nats-leader", LAYOUT,
                                           [(1.5, kill), (4.0, restart)], 5.0,
                                           prefer=st.nats_url_of(others[0]))
    finally:
        _ensure_running(st, "nats%d" % victim)
    assert_connected(clients)
    assert_complete(clients, count, topics)


def test_drill_redis(st):
    def kill():
        """SIGKILL redis"""
        st.kill_redis(signal.SIGKILL)

    def restart():
        """restart redis"""
        st.restart_redis()

    def presence_back():
        """presence.get lists every client again (edges rewrote their entries)"""
        want = sorted(c.conn_ids[-1] for c in st.drill_clients)

        def listed():
            lines = st.busctl("req", "presence.get", json.dumps({"params": {"user": USER}}),
                              2000)
            got = json.loads(lines[-1]).get("connections", [])
            return sorted(c["conn_id"] for c in got) == want
        harness.wait_for(listed, timeout=10, what="presence of every drill client")
        for e in ("edge1", "edge2"):
            r = harness.http("GET", "http://127.0.0.1:%d/readyz" % st.edge_port_of(e))
            assert r.status == 200 and "presence=ok" in r.body.decode(), r
    try:
        clients, count, topics = run_drill(st, "redis", LAYOUT, [
            (1.0, kill), (3.0, restart), (3.1, presence_back)], 4.5)
    finally:
        _ensure_running(st, "redis")
    assert_connected(clients)
    assert_complete(clients, count, topics)
    harness.wait_for(lambda: "access_token" in st.token(USER), timeout=15,
                     what="auth issuing tokens again after Redis came back")


def test_drill_gateway(st):
    def kill():
        """SIGKILL gateway"""
        st.kill_service("gateway", signal.SIGKILL)
    try:
        clients, count, topics = run_drill(st, "gateway", LAYOUT, [(1.0, kill)], 3.0)
    finally:
        _ensure_running(st, "gateway")
    assert_connected(clients)
    assert_complete(clients, count, topics)
    assert st.gw("GET", "/readyz").status == 200


def test_drill_cli_edge_sigkill(st):
    """The CLI (`sidecast listen ... --edge URL1,URL2`) is the client: edge1 is killed with
    SIGKILL mid-stream; the CLI's own reconnect logic moves to edge2 with since and its
    output holds every event of the topic and the inbox once, in order."""
    cli = os.path.join(harness.BUILD, "sidecast")
    env = dict(os.environ, SIDECAST_TOKEN_FILE=os.path.join(st.dir, "cli-drill", "token.json"),
               SIDECAST_EDGE="%s,%s" % (st.edge_url_of("edge1"), st.edge_url_of("edge2")))
    env.pop("SIDECAST_PASSWORD", None)
    out = subprocess.run([cli, "login", "--gateway", st.gateway_url, USER, "--password",
                          "wonderland"], env=env, capture_output=True, timeout=30)
    assert out.returncode == 0, out
    drill = "cli-%s" % os.urandom(3).hex()
    topic = "chat.drill.%s" % drill
    subjects = {topic: "events." + topic, "user": "users." + USER}
    p = subprocess.Popen([cli, "listen", topic, "user", "--json", "--timeout", "60"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL)
    dog = threading.Timer(90, lambda: p.poll() is None and p.kill())
    dog.daemon = True
    dog.start()
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(
        l.decode() for l in iter(p.stdout.readline, b"")), daemon=True)
    reader.start()
    pub = jspub.JSPublisher(st.nats_url, name="drill-cli")
    count = int(RATE * 4.0)
    try:
        pub.connect()
        # warm-up: the CLI holds both subscriptions once it printed an event of each
        deadline = time.monotonic() + 15
        k = 0
        while not all(any('"n":0' in l and ('"topic":"%s"' % t) in l for l in list(lines))
                      for t in subjects):
            assert time.monotonic() < deadline, "warm-up: %r" % lines[-3:]
            for s in subjects.values():
                pub.publish(s, {"drill": drill, "n": 0}, "%s-%s-w%d" % (drill, s, k))
            k += 1
            time.sleep(0.2)
        p_thread = Publisher(pub, list(subjects.values()), count, drill, RATE)
        p_thread.start()

        def mid_stream():  # the CLI has printed the run's first second on both subjects
            got = [json.loads(l) for l in list(lines)]
            return all(any(e["topic"] == t and e["data"].get("drill") == drill
                           and e["data"].get("n", 0) >= RATE for e in got) for t in subjects)
        harness.wait_for(mid_stream, timeout=30, interval=0.1, what="the CLI mid-stream")
        st.kill("edge1")  # SIGKILL; the CLI was on edge1, the first of its list
        p_thread.join(60)
        assert p_thread.error is None, p_thread.error
        deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline:
            got = [json.loads(l) for l in list(lines)]
            if all(any(e["topic"] == t and e["data"].get("n") == count for e in got)
                   for t in subjects):
                break
            time.sleep(0.2)
    finally:
        pub.close()
        p.send_signal(signal.SIGINT)
        try:
            _, err = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
        _ensure_running(st, "edge1")
    reader.join(5)
    err = err.decode()
    got = [json.loads(l) for l in lines]
    print("drill cli-edge-sigkill: %d events on each of %s" % (count, ", ".join(subjects.values())))
    bad = []
    for t in subjects:
        ns = [e["data"]["n"] for e in got if e["topic"] == t and e["data"].get("drill") == drill
              and e["data"]["n"] > 0]
        lost = sorted(set(range(1, count + 1)) - set(ns))
        dup = len(ns) - len(set(ns))
        disorder = sum(1 for a, b in zip(ns, ns[1:]) if b <= a)
        print("  cli %s: got %d lost %d dup %d disorder %d" % (
            "user" if t == "user" else "topic", len(ns), len(lost), dup, disorder))
        if lost or dup or disorder:
            bad.append("%s: lost %d (first %s) dup %d disorder %d" % (t, len(lost), lost[:5],
                                                                     dup, disorder))
    assert "reconnected to " + st.edge_url_of("edge2") in err, err[-2000:]
    assert not bad, "; ".join(bad)
