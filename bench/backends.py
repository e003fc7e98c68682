"""bench/backends.py - what the back-end mechanisms cost (issue 19): an rpc round trip through
the edge against a bare NATS request to the same responder, and a subscribe that asks a hook
against one the token's claims decide.

Starts NATS (JetStream), Redis, auth, gateway, edge, producer and echosvc (the harness of
tests/integration), then times, one at a time, from one client on loopback:
  bare request   a NATS request to rpc.echo.who (echosvc) from a plain NATS client
  rpc via edge   {"type":"rpc","method":"echo.who"} on a WebSocket to its rpc_result
  subscribe      {"type":"subscribe"} to its "subscribed": prices.BTC by claim, and
                 orders.<id> by hook (the producer answers hooks.subscribe.orders.>; the
                 namespace remembers nothing, hook_ttl_s 0, so every subscribe asks)
Another connection holds each topic meanwhile, so a subscribe never waits for a new NATS
subscription. Medians and p99 of N operations each (N=2000 unless told); the client is
Python, so absolute figures include its own cost: read the differences and the ratios.

    /usr/bin/python3 bench/backends.py [N]     (BENCH_OUT: where backends.md goes)
"""
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
import harness  # noqa: E402
import natspub  # noqa: E402
from wsclient import WS  # noqa: E402


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p))]


def timed(n, fn):
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e6)
    return out


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    topics = os.path.join(tempfile.mkdtemp(prefix="sidecast-bench-"), "topics.json")
    with open(topics, "w") as f:
        json.dump({"namespaces": [{"prefix": "orders", "subscribe": "hook", "hook_ttl_s": 0}]},
                  f)
    st = harness.Stack("bench_backends", services=("auth", "gateway", "edge", "producer"),
                       env={"edge": {"LOG_LEVEL": "warn", "EDGE_TOPICS": topics,
                                     "EDGE_RATE_LIMIT": "100000", "EDGE_RATE_BURST": "100000"},
                            "producer": {"LOG_LEVEL": "warn"}},
                       echo_subjects=("rpc.echo.who",))
    try:
        tok = st.token("alice")["access_token"]
        r = st.gw("POST", "/api/orders", {"symbol": "BTC", "qty": 1},
                  {"Authorization": "Bearer " + tok})
        oid = r.json()["order_id"]
        claims = dict(sub_topics=("prices.*",), rpc_methods=("echo.*",))
        holder = WS.connect(st.edge_url, token=harness.mint(st, sub="alice", **claims))
        holder.recv_json(5, type="welcome")
        holder.subscribe("prices.BTC")
        holder.subscribe("orders." + oid)
        ws = WS.connect(st.edge_url, token=harness.mint(st, sub="alice", **claims))
        ws.recv_json(5, type="welcome")
        nc = natspub.Nats(st.nats_url)

        def bare():
            nc.request("rpc.echo.who", b'{"n":1}')

        seq = [0]

        def rpc():
            seq[0] += 1
            ws.send_json({"type": "rpc", "id": seq[0], "method": "echo.who", "data": {"n": 1}})
            while ws.recv_json(10).get("id") != seq[0]:
                pass

        def sub(topic):
            def once():
                ws.send_json({"type": "subscribe", "topic": topic})
                while ws.recv_json(10)["type"] != "subscribed":
                    pass
                ws.send_json({"type": "unsubscribe", "topic": topic})
                while ws.recv_json(10)["type"] != "unsubscribed":
                    pass
            return once

        timed(100, bare), timed(100, rpc)  # warm up
        res = {"bare request": timed(n, bare), "rpc via edge": timed(n, rpc),
               "subscribe + unsubscribe, claim": timed(n, sub("prices.BTC")),
               "subscribe + unsubscribe, hook": timed(n, sub("orders." + oid))}
        hooks = st.edge_metric('sc_edge_hooks_total{result="allowed"}')
        ws.close()
        holder.close()
        nc.close()
    finally:
        st.shutdown()
    med = {k: statistics.median(v) for k, v in res.items()}
    lines = ["| operation (one at a time, loopback) | median µs | p99 µs | vs its baseline |",
             "|---|---|---|---|"]
    base = {"rpc via edge": "bare request",
            "subscribe + unsubscribe, hook": "subscribe + unsubscribe, claim"}
    for k, v in res.items():
        vs = ""
        if k in base:
            vs = "+%.0f µs (%.2f ×)" % (med[k] - med[base[k]], med[k] / med[base[k]])
        lines.append("| %s | %.0f | %.0f | %s |" % (k, med[k], pct(v, 0.99), vs or "–"))
    lines.append("")
    lines.append("%d operations each; %s hook answers counted by the edge (every hooked "
                 "subscribe asked: hook_ttl_s 0)." % (n, hooks))
    text = "\n".join(lines) + "\n"
    print(text)
    out = os.environ.get("BENCH_OUT")
    if out:
        with open(os.path.join(out, "backends.md"), "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
