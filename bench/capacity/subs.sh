#!/usr/bin/env bash
# What subscriptions cost nats-server (docs/CAPACITY.md, question 5). An edge holds one NATS
# subscription per topic and per user with local connections (live.events.<topic>,
# live.users.<sub>), all on its one connection. For each N in CAP_SUBS, a fresh nats-server
# (with JetStream, as deployed) gets N subscriptions live.users.u<i> on one connection from
# bench/natscap; we read /varz "subscriptions" and the server's RSS, and the time the server
# took to take them (SUB lines pipelined, then PING/PONG). RUNS runs, medians; bytes per
# subscription against the N=0 baseline of the same run. Then 10,000 subscriptions one at a
# time, each followed by PING/PONG (as the edge flushes after subscribing a new name).
#
#   bench/capacity/subs.sh   CAP_SUBS="0 10000 50000 100000" RUNS=3
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
LEVELS=${CAP_SUBS:-"0 10000 50000 100000"}
RUNS=${RUNS:-3}
DIR=$BUILD/capacity-subs
rm -rf "$DIR"; mkdir -p "$DIR"
[ -x "$BUILD/bench/natscap" ] || { echo "capacity: $BUILD/bench/natscap missing: run make" >&2; exit 1; }
# shellcheck source=bench/capacity/lib.sh
. bench/capacity/lib.sh

varz() { curl -fs "http://127.0.0.1:$NATS_MON/varz" | python3 -c "import json,sys;print(json.load(sys.stdin)['$1'])"; }

echo "nats-server subscriptions: $(date -u +%F), $(nproc) cores, runs=$RUNS; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for run in $(seq 1 "$RUNS"); do
  for n in $LEVELS; do
    start_nats "nats-$run-$n"
    sleep 1 # JetStream's own start-up allocations settle
    base=$(varz subscriptions)
    t0=$(date +%s.%N)
    # natscap holds the connection until its stdin closes (the fifo below) or 120 s pass
    rm -f "$DIR/hold"; mkfifo "$DIR/hold"
    "$BUILD/bench/natscap" subs --port "$NATS_PORT" --count "$n" --hold 120 \
      <"$DIR/hold" >"$DIR/subs-$run-$n.out" 2>&1 & cap=$!; pids+=("$cap")
    exec 7>"$DIR/hold"
    for _ in $(seq 1 600); do grep -q '^ready' "$DIR/subs-$run-$n.out" 2>/dev/null && break
      kill -0 "$cap" 2>/dev/null || die "natscap subs exited: $(cat "$DIR/subs-$run-$n.out")"; sleep 0.1; done
    t1=$(date +%s.%N); setup=$(printf "%.2f" "$(echo "$t1 - $t0" | bc)")
    sleep 1
    subs=$(varz subscriptions)
    rss=$(rss_kib "$NATS_PID")
    echo "run=$run n=$n varz_subscriptions=$subs base_subscriptions=$base rss_kib=$rss setup_s=$setup" \
      | tee -a "$DIR/runs.txt"
    exec 7>&-   # natscap sees EOF and leaves
    wait "$cap" 2>/dev/null || true
    stop_pid "$NATS_PID"
  done
done

# subscribing one at a time, a round trip each (the edge flushes after the first local
# subscriber of a topic or user)
sync=()
for run in $(seq 1 "$RUNS"); do
  start_nats "nats-sync-$run"
  out=$("$BUILD/bench/natscap" subs --port "$NATS_PORT" --count 10000 --hold 0 --sync </dev/null)
  echo "run=$run sync $out" | tee -a "$DIR/runs.txt"
  sync+=("$(echo "$out" | field us_per_sub)")
  stop_pid "$NATS_PID"
done

echo
echo "Median of $RUNS runs:"
echo
echo "| subscriptions on one connection | /varz subscriptions | nats-server RSS MiB | bytes per subscription (vs 0) | time to subscribe s |"
echo "|---|---|---|---|---|"
for n in $LEVELS; do
  rows=$(grep " n=$n " "$DIR/runs.txt")
  per=()
  for run in $(seq 1 "$RUNS"); do
    r0=$(grep "^run=$run n=0 " "$DIR/runs.txt" | field rss_kib || true)
    rn=$(grep "^run=$run n=$n " "$DIR/runs.txt" | field rss_kib)
    if [ -n "$r0" ] && [ "$n" -gt 0 ]; then per+=("$(( (rn - r0) * 1024 / n ))"); fi
  done
  printf '| %s | %s | %.1f | %s | %s |\n' "$n" "$(echo "$rows" | field varz_subscriptions | median)" \
    "$(echo "$(echo "$rows" | field rss_kib | median) / 1024" | bc -l)" \
    "$( [ ${#per[@]} -gt 0 ] && printf '%s\n' "${per[@]}" | median || echo -)" \
    "$(echo "$rows" | field setup_s | median)"
done
echo
echo "One SUB and its PING/PONG at a time (10,000): $(printf '%s\n' "${sync[@]}" | median) µs per subscription"
echo
echo "raw: $DIR/runs.txt"
