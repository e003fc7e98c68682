# shellcheck shell=bash
# bench/capacity/lib.sh - shared by the capacity scripts (sourced, not run): free loopback
# ports, starting NATS / Redis / auth / gateway / edge as children of the calling script (and
# only those are stopped at exit), CPU and RSS readings from /proc, medians.
# The caller sets DIR (its output directory) and BUILD before sourcing; the start_* functions
# set the variables they name (ports, URLs, PIDs) for it.
# shellcheck disable=SC2034

pids=()
cleanup() { # newest first: services stop before NATS and Redis
  local i
  for (( i=${#pids[@]}-1; i>=0; i-- )); do
    kill "${pids[$i]}" 2>/dev/null && wait "${pids[$i]}" 2>/dev/null || true
  done
  pids=()
  rm -f "$FREE_PORTS_FILE"
}
trap cleanup EXIT

# free_port: a free loopback port, none handed out before by this script. Each call binds
# port 0 and lets it go, so two calls before the servers bind could otherwise hand out the
# same port (seen: nats-server's monitor and WebSocket ports); the ports handed out are
# kept in a file of the script's own ($$ is the script's PID in subshells too).
FREE_PORTS_FILE=${TMPDIR:-/tmp}/sidecast-free-ports.$$
free_port() {
  python3 -c 'import socket,sys
f = sys.argv[1]
try:
    taken = set(open(f).read().split())
except FileNotFoundError:
    taken = set()
for _ in range(1000):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = str(s.getsockname()[1]); s.close()
    if p not in taken:
        break
open(f, "a").write(p + "\n")
print(p)' "$FREE_PORTS_FILE"
}

die() { echo "capacity: $*" >&2; exit 1; }

wait_url() { # URL WHAT: 10 s at most
  local _
  for _ in $(seq 1 100); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "$2 not ready ($1)"
}

# PORT PID: the process listening on 127.0.0.1:PORT must be PID (a port taken by someone
# else's server would otherwise get our traffic)
check_listener() {
  local owner
  owner=$(ss -Hltnp "sport = :$1" | grep -o 'pid=[0-9]*' | sed -n 1p | cut -d= -f2)
  [ "$owner" = "$2" ] || die "port $1 is served by pid ${owner:-none}, not by ours ($2)"
}

# start_nats NAME: sets NATS_PORT NATS_MON NATS_URL NATS_PID (JetStream store in $DIR/NAME)
start_nats() {
  NATS_PORT=$(free_port); NATS_MON=$(free_port)
  NATS_URL=nats://127.0.0.1:$NATS_PORT
  rm -rf "${DIR:?}/$1"
  nats-server -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MON" -js -sd "$DIR/$1" \
    >"$DIR/$1.log" 2>&1 & pids+=($!); NATS_PID=$!
  wait_url "http://127.0.0.1:$NATS_MON/healthz" nats-server
  check_listener "$NATS_PORT" "$NATS_PID"
}

stop_pid() { # PID: one of ours
  local i
  kill "$1" 2>/dev/null && wait "$1" 2>/dev/null || true
  for i in "${!pids[@]}"; do [ "${pids[$i]}" = "$1" ] && unset 'pids[i]'; done
  pids=("${pids[@]}")
}

# start_redis: sets REDIS_PORT REDIS_URL REDIS_PID
start_redis() {
  REDIS_PORT=$(free_port)
  REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$DIR" \
    >"$DIR/redis.log" 2>&1 & pids+=($!); REDIS_PID=$!
  local _
  for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
  check_listener "$REDIS_PORT" "$REDIS_PID"
}
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }
redis_used() { rcli info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p'; }

# dev keys and users file in $DIR/dev (scripts/gen-dev.sh: alice, bob, producer)
make_keys() { bash scripts/gen-dev.sh "$DIR/dev" >/dev/null; }

# What the auth benches start from: dev keys, $DIR/users.conf with users u0..u63 (password
# "capacity", sha512crypt; the hash in AUTH_BENCH_HASH), NATS and Redis.
auth_bench_world() {
  make_keys
  AUTH_BENCH_HASH=$(printf 'capacity' | openssl passwd -6 -stdin)
  { for i in $(seq 0 63); do echo "user u$i $AUTH_BENCH_HASH sub=prices.*"; done; } \
    >"$DIR/users.conf"
  start_nats nats
  start_redis
}

# start_auth [VAR=VALUE...]: sets AUTH_ADMIN AUTH_PID
start_auth() {
  AUTH_ADMIN=$(free_port)
  env NATS_URL="$NATS_URL" REDIS_URL="$REDIS_URL" LOG_LEVEL=warn DEV_INSECURE_BUS=1 \
    JWT_PRIVATE_KEY="$DIR/dev/signing-key.pem" JWT_KID=dev-1 \
    AUTH_USERS="${AUTH_USERS_FILE:-$DIR/dev/users.conf}" ADMIN_LISTEN="127.0.0.1:$AUTH_ADMIN" \
    "$@" "$BUILD/auth" >"$DIR/auth.log" 2>&1 & pids+=($!); AUTH_PID=$!
  wait_url "http://127.0.0.1:$AUTH_ADMIN/readyz" auth
}

# start_gateway: sets GW_PORT GW_PID
start_gateway() {
  GW_PORT=$(free_port)
  env NATS_URL="$NATS_URL" LOG_LEVEL=warn DEV_INSECURE_BUS=1 JWT_PUBLIC_KEYS="$DIR/dev/public.pem" \
    GATEWAY_ROUTES=deploy/config/routes.json GATEWAY_LISTEN="127.0.0.1:$GW_PORT" \
    "$BUILD/gateway" >"$DIR/gateway.log" 2>&1 & pids+=($!); GW_PID=$!
  wait_url "http://127.0.0.1:$GW_PORT/readyz" gateway
  check_listener "$GW_PORT" "$GW_PID"
}

# start_edge [VAR=VALUE...]: sets EDGE_PORT EDGE_PID
start_edge() {
  EDGE_PORT=$(free_port)
  env NATS_URL="$NATS_URL" REDIS_URL="$REDIS_URL" LOG_LEVEL=warn DEV_INSECURE_BUS=1 \
    JWT_PUBLIC_KEYS="$DIR/dev/public.pem" EDGE_LISTEN="127.0.0.1:$EDGE_PORT" \
    EDGE_ID=edge-cap EDGE_WORKERS=2 "$@" "$BUILD/edge" >"$DIR/edge.log" 2>&1 & pids+=($!)
  EDGE_PID=$!
  wait_url "http://127.0.0.1:$EDGE_PORT/readyz" edge
}

cpu_s() { # PID: user+system seconds
  local s; s=$(cat "/proc/$1/stat"); s=${s##*) }
  # shellcheck disable=SC2086
  set -- $s
  awk -v u="${12}" -v k="${13}" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", (u + k) / hz}'
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

median() { sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]}'; } # lower middle
field() { sed -nE "s/.*(^| )$1=([^ ]+).*/\\2/p"; } # KEY's values, one per key=value line on stdin
