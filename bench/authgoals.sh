#!/usr/bin/env bash
# auth's CPU per grant split into libjwt's share and the rest (issue 21; docs/CAPACITY.md).
#
# NATS, Redis, auth (default config: AUTH_WORKERS=4, LOG_LEVEL=info) and the gateway on free
# loopback ports. bench/authbench drives refresh_token grants (CHAINS chains, each refresh
# token used once) through the gateway (AUTHGOALS_VIA=http, the default) or NATS directly,
# then password grants, RUNS runs of SECONDS each, interleaved. Per run:
#   - auth's CPU per grant: user+system from /proc/PID/stat over the window (authbench --watch);
#   - libjwt's share: auth's own counter sc_auth_sign_cpu_nanoseconds_total (thread CPU time
#     around token_sign: libjwt's jwt_new/jwt_set_alg/jwt_add_grants_json/jwt_encode_str and
#     the claims' JSON text its API takes), per signature;
#   - the password hash: sc_auth_password_hash_cpu_nanoseconds_total (crypt(3)), per check;
#   - the rest: the total minus those.
# Then `authbench sign`: the same claims signed by token_sign (libjwt) and by OpenSSL EVP with
# the key parsed once, single-threaded (what the dependency costs).
# Medians over the runs go to $BENCH_OUT/auth-goals.json:
#   refresh_cpu_us_total    auth CPU per refresh (µs, /proc), median of RUNS
#   refresh_libjwt_us       of it, libjwt's share (µs per signature, auth's counter)
#   refresh_rest_us         total − libjwt: Redis, NATS, JSON, randomness, logging, threads
#   password_grant_rest_us  a password grant's CPU minus libjwt's share and the hash
#   password_hash_us        one password check (crypt(3) of the users file's scheme), in auth
#   sign_key_parsed_once_us an ES256 signature of the same claims with the key parsed once
#   sign_libjwt_alone_us    token_sign in the same single-threaded loop (beside the above)
# plus the inputs (via, chains, seconds, runs, per-run values).
#
#   bench/authgoals.sh     RUNS=3 AUTHGOALS_SECONDS=5 AUTHGOALS_CHAINS=8 AUTHGOALS_VIA=http
#   AUTH_BIN=/path/to/auth  measure another auth binary (A/B)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
BENCH_OUT=${BENCH_OUT:-$BUILD/bench-run}
RUNS=${RUNS:-3}
SECS=${AUTHGOALS_SECONDS:-5}
CHAINS=${AUTHGOALS_CHAINS:-8}
VIA=${AUTHGOALS_VIA:-http}
AUTH_BIN=${AUTH_BIN:-$BUILD/auth}
DIR=$BENCH_OUT/authgoals
rm -rf "$DIR"; mkdir -p "$DIR"
for b in gateway bench/authbench; do
  [ -x "$BUILD/$b" ] || { echo "authgoals: $BUILD/$b missing: run make" >&2; exit 1; }
done
[ -x "$AUTH_BIN" ] || { echo "authgoals: $AUTH_BIN missing: run make" >&2; exit 1; }
# shellcheck source=bench/capacity/lib.sh
. bench/capacity/lib.sh

auth_bench_world
AUTH_ADMIN=$(free_port)
env NATS_URL="$NATS_URL" REDIS_URL="$REDIS_URL" LOG_LEVEL="${AUTHGOALS_LOG_LEVEL:-info}" \
  DEV_INSECURE_BUS=1 JWT_PRIVATE_KEY="$DIR/dev/signing-key.pem" JWT_KID=dev-1 \
  AUTH_USERS="$DIR/users.conf" ADMIN_LISTEN="127.0.0.1:$AUTH_ADMIN" \
  "$AUTH_BIN" >"$DIR/auth.log" 2>&1 & pids+=($!); AUTH_PID=$!
wait_url "http://127.0.0.1:$AUTH_ADMIN/readyz" auth
start_gateway

metric() { curl -fs "http://127.0.0.1:$AUTH_ADMIN/metrics" | awk -v n="$1" '$1 == n {v = $2} END {print v + 0}'; }
signs() { # every signature so far
  curl -fs "http://127.0.0.1:$AUTH_ADMIN/metrics" |
    awk '$1 ~ /^sc_auth_tokens_issued_total/ {s += $2} END {print s + 0}'
}
hashes() {
  curl -fs "http://127.0.0.1:$AUTH_ADMIN/metrics" |
    awk '$1 ~ /^sc_auth_password_hashes_total/ {s += $2} END {print s + 0}'
}
drive() { # GRANT: one authbench run, its line on stdout
  if [ "$VIA" = http ]; then
    "$BUILD/bench/authbench" http --port "$GW_PORT" --chains "$CHAINS" --seconds "$SECS" \
      --user 'u%d' --password capacity --grant "$1" --watch "auth=$AUTH_PID"
  else
    "$BUILD/bench/authbench" nats --nats "$NATS_URL" --chains "$CHAINS" --seconds "$SECS" \
      --user 'u%d' --password capacity --grant "$1" --watch "auth=$AUTH_PID"
  fi
}
: >"$DIR/runs.txt"
for run in $(seq 1 "$RUNS"); do
  for grant in refresh password; do
    s0=$(metric sc_auth_sign_cpu_nanoseconds_total); n0=$(signs)
    h0=$(metric sc_auth_password_hash_cpu_nanoseconds_total); c0=$(hashes)
    line=$(drive "$grant")
    s1=$(metric sc_auth_sign_cpu_nanoseconds_total); n1=$(signs)
    h1=$(metric sc_auth_password_hash_cpu_nanoseconds_total); c1=$(hashes)
    total=$(echo "$line" | field auth_us_per_refresh)
    libjwt=$(awk -v a="$s0" -v b="$s1" -v m="$n0" -v n="$n1" 'BEGIN {printf "%.1f", (n > m) ? (b - a) / (n - m) / 1000 : 0}')
    hash=$(awk -v a="$h0" -v b="$h1" -v m="$c0" -v n="$c1" 'BEGIN {printf "%.1f", (n > m) ? (b - a) / (n - m) / 1000 : 0}')
    [ "$grant" = refresh ] && hash=0
    rest=$(awk -v t="$total" -v l="$libjwt" -v h="$hash" 'BEGIN {printf "%.1f", t - l - h}')
    echo "run=$run $line total_us=$total libjwt_us=$libjwt hash_us=$hash rest_us=$rest" |
      tee -a "$DIR/runs.txt" >&2
  done
  # the password grants made a family each: start the next run from an empty store
  rcli flushall >/dev/null
done
sign=$("$BUILD/bench/authbench" sign --key "$DIR/dev/signing-key.pem" --count 2000 \
  --password-hash "$AUTH_BENCH_HASH")
echo "$sign" | tee -a "$DIR/runs.txt" >&2

med() { grep "grant=$1" "$DIR/runs.txt" | field "$2" | median; }
python3 - "$BENCH_OUT/auth-goals.json" <<PY
import json, sys
def float(s, _f=float):  # an empty median (a binary without the counters): 0
    return _f(s) if s else 0.0
out = {
    "refresh_cpu_us_total": float("$(med refresh total_us)"),
    "refresh_libjwt_us": float("$(med refresh libjwt_us)"),
    "refresh_rest_us": float("$(med refresh rest_us)"),
    "password_grant_rest_us": float("$(med password rest_us)"),
    "password_hash_us": float("$(med password hash_us)"),
    "sign_key_parsed_once_us": float("$(echo "$sign" | field parsed_once_us)"),
    "sign_libjwt_alone_us": float("$(echo "$sign" | field libjwt_us)"),
    "refresh_rest_goal_us": 150,
    "via": "$VIA", "chains": $CHAINS, "seconds": $SECS, "runs": $RUNS,
    "refresh_rps": float("$(med refresh rps)"),
    "password_grant_cpu_us_total": float("$(med password total_us)"),
    "password_grant_libjwt_us": float("$(med password libjwt_us)"),
}
out["refresh_rest_met"] = out["refresh_rest_us"] <= out["refresh_rest_goal_us"]
with open(sys.argv[1], "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
print(json.dumps(out))
PY
