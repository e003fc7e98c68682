#!/usr/bin/env bash
# Replay cost on the NATS server (docs/CAPACITY.md, question 3): JetStream direct gets on a
# stream configured as the edge configures SIDECAST (subjects events.> and users.>,
# allow_direct, discard old, max_age 1 h, max_bytes 1 GiB, 1 replica), holding CAP_MSGS
# messages of 128 bytes spread round-robin over K subjects, from bench/natscap (one
# connection, W requests in flight). nats-server's CPU per request comes from /proc/PID/stat
# over the window. Kinds (see bench/natscap.c): seq ({"seq":N}, the check of since), next
# (next_by_subj from a random position: one replayed event), quiet (next_by_subj that ends
# in 404: the last request of a replay on a quiet subject), replay (the edge's whole walk:
# check, E events, the final 404; E = 10).
#
# Storage: file (the edge's default, with republish to live.> as the edge sets it), memory
# (without republish: with it, nats-server 2.9.10 ingests a memory stream at a few hundred
# messages/s once it holds ~100k, see docs/BENCHMARKS.md; republish is on the ingest path
# and not on the direct-get path, which file-norp, file without republish, shows).
#
#   bench/capacity/directget.sh   CAP_MSGS=100000 CAP_SECONDS=5 RUNS=3
#                                 CAP_GROUPS="..." (STORAGE:K:KIND/WINDOW,KIND/WINDOW,...)
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
MSGS=${CAP_MSGS:-100000}
SECS=${CAP_SECONDS:-5}
RUNS=${RUNS:-3}
GROUPS_DEFAULT="file:1000:seq/64,next/64,quiet/64,replay/64,replay/1,replay/8,replay/256
memory:1000:seq/64,next/64,quiet/64,replay/64,replay/1,replay/8,replay/256
file-norp:1000:next/64,replay/64
file:100:next/64,replay/64
memory:100:next/64,replay/64
file:10000:next/64,replay/64
memory:10000:next/64,replay/64"
GROUPS_LIST=${CAP_GROUPS:-$GROUPS_DEFAULT}
DIR=$BUILD/capacity-directget
rm -rf "$DIR"; mkdir -p "$DIR"
[ -x "$BUILD/bench/natscap" ] && [ -x "$BUILD/tests/tools/busctl" ] \
  || { echo "capacity: $BUILD/bench/natscap or busctl missing: run make" >&2; exit 1; }
# shellcheck source=bench/capacity/lib.sh
. bench/capacity/lib.sh

start_nats nats
req() { "$BUILD/tests/tools/busctl" "$NATS_URL" req "$1" "$2" 10000 | tail -n 1; }

make_stream() { # STORAGE (file, memory, file-norp)
  local storage=${1%-norp} rp=',"republish":{"src":">","dest":"live.>"}'
  [ "$1" = file ] || rp=""
  req '$JS.API.STREAM.DELETE.SIDECAST' '' >/dev/null || true
  req '$JS.API.STREAM.CREATE.SIDECAST' '{"name":"SIDECAST","subjects":["events.>","users.>"],
    "retention":"limits","max_consumers":-1,"max_msgs":-1,"max_bytes":1073741824,
    "max_age":3600000000000,"storage":"'"$storage"'","discard":"old","num_replicas":1,
    "allow_direct":true'"$rp"'}' | grep -q '"config"' || die "stream create failed ($1)"
}

echo "direct gets: $(date -u +%F), $(nproc) cores (natscap and nats-server share them)," \
     "$MSGS messages of 128 B, ${SECS}s per run, runs=$RUNS; load average $(cut -d' ' -f1-3 /proc/loadavg)"
while IFS= read -r group; do
  [ -n "$group" ] || continue
  storage=${group%%:*}; rest=${group#*:}; k=${rest%%:*}; cases=${rest#*:}
  make_stream "$storage"
  load=$("$BUILD/bench/natscap" load --port "$NATS_PORT" --subjects "$k" --msgs "$MSGS")
  echo "$storage K=$k: $load nats_rss_mib=$(( $(rss_kib "$NATS_PID") / 1024 ))"
  for c in ${cases//,/ }; do
    kind=${c%/*}; win=${c#*/}
    for _ in $(seq 1 "$RUNS"); do
      out=$("$BUILD/bench/natscap" get --port "$NATS_PORT" --subjects "$k" --seconds "$SECS" \
            --window "$win" --kind "$kind" --server-pid "$NATS_PID")
      echo "$storage $out" | tee -a "$DIR/runs.txt"
    done
  done
done <<<"$GROUPS_LIST"

echo
echo "Median of $RUNS runs (server CPU: nats-server user+system over the window):"
echo
echo "| storage | subjects K (gap) | kind | in flight | requests/s | p50 / p99 ms | nats-server CPU % | server µs/request | replays/s | server µs/replay | natscap % | machine busy % | errors |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
while IFS= read -r group; do
  [ -n "$group" ] || continue
  storage=${group%%:*}; rest=${group#*:}; k=${rest%%:*}; cases=${rest#*:}
  for c in ${cases//,/ }; do
    kind=${c%/*}; win=${c#*/}
    rows=$(grep "^$storage get kind=$kind window=$win subjects=$k " "$DIR/runs.txt")
    m() { echo "$rows" | field "$1" | median; }
    if [ "$kind" = replay ]; then rp="$(m replays_per_s) | $(m server_us_per_replay)"; else rp="- | -"; fi
    printf '| %s | %s | %s | %s | %s | %s / %s | %s | %s | %s | %s | %s | %s |\n' "$storage" "$k" \
      "$kind" "$win" "$(m rps)" "$(m p50_ms)" "$(m p99_ms)" "$(m server_cpu_pct)" \
      "$(m server_us_per_req)" "$rp" "$(m client_cpu_pct)" "$(m machine_busy_pct)" \
      "$(echo "$rows" | field other | paste -sd+ | bc)"
  done
done <<<"$GROUPS_LIST"
echo
echo "raw: $DIR/runs.txt"
