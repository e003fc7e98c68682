#!/usr/bin/env bash
# `make bench`: the whole benchmark suite in one run, then docs/BENCHMARKS.md and its plots.
#   1. bench/gateway.sh  the gateway's route overhead (wrk) beside bare NATS request/reply
#   2. bench/edge.sh     the edge against nats-server's WebSocket listener and a Node ws
#                        server: idle memory, fan-out CPU/throughput/latency, handshakes/s
#   then bench/verifybench (one token verification's CPU), bench/backends.py (hooks, rpc),
#   bench/sse.py (an SSE connection beside a WebSocket one: memory, CPU per delivery;
#   BENCH_SSE=0 skips it), bench/authgoals.sh (auth's CPU per refresh and per password
#   grant beside libjwt's share and the password hash: $BENCH_OUT/auth-goals.json;
#   BENCH_AUTH=0 skips it), and with BENCH_KTLS=1 tests/vm/ktls.sh bench (kTLS on vs off in
#   a qemu guest; bench/ktls.py: the medians)
#   3. bench/report.py   renders docs/BENCHMARKS.md (from bench/BENCHMARKS.md.in) and
#                        docs/img/*.png (gnuplot) from the results
# Everything on loopback, servers started on free ports and stopped after their cases; each
# step is bounded by `timeout`. Raw results stay in $BUILD/bench-run/.
#
#   make bench                    RUNS=3 (medians of 3), about 15-20 minutes on 2 cores
#   RUNS=1 BENCH_QUICK=1 make bench   smaller cases, a few minutes (development)
#   BENCH_PAGE=/tmp/B.md BENCH_IMG=/tmp/img   render somewhere else than docs/
#   BENCH_GATEWAY=0               skip the gateway step (bench/edge.sh's variables choose
#                                 the edge cases: e.g. only the TLS ones and their plain
#                                 counterparts)
#   BENCH_TLS_ONLY=1              render only the page's TLS section from this run, into the
#                                 existing page (report.py --tls-only)
set -euo pipefail
cd "$(dirname "$0")/.."
export BUILD=${BUILD:-build}
export RUNS=${RUNS:-3}
export BENCH_OUT=${BENCH_OUT:-$BUILD/bench-run}
QUICK=${BENCH_QUICK:-0}
rm -rf "$BENCH_OUT"; mkdir -p "$BENCH_OUT"
t0=$(date +%s)

{
  q=""; [ "$QUICK" = 1 ] && q=", quick mode (BENCH_QUICK=1)"
  echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); $RUNS run(s) per case$q"
  echo "- CPU: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
  echo "- Memory: $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo);" \
       "kernel $(uname -r); $(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "- nats-server $(nats-server --version | sed 's/^nats-server: //')," \
       "node $(node --version 2>/dev/null || echo '(none)')," \
       "redis-server $(redis-server --version | sed -E 's/.* v=([^ ]+).*/\1/')"
  echo "- Machine load at the start (1/5/15 min): $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$BENCH_OUT/machine.txt"

if [ "${BENCH_GATEWAY:-1}" != 0 ]; then
  echo "bench: gateway route overhead" >&2
  GSECS=${BENCH_SECONDS:-$([ "$QUICK" = 1 ] && echo 3 || echo 4)}
  BENCH_SECONDS=$GSECS timeout 900 bash bench/gateway.sh | tee "$BENCH_OUT/gateway.md"
fi
# the case variables this run was given (the page quotes them for a partial run)
env | grep -E '^(BENCH_(TARGETS|QUICK|GATEWAY)|RUNS|IDLE_SIZES|FANOUT_CASES|DEFLATE_CASES|DELAY_CASES|NOHOLD_CASES|CONNECT_(CONNS|DISTINCT)|TLS_(TARGETS|IDLE_SIZES|FANOUT_CASES|CONNECT_CONNS))=' |
  sort | tr '\n' ' ' | sed 's/ $//' >"$BENCH_OUT/cases.txt" || true

# the per-send cost of a small frame on a loopback connection: the latency goal's floor
echo "bench: the per-send floor (bench/sendpath)" >&2
timeout 300 "$BUILD/bench/sendpath" 1000 200 3 >"$BENCH_OUT/sendpath.txt" 2>&1 || true

echo "bench: edge suite" >&2
timeout 2400 bash bench/edge.sh

# what one token verification costs (ES256 through token_es256.c, beside a bare
# EVP_DigestVerify with a key parsed once, and RS256): the token's share of a handshake
echo "bench: token verification" >&2
timeout 300 "$BUILD/bench/verifybench" 2000 3 >"$BENCH_OUT/verifybench.txt" || true

# 3. what the back-end mechanisms cost: a hook on a subscribe, an rpc through the edge
if [ "${BENCH_BACKENDS:-1}" != 0 ]; then
  echo "bench: back ends (hooks, rpc)" >&2
  timeout 900 /usr/bin/python3 bench/backends.py "${BACKENDS_N:-2000}" >/dev/null
fi

# 4. a Server-Sent Events connection beside a WebSocket one: memory and CPU per delivery
if [ "${BENCH_SSE:-1}" != 0 ]; then
  echo "bench: Server-Sent Events beside WebSocket" >&2
  timeout 900 /usr/bin/python3 bench/sse.py "${SSE_CONNS:-2000}" "${SSE_EVENTS:-60}" \
    "${SSE_RATE:-20}" >/dev/null
fi

# 5. auth's CPU per grant, split into libjwt's share, the password hash and the rest
if [ "${BENCH_AUTH:-1}" != 0 ]; then
  echo "bench: auth CPU per grant beside libjwt's share" >&2
  ASECS=${AUTHGOALS_SECONDS:-$([ "$QUICK" = 1 ] && echo 3 || echo 5)}
  AUTHGOALS_SECONDS=$ASECS timeout 900 bash bench/authgoals.sh >/dev/null
fi

# 6. kTLS on vs off, in a qemu guest with Debian's 6.1 kernel (this host's kernel may have no
# "tls" ULP): tests/vm/ktls.sh bench, BENCH_KTLS=1 only (it fetches a kernel and, without a
# KVM that boots a stock kernel, runs emulated for ~10 minutes). Its BENCH lines go to
# $BENCH_OUT/ktls.txt; bench/ktls.py prints their medians (docs/BENCHMARKS.md, TLS section).
if [ "${BENCH_KTLS:-0}" = 1 ]; then
  echo "bench: kTLS on vs off in a VM" >&2
  KTLS_VM_DIR=$BUILD/vm timeout 1800 bash tests/vm/ktls.sh bench >&2 || true
  cp "$BUILD/vm/bench.txt" "$BENCH_OUT/ktls.txt" 2>/dev/null || true
  [ -f "$BENCH_OUT/ktls.txt" ] && python3 bench/ktls.py "$BENCH_OUT/ktls.txt" >&2
fi

echo "- Machine load at the end (1/5/15 min): $(cut -d' ' -f1-3 /proc/loadavg);" \
     "whole run $(( $(date +%s) - t0 )) s" >>"$BENCH_OUT/machine.txt"
if [ -f "$BENCH_OUT/peers-versions.txt" ]; then
  cat "$BENCH_OUT/peers-versions.txt" >>"$BENCH_OUT/machine.txt"
fi
tls_only=(); [ "${BENCH_TLS_ONLY:-0}" = 1 ] && tls_only=(--tls-only)
python3 bench/report.py "$BENCH_OUT" --page "${BENCH_PAGE:-docs/BENCHMARKS.md}" \
  --img "${BENCH_IMG:-docs/img}" "${tls_only[@]}"
echo "bench: done in $(( $(date +%s) - t0 )) s; raw results in $BENCH_OUT" >&2
