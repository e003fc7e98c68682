#!/usr/bin/env bash
# Usage: scripts/gen-dev.sh [DIR]
# Creates the development secrets in DIR (default $SIDECAST_DEV_DIR, else deploy/dev/ of the
# repository) when missing:
#   signing-key.pem   EC P-256 private key auth signs access tokens with (0600)
#   public.pem        its public key, preceded by "kid: dev-1", for JWT_PUBLIC_KEYS
#   producer.secret   random client secret of the demo service client "producer" (0600)
#   users.conf        AUTH_USERS file: alice/wonderland, bob/builder, client producer (0600)
#   bus.env           the bus's passwords (0600): NATS_PASSWORD_<SERVICE> of each service's NATS
#                     user (deploy/config/nats-auth.conf) and REDIS_PASSWORD, random; and,
#                     made from it, what each process gets (0600): nats.env (nats-server: every
#                     NATS_PASSWORD_*), redis.env (REDIS_PASSWORD), gateway.env, auth.env,
#                     edge.env, producer.env (NATS_USER, NATS_PASSWORD, REDIS_PASSWORD if it
#                     uses Redis)
# Idempotent: an existing file is never overwritten. DEVELOPMENT ONLY - the demo passwords
# are public.
set -euo pipefail
DIR=${1:-${SIDECAST_DEV_DIR:-}}
if [ -z "$DIR" ]; then
  DIR="$(cd "$(dirname "$0")/.." && pwd)/deploy/dev"
fi
KID=${JWT_KID:-dev-1}
umask 077
mkdir -p "$DIR"

key=$DIR/signing-key.pem
pub=$DIR/public.pem
secret=$DIR/producer.secret
users=$DIR/users.conf

die() { echo "gen-dev: $*" >&2; exit 1; }

# Writes stdin to $1 through a temporary file, so a failure never leaves a half file.
put() {
  local tmp
  tmp=$(mktemp "$1.XXXXXX")
  if ! cat >"$tmp"; then rm -f "$tmp"; die "cannot write $1"; fi
  chmod "$2" "$tmp"
  mv -n "$tmp" "$1"
  rm -f "$tmp"
}

hash() { printf '%s' "$1" | openssl passwd -6 -stdin; }

if [ ! -e "$key" ]; then
  [ -e "$pub" ] && die "$pub exists but $key does not; remove $pub to start over"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 2>/dev/null | put "$key" 0600
  echo "gen-dev: created $key"
fi

if [ ! -e "$pub" ]; then
  { echo "kid: $KID"; openssl pkey -in "$key" -pubout; } | put "$pub" 0644
  echo "gen-dev: created $pub (kid $KID)"
fi

if [ ! -e "$secret" ]; then
  [ -e "$users" ] && die "$users exists but $secret does not; remove $users to start over"
  openssl rand -hex 32 | put "$secret" 0600
  echo "gen-dev: created $secret"
fi

if [ ! -e "$users" ]; then
  {
    echo "# Sidecast AUTH_USERS - DEVELOPMENT ONLY (made by scripts/gen-dev.sh)."
    echo "# Format: docs/AUTH.md. Demo passwords: alice/wonderland, bob/builder."
    echo "user   alice    $(hash wonderland) sub=prices.*,chat.> pub=chat.>"
    echo "user   bob      $(hash builder) sub=prices.*"
    echo "# service client for the client_credentials grant; secret in producer.secret"
    echo "client producer $(hash "$(tr -d '\n' <"$secret")") sub=prices.* pub=prices.*"
  } | put "$users" 0600
  echo "gen-dev: created $users"
fi

# The bus: no service talks to an open NATS or Redis (docs/SECURITY.md, "The bus").
bus=$DIR/bus.env
derived=(nats.env redis.env gateway.env auth.env edge.env producer.env)
if [ ! -e "$bus" ]; then
  for f in "${derived[@]}"; do
    [ -e "$DIR/$f" ] && die "$DIR/$f exists but $bus does not; remove the *.env files to start over"
  done
  {
    echo "# Sidecast bus passwords - DEVELOPMENT ONLY (made by scripts/gen-dev.sh)."
    for v in NATS_PASSWORD_GATEWAY NATS_PASSWORD_AUTH NATS_PASSWORD_EDGE NATS_PASSWORD_PRODUCER \
             REDIS_PASSWORD; do
      # a letter first: nats-server reads a password from its environment as a configuration
      # value, where a leading digit makes a number
      echo "$v=sc$(openssl rand -hex 24)"
    done
  } | put "$bus" 0600
  echo "gen-dev: created $bus"
fi
pw() { sed -n "s/^$1=//p" "$bus"; }
for f in "${derived[@]}"; do
  [ -e "$DIR/$f" ] && continue
  svc=${f%.env}
  case $svc in
    nats) grep '^NATS_PASSWORD_' "$bus" ;;
    redis) echo "REDIS_PASSWORD=$(pw REDIS_PASSWORD)" ;;
    *)
      echo "NATS_USER=$svc"
      echo "NATS_PASSWORD=$(pw "NATS_PASSWORD_$(echo "$svc" | tr a-z A-Z)")"
      case $svc in auth | edge) echo "REDIS_PASSWORD=$(pw REDIS_PASSWORD)" ;; esac
      ;;
  esac | put "$DIR/$f" 0600
  echo "gen-dev: created $DIR/$f"
done
