#!/usr/bin/env bash
# `make demo`: a scripted walk-through with the CLI against the stack `make up` runs (in
# another terminal). Every step is bounded in time; the token file lives in build/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
GATEWAY=${SIDECAST_GATEWAY:-http://localhost:${GATEWAY_PORT:-8080}}
export SIDECAST_TOKEN_FILE=$BUILD/demo/token.json SIDECAST_GATEWAY=$GATEWAY
# With make up TLS=1 the edge's ws_url is wss://, signed by the development CA.
if [ -z "${SIDECAST_CACERT:-}" ] && [ -e deploy/dev/ca.pem ]; then
  export SIDECAST_CACERT=$PWD/deploy/dev/ca.pem
fi
CLI=$BUILD/sidecast
step() { printf '\n\033[1m== %s\033[0m\n$ %s\n' "$1" "$2"; }

if ! curl -fsS -o /dev/null "$GATEWAY/readyz"; then
  echo "make demo: no gateway at $GATEWAY. Start the stack first: make up (in another terminal)" >&2
  exit 1
fi
mkdir -p "$BUILD/demo"

step "1. Log in through the gateway (password grant)" "sidecast login alice"
"$CLI" login alice --password wonderland

step "2. Live prices from the producer, through the edge" "sidecast listen prices.BTC prices.ETH --count 4"
"$CLI" listen prices.BTC prices.ETH --count 4 --timeout 20

step "3. An order: 202 at once, the fill pushed to the inbox later" "sidecast order BTC 1 --wait"
"$CLI" order BTC 1 --wait --timeout 20

step "4. A chat message: client -> edge -> NATS -> producer -> every subscriber" \
  "sidecast listen chat.lobby --count 1 & sidecast publish chat.lobby '{\"text\":\"hello\"}'"
"$CLI" listen chat.lobby --count 1 --timeout 15 &
listener=$!
sleep 1
"$CLI" publish chat.lobby '{"text":"hello from the demo"}'
wait "$listener"

step "5. What bob may not see" "sidecast login bob && sidecast listen chat.lobby"
SIDECAST_TOKEN_FILE=$BUILD/demo/bob.json "$CLI" login bob --password builder
SIDECAST_TOKEN_FILE=$BUILD/demo/bob.json "$CLI" listen chat.lobby --count 1 --timeout 5 || true

printf '\nDone. The browser demo: %s/ (alice / wonderland)\n' "$GATEWAY"
