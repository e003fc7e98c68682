#!/usr/bin/env bash
# Installs every Debian package Sidecast needs to build, test and run locally.
# Idempotent and quick when everything is present (one dpkg query, no network).
set -euo pipefail

PKGS=(
  build-essential pkg-config clang libclang-rt-14-dev llvm
  libnats-dev libmicrohttpd-dev libjwt-dev libhiredis-dev libjansson-dev
  libzmq3-dev  # bench/zmqhop only: the measurement behind the edge's fabric (docs/ARCHITECTURE.md)
  liburing-dev  # bench/sendpath only: writev against io_uring sends (docs/BENCHMARKS.md)
  libssl-dev libcrypt-dev zlib1g-dev
  nats-server redis-server
  python3 curl openssl wrk valgrind chromium
  gnuplot-nox  # bench/run.sh: the plots of docs/BENCHMARKS.md
  docker.io docker-compose debootstrap  # tests/compose: its own dockerd, a local base image
)

missing=()
for p in "${PKGS[@]}"; do
  st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$st" = "installed" ] || missing+=("$p")
done

# The browser test drives Debian's chromium with playwright-core from npm: it needs node and
# npm, which the machine image usually has; Debian's own are the fallback.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
# The Kubernetes manifests are rendered with `kubectl kustomize` (tests/k8s): any kubectl on
# PATH does; Debian's kubernetes-client is the fallback.
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)

if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#PKGS[@]} packages present"
  exit 0
fi

echo "deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
# Debian starts the packaged redis-server/nats-server as services; Sidecast's scripts start
# their own on other ports, so the system ones are left as the package set them up.
echo "deps: done"
