#!/usr/bin/env bash
# Installs the Debian packages Sidecast needs, in two sets:
#   scripts/deps.sh run   what building and running the topology needs (`make up`): a C
#                         compiler, the libraries' -dev packages (ZeroMQ's too: the bridge),
#                         nats-server, redis-server, curl, openssl, iproute2
#   scripts/deps.sh all   that, and what the tests, fuzzing and benchmarks add (`make test`,
#                         `make asan`, `make valgrind`, `make bench`, `make fuzz`): clang, its
#                         sanitizer runtime and clang-format, valgrind, Chromium and NSS's
#                         certutil, Node and npm, Docker, debootstrap, kubectl, wrk, gnuplot,
#                         python3-zmq (the bridge's test peers), liburing for a bench
# Idempotent and quick when everything is present (one dpkg query, no network).
set -euo pipefail
set_name=${1:-all}

RUN_PKGS=(
  gcc libc6-dev make pkg-config
  libnats-dev libmicrohttpd-dev libjwt-dev libhiredis-dev libjansson-dev
  libssl-dev libcrypt-dev zlib1g-dev
  libcurl4-openssl-dev  # JWT_JWKS_URL: an OpenID provider's keys, fetched over https
  libgnutls28-dev  # the gateway's HTTPS (GATEWAY_TLS_*): libmicrohttpd's TLS is GnuTLS
  libzmq3-dev  # the bridge (ZeroMQ ingress), and bench/zmqhop
  nats-server redis-server
  curl openssl  # deploy/run-local.sh waits on /readyz; scripts/gen-dev.sh makes the dev keys
  iproute2      # ss: deploy/run-local.sh names a busy port before starting anything
)
DEV_PKGS=(
  build-essential clang libclang-rt-14-dev llvm
  clang-format  # make test checks the tree against .clang-format (tests/house/format.py)
  liburing-dev  # bench/sendpath only: writev against io_uring sends (docs/BENCHMARKS.md)
  python3 python3-yaml wrk valgrind chromium
  python3-zmq  # test_bridge.py: the ZeroMQ publishers the bridge reads
  libnss3-tools  # certutil: test_browser_tls.py trusts its CA in a fresh NSS database
  gnuplot-nox  # bench/run.sh: the plots of docs/BENCHMARKS.md
  docker.io docker-compose debootstrap  # tests/compose, tests/fresh: a private dockerd, a fresh root
)
case $set_name in
  run) PKGS=("${RUN_PKGS[@]}") ;;
  all) PKGS=("${RUN_PKGS[@]}" "${DEV_PKGS[@]}") ;;
  *) echo "usage: scripts/deps.sh [run|all]" >&2; exit 2 ;;
esac

missing=()
for p in "${PKGS[@]}"; do
  st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$st" = "installed" ] || missing+=("$p")
done

if [ "$set_name" = all ]; then
  # The browser test drives Debian's chromium with playwright-core from npm, and the
  # JavaScript client's tests run in node with ws from npm: they need node and npm, which
  # the machine image usually has; Debian's own are the fallback.
  command -v node >/dev/null 2>&1 || missing+=(nodejs)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  # The Kubernetes manifests are rendered with `kubectl kustomize` (tests/k8s): any kubectl
  # on PATH does; Debian's kubernetes-client is the fallback.
  command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#PKGS[@]} packages of the '$set_name' set present"
  exit 0
fi

echo "deps: installing (set '$set_name') ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"

# On a machine run by systemd, Debian starts the nats-server and redis-server it just
# installed as system services, on the very ports `make up` uses (4222, 6379): `make up`
# would then refuse to start. Sidecast runs its own, so the services this call installed are
# stopped and disabled; ones that were there before are left as they are.
if [ -d /run/systemd/system ]; then
  for svc in nats-server redis-server; do
    for p in "${missing[@]}"; do
      [ "$p" = "$svc" ] || continue
      if $SUDO systemctl disable --now "$svc" >/dev/null 2>&1; then
        echo "deps: stopped and disabled the system $svc service the package started" \
             "(make up and the tests run their own)"
      fi
    done
  done
fi
echo "deps: done"
