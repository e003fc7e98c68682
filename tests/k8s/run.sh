#!/usr/bin/env bash
# The Kubernetes manifests, checked offline (part of `make test`, through tests/run.sh):
#  1. render k8s/base, k8s/overlays/dev, dev-tls and dev-bridge with `kubectl kustomize`
#     (Debian's kubectl, or any kubectl on PATH; KUBECTL=... picks another), after making the
#     overlays' keys (scripts/gen-dev.sh k8s/overlays/<overlay>/keys, never committed) when
#     missing;
#  2. check.mjs: every object against the Kubernetes API schemas (npm kubernetes-models, which
#     `npm ci` installs here on first use, from package-lock.json) and against the processes
#     built in $BUILD (their --help), probes, ports, shutdown times, URLs (see check.mjs).
# Prints PASS/FAIL per check and closes with "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
export BUILD
KUBECTL=${KUBECTL:-kubectl}
HERE=tests/k8s
pass=0
fail=0
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

result() { # STATUS NAME [DETAIL]
  if [ "$1" = 0 ]; then pass=$((pass + 1)); echo "PASS $2${3:+: $3}"
  else fail=$((fail + 1)); echo "FAIL $2${3:+: $3}"; fi
}
finish() { echo "$pass passed, $fail failed"; [ "$fail" -eq 0 ]; exit; }

if ! command -v "$KUBECTL" >/dev/null 2>&1; then
  result 1 "kubectl" "not found (make deps installs Debian's kubernetes-client)"; finish
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  result 1 "node and npm" "not found (make deps installs Debian's nodejs and npm)"; finish
fi
version=$("$KUBECTL" version --client --short 2>/dev/null || "$KUBECTL" version --client 2>/dev/null)
echo "renderer: $(command -v "$KUBECTL") ($(echo "$version" | tr '\n' ' ' | sed 's/ *$//'))"

for overlay in dev dev-tls; do
  if ! bash scripts/gen-dev.sh k8s/overlays/$overlay/keys >"$out/keys.log" 2>&1; then
    result 1 "$overlay overlay keys (scripts/gen-dev.sh k8s/overlays/$overlay/keys)" "$(tail -n 3 "$out/keys.log")"; finish
  fi
  sed 's/^/  /' "$out/keys.log"
done

if [ ! -d $HERE/node_modules/kubernetes-models ] || [ ! -d $HERE/node_modules/yaml ]; then
  echo "npm ci in $HERE (kubernetes-models, yaml)"
  if ! (cd $HERE && timeout 300 npm ci --no-audit --no-fund >"$out/npm.log" 2>&1); then
    result 1 "npm ci in $HERE" "$(tail -n 5 "$out/npm.log")"; finish
  fi
fi

renders=()
for target in base overlays/dev overlays/dev-tls overlays/dev-bridge; do
  label=${target#overlays/}
  if "$KUBECTL" kustomize "k8s/$target" >"$out/$label.yaml" 2>"$out/$label.err"; then
    n=$(grep -c '^kind:' "$out/$label.yaml")
    warned=$(grep -c -i 'warning' "$out/$label.err")
    note=""
    # Newer kustomize calls `bases`, `patchesStrategicMerge` and `patchesJson6902` deprecated;
    # they stay because Debian's kubectl 1.20 (kustomize 2.0) knows no other way.
    [ "$warned" -gt 0 ] && note=" ($warned deprecation warnings: fields kept for kustomize 2.0)"
    result 0 "render: $KUBECTL kustomize k8s/$target" "$n objects$note"
    renders+=("$label=$out/$label.yaml")
  else
    result 1 "render: $KUBECTL kustomize k8s/$target" "$(cat "$out/$label.err")"
  fi
done
[ ${#renders[@]} -gt 0 ] || finish

node $HERE/check.mjs "${renders[@]}" 2>&1 | tee "$out/check.log"
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$out/check.log" | tail -n 1)
if [ -z "$line" ]; then
  result 1 "check.mjs" "ended without its summary line"
else
  pass=$((pass + $(echo "$line" | awk '{print $1}')))
  fail=$((fail + $(echo "$line" | awk '{print $3}')))
fi
finish
