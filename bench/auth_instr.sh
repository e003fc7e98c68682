#!/usr/bin/env bash
# auth's user-space instructions per grant outside libjwt and the password hash (callgrind),
# a figure that does not depend on the machine's load: an auth binary under valgrind
# --tool=callgrind (default config: AUTH_WORKERS=4, LOG_LEVEL=info, the login throttle on),
# NATS and Redis beside it, bench/authbench driving grants over NATS for SECONDS after a
# warm-up, counted from a zeroed profile. Per grant: all of auth's instructions, those under
# token_sign (libjwt and the claims' JSON it takes) and those under users_verify (the hash: crypt(3) and its 32 KB state, what auth's hash counter times), and
# the rest (all - sign - hash). Not part of `make bench` (valgrind makes it take a minute);
# used for the A/B of docs/BENCHMARKS.md's auth findings. Prints one line per grant type:
#   grant=password grants=N ir_per_grant=.. sign_ir=.. hash_ir=.. rest_ir=..
#
#   bench/auth_instr.sh [AUTH_BINARY]   BUILD=build SECONDS_PER=20 GRANTS="password refresh"
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
BIN=${1:-$BUILD/auth}
SECS=${SECONDS_PER:-20}
GRANTS=${GRANTS:-password refresh}
DIR=$(mktemp -d)
[ -x "$BUILD/bench/authbench" ] || { echo "auth_instr: $BUILD/bench/authbench missing" >&2; exit 1; }
# shellcheck source=bench/capacity/lib.sh
. bench/capacity/lib.sh
trap 'cleanup; rm -rf "$DIR"' EXIT

auth_bench_world
AUTH_ADMIN=$(free_port)
env NATS_URL="$NATS_URL" REDIS_URL="$REDIS_URL" LOG_LEVEL=info DEV_INSECURE_BUS=1 \
  JWT_PRIVATE_KEY="$DIR/dev/signing-key.pem" JWT_KID=dev-1 AUTH_USERS="$DIR/users.conf" \
  ADMIN_LISTEN="127.0.0.1:$AUTH_ADMIN" \
  valgrind --tool=callgrind --callgrind-out-file="$DIR/cg.out" "$BIN" >"$DIR/auth.log" 2>&1 &
pids+=($!); AUTH_PID=$!
for _ in $(seq 1 300); do curl -fs "http://127.0.0.1:$AUTH_ADMIN/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
issued() {
  curl -fs "http://127.0.0.1:$AUTH_ADMIN/metrics" |
    awk '$1 ~ /^sc_auth_tokens_issued_total/ {s += $2} END {print s + 0}'
}
drive() { # GRANT SECONDS
  "$BUILD/bench/authbench" nats --nats "$NATS_URL" --chains 4 --seconds "$2" --user 'u%d' \
    --password capacity --grant "$1" >>"$DIR/drive.txt" 2>&1
}
incl() { # FILE FUNCTION: inclusive Ir of FUNCTION (0 when absent)
  callgrind_annotate --inclusive=yes --threshold=100 "$1" 2>/dev/null | awk -v f="$2" '
    !v {for (i = 2; i <= NF; i++) if ($i ~ ("[:*]" f "$") || $i == f) {gsub(",", "", $1); v = $1}}
    END {printf "%.0f\n", v + 0}'
}
drive password 2 # warm-up: every path run once, scripts loaded in Redis
drive refresh 2
n=0
for grant in $GRANTS; do
  n=$((n + 1))
  a=$(issued)
  callgrind_control -z "$AUTH_PID" >/dev/null 2>&1
  drive "$grant" "$SECS"
  callgrind_control -d "$AUTH_PID" >/dev/null 2>&1
  b=$(issued)
  sleep 1
  F=$(ls -t "$DIR"/cg.out.* | head -1)
  all=$(awk '/^(summary|totals):/ {print $2; exit}' "$F")
  sign=$(incl "$F" token_sign)
  hash=$(incl "$F" users_verify)
  g=$((b - a))
  [ "$g" -gt 0 ] || { echo "auth_instr: no $grant grants" >&2; cat "$DIR/drive.txt" >&2; exit 1; }
  echo "grant=$grant grants=$g ir_per_grant=$((all / g)) sign_ir=$((sign / g)) hash_ir=$((hash / g)) rest_ir=$(((all - sign - hash) / g))"
  [ -n "${AUTH_INSTR_KEEP:-}" ] && cp "$F" "$AUTH_INSTR_KEEP.$grant"
done
