#!/usr/bin/env bash
# What Redis holds per connection for presence (docs/CAPACITY.md, question 4).
#
# 1. Synthetic, N connections with the edge's key shapes (services/edge/presence.h):
#      sc:presence:user:<sub>    hash  "<edge>/<conn>" -> "<connected_at>"
#      sc:presence:conns:<edge>  set   "<sub>\t<conn>"
#      sc:presence:edge:<edge>   string with a TTL (heartbeat), sc:presence:edges set
#    written with redis-cli --pipe, once with one connection per user and once with two
#    (N/2 users); used_memory before and after, divided by N. RUNS runs, medians.
# 2. The real edge: NATS, Redis, auth and one edge; `sidecast bench idle` opens CAP_EDGE_CONNS
#    connections (all of bob, so one user hash with that many fields); used_memory delta per
#    connection once the edge has registered them all, the keys as the edge wrote them, and
#    that they are gone after the connections close.
#
#   bench/capacity/redis.sh   CAP_CONNS=10000 CAP_EDGE_CONNS=2000 RUNS=3
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
N=${CAP_CONNS:-10000}
EN=${CAP_EDGE_CONNS:-2000}
RUNS=${RUNS:-3}
DIR=$BUILD/capacity-redis
rm -rf "$DIR"; mkdir -p "$DIR"
for b in edge auth sidecast tests/tools/busctl; do
  [ -x "$BUILD/$b" ] || { echo "capacity: $BUILD/$b missing: run make" >&2; exit 1; }
done
# shellcheck source=bench/capacity/lib.sh
. bench/capacity/lib.sh

start_redis
gen() { # N PER_USER: RESP commands on stdout
  python3 - "$1" "$2" <<'PY'
import sys, time
n, per = int(sys.argv[1]), int(sys.argv[2])
edge, now = "edge-cap-1", str(int(time.time()))
out = sys.stdout.buffer
def cmd(*a):
    b = [x.encode() for x in a]
    out.write(b"*%d\r\n" % len(b) + b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in b))
cmd("SET", "sc:presence:edge:" + edge, now, "EX", "15")
cmd("SADD", "sc:presence:edges", edge)
for i in range(n):
    sub, conn = "user-%07d" % (i // per), str(1000000 + i)
    cmd("HSET", "sc:presence:user:" + sub, edge + "/" + conn, now)
    cmd("SADD", "sc:presence:conns:" + edge, sub + "\t" + conn)
PY
}

echo "Redis presence memory: $(date -u +%F), $(redis-server --version | cut -d' ' -f3), N=$N, runs=$RUNS; load average $(cut -d' ' -f1-3 /proc/loadavg)"
one=(); two=()
for run in $(seq 1 "$RUNS"); do
  for per in 1 2; do
    rcli flushall >/dev/null
    m0=$(redis_used)
    gen "$N" "$per" | rcli --pipe >/dev/null
    m1=$(redis_used)
    b=$(( (m1 - m0) / N ))
    echo "run=$run per_user=$per conns=$N keys=$(rcli dbsize) used_delta=$(( m1 - m0 )) bytes_per_conn=$b" | tee -a "$DIR/runs.txt"
    if [ "$per" = 1 ]; then one+=("$b"); else two+=("$b"); fi
  done
done
u=$(rcli --scan --pattern 'sc:presence:user:*' | sed -n 1p)
echo
echo "| presence, synthetic (median of $RUNS) | bytes per connection |"
echo "|---|---|"
echo "| one connection per user | $(printf '%s\n' "${one[@]}" | median) |"
echo "| two connections per user | $(printf '%s\n' "${two[@]}" | median) |"
echo "| MEMORY USAGE of one user hash with 2 fields ($u) | $(rcli memory usage "$u") |"
echo "| MEMORY USAGE of the edge's conns set ($N members) | $(rcli memory usage sc:presence:conns:edge-cap-1) |"
rcli flushall >/dev/null

# 2. the real edge
make_keys
start_nats nats
start_auth
start_edge HISTORY_STORAGE=memory EDGE_MAX_CONNECTIONS=20000 EDGE_PING_INTERVAL_MS=3600000
TOKEN=$("$BUILD/tests/tools/busctl" "$NATS_URL" req auth.token \
  '{"body":{"grant_type":"password","username":"bob","password":"builder"}}' 5000 \
  | tail -n 1 | python3 -c 'import json,sys;print(json.load(sys.stdin)["access_token"])')
sleep 1
m0=$(redis_used)
"$BUILD/sidecast" bench idle --url "ws://127.0.0.1:$EDGE_PORT/ws" --token "$TOKEN" \
  --conns "$EN" --topic prices.BTC --seconds 8 --setup-timeout 60 --quiet \
  >"$DIR/ws.out" 2>"$DIR/ws.err" &
ws=$!; pids+=("$ws")
n=0
for _ in $(seq 1 200); do
  n=$(rcli hlen sc:presence:user:bob); [ "$n" -ge "$EN" ] && break; sleep 0.05
done
m1=$(redis_used)
echo
echo "real edge: $n of $EN connections registered; used_memory +$(( m1 - m0 )) B =" \
     "$(( (m1 - m0) / EN )) B per connection (one user, $EN devices)"
echo
echo "| key (as the edge wrote it) | type | TTL s | size |"
echo "|---|---|---|---|"
for k in $(rcli --scan --pattern 'sc:presence:*' | sort); do
  t=$(rcli type "$k")
  case $t in hash) sz="$(rcli hlen "$k") fields";; set) sz="$(rcli scard "$k") members";; *) sz=-;; esac
  echo "| \`$k\` | $t | $(rcli ttl "$k") | $sz |"
done
echo "sample field of the user hash: $(rcli hkeys sc:presence:user:bob | sed -n 1p) ->" \
     "$(rcli hget sc:presence:user:bob "$(rcli hkeys sc:presence:user:bob | sed -n 1p)")"
wait "$ws" || true
for _ in $(seq 1 100); do [ "$(rcli hlen sc:presence:user:bob)" = 0 ] && break; sleep 0.05; done
echo "after the connections closed: sc:presence:user:bob has $(rcli hlen sc:presence:user:bob) fields," \
     "used_memory $(( $(redis_used) - m0 )) B above the start"
echo
echo "raw: $DIR/runs.txt"
