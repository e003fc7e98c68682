#!/usr/bin/env bash
# Gateway route overhead (bench/run.sh runs it for `make bench`): requests/s through wrk ->
# gateway -> NATS -> a trivial service (tests/tools/echosvc), beside a bare NATS request/reply
# loop (bench/reqbench) with the same concurrency, sending the request the gateway sends for
# the route (its envelope as the payload, a request id and a traceparent as headers), so that
# the service and nats-server do the same work on both sides and the ratio is the gateway's
# own cost. A third row keeps the earlier baseline for comparison: reqbench's own 36-byte
# payload without headers, which echosvc answers with less (issue 21's first figures).
# Each case runs RUNS times for SECONDS; the median is reported. The public route and the
# bare loop run in PAIRS interleaved pairs (the order alternating), and their ratio is the
# median of the pairs' ratios: a machine whose load drifts over the minute the cases take
# moves both sides of a pair alike (run one after the other, the two sides' medians gave
# ratios from 0.67 to 0.93 on the same code). Everything on loopback, on this machine's
# cores (wrk, gateway, nats-server and the service share them). Prints a Markdown table on
# stdout, then the concurrency figures of bench/gateway_goals.py (idle keep-alive
# connections, slowloris heads, 1,000 requests in flight to a 1 s service), also written to
# $BENCH_OUT/gateway-goals.json.
#
#   bench/gateway.sh        BENCH_SECONDS=10 RUNS=3 PAIRS=5 CONC=32 BENCH_OUT=build/bench-run
#                           GATEWAY_BIN=path (another build, for an A/B) GOALS=0 (skip them)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
GATEWAY_BIN=${GATEWAY_BIN:-$BUILD/gateway} # another binary, for an A/B of two builds
GOALS=${GOALS:-1}                          # 0: skip the concurrency cases (gateway_goals.py)
SECONDS_PER=${BENCH_SECONDS:-10}
RUNS=${RUNS:-3}
PAIRS=${PAIRS:-5} # interleaved bare/public-route pairs for the ratio
CONC=${CONC:-32}
DIR=${BENCH_OUT:-$BUILD/bench-run}/gateway
rm -rf "$DIR"; mkdir -p "$DIR"

# four distinct free ports: held open together while chosen (one at a time could repeat one)
free_ports() { python3 -c 'import socket,sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"; }
read -r NATS_PORT GW_PORT REDIS_PORT ADMIN_PORT <<<"$(free_ports 4)"
NATS_URL=nats://127.0.0.1:$NATS_PORT
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

bash scripts/gen-dev.sh "$DIR/dev" >/dev/null
nats-server -a 127.0.0.1 -p "$NATS_PORT" >"$DIR/nats.log" 2>&1 & pids+=($!)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$DIR/redis.log" 2>&1 & pids+=($!)
sleep 0.5
"$BUILD/tests/tools/echosvc" "$NATS_URL" svc.bench.echo svc.bench.delay >"$DIR/echosvc.log" 2>&1 & pids+=($!)
export NATS_URL REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0 LOG_LEVEL=warn
# its own nats-server and redis-server, open on loopback: the services need the flag for that
export DEV_INSECURE_BUS=1
JWT_PRIVATE_KEY=$DIR/dev/signing-key.pem AUTH_USERS=$DIR/dev/users.conf \
  ADMIN_LISTEN=127.0.0.1:$ADMIN_PORT "$BUILD/auth" >"$DIR/auth.log" 2>&1 & pids+=($!)
JWT_PUBLIC_KEYS=$DIR/dev/public.pem GATEWAY_ROUTES=bench/routes.json \
  GATEWAY_LISTEN=127.0.0.1:$GW_PORT "$GATEWAY_BIN" >"$DIR/gateway.log" 2>&1 & pids+=($!)
GW_PID=$!
GW=http://127.0.0.1:$GW_PORT
for _ in $(seq 1 100); do curl -fs "$GW/readyz" >/dev/null && break; sleep 0.1; done
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null && break; sleep 0.1; done
TOKEN=$(curl -fsS -d grant_type=password -d username=alice -d password=wonderland "$GW/auth/token" \
        | python3 -c 'import json,sys;print(json.load(sys.stdin)["access_token"])')
curl -fsS "$GW/api/bench" >/dev/null

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

wrk_run() { # NAME PATH [HEADER]: one wrk run; sets RUN_RPS RUN_P50
  local name=$1 path=$2 hdr=${3:-} out
  if [ -n "$hdr" ]; then
    out=$(wrk -t2 -c"$CONC" -d"${SECONDS_PER}s" --latency -H "$hdr" "$GW$path")
  else
    out=$(wrk -t2 -c"$CONC" -d"${SECONDS_PER}s" --latency "$GW$path")
  fi
  if echo "$out" | grep -q "Non-2xx"; then echo "bench: $name returned errors:" >&2; echo "$out" >&2; exit 1; fi
  RUN_RPS=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  RUN_P50=$(echo "$out" | awk '$1=="50%" {print $2}')
}
# what the gateway sends for GET /api/bench (services/gateway/proxy.c; echosvc echoes it)
ENVELOPE='{"method":"GET","path":"/api/bench","params":{},"query":{},"body":null}'
bare_run() { # [small]: one reqbench run (the route's request, or reqbench's own 36 bytes)
  local out
  if [ "${1:-}" = small ]; then
    out=$("$BUILD/bench/reqbench" "$NATS_URL" svc.bench.echo "$CONC" "$SECONDS_PER")
  else
    out=$("$BUILD/bench/reqbench" "$NATS_URL" svc.bench.echo "$CONC" "$SECONDS_PER" \
      "$ENVELOPE" headers)
  fi
  RUN_RPS=$(echo "$out" | sed -E 's/.*rps=([0-9]+).*/\1/')
  RUN_P50=$(echo "$out" | sed -E 's/.*p50_ms=([0-9.]+).*/\1/')
}
row() { # NAME PATH RPS P50 RATIO
  printf '| %s | %s | %.0f | %s | %.2f |\n' "$1" "$2" "$3" "$4" "$5"
}
wrk_case() { # NAME PATH [HEADER]
  local name=$1 path=$2 hdr=${3:-} rps=() lat=()
  for _ in $(seq 1 "$RUNS"); do
    wrk_run "$name" "$path" "$hdr"
    rps+=("$RUN_RPS"); lat+=("$RUN_P50")
  done
  local m; m=$(printf '%s\n' "${rps[@]}" | median)
  row "$name" "$path" "$m" "$(printf '%s\n' "${lat[@]}" | sort | sed -n "$(( (RUNS+1)/2 ))p")" \
    "$(awk -v a="$m" -v b="$BASE" 'BEGIN {print (b > 0 ? a / b : 0)}')"
}

echo "$(date -u +%F), $(nproc) cores, $CONC concurrent, ${SECONDS_PER}s each; bare NATS and" \
  "the public route in $PAIRS interleaved pairs (ratio: the pairs' median), the rest" \
  "$RUNS runs (median):"
echo
echo "| case | path | requests/s | p50 latency | vs bare NATS |"
echo "|---|---|---|---|---|"
# a short warm-up of both sides first (the first bare run of a fresh nats-server and echosvc
# came out ~25% below the rest, which made the first pair an outlier)
SECONDS_PER=1 bare_run; SECONDS_PER=1 wrk_run "gateway, public route" /api/bench
base=(); blat=(); pub=(); plat=(); pairs=()
for i in $(seq 1 "$PAIRS"); do
  if [ $((i % 2)) = 1 ]; then
    bare_run; b=$RUN_RPS; blat+=("$RUN_P50")
    wrk_run "gateway, public route" /api/bench; p=$RUN_RPS; plat+=("$RUN_P50")
  else
    wrk_run "gateway, public route" /api/bench; p=$RUN_RPS; plat+=("$RUN_P50")
    bare_run; b=$RUN_RPS; blat+=("$RUN_P50")
  fi
  base+=("$b"); pub+=("$p")
  pairs+=("$(awk -v a="$p" -v b="$b" 'BEGIN {printf "%.3f", (b > 0 ? a / b : 0)}')")
  echo "bench: gateway pair $i: bare NATS $b, public route $p requests/s (${pairs[-1]})" >&2
done
BASE=$(printf '%s\n' "${base[@]}" | median)
PUBLIC_RPS=$(printf '%s\n' "${pub[@]}" | median)
RATIO=$(printf '%s\n' "${pairs[@]}" | median)
mid=$(( (PAIRS + 1) / 2 ))
row "bare NATS request/reply (reqbench), the route's request" svc.bench.echo "$BASE" \
  "$(printf '%s\n' "${blat[@]}" | sort -n | sed -n "${mid}p")ms" 1
row "gateway, public route" /api/bench "$PUBLIC_RPS" \
  "$(printf '%s\n' "${plat[@]}" | sort | sed -n "${mid}p")" "$RATIO"
small=(); slat=()
for _ in $(seq 1 "$RUNS"); do
  bare_run small; small+=("$RUN_RPS"); slat+=("$RUN_P50")
done
SMALL=$(printf '%s\n' "${small[@]}" | median)
row "bare NATS, reqbench's own 36-byte request without headers" svc.bench.echo "$SMALL" \
  "$(printf '%s\n' "${slat[@]}" | sort -n | sed -n "$(( (RUNS+1)/2 ))p")ms" \
  "$(awk -v a="$SMALL" -v b="$BASE" 'BEGIN {print (b > 0 ? a / b : 0)}')"
wrk_case "gateway, bearer route (ES256 verify)" /api/bench/auth "Authorization: Bearer $TOKEN"
wrk_case "gateway, parallel composition (2 calls)" /api/bench/parallel
wrk_case "gateway, sequence composition (2 calls)" /api/bench/sequence

# The concurrency figures of issue 21 (bench/gateway_goals.py documents the keys): idle
# keep-alive connections, slowloris heads, 1,000 requests in flight to a 1 s service; with
# the route/bare-NATS ratio measured above, into $BENCH_OUT/gateway-goals.json.
if [ "$GOALS" = 1 ]; then
  OUT=${BENCH_OUT:-$BUILD/bench-run}/gateway-goals.json
  timeout 300 python3 bench/gateway_goals.py --port "$GW_PORT" --pid "$GW_PID" \
    --public-rps "$PUBLIC_RPS" --bare-rps "$BASE" --pair-ratios "${pairs[*]}" \
    --small-bare-rps "$SMALL" --out "$OUT" >"$DIR/goals.log" 2>&1 \
    || { echo "bench: gateway_goals.py failed:" >&2; tail -20 "$DIR/goals.log" >&2; exit 1; }
  python3 - "$OUT" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
r, i, s, f = d["route_vs_nats"], d["idle"], d["slowloris"], d["inflight"]
print()
print("| concurrency figure | measured | goal |")
print("|---|---|---|")
print("| public route / bare NATS | %s | >= 0.9 |" % r["ratio"])
print("| idle keep-alive connections held | %d of %d (opened in %s s), %d gateway threads, "
      "%s B RSS each; a new client %s in %s ms | 10,000 at <= 8 KiB each, new client served |"
      % (i["held"], i["opened"], i["open_s"], i["gateway_threads"], i["rss_per_conn_bytes"],
         "served" if i["new_client_ok"] else "NOT served", i["new_client_ms"]))
print("| slowloris heads + a legitimate client | %d heads (%d still open); client %d/%d "
      "answered, p50 %s ms, max %s ms | client not locked out |"
      % (s["heads"], s["heads_open"], s["client_ok"], s["client_requests"],
         s["client_p50_ms"], s["client_max_ms"]))
print("| 1,000 in flight to a 1 s service | %d/%d answered in %s s; other route %d/%d, "
      "p50 %s ms, max %s ms | about 1 s, other routes fast |"
      % (f["answered_200"], f["requests"], f["total_s"], f["other_route_ok"],
         f["other_route_requests"], f["other_route_p50_ms"], f["other_route_max_ms"]))
PY
fi
