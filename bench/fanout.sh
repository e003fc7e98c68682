#!/usr/bin/env bash
# Edge fan-out alone, rate by rate: NATS (JetStream, memory), Redis, auth and edge (2 workers)
# on free loopback ports; for each case CONNS:RATE, `sidecast bench fanout` opens CONNS
# connections with bob's token subscribed to prices.BTC, then publishes RATE events/s for
# SECONDS on events.prices.BTC. Reports deliveries/s, the edge's CPU per delivery and share of
# one core (/proc, from "every connection subscribed" until every event arrived), NATS's share,
# the edge's RSS, publish-to-receipt latency, and whether every connection got every event in
# order. Client, edge and NATS share the cores. `make bench` (bench/run.sh) is the full suite
# against the peers; this script is the quick look at the edge alone.
#
# "Stored" is how far the JetStream stream's last sequence moved. The stream republishes each
# stored event to the edge, and with nats-server 2.9.10 the server's CPU per republished
# message grows with the number of messages the stream holds, so the stream is purged before
# each case (cases stay independent) and rates stay well below what NATS can ingest.
#
#   bench/fanout.sh   FANOUT_CASES="1000:50 1000:200 1000:500 10000:20 10000:100" (CONNS:RATE)
#                     FANOUT_SECONDS=10 RUNS=1 FANOUT_SIZE=128 (payload bytes)
#                     FANOUT_THREADS=1 (load generator threads; from 10,000 connections up
#                     it runs 2 processes)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
CASES=${FANOUT_CASES:-"1000:50 1000:200 1000:500 10000:20 10000:100"}
SECS=${FANOUT_SECONDS:-10}
SIZE=${FANOUT_SIZE:-128}
THREADS=${FANOUT_THREADS:-1}
RUNS=${RUNS:-1}
TOPIC=prices.BTC
DIR=$BUILD/bench-fanout
rm -rf "$DIR"; mkdir -p "$DIR"
for b in edge auth tests/tools/busctl sidecast; do
  [ -x "$BUILD/$b" ] || { echo "fanout: $BUILD/$b missing: run make" >&2; exit 1; }
done

# five distinct free ports: held open together while chosen (one at a time could repeat one)
free_ports() { python3 -c 'import socket,sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"; }
read -r NATS_PORT NATS_MON REDIS_PORT ADMIN_PORT EDGE_PORT <<<"$(free_ports 5)"
NATS_URL=nats://127.0.0.1:$NATS_PORT
pids=()
cleanup() { # newest first: the edge stops before NATS
  local i
  for (( i=${#pids[@]}-1; i>=0; i-- )); do
    kill "${pids[$i]}" 2>/dev/null && wait "${pids[$i]}" 2>/dev/null || true
  done
}
trap cleanup EXIT

wait_url() { # URL WHAT: 10 s at most
  for _ in $(seq 1 100); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "fanout: $2 not ready ($1)" >&2; exit 1
}

bash scripts/gen-dev.sh "$DIR/dev" >/dev/null
nats-server -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MON" -js -sd "$DIR/jetstream" \
  >"$DIR/nats.log" 2>&1 & pids+=($!); NATS_PID=$!
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$DIR" \
  >"$DIR/redis.log" 2>&1 & pids+=($!)
wait_url "http://127.0.0.1:$NATS_MON/healthz" nats-server
export NATS_URL REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0 LOG_LEVEL=warn
# its own nats-server and redis-server, open on loopback: the services need the flag for that
export DEV_INSECURE_BUS=1
export JWT_ISSUER=sidecast JWT_AUDIENCE=sidecast JWT_PUBLIC_KEYS=$DIR/dev/public.pem
JWT_PRIVATE_KEY=$DIR/dev/signing-key.pem JWT_KID=dev-1 AUTH_USERS=$DIR/dev/users.conf \
  ACCESS_TOKEN_TTL=1800 ADMIN_LISTEN=127.0.0.1:$ADMIN_PORT \
  "$BUILD/auth" >"$DIR/auth.log" 2>&1 & pids+=($!)
EDGE_LISTEN=127.0.0.1:$EDGE_PORT EDGE_ID=edge-bench EDGE_WORKERS=2 HISTORY_STORAGE=memory \
  EDGE_MAX_CONNECTIONS=50000 EDGE_PING_INTERVAL_MS=3600000 \
  "$BUILD/edge" >"$DIR/edge.log" 2>&1 & pids+=($!); EDGE_PID=$!
wait_url "http://127.0.0.1:$ADMIN_PORT/readyz" auth
wait_url "http://127.0.0.1:$EDGE_PORT/readyz" edge

TOKEN=$("$BUILD/tests/tools/busctl" "$NATS_URL" req auth.token \
  '{"body":{"grant_type":"password","username":"bob","password":"builder"}}' 5000 \
  | tail -n 1 | python3 -c 'import json,sys;print(json.load(sys.stdin)["access_token"])')
URL=ws://127.0.0.1:$EDGE_PORT/ws

stream_seq() { curl -fs "http://127.0.0.1:$NATS_MON/jsz?streams=true" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(sum(s["state"]["last_seq"] for a in d.get("account_details") or [] for s in a.get("stream_detail") or []))'; }

# One case: a line in rows.txt (raw outputs kept in $DIR).
run_case() { # RUN CONNS RATE
  local run=$1 n=$2 rate=$3 tag="r$1-$2-$3" procs=1
  [ "$n" -ge 10000 ] && procs=2
  "$BUILD/tests/tools/busctl" "$NATS_URL" req "\$JS.API.STREAM.PURGE.SIDECAST" '{}' 5000 \
    | tail -n 1 | grep -q '"success":true' || { echo "fanout: stream purge failed" >&2; exit 1; }
  local q0; q0=$(stream_seq)
  "$BUILD/sidecast" bench fanout --url "$URL" --token "$TOKEN" --conns "$n" --procs "$procs" \
    --threads "$THREADS" --topic "$TOPIC" --nats "$NATS_URL" --rate "$rate" --seconds "$SECS" \
    --size "$SIZE" --drain 15 --setup-timeout 60 --pid "$EDGE_PID,$NATS_PID" --json \
    >"$DIR/bench-$tag.out" 2>"$DIR/bench-$tag.err" || true
  local stored=$(( $(stream_seq) - q0 ))
  curl -fs "http://127.0.0.1:$EDGE_PORT/metrics" >"$DIR/metrics-$tag.txt" 2>/dev/null || true
  grep -q '^{' "$DIR/bench-$tag.out" || {
    echo "fanout: no result from sidecast bench ($tag)" >&2; cat "$DIR/bench-$tag.err" >&2; exit 1; }
  python3 - "$run" "$stored" "$DIR/bench-$tag.out" >>"$DIR/rows.txt" <<'EOF'
import json, sys
d = json.loads([l for l in open(sys.argv[3]) if l.startswith("{")][-1])
s, w = d["servers"], d["window_s"] or 1
print(sys.argv[1], d["conns"], d["rate"], d["published"], sys.argv[2], d["deliveries"],
      "%.0f" % d["deliveries_per_s"], "%.2f" % d.get("cpu_us_per_delivery", 0),
      "%.0f" % (100 * s[0]["cpu_s"] / w), "%.0f" % (100 * s[1]["cpu_s"] / w),
      "%.1f" % (s[0]["rss_end_kib"] / 1024), "%.2f" % d["lat_p50_ms"], "%.2f" % d["lat_p99_ms"],
      "%.2f" % d["lat_p999_ms"], "%.2f" % d["client_cpu_s"], "%.2f" % d["setup_s"],
      "yes" if d["complete"] else "no",
      "%d/%d/%d/%d/%d" % (d["min_per_conn"], d["max_per_conn"], d["loss"], d["gaps"],
                          d["disorder"]))
EOF
}

echo "Edge fan-out: $(date -u +%F), $(nproc) cores, EDGE_WORKERS=2, ${SECS}s per case," \
     "${SIZE}-byte payloads, load generator threads=$THREADS, runs=$RUNS"
for run in $(seq 1 "$RUNS"); do
  for c in $CASES; do run_case "$run" "${c%%:*}" "${c##*:}"; done
done

header() {
  echo
  echo "| conns | events/s | events sent / stored | deliveries | deliveries/s | edge CPU µs/delivery | edge CPU % of a core | NATS CPU % | edge RSS MiB | latency p50 / p99 / p99.9 ms | client CPU s | set-up s | every event, in order (min/max/loss/gaps/disorder) |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
}
# rows.txt: run conns rate sent stored deliveries dps us/delivery edge% nats% rss p50 p99 p999
#           client_cpu_s setup_s complete min/max/loss/gaps/disorder
row() { awk '{ printf "| %d | %d | %d / %d | %d | %d | %.2f | %d | %d | %.1f | %.2f / %.2f / %.2f | %.2f | %.2f | %s (%s) |\n",
               $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18 }'; }
for run in $(seq 1 "$RUNS"); do
  echo; echo "Run $run:"; header
  awk -v r="$run" '$1 == r' "$DIR/rows.txt" | row
done
if [ "$RUNS" -gt 1 ]; then
  echo; echo "Median of $RUNS runs ('every event' only if so in every run):"; header
  for c in $CASES; do
    n=${c%%:*}; rate=${c##*:}
    awk -v n="$n" -v rate="$rate" '$2 == n && $3 == rate' "$DIR/rows.txt" | python3 -c '
import sys
rows = [l.split() for l in sys.stdin if l.strip()]
def med(i):
    v = sorted(float(r[i]) for r in rows)
    return (v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2
ok = "yes" if all(r[16] == "yes" for r in rows) else "no"
print("m " + " ".join([rows[0][1], rows[0][2]] + ["%g" % med(i) for i in range(3, 16)]
                      + [ok, rows[-1][17]]))' | row
  done
fi
echo
echo "logs and raw outputs: $DIR (edge.log: $(grep -c . "$DIR/edge.log" || true) lines)"
