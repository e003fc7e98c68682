#!/usr/bin/env bash
# The gateway's user-space instructions per request (callgrind), a figure that does not
# depend on the machine's load: a gateway binary under valgrind --tool=callgrind, the public
# route (/api/bench of bench/routes.json) answered by echosvc, 200 requests of warm-up, then
# N requests from 4 keep-alive clients counted from a zeroed profile. Not part of `make
# bench` (valgrind makes it take a minute or two); used for the A/B of docs/BENCHMARKS.md's
# gateway findings. Prints "ir_per_req=N".
#
#   bench/gateway_instr.sh [GATEWAY_BINARY]      BUILD=build N=2000
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
BIN=${1:-$BUILD/gateway}
N=${N:-2000}
D=$(mktemp -d)
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
NP=$(free_port); GP=$(free_port)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT
nats-server -a 127.0.0.1 -p "$NP" >"$D/nats.log" 2>&1 & pids+=($!)
sleep 0.5
"$BUILD/tests/tools/echosvc" "nats://127.0.0.1:$NP" svc.bench.echo >"$D/echo.log" 2>&1 & pids+=($!)
bash scripts/gen-dev.sh "$D/dev" >/dev/null
DEV_INSECURE_BUS=1 NATS_URL=nats://127.0.0.1:$NP LOG_LEVEL=warn JWT_PUBLIC_KEYS=$D/dev/public.pem \
  GATEWAY_ROUTES=bench/routes.json GATEWAY_LISTEN=127.0.0.1:$GP \
  valgrind --tool=callgrind --callgrind-out-file="$D/cg.out" "$BIN" >"$D/gw.log" 2>&1 &
GPID=$!; pids+=($GPID)
for _ in $(seq 1 300); do curl -fs "http://127.0.0.1:$GP/api/bench" >/dev/null && break; sleep 0.2; done
load() { # COUNT CLIENTS
  python3 - "$GP" "$1" "$2" <<'PY'
import http.client, sys, threading
port, n, k = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def run(m):
    c = http.client.HTTPConnection("127.0.0.1", port)
    for _ in range(m):
        c.request("GET", "/api/bench"); r = c.getresponse(); r.read()
        assert r.status == 200, r.status
ts = [threading.Thread(target=run, args=(n // k,)) for _ in range(k)]
[t.start() for t in ts]; [t.join() for t in ts]
PY
}
load 200 1
callgrind_control -z "$GPID" >/dev/null 2>&1
load "$N" 4
callgrind_control -d "$GPID" >/dev/null 2>&1
sleep 1
F=$(ls -t "$D"/cg.out.* | head -1)
IR=$(awk '/^(summary|totals):/ {print $2; exit}' "$F")
echo "ir_per_req=$((IR / N))"
