#!/usr/bin/env bash
# The local runner behind `make up`: generates dev keys and demo users if missing, starts
# nats-server (JetStream) and redis-server from Debian's packages and every Sidecast service
# built in build/, waits until each is ready, prints where to point a client, streams the
# logs with a prefix per service, and on Ctrl-C stops everything it started (nothing else).
#
# Ports (override with the variables): NATS_PORT=4222 NATS_MON_PORT=8222 REDIS_PORT=6379
# GATEWAY_PORT=8080 AUTH_ADMIN_PORT=9101 EDGE_PORT=8090 PRODUCER_ADMIN_PORT=9102
# BRIDGE_ADMIN_PORT=9103.
#
# The bridge (ZeroMQ ingress, docs/BRIDGE.md) runs only when configured: when
# deploy/config/bridge.json exists (copy deploy/config/bridge.example.json and name your
# ZeroMQ endpoints), or BRIDGE_ROUTES names another route file. Otherwise it is not started.
#
# Many edges on a NATS cluster: EDGES=N runs N edges on EDGE_PORT, EDGE_PORT+1, ... (EDGE_ID
# edge-1, edge-2, ...); NATS_CLUSTER=N runs N nats-servers with JetStream, node i on client
# port NATS_PORT+i-1, monitoring NATS_MON_PORT+i-1 and cluster route port
# NATS_CLUSTER_PORT+i-1 (default 6222), each with its own store under run/cluster<N>/, and
# every service gets all N URLs in NATS_URL. With NATS_CLUSTER>=3 the edges create the
# history stream with HISTORY_REPLICAS=3. Defaults EDGES=1 NATS_CLUSTER=1: one nats-server,
# one edge, as before.
#
# TLS=1 (make up TLS=1) adds, beside the plain ports, https:// on the gateway
# (GATEWAY_TLS_PORT=8443) and wss:// on each edge (EDGE_TLS_PORT=8493, and with EDGES=N edge i
# on EDGE_TLS_PORT+i-1: 8493, 8494, ...), with the development CA and server certificate that
# scripts/gen-dev.sh makes in deploy/dev/ (ca.pem, tls.pem, tls.key). auth then hands out
# wss://localhost:EDGE_TLS_PORT/ws as ws_url (so every client, the CLI and the page served on
# the plain port too, goes to the edge over TLS), and the https origins are allowed. The
# banner says how to trust the CA (CLI, curl, Chromium, Firefox) and how to stop trusting it.
# Without TLS=1 nothing of this happens.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${BUILD:-build}
RUN=$ROOT/run
NATS_PORT=${NATS_PORT:-4222}
NATS_MON_PORT=${NATS_MON_PORT:-8222}
NATS_CLUSTER_PORT=${NATS_CLUSTER_PORT:-6222}
REDIS_PORT=${REDIS_PORT:-6379}
GATEWAY_PORT=${GATEWAY_PORT:-8080}
AUTH_ADMIN_PORT=${AUTH_ADMIN_PORT:-9101}
EDGE_PORT=${EDGE_PORT:-8090}
PRODUCER_ADMIN_PORT=${PRODUCER_ADMIN_PORT:-9102}
BRIDGE_ADMIN_PORT=${BRIDGE_ADMIN_PORT:-9103}
BRIDGE_ROUTES=${BRIDGE_ROUTES:-}
if [ -z "$BRIDGE_ROUTES" ] && [ -e deploy/config/bridge.json ]; then
  BRIDGE_ROUTES=$ROOT/deploy/config/bridge.json
fi
if [ -n "$BRIDGE_ROUTES" ] && [ ! -r "$BRIDGE_ROUTES" ]; then
  echo "make up: BRIDGE_ROUTES=$BRIDGE_ROUTES is not a readable file" >&2; exit 1
fi
EDGES=${EDGES:-1}
NATS_CLUSTER=${NATS_CLUSTER:-1}
TLS=${TLS:-0}
GATEWAY_TLS_PORT=${GATEWAY_TLS_PORT:-8443}
EDGE_TLS_PORT=${EDGE_TLS_PORT:-8493}

count_ok() { [[ $2 =~ ^[0-9]+$ ]] && [ "$2" -ge 1 ] && [ "$2" -le "$3" ]; }
if ! count_ok EDGES "$EDGES" 16; then
  echo "make up: EDGES must be a number from 1 to 16 (got '$EDGES')" >&2; exit 1
fi
if ! count_ok NATS_CLUSTER "$NATS_CLUSTER" 7; then
  echo "make up: NATS_CLUSTER must be a number from 1 to 7 (got '$NATS_CLUSTER')" >&2; exit 1
fi
case $TLS in
  0 | 1) ;;
  *) echo "make up: TLS must be 0 or 1 (got '$TLS')" >&2; exit 1 ;;
esac
if [ "$NATS_CLUSTER" = 2 ]; then
  echo "make up: note: a 2-node JetStream cluster has no quorum once a node is down;" \
       "use NATS_CLUSTER=3 to try a failover" >&2
fi

# Every port this run needs, as NAME:PORT (NAME is the variable to change when it is busy).
specs=()
for ((i = 0; i < NATS_CLUSTER; i++)); do
  specs+=("NATS_PORT:$((NATS_PORT + i))" "NATS_MON_PORT:$((NATS_MON_PORT + i))")
  [ "$NATS_CLUSTER" -gt 1 ] && specs+=("NATS_CLUSTER_PORT:$((NATS_CLUSTER_PORT + i))")
done
specs+=("REDIS_PORT:$REDIS_PORT" "GATEWAY_PORT:$GATEWAY_PORT" "AUTH_ADMIN_PORT:$AUTH_ADMIN_PORT")
for ((i = 0; i < EDGES; i++)); do specs+=("EDGE_PORT:$((EDGE_PORT + i))"); done
specs+=("PRODUCER_ADMIN_PORT:$PRODUCER_ADMIN_PORT")
[ -z "$BRIDGE_ROUTES" ] || specs+=("BRIDGE_ADMIN_PORT:$BRIDGE_ADMIN_PORT")
if [ "$TLS" = 1 ]; then
  specs+=("GATEWAY_TLS_PORT:$GATEWAY_TLS_PORT")
  for ((i = 0; i < EDGES; i++)); do specs+=("EDGE_TLS_PORT:$((EDGE_TLS_PORT + i))"); done
fi

port_busy() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
declare -A owner=()
for spec in "${specs[@]}"; do
  name=${spec%%:*}; port=${spec#*:}
  if [ -n "${owner[$port]:-}" ]; then
    echo "make up: port $port is wanted by both ${owner[$port]} and $name (with EDGES=$EDGES" \
         "NATS_CLUSTER=$NATS_CLUSTER TLS=$TLS each takes a range of ports); choose other ports." >&2
    exit 1
  fi
  owner[$port]=$name
  if port_busy "$port"; then
    echo "make up: port $port ($name) is already in use." >&2
    echo "  Stop whatever listens there (ss -ltnp 'sport = :$port'), or choose another port:" >&2
    echo "  make up $name=<port>" >&2
    exit 1
  fi
done

bash scripts/gen-dev.sh deploy/dev
DEV=$ROOT/deploy/dev
NATS_AUTH=$ROOT/deploy/config/nats-auth.conf  # each service its NATS user and subjects
mkdir -p "$RUN"
set -a
# shellcheck disable=SC1091
. deploy/config/sidecast.env
set +a
urls=()
for ((i = 0; i < NATS_CLUSTER; i++)); do urls+=("nats://127.0.0.1:$((NATS_PORT + i))"); done
NATS_URL=$(IFS=,; echo "${urls[*]}")
export NATS_URL
if [ "$NATS_CLUSTER" -ge 3 ]; then export HISTORY_REPLICAS=${HISTORY_REPLICAS:-3}; fi
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
export JWT_PUBLIC_KEYS=$ROOT/deploy/dev/public.pem
export JWT_PRIVATE_KEY=$ROOT/deploy/dev/signing-key.pem
export AUTH_USERS=$ROOT/deploy/dev/users.conf
export GATEWAY_ROUTES=$ROOT/deploy/config/routes.json
export GATEWAY_LISTEN=0.0.0.0:$GATEWAY_PORT
export EDGE_LISTEN=0.0.0.0:$EDGE_PORT
export EDGE_PUBLIC_URL=ws://localhost:$EDGE_PORT/ws
export GATEWAY_STATIC_DIR=$ROOT/clients/web
if [ "$TLS" = 1 ]; then
  # gen-dev.sh made them above; it never replaces a file, so an expired one stops us here
  for f in ca.pem tls.pem tls.key; do
    [ -e "$DEV/$f" ] || { echo "make up: $DEV/$f is missing (scripts/gen-dev.sh makes it)" >&2; exit 1; }
  done
  if ! openssl x509 -in "$DEV/tls.pem" -noout -checkend 86400 >/dev/null 2>&1; then
    echo "make up: $DEV/tls.pem expires within a day (or has expired): remove deploy/dev/tls.pem" \
         "and deploy/dev/tls.key (and ca.pem, ca.key if the CA is out of date too), then run" \
         "make up TLS=1 again to get new ones" >&2
    exit 1
  fi
  export GATEWAY_TLS_LISTEN=0.0.0.0:$GATEWAY_TLS_PORT
  export GATEWAY_TLS_CERT=$DEV/tls.pem GATEWAY_TLS_KEY=$DEV/tls.key
  export EDGE_TLS_LISTEN=0.0.0.0:$EDGE_TLS_PORT
  export EDGE_TLS_CERT=$DEV/tls.pem EDGE_TLS_KEY=$DEV/tls.key
  # What auth hands out as ws_url: an https page may only open wss://, and an http one may.
  export EDGE_PUBLIC_URL=wss://localhost:$EDGE_TLS_PORT/ws
  tls_origins="https://localhost:$GATEWAY_TLS_PORT,https://127.0.0.1:$GATEWAY_TLS_PORT"
  export ALLOWED_ORIGINS="$ALLOWED_ORIGINS,$tls_origins"
  export GATEWAY_CORS_ORIGINS="${GATEWAY_CORS_ORIGINS:-http://localhost:$GATEWAY_PORT,http://127.0.0.1:$GATEWAY_PORT},$tls_origins"
fi

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

# with_env FILE CMD...: runs CMD with FILE's variables (deploy/dev/<process>.env: its NATS
# user and password, Redis password) added to the environment, not on any command line.
with_env() {
  local f=$1
  shift
  (set -a; . "$f"; set +a; exec "$@")
}

# start NAME CMD...: runs CMD with its output prefixed by [NAME]
declare -A names=()
start() {
  local name=$1; shift
  "$@" > >(sed -u "s/^/[$name] /") 2>&1 &
  pids+=($!)
  names[$!]=$name
}

wait_http() { # NAME URL [TRIES of 0.1 s]; an https URL is verified against the dev CA
  local ca=()
  [[ $2 != https://* ]] || ca=(--cacert "$DEV/ca.pem")
  for _ in $(seq 1 "${3:-100}"); do
    if curl -fsS "${ca[@]}" -o /dev/null "$2" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "make up: $1 did not become ready at $2 (see its log lines above)" >&2
  exit 1
}

if [ "$NATS_CLUSTER" = 1 ]; then
  start nats with_env "$DEV/nats.env" nats-server -c "$NATS_AUTH" -a 127.0.0.1 -p "$NATS_PORT" \
    -m "$NATS_MON_PORT" -js -sd "$RUN/jetstream"
  wait_http nats "http://127.0.0.1:$NATS_MON_PORT/healthz"
else
  # Every node routes to every other one on loopback. The store is per cluster size, so that
  # a later run with another NATS_CLUSTER does not meet the peers of an earlier one.
  for ((i = 1; i <= NATS_CLUSTER; i++)); do
    routes=()
    for ((j = 1; j <= NATS_CLUSTER; j++)); do
      [ "$j" = "$i" ] || routes+=("nats://127.0.0.1:$((NATS_CLUSTER_PORT + j - 1))")
    done
    start "nats-$i" with_env "$DEV/nats.env" nats-server -c "$NATS_AUTH" \
      -a 127.0.0.1 -p "$((NATS_PORT + i - 1))" \
      -m "$((NATS_MON_PORT + i - 1))" -n "nats-$i" --cluster_name sidecast-local \
      --cluster "nats://127.0.0.1:$((NATS_CLUSTER_PORT + i - 1))" \
      --routes "$(IFS=,; echo "${routes[*]}")" -js -sd "$RUN/cluster$NATS_CLUSTER/nats-$i"
  done
  for ((i = 1; i <= NATS_CLUSTER; i++)); do
    wait_http "nats-$i" "http://127.0.0.1:$((NATS_MON_PORT + i - 1))/varz"
  done
  # The edges create the replicated history stream: JetStream needs a meta leader first.
  leader=""
  for _ in $(seq 1 300); do
    leader=$(curl -fsS "http://127.0.0.1:$NATS_MON_PORT/jsz" 2>/dev/null |
             grep -Eo '"leader": *"[^"]+"' | head -n 1 | sed -E 's/.*"([^"]+)"$/\1/') || true
    [ -n "$leader" ] && break
    sleep 0.1
  done
  if [ -z "$leader" ]; then
    echo "make up: the NATS cluster elected no JetStream meta leader within 30 s" \
         "(see the nats-* log lines above)" >&2
    exit 1
  fi
  echo "make up: NATS cluster of $NATS_CLUSTER nodes, JetStream meta leader $leader"
fi
# The password goes in a configuration file (0600), not on the command line.
redis_password=$(sed -n 's/^REDIS_PASSWORD=//p' "$DEV/redis.env")
(umask 077; echo "requirepass $redis_password" >"$RUN/redis.conf")
start redis redis-server "$RUN/redis.conf" --port "$REDIS_PORT" --bind 127.0.0.1 --save "" \
  --appendonly no --dir "$RUN"
for _ in $(seq 1 100); do
  REDISCLI_AUTH=$redis_password redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
  sleep 0.1
done
unset redis_password

ADMIN_LISTEN=127.0.0.1:$AUTH_ADMIN_PORT start auth with_env "$DEV/auth.env" "$BUILD/auth"
wait_http auth "http://127.0.0.1:$AUTH_ADMIN_PORT/readyz"
ADMIN_LISTEN=127.0.0.1:$PRODUCER_ADMIN_PORT start producer with_env "$DEV/producer.env" \
  "$BUILD/producer"
wait_http producer "http://127.0.0.1:$PRODUCER_ADMIN_PORT/readyz"
start gateway with_env "$DEV/gateway.env" "$BUILD/gateway"
wait_http gateway "http://127.0.0.1:$GATEWAY_PORT/readyz"
# with TLS=1, through the https listener too: the certificate checked against the dev CA
if [ "$TLS" = 1 ]; then wait_http gateway "https://localhost:$GATEWAY_TLS_PORT/readyz"; fi
if [ "$EDGES" = 1 ]; then
  start edge with_env "$DEV/edge.env" "$BUILD/edge"
  wait_http edge "http://127.0.0.1:$EDGE_PORT/readyz"
  if [ "$TLS" = 1 ]; then wait_http edge "https://localhost:$EDGE_TLS_PORT/readyz"; fi
else
  # One at a time: the first creates the history stream, the others find it.
  for ((i = 1; i <= EDGES; i++)); do
    p=$((EDGE_PORT + i - 1))
    tp=$((EDGE_TLS_PORT + i - 1))
    if [ "$TLS" = 1 ]; then
      EDGE_ID=edge-$i EDGE_LISTEN=0.0.0.0:$p EDGE_TLS_LISTEN=0.0.0.0:$tp \
        EDGE_PUBLIC_URL=wss://localhost:$tp/ws \
        start "edge-$i" with_env "$DEV/edge.env" "$BUILD/edge"
    else
      EDGE_ID=edge-$i EDGE_LISTEN=0.0.0.0:$p EDGE_PUBLIC_URL=ws://localhost:$p/ws \
        start "edge-$i" with_env "$DEV/edge.env" "$BUILD/edge"
    fi
    wait_http "edge-$i" "http://127.0.0.1:$p/readyz" 200
    if [ "$TLS" = 1 ]; then wait_http "edge-$i" "https://localhost:$tp/readyz" 200; fi
  done
fi

if [ -n "$BRIDGE_ROUTES" ]; then
  # after the edges, which make the history stream its events go into; ready once NATS is connected and every endpoint's socket is set up: ZeroMQ connects to
  # the peers in the background, so a publisher that is not running yet does not stop us
  ADMIN_LISTEN=127.0.0.1:$BRIDGE_ADMIN_PORT BRIDGE_ROUTES=$BRIDGE_ROUTES \
    start bridge with_env "$DEV/bridge.env" "$BUILD/bridge"
  wait_http bridge "http://127.0.0.1:$BRIDGE_ADMIN_PORT/readyz"
  bridge_line="    Bridge        admin http://127.0.0.1:$BRIDGE_ADMIN_PORT/readyz  (ZeroMQ endpoints of ${BRIDGE_ROUTES#"$ROOT"/})"
else
  bridge_line="    Bridge        not started (no deploy/config/bridge.json; see docs/BRIDGE.md)"
fi
if [ "$EDGES" = 1 ]; then
  ws_lines="    WebSocket     ws://localhost:$EDGE_PORT/ws  (subprotocol sidecast.v1; health :$EDGE_PORT/readyz)"
else
  ws_lines=""
  for ((i = 1; i <= EDGES; i++)); do
    p=$((EDGE_PORT + i - 1))
    ws_lines+="    WebSocket     ws://localhost:$p/ws  (edge-$i; ready http://127.0.0.1:$p/readyz)"
    [ "$i" -lt "$EDGES" ] && ws_lines+=$'\n'
  done
fi
if [ "$TLS" = 1 ]; then
  ws_lines+=$'\n'"    Demo (HTTPS)  https://localhost:$GATEWAY_TLS_PORT/  (the gateway over TLS; plain HTTP stays on :$GATEWAY_PORT)"
  for ((i = 1; i <= EDGES; i++)); do
    tp=$((EDGE_TLS_PORT + i - 1))
    if [ "$EDGES" = 1 ]; then
      ws_lines+=$'\n'"    WebSocket TLS wss://localhost:$tp/ws  (the ws_url auth hands out with TLS=1)"
    else
      ws_lines+=$'\n'"    WebSocket TLS wss://localhost:$tp/ws  (edge-$i; auth hands out edge-1's)"
    fi
  done
fi
if [ "$NATS_CLUSTER" = 1 ]; then
  nats_lines="    NATS          nats://127.0.0.1:$NATS_PORT  (monitoring http://127.0.0.1:$NATS_MON_PORT)"
else
  nats_lines="    NATS          $NATS_URL  (cluster sidecast-local, JetStream, stream replicas ${HISTORY_REPLICAS:-1})"
  for ((i = 1; i <= NATS_CLUSTER; i++)); do
    nats_lines+=$'\n'"      nats-$i      nats://127.0.0.1:$((NATS_PORT + i - 1))  (monitoring http://127.0.0.1:$((NATS_MON_PORT + i - 1)), route port $((NATS_CLUSTER_PORT + i - 1)))"
  done
fi

cat <<MSG

  Sidecast is up (development keys and users; see README.md).
    Browser demo  http://localhost:$GATEWAY_PORT/  (log in as alice / wonderland)
    API gateway   http://localhost:$GATEWAY_PORT
    JWKS          http://localhost:$GATEWAY_PORT/.well-known/jwks.json
$ws_lines
    Producer      admin http://127.0.0.1:$PRODUCER_ADMIN_PORT/readyz  (ticks on prices.BTC/ETH/SOL, POST /api/orders)
$bridge_line
$nats_lines
    Redis         redis://127.0.0.1:$REDIS_PORT
  Demo users: alice / wonderland, bob / builder. Try:
    curl -d grant_type=password -d username=alice -d password=wonderland localhost:$GATEWAY_PORT/auth/token
  then connect any WebSocket client to ws://localhost:$EDGE_PORT/ws?access_token=<access_token>
  and send {"type":"subscribe","topic":"prices.BTC"}; publish an event with NATS on events.prices.BTC
  (as a service: NATS and Redis take passwords, in deploy/dev/*.env; producer.env may publish events).
  Ctrl-C stops everything started here.

MSG
if [ "$TLS" = 1 ]; then
  not_after=$(openssl x509 -in "$DEV/tls.pem" -noout -enddate | sed 's/^notAfter=//')
  ca_cn=$(openssl x509 -in "$DEV/ca.pem" -noout -subject -nameopt multiline |
          sed -n 's/^ *commonName *= *//p')
  rel=${DEV#"$ROOT"/}
  cat <<MSG
  TLS (development only): the gateway and the edge serve $rel/tls.pem (localhost, 127.0.0.1,
  ::1; valid until $not_after), signed by the development CA $rel/ca.pem
  ("$ca_cn"; it may vouch for localhost names and loopback addresses only). Trust it:
    CLI       $BUILD/sidecast --cacert $rel/ca.pem login alice --password wonderland
              (or export SIDECAST_CACERT=$DEV/ca.pem once)
    curl      curl --cacert $rel/ca.pem https://localhost:$GATEWAY_TLS_PORT/readyz
    Chromium / Chrome on Linux (their NSS store; certutil is in Debian's libnss3-tools):
              mkdir -p ~/.pki/nssdb && certutil -d sql:\$HOME/.pki/nssdb -N --empty-password  (once, if it does not exist)
              certutil -d sql:\$HOME/.pki/nssdb -A -t C,, -n sidecast-dev -i $DEV/ca.pem
              then restart the browser and open https://localhost:$GATEWAY_TLS_PORT/
    Firefox   keeps its own store: Settings > Privacy & Security > Certificates > View
              Certificates > Authorities > Import $DEV/ca.pem, tick "Trust this CA to identify websites"
  Stop trusting it: certutil -d sql:\$HOME/.pki/nssdb -D -n sidecast-dev (Chromium / Chrome);
  in Firefox, Authorities > "Sidecast development" > Delete or Distrust; then drop --cacert and
  SIDECAST_CACERT. To make a new CA and certificate: rm $rel/ca.pem $rel/ca.key $rel/tls.pem
  $rel/tls.key, and trust the new CA instead.

MSG
fi
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
