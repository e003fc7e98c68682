#!/usr/bin/env bash
# The local runner behind `make up`: generates dev keys and demo users if missing, starts
# nats-server (JetStream) and redis-server from Debian's packages and every Sidecast service
# built in build/, waits until each is ready, prints where to point a client, streams the
# logs with a prefix per service, and on Ctrl-C stops everything it started (nothing else).
#
# Ports (override with the variables): NATS_PORT=4222 NATS_MON_PORT=8222 REDIS_PORT=6379
# GATEWAY_PORT=8080 AUTH_ADMIN_PORT=9101 EDGE_PORT=8090 PRODUCER_ADMIN_PORT=9102.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${BUILD:-build}
RUN=$ROOT/run
NATS_PORT=${NATS_PORT:-4222}
NATS_MON_PORT=${NATS_MON_PORT:-8222}
REDIS_PORT=${REDIS_PORT:-6379}
GATEWAY_PORT=${GATEWAY_PORT:-8080}
AUTH_ADMIN_PORT=${AUTH_ADMIN_PORT:-9101}
EDGE_PORT=${EDGE_PORT:-8090}
PRODUCER_ADMIN_PORT=${PRODUCER_ADMIN_PORT:-9102}

port_busy() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
for spec in "NATS_PORT:$NATS_PORT" "NATS_MON_PORT:$NATS_MON_PORT" "REDIS_PORT:$REDIS_PORT" \
            "GATEWAY_PORT:$GATEWAY_PORT" "AUTH_ADMIN_PORT:$AUTH_ADMIN_PORT" "EDGE_PORT:$EDGE_PORT" \
            "PRODUCER_ADMIN_PORT:$PRODUCER_ADMIN_PORT"; do
  name=${spec%%:*}; port=${spec#*:}
  if port_busy "$port"; then
    echo "make up: port $port ($name) is already in use." >&2
    echo "  Stop whatever listens there (ss -ltnp 'sport = :$port'), or choose another port:" >&2
    echo "  make up $name=<port>" >&2
    exit 1
  fi
done

bash scripts/gen-dev.sh deploy/dev
mkdir -p "$RUN"
set -a
# shellcheck disable=SC1091
. deploy/config/sidecast.env
set +a
export NATS_URL="nats://127.0.0.1:$NATS_PORT"
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
export JWT_PUBLIC_KEYS=$ROOT/deploy/dev/public.pem
export JWT_PRIVATE_KEY=$ROOT/deploy/dev/signing-key.pem
export AUTH_USERS=$ROOT/deploy/dev/users.conf
export GATEWAY_ROUTES=$ROOT/deploy/config/routes.json
export GATEWAY_LISTEN=0.0.0.0:$GATEWAY_PORT
export EDGE_LISTEN=0.0.0.0:$EDGE_PORT
export EDGE_PUBLIC_URL=ws://localhost:$EDGE_PORT/ws
export GATEWAY_STATIC_DIR=$ROOT/clients/web

pids=()
stopped=0
cleanup() {
  [ "$stopped" = 1 ] && return
  stopped=1
  echo
  echo "make up: stopping"
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  echo "make up: stopped"
}
trap 'cleanup; exit 0' INT TERM
trap cleanup EXIT

# start NAME CMD...: runs CMD with its output prefixed by [NAME]
declare -A names=()
start() {
  local name=$1; shift
  "$@" > >(sed -u "s/^/[$name] /") 2>&1 &
  pids+=($!)
  names[$!]=$name
}

wait_http() { # NAME URL
  for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null "$2" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "make up: $1 did not become ready at $2 (see its log lines above)" >&2
  exit 1
}

start nats nats-server -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MON_PORT" -js -sd "$RUN/jetstream"
wait_http nats "http://127.0.0.1:$NATS_MON_PORT/healthz"
start redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$RUN"
for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

ADMIN_LISTEN=127.0.0.1:$AUTH_ADMIN_PORT start auth "$BUILD/auth"
wait_http auth "http://127.0.0.1:$AUTH_ADMIN_PORT/readyz"
ADMIN_LISTEN=127.0.0.1:$PRODUCER_ADMIN_PORT start producer "$BUILD/producer"
wait_http producer "http://127.0.0.1:$PRODUCER_ADMIN_PORT/readyz"
start gateway "$BUILD/gateway"
wait_http gateway "http://127.0.0.1:$GATEWAY_PORT/readyz"
start edge "$BUILD/edge"
wait_http edge "http://127.0.0.1:$EDGE_PORT/readyz"

cat <<MSG

  Sidecast is up (development keys and users; see README.md).
    Browser demo  http://localhost:$GATEWAY_PORT/  (log in as alice / wonderland)
    API gateway   http://localhost:$GATEWAY_PORT
    JWKS          http://localhost:$GATEWAY_PORT/.well-known/jwks.json
    WebSocket     ws://localhost:$EDGE_PORT/ws  (subprotocol sidecast.v1; health :$EDGE_PORT/readyz)
    Producer      admin http://127.0.0.1:$PRODUCER_ADMIN_PORT/readyz  (ticks on prices.BTC/ETH/SOL, POST /api/orders)
    NATS          nats://127.0.0.1:$NATS_PORT  (monitoring http://127.0.0.1:$NATS_MON_PORT)
    Redis         redis://127.0.0.1:$REDIS_PORT
  Demo users: alice / wonderland, bob / builder. Try:
    curl -d grant_type=password -d username=alice -d password=wonderland localhost:$GATEWAY_PORT/auth/token
  then connect any WebSocket client to ws://localhost:$EDGE_PORT/ws?access_token=<access_token>
  and send {"type":"subscribe","topic":"prices.BTC"}; publish an event with NATS on events.prices.BTC.
  Ctrl-C stops everything started here.

MSG
# One process dying (a crash, or a kill -9 in a drill) takes nothing else down: the others
# keep serving (clients of a dead edge reconnect to another one). Ctrl-C stops them all.
alive=("${pids[@]}")
while [ ${#alive[@]} -gt 0 ]; do
  dead=""
  code=0
  wait -n -p dead "${alive[@]}" || code=$?
  [ -n "$dead" ] || continue
  rest=()
  for p in "${alive[@]}"; do [ "$p" = "$dead" ] || rest+=("$p"); done
  alive=("${rest[@]}")
  echo "make up: ${names[$dead]:-process $dead} (pid $dead) exited with status $code;" \
       "the others keep running. Ctrl-C stops everything." >&2
done
echo "make up: every process has exited" >&2
