"""bench/sse.py - what a Server-Sent Events connection costs the edge beside a WebSocket one
(docs/SSE.md): user-space memory per idle connection, and the edge's CPU per delivered event
in a fan-out, the same client, token, topic and edge settings for both.

Starts NATS (JetStream), Redis, auth and edge (the harness of tests/integration); for each
transport (ws, then sse; the edge restarted between them, so each starts from a fresh
process) opens N connections from this one process (one token: one user, so the inbox
subscription is shared), each subscribed to prices.BTC (WebSocket: a subscribe message; SSE:
GET /sse?topic=prices.BTC), holds them 2 s and reads the edge's RSS (minus its RSS with 10
connections open); then publishes E events at R/s on events.prices.BTC and waits until every
connection has all of them, checking each got every event once, in order, and reads the
edge's CPU time (user + system, /proc/PID/stat) over that window. The client is Python on
the same 2 cores: absolute CPU figures include the batching a slow reader causes (fewer,
larger writes); read the two transports side by side.

    /usr/bin/python3 bench/sse.py [N=2000] [E=60] [R=20]   (BENCH_OUT: where sse.md goes)
"""
import json
import os
import re
import resource
import selectors
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
import harness  # noqa: E402
import natspub  # noqa: E402
import wsclient  # noqa: E402

TOPIC = "prices.BTC"
N_RE = re.compile(rb'"type":"event".*?"data":\{"n":\s*(\d+)')


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


class Streams:
    """n SSE streams read by one selector: per stream, the event counters received."""

    def __init__(self, port, token, n):
        req = ("GET /sse?topic=%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAccept: text/event-stream"
               "\r\nAuthorization: Bearer %s\r\n\r\n" % (TOPIC, port, token)).encode()
        self.socks, self.bufs, self.head, self.ready, self.ns = [], [], [], [], []
        self.sel = selectors.DefaultSelector()
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(req)
            s.setblocking(False)
            self.socks.append(s)
            self.bufs.append(b"")
            self.head.append(False)
            self.ready.append(False)
            self.ns.append([])
            self.sel.register(s, selectors.EVENT_READ, i)

    def _read(self, i):
        try:
            chunk = self.socks[i].recv(262144)
        except BlockingIOError:
            return
        if not chunk:
            raise AssertionError("stream %d ended" % i)
        buf = self.bufs[i] + chunk
        cut = buf.rfind(b"\n\n")
        if cut < 0:
            self.bufs[i] = buf
            return
        done, self.bufs[i] = buf[:cut], buf[cut + 2:]
        if not self.head[i]:
            if not done.startswith(b"HTTP/1.1 200"):
                raise AssertionError("stream %d: %r" % (i, done[:200]))
            self.head[i] = True
        if not self.ready[i]:
            self.ready[i] = b'"subscribed","topic":"%s"' % TOPIC.encode() in done
        self.ns[i].extend(int(m) for m in N_RE.findall(done))

    def pump(self, until, timeout):
        deadline = time.monotonic() + timeout
        while not until() and time.monotonic() < deadline:
            for key, _ in self.sel.select(0.2):
                self._read(key.data)
        return until()

    def close(self):
        self.sel.close()
        for s in self.socks:
            s.close()


class Sockets:
    """n WebSocket connections, the same way (wsclient's selector loop)."""

    def __init__(self, url, token, n):
        self.clients = wsclient.open_many(n, url, token=token, concurrency=64,
                                          total_timeout=300)
        got = wsclient.drain_all(self.clients, 1, 120, type="welcome")
        assert sum(len(g) for g in got) == n
        for c in self.clients:
            c.send_json({"type": "subscribe", "topic": TOPIC})
        got = wsclient.drain_all(self.clients, 1, 120, type="subscribed")
        assert sum(len(g) for g in got) == n
        self.ns = [[] for _ in self.clients]

    def pump(self, until, timeout):
        deadline = time.monotonic() + timeout
        while not until() and time.monotonic() < deadline:
            want = max(1, min(max(0, self.expect - len(x)) for x in self.ns))
            got = wsclient.drain_all(self.clients, want, min(2.0, deadline - time.monotonic()),
                                     type="event")
            for i, g in enumerate(got):
                self.ns[i].extend(m["data"]["n"] for m in g)
        return until()

    def close(self):
        wsclient.close_all(self.clients, timeout=60)


def measure(st, transport, n, events, rate):
    pid = st.procs["edge"].p.pid
    tok = st.token("bob")["access_token"]

    def open_(k):
        if transport == "sse":
            s = Streams(st.edge_port, tok, k)
            assert s.pump(lambda: all(s.ready), 120), "streams not ready"
            return s
        return Sockets(st.edge_url, tok, k)

    warm = open_(10)
    time.sleep(0.5)
    base = rss_kib(pid)
    conns = open_(n)
    time.sleep(2.0)
    per_conn = (rss_kib(pid) - base) * 1024 / n
    conns.expect = events

    def publish():
        nc = natspub.Nats(st.nats_url)
        for i in range(events):
            nc.pub("events." + TOPIC, {"n": i, "pad": "x" * 64})
            nc.flush()
            time.sleep(1.0 / rate)  # the publishing rate, not a measurement
        nc.close()

    cpu0, t0 = cpu_s(pid), time.monotonic()
    pub = threading.Thread(target=publish)
    pub.start()
    done = conns.pump(lambda: all(len(x) >= events for x in conns.ns), 120)
    cpu, took = cpu_s(pid) - cpu0, time.monotonic() - t0
    pub.join()
    total = sum(len(x) for x in conns.ns)
    exact = done and all(x == list(range(events)) for x in conns.ns)
    conns.close()
    warm.close()
    return {"transport": transport, "conns": n, "rss_per_conn_b": round(per_conn),
            "events": events, "rate": rate, "deliveries": total, "seconds": round(took, 2),
            "cpu_us_per_delivery": round(cpu * 1e6 / max(total, 1), 2), "exact": exact}


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    events = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    rate = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 256)), hard))
    st = harness.Stack("bench_sse", services=("auth", "edge"),
                       env={"edge": {"LOG_LEVEL": "warn", "EDGE_MAX_CONNECTIONS": "100000",
                                     "EDGE_PING_INTERVAL_MS": "3600000",
                                     "EDGE_SSE_HEARTBEAT_MS": "3600000",
                                     "EDGE_DEFLATE": "off"}})
    res = []
    try:
        for i, transport in enumerate(("ws", "sse")):
            if i:
                st.stop_service("edge")
                st.restart("edge")
            r = measure(st, transport, n, events, rate)
            print(json.dumps(r), flush=True)
            res.append(r)
    finally:
        st.shutdown()
    ws, sse = res
    lines = ["| transport | connections | edge RSS B/conn | events × msg/s | deliveries | "
             "edge CPU µs/delivery | every event, in order |", "|---|---|---|---|---|---|---|"]
    for r in res:
        lines.append("| %s | {:,} | {:,} | %d × %d/s | {:,} | %.2f | %s |".format(
            r["conns"], r["rss_per_conn_b"], r["deliveries"])
            % ("WebSocket (`/ws`)" if r["transport"] == "ws" else "Server-Sent Events (`/sse`)",
               r["events"], r["rate"], r["cpu_us_per_delivery"], "yes" if r["exact"] else "NO"))
    lines.append("")
    lines.append("SSE / WebSocket: memory per connection %.2f ×, CPU per delivery %.2f ×."
                 % (sse["rss_per_conn_b"] / max(ws["rss_per_conn_b"], 1),
                    sse["cpu_us_per_delivery"] / max(ws["cpu_us_per_delivery"], 0.01)))
    text = "\n".join(lines) + "\n"
    print(text)
    out = os.environ.get("BENCH_OUT")
    if out:
        with open(os.path.join(out, "sse.md"), "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
