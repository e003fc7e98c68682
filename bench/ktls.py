#!/usr/bin/env python3
"""bench/ktls.py - medians of `tests/vm/ktls.sh bench` (its BENCH lines: one fan-out over
wss:// per line, the edge with EDGE_TLS_KTLS=auto (the kernel seals the sends) or off
(tlsrec does), interleaved): the edge's CPU per delivery for each case and mode, and the
ratio. Prints a Markdown table.

    python3 bench/ktls.py build/vm/bench.txt
"""
import json
import re
import statistics
import sys


def main(path):
    runs = {}
    for line in open(path):
        m = re.match(r"BENCH ktls=(\w+) case=(\S+) run=\d+ kernel=(\d*) user=(\d*) (\{.*\})\s*$", line)
        if not m:
            continue
        mode, case, kernel, user, js = m.groups()
        try:
            r = json.loads(js)
        except ValueError:
            continue
        runs.setdefault((case, mode), []).append((r, int(kernel or 0), int(user or 0)))
    cases = sorted({c for c, _ in runs}, key=lambda c: [int(x) for x in c.split(":")])
    print("| subscribers × msg/s | edge CPU µs/delivery, kTLS | without (tlsrec) | kTLS / without "
          "| deliveries/s, kTLS / without | runs complete (every event, in order) |")
    print("|---|---|---|---|---|---|")
    for c in cases:
        a, o = runs.get((c, "auto"), []), runs.get((c, "off"), [])
        if not a or not o:
            continue
        med = lambda rs, k: statistics.median(r[0].get(k, 0) for r in rs)
        ca, co = med(a, "cpu_us_per_delivery"), med(o, "cpu_us_per_delivery")
        da, do = med(a, "deliveries_per_s"), med(o, "deliveries_per_s")
        comp = "%d/%d, %d/%d" % (sum(r[0].get("complete", False) for r in a), len(a),
                                 sum(r[0].get("complete", False) for r in o), len(o))
        # every kTLS run's connections were sealed by the kernel, every off run's by tlsrec
        ok = all(r[1] > 0 for r in a) and all(r[1] == 0 and r[2] > 0 for r in o)
        subs, rate = c.split(":")
        print("| %s × %s | %.2f | %.2f | %.2f | %.0f / %.0f | %s%s |" % (
            format(int(subs), ","), format(int(rate), ","), ca, co, ca / co if co else 0, da, do,
            comp, "" if ok else " (kTLS not used in every kTLS run!)"))
    n = min((len(v) for v in runs.values()), default=0)
    print("\n(medians of %d interleaved runs per cell)" % n)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "build/vm/bench.txt")
