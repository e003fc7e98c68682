#!/bin/sh
# tests/vm/ktls-guest.sh - runs inside the VM that tests/vm/ktls.sh boots (busybox sh; also
# runs on a host, where EXPECT=user checks the fallback): nats-server, Redis and the edge
# with TLS on loopback, then
#   check: per suite (TLS 1.3 AES-128/256-GCM, ChaCha20-Poly1305; TLS 1.2 ECDHE-ECDSA with
#          the same AEADs), `sidecast bench fanout` over wss:// (every event arrives, once, in
#          order) and the edge's sc_edge_tls_ktls_total and /proc/net/tls_stat say the kernel
#          sealed those connections' sends; openssl s_client sees close_notify after an HTTP
#          answer, and a KeyUpdate request ends a kTLS connection with close_notify (without
#          kTLS: it is answered); the edge drained (SIGTERM) under a listening CLI closes with
#          1001. Prints "N passed, N failed".
#   bench: FANOUT_CASES (subscribers:msg/s) with kTLS (auto) and EDGE_TLS_KTLS=off,
#          interleaved RUNS times: one "BENCH ktls=auto|off case=S:R run=I <bench json>" line
#          each.
# Environment: KTLS_DIR (certs, token: ca.pem tls.pem tls.key public.pem token.txt, the
# openssl configurations), EXPECT=kernel|user, MODE=check|bench, BIN (the binaries' directory
# or empty for PATH), WORK (a scratch directory).
set -u
KTLS_DIR=${KTLS_DIR:-/ktls}
EXPECT=${EXPECT:-kernel}
MODE=${MODE:-check}
WORK=${WORK:-/tmp/ktls}
BIN=${BIN:-}
NATS_PORT=${NATS_PORT:-4222} NATS_MON=${NATS_MON:-8222} REDIS_PORT=${REDIS_PORT:-6379}
EDGE_PORT=${EDGE_PORT:-8090} TLS_PORT=${TLS_PORT:-8443}
CA=$KTLS_DIR/ca.pem
TOKEN=$(cat "$KTLS_DIR/token.txt")
mkdir -p "$WORK"
pass=0 fail=0
ok() { echo "PASS $1"; pass=$((pass + 1)); }
ko() { echo "FAIL $1${2:+: $2}"; fail=$((fail + 1)); }
bin() { if [ -n "$BIN" ]; then echo "$BIN/$1"; else echo "$1"; fi; }
get() { wget -q -O - "http://127.0.0.1:$EDGE_PORT$1" 2>/dev/null; }
metric() { get /metrics | awk -v k="$1" '$1 == k {print $2}'; }
kernel_n() { metric 'sc_edge_tls_ktls_total{result="kernel"}'; }
user_n() { metric 'sc_edge_tls_ktls_total{result="user"}'; }
tls_stat() { awk -v k="$1" '$1 == k {print $2}' /proc/net/tls_stat 2>/dev/null || echo 0; }

nats_pid="" redis_pid="" edge_pid=""
stop_all() {
  for p in $edge_pid $redis_pid $nats_pid; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
}
trap stop_all EXIT

rm -rf "$WORK/js"
"$(bin nats-server)" -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MON" -js -sd "$WORK/js" \
  >"$WORK/nats.log" 2>&1 &
nats_pid=$!
"$(bin redis-server)" --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$WORK" >"$WORK/redis.log" 2>&1 &
redis_pid=$!
i=0
until wget -q -O /dev/null "http://127.0.0.1:$NATS_MON/healthz" 2>/dev/null; do
  i=$((i + 1)); [ $i -gt 100 ] && { ko nats-server "not ready"; exit 1; }; sleep 0.1
done

edge_start() { # EDGE_TLS_KTLS value
  EDGE_LISTEN=127.0.0.1:$EDGE_PORT EDGE_TLS_LISTEN=127.0.0.1:$TLS_PORT \
    EDGE_TLS_CERT=$KTLS_DIR/tls.pem EDGE_TLS_KEY=$KTLS_DIR/tls.key EDGE_TLS_KTLS=$1 \
    NATS_URL=nats://127.0.0.1:$NATS_PORT REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0 \
    LOG_LEVEL=${EDGE_LOG_LEVEL:-info} DEV_INSECURE_BUS=1 JWT_PUBLIC_KEYS=$KTLS_DIR/public.pem \
    JWT_ISSUER=sidecast JWT_AUDIENCE=sidecast EDGE_ID=edge-vm EDGE_WORKERS=2 \
    HISTORY_STORAGE=file EDGE_MAX_CONNECTIONS=20000 EDGE_PING_INTERVAL_MS=3600000 \
    HISTORY_MAX_BYTES=67108864 HISTORY_INBOX_MAX_BYTES=16777216 \
    HISTORY_CLIENT_MAX_BYTES=16777216 \
    EDGE_DRAIN_MS=${EDGE_DRAIN_MS:-1000} EDGE_TLS_HANDSHAKE_TIMEOUT_MS=30000 \
    "$(bin edge)" >>"$WORK/edge.log" 2>&1 &
  edge_pid=$!
  i=0
  until get /readyz >/dev/null; do
    i=$((i + 1)); [ $i -gt 150 ] && { ko "edge $1" "not ready"; tail -5 "$WORK/edge.log"; return 1; }
    sleep 0.1
  done
}
edge_stop() { kill "$edge_pid" 2>/dev/null; wait "$edge_pid" 2>/dev/null; edge_pid=""; }

fanout() { # CONF CONNS RATE SECONDS [more bench options]: the bench's JSON line on stdout
  conf=$1 conns=$2 rate=$3 secs=$4; shift 4
  OPENSSL_CONF=$KTLS_DIR/$conf.cnf "$(bin sidecast)" bench fanout \
    --url "wss://127.0.0.1:$TLS_PORT/ws" --cacert "$CA" --token "$TOKEN" --conns "$conns" \
    --nats "nats://127.0.0.1:$NATS_PORT" --rate "$rate" --seconds "$secs" --drain 5 ${QUIET---quiet} \
    --json "$@"
}

# s_client with CONF: the request on stdin after the handshake, then, with KEYUPDATE, a
# KeyUpdate asking for ours; the whole transcript (-msg) in $WORK/sc.out.
sclient() { # CONF REQUEST [K]
  { printf "$2"; sleep 1; if [ -n "${3:-}" ]; then echo K; sleep 1; echo "x"; fi; sleep 2; } |
    OPENSSL_CONF=$KTLS_DIR/$1.cnf timeout 10 "$(bin openssl)" s_client \
      -connect "127.0.0.1:$TLS_PORT" -CAfile "$CA" -servername localhost -alpn http/1.1 -msg \
      >"$WORK/sc.out" 2>&1
}

SUITES=${SUITES:-"tls13-aes128 tls13-aes256 tls13-chacha20 tls12-aes128 tls12-aes256 tls12-chacha20"}

check() {
  if [ "$EXPECT" = kernel ]; then
    if grep -qw tls /proc/sys/net/ipv4/tcp_available_ulp; then ok "kernel offers the tls ULP"
    else ko "kernel offers the tls ULP" "$(cat /proc/sys/net/ipv4/tcp_available_ulp)"; fi
  fi
  edge_start auto || return
  for s in $SUITES; do
    k0=$(kernel_n) u0=$(user_n) t0=$(tls_stat TlsTxSw)
    if out=$(fanout "$s" 20 100 2); then ok "$s: 20 subscribers got every event in order"
    else ko "$s: fan-out over wss://" "$out"; fi
    k1=$(kernel_n) u1=$(user_n) t1=$(tls_stat TlsTxSw)
    if [ "$EXPECT" = kernel ]; then
      [ $((k1 - k0)) -ge 20 ] && [ "$u1" = "$u0" ] && [ $((t1 - t0)) -ge 20 ] &&
        ok "$s: the kernel sealed the sends (ktls kernel +$((k1 - k0)), TlsTxSw +$((t1 - t0)))" ||
        ko "$s: kTLS used" "kernel $k0->$k1 user $u0->$u1 TlsTxSw $t0->$t1"
    else
      [ $((u1 - u0)) -ge 20 ] && [ "$k1" = "$k0" ] &&
        ok "$s: tlsrec sealed the sends (fallback: ktls user +$((u1 - u0)))" ||
        ko "$s: fallback" "kernel $k0->$k1 user $u0->$u1"
    fi
    # the suite the configuration asks for is the one negotiated, and an HTTP answer ends
    # with close_notify
    sclient "$s" 'GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'
    want=$(cat "$KTLS_DIR/$s.want")
    if grep -q "Cipher is $want" "$WORK/sc.out" && grep -q "HTTP/1.1 200" "$WORK/sc.out" &&
       grep -q "<<< .*Alert.*" "$WORK/sc.out" && grep -A1 "<<< .*Alert" "$WORK/sc.out" | grep -q "01 00"; then
      ok "$s: $want negotiated; HTTP answer, then close_notify"
    else
      ko "$s: close_notify after an HTTP answer" "$(grep -E 'Cipher is|Alert|HTTP/1' "$WORK/sc.out" | head -5)"
    fi
  done
  # TLS 1.3 KeyUpdate asked by the client: kTLS cannot rekey, so close_notify and the end;
  # tlsrec answers with its own KeyUpdate and the connection stays.
  up='GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sidecast.v1\r\nAuthorization: Bearer '"$TOKEN"'\r\n\r\n'
  sclient tls13-aes128 "$up" K
  if ! grep -q "101 Switching Protocols" "$WORK/sc.out"; then
    ko "KeyUpdate request" "no upgrade: $(grep -E 'HTTP/1' "$WORK/sc.out" | head -2)"
  elif [ "$EXPECT" = kernel ]; then
    if grep -A1 "<<< .*Alert" "$WORK/sc.out" | grep -q "01 00" &&
       ! grep -q "<<< .*KeyUpdate" "$WORK/sc.out"; then
      ok "KeyUpdate request under kTLS: close_notify, no data under the old key"
    else ko "KeyUpdate request under kTLS" "$(grep -E '<<<|>>>' "$WORK/sc.out" | tail -6)"; fi
  else
    if grep -q "<<< .*KeyUpdate" "$WORK/sc.out"; then ok "KeyUpdate request: answered (tlsrec)"
    else ko "KeyUpdate request answered" "$(grep -E '<<<|>>>' "$WORK/sc.out" | tail -6)"; fi
  fi
  # drain: SIGTERM with subscribers on wss://, each gets 1001 and the stream ends cleanly
  QUIET= fanout tls13-aes128 20 50 8 --fast-close >"$WORK/drain.json" 2>&1 &
  bp=$!
  i=0 # until the 20 are subscribed (the bench's progress line says so), 60 s at most
  until grep -q "up 20/20" "$WORK/drain.json" || [ $i -ge 600 ]; do sleep 0.1; i=$((i + 1)); done
  kill -TERM "$edge_pid"
  wait "$edge_pid" 2>/dev/null
  rc_e=$?
  edge_pid=""
  wait "$bp"
  if [ "$rc_e" = 0 ] && grep -q "draining" "$WORK/edge.log"; then ok "edge drained under kTLS and exited 0"
  else ko "drain" "edge exit $rc_e"; fi
  n=$(grep -c "closed by the server (1001)" "$WORK/drain.json")
  other=$(grep "^bench: connection" "$WORK/drain.json" | grep -vc "closed by the server (1001)")
  if [ "$n" -ge 3 ] && [ "$other" = 0 ]; then ok "subscribers saw the drain's close frame (1001) under kTLS ($n printed)"
  else ko "drain close seen" "$(head -c 400 "$WORK/drain.json")"; fi
  # EDGE_TLS_KTLS=off keeps tlsrec even where the kernel offers kTLS
  edge_start off || return
  k0=$(kernel_n) u0=$(user_n)
  if out=$(fanout tls13-aes128 20 100 1); then ok "off: fan-out over wss://"; else ko "off: fan-out" "$out"; fi
  k1=$(kernel_n) u1=$(user_n)
  [ "$k1" = "$k0" ] && [ $((u1 - u0)) -ge 20 ] && ok "off: tlsrec sealed the sends" ||
    ko "off: tlsrec" "kernel $k0->$k1 user $u0->$u1"
  edge_stop
}

cpu_ticks() { # PID: utime+stime
  awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat"
}

bench() {
  runs=${RUNS:-3}
  for case in ${FANOUT_CASES:-1000:100 1000:1000}; do
    subs=${case%%:*} rate=${case##*:}
    r=1
    while [ "$r" -le "$runs" ]; do
      for m in auto off; do
        edge_start "$m" || return
        out=$(fanout tls13-aes128 "$subs" "$rate" "${FANOUT_SECONDS:-3}" --procs 2 \
          --pid "$edge_pid,$nats_pid" --fast-close 2>"$WORK/bench.err")
        echo "BENCH ktls=$m case=$case run=$r kernel=$(kernel_n) user=$(user_n) $out"
        edge_stop
      done
      r=$((r + 1))
    done
  done
}

ulimit -n 65536 2>/dev/null
if [ "$MODE" = bench ]; then bench; else check; fi
echo "$pass passed, $fail failed"
