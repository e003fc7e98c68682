"""The bridge (ZeroMQ ingress) against real ZeroMQ peers started here (Debian's python3-zmq:
run with /usr/bin/python3, as tests/run.sh does), real NATS JetStream and the edge: events
from a PUB socket reach a WebSocket client in order; unmapped, invalid, non-JSON and oversized
messages are counted and never published; a publisher that restarts keeps flowing (ZeroMQ
reconnects); a PULL socket takes work from a PUSH peer; Bitcoin Core-style [topic, body,
le32 sequence] messages become base64 events and their gaps are counted; the history stream
holds the bridged events (subscribe {since}); a bad route file stops the bridge with exit 2
and the entry's name."""
import atexit
import base64
import json
import os
import select
import struct
import subprocess
import tempfile
import time

import harness
from wsclient import WS

try:
    import zmq
except ImportError:  # pragma: no cover - told, not skipped: the test set includes python3-zmq
    raise ImportError("test_bridge needs python3-zmq (scripts/deps.sh all) and Debian's "
                      "/usr/bin/python3, which tests/run.sh uses") from None

PUB_PORT, PUSH_PORT, BTC_PORT = (harness.free_port() for _ in range(3))
PUB_EP = "tcp://127.0.0.1:%d" % PUB_PORT
PUSH_EP = "tcp://127.0.0.1:%d" % PUSH_PORT
BTC_EP = "tcp://127.0.0.1:%d" % BTC_PORT
MAX_MESSAGE = 4096
ROUTES = {"endpoints": [
    {"endpoint": PUB_EP, "socket": "sub", "subscribe": [""],
     "map": [{"match": "prices.*", "topic": "bridged.${1}"},
             {"match": "bad.*", "topic": "bridged.${1}"}]},
    {"endpoint": PUSH_EP, "socket": "pull", "payload": "text",
     "map": [{"match": "*", "topic": "jobs.queue"}]},
    {"endpoint": BTC_EP, "socket": "sub", "payload": "base64", "sequence": "le32",
     "map": [{"match": "hashblock", "topic": "bitcoin.hashblock"}]},
]}
# Outside the stack's directory, which the stack empties when it starts, and one per run:
# run.py imports every test module, so another run beside this one writes its own ports.
os.makedirs(os.path.join(harness.BUILD, "test-run"), exist_ok=True)
with tempfile.NamedTemporaryFile("w", prefix="test_bridge-routes-", suffix=".json",
                                 dir=os.path.join(harness.BUILD, "test-run"), delete=False) as _f:
    json.dump(ROUTES, _f)
ROUTES_PATH = _f.name
atexit.register(os.unlink, ROUTES_PATH)

SERVICES = ("edge", "bridge")
ENV = {"bridge": {"BRIDGE_ROUTES": ROUTES_PATH, "BRIDGE_MAX_MESSAGE": str(MAX_MESSAGE)}}
TOPICS = ("bridged.*", "jobs.*", "bitcoin.*")
WAIT = 10 * harness.SLOW


class Peer:
    """A ZeroMQ socket of the given type bound on a loopback port, as a publisher would."""

    def __init__(self, port, kind=zmq.PUB):
        # One context for the process, never terminated by the garbage collector: a Context
        # of its own, left to the collector with a socket the same cycle holds, blocked in
        # term() (its socket's finalizer had not run yet) in whatever test ran next, for the
        # 120 s of that test's alarm.
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(kind)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDTIMEO, 5000)  # a PUSH without peer waits this long
        self.sock.bind("tcp://127.0.0.1:%d" % port)

    def send(self, *frames):
        self.sock.send_multipart([f.encode() if isinstance(f, str) else f for f in frames])

    def close(self):
        self.sock.close(linger=0)


def _admin(st, path):
    return harness.http("GET", "http://127.0.0.1:%d%s" % (st.bridge_admin_port, path))


def _metric(st, name, **labels):
    want = name + "{" + ",".join('%s="%s"' % kv for kv in labels.items()) + "} "
    for line in _admin(st, "/metrics").body.decode().splitlines():
        if line.startswith(want):
            return int(float(line.split()[-1]))
    return 0 if labels else None


def _count(st, ep, result):
    return _metric(st, "sc_bridge_messages_total", endpoint=ep, result=result)


def _connect(st):
    ws = WS.connect(st.edge_url, token=harness.mint(st, sub_topics=TOPICS))
    ws.recv_json(5, type="welcome")
    return ws


def _prime(st, pub, ws):
    """ZeroMQ connects and subscribes in the background, and a PUB sends nothing to a peer
    whose subscription it has not seen: publish on a side topic until one arrives."""
    harness.wait_for(lambda: _metric(st, "sc_bridge_connected", endpoint=PUB_EP) == 1,
                     timeout=WAIT, what="the bridge's SUB connected")
    ws.subscribe("bridged.PRIME")
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        pub.send("prices.PRIME", json.dumps({"prime": True}))
        try:
            ws.recv_json(0.2, type="event", topic="bridged.PRIME")
            return
        except TimeoutError:
            pass
    raise AssertionError("no event through the bridge within %d s" % WAIT)


def _events(ws, topic, n):
    return [ws.recv_json(WAIT, type="event", topic=topic) for _ in range(n)]


_pub = []


def _publisher(st, ws):
    if not _pub:
        _pub.append(Peer(PUB_PORT))
    _prime(st, _pub[0], ws)
    return _pub[0]


def test_admin_port(st):
    assert _admin(st, "/healthz").status == 200
    r = _admin(st, "/readyz")
    # ready without any peer: ZeroMQ connects in the background
    assert r.status == 200 and r.json()["status"] == "ready", r
    body = _admin(st, "/metrics").body.decode()
    assert 'sc_bridge_messages_total{endpoint="%s",result="published"}' % PUB_EP in body, body
    assert 'sc_bridge_connected{endpoint="%s"}' % PUSH_EP in body, body


def test_sub_events_reach_a_websocket_in_order(st):
    ws = _connect(st)
    try:
        pub = _publisher(st, ws)
        ws.subscribe("bridged.BTC")
        before = _count(st, PUB_EP, "published")
        for i in range(50):
            pub.send("prices.BTC", json.dumps({"n": i, "price": 67000 + i}))
        got = _events(ws, "bridged.BTC", 50)
        assert [e["data"]["n"] for e in got] == list(range(50)), got
        seqs = [e["seq"] for e in got]
        assert seqs == sorted(seqs) and len(set(seqs)) == 50, seqs
        assert _count(st, PUB_EP, "published") - before >= 50
    finally:
        ws.close()


def test_unmapped_invalid_and_bad_payloads_are_counted_not_published(st):
    ws = _connect(st)
    try:
        pub = _publisher(st, ws)
        ws.subscribe("bridged.ETH")
        c0 = {r: _count(st, PUB_EP, r) for r in ("unmapped", "invalid_topic", "bad_payload")}
        sub = st.busctl_bg("sub", "events.>", 30 * harness.SLOW)
        seen = b""
        try:
            pub.send("weather.paris", json.dumps({"t": 20}))   # no rule
            pub.send("bad.x/y", json.dumps({"t": 1}))          # "/" is no topic character
            pub.send("prices." + "x" * 130, json.dumps({}))    # longer than a topic may be
            pub.send("prices.ETH", "not json")                 # payload json, body is not
            pub.send("prices.ETH", json.dumps({"marker": 1}))
            ev = ws.recv_json(WAIT, type="event", topic="bridged.ETH")
            assert ev["data"] == {"marker": 1}, ev
            harness.wait_for(lambda: _count(st, PUB_EP, "bad_payload") == c0["bad_payload"] + 1,
                             timeout=WAIT, what="bad_payload counted")
            assert _count(st, PUB_EP, "unmapped") == c0["unmapped"] + 1
            assert _count(st, PUB_EP, "invalid_topic") == c0["invalid_topic"] + 2
            # the marker reaches busctl too, on its own thread: wait for it (bounded) before
            # stopping busctl, or a loaded machine loses the race
            deadline = time.monotonic() + WAIT
            while b'{"marker": 1}' not in seen and time.monotonic() < deadline:
                if select.select([sub.stdout], [], [], 0.2)[0]:
                    chunk = os.read(sub.stdout.fileno(), 65536)
                    if not chunk:
                        break
                    seen += chunk
        finally:
            sub.terminate()
            out = (seen + sub.communicate(timeout=5)[0]).decode()
        # what reached NATS: the marker (and primes), nothing of the dropped ones
        assert 'events.bridged.ETH {"marker": 1}' in out, out
        assert "weather" not in out and "not json" not in out and '"t"' not in out, out
    finally:
        ws.close()


def test_oversized_messages_are_dropped_and_counted(st):
    ws = _connect(st)
    try:
        pub = _publisher(st, ws)
        ws.subscribe("bridged.SOL")
        before = _count(st, PUB_EP, "too_large")
        pub.send("prices.SOL", json.dumps({"blob": "x" * MAX_MESSAGE}))
        pub.send("prices.SOL", json.dumps({"blob": "y" * (MAX_MESSAGE - 100)}))
        ev = ws.recv_json(WAIT, type="event", topic="bridged.SOL")
        assert ev["data"]["blob"].startswith("y"), str(ev)[:100]
        assert _count(st, PUB_EP, "too_large") == before + 1
    finally:
        ws.close()


def test_a_restarted_publisher_keeps_flowing(st):
    ws = _connect(st)
    try:
        _publisher(st, ws)
        _pub.pop().close()
        harness.wait_for(lambda: _metric(st, "sc_bridge_connected", endpoint=PUB_EP) == 0,
                         timeout=WAIT, what="the bridge saw the publisher go")
        assert _metric(st, "sc_bridge_disconnects_total", endpoint=PUB_EP) >= 1
        pub = _publisher(st, ws)  # a new publisher on the same address; ZeroMQ reconnects
        ws.subscribe("bridged.ADA")
        for i in range(10):
            pub.send("prices.ADA", json.dumps({"n": i}))
        assert [e["data"]["n"] for e in _events(ws, "bridged.ADA", 10)] == list(range(10))
    finally:
        ws.close()


def test_the_history_stream_replays_bridged_events(st):
    ws = _connect(st)
    try:
        pub = _publisher(st, ws)
        ws.subscribe("bridged.DOT")
        for i in range(8):
            pub.send("prices.DOT", json.dumps({"n": i}))
        got = _events(ws, "bridged.DOT", 8)
    finally:
        ws.close()
    late = _connect(st)
    try:
        late.subscribe("bridged.DOT", since=got[2]["seq"])
        again = _events(late, "bridged.DOT", 5)
        assert [e["data"]["n"] for e in again] == [3, 4, 5, 6, 7], again
        assert [e["seq"] for e in again] == [e["seq"] for e in got[3:]]
    finally:
        late.close()


def test_a_pull_socket_takes_work_from_a_push_peer(st):
    ws = _connect(st)
    push = Peer(PUSH_PORT, zmq.PUSH)
    try:
        ws.subscribe("jobs.queue")
        # a PUSH keeps its messages until the bridge's PULL has connected: nothing to prime
        for i in range(20):
            push.send("job %d \xe9" % i)
        got = _events(ws, "jobs.queue", 20)
        assert [e["data"] for e in got] == ["job %d \xe9" % i for i in range(20)], got
        assert _count(st, PUSH_EP, "published") == 20
        assert _metric(st, "sc_bridge_connected", endpoint=PUSH_EP) == 1
    finally:
        push.close()
        ws.close()


def test_bitcoin_style_messages_become_base64_events_and_gaps_are_counted(st):
    ws = _connect(st)
    pub = Peer(BTC_PORT)
    try:
        ws.subscribe("bitcoin.hashblock")
        harness.wait_for(lambda: _metric(st, "sc_bridge_connected", endpoint=BTC_EP) == 1,
                         timeout=WAIT, what="the bridge's SUB connected")
        body = bytes(range(32))
        seq = 0
        deadline = time.monotonic() + WAIT
        while True:  # until the subscription has reached the publisher
            pub.send("hashblock", body, struct.pack("<I", seq))
            seq += 1
            try:
                first = ws.recv_json(0.2, type="event", topic="bitcoin.hashblock")
                break
            except TimeoutError:
                assert time.monotonic() < deadline, "no hashblock event"
        assert first["data"] == base64.b64encode(body).decode(), first
        time.sleep(0.3)
        while True:  # what the last tries of the loop sent
            try:
                ws.recv_json(0.2, type="event", topic="bitcoin.hashblock")
            except TimeoutError:
                break
        gaps = _metric(st, "sc_bridge_sequence_gaps_total", endpoint=BTC_EP)
        pub.send("hashblock", b"a", struct.pack("<I", seq))
        pub.send("hashblock", b"b", struct.pack("<I", seq + 3))  # two missing
        got = _events(ws, "bitcoin.hashblock", 2)
        assert [e["data"] for e in got] == ["YQ==", "Yg=="], got
        assert _metric(st, "sc_bridge_sequence_gaps_total", endpoint=BTC_EP) == gaps + 2
    finally:
        pub.close()
        ws.close()


def _run_bridge(st, routes_text, **env):
    path = os.path.join(st.dir, "bad-routes.json")
    with open(path, "w") as f:
        f.write(routes_text)
    e = dict(os.environ, **st.service_env("bridge"))
    e.update(BRIDGE_ROUTES=path, ADMIN_LISTEN="127.0.0.1:0", **env)
    return subprocess.run([os.path.join(harness.BUILD, "bridge")], env=e, capture_output=True,
                          timeout=10 * harness.SLOW, stdin=subprocess.DEVNULL)


def test_a_bad_route_file_exits_2_naming_the_entry(st):
    ok_ep = {"endpoint": "tcp://127.0.0.1:1", "socket": "sub",
             "map": [{"match": "a", "topic": "a"}]}
    cases = [
        ("{not json", b"not JSON"),
        (json.dumps({"endpoints": []}), b"endpoints: must be an array"),
        (json.dumps({"endpoints": [ok_ep, dict(ok_ep, socket="dealer")]}),
         b"endpoints[1].socket"),
        (json.dumps({"endpoints": [dict(ok_ep, map=[{"match": "a", "topic": "a..b"}])]}),
         b"endpoints[0].map[0].topic"),
        (json.dumps({"endpoints": [dict(ok_ep, map=[{"match": "a", "topic": "x.${1}"}])]}),
         b"${1} needs a prefix match"),
        (json.dumps({"endpoints": [dict(ok_ep, endpoint="udp://x:1")]}),
         b"endpoints[0].endpoint"),
        (json.dumps({"endpoints": [dict(ok_ep, socket="pull", subscribe=["a"])]}),
         b"endpoints[0].subscribe"),
        (json.dumps({"endpoints": [dict(ok_ep, paylod="json")]}), b'unknown key "paylod"'),
    ]
    for text, want in cases:
        r = _run_bridge(st, text)
        assert r.returncode == 2, (text, r.returncode, r.stderr)
        assert b"BRIDGE_ROUTES" in r.stderr and want in r.stderr, (text, r.stderr)
    r = _run_bridge(st, json.dumps({"endpoints": [ok_ep]}), BRIDGE_MAX_MESSAGE="2000000")
    assert r.returncode == 2 and b"BRIDGE_MAX_MESSAGE" in r.stderr, r.stderr


def _env_file(path):
    with open(path) as f:
        return dict(line.strip().split("=", 1) for line in f
                    if "=" in line and not line.startswith("#"))


def test_the_bridge_user_of_the_permission_table_may_publish_events(st):
    """nats-server with deploy/config/nats-auth.conf and the passwords gen-dev.sh made (the
    bridge's among them): the bridge connects as its own user, without DEV_INSECURE_BUS, and
    what it publishes on events.<topic> draws no permission error."""
    port, mon, zport = harness.free_port(), harness.free_port(), harness.free_port()
    conf = os.path.join(harness.ROOT, "deploy", "config", "nats-auth.conf")
    st.procs["nats-bridgeauth"] = harness.Proc("nats-bridgeauth", [
        "nats-server", "-c", conf, "-a", "127.0.0.1", "-p", str(port), "-m", str(mon)],
        _env_file(os.path.join(st.keys, "nats.env")), st.dir)
    harness.wait_for(lambda: harness.http("GET", "http://127.0.0.1:%d/healthz" % mon,
                                          timeout=1).status == 200, what="nats with auth")
    routes = os.path.join(st.dir, "auth-routes.json")
    with open(routes, "w") as f:
        json.dump({"endpoints": [{"endpoint": "tcp://127.0.0.1:%d" % zport, "socket": "sub",
                                  "map": [{"match": "t", "topic": "bridged.auth"}]}]}, f)
    admin = harness.free_port()
    env = _env_file(os.path.join(st.keys, "bridge.env"))
    assert env["NATS_USER"] == "bridge" and env["NATS_PASSWORD"], env.keys()
    env.update(NATS_URL="nats://127.0.0.1:%d" % port, BRIDGE_ROUTES=routes, LOG_LEVEL="debug",
               ADMIN_LISTEN="127.0.0.1:%d" % admin)
    st.procs["bridge-auth"] = harness.Proc("bridge-auth", [os.path.join(harness.BUILD, "bridge")],
                                           env, st.dir)
    url = "http://127.0.0.1:%d" % admin
    harness.wait_for(lambda: harness.http("GET", url + "/readyz", timeout=1).status == 200,
                     timeout=WAIT, what="the bridge ready on the secured NATS")
    pub = Peer(zport)
    try:
        deadline = time.monotonic() + WAIT

        def published():
            for line in harness.http("GET", url + "/metrics").body.decode().splitlines():
                if line.startswith("sc_bridge_messages_total{") and 'result="published"' in line:
                    return int(line.split()[-1])
            return 0
        while published() < 3:
            assert time.monotonic() < deadline, "nothing published through the secured bus"
            pub.send("t", "{}")
            time.sleep(0.1)
        time.sleep(0.5)  # a refused publish comes back as an asynchronous -ERR
        body = harness.http("GET", url + "/metrics").body.decode()
        errors = [ln for ln in body.splitlines() if ln.startswith("sc_nats_errors_total")]
        assert errors and all(ln.split()[-1] == "0" for ln in errors), errors
    finally:
        pub.close()
    assert st.procs["bridge-auth"].stop() == 0
