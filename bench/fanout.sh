#!/usr/bin/env bash
# Edge fan-out with a C client: NATS (JetStream, memory), Redis, auth and edge (2 workers) on
# free loopback ports; for each case CONNS:RATE, bench/wsbench opens CONNS connections
# subscribed to prices.BTC, then `wsbench publish` sends RATE events/s for SECONDS on
# events.prices.BTC. Reports deliveries/s, the edge's CPU per delivery and share of one core
# (/proc/PID/stat between "ready" and "measured"), its RSS, publish-to-receipt latency, and
# whether every connection got every event in order. Client, edge and NATS share the cores.
#
# "Stored" is how far the JetStream stream's last sequence moved. The stream republishes each
# stored event to the edge, and with nats-server 2.9.10 the server's CPU per republished
# message grows with the number of messages the stream holds, so the stream is purged before
# each case (cases stay independent) and rates stay well below what NATS can ingest.
#
#   bench/fanout.sh   FANOUT_CASES="1000:50 1000:200 1000:500 10000:20 10000:100" (CONNS:RATE)
#                     FANOUT_SECONDS=10 RUNS=1 FANOUT_SIZE=128 (payload bytes)
#                     FANOUT_THREADS=1 (wsbench threads)
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
for b in edge auth tests/tools/busctl bench/wsbench; do
  [ -x "$BUILD/$b" ] || { echo "fanout: $BUILD/$b missing: run make" >&2; exit 1; }
done

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
NATS_PORT=$(free_port); NATS_MON=$(free_port); REDIS_PORT=$(free_port)
ADMIN_PORT=$(free_port); EDGE_PORT=$(free_port)
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

ticks() { local s; s=$(cat "/proc/$1/stat"); s=${s##*) }; set -- $s; echo "${12} ${13}"; } # user sys
stream_seq() { curl -fs "http://127.0.0.1:$NATS_MON/jsz?streams=true" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(sum(s["state"]["last_seq"] for a in d.get("account_details") or [] for s in a.get("stream_detail") or []))'; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
now() { date +%s.%N; }
HZ=$(getconf CLK_TCK)

wait_line() { # FILE LINE SECONDS PID: 0 once FILE has LINE; 1 if PID exits or time runs out
  local i
  for i in $(seq 1 $(( $3 * 20 ))); do
    grep -qx "$2" "$1" 2>/dev/null && return 0
    kill -0 "$4" 2>/dev/null || { grep -qx "$2" "$1" 2>/dev/null; return; }
    sleep 0.05
  done
  return 1
}

field() { sed -nE "s/.* $2=([^ ]+).*/\\1/p" "$1" | tail -n 1; } # FILE KEY from the result line

# One case: prints a table row (and keeps the raw outputs in $DIR).
run_case() { # RUN CONNS RATE
  local run=$1 n=$2 rate=$3 tag="r$1-$2-$3" expect=$(( $3 * SECS ))
  local out=$DIR/ws-$tag.out
  "$BUILD/tests/tools/busctl" "$NATS_URL" req "\$JS.API.STREAM.PURGE.SIDECAST" '{}' 5000 \
    | tail -n 1 | grep -q '"success":true' || { echo "fanout: stream purge failed" >&2; exit 1; }
  "$BUILD/bench/wsbench" --url "$URL" --token "$TOKEN" --conns "$n" --topic "$TOPIC" \
    --threads "$THREADS" --seconds $(( SECS + 15 )) --expect "$expect" --setup-timeout 60 \
    >"$out" 2>"$DIR/ws-$tag.err" &
  local ws=$!
  pids+=("$ws")
  wait_line "$out" ready 70 "$ws" || { echo "fanout: wsbench not ready ($tag)" >&2; cat "$DIR/ws-$tag.err" >&2; exit 1; }
  local rss_conns c0 n0 t0 c1 n1 t1 rss_end
  rss_conns=$(rss_kib "$EDGE_PID")
  local q0; q0=$(stream_seq)
  c0=$(ticks "$EDGE_PID"); n0=$(ticks "$NATS_PID"); t0=$(now)
  "$BUILD/bench/wsbench" publish --nats "$NATS_URL" --subject "events.$TOPIC" --rate "$rate" \
    --seconds "$SECS" --size "$SIZE" >"$DIR/pub-$tag.out" 2>&1 || true
  wait_line "$out" measured $(( SECS + 20 )) "$ws" || true
  c1=$(ticks "$EDGE_PID"); n1=$(ticks "$NATS_PID"); t1=$(now)
  rss_end=$(rss_kib "$EDGE_PID")
  local stored=$(( $(stream_seq) - q0 ))
  curl -fs "http://127.0.0.1:$EDGE_PORT/metrics" >"$DIR/metrics-$tag.txt" 2>/dev/null || true
  wait "$ws" || true
  local sent; sent=$(sed -nE 's/^sent=([0-9]+).*/\1/p' "$DIR/pub-$tag.out")
  local res=$out
  grep -q '^conns=' "$res" || { echo "fanout: no result from wsbench ($tag)" >&2; cat "$DIR/ws-$tag.err" >&2; exit 1; }
  local events dps p50 p99 complete mn mx lost gaps dis cli close_s hs
  events=$(field "$res" events); dps=$(field "$res" deliveries_per_s)
  p50=$(field "$res" lat_p50_ms); p99=$(field "$res" lat_p99_ms)
  mn=$(field "$res" min); mx=$(field "$res" max); lost=$(field "$res" lost)
  gaps=$(field "$res" gaps); dis=$(field "$res" disorder); cli=$(field "$res" client_cpu_pct)
  close_s=$(field "$res" close_s); hs=$(field "$res" handshake_s)
  complete=$(field "$res" complete)
  local cu0 cs0 cu1 cs1 nu0 ns0 nu1 ns1
  read -r cu0 cs0 <<<"$c0"; read -r cu1 cs1 <<<"$c1"; read -r nu0 ns0 <<<"$n0"; read -r nu1 ns1 <<<"$n1"
  # one line per case in rows.txt (fields: see row() below)
  awk -v n="$n" -v rate="$rate" -v sent="${sent:-0}" -v ev="$events" -v dps="$dps" \
      -v c="$(( cu1 + cs1 - cu0 - cs0 ))" -v csys="$(( cs1 - cs0 ))" -v stored="$stored" \
      -v nc="$(( nu1 + ns1 - nu0 - ns0 ))" -v hz="$HZ" -v t0="$t0" -v t1="$t1" \
      -v rss="$rss_end" -v p50="$p50" -v p99="$p99" -v cli="$cli" -v hs="$hs" -v cl="$close_s" \
      -v ok="$complete" -v mn="$mn" -v mx="$mx" -v lost="$lost" -v gaps="$gaps" -v dis="$dis" \
      -v run="$run" 'BEGIN {
    wall = t1 - t0; cpu = c / hz
    us = ev > 0 ? cpu * 1e6 / ev : 0
    printf "%s %d %d %d %d %d %.0f %.2f %.0f %.0f %.0f %.1f %s %s %s %.2f %.2f %s %s/%s/%s/%s/%s\n",
      run, n, rate, sent, stored, ev, dps, us, 100 * cpu / wall, (c > 0 ? 100 * csys / c : 0),
      100 * nc / hz / wall, rss / 1024, p50, p99, cli, hs, cl, ok, mn, mx, lost, gaps, dis
  }' >>"$DIR/rows.txt"
}

echo "Edge fan-out: $(date -u +%F), $(nproc) cores, EDGE_WORKERS=2, ${SECS}s per case," \
     "${SIZE}-byte payloads, wsbench threads=$THREADS, runs=$RUNS"
for run in $(seq 1 "$RUNS"); do
  for c in $CASES; do run_case "$run" "${c%%:*}" "${c##*:}"; done
done

header() {
  echo
  echo "| conns | events/s | events sent / stored | deliveries | deliveries/s | edge CPU µs/delivery | edge CPU % of a core (sys share) | NATS CPU % | edge RSS MiB | latency p50 / p99 ms | wsbench CPU % | handshakes s | close s | every event, in order (min/max/lost/gaps/disorder) |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
}
# rows.txt: run conns rate sent stored deliveries dps us/delivery edge% sys% nats% rss p50 p99
#           wsbench% handshake_s close_s complete min/max/lost/gaps/disorder
row() { awk '{ printf "| %d | %d | %d / %d | %d | %d | %.2f | %d (%d%%) | %d | %.1f | %.2f / %.2f | %d | %.2f | %.2f | %s (%s) |\n",
               $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19 }'; }
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
ok = "yes" if all(r[17] == "yes" for r in rows) else "no"
print("m " + " ".join([rows[0][1], rows[0][2]] + ["%g" % med(i) for i in range(3, 17)]
                      + [ok, rows[-1][18]]))' | row
  done
fi
echo
echo "logs and raw outputs: $DIR (edge.log: $(grep -c . "$DIR/edge.log" || true) lines)"
