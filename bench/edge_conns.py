"""Edge benchmark: memory per idle authenticated connection, and fan-out deliveries/s.

Starts NATS (JetStream), Redis, auth and edge (tests/integration/harness.py), opens N
authenticated connections (one token, N sockets from this one process: N must stay under the
20,000 open-file limit), reads the edge's RSS before and after, then subscribes them all to
one topic and times E events fanned out to every connection, with the edge's CPU time.

    /usr/bin/python3 bench/edge_conns.py [N=10000] [E=50]
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
import harness  # noqa: E402
import wsclient  # noqa: E402


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


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    events = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    st = harness.Stack("bench_edge", services=("auth", "edge"),
                       env={"edge": {"LOG_LEVEL": "warn", "EDGE_MAX_CONNECTIONS": "100000",
                                     "EDGE_PING_INTERVAL_MS": "3600000"}})
    try:
        pid = st.procs["edge"].p.pid
        tok = st.token("bob")["access_token"]
        warm = wsclient.open_many(10, st.edge_url, token=tok)
        wsclient.drain_all(warm, 1, 10, type="welcome")
        time.sleep(0.5)
        base = rss_kib(pid)
        t0 = time.monotonic()
        clients = wsclient.open_many(n, st.edge_url, token=tok, concurrency=128,
                                     total_timeout=300)
        got = wsclient.drain_all(clients, 1, 120, type="welcome")
        assert sum(len(g) for g in got) == n
        opened = time.monotonic() - t0
        time.sleep(1.0)
        after = rss_kib(pid)
        per_conn = (after - base) * 1024 / n
        print("connections=%d open_s=%.1f rss_before_kib=%d rss_after_kib=%d "
              "bytes_per_idle_conn=%.0f" % (n, opened, base, after, per_conn), flush=True)
        for c in clients:
            c.send_json({"type": "subscribe", "topic": "prices.BTC"})
        subs = wsclient.drain_all(clients, 1, 120, type="subscribed")
        assert sum(len(s) for s in subs) == n
        cpu0, t0 = cpu_s(pid), time.monotonic()
        payload = json.dumps({"price": 1.0, "pad": "x" * 64})
        for i in range(events):
            st.busctl("pub", "events.prices.BTC", payload)
        got = wsclient.drain_all(clients, events, 300, type="event")
        el = time.monotonic() - t0
        cpu = cpu_s(pid) - cpu0
        total = sum(len(g) for g in got)
        print("events=%d deliveries=%d of %d seconds=%.2f deliveries_per_s=%.0f "
              "edge_cpu_s=%.2f edge_cpu_us_per_delivery=%.2f" % (
                  events, total, events * n, el, total / el, cpu, cpu * 1e6 / max(total, 1)),
              flush=True)
        wsclient.close_all(clients + warm, timeout=60)
    finally:
        st.shutdown()


if __name__ == "__main__":
    main()
