"""bench/edge.sh: a fan-out's result line (the last JSON line of `sidecast bench fanout`) with
the edge's write system calls and busy holds from its /metrics added (edge_writes,
edge_busy_holds: counted over the edge's whole life, so handshakes and subscribe replies are
in them). Prints nothing when there is no result line.
Usage: python3 bench/edge_metrics.py RESULT.out METRICS"""
import json
import sys


def main():
    try:
        with open(sys.argv[1]) as f:
            d = json.loads([line for line in f if line.startswith("{")][-1])
    except (IndexError, ValueError, OSError):
        return
    try:
        with open(sys.argv[2]) as f:
            for line in f:
                k, _, v = line.partition(" ")
                if k in ("sc_edge_writes_total", "sc_edge_busy_holds_total"):
                    d["edge_" + k[len("sc_edge_"):-len("_total")]] = int(float(v))
    except (OSError, ValueError):
        pass
    print(json.dumps(d))


main()
