#!/usr/bin/env python3
"""bench/report.py - renders docs/BENCHMARKS.md and docs/img/*.png from one `make bench` run.

  python3 bench/report.py OUT [--template bench/BENCHMARKS.md.in] [--page docs/BENCHMARKS.md]
                              [--img docs/img] [--tls-only]

OUT is bench/run.sh's output directory: results.jsonl (one line per case and run, written by
bench/edge.sh from `sidecast bench --json`), hist/ (latency histograms), gateway.md (the
gateway table), machine.txt (facts about the machine). Every figure is the median of the runs
of its case. The template holds the hand-written prose; @@NAME@@ markers are replaced by the
tables generated here. Plots are drawn with gnuplot (skipped, with a note, if it is missing).
--tls-only renders only the template's TLS section (between the tls:begin and tls:end
comments) from OUT and puts it into the existing page in place of its TLS section (or before
"## Gateway route overhead"), leaving every other table as it was: for a run of the TLS cases
alone (with the plain cases they are compared with). The section says which run it is from.
Python 3 standard library only.
"""
import argparse
import collections
import json
import os
import re
import shutil
import statistics
import subprocess
import sys

TARGETS = ["sidecast", "nats", "ws"]
NAMES = {"sidecast": "Sidecast edge", "nats": "nats-server (WebSocket)", "ws": "Node ws"}


def load(out):
    runs = collections.defaultdict(list)
    with open(os.path.join(out, "results.jsonl")) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            d = json.loads(line)
            runs[d["case"]].append(d["result"])
    return runs


def med(rows, key, default=None):
    v = [r[key] for r in rows if key in r and r[key] is not None]
    if not v:
        return default
    return statistics.median(v)


def srv_cpu(r, i):
    s = r.get("servers") or []
    return s[i]["cpu_s"] if len(s) > i else None


def fmt(v, spec="{:,.0f}", none="–"):
    if v is None:
        return none
    return spec.format(v)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fr(v):
    return "–" if v is None else "%.2f" % v


def cases_of(runs, target, mode):
    out = []
    for case in runs:
        p = case.split()
        if p[0] == target and p[1] == mode:
            out.append(case)
    return out


def idle_table(runs):
    sizes = sorted({int(c.split()[2]) for c in runs if c.split()[1] == "idle"})
    lines = ["| connections | " + " | ".join(NAMES[t] + " B/conn" for t in TARGETS)
             + " | Sidecast / nats | Sidecast / Node | all ready |",
             "|---|" + "---|" * (len(TARGETS) + 3)]
    data = {}
    for n in sizes:
        vals = {}
        ok = True
        for t in TARGETS:
            rows = runs.get("%s idle %d" % (t, n), [])
            vals[t] = med(rows, "rss_per_conn_b")
            ok = ok and bool(rows) and all(r["ready"] == r["conns"] for r in rows)
            rssd = med(rows, "rss_delta_kib")
            data.setdefault(t, []).append((n, rssd))
        lines.append("| %s | %s | %s | %s | %s |" % (
            fmt(n), " | ".join(fmt(vals[t]) for t in TARGETS),
            fr(ratio(vals["sidecast"], vals["nats"])), fr(ratio(vals["sidecast"], vals["ws"])),
            "yes" if ok else "no"))
    return "\n".join(lines), data, sizes


def fanout_rows(runs):
    keys = set()
    for c in runs:
        p = c.split()
        if p[1] == "fanout":
            keys.add((int(p[2]), int(p[3])))
    return sorted(keys)


def fanout_table(runs):
    lines = ["| subscribers × msg/s | server | deliveries/s | server CPU µs/delivery | "
             "+ its NATS µs/delivery | server CPU % of a core | loss | p50 / p99 / p99.9 ms | "
             "in the socket: p50 / p99 ms | every event, in order |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    ratios = []
    cpu = {}
    for n, rate in fanout_rows(runs):
        per = {}
        for t in TARGETS:
            rows = runs.get("%s fanout %d %d" % (t, n, rate), [])
            if not rows:
                continue
            dl = [r.get("deliveries") or 0 for r in rows]
            both = [((srv_cpu(r, 0) or 0) + (srv_cpu(r, 1) or 0)) * 1e6 / r["deliveries"]
                    for r in rows if r.get("deliveries") and len(r.get("servers") or []) > 1]
            per[t] = {
                "dps": med(rows, "deliveries_per_s"),
                "us": med(rows, "cpu_us_per_delivery"),
                "us2": statistics.median(both) if both else None,
                "pct": med(rows, "server_cpu_pct"),
                "loss": med(rows, "loss"),
                "p50": med(rows, "lat_p50_ms"), "p99": med(rows, "lat_p99_ms"),
                "p999": med(rows, "lat_p999_ms"),
                "k50": med(rows, "lat_sock_p50_ms"), "k99": med(rows, "lat_sock_p99_ms"),
                "ok": all(r.get("complete") for r in rows),
                "exp": med(rows, "expected"), "dl": statistics.median(dl),
            }
            if n >= 100:  # one subscriber: fixed costs, not a delivery's (latency only)
                cpu.setdefault(t, []).append((n, rate, per[t]["us"]))
        for t in TARGETS:
            if t not in per:
                continue
            p = per[t]
            lines.append("| %s × %s | %s | %s | %s | %s | %s | %s | %s / %s / %s | %s / %s | %s |"
                         % (fmt(n), fmt(rate), NAMES[t], fmt(p["dps"]), fmt(p["us"], "{:.2f}"),
                            fmt(p["us2"], "{:.2f}") if t != "nats" else "(is NATS)",
                            fmt(p["pct"]), fmt(p["loss"]), fmt(p["p50"], "{:.2f}"),
                            fmt(p["p99"], "{:.2f}"), fmt(p["p999"], "{:.2f}"),
                            fmt(p["k50"], "{:.2f}"), fmt(p["k99"], "{:.2f}"),
                            "yes" if p["ok"] else "no"))
        s, na, w = per.get("sidecast"), per.get("nats"), per.get("ws")
        ratios.append((n, rate, s and na and ratio(s["us"], na["us"]),
                       s and w and ratio(s["us"], w["us"]),
                       s and na and ratio(s["us2"], na["us"])))
    rl = ["| subscribers × msg/s | Sidecast / nats-server CPU per delivery (edge alone) | "
          "(edge + its NATS) | Sidecast / Node ws |", "|---|---|---|---|"]
    for n, rate, a, b, c in ratios:
        rl.append("| %s × %s | %s | %s | %s |" % (fmt(n), fmt(rate), fr(a), fr(c), fr(b)))
    return "\n".join(lines), "\n".join(rl), cpu, ratios


def deflate_table(runs):
    """The edge's fan-outs with every client on permessage-deflate, beside the same case with
    plain frames (same run)."""
    lines = ["| subscribers × msg/s | frames | compressed frames received | server CPU "
             "µs/delivery | p50 / p99 ms | every event, in order |", "|---|---|---|---|---|---|"]
    found = False
    for case in sorted(runs):
        p = case.split()
        if p[0] != "sidecast" or p[1] != "fanout-deflate":
            continue
        found = True
        n, rate = int(p[2]), int(p[3])
        for label, rows in (("plain", runs.get("sidecast fanout %d %d" % (n, rate), [])),
                            ("permessage-deflate", runs[case])):
            if not rows:
                continue
            lines.append("| %s × %s | %s | %s | %s | %s / %s | %s |" % (
                fmt(n), fmt(rate), label, fmt(med(rows, "compressed_frames") or 0),
                fmt(med(rows, "cpu_us_per_delivery"), "{:.2f}"),
                fmt(med(rows, "lat_p50_ms"), "{:.2f}"), fmt(med(rows, "lat_p99_ms"), "{:.2f}"),
                "yes" if all(r.get("complete") for r in rows) else "no"))
    return "\n".join(lines) if found else "(no permessage-deflate case in this run)"


def writes_per_delivery(rows):
    """The edge's write system calls per delivery (its whole life's writes, handshakes and
    replies included, over the case's deliveries), median over runs."""
    v = [r["edge_writes"] / r["deliveries"] for r in rows
         if r.get("edge_writes") is not None and r.get("deliveries")]
    return statistics.median(v) if v else None


def delay_table(runs):
    """The edge's fan-outs with EDGE_WRITE_DELAY_MS or with its busy hold off, beside the same
    case as by default (busy hold on, no delay) and nats-server's (same run)."""
    lines = ["| subscribers × msg/s | server | writes held | server CPU µs/delivery | "
             "vs nats-server | writes per delivery | p50 / p99 / p99.9 ms | "
             "every event, in order |",
             "|---|---|---|---|---|---|---|---|"]
    found = {}
    for case in runs:
        p = case.split()
        if p[0] != "sidecast":
            continue
        if p[1].startswith("fanout-delay-"):
            label = "fixed %s ms (`EDGE_WRITE_DELAY_MS`)" % p[1][len("fanout-delay-"):]
        elif p[1] == "fanout-nohold":
            label = "never (`EDGE_BUSY_HOLD_MAX_MS=0`)"
        else:
            continue
        found.setdefault((int(p[2]), int(p[3])), []).append((label, case))
    for (n, rate), variants in sorted(found.items()):
        nats = runs.get("nats fanout %d %d" % (n, rate), [])
        ncpu = med(nats, "cpu_us_per_delivery") if nats else None
        rowsets = [("Sidecast edge", "while busy (default)",
                    runs.get("sidecast fanout %d %d" % (n, rate), []))]
        rowsets += [("Sidecast edge", label, runs[case]) for label, case in sorted(variants)]
        rowsets.append(("nats-server (WebSocket)", "—", nats))
        for server, label, rows in rowsets:
            if not rows:
                continue
            cpu = med(rows, "cpu_us_per_delivery")
            ratio = "%.2f" % (cpu / ncpu) if cpu is not None and ncpu else "—"
            wpd = writes_per_delivery(rows) if server != "nats-server (WebSocket)" else None
            lines.append("| %s × %s | %s | %s | %s | %s | %s | %s / %s / %s | %s |" % (
                fmt(n), fmt(rate), server, label, fmt(cpu, "{:.2f}"), ratio,
                fmt(wpd, "{:.2f}") if wpd is not None else "—",
                fmt(med(rows, "lat_p50_ms"), "{:.2f}"), fmt(med(rows, "lat_p99_ms"), "{:.2f}"),
                fmt(med(rows, "lat_p999_ms"), "{:.2f}"),
                "yes" if all(r.get("complete") for r in rows) else "no"))
    return "\n".join(lines) if found else "(no write-delay or busy-hold case in this run)"


def connect_table(runs):
    lines = ["| server | tokens | connections | handshakes/s (wall) | per server CPU second | "
             "handshake p50 / p99 ms | all ready |", "|---|---|---|---|---|---|---|"]
    res = {}
    order = {t: i for i, t in enumerate(TARGETS)}
    for case in sorted(runs, key=lambda c: (order.get(c.split()[0], 9), c)):
        p = case.split()
        if p[1] != "connect":
            continue
        rows = runs[case]
        kind = {"distinct": "distinct ES256 (each verified)",
                "distinct-rs256": "distinct RS256 (each verified)",
                "one": "one shared (cached)", "-": "none (no auth)"}[p[3]]
        hps, hpc = med(rows, "handshakes_per_s"), med(rows, "handshakes_per_cpu_s")
        res[(p[0], p[3])] = (hps, hpc)
        lines.append("| %s | %s | %s | %s | %s | %s / %s | %s |" % (
            NAMES[p[0]], kind, fmt(int(p[2])), fmt(hps), fmt(hpc),
            fmt(med(rows, "lat_p50_ms"), "{:.1f}"), fmt(med(rows, "lat_p99_ms"), "{:.1f}"),
            "yes" if all(r["ready"] == r["conns"] for r in rows) else "no"))
    return "\n".join(lines), res


def tls_connect_table(runs):
    """Handshakes/s over wss://, full and resumed, beside the same server's plain handshakes
    (the edge: one shared, cached token, so the token costs what it costs once cached)."""
    lines = ["| server | handshake | connections | resumed | handshakes/s (wall) | per server CPU "
             "second | vs plain (per CPU s) | handshake p50 / p99 ms | all ready |",
             "|---|---|---|---|---|---|---|---|---|"]
    per = {}
    for t in ("sidecast", "nats"):
        tok = "one" if t == "sidecast" else "-"
        for mode, label in (("connect", "plain (ws://)"), ("connect-tls", "TLS, full"),
                            ("connect-tls-resumed", "TLS, resumed")):
            cases = [c for c in runs if c.split()[0] == t and c.split()[1] == mode
                     and c.split()[3] == tok]
            if not cases:
                continue
            rows = runs[cases[0]]
            n = int(cases[0].split()[2])
            hpc = med(rows, "handshakes_per_cpu_s")
            per[(t, mode)] = hpc
            base = per.get((t, "connect"))
            res = "–" if mode == "connect" else "%s of %s" % (
                fmt(med(rows, "tls_resumed")), fmt(n))
            lines.append("| %s | %s | %s | %s | %s | %s | %s | %s / %s | %s |" % (
                NAMES[t], label, fmt(n), res, fmt(med(rows, "handshakes_per_s")), fmt(hpc),
                "1.00" if mode == "connect" else fr(ratio(hpc, base)),
                fmt(med(rows, "lat_p50_ms"), "{:.1f}"), fmt(med(rows, "lat_p99_ms"), "{:.1f}"),
                "yes" if all(r["ready"] == r["conns"] for r in rows) else "no"))
    return "\n".join(lines), per


def tls_fanout_table(runs):
    """CPU per delivery over wss:// beside ws:// (same run), the edge beside nats-server."""
    lines = ["| subscribers × msg/s | server | transport | deliveries/s | server CPU µs/delivery | "
             "TLS / plain | Sidecast / nats-server | loss | p50 / p99 ms | every event, in order |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(int(c.split()[2]), int(c.split()[3])) for c in runs
                   if c.split()[1] == "fanout-tls"})
    out = {}
    for n, rate in keys:
        us = {}
        for kind in ("fanout", "fanout-tls"):
            for t in ("sidecast", "nats"):
                rows = runs.get("%s %s %d %d" % (t, kind, n, rate), [])
                us[(t, kind)] = med(rows, "cpu_us_per_delivery") if rows else None
        out[(n, rate)] = us
        for t in ("sidecast", "nats"):
            for kind, label in (("fanout", "ws://"), ("fanout-tls", "wss://")):
                rows = runs.get("%s %s %d %d" % (t, kind, n, rate), [])
                if not rows:
                    continue
                vs_nats = (fr(ratio(us[(t, kind)], us[("nats", kind)])) if t == "sidecast"
                           else "1.00")
                lines.append("| %s × %s | %s | %s | %s | %s | %s | %s | %s | %s / %s | %s |" % (
                    fmt(n), fmt(rate), NAMES[t], label, fmt(med(rows, "deliveries_per_s")),
                    fmt(us[(t, kind)], "{:.2f}"),
                    "1.00" if kind == "fanout" else fr(ratio(us[(t, kind)], us[(t, "fanout")])),
                    vs_nats, fmt(med(rows, "loss")), fmt(med(rows, "lat_p50_ms"), "{:.2f}"),
                    fmt(med(rows, "lat_p99_ms"), "{:.2f}"),
                    "yes" if all(r.get("complete") for r in rows) else "no"))
    return ("\n".join(lines) if keys else "(no wss:// fan-out case in this run)"), out


def tls_idle_table(runs):
    """RSS per idle connection over wss:// beside ws:// (same run, same sizes)."""
    sizes = sorted({int(c.split()[2]) for c in runs if c.split()[1] == "idle-tls"})
    lines = ["| connections | Sidecast edge ws:// B/conn | wss:// B/conn | TLS / plain | "
             "nats-server ws:// B/conn | wss:// B/conn | TLS / plain | all ready |",
             "|---|---|---|---|---|---|---|---|"]
    out = []
    for n in sizes:
        v, ok = {}, True
        for t in ("sidecast", "nats"):
            for kind in ("idle", "idle-tls"):
                rows = runs.get("%s %s %d" % (t, kind, n), [])
                v[(t, kind)] = med(rows, "rss_per_conn_b")
                if kind == "idle-tls" or rows:
                    ok = ok and bool(rows) and all(r["ready"] == r["conns"] for r in rows)
        e = ratio(v[("sidecast", "idle-tls")], v[("sidecast", "idle")])
        out.append((n, v[("sidecast", "idle")], v[("sidecast", "idle-tls")], e))
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            fmt(n), fmt(v[("sidecast", "idle")]), fmt(v[("sidecast", "idle-tls")]), fr(e),
            fmt(v[("nats", "idle")]), fmt(v[("nats", "idle-tls")]),
            fr(ratio(v[("nats", "idle-tls")], v[("nats", "idle")])), "yes" if ok else "no"))
    return ("\n".join(lines) if sizes else "(no wss:// idle case in this run)"), out


def ktls_note(out):
    """What the run found about kTLS (bench/edge.sh writes tls.txt)."""
    fn = os.path.join(out, "tls.txt")
    txt = open(fn).read() if os.path.exists(fn) else ""
    m = re.search(r'ULPs are "([^"]*)"', txt)
    if not m:
        return "(the run did not record the kernel's TCP ULPs)"
    ulps = m.group(1).split()
    if "tls" in ulps:
        return ("this kernel offers the `tls` ULP (`/proc/sys/net/ipv4/tcp_available_ulp`: %s): "
                "with `EDGE_TLS_KTLS=auto` (the default) the kernel sealed the edge's sends in "
                "the wss:// figures above (kTLS; receiving stays in `common/ws/tlsrec.c`)."
                % " ".join(ulps))
    return ("this machine's kernel offers no `tls` ULP (`/proc/sys/net/ipv4/tcp_available_ulp`: "
            "%s), so every wss:// figure above is user-space TLS: the edge's own record layer "
            "(`common/ws/tlsrec.c`, after OpenSSL's handshake) seals and opens the records, "
            "which is what `EDGE_TLS_KTLS=auto` falls back to. kTLS on vs off was measured in "
            "a qemu guest with Debian's 6.1 kernel instead (below)." % (" ".join(ulps) or "empty"))


def render_tls(out, runs, separate):
    conn_md, conn = tls_connect_table(runs)
    fan_md, fan = tls_fanout_table(runs)
    idle_md, idle = tls_idle_table(runs)
    goals = ["| goal | measured (median) | met |", "|---|---|---|"]
    if idle:
        n, plain, tls, r = idle[-1]
        goals.append("| memory per idle TLS connection ≤ 2 × plain (edge) | %s B against %s B at "
                     "%s connections: %s × (%s) | %s |" % (
                         fmt(tls), fmt(plain), fmt(n), fr(r),
                         ", ".join("%s: %s ×" % (fmt(k), fr(x)) for k, _, _, x in idle),
                         "yes" if r is not None and r <= 2 else "no"))
    for (n, rate), us in sorted(fan.items()):
        goals.append("| (measured, no goal set) CPU per delivery over wss://, %s × %s msg/s | "
                     "edge %s × its ws:// figure; %s × nats-server's wss:// | – |" % (
                         fmt(n), fmt(rate),
                         fr(ratio(us[("sidecast", "fanout-tls")], us[("sidecast", "fanout")])),
                         fr(ratio(us[("sidecast", "fanout-tls")], us[("nats", "fanout-tls")]))))
    for mode, label in (("connect-tls", "full"), ("connect-tls-resumed", "resumed")):
        e, na = conn.get(("sidecast", mode)), conn.get(("nats", mode))
        if e is not None:
            goals.append("| (measured, no goal set) TLS handshakes (%s) per edge CPU second | %s; "
                         "nats-server %s; edge / nats-server %s | – |" % (
                             label, fmt(e), fmt(na), fr(ratio(e, na))))

    def read(name):
        fn = os.path.join(out, name)
        return open(fn).read().strip() if os.path.exists(fn) else ""

    facts = read("tls.txt")
    if separate:
        run = ("These figures are from a separate run of the TLS cases and the plain cases they "
               "are compared with (`bench/run.sh` with the variables below), not from the run "
               "described at the top of this page; every ratio in this section is within that "
               "one run:\n\n" + read("machine.txt") + ("\n" + facts if facts else "")
               + ("\n- Cases: `" + read("cases.txt") + "`" if read("cases.txt") else ""))
    else:
        run = "Same run as the rest of this page.\n\n" + facts
    return {"TLS_RUN": run, "TLS_GOALS": "\n".join(goals), "TLS_CONNECT": conn_md,
            "TLS_FANOUT": fan_md, "TLS_IDLE": idle_md, "KTLS": ktls_note(out)}


TLS_BEGIN, TLS_END = "<!-- tls:begin -->", "<!-- tls:end -->"


def read_json(out, name):
    fn = os.path.join(out, name)
    if not os.path.exists(fn):
        return None
    with open(fn) as f:
        return json.load(f)


def sendpath_cost(out):
    """The sender's CPU per writev (µs), median over sendpath's rounds: the per-send kernel
    cost the latency floor is built from. None if bench/sendpath did not run."""
    fn = os.path.join(out, "sendpath.txt")
    if not os.path.exists(fn):
        return None
    v = []
    with open(fn) as f:
        for line in f:
            m = re.match(r"round \d+ writev\s+sender ([0-9.]+)", line)
            if m:
                v.append(float(m.group(1)))
    return statistics.median(v) if v else None


def yn(ok):
    return "–" if ok is None else ("**yes**" if ok else "**no**")


def goals_table(out, runs, ratios, conn):
    """Every figure of the performance goals (issue 21's table), each with its goal and
    whether this run met it. A figure whose step did not run says so instead of a number."""
    g = ["| figure | measured in this run (median) | goal | met |", "|---|---|---|---|"]
    missing = "not measured in this run"
    # 1. auth: what a refresh costs beside libjwt's signing
    a = read_json(out, "auth-goals.json")
    if a:
        rest, lj = a.get("refresh_rest_us"), a.get("refresh_libjwt_us")
        g.append("| auth CPU per refresh grant, beside libjwt | %s µs (libjwt's "
                 "`jwt_encode_str`: %s µs; whole refresh %s µs; signing with a key parsed once "
                 "would cost %s µs) | everything but libjwt ≤ 150 µs | %s |" % (
                     fmt(rest), fmt(lj), fmt(a.get("refresh_cpu_us_total")),
                     fmt(a.get("sign_key_parsed_once_us"), "{:.0f}"),
                     yn(None if rest is None else rest <= 150)))
        pr = a.get("password_grant_rest_us")
        g.append("| auth CPU per password grant, beside libjwt and the password hash | %s µs "
                 "(the hash itself: %s µs) | ≤ 150 µs | %s |" % (
                     fmt(pr), fmt(a.get("password_hash_us")),
                     yn(None if pr is None else pr <= 150)))
    else:
        g.append("| auth CPU per refresh, beside libjwt | %s | ≤ 150 µs | – |" % missing)
    # 2. edge CPU per delivery against nats-server's WebSocket listener
    for n, rate, rn, _rw, rn2 in ratios:
        if n < 1000:
            continue
        g.append("| edge CPU per delivery / nats-server's, %s subs × %s msg/s "
                 "(`EDGE_WRITE_DELAY_MS=0`) | %s (with the edge's NATS: %s) | ≤ 0.50 | %s |" % (
                     fmt(n), fmt(rate), fr(rn), fr(rn2), yn(None if rn is None else rn <= 0.5)))
    # 3. latency: against nats-server's p99, and against the floor of one pass of N sends
    cost = sendpath_cost(out)
    for n, rate in fanout_rows(runs):
        s = runs.get("sidecast fanout %d %d" % (n, rate), [])
        na = runs.get("nats fanout %d %d" % (n, rate), [])
        if not s:
            continue
        sp, np_ = med(s, "lat_p99_ms"), med(na, "lat_p99_ms") if na else None
        r = ratio(sp, np_)
        g.append("| p99 producer → client read, %s subs × %s msg/s, / nats-server's | %s ms "
                 "/ %s ms = %s | ≤ 0.50 | %s |" % (
                     fmt(n), fmt(rate), fmt(sp, "{:.2f}"), fmt(np_, "{:.2f}"), fr(r),
                     yn(None if r is None else r <= 0.5)))
        if cost is not None and n >= 1000:
            floor = n * cost / 1000.0
            k = med(s, "lat_sock_p99_ms")
            g.append("| p99 producer → client socket, %s subs × %s msg/s, / the floor (one "
                     "pass of %s sends at %.2f µs each = %.2f ms) | %s ms = %s × | ≤ 1.5 × | %s |"
                     % (fmt(n), fmt(rate), fmt(n), cost, floor, fmt(k, "{:.2f}"),
                        fr(ratio(k, floor)), yn(None if k is None else k <= 1.5 * floor)))
    # 4. handshakes of new users, ES256
    d = conn.get(("sidecast", "distinct"))
    r = conn.get(("sidecast", "distinct-rs256"))
    if d:
        g.append("| new-user handshakes per edge CPU second, distinct ES256 tokens | %s "
                 "(RS256: %s) | ≥ 10,000 | %s |" % (fmt(d[1]), fmt(r[1]) if r else "–",
                                                   yn(None if d[1] is None else d[1] >= 10000)))
    else:
        g.append("| new-user handshakes per edge core, ES256 | %s | ≥ 10,000 | – |" % missing)
    # 5. and 6. the gateway
    gw = read_json(out, "gateway-goals.json")
    if gw:
        rv = gw.get("route_vs_nats") or {}
        rr = rv.get("ratio")
        pr = rv.get("pair_ratios") or []
        spread = (", the median of %d interleaved pairs, %s–%s" % (
            len(pr), fr(min(pr)), fr(max(pr)))) if pr else ""
        if rv.get("ratio_vs_small"):
            spread += ("; against reqbench's own smaller request without headers, the earlier "
                       "baseline: %s" % fr(rv.get("ratio_vs_small")))
        g.append("| gateway public route / bare NATS request-reply of the same request, "
                 "throughput | %s (%s against "
                 "%s requests/s%s) | ≥ 0.90 | %s |" % (
                     fr(rr), fmt(rv.get("public_rps")), fmt(rv.get("bare_nats_rps")), spread,
                     yn(None if rr is None else rr >= 0.9)))
        idle = gw.get("idle") or {}
        held, want = idle.get("held"), idle.get("goal_conns", 10000)
        per, thr = idle.get("rss_per_conn_bytes"), idle.get("gateway_threads")
        g.append("| gateway idle keep-alive connections held, default config | %s of %s "
                 "(opened in %s s), %s threads, %s B RSS each | %s held by a handful of "
                 "threads, ≤ 8 KiB each | %s |" % (
                     fmt(held), fmt(idle.get("opened")), fmt(idle.get("open_s"), "{:.1f}"),
                     fmt(thr), fmt(per), fmt(want),
                     yn(None if held is None or per is None or thr is None else
                        held >= want and per <= 8192 and thr <= 16)))
        nl = idle.get("new_client_ms") if idle.get("new_client_ok") else None
        g.append("| a new client with those connections open | %s | served at once | %s |" % (
            "answered in %s ms (median of 5)" % fmt(nl, "{:.2f}") if nl is not None
            else "not answered", yn(None if not idle else nl is not None and nl < 1000)))
        sl = gw.get("slowloris") or {}
        cr, co = sl.get("client_requests"), sl.get("client_ok")
        g.append("| a legitimate client beside %s slowloris request heads | %s of %s requests "
                 "answered, p50 %s ms, worst %s ms | served | %s |" % (
                     fmt(sl.get("heads")), fmt(co), fmt(cr),
                     fmt(sl.get("client_p50_ms"), "{:.1f}"), fmt(sl.get("client_max_ms")),
                     yn(None if not cr else co is not None and co >= 0.9 * cr)))
        inf = gw.get("inflight") or {}
        n, ok, t = inf.get("requests"), inf.get("answered_200"), inf.get("total_s")
        g.append("| %s requests in flight to a service that answers after 1 s | %s answered, "
                 "all in %s s; another route meanwhile: %s of %s answered, p50 %s ms | all in "
                 "about 1 s, other routes fast | %s |" % (
                     fmt(n), fmt(ok), fmt(t, "{:.2f}"), fmt(inf.get("other_route_ok")),
                     fmt(inf.get("other_route_requests")),
                     fmt(inf.get("other_route_p50_ms"), "{:.1f}"),
                     yn(None if t is None or ok is None or n is None else
                        ok >= n and t < 1.5)))
    else:
        g.append("| gateway route / bare NATS; idle connections, slowloris, slow service | %s "
                 "| | – |" % missing)
    return "\n".join(g)


def load_hist(path):
    pts = []
    with open(path) as f:
        for line in f:
            if line.startswith("#"):
                continue
            ms, cnt, _ = line.split()
            pts.append((float(ms), int(cnt)))
    return pts


def merged_hist(out, prefix):
    """The histograms of every run of one case, merged: [(upper ms, count)]."""
    acc = collections.Counter()
    d = os.path.join(out, "hist")
    if not os.path.isdir(d):
        return []
    for name in os.listdir(d):
        if name.startswith(prefix + "-r"):
            for ms, c in load_hist(os.path.join(d, name)):
                acc[ms] += c
    return sorted(acc.items())


def plots(out, img, idle, fan_cpu, lat_case):
    if not shutil.which("gnuplot"):
        print("report: gnuplot missing (scripts/deps.sh installs gnuplot-nox): no plots",
              file=sys.stderr)
        return False
    pd = os.path.join(out, "plots")
    os.makedirs(pd, exist_ok=True)
    os.makedirs(img, exist_ok=True)
    for t in TARGETS:
        with open(os.path.join(pd, "mem-%s.dat" % t), "w") as f:
            for n, kib in idle.get(t, []):
                if kib is not None:
                    f.write("%d %.3f\n" % (n, kib / 1024))
        # one point per subscriber count and kind: the highest rate of that kind (1,000 × 10
        # and 1,000 × 100/s are both low rates; the plot shows the second)
        best = {}
        for n, rate, us in fan_cpu.get(t, []):
            k = ("low" if (n, rate) in LOW else "high", n)
            if k not in best or rate > best[k][0]:
                best[k] = (rate, us)
        rates = collections.defaultdict(list)
        for (kind, n), (rate, us) in best.items():
            rates[kind].append((n, us))
        for k, pts in rates.items():
            with open(os.path.join(pd, "cpu-%s-%s.dat" % (t, k)), "w") as f:
                for n, us in sorted(pts):
                    if us is not None:
                        f.write("%d %.4f\n" % (n, us))
        h = merged_hist(out, "%s-fanout-%d-%d" % (t, lat_case[0], lat_case[1]))
        total = sum(c for _, c in h)
        with open(os.path.join(pd, "lat-%s.dat" % t), "w") as f:
            seen = 0
            for ms, c in h:
                seen += c
                f.write("%.3f %.6f\n" % (ms, seen / total))
    def plot_lines(kind, suffixes, style="with linespoints"):
        parts = []
        for t in TARGETS:
            for suf, title in suffixes:
                fn = os.path.join(pd, "%s-%s%s.dat" % (kind, t, suf))
                if os.path.exists(fn) and os.path.getsize(fn) > 0:
                    parts.append("'%s' using 1:2 with linespoints title '%s%s'" % (
                        fn, NAMES[t], title))
        return ", ".join(parts).replace("with linespoints", style)
    script = """
set terminal pngcairo size 900,560 font ',11'
set grid
set key left top
set output '{img}/memory.png'
set title 'Server RSS growth with idle subscribed connections (median of runs)'
set xlabel 'connections'
set ylabel 'RSS after - RSS before (MiB)'
plot {mem}
set output '{img}/cpu-per-delivery.png'
set title 'Server CPU per delivered message (user+system, /proc; median of runs)'
set xlabel 'subscribers'
set ylabel 'CPU microseconds per delivery'
set logscale x
set xrange [500:20000]
set key right top
plot {cpu}
unset xrange
set output '{img}/latency-cdf.png'
set title 'Publish-to-receipt latency, {n} subscribers x {rate} msg/s (all runs)'
set xlabel 'latency (ms, log scale)'
set ylabel 'fraction of deliveries'
set logscale x
set key left top
set yrange [0:1]
plot {lat}
""".format(img=img, mem=plot_lines("mem", [("", "")]),
           cpu=plot_lines("cpu", [("-low", " (low rate)"), ("-high", " (high rate)")]),
           lat=plot_lines("lat", [("", "")], "with lines lw 2"), n=lat_case[0],
           rate=lat_case[1])
    with open(os.path.join(pd, "plots.gp"), "w") as f:
        f.write(script)
    r = subprocess.run(["gnuplot", os.path.join(pd, "plots.gp")], capture_output=True,
                       text=True, timeout=60)
    if r.returncode != 0:
        print("report: gnuplot failed: " + r.stderr, file=sys.stderr)
        return False
    return True


LOW = set()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--template", default="bench/BENCHMARKS.md.in")
    ap.add_argument("--page", default="docs/BENCHMARKS.md")
    ap.add_argument("--img", default="docs/img")
    ap.add_argument("--low", default="1000:10,1000:20,1000:100,10000:10,5000:20",
                    help="fan-out cases (subs:rate) counted as the low rate")
    ap.add_argument("--tls-only", action="store_true",
                    help="render only the TLS section, into the existing page")
    a = ap.parse_args()
    if a.tls_only:
        return tls_only(a)
    for c in a.low.split(","):
        n, r = c.split(":")
        LOW.add((int(n), int(r)))
    runs = load(a.out)
    nruns = max((len(v) for v in runs.values()), default=0)
    idle_md, idle_data, sizes = idle_table(runs)
    fan_md, ratio_md, fan_cpu, ratios = fanout_table(runs)
    conn_md, conn = connect_table(runs)
    keys = fanout_rows(runs)
    lat_case = next((k for k in [(1000, 10), (1000, 20), (1000, 100)] if k in keys),
                    keys[0] if keys else (0, 0))
    drew = plots(a.out, a.img, idle_data, fan_cpu, lat_case)

    # the goals, from the medians
    goals = ["| goal | measured (median) | met |", "|---|---|---|"]
    for n, rate, rn, rw, rn2 in ratios:
        if n < 1000:  # the goal is at 1k and 10k subscribers
            continue
        kind = "low rate" if (n, rate) in LOW else "high rate"
        goals.append("| CPU per delivery ≤ ½ nats-server's, %s subs × %s msg/s (%s) | %s "
                     "(edge alone; %s with its NATS) | %s |" % (
                         fmt(n), fmt(rate), kind, fr(rn), fr(rn2),
                         "yes" if rn is not None and rn <= 0.5 else "no"))
    per_conn = [med(runs.get("sidecast idle %d" % n, []), "rss_per_conn_b") for n in sizes]
    big = [v for v in per_conn if v is not None]
    if big:
        goals.append("| user-space memory per idle authenticated connection ≤ 2 KiB | %s B "
                     "at %s connections (%s) | %s |" % (
                         fmt(big[-1]), fmt(sizes[-1]),
                         ", ".join("%s: %s B" % (fmt(n), fmt(v)) for n, v in zip(sizes, per_conn)),
                         "yes" if big[-1] <= 2048 else "no"))
    d = conn.get(("sidecast", "distinct"))
    r = conn.get(("sidecast", "distinct-rs256"))
    o = conn.get(("sidecast", "one"))
    if d:
        goals.append("| handshake + token verification + presence ≥ 10k/s per core | %s per "
                     "edge CPU second with distinct ES256 tokens, %s with distinct RS256 "
                     "tokens; %s with one cached token | %s |" % (
                         fmt(d[1]), fmt(r[1]) if r else "–", fmt(o[1]) if o else "–",
                         "yes" if max(d[1] or 0, (r or (0, 0))[1] or 0) >= 10000 else "no"))
    p = runs.get("sidecast fanout %d %d" % lat_case, [])
    if p:
        p99, k99 = med(p, "lat_p99_ms"), med(p, "lat_sock_p99_ms")
        goals.append("| p99 producer → client < 1 ms at 1k subscribers, moderate rate | %s ms "
                     "at the client's read, %s ms in its socket (%s subs × %s msg/s) | %s |" % (
                         fmt(p99, "{:.2f}"), fmt(k99, "{:.2f}"), fmt(lat_case[0]),
                         fmt(lat_case[1]), "yes" if p99 < 1 else "no"))

    def read(name, default=""):
        fn = os.path.join(a.out, name)
        return open(fn).read().strip() if os.path.exists(fn) else default

    with open(a.template) as f:
        page = f.read()
    rep = {
        "MACHINE": read("machine.txt", "(machine facts missing)"),
        "RUNS": str(nruns),
        "GOALS": "\n".join(goals),
        "GOALS21": goals_table(a.out, runs, ratios, conn),
        "IDLE": idle_md,
        "FANOUT": fan_md,
        "RATIOS": ratio_md,
        "CONNECT": conn_md,
        "DEFLATE": deflate_table(runs),
        "DELAY": delay_table(runs),
        "GATEWAY": read("gateway.md", "(the gateway case did not run)"),
        "BACKENDS": read("backends.md", "(the back-end case did not run: BENCH_BACKENDS=0)"),
        "SSE": read("sse.md", "(the Server-Sent Events case did not run: BENCH_SSE=0)"),
        "LATCASE": "%s subscribers × %s msg/s" % (fmt(lat_case[0]), fmt(lat_case[1])),
        "PLOTS": "" if drew else "(gnuplot was missing when this page was generated: no plots)",
    }
    rep.update(render_tls(a.out, runs, False))
    for k, v in rep.items():
        page = page.replace("@@%s@@" % k, v)
    with open(a.page, "w") as f:
        f.write(page)
    print("report: wrote %s%s" % (a.page, " and plots in " + a.img if drew else ""))


def tls_only(a):
    with open(a.template) as f:
        tmpl = f.read()
    i, j = tmpl.find(TLS_BEGIN), tmpl.find(TLS_END)
    if i < 0 or j < i:
        sys.exit("report: %s has no TLS section" % a.template)
    section = tmpl[i:j + len(TLS_END)]
    for k, v in render_tls(a.out, load(a.out), True).items():
        section = section.replace("@@%s@@" % k, v)
    with open(a.page) as f:
        page = f.read()
    i, j = page.find(TLS_BEGIN), page.find(TLS_END)
    if i >= 0 and j > i:
        page = page[:i] + section + page[j + len(TLS_END):]
    else:
        at = page.find("## Gateway route overhead")
        if at < 0:
            sys.exit("report: no TLS section and no \"## Gateway route overhead\" in " + a.page)
        page = page[:at] + section + "\n\n" + page[at:]
    with open(a.page, "w") as f:
        f.write(page)
    print("report: wrote the TLS section of %s" % a.page)


if __name__ == "__main__":
    main()
