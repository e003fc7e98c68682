#!/usr/bin/env python3
"""The gateway's concurrency figures (issue 21), run by bench/gateway.sh against the gateway
it started (routes from bench/routes.json, echosvc answering svc.bench.echo and, after one
second, svc.bench.delay). Each case is bounded in time. Writes one JSON document:

  route_vs_nats    public route requests/s over bare NATS request/reply (reqbench sending the
                   route's request: its envelope and headers), same concurrency, from
                   interleaved pairs of runs: {public_rps, bare_nats_rps (medians of the
                   pairs' sides), ratio (the median of the pairs' ratios), pair_ratios,
                   small_bare_rps (reqbench's own 36-byte request without headers, the
                   earlier baseline), ratio_vs_small, goal}
  idle             N keep-alive connections opened, each with one answered request, then
                   left idle: {opened, held (answered, and counted open by the gateway's
                   sc_gateway_connections once all are opened), open_s (time to open them:
                   an idle keep-alive connection is closed after GATEWAY_REQUEST_TIMEOUT_MS,
                   10 s, so the figure holds when open_s is below that), gateway_threads,
                   rss_per_conn_bytes ((VmRSS after - before) / held), new_client_ok,
                   new_client_ms (median of 5 fresh connections, each one GET), goal_conns,
                   goal_bytes}
  slowloris        H connections sending a request head one header byte every STEP seconds,
                   ROUNDS rounds, a legitimate client requesting meanwhile: {heads,
                   heads_open (still open at the end), rounds, step_s, client_requests,
                   client_ok, client_p50_ms, client_max_ms}
  inflight         M requests sent at once to a route whose service answers after 1 s:
                   {requests, answered_200, total_s (first send to last answer), other_route_
                   requests, other_route_ok, other_route_p50_ms, other_route_max_ms (GETs of
                   the 1-call public route while they wait)}

  gateway_goals.py --port P --pid PID --public-rps R --bare-rps B --out FILE
"""
import argparse
import http.client
import json
import resource
import selectors
import socket
import statistics
import threading
import time


def rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def threads_of(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


class Conn:
    def __init__(self, port):
        self.s = socket.socket()
        self.s.setblocking(False)
        self.s.connect_ex(("127.0.0.1", port))
        self.out, self.buf, self.answers, self.closed, self.t_done = b"", b"", [], False, 0.0

    def parse(self):
        head, sep, rest = self.buf.partition(b"\r\n\r\n")
        if not sep:
            return False
        n = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                n = int(v)
        if len(rest) < n:
            return False
        self.answers.append(int(head.split(b" ", 2)[1]))
        self.buf = rest[n:]
        self.t_done = time.monotonic()
        return True


def drive(conns, until, timeout):
    sel = selectors.DefaultSelector()
    for c in conns:
        if not c.closed:
            sel.register(c.s, selectors.EVENT_READ | (selectors.EVENT_WRITE if c.out else 0), c)
    end = time.monotonic() + timeout
    try:
        while not until() and time.monotonic() < end:
            for key, ev in sel.select(0.1):
                c = key.data
                try:
                    if ev & selectors.EVENT_WRITE and c.out:
                        c.out = c.out[c.s.send(c.out):]
                        if not c.out:
                            sel.modify(c.s, selectors.EVENT_READ, c)
                    if ev & selectors.EVENT_READ:
                        d = c.s.recv(65536)
                        if not d:
                            raise OSError("closed")
                        c.buf += d
                        while c.parse():
                            pass
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    c.closed = True
                    sel.unregister(c.s)
    finally:
        sel.close()


def get(path):
    return ("GET %s HTTP/1.1\r\nHost: bench\r\n\r\n" % path).encode()


def one_get(port, path, timeout=5.0):
    """A fresh connection, one GET: (status or 0, milliseconds)."""
    t0 = time.monotonic()
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        c.close()
        return r.status, (time.monotonic() - t0) * 1000
    except OSError:
        return 0, (time.monotonic() - t0) * 1000


def gauge(port, name):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        c.close()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def idle_case(port, pid, n):
    for _ in range(50):
        one_get(port, "/api/bench")
    before = rss_bytes(pid)
    conns = []
    t0 = time.monotonic()
    while len(conns) < n:
        part = [Conn(port) for _ in range(min(500, n - len(conns)))]
        for c in part:
            c.out = get("/api/bench")
        drive(part, lambda: all(c.answers or c.closed for c in part), 30)
        conns += part
    open_s = time.monotonic() - t0
    # what the gateway counts open (its /metrics connection included, so minus one)
    counted = gauge(port, "sc_gateway_connections")
    after = rss_bytes(pid)
    threads = threads_of(pid)
    news = [one_get(port, "/api/bench") for _ in range(5)]
    answered = sum(1 for c in conns if c.answers == [200] and not c.closed)
    held = min(answered, int(counted) - 1) if counted is not None else answered
    for c in conns:
        c.s.close()
    return {"opened": n, "held": held, "open_s": round(open_s, 2), "gateway_threads": threads,
            "rss_per_conn_bytes": round((after - before) / held) if held > 0 else None,
            "new_client_ok": all(s == 200 for s, _ in news),
            "new_client_ms": round(statistics.median(ms for _, ms in news), 2),
            "goal_conns": 10000, "goal_bytes": 8192}


def slowloris_case(port, heads, rounds, step):
    conns = [Conn(port) for _ in range(heads)]
    for c in conns:
        c.out = b"GET /api/bench HTTP/1.1\r\nHost: bench\r\n"
    drive(conns, lambda: all(not c.out or c.closed for c in conns), 30)
    results = []
    for _ in range(rounds):
        for c in conns:
            if not c.closed:
                c.out = b"X"
        drive(conns, lambda: all(not c.out or c.closed for c in conns), 10)
        t_end = time.monotonic() + step
        while time.monotonic() < t_end:
            results.append(one_get(port, "/api/bench"))
            time.sleep(0.2)
    drive(conns, lambda: False, 0.2)  # notice the closed ones
    open_ = sum(1 for c in conns if not c.closed)
    for c in conns:
        c.s.close()
    ms = [m for s, m in results if s == 200]
    return {"heads": heads, "heads_open": open_, "rounds": rounds, "step_s": step,
            "client_requests": len(results), "client_ok": len(ms),
            "client_p50_ms": round(statistics.median(ms), 2) if ms else None,
            "client_max_ms": round(max(ms), 2) if ms else None}


def inflight_case(port, n):
    conns = [Conn(port) for _ in range(n)]
    drive(conns, lambda: False, 0.3)  # connected
    other, stop = [], threading.Event()

    def poll():
        while not stop.is_set():
            other.append(one_get(port, "/api/bench"))
            time.sleep(0.05)
    for c in conns:
        c.out = get("/api/bench/delay")
    t0 = time.monotonic()
    th = threading.Thread(target=poll)
    th.start()
    drive(conns, lambda: all(c.answers or c.closed for c in conns), 20)
    stop.set()
    th.join()
    ok = [c for c in conns if c.answers == [200]]
    total = max(c.t_done for c in ok) - t0 if ok else None
    for c in conns:
        c.s.close()
    ms = [m for s, m in other if s == 200]
    return {"requests": n, "answered_200": len(ok),
            "total_s": round(total, 3) if total else None,
            "other_route_requests": len(other), "other_route_ok": len(ms),
            "other_route_p50_ms": round(statistics.median(ms), 2) if ms else None,
            "other_route_max_ms": round(max(ms), 2) if ms else None}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--public-rps", type=float, default=0)
    ap.add_argument("--bare-rps", type=float, default=0)
    ap.add_argument("--pair-ratios", default="", help="route/bare of each interleaved pair")
    ap.add_argument("--small-bare-rps", type=float, default=0)
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--heads", type=int, default=3000)
    ap.add_argument("--inflight", type=int, default=1000)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    pairs = [float(x) for x in a.pair_ratios.split()]
    if pairs:
        ratio = round(statistics.median(pairs), 3)
    else:
        ratio = round(a.public_rps / a.bare_rps, 3) if a.bare_rps else None
    doc = {"route_vs_nats": {"public_rps": a.public_rps, "bare_nats_rps": a.bare_rps,
                             "ratio": ratio, "pair_ratios": pairs,
                             "small_bare_rps": a.small_bare_rps,
                             "ratio_vs_small": (round(a.public_rps / a.small_bare_rps, 3)
                                                if a.small_bare_rps else None),
                             "goal": 0.9}}
    doc["idle"] = idle_case(a.port, a.pid, min(a.idle, hard - 1000))
    doc["slowloris"] = slowloris_case(a.port, a.heads, 3, 2.0)
    doc["inflight"] = inflight_case(a.port, a.inflight)
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(json.dumps(doc))


if __name__ == "__main__":
    main()
