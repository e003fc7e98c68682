#!/usr/bin/env bash
# The compose test: runs the project's real docker-compose.yml in a private Docker engine and
# drives the end-to-end flow through it (tests/compose/e2e.py). Called by tests/run.sh
# (`make test`); ends with "N passed, N failed" like the other suites.
#
# No registry is reachable here and none is used:
#   1. a private engine: containerd and dockerd from Debian's packages with their own roots
#      (data under build/compose/, sockets and exec-root under /var/tmp), no bridge, no
#      iptables, no masquerading; stopped at the end, with every mount it left unmounted;
#   2. the base image debian:bookworm-slim made with debootstrap --variant=minbase from the
#      host's own apt mirror (tests/lib/rootfs.sh), and imported (the tarball is cached in
#      build/compose/, where tests/fresh/run.sh finds it too);
#   3. stand-ins for the official nats and redis images, built from that base with Debian's
#      packages under the tags docker-compose.yml names;
#   4. docker-compose.yml plus a generated override that puts every container on the host
#      network, maps the names nats and redis to 127.0.0.1 and moves every port to a free one
#      on 127.0.0.1, so no container traffic leaves loopback; builds use the host network.
# Images and the build cache stay in the engine's data root between runs (the second run
# builds nothing). `rm -rf build/compose` starts from scratch.
#
# Skipped, with the reason, only where no Docker engine can start (not root, no overlay
# support, the engine refuses to start). A second run in the same checkout waits for the
# first (flock).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
ROOT=$(pwd)
WORK=$ROOT/build/compose
mkdir -p "$WORK/logs"
# Sockets and exec-root want a short path; one per checkout.
RUNDIR=/var/tmp/sidecast-compose-$(printf '%s' "$ROOT" | sha256sum | cut -c1-8)
SOCK=$RUNDIR/docker.sock
CTRD_SOCK=$RUNDIR/containerd.sock
PROJECT=sidecast-test
DOCKER=/usr/bin/docker          # the client that matches Debian's dockerd
CGROUP_PARENT=sidecast-compose-test
export DOCKER_HOST=unix://$SOCK COMPOSE_PROJECT_NAME=$PROJECT DOCKER_BUILDKIT=0
export COMPOSE_DOCKER_CLI_BUILD=0 SIDECAST_DEV_DIR=$WORK/dev
unset DOCKER_CONFIG DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH
export DOCKER_CONFIG=$WORK/docker-cli   # no ~/.docker: nothing of the user's leaks in

# shellcheck source=tests/lib/rootfs.sh
. tests/lib/rootfs.sh
passed=0
failed=0
T0=$(date +%s)
say() { echo "compose: [$(($(date +%s) - T0))s] $*"; }
pass() { passed=$((passed + 1)); echo "PASS compose.$1"; }
fail() { failed=$((failed + 1)); echo "FAIL compose.$1${2:+: $2}"; }
finish() { echo "$passed passed, $failed failed"; exit $(( failed > 0 ? 1 : 0 )); }
skip() { # counted as skipped by tests/run.sh, never as passed
  say "SKIP: $* - the compose test needs a Docker engine on this machine"
  echo "$passed passed, $failed failed, 1 skipped"
  exit 0
}
tail_log() { echo "--- $1 (last ${2:-20} lines) ---"; tail -n "${2:-20}" "$1" 2>/dev/null; }

# ---- 0. prerequisites --------------------------------------------------------------------
for bin in /usr/sbin/dockerd /usr/bin/containerd /usr/bin/containerd-shim-runc-v2 \
           /usr/sbin/runc "$DOCKER" /usr/bin/docker-compose /usr/sbin/debootstrap; do
  [ -x "$bin" ] || { [ "$bin" = /usr/sbin/runc ] && [ -x /usr/bin/runc ]; } || {
    fail prerequisites "$bin missing (make deps installs it: scripts/deps.sh)"
    finish
  }
done
[ "$(id -u)" = 0 ] || skip "not root (dockerd needs root)"
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || true
grep -qw overlay /proc/filesystems || skip "the kernel has no overlay filesystem"
COMPOSE=(/usr/bin/docker-compose -p "$PROJECT" -f "$ROOT/docker-compose.yml")
COMPOSE_DEFAULT=(/usr/bin/docker-compose -p "$PROJECT")  # + docker-compose.override.yml

exec 9>"$WORK/lock"
if ! flock -n 9; then
  say "another compose test of this checkout is running; waiting for it (up to 10 min)"
  flock -w 600 9 || { fail lock "still locked after 10 min"; finish; }
fi

# ---- engine start / stop -----------------------------------------------------------------
ctrd_pid=""
dockerd_pid=""
started_compose=0
had_run_containerd=0
[ -e /run/containerd ] && had_run_containerd=1

pid_alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

stop_pid() { # PID NAME SECONDS: SIGTERM, then SIGKILL after SECONDS
  local pid=$1 i
  pid_alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < $3 * 10; i++)); do pid_alive "$pid" || return 0; sleep 0.1; done
  say "$2 (pid $pid) did not stop in $3 s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null
  sleep 0.5
}

# Containers' shims are children of our containerd; they name its socket on their command
# line, which no other process has.
our_shims() {
  grep -lsF -- "$CTRD_SOCK" /proc/[0-9]*/cmdline | cut -d/ -f3
}

# Every mount under our roots (containers' overlays, shm, a debootstrap's /proc left by an
# interrupted run), deepest first.
our_mounts() {
  awk '{print $5}' /proc/self/mountinfo |
    grep -E "^($WORK/docker|$WORK/containerd|$WORK/[^/]*\.root|$RUNDIR)(/|$)" | sort -r
}

stop_engine() {
  local m pids n=0
  [ -n "$dockerd_pid" ] && stop_pid "$dockerd_pid" dockerd 30
  [ -n "$ctrd_pid" ] && stop_pid "$ctrd_pid" containerd 15
  pids=$(our_shims)
  for m in $pids; do kill -KILL "$m" 2>/dev/null; done
  for m in $(our_mounts); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || say "cannot unmount $m"
    say "unmounted $m"
    n=$((n + 1))
  done
  find /sys/fs/cgroup -depth -type d -path "*/$CGROUP_PARENT*" -exec rmdir {} + 2>/dev/null
  # the shims' socket directory, when this run made it (and it is empty again)
  [ "$had_run_containerd" = 1 ] || rmdir /run/containerd/s /run/containerd 2>/dev/null
  if [ -n "$(our_mounts)" ]; then
    say "still mounted: $(our_mounts | tr '\n' ' ')"
  else
    rm -rf "$RUNDIR"
  fi
  dockerd_pid=""
  ctrd_pid=""
  [ "${1:-}" = quiet ] || say "engine stopped; $n mount(s) it left unmounted, nothing of it remains mounted or running"
}

# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
  trap - EXIT INT TERM
  if [ "$started_compose" = 1 ]; then
    timeout 120 "${COMPOSE[@]}" down -v --remove-orphans -t 20 \
      >>"$WORK/logs/compose.log" 2>&1 || say "docker-compose down failed (see $WORK/logs/compose.log)"
  fi
  stop_engine
  finish
}

# An engine left by a run that was killed: ours (its pid file is in our RUNDIR), stopped.
for pf in "$RUNDIR/docker.pid" "$RUNDIR/containerd.pid"; do
  if [ -s "$pf" ] && pid_alive "$(cat "$pf")"; then
    say "an engine of an earlier, interrupted run is still up: stopping it"
    case $pf in *docker.pid) dockerd_pid=$(cat "$pf") ;; *) ctrd_pid=$(cat "$pf") ;; esac
  fi
done
stop_engine quiet
mkdir -p "$RUNDIR" "$WORK/docker" "$WORK/containerd" "$DOCKER_CONFIG"
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- 1. the engine -------------------------------------------------------------------------
say "starting a private containerd and dockerd (data $WORK/docker, exec-root $RUNDIR/exec," \
    "socket $SOCK; --bridge=none --iptables=false --ip-masq=false)"
cat >"$RUNDIR/containerd.toml" <<EOF
version = 2
root = "$WORK/containerd"
state = "$RUNDIR/containerd-state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$CTRD_SOCK"
[ttrpc]
  address = "$CTRD_SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$WORK/containerd/opt"
EOF
/usr/bin/containerd --config "$RUNDIR/containerd.toml" --log-level warn \
  >"$WORK/logs/containerd.log" 2>&1 &
ctrd_pid=$!
echo "$ctrd_pid" >"$RUNDIR/containerd.pid"
for _ in $(seq 1 100); do [ -S "$CTRD_SOCK" ] && break; pid_alive "$ctrd_pid" || break; sleep 0.1; done
if [ ! -S "$CTRD_SOCK" ]; then
  tail_log "$WORK/logs/containerd.log"
  skip "containerd did not start"
fi
# Our own (empty but for the key) daemon.json: /etc/docker/daemon.json is the system's. The
# daemon's identity key would go to /etc/docker/key.json otherwise.
printf '{"deprecated-key-path": "%s"}\n' "$WORK/docker-key.json" >"$RUNDIR/daemon.json"
/usr/sbin/dockerd --config-file "$RUNDIR/daemon.json" -H "unix://$SOCK" \
  --containerd "$CTRD_SOCK" --data-root "$WORK/docker" --exec-root "$RUNDIR/exec" \
  --pidfile "$RUNDIR/docker.pid" \
  --bridge=none --iptables=false --ip-masq=false --ip-forward=false --ip6tables=false \
  --userland-proxy=false --storage-driver overlay2 --cgroup-parent "$CGROUP_PARENT" \
  --log-level warn >"$WORK/logs/dockerd.log" 2>&1 &
dockerd_pid=$!
for _ in $(seq 1 300); do
  "$DOCKER" version >/dev/null 2>&1 && break
  pid_alive "$dockerd_pid" || break
  sleep 0.1
done
if ! "$DOCKER" version >/dev/null 2>&1; then
  tail_log "$WORK/logs/dockerd.log"
  skip "dockerd did not start"
fi
say "engine up: $("$DOCKER" version -f 'dockerd {{.Server.Version}}, API {{.Server.APIVersion}}')," \
    "storage $("$DOCKER" info -f '{{.Driver}}')"

# ---- 2. the compose file alone: clean, and nothing from another registry -------------------
bash scripts/gen-dev.sh "$SIDECAST_DEV_DIR" >/dev/null
if out=$("${COMPOSE[@]}" config -q 2>&1) && [ -z "$out" ] &&
   out=$("${COMPOSE_DEFAULT[@]}" config -q 2>&1) && [ -z "$out" ]; then
  pass config_clean
  say "docker-compose config: clean (no error, no warning), alone and with" \
      "docker-compose.override.yml (the published ports)"
else
  fail config_clean "$out"
fi
# docker-compose.tls.yml on top of the two: clean, and its TLS wiring (tests/compose/tls_config.py)
COMPOSE_TLS=("${COMPOSE_DEFAULT[@]}" -f "$ROOT/docker-compose.yml" -f "$ROOT/docker-compose.override.yml"
             -f "$ROOT/docker-compose.tls.yml")
if out=$("${COMPOSE_TLS[@]}" config -q 2>&1) && [ -z "$out" ]; then
  pass config_tls_clean
else
  fail config_tls_clean "$out"
fi
tls_checks=0
while IFS= read -r line; do
  case $line in
    PASS\ compose.*) pass "${line#PASS compose.}"; tls_checks=$((tls_checks + 1)) ;;
    FAIL\ compose.*) fail "${line#FAIL compose.}"; tls_checks=$((tls_checks + 1)) ;;
    *\ passed,\ *) ;;
    *) echo "$line" ;;
  esac
done < <("${COMPOSE_TLS[@]}" config 2>/dev/null | /usr/bin/python3 tests/compose/tls_config.py 2>&1)
[ "$tls_checks" -gt 0 ] || fail tls_config "tests/compose/tls_config.py reported nothing"
images=$("${COMPOSE[@]}" config 2>/dev/null | /usr/bin/python3 -c '
import sys, yaml
for name, s in sorted(yaml.safe_load(sys.stdin)["services"].items()):
    print(name, s.get("image", "-"), "build" if "build" in s else "pull")')
bad=$(echo "$images" | awk '!(($2 ~ /^(nats|redis):[^\/]+$/ && $3 == "pull") || ($2 ~ /^sidecast\// && $3 == "build"))')
if [ -n "$images" ] && [ -z "$bad" ]; then
  pass images_official_or_own
  say "images: official nats/redis from Docker Hub, every other one built from deploy/Dockerfile"
else
  fail images_official_or_own "not an official nats/redis image nor built here: ${bad:-no services}"
fi
NATS_IMAGE=$(echo "$images" | awk '$1 == "nats" {print $2}')
REDIS_IMAGE=$(echo "$images" | awk '$1 == "redis" {print $2}')

# ---- 3. the base image ---------------------------------------------------------------------
TARBALL=$WORK/debian-bookworm-minbase.tar
if "$DOCKER" image inspect debian:bookworm-slim >/dev/null 2>&1; then
  say "base image debian:bookworm-slim: cached in the engine"
else
  if [ -s "$TARBALL" ]; then
    say "base tarball: cached ($TARBALL)"
  elif out=$(rootfs_tarball "$TARBALL" "$WORK/logs/debootstrap.log" 2>&1); then
    say "$out"
  else
    echo "$out"
    fail base_image "no base root file system (tests/lib/rootfs.sh)"
    exit 1
  fi
  t=$(date +%s)
  if ! "$DOCKER" import --change 'CMD ["bash"]' \
       --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
       "$TARBALL" debian:bookworm-slim >/dev/null; then
    fail base_image "docker import failed"
    exit 1
  fi
  say "docker import: debian:bookworm-slim in $(($(date +%s) - t)) s"
fi

# ---- 4. stand-ins for the official nats and redis images -----------------------------------
for name in nats redis; do
  tag=$NATS_IMAGE
  [ "$name" = redis ] && tag=$REDIS_IMAGE
  t=$(date +%s)
  if "$DOCKER" build --network host -t "$tag" -f "tests/compose/$name.Dockerfile" tests/compose \
       >"$WORK/logs/build-$name.log" 2>&1; then
    say "stand-in $tag built from debian:bookworm-slim with Debian's $name in $(($(date +%s) - t)) s"
  else
    tail_log "$WORK/logs/build-$name.log"
    fail standin_images "$tag did not build"
    exit 1
  fi
done
pass base_and_standin_images

# ---- 5. the override: host network, loopback only, free ports -----------------------------
read -r P_GW P_E1 P_E2 P_AUTH P_PROD P_NATS P_NMON P_REDIS < <(/usr/bin/python3 -c '
import socket
socks = [socket.socket() for _ in range(8)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
cat >"$WORK/override.yml" <<EOF
# Generated by tests/compose/run.sh: every container on the host network, every port a free
# one on 127.0.0.1, the names nats and redis mapped to 127.0.0.1, builds on the host network.
x-host: &host
  network_mode: host
  extra_hosts: ["nats:127.0.0.1", "redis:127.0.0.1"]
x-build: &build
  network: host
services:
  nats:
    <<: *host
    command: ["nats-server", "--config", "/etc/nats/auth.conf", "-a", "127.0.0.1", "-p", "$P_NATS",
              "--http_port", "$P_NMON", "--jetstream", "--store_dir", "/data",
              "--server_name", "nats-1"]
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:$P_NMON/healthz"]
  redis:
    <<: *host
    command: ["--bind", "127.0.0.1", "--port", "$P_REDIS", "--dir", "/data",
              "--appendonly", "yes", "--save", ""]
    healthcheck:
      test: ["CMD-SHELL", "REDISCLI_AUTH=\"\$\$REDIS_PASSWORD\" redis-cli -p $P_REDIS ping | grep -q PONG"]
  keys:
    build: *build
  auth:
    <<: *host
    build: *build
    environment:
      NATS_URL: nats://nats:$P_NATS
      REDIS_URL: redis://redis:$P_REDIS/0
      ADMIN_LISTEN: 127.0.0.1:$P_AUTH
      EDGE_PUBLIC_URL: ws://127.0.0.1:$P_E1/ws
  producer:
    <<: *host
    build: *build
    environment:
      NATS_URL: nats://nats:$P_NATS
      ADMIN_LISTEN: 127.0.0.1:$P_PROD
      PRODUCER_FILL_DELAY_MS: "500"
  gateway:
    <<: *host
    build: *build
    environment:
      NATS_URL: nats://nats:$P_NATS
      GATEWAY_LISTEN: 127.0.0.1:$P_GW
  edge-1:
    <<: *host
    build: *build
    environment:
      NATS_URL: nats://nats:$P_NATS
      REDIS_URL: redis://redis:$P_REDIS/0
      EDGE_LISTEN: 127.0.0.1:$P_E1
      EDGE_WORKERS: "2"
  edge-2:
    <<: *host
    build: *build
    environment:
      NATS_URL: nats://nats:$P_NATS
      REDIS_URL: redis://redis:$P_REDIS/0
      EDGE_LISTEN: 127.0.0.1:$P_E2
      EDGE_WORKERS: "2"
  # in a profile, so not started here; but a service left on the default network makes
  # docker-compose create that network, whether the service starts or not
  bridge:
    <<: *host
    build: *build
    extra_hosts: []
EOF
COMPOSE+=(-f "$WORK/override.yml")
if out=$("${COMPOSE[@]}" config -q 2>&1) && [ -z "$out" ]; then
  say "override $WORK/override.yml: gateway :$P_GW, edges :$P_E1 :$P_E2, nats :$P_NATS" \
      "(monitoring :$P_NMON), redis :$P_REDIS, auth admin :$P_AUTH, producer admin :$P_PROD"
else
  fail override "$out"
  exit 1
fi

# ---- 6. build the images from the compose file ----------------------------------------------
t=$(date +%s)
say "docker-compose build (deploy/Dockerfile, targets gateway auth edge producer; log $WORK/logs/build.log)"
if timeout 900 "${COMPOSE[@]}" build >"$WORK/logs/build.log" 2>&1; then
  pass build
  say "images built in $(($(date +%s) - t)) s:" \
      "$("$DOCKER" images --format '{{.Repository}}:{{.Tag}} {{.Size}}' 'sidecast/*' | sort | tr '\n' ',' | sed 's/,$//; s/,/, /g')"
else
  tail_log "$WORK/logs/build.log" 40
  fail build "docker-compose build failed"
  exit 1
fi
for img in gateway auth edge producer; do
  u=$("$DOCKER" image inspect -f '{{.Config.User}}' "sidecast/$img:dev")
  h=$("$DOCKER" image inspect -f '{{if .Config.Healthcheck}}{{join .Config.Healthcheck.Test " "}}{{end}}' "sidecast/$img:dev")
  if [ "$u" = 10001:10001 ] && [ -n "$h" ]; then
    pass "image_$img"
  else
    fail "image_$img" "user '$u', healthcheck '$h'"
  fi
done

# ---- 7. up: health-based start order ------------------------------------------------------
t=$(date +%s)
started_compose=1
say "docker-compose up -d (log $WORK/logs/compose.log)"
if ! timeout 300 "${COMPOSE[@]}" up -d --no-build >"$WORK/logs/compose.log" 2>&1; then
  tail_log "$WORK/logs/compose.log" 30
  "${COMPOSE[@]}" logs --no-color --tail 20 2>&1 | tail -n 120
  fail up "docker-compose up failed"
  exit 1
fi
cid() { # the container of service $1
  "$DOCKER" ps -aq --filter "label=com.docker.compose.project=$PROJECT" \
    --filter "label=com.docker.compose.service=$1" | head -n 1
}
state() { # NAME -> "status health exitcode" of the service's container
  local id
  id=$(cid "$1")
  [ -n "$id" ] || { echo "absent"; return; }
  "$DOCKER" inspect -f '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}-{{end}} {{.State.ExitCode}}' "$id"
}
LONG=(nats redis auth producer gateway edge-1 edge-2)
deadline=$(($(date +%s) + 120))
while :; do
  notready=()
  for s in "${LONG[@]}"; do
    [ "$(state "$s")" = "running healthy 0" ] || notready+=("$s:$(state "$s" | tr ' ' '/')")
  done
  k=$(state keys)
  [ ${#notready[@]} -eq 0 ] && [ "${k%% *} ${k##* }" = "exited 0" ] && break
  if [ "$(date +%s)" -ge "$deadline" ]; then
    "${COMPOSE[@]}" logs --no-color --tail 20 2>&1 | tail -n 120
    fail up "not healthy after 120 s: ${notready[*]} keys:$(state keys | tr ' ' '/')"
    exit 1
  fi
  sleep 1
done
pass up
say "stack healthy in $(($(date +%s) - t)) s: keys exited 0; ${LONG[*]} running and healthy"

nets=$("$DOCKER" network ls --format '{{.Name}}' | sort | tr '\n' ' ')
if [ "$nets" = "host none " ]; then
  pass loopback_only
  say "networks in the engine: $nets(no bridge; every container on the host network, on 127.0.0.1)"
else
  fail loopback_only "networks: $nets"
fi
u=$("$DOCKER" exec "$(cid edge-1)" id -u 2>&1)
if [ "$u" = 10001 ]; then pass non_root; say "edge-1 runs as uid $u"; else fail non_root "edge-1: id -u says $u"; fi

# ---- 8. the end-to-end flow ---------------------------------------------------------------
t=$(date +%s)
if timeout 120 /usr/bin/python3 tests/compose/e2e.py "$P_GW" "$P_E1" "$P_E2"; then
  pass e2e
  say "e2e flow through the compose stack in $(($(date +%s) - t)) s"
else
  "${COMPOSE[@]}" logs --no-color --tail 20 2>&1 | tail -n 140
  fail e2e
fi

# ---- 9. stop: every Sidecast process exits 0 on SIGTERM as PID 1 of its container ---------
t=$(date +%s)
timeout 120 "${COMPOSE[@]}" stop -t 20 >>"$WORK/logs/compose.log" 2>&1
bad=()
for s in auth producer gateway edge-1 edge-2; do
  st=$(state "$s")
  [ "${st%% *} ${st##* }" = "exited 0" ] || bad+=("$s:$(echo "$st" | tr ' ' '/')")
done
if [ ${#bad[@]} -eq 0 ]; then
  pass clean_stop
  say "docker-compose stop: every Sidecast container exited 0 on SIGTERM in $(($(date +%s) - t)) s"
else
  "${COMPOSE[@]}" logs --no-color --tail 10 2>&1 | tail -n 80
  fail clean_stop "${bad[*]}"
fi
exit 0
