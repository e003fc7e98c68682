#!/usr/bin/env bash
# bench/100k.sh - 100,000 concurrent WebSocket connections on this one machine, each getting
# a broadcast: EDGES edge processes share one listening port (each worker's listener has
# SO_REUSEPORT, so the kernel spreads connections over every process), each with its own
# EDGE_ID, at most 19,000 connections each (a process may hold 20,000 files); `sidecast
# bench fanout` opens the connections from PROCS processes and the source addresses
# 127.0.0.1-127.0.0.8 (a source address has ~28,000 ephemeral ports towards one port), all
# subscribed to one topic, then RATE events/s are published for SECONDS. Prints what it took:
# every edge's RSS and CPU, NATS's and Redis's, and whether every connection got every event.
# Results and logs in $BUILD/bench-100k/. Loopback only; bounded in time.
#
#   bash bench/100k.sh        CONNS=100000 EDGES=6 PROCS=6 RATE=1 SECONDS_=5
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
CONNS=${CONNS:-100000}
EDGES=${EDGES:-6}
PROCS=${PROCS:-6}
RATE=${RATE:-1}
SECS=${SECONDS_:-5}
DIR=$BUILD/bench-100k
rm -rf "$DIR"; mkdir -p "$DIR"
# shellcheck source=bench/capacity/lib.sh
source bench/capacity/lib.sh
[ $(( CONNS / EDGES )) -le 17500 ] || die "CONNS/EDGES must leave room under 19,000 per edge"
[ $(( (CONNS + PROCS - 1) / PROCS )) -le 19000 ] || die "CONNS/PROCS must be <= 19,000"

make_keys
"$BUILD/sidecast" bench tokens --key "$DIR/dev/signing-key.pem" --count 512 >"$DIR/tokens.txt"
start_nats js
start_redis
PORT=$(free_port)
edge_pids=()
for i in $(seq 1 "$EDGES"); do
  env NATS_URL="$NATS_URL" REDIS_URL="$REDIS_URL" LOG_LEVEL=warn DEV_INSECURE_BUS=1 \
    JWT_PUBLIC_KEYS="$DIR/dev/public.pem" EDGE_LISTEN="127.0.0.1:$PORT" EDGE_ID="edge-100k-$i" \
    EDGE_WORKERS=1 EDGE_MAX_CONNECTIONS=19000 EDGE_PING_INTERVAL_MS=3600000 \
    HISTORY_STORAGE=file "$BUILD/edge" >"$DIR/edge-$i.log" 2>&1 & pids+=($!); edge_pids+=($!)
  sleep 0.3 # each edge binds its own listener: no start-up race on the shared port
done
wait_url "http://127.0.0.1:$PORT/readyz" edge
for p in "${edge_pids[@]}"; do
  kill -0 "$p" 2>/dev/null || die "edge $p exited: $(tail -n 5 "$DIR"/edge-*.log)"
done

rss_all() { local t=0 p; for p in "$@"; do t=$(( t + $(rss_kib "$p") )); done; echo "$t"; }
cpu_all() {
  local p
  for p in "$@"; do cpu_s "$p"; echo; done | awk '{t += $1} END {printf "%.2f", t}'
}
mem_free() { awk '/^MemAvailable/ {print $2}' /proc/meminfo; }
sock_mem() { awk '/^TCP:/ {print $NF}' /proc/net/sockstat; } # pages

r0=$(rss_all "${edge_pids[@]}"); c0=$(cpu_all "${edge_pids[@]}"); n0=$(cpu_s "$NATS_PID")
rd0=$(cpu_s "$REDIS_PID"); m0=$(mem_free); s0=$(sock_mem); t0=$(date +%s.%N)
echo "100k: $EDGES edges on 127.0.0.1:$PORT, $CONNS connections from $PROCS processes" >&2
timeout 900 "$BUILD/sidecast" bench fanout --url "ws://127.0.0.1:$PORT/ws" \
  --tokens "$DIR/tokens.txt" --conns "$CONNS" --procs "$PROCS" --source 127.0.0.1-127.0.0.8 \
  --concurrency 1024 --setup-timeout 400 --topic prices.BTC --nats "$NATS_URL" --rate "$RATE" \
  --seconds "$SECS" --drain 20 --json --hist "$DIR/latency.txt" \
  >"$DIR/bench.json" 2>"$DIR/bench.err" &
bp=$!
# the peak: sampled while the connections are up
peak_r=0; peak_m=0; peak_s=0
while kill -0 "$bp" 2>/dev/null; do
  r=$(rss_all "${edge_pids[@]}" 2>/dev/null || echo 0); m=$(( m0 - $(mem_free) )); s=$(sock_mem)
  [ "$r" -gt "$peak_r" ] && peak_r=$r
  [ "$m" -gt "$peak_m" ] && peak_m=$m
  [ "$s" -gt "$peak_s" ] && peak_s=$s
  sleep 1
done
wait "$bp" || true
c1=$(cpu_all "${edge_pids[@]}"); n1=$(cpu_s "$NATS_PID"); rd1=$(cpu_s "$REDIS_PID")
t1=$(date +%s.%N)
grep -q '^{' "$DIR/bench.json" || { cat "$DIR/bench.err" >&2; die "no result"; }
python3 - "$DIR/bench.json" "$EDGES" "$r0" "$peak_r" "$peak_m" "$peak_s" "$c0" "$c1" "$n0" "$n1" \
  "$rd0" "$rd1" "$t0" "$t1" <<'EOF' | tee "$DIR/summary.txt"
import json, sys
a = sys.argv
d = json.loads([l for l in open(a[1]) if l.startswith("{")][-1])
edges, r0, pr, pm, ps = int(a[2]), int(a[3]), int(a[4]), int(a[5]), int(a[6])
ecpu = float(a[8]) - float(a[7])
ncpu = float(a[10]) - float(a[9])
rcpu = float(a[12]) - float(a[11])
wall = float(a[14]) - float(a[13])
n = d["ready"]
print("connections ready: %d of %d (failed %d, lost %d); set-up %.1f s (%.0f/s)"
      % (n, d["conns"], d["failed"], d["lost_conns"], d["setup_s"], d["handshakes_per_s"]))
print("broadcast: %d events x %d connections: %d of %d deliveries, loss %d, gaps %d, "
      "disorder %d; latency p50 %.1f / p99 %.1f / max %.1f ms"
      % (d["published"], n, d["deliveries"], d["expected"], d["loss"], d["gaps"], d["disorder"],
         d["lat_p50_ms"], d["lat_p99_ms"], d["lat_max_ms"]))
print("edges (%d processes): RSS %.1f MiB before, %.1f MiB peak (%.0f B per connection)"
      % (edges, r0 / 1024, pr / 1024, (pr - r0) * 1024 / max(n, 1)))
print("machine: %.2f GiB more memory in use at the peak (kernel socket buffers and the load "
      "generator included), TCP socket memory peak %.0f MiB" % (pm / 1048576, ps * 4 / 1024))
print("CPU over the whole run (%.0f s): edges %.1f s, NATS %.1f s, Redis %.1f s, load "
      "generator %.1f s" % (wall, ecpu, ncpu, rcpu, d["client_cpu_s"]))
print("complete: %s" % ("yes" if d["complete"] else "no"))
EOF
