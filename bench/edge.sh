#!/usr/bin/env bash
# bench/edge.sh - the edge suite of `make bench` (bench/run.sh runs it): the same cases with
# `sidecast bench` against three servers on free loopback ports, each started fresh for each
# case and stopped after it:
#   sidecast  the edge (EDGE_WORKERS=2) beside nats-server (JetStream, file storage) and Redis
#   nats      nats-server's WebSocket listener (NATS protocol over WebSocket, no auth)
#   ws        bench/peers/ws-broadcast.js (Node, npm ws) fed by a nats-server through npm nats
# Every fan-out is fed by the same NATS publisher (`sidecast bench fanout --nats`).
# Cases: idle (RSS per connection), fanout (deliveries/s, server CPU per delivery, latency),
# connect (handshakes/s; the edge with distinct ES256 tokens, distinct RS256 tokens and one
# shared token). One JSON
# line per case and run in $OUT/results.jsonl, latency histograms in $OUT/hist/, logs in
# $OUT/edge/.
#
#   RUNS=3 BENCH_QUICK=0 bench/edge.sh     BENCH_TARGETS="sidecast nats ws"
#   IDLE_SIZES="1000 10000 19000" IDLE_TOKENS=idle (a user per connection; pool: 512 users)
#   FANOUT_CASES="1:100 1000:10 1000:100 1000:1000 10000:10 10000:100" (subscribers:msg/s)
#   FANOUT_SECONDS=3 FANOUT_DRAIN=3 IDLE_SECONDS=2 CONNECT_CONNS=10000 CONNECT_DISTINCT=10000
#   FANOUT_MIN_EVENTS=100: a fan-out runs long enough to publish that many events (10 s at
#   10/s), so that its p99 is a percentile of many passes, not the slowest of 30
# DEFLATE_CASES="1000:100": fan-outs repeated for the edge with clients on permessage-deflate.
# DELAY_CASES="1000:100:20 1000:1000:5" (subscribers:msg/s:ms): fan-outs repeated for the edge
# with EDGE_WRITE_DELAY_MS (events wait that long to share writes).
# NOHOLD_CASES="1000:1000 10000:100": fan-outs repeated for the edge with its busy hold off
# (EDGE_BUSY_HOLD_MAX_MS=0: every pass writes as soon as the previous one ended). Every edge
# fan-out also records the edge's write system calls (sc_edge_writes_total, handshakes and
# replies included) and busy holds from its /metrics.
# TLS (wss://) for TLS_TARGETS="sidecast nats" (the edge's EDGE_TLS_LISTEN, nats-server's
# `websocket { tls {...} }`, both on one throwaway ECDSA P-256 certificate made into
# $OUT/edge/tls/ by openssl for this run, its CA passed to `sidecast bench --cacert`):
#   TLS_IDLE_SIZES (default IDLE_SIZES), TLS_FANOUT_CASES="1000:100 1000:1000",
#   TLS_CONNECT_CONNS (default CONNECT_CONNS): handshakes, full and resumed (--resume); the
#   edge with one shared token, so the token costs what a cached one costs.
# An empty IDLE_SIZES, FANOUT_CASES, DEFLATE_CASES, DELAY_CASES, TLS_TARGETS, TLS_IDLE_SIZES
# or TLS_FANOUT_CASES, or CONNECT_CONNS / CONNECT_DISTINCT / TLS_CONNECT_CONNS of 0, skips
# that case.
# Idle opens the sizes in steps on one server (RSS read after each); every case ends its
# connections with close(2), without the closing handshake (--fast-close): nothing measured
# depends on it, and an overloaded peer would make each case wait for it.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
RUNS=${RUNS:-3}
OUT=${BENCH_OUT:-$BUILD/bench-run}
if [ "${BENCH_QUICK:-0}" = 1 ]; then
  d_idle="1000 5000"; d_fan="1000:100 1000:1000 5000:20"; d_secs=3; d_conn=2000; d_dist=1000
else
  d_idle="1000 10000 19000"; d_fan="1:100 1000:10 1000:100 1000:1000 10000:10 10000:100"
  d_secs=3
  d_conn=10000; d_dist=10000
fi
TARGETS=${BENCH_TARGETS:-"sidecast nats ws"}
IDLE_SIZES=${IDLE_SIZES-$d_idle}
FANOUT_CASES=${FANOUT_CASES-$d_fan}
DEFLATE_CASES=${DEFLATE_CASES-1000:100}
DELAY_CASES=${DELAY_CASES-1000:100:20 1000:1000:5}
NOHOLD_CASES=${NOHOLD_CASES-1000:1000 10000:100}
FSECS=${FANOUT_SECONDS:-$d_secs}
MIN_EVENTS=${FANOUT_MIN_EVENTS:-100}
ISECS=${IDLE_SECONDS:-2}
DRAIN=${FANOUT_DRAIN:-3}
CONNECT_CONNS=${CONNECT_CONNS:-$d_conn}
CONNECT_DISTINCT=${CONNECT_DISTINCT:-$d_dist}
IDLE_TOKENS=${IDLE_TOKENS:-idle} # idle: a distinct user per connection; pool: the 512
TLS_TARGETS=${TLS_TARGETS-"sidecast nats"}
TLS_IDLE_SIZES=${TLS_IDLE_SIZES-$IDLE_SIZES}
TLS_FANOUT_CASES=${TLS_FANOUT_CASES-1000:100 1000:1000}
TLS_CONNECT_CONNS=${TLS_CONNECT_CONNS:-$CONNECT_CONNS}
SOURCES=127.0.0.1-127.0.0.8
TOPIC=prices.BTC
DIR=$OUT/edge
mkdir -p "$DIR" "$OUT/hist"
: >"$OUT/results.jsonl"
# shellcheck source=bench/capacity/lib.sh
source bench/capacity/lib.sh
SC=$BUILD/sidecast
for b in sidecast edge tests/tools/busctl; do
  [ -x "$BUILD/$b" ] || die "$BUILD/$b missing: run make"
done

# The Node peer's packages, into the build directory (never into the repository).
PEERS=$BUILD/peers
if [[ " $TARGETS " == *" ws "* ]] &&
   { [ ! -d "$PEERS/node_modules/ws" ] || [ ! -d "$PEERS/node_modules/nats" ]; }; then
  command -v npm >/dev/null || die "npm is needed for the Node ws peer (apt-get install npm)"
  mkdir -p "$PEERS"
  [ -f "$PEERS/package.json" ] ||
    echo '{"name":"sidecast-bench-peers","private":true}' >"$PEERS/package.json"
  if ! (cd "$PEERS" && timeout 300 npm install --no-audit --no-fund ws@8 nats@2 >npm.log 2>&1); then
    cat "$PEERS/npm.log" >&2
    die "npm could not fetch ws and nats into $PEERS (no registry access?);" \
        "BENCH_TARGETS=\"sidecast nats\" skips the Node peer"
  fi
fi

if [[ " $TARGETS " == *" ws "* ]]; then
  nm=$(cd "$PEERS/node_modules" && pwd)
  echo "- Node peer: npm ws $(node -p "require('$nm/ws/package.json').version")," \
       "npm nats $(node -p "require('$nm/nats/package.json').version")" >"$OUT/peers-versions.txt"
fi

# Keys and tokens: a distinct user per connection for idle (as after an edge restart: every
# user's inbox is a NATS subscription of its own), a pool of 512 distinct users for fan-out
# (the edge's verified-token cache holds 1024, so each is verified once), CONNECT_DISTINCT
# for the connect case, and one.
make_keys
"$SC" bench tokens --key "$DIR/dev/signing-key.pem" --count 512 >"$DIR/tokens-pool.txt"
idle_max=1
for n in $IDLE_SIZES $TLS_IDLE_SIZES; do [ "$n" -gt "$idle_max" ] && idle_max=$n; done
if [ "$IDLE_TOKENS" = idle ] && [ "$idle_max" -gt 1 ]; then
  "$SC" bench tokens --key "$DIR/dev/signing-key.pem" --count "$idle_max" --user-prefix idle- \
    >"$DIR/tokens-idle.txt"
fi
"$SC" bench tokens --key "$DIR/dev/signing-key.pem" --count "$((CONNECT_DISTINCT > 0 ? CONNECT_DISTINCT : 1))" \
  --user-prefix conn- >"$DIR/tokens-distinct.txt"
# The same distinct users signed RS256 (kid rsa-1, added to the edge's keys): RSA-2048
# verifies in ~15 µs here against ~50 µs for ECDSA P-256, and only the edge verifies.
# (Kept across runs into the same $OUT, like gen-dev.sh's keys: appended once.)
if ! grep -q '^kid: rsa-1$' "$DIR/dev/public.pem"; then
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$DIR/dev/rsa-key.pem" 2>/dev/null
  { echo; echo "kid: rsa-1"; openssl pkey -in "$DIR/dev/rsa-key.pem" -pubout; } >>"$DIR/dev/public.pem"
fi
"$SC" bench tokens --key "$DIR/dev/rsa-key.pem" --kid rsa-1 \
  --count "$((CONNECT_DISTINCT > 0 ? CONNECT_DISTINCT : 1))" --user-prefix rconn- \
  >"$DIR/tokens-distinct-rs256.txt"
"$SC" bench tokens --key "$DIR/dev/signing-key.pem" --count 1 --user-prefix shared- \
  >"$DIR/tokens-one.txt"

# TLS: a throwaway CA and an ECDSA P-256 server certificate for 127.0.0.1, made for this run
# (never committed), shared by the edge and nats-server. kTLS needs the kernel's "tls" ULP.
TLS=$DIR/tls
if [ -n "$TLS_TARGETS" ]; then
  mkdir -p "$TLS"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TLS/ca.key" \
    -out "$TLS/ca.pem" -days 2 -subj /CN=sidecast-bench-ca 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TLS/server.key" \
    -out "$TLS/server.csr" -subj /CN=127.0.0.1 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' >"$TLS/server.ext"
  openssl x509 -req -in "$TLS/server.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" \
    -CAcreateserial -out "$TLS/server.pem" -days 2 -extfile "$TLS/server.ext" 2>/dev/null
  {
    echo "- TLS: $(openssl version); server certificate $(openssl x509 -in "$TLS/server.pem" -noout -text |
      grep -o 'ASN1 OID: [a-z0-9]*' | sed 's/ASN1 OID: //') (ECDSA), made for this run"
    echo "- kTLS: the kernel's TCP ULPs are \"$(cat /proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null)\""
  } >"$OUT/tls.txt"
fi
# ---- servers ----------------------------------------------------------------------------------

NATS_PID=""; REDIS_PID=""
group_start() { # TARGET: what stays up for the whole target (the feeding NATS, Redis)
  case $1 in
    sidecast) start_nats js; start_redis ;;
    ws) start_plain_nats feed ;;
    nats) NATS_PID="" ;;
  esac
}
group_stop() { cleanup; NATS_PID=""; REDIS_PID=""; }

start_plain_nats() { # NAME [websocket|websocket-tls]: sets NATS_PORT NATS_URL NATS_PID (WS_PORT)
  NATS_PORT=$(free_port); NATS_MON=$(free_port); NATS_URL=nats://127.0.0.1:$NATS_PORT
  {
    echo "listen: \"127.0.0.1:$NATS_PORT\""
    echo "http: \"127.0.0.1:$NATS_MON\""
    echo "max_payload: 65536"
    if [ "${2:-}" = websocket ]; then
      WS_PORT=$(free_port)
      echo "websocket { listen: \"127.0.0.1:$WS_PORT\"; no_tls: true }"
    elif [ "${2:-}" = websocket-tls ]; then
      WS_PORT=$(free_port)
      echo "websocket { listen: \"127.0.0.1:$WS_PORT\";" \
           "tls { cert_file: \"$TLS/server.pem\"; key_file: \"$TLS/server.key\" } }"
    fi
  } >"$DIR/$1.conf"
  nats-server -c "$DIR/$1.conf" >"$DIR/$1.log" 2>&1 & pids+=($!); NATS_PID=$!
  wait_url "http://127.0.0.1:$NATS_MON/healthz" nats-server
  check_listener "$NATS_PORT" "$NATS_PID"
}

SERVER_PID=""; URL=""; PIDS=""; EDGE_CASE_ENV=""; TLS_ARGS=()
server_start() { # TARGET [tls]: URL is wss:// with tls (TLS_ARGS: the CA to verify it with)
  TLS_ARGS=()
  case $1 in
    sidecast)
      local tls_env=""
      if [ "${2:-}" = tls ]; then
        local tport; tport=$(free_port)
        tls_env="EDGE_TLS_LISTEN=127.0.0.1:$tport EDGE_TLS_CERT=$TLS/server.pem EDGE_TLS_KEY=$TLS/server.key"
      fi
      # shellcheck disable=SC2086
      start_edge HISTORY_STORAGE=file EDGE_MAX_CONNECTIONS=20000 EDGE_PING_INTERVAL_MS=3600000 \
        JWT_ISSUER=sidecast JWT_AUDIENCE=sidecast $EDGE_CASE_ENV $tls_env
      SERVER_PID=$EDGE_PID; URL=ws://127.0.0.1:$EDGE_PORT/ws; PIDS=$EDGE_PID,$NATS_PID
      [ -z "$tls_env" ] || URL=wss://127.0.0.1:$tport/ws ;;
    nats)
      if [ "${2:-}" = tls ]; then
        start_plain_nats wsnats websocket-tls
        URL=wss://127.0.0.1:$WS_PORT/
      else
        start_plain_nats wsnats websocket
        URL=ws://127.0.0.1:$WS_PORT/
      fi
      SERVER_PID=$NATS_PID; PIDS=$NATS_PID ;;
    ws)
      local port; port=$(free_port)
      (ulimit -n 20000; exec env NODE_PATH="$PEERS/node_modules" node bench/peers/ws-broadcast.js \
        "$port" "$NATS_URL") >"$DIR/node.log" 2>&1 & pids+=($!); SERVER_PID=$!
      local _
      for _ in $(seq 1 100); do grep -q '^listening' "$DIR/node.log" && break; sleep 0.1; done
      grep -q '^listening' "$DIR/node.log" || { cat "$DIR/node.log" >&2; die "ws peer not ready"; }
      URL=ws://127.0.0.1:$port/; PIDS=$SERVER_PID,$NATS_PID ;;
  esac
  [ "${2:-}" != tls ] || TLS_ARGS=(--cacert "$TLS/ca.pem")
}
server_stop() {
  stop_pid "$SERVER_PID"
  [ "$CUR_TARGET" = nats ] && NATS_PID=""
  SERVER_PID=""
  return 0
}

# ---- cases ------------------------------------------------------------------------------------

record() { # CASE RUN FILE [LINE]: the JSON result line, labelled, into results.jsonl
  local line=${4:-}
  [ -n "$line" ] || line=$(grep '^{' "$3" | tail -n 1 || true)
  if [ -z "$line" ]; then
    echo "bench: $1 run $2: no result (see $3 and ${3%.out}.err)" >&2
    return 0
  fi
  printf '{"case":"%s","run":%d,"result":%s}\n' "$1" "$2" "$line" >>"$OUT/results.jsonl"
  python3 - "$1" "$2" "$line" <<'EOF' >&2
import json, sys
d = json.loads(sys.argv[3])
keys = ["ready", "failed", "handshakes_per_s", "handshakes_per_cpu_s", "rss_per_conn_b",
        "deliveries_per_s", "loss", "cpu_us_per_delivery", "lat_p50_ms", "lat_p99_ms", "complete"]
print("bench: %-28s run %s: %s" % (sys.argv[1], sys.argv[2],
      " ".join("%s=%s" % (k, d[k]) for k in keys if k in d)))
EOF
}

auth_args() { # TARGET KIND: token options for the edge
  [ "$1" = sidecast ] || return 0
  echo "--tokens $DIR/tokens-$2.txt"
}

procs_for() { # CONNS: client processes (at most 19,000 connections each, 2 from 10,000 up)
  if [ "$1" -ge 10000 ]; then echo 2; else echo 1; fi
}

run_idle() { # TARGET RUN [tls] N1 N2 ...: one server, the connections opened in steps
  local t=$1 r=$2 kind=idle tls=""; shift 2
  if [ "$1" = tls ]; then kind=idle-tls; tls=tls; shift; fi
  local tag="$t-$kind-r$r" steps; steps=$(echo "$@" | tr ' ' ',')
  server_start "$t" $tls
  # shellcheck disable=SC2046
  "$SC" bench idle --target "$t" --url "$URL" "${TLS_ARGS[@]}" \
    $(auth_args "$t" "$IDLE_TOKENS") --conns "$steps" \
    --procs "$(procs_for "${!#}")" --source "$SOURCES" --topic "$TOPIC" --seconds "$ISECS" \
    --setup-timeout 90 --pid "$PIDS" --fast-close --json >"$DIR/$tag.out" 2>"$DIR/$tag.err" \
    || true
  local line n
  while read -r line; do
    n=$(echo "$line" | sed -nE 's/.*"conns":([0-9]+).*/\1/p')
    record "$t $kind $n" "$r" "$DIR/$tag.out" "$line"
  done < <(grep '"step":' "$DIR/$tag.out" || true)
  server_stop
}

run_fanout() { # TARGET RUN N RATE [deflate|delay-MS|tls]
  local t=$1 r=$2 n=$3 rate=$4 kind=fanout extra="" tls=""
  if [ "${5:-}" = deflate ]; then kind=fanout-deflate; extra=--deflate; fi
  if [ "${5:-}" = tls ]; then kind=fanout-tls; tls=tls; fi
  case ${5:-} in delay-*) kind=fanout-$5; EDGE_CASE_ENV="EDGE_WRITE_DELAY_MS=${5#delay-}" ;; esac
  if [ "${5:-}" = nohold ]; then kind=fanout-nohold; EDGE_CASE_ENV="EDGE_BUSY_HOLD_MAX_MS=0"; fi
  local tag="$1-$kind-$3-$4-r$2"
  local secs; secs=$(awk -v s="$FSECS" -v m="$MIN_EVENTS" -v r="$rate" \
    'BEGIN {t = m / r; if (t > int(t)) t = int(t) + 1; print (t > s ? t : s)}')
  server_start "$t" $tls
  if [ "$t" = sidecast ]; then
    "$BUILD/tests/tools/busctl" "$NATS_URL" req "\$JS.API.STREAM.PURGE.SIDECAST" '{}' 5000 \
      >/dev/null 2>&1 || true
  fi
  # shellcheck disable=SC2046
  "$SC" bench fanout --target "$t" --url "$URL" "${TLS_ARGS[@]}" $(auth_args "$t" pool) --conns "$n" \
    --procs "$(procs_for "$n")" --source "$SOURCES" --topic "$TOPIC" --nats "$NATS_URL" \
    --rate "$rate" --seconds "$secs" --drain "$DRAIN" --setup-timeout 90 --pid "$PIDS" \
    --fast-close --json $extra \
    --hist "$OUT/hist/$tag.txt" >"$DIR/$tag.out" 2>"$DIR/$tag.err" || true
  local line=""
  if [ "$t" = sidecast ]; then
    curl -fs "http://127.0.0.1:$EDGE_PORT/metrics" >"$DIR/$tag.metrics" 2>/dev/null || true
    line=$(python3 bench/edge_metrics.py "$DIR/$tag.out" "$DIR/$tag.metrics")
  fi
  record "$t $kind $n $rate" "$r" "$DIR/$tag.out" "$line"
  server_stop
  EDGE_CASE_ENV=""
}

run_connect() { # TARGET RUN N TOKENS(distinct|one|-) [tls|tls-resumed]
  local t=$1 r=$2 n=$3 k=$4 kind=connect tls="" extra=()
  case ${5:-} in
    tls) kind=connect-tls; tls=tls ;;
    tls-resumed) kind=connect-tls-resumed; tls=tls; extra=(--resume) ;;
  esac
  local tag="$1-$kind-$3-$4-r$2"
  server_start "$t" $tls
  # shellcheck disable=SC2046
  "$SC" bench connect --target "$t" --url "$URL" "${TLS_ARGS[@]}" "${extra[@]}" \
    $(auth_args "$t" "$k") --conns "$n" \
    --procs "$(procs_for "$n")" --source "$SOURCES" --concurrency 512 --setup-timeout 90 \
    --pid "$PIDS" --fast-close --json --hist "$OUT/hist/$tag.txt" >"$DIR/$tag.out" \
    2>"$DIR/$tag.err" || true
  record "$t $kind $n $k" "$r" "$DIR/$tag.out"
  server_stop
}

echo "bench: edge suite: targets [$TARGETS], idle [$IDLE_SIZES], fanout [$FANOUT_CASES]" \
     "${FSECS}s (at least $MIN_EVENTS events)," \
     "connect $CONNECT_CONNS (distinct tokens $CONNECT_DISTINCT);" \
     "TLS for [$TLS_TARGETS]: idle [$TLS_IDLE_SIZES], fanout [$TLS_FANOUT_CASES]," \
     "connect $TLS_CONNECT_CONNS; $RUNS run(s)" >&2
CUR_TARGET=""
for run in $(seq 1 "$RUNS"); do
  for t in $TARGETS; do
    CUR_TARGET=$t
    group_start "$t"
    # shellcheck disable=SC2086
    [ -z "$IDLE_SIZES" ] || run_idle "$t" "$run" $IDLE_SIZES
    for c in $FANOUT_CASES; do run_fanout "$t" "$run" "${c%%:*}" "${c##*:}"; done
    if [ "$t" = sidecast ]; then # the same with every client on permessage-deflate
      for c in $DEFLATE_CASES; do run_fanout "$t" "$run" "${c%%:*}" "${c##*:}" deflate; done
      for c in $DELAY_CASES; do # N:RATE:MS
        IFS=: read -r dn dr dms <<<"$c"
        run_fanout "$t" "$run" "$dn" "$dr" "delay-$dms"
      done
      for c in $NOHOLD_CASES; do run_fanout "$t" "$run" "${c%%:*}" "${c##*:}" nohold; done
    fi
    if [ "$t" = sidecast ]; then
      [ "$CONNECT_DISTINCT" = 0 ] || run_connect "$t" "$run" "$CONNECT_DISTINCT" distinct
      [ "$CONNECT_DISTINCT" = 0 ] ||
        run_connect "$t" "$run" "$CONNECT_DISTINCT" distinct-rs256
      [ "$CONNECT_CONNS" = 0 ] || run_connect "$t" "$run" "$CONNECT_CONNS" one
    elif [ "$CONNECT_CONNS" != 0 ]; then
      run_connect "$t" "$run" "$CONNECT_CONNS" -
    fi
    if [[ " $TLS_TARGETS " == *" $t "* ]]; then # the same over wss://
      # shellcheck disable=SC2086
      [ -z "$TLS_IDLE_SIZES" ] || run_idle "$t" "$run" tls $TLS_IDLE_SIZES
      for c in $TLS_FANOUT_CASES; do run_fanout "$t" "$run" "${c%%:*}" "${c##*:}" tls; done
      if [ "$TLS_CONNECT_CONNS" != 0 ]; then
        k=-; [ "$t" = sidecast ] && k=one
        run_connect "$t" "$run" "$TLS_CONNECT_CONNS" "$k" tls
        run_connect "$t" "$run" "$TLS_CONNECT_CONNS" "$k" tls-resumed
      fi
    fi
    group_stop
  done
done
echo "bench: edge suite done: $(wc -l <"$OUT/results.jsonl") results in $OUT/results.jsonl" >&2
