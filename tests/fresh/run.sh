#!/usr/bin/env bash
# The fresh-machine check: proves the README's set-up on a Debian 12 root that has none of the
# project's packages, which a check on this machine (where they are installed) cannot.
#
#   1. a fresh root: the debootstrap minbase tarball of tests/lib/rootfs.sh (cached in
#      build/compose/, shared with the compose test), unpacked into build/fresh/root;
#   2. the checkout copied in (what `git clone` would give, plus uncommitted changes), as
#      /root/sidecast;
#   3. in a chroot, as root, with an empty environment: the README's prerequisite line
#      (read from the README, not written here), then `make up` exactly as the README says;
#   4. waits for "Sidecast is up", checks the gateway's and the edge's /readyz from outside,
#      logs in as alice and receives one price tick over the WebSocket with the CLI, as the
#      README shows;
#   5. stops the stack as Ctrl-C would, and checks that no process runs in the root and
#      nothing is mounted under it.
#
# Prints the time from `make up` to "Sidecast is up" (and its package share), ends with
# "N passed, N failed". Needs root (chroot, mount) and the host's apt sources; a run of
# `.ci/run` calls it after `make test`. FRESH_KEEP=1 keeps build/fresh/root afterwards;
# FRESH_CMD='make test' runs that command in the root after the README's line instead of the
# `make up` check (by hand: the figures in the closing notes), in a mount namespace whose
# root is the fresh root (pivot_root), as a machine's is.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
ROOT=$(pwd -P)   # physical: compared with /proc/PID/root
WORK=$ROOT/build/fresh
FRESH=$WORK/root
TARBALL=$ROOT/build/compose/debian-bookworm-minbase.tar
LOG=$WORK/make-up.log
UP_DEADLINE=${FRESH_UP_DEADLINE:-1200}   # s from `make up` to "Sidecast is up"
# shellcheck source=tests/lib/rootfs.sh
. tests/lib/rootfs.sh

passed=0
failed=0
T0=$(date +%s)
say() { echo "fresh: [$(($(date +%s) - T0))s] $*"; }
pass() { passed=$((passed + 1)); echo "PASS fresh.$1"; }
fail() { failed=$((failed + 1)); echo "FAIL fresh.$1${2:+: $2}"; }
finish() { echo "$passed passed, $failed failed"; exit $((failed > 0 ? 1 : 0)); }

[ "$(id -u)" = 0 ] || { fail root "the fresh-machine check needs root (chroot, mount)"; finish; }

# ---- the root, and how to leave nothing of it behind -------------------------------------
our_mounts() { awk '{print $5}' /proc/self/mountinfo | grep -E "^$FRESH(/|$)" | sort -r; }
our_pids() { # processes whose root directory is the fresh root
  local p
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$FRESH" ] && echo "${p#/proc/}"
  done
}
unmount_all() {
  local m
  for m in $(our_mounts); do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
}
up_pid=""
cleanup() {
  trap - EXIT INT TERM
  local pids
  if [ -n "$up_pid" ] && kill -0 "$up_pid" 2>/dev/null; then kill -KILL -- "-$up_pid" 2>/dev/null; fi
  pids=$(our_pids)
  # shellcheck disable=SC2086
  [ -n "$pids" ] && kill -KILL $pids 2>/dev/null && sleep 0.5
  unmount_all
  if [ -z "$(our_mounts)" ] && [ "${FRESH_KEEP:-0}" != 1 ]; then
    rm -rf --one-file-system "$FRESH"
  fi
  finish
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$WORK"
unmount_all   # a root left by an interrupted run
if ! out=$(rootfs_tarball "$TARBALL" "$WORK/debootstrap.log" 2>&1); then
  echo "$out"; fail rootfs "no Debian 12 root (tests/lib/rootfs.sh)"; exit 1
fi
[ -n "$out" ] && say "$out"
rm -rf --one-file-system "$FRESH"
mkdir -p "$FRESH"
tar --numeric-owner -C "$FRESH" -xf "$TARBALL" || { fail rootfs "cannot unpack $TARBALL"; exit 1; }
for p in make git gcc cc pkg-config nats-server redis-server curl; do
  if chroot "$FRESH" /bin/sh -c "command -v $p" >/dev/null 2>&1; then
    fail rootfs "the fresh root already has $p: it would not prove the README"; exit 1
  fi
done
pass rootfs
say "fresh Debian 12 root in $FRESH ($(du -sh "$FRESH" | cut -f1); no make, git, compiler," \
    "pkg-config, nats-server, redis-server or curl)"

# The checkout as a clone would have it, with this checkout's uncommitted changes; no build/.
mkdir -p "$FRESH/root/sidecast"
git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
  tar --null -T - -cf - | tar -C "$FRESH/root/sidecast" -xf - ||
  { fail copy "cannot copy the checkout"; exit 1; }
say "checkout copied to /root/sidecast ($(find "$FRESH/root/sidecast" -type f | wc -l) files)"

# A machine's name service, network trust and kernel file systems; nothing of the host's
# packages. The host's local CA certificates (an egress proxy's, here) go where
# ca-certificates picks them up when the README's line installs it, and Node is pointed at
# the bundle as on the host: without them npm (make test) cannot reach its registry.
cp -L /etc/resolv.conf "$FRESH/etc/resolv.conf" 2>/dev/null || true
mkdir -p "$FRESH/usr/local/share/ca-certificates"
cp -L /usr/local/share/ca-certificates/*.crt "$FRESH/usr/local/share/ca-certificates/" 2>/dev/null || true
grep -q localhost "$FRESH/etc/hosts" 2>/dev/null || printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >>"$FRESH/etc/hosts"
# The root is a mount point of its own, as a machine's is: dockerd (the compose test)
# remounts "/" when it unpacks an image, which fails on a plain directory.
mount --bind "$FRESH" "$FRESH" && mount --make-private "$FRESH" ||
  { fail mounts "cannot bind $FRESH onto itself"; exit 1; }
if [ -n "${FRESH_CMD:-}" ]; then
  # make test starts its own dockerd (the compose test), which needs the cgroup hierarchy
  # under /sys: the host's /sys with its submounts, kept from propagating back (rslave).
  mount --rbind /sys "$FRESH/sys" && mount --make-rslave "$FRESH/sys" ||
    { fail mounts "cannot bind /sys"; exit 1; }
else
  mount -t sysfs -o ro sysfs "$FRESH/sys" || { fail mounts "cannot mount /sys"; exit 1; }
fi
# the /dev bind is made private first, so that what is mounted under it here never shows
# in the host's /dev (where / is a shared mount, as under systemd)
mount -t proc proc "$FRESH/proc" && mount --bind /dev "$FRESH/dev" &&
  mount --make-private "$FRESH/dev" && mount -t tmpfs tmpfs "$FRESH/run" && mount -t tmpfs tmpfs "$FRESH/dev/shm" &&
  mount -t devpts -o newinstance,ptmxmode=0666 devpts "$FRESH/dev/pts" ||
  { fail mounts "cannot mount /proc, /dev, /run"; exit 1; }

NODE_CA=()
[ -n "${NODE_EXTRA_CA_CERTS:-}" ] && NODE_CA=("NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt")
in_root() { # CMD: runs CMD with bash -c in the root, as root, with a login's environment only
  chroot "$FRESH" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb "${NODE_CA[@]}" \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin /bin/bash -c "cd /root/sidecast && $1"
}

# ---- the README's prerequisite line, then make up ---------------------------------------
# The first sh block of the README: the prerequisite line(s) before `make up`, then the two
# commands themselves.
block=$(awk '/^```sh$/ {inb = 1; next} inb && /^```$/ {exit} inb' README.md)
pre=$(echo "$block" | sed -n '/^make up/q; p' | sed 's/[[:space:]]*#.*$//' | grep -v '^[[:space:]]*$' |
      grep -v '^git clone' | grep -v '^cd ')
if echo "$block" | grep -q '^make up' && echo "$block" | grep -q '^make test'; then
  pass readme_commands
else
  fail readme_commands "the README's first sh block does not hold \`make up\` and \`make test\`"
  exit 1
fi
say "README prerequisite line: ${pre:-(none)}"
t=$(date +%s)
if [ -n "$pre" ] && ! in_root "$pre" >"$WORK/prerequisites.log" 2>&1; then
  tail -n 20 "$WORK/prerequisites.log"
  fail prerequisites "the README's prerequisite line failed in the fresh root"
  exit 1
fi
say "prerequisites installed in $(($(date +%s) - t)) s"

if [ -n "${FRESH_CMD:-}" ]; then
  # By hand: another of the README's commands on the fresh root (make test, make bench...).
  say "running '$FRESH_CMD' in the fresh root (log $WORK/cmd.log)"
  t=$(date +%s)
  # In a mount namespace of its own whose root *is* the fresh root (pivot_root, not chroot):
  # runc, under the compose test's dockerd, cannot exec into a container (its health
  # checks) when the daemon's "/" is only a chroot.
  unshare --mount --propagation private -- /bin/sh -c '
    cd "$1" && mkdir -p .host && pivot_root . .host && cd / && umount -l /.host &&
    rmdir /.host && shift && exec "$@"' sh "$FRESH" \
    /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb "${NODE_CA[@]}" \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    /bin/bash -c "cd /root/sidecast && $FRESH_CMD" 2>&1 | tee "$WORK/cmd.log" |
    grep -E '^(== |FAIL|deps:|[0-9]+ passed)'
  rc=${PIPESTATUS[0]}
  say "'$FRESH_CMD' exited $rc in $(($(date +%s) - t)) s"
  if [ "$rc" = 0 ]; then pass cmd; else fail cmd "'$FRESH_CMD' exited $rc"; fi
  exit 0
fi

# Ports: the README's defaults when they are free here, else free ones (make up's documented
# variables), so a check never meets a stack of the host's.
vars=()
gw=8080 edge=8090
for spec in NATS_PORT:4222 NATS_MON_PORT:8222 REDIS_PORT:6379 GATEWAY_PORT:8080 \
            AUTH_ADMIN_PORT:9101 EDGE_PORT:8090 PRODUCER_ADMIN_PORT:9102; do
  if ss -Hltn "sport = :${spec#*:}" | grep -q .; then busy=1; fi
done
if [ "${busy:-0}" = 1 ]; then
  read -r p1 p2 p3 p4 p5 p6 p7 < <(python3 -c '
import socket
s = [socket.socket() for _ in range(7)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
  vars=("NATS_PORT=$p1" "NATS_MON_PORT=$p2" "REDIS_PORT=$p3" "GATEWAY_PORT=$p4"
        "AUTH_ADMIN_PORT=$p5" "EDGE_PORT=$p6" "PRODUCER_ADMIN_PORT=$p7")
  gw=$p4 edge=$p6
  say "a default port is busy on this host: make up ${vars[*]}"
fi

say "make up ${vars[*]} in the fresh root (log $LOG)"
t_up=$(date +%s)
# Its own session, so that stopping it is Ctrl-C to the whole job, as in a terminal.
setsid bash -c 'chroot "$0" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  /bin/bash -c "cd /root/sidecast && make up $1" 2>&1 |
  { trap "" INT; while IFS= read -r l; do printf "%4ds %s\n" "$SECONDS" "$l"; done; }' \
  "$FRESH" "${vars[*]}" >"$LOG" &
up_pid=$!
ready=0 deps_s="" last=$t_up
while kill -0 "$up_pid" 2>/dev/null; do
  if [ -z "$deps_s" ] && grep -qE '^ *[0-9]+s deps: (done|all)' "$LOG"; then
    deps_s=$(grep -E '^ *[0-9]+s deps: (done|all)' "$LOG" | head -n 1 | awk '{print $1}' | tr -d s)
    say "packages installed after ${deps_s} s; building"
  fi
  if grep -q 'Sidecast is up' "$LOG"; then ready=1; break; fi
  if [ $(($(date +%s) - t_up)) -ge "$UP_DEADLINE" ]; then break; fi
  if [ $(($(date +%s) - last)) -ge 30 ]; then
    last=$(date +%s); say "waiting: $(tail -n 1 "$LOG" | cut -c1-120)"
  fi
  sleep 0.5
done
up_s=$(($(date +%s) - t_up))
if [ "$ready" != 1 ]; then
  tail -n 40 "$LOG"
  fail make_up "no \"Sidecast is up\" within $up_s s (make up $(kill -0 "$up_pid" 2>/dev/null && echo still running || echo exited))"
  exit 1
fi
pass make_up
say "Sidecast is up ${up_s} s after make up on a fresh root (packages ${deps_s:-?} s, build and start the rest)"
echo "fresh: time to ready: ${up_s} s"

# ---- from outside: ready; in the root: the README's CLI steps ---------------------------
if curl -fsS -o /dev/null "http://127.0.0.1:$gw/readyz" && curl -fsS -o /dev/null "http://127.0.0.1:$edge/readyz"; then
  pass ready
else
  fail ready "gateway :$gw or edge :$edge /readyz did not answer 200 from outside the root"
fi
cli_env="SIDECAST_TOKEN_FILE=/tmp/sidecast-token.json"
if out=$(in_root "$cli_env build/sidecast login --gateway http://localhost:$gw alice --password wonderland" 2>&1); then
  pass login
  say "login alice: $(echo "$out" | tail -n 1 | cut -c1-100)"
else
  fail login "$out"
fi
if out=$(in_root "$cli_env timeout 60 build/sidecast listen prices.BTC --count 1 --timeout 30 --edge ws://localhost:$edge/ws" 2>&1) &&
   echo "$out" | grep -qE '^prices\.BTC #[0-9]+ \{'; then
  pass price_tick
  say "one tick over the WebSocket: $(echo "$out" | grep -E '^prices\.BTC' | head -n 1 | cut -c1-100)"
else
  fail price_tick "$(echo "$out" | tail -n 5)"
fi

# ---- stop as Ctrl-C does, and leave nothing ------------------------------------------------
kill -INT -- "-$up_pid" 2>/dev/null
for _ in $(seq 1 300); do kill -0 "$up_pid" 2>/dev/null || break; sleep 0.1; done
left=$(our_pids | tr '\n' ' ')
if ! kill -0 "$up_pid" 2>/dev/null && [ -z "$left" ] && grep -q 'make up: stopped' "$LOG"; then
  pass stopped
  say "Ctrl-C: make up stopped everything it started"
else
  fail stopped "after Ctrl-C: make up $(kill -0 "$up_pid" 2>/dev/null && echo running || echo exited), processes in the root: ${left:-none}"
fi
unmount_all
if [ -z "$(our_mounts)" ]; then
  pass unmounted
  say "nothing running in or mounted under $FRESH"
else
  fail unmounted "still mounted: $(our_mounts | tr '\n' ' ')"
fi
exit 0
