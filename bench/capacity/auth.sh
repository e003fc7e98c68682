#!/usr/bin/env bash
# Refresh load on auth (docs/CAPACITY.md, question 1): how many refresh_token grants per second
# auth sustains, over NATS directly and through the gateway (POST /auth/token), and what
# Redis holds per refresh-token family and per rotation.
#
# NATS, Redis, auth (AUTH_WORKERS as set, default 4) and the gateway on free loopback ports;
# a users file with users u0..u255 (one password, "capacity"); bench/authbench holds one
# refresh-token chain per thread and uses every refresh token once. For each transport and
# chain count, RUNS runs of SECONDS: refreshes/s, latency, CPU per refresh of auth, Redis,
# NATS and the gateway, and the median over the runs. Then Redis: used_memory per family
# (password grants by fresh users) and per rotation (a rotated token stays for the reuse
# window, REFRESH_REUSE_WINDOW_S), and MEMORY USAGE of one key of each kind.
#
#   bench/capacity/auth.sh   CAP_CHAINS="8 32" CAP_SECONDS=10 RUNS=3 AUTH_WORKERS=4
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
CHAINS=${CAP_CHAINS:-"8 32"}
SECS=${CAP_SECONDS:-10}
RUNS=${RUNS:-3}
WORKERS=${AUTH_WORKERS:-4}
DIR=$BUILD/capacity-auth
rm -rf "$DIR"; mkdir -p "$DIR"
for b in auth gateway bench/authbench; do
  [ -x "$BUILD/$b" ] || { echo "capacity: $BUILD/$b missing: run make" >&2; exit 1; }
done
# shellcheck source=bench/capacity/lib.sh
. bench/capacity/lib.sh

make_keys
H=$(printf 'capacity' | openssl passwd -6 -stdin)
{ for i in $(seq 0 255); do echo "user u$i $H sub=prices.*"; done
  for i in $(seq 0 1023); do echo "user f$i $H sub=prices.*"; done; } >"$DIR/users.conf"
AUTH_USERS_FILE=$DIR/users.conf
start_nats nats
start_redis
start_auth AUTH_WORKERS="$WORKERS"
start_gateway

echo "auth refresh capacity: $(date -u +%F), $(nproc) cores (shared by load generator and" \
     "servers), AUTH_WORKERS=$WORKERS, ${SECS}s per run, runs=$RUNS; load average $(cut -d' ' -f1-3 /proc/loadavg)"
W=(--watch "auth=$AUTH_PID" --watch "redis=$REDIS_PID" --watch "nats=$NATS_PID" --watch "gw=$GW_PID")
for mode in nats http; do
  for c in $CHAINS; do
    for run in $(seq 1 "$RUNS"); do
      if [ "$mode" = nats ]; then
        "$BUILD/bench/authbench" nats --nats "$NATS_URL" --chains "$c" --seconds "$SECS" \
          --user 'u%d' --password capacity "${W[@]}"
      else
        "$BUILD/bench/authbench" http --port "$GW_PORT" --chains "$c" --seconds "$SECS" \
          --user 'u%d' --password capacity "${W[@]}"
      fi | tee -a "$DIR/runs.txt"
    done
  done
done

echo
echo "Median of $RUNS runs (each column on its own; machine busy: every process on the machine,"
echo "of $(( $(nproc) * 100 ))%):"
echo
echo "| via | chains | refreshes/s | p50 / p99 ms | auth CPU µs/refresh (% of a core) | Redis µs/refresh | NATS µs/refresh | gateway µs/refresh | load generator % | machine busy % (all processes) | errors |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for mode in nats http; do
  for c in $CHAINS; do
    rows=$(grep "^$mode chains=$c " "$DIR/runs.txt")
    m() { echo "$rows" | field "$1" | median; }
    printf '| %s | %s | %s | %s / %s | %s (%s%%) | %s | %s | %s | %s | %s | %s |\n' "$mode" "$c" \
      "$(m rps)" "$(m p50_ms)" "$(m p99_ms)" "$(m auth_us_per_refresh)" "$(m auth_cpu_pct)" \
      "$(m redis_us_per_refresh)" "$(m nats_us_per_refresh)" \
      "$([ "$mode" = http ] && m gw_us_per_refresh || echo -)" "$(m client_cpu_pct)" \
      "$(m machine_busy_pct)" \
      "$(echo "$rows" | field errors | paste -sd+ | bc)"
  done
done

# Redis memory. Families: 256 password grants by users f*, per run; rotations: one chain per
# user u*, refreshed for a few seconds (each rotation leaves the old token's key behind, for
# REFRESH_REUSE_WINDOW_S).
echo
echo "Redis memory (used_memory deltas; median of $RUNS runs):"
fam=(); rot=()
for run in $(seq 1 "$RUNS"); do
  rcli flushall >/dev/null
  m0=$(redis_used)
  off=$(( (run - 1) % 4 * 256 ))
  python3 - "$BUILD/tests/tools/busctl" "$NATS_URL" "$off" >/dev/null <<'PY' || die "password grants failed"
import subprocess, sys, json
# 256 password grants, 16 at a time, through busctl (each one a new family)
busctl, url, off = sys.argv[1], sys.argv[2], int(sys.argv[3])
import concurrent.futures as cf
def grant(i):
    body = json.dumps({"grant_type": "password", "username": "f%d" % (off + i), "password": "capacity"})
    out = subprocess.run([busctl, url, "req", "auth.token", body, "5000"],
                         capture_output=True, timeout=20).stdout.decode().splitlines()
    return "refresh_token" in (out[-1] if out else "")
with cf.ThreadPoolExecutor(16) as ex:
    ok = sum(ex.map(grant, range(256)))
sys.exit(0 if ok == 256 else 1)
PY
  m1=$(redis_used)
  fam+=("$(( (m1 - m0) / 256 ))")
  out=$("$BUILD/bench/authbench" nats --nats "$NATS_URL" --chains 64 --seconds 3 --user 'u%d' \
        --password capacity)
  m2=$(redis_used)
  n=$(echo "$out" | field refreshes)
  # the 64 logins of authbench made 64 families too: take them out
  rot+=("$(( (m2 - m1 - 64 * (m1 - m0) / 256) / n ))")
  echo "run $run: families 256: $(( m1 - m0 )) B; $n rotations + 64 families: $(( m2 - m1 )) B"
done
echo
echo "| what | bytes |"
echo "|---|---|"
echo "| per family (password grant: sc:rt + sc:rtfam + member of sc:rtuser) | $(printf '%s\n' "${fam[@]}" | median) |"
echo "| per rotation (the new sc:rt added, the old one shrunk and kept for the reuse window) | $(printf '%s\n' "${rot[@]}" | median) |"
a=""; r=""
for key in $(rcli --scan --pattern 'sc:rt:*'); do # one active and one rotated token (bounded by the keys)
  st=$(rcli hget "$key" state)
  [ "$st" = active ] && [ -z "$a" ] && a=$key
  [ "$st" = rotated ] && [ -z "$r" ] && r=$key
  [ -n "$a" ] && [ -n "$r" ] && break
done
f=$(rcli --scan --pattern 'sc:rtfam:*' | sed -n 1p)
u=$(rcli --scan --pattern 'sc:rtuser:*' | sed -n 1p)
[ -n "$a" ] && echo "| MEMORY USAGE of an active sc:rt:<sha256> ($(rcli hlen "$a") fields) | $(rcli memory usage "$a") (TTL $(rcli ttl "$a") s) |"
[ -n "$r" ] && echo "| MEMORY USAGE of a rotated sc:rt:<sha256> ($(rcli hlen "$r") fields) | $(rcli memory usage "$r") (TTL $(rcli ttl "$r") s: the reuse window) |"
echo "| MEMORY USAGE sc:rtfam:<id> ($(rcli hlen "$f") fields) | $(rcli memory usage "$f") |"
echo "| MEMORY USAGE sc:rtuser:<sub> | $(rcli memory usage "$u") ($(rcli scard "$u") member(s)) |"
echo "| keys now: sc:rt / sc:rtfam / sc:rtuser | $(rcli --scan --pattern 'sc:rt:*' | wc -l) / $(rcli --scan --pattern 'sc:rtfam:*' | wc -l) / $(rcli --scan --pattern 'sc:rtuser:*' | wc -l) |"
echo
echo "raw: $DIR/runs.txt; logs in $DIR"
