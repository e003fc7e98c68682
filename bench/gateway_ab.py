#!/usr/bin/env python3
"""Interleaved A/B of two gateway binaries on the public route (/api/bench of
bench/routes.json, answered by tests/tools/echosvc), for changes whose effect is smaller than
the machine's noise. Both gateways run at once against one nats-server (the idle one costs
nothing); each pair runs wrk against A, then against B (the order alternates between pairs),
and bench/reqbench's bare NATS request/reply once per pair. Per run it reads the gateway's
CPU time (utime + stime) and context switches (every thread's voluntary and involuntary ones,
/proc/PID/task/*/status) before and after, so that beside requests/s it reports CPU
microseconds and context switches per request, figures that depend less on the machine's
load than requests/s do. Everything on loopback; each run is bounded by wrk's duration.

  bench/gateway_ab.py A_BIN B_BIN [--pairs 5] [--seconds 3] [--conc 32] [--build build]
                      [--reqbench PATH] [--no-bare]

Prints one line per run and the medians (and ranges) of B/A.
"""
import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")


def free_ports(n):
    ss = [socket.socket() for _ in range(n)]
    for s in ss:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in ss]
    for s in ss:
        s.close()
    return ports


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def ctx_switches(pid):
    n = 0
    for t in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/status" % (pid, t)) as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        n += int(line.split()[1])
        except OSError:
            pass
    return n


def wait_ready(url, seconds=10):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def wrk(port, seconds, conc):
    out = subprocess.run(["wrk", "-t2", "-c%d" % conc, "-d%ds" % seconds,
                          "http://127.0.0.1:%d/api/bench" % port],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        sys.exit("gateway_ab: wrk saw errors:\n" + out)
    m = re.search(r"^\s*(\d+) requests in", out, re.M)
    rps = re.search(r"Requests/sec:\s*([\d.]+)", out)
    return int(m.group(1)), float(rps.group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--conc", type=int, default=32)
    ap.add_argument("--build", default=os.environ.get("BUILD", "build"))
    ap.add_argument("--no-bare", action="store_true", help="skip reqbench")
    ap.add_argument("--reqbench", help="bare NATS loop binary (default BUILD/bench/reqbench)")
    args = ap.parse_args()
    os.chdir(ROOT)
    d = tempfile.mkdtemp(prefix="gwab.")
    nats_port, pa, pb = free_ports(3)
    nats_url = "nats://127.0.0.1:%d" % nats_port
    procs = []
    try:
        procs.append(subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(nats_port)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(0.5)
        procs.append(subprocess.Popen([os.path.join(args.build, "tests/tools/echosvc"), nats_url,
                                       "svc.bench.echo"], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        subprocess.run(["bash", "scripts/gen-dev.sh", d + "/dev"], check=True,
                       stdout=subprocess.DEVNULL)
        env = dict(os.environ, NATS_URL=nats_url, LOG_LEVEL="warn", DEV_INSECURE_BUS="1",
                   JWT_PUBLIC_KEYS=d + "/dev/public.pem", GATEWAY_ROUTES="bench/routes.json")
        gws = {}
        for name, binary, port in (("A", args.a, pa), ("B", args.b, pb)):
            p = subprocess.Popen([binary], env=dict(env, GATEWAY_LISTEN="127.0.0.1:%d" % port),
                                 stdout=open("%s/%s.log" % (d, name), "w"),
                                 stderr=subprocess.STDOUT)
            procs.append(p)
            gws[name] = (p.pid, port)
            if not wait_ready("http://127.0.0.1:%d/api/bench" % port):
                sys.exit("gateway_ab: gateway %s (%s) not ready, see %s" % (name, binary, d))
        for name in gws:  # warm-up
            wrk(gws[name][1], 1, args.conc)
        res = {"A": [], "B": []}
        bare = []
        for i in range(args.pairs):
            order = ("A", "B") if i % 2 == 0 else ("B", "A")
            for name in order:
                pid, port = gws[name]
                c0, x0 = cpu_s(pid), ctx_switches(pid)
                n, rps = wrk(port, args.seconds, args.conc)
                c1, x1 = cpu_s(pid), ctx_switches(pid)
                r = (rps, (c1 - c0) * 1e6 / n, (x1 - x0) / n)
                res[name].append(r)
                print("pair %d %s: %.0f req/s, %.1f us CPU/req, %.2f ctx switches/req"
                      % (i, name, *r), flush=True)
            if not args.no_bare:
                out = subprocess.run([args.reqbench or os.path.join(args.build, "bench/reqbench"),
                                      nats_url,
                                      "svc.bench.echo", str(args.conc), str(args.seconds)],
                                     capture_output=True, text=True,
                                     timeout=args.seconds + 30).stdout
                m = re.search(r"rps=([\d.]+)", out)
                bare.append(float(m.group(1)) if m else 0.0)
                print("pair %d bare NATS: %.0f req/s" % (i, bare[-1]), flush=True)

        def summary(label, k, fmt):
            ratios = [b[k] / a[k] for a, b in zip(res["A"], res["B"]) if a[k] > 0]
            print(("%-22s A median " + fmt + ", B median " + fmt + ", B/A median %.3f "
                   "(range %.3f-%.3f)") % (label, statistics.median(x[k] for x in res["A"]),
                                           statistics.median(x[k] for x in res["B"]),
                                           statistics.median(ratios), min(ratios),
                                           max(ratios)))

        summary("requests/s:", 0, "%.0f")
        summary("CPU us/request:", 1, "%.1f")
        summary("ctx switches/request:", 2, "%.2f")
        if bare:
            for name in ("A", "B"):
                rs = [x[0] / b for x, b in zip(res[name], bare) if b > 0]
                print("%s / bare NATS (same pair): median %.3f (range %.3f-%.3f), bare median "
                      "%.0f req/s" % (name, statistics.median(rs), min(rs), max(rs),
                                      statistics.median(bare)))
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
