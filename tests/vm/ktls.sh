#!/usr/bin/env bash
# tests/vm/ktls.sh - the edge's kTLS send path, in a KVM guest whose kernel has the "tls"
# module (`make ktls-check`, `make ktls-bench`). This host's kernel may offer no "tls" ULP; a
# Debian 6.1 kernel (package linux-image-amd64's, fetched with apt-get download and unpacked
# into the build directory, never installed) is booted in qemu with an initramfs of busybox,
# the built binaries (edge, sidecast) and their libraries (ldd), nats-server, redis-server,
# openssl and the tls module with the crypto modules it uses. No network but the guest's own
# loopback. tests/vm/ktls-guest.sh runs inside; this prints its PASS/FAIL lines and the
# closing "N passed, N failed" line.
#
#   tests/vm/ktls.sh [check]   the correctness checks (about a minute once the kernel is here)
#   tests/vm/ktls.sh bench     kTLS on vs EDGE_TLS_KTLS=off, interleaved: BENCH lines into
#                              $VM/bench.txt (FANOUT_CASES, RUNS, FANOUT_SECONDS pass through)
#   tests/vm/ktls.sh host      the guest script on this host (EXPECT=user: the fallback)
# BUILD (default build), KTLS_VM_DIR (default $BUILD/vm), KTLS_TIMEOUT (s, default 600),
# KTLS_MEM (default 2G), KTLS_ACCEL (auto: kvm where it can boot the kernel, else tcg).
# Packages it needs and lacks (qemu-system-x86, busybox-static, cpio) are installed with
# apt-get; the kernel package is kept unpacked in $VM/kernel for the next run.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
VM=${KTLS_VM_DIR:-$BUILD/vm}
WHAT=${1:-check}
TIMEOUT=${KTLS_TIMEOUT:-600}
die() { echo "ktls: $*" >&2; echo "0 passed, 1 failed"; exit 1; }

for b in edge sidecast; do [ -x "$BUILD/$b" ] || die "$BUILD/$b missing: run make BUILD=$BUILD"; done
for b in nats-server redis-server openssl; do command -v "$b" >/dev/null || die "$b not found"; done
mkdir -p "$VM"
VM=$(cd "$VM" && pwd)
K=$VM/ktls # certificates, token, client TLS configurations
mkdir -p "$K"

# ---- what the guest (or the host run) needs: a CA and certificate, a token, per suite an
# OpenSSL configuration that makes the client offer that suite only ----------------------
prepare() {
  bash scripts/gen-dev.sh "$VM/dev" >/dev/null
  cp "$VM/dev/ca.pem" "$VM/dev/tls.pem" "$VM/dev/tls.key" "$VM/dev/public.pem" "$K/"
  "$BUILD/sidecast" bench tokens --key "$VM/dev/signing-key.pem" --count 1 --ttl 7200 \
    --user-prefix vm- >"$K/token.txt"
  local s v c want
  for s in tls13-aes128:TLSv1.3:TLS_AES_128_GCM_SHA256 tls13-aes256:TLSv1.3:TLS_AES_256_GCM_SHA384 \
           tls13-chacha20:TLSv1.3:TLS_CHACHA20_POLY1305_SHA256 \
           tls12-aes128:TLSv1.2:ECDHE-ECDSA-AES128-GCM-SHA256 \
           tls12-aes256:TLSv1.2:ECDHE-ECDSA-AES256-GCM-SHA384 \
           tls12-chacha20:TLSv1.2:ECDHE-ECDSA-CHACHA20-POLY1305; do
    IFS=: read -r name v c <<<"$s"
    want=$c
    {
      echo "openssl_conf = ktls_conf"
      echo "[ktls_conf]"
      echo "ssl_conf = ktls_ssl"
      echo "[ktls_ssl]"
      echo "system_default = ktls_sys"
      echo "[ktls_sys]"
      echo "MinProtocol = $v"
      echo "MaxProtocol = $v"
      if [ "$v" = TLSv1.3 ]; then echo "Ciphersuites = $c"; else echo "CipherString = $c"; fi
    } >"$K/$name.cnf"
    echo "$want" >"$K/$name.want"
  done
}

if [ "$WHAT" = host ]; then
  prepare
  free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
  exec env KTLS_DIR="$K" EXPECT=user MODE=check BIN= WORK="$VM/host-run" \
    PATH="$(pwd)/$BUILD:$PATH" NATS_PORT="$(free_port)" NATS_MON="$(free_port)" \
    REDIS_PORT="$(free_port)" EDGE_PORT="$(free_port)" TLS_PORT="$(free_port)" \
    sh tests/vm/ktls-guest.sh
fi

# KVM where it can run a stock kernel; else qemu's emulation (TCG: slower, the same guest). A
# kvm_pvm host (a PVM hypervisor: /dev/kvm for PVM-built guest kernels only) cannot boot
# Debian's kernel: it hangs after the decompressor.
ACCEL=${KTLS_ACCEL:-auto}
if [ "$ACCEL" = auto ]; then
  if [ -w /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ]; then ACCEL=kvm; else ACCEL=tcg; fi
fi
case $ACCEL in
  kvm) accel_args=(-enable-kvm -cpu host) ;;
  tcg) accel_args=(-accel tcg,thread=multi -cpu max) ;;
  *) die "KTLS_ACCEL: auto, kvm or tcg" ;;
esac

# ---- tools -------------------------------------------------------------------------------
missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx insmod &&
  ! ldd /bin/busybox >/dev/null 2>&1 || missing+=(busybox-static)
command -v cpio >/dev/null || missing+=(cpio)
if [ ${#missing[@]} -gt 0 ]; then
  echo "ktls: apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
    >"$VM/apt.log" 2>&1 || { tail -5 "$VM/apt.log"; die "apt-get install ${missing[*]} failed"; }
fi

# ---- the kernel: linux-image-amd64's image package, unpacked here ----------------------------
vmlinuz=$(ls "$VM"/kernel/boot/vmlinuz-* 2>/dev/null | head -1 || true)
if [ -z "$vmlinuz" ]; then
  pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  mkdir -p "$VM/dl"
  rm -f "$VM"/dl/*.deb
  if [ -z "$pkg" ] || ! (cd "$VM/dl" && apt-get download "$pkg" >"$VM/dl.log" 2>&1); then
    # the metapackage's version may be newer than the mirror holds: the newest 6.1 there
    pkg=$(apt-cache search --names-only '^linux-image-6\.1\.[0-9.-]*-amd64-unsigned$' |
          awk '{print $1}' | sort -V | tail -1)
    [ -n "$pkg" ] || die "no linux-image-6.1 package known to apt (apt-get update?)"
    (cd "$VM/dl" && apt-get download "$pkg" >"$VM/dl.log" 2>&1) ||
      { cat "$VM/dl.log"; die "apt-get download $pkg failed"; }
  fi
  rm -rf "$VM/kernel"
  dpkg-deb -x "$VM"/dl/*.deb "$VM/kernel"
  rm -f "$VM"/dl/*.deb
  vmlinuz=$(ls "$VM"/kernel/boot/vmlinuz-* | head -1)
fi
kver=${vmlinuz##*/vmlinuz-}
mods=$VM/kernel/lib/modules/$kver
[ -d "$mods" ] || die "no modules for $kver in $VM/kernel"

# ---- the initramfs -----------------------------------------------------------------------------
prepare
R=$VM/root
rm -rf "$R"
mkdir -p "$R"/{bin,lib,lib64,proc,sys,dev,tmp,etc,ktls,lib/modules}
cp /bin/busybox "$R/bin/busybox"
copy_bin() { # PATH: the binary into /bin, its libraries where ldd finds them
  cp "$1" "$R/bin/"
  local l
  for l in $(ldd "$1" | grep -o '/[^ ]*' | sort -u); do
    mkdir -p "$R$(dirname "$l")"
    cp -L "$l" "$R$l"
  done
}
for b in "$BUILD/edge" "$BUILD/sidecast" "$(command -v nats-server)" "$(command -v redis-server)" \
         "$(command -v openssl)"; do
  copy_bin "$b"
done
cp "$K"/* "$R/ktls/"
cp tests/vm/ktls-guest.sh "$R/bin/ktls-guest.sh"
echo "root:x:0:0:root:/tmp:/bin/sh" >"$R/etc/passwd"
echo "127.0.0.1 localhost" >"$R/etc/hosts"

# The tls module and the AEADs it asks the crypto API for, each after what it depends on
# (the modinfo "depends=" field); those built into this kernel are simply not found.
order=()
add_mod() {
  local f dep
  f=$(find "$mods/kernel" -name "$1.ko" -o -name "${1//_/-}.ko" -o -name "${1//-/_}.ko" | head -1)
  [ -n "$f" ] || return 0
  for o in "${order[@]:-}"; do [ "$o" = "$f" ] && return 0; done
  for dep in $(strings -a "$f" | sed -n 's/^depends=//p' | tr , ' '); do add_mod "$dep"; done
  order+=("$f")
}
for m in tls aesni-intel ghash-clmulni-intel gcm ctr ghash-generic chacha20poly1305 \
         chacha-x86_64 poly1305-x86_64 chacha_generic poly1305_generic; do
  add_mod "$m"
done
: >"$R/modules.order"
for f in "${order[@]}"; do
  cp "$f" "$R/lib/modules/"
  echo "${f##*/}" >>"$R/modules.order"
done

cat >"$R/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin HOME=/tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
ip link set lo up
for m in $(cat /modules.order); do insmod "/lib/modules/$m" || echo "insmod $m failed"; done
echo "KTLS-GUEST-START kernel=$(uname -r) ulp=$(cat /proc/sys/net/ipv4/tcp_available_ulp)"
KTLS_DIR=/ktls EXPECT=kernel MODE=${ktls_mode:-check} RUNS=${ktls_runs:-3} \
  FANOUT_CASES="$(echo "${ktls_cases:-1000:100,1000:1000}" | tr , ' ')" \
  FANOUT_SECONDS=${ktls_seconds:-3} sh /bin/ktls-guest.sh 2>&1
echo "KTLS-GUEST-END"
poweroff -f
INIT
chmod +x "$R/init"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1) >"$VM/initrd.gz"

# ---- boot -----------------------------------------------------------------------------------
cases=$(echo "${FANOUT_CASES:-1000:100 1000:1000}" | tr ' ' ,)
append="console=ttyS0 quiet panic=-1 ktls_mode=$WHAT ktls_runs=${RUNS:-3} ktls_cases=$cases"
append+=" ktls_seconds=${FANOUT_SECONDS:-3}"
echo "ktls: booting $kver (qemu, $ACCEL, ${KTLS_MEM:-2G}, 2 CPUs), $WHAT"
set +e
timeout "$TIMEOUT" qemu-system-x86_64 "${accel_args[@]}" -m "${KTLS_MEM:-2G}" -smp 2 \
  -nographic -no-reboot -nic none -kernel "$vmlinuz" -initrd "$VM/initrd.gz" \
  -append "$append" </dev/null >"$VM/console.log" 2>&1
qrc=$?
set -e
tr -d '\r' <"$VM/console.log" >"$VM/console.txt"
if [ "$WHAT" = bench ]; then
  grep '^BENCH ' "$VM/console.txt" >"$VM/bench.txt" || true
  echo "ktls: $(wc -l <"$VM/bench.txt") bench lines in $VM/bench.txt"
fi
grep -E '^(PASS|FAIL) ' "$VM/console.txt" || true
if ! grep -q '^KTLS-GUEST-END' "$VM/console.txt"; then
  tail -20 "$VM/console.txt"
  die "the guest did not finish (qemu exit $qrc; console in $VM/console.txt)"
fi
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$VM/console.txt" | tail -1)
[ -n "$line" ] || die "no result line from the guest (console in $VM/console.txt)"
echo "$line"
[[ $line == *" 0 failed" ]]
