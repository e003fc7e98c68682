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
#                     edge.env, producer.env, bridge.env (NATS_USER, NATS_PASSWORD,
#                     REDIS_PASSWORD if it uses Redis). A bus.env from before a service was
#                     added gets that service's password appended (and nats.env with it).
#   ca.pem, ca.key    a development CA (EC P-256, 825 days; key 0600), its certificate named
#                     "Sidecast development CA (<host>, <date>)" and name-constrained to
#                     localhost, *.localhost, 127.0.0.0/8 and ::1, so that trusting it in a
#                     browser vouches for nothing else
#   tls.pem, tls.key  the server certificate it signs (EC P-256, 397 days; key 0600) for
#                     DNS:localhost, IP:127.0.0.1, IP:::1 and the dev cluster's hosts
#                     api.sidecast.localhost and ws.sidecast.localhost (k8s/overlays/dev-tls):
#                     serverAuth, not a CA; tls.pem holds the leaf, then the CA. What the
#                     gateway and the edge serve with `make up TLS=1` (GATEWAY_TLS_*,
#                     EDGE_TLS_*), docker-compose.tls.yml and k8s/overlays/dev-tls.
# Idempotent: an existing file is never overwritten (an expired tls.pem is reported, not
# replaced: remove tls.pem and tls.key to get a new one). DEVELOPMENT ONLY - the demo
# passwords are public.
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
    echo "client producer $(hash "$(tr -d '\n' <"$secret")") sub=prices.* pub=prices.* scope=sidecast.api"
  } | put "$users" 0600
  echo "gen-dev: created $users"
fi

# The bus: no service talks to an open NATS or Redis (docs/SECURITY.md, "The bus").
bus=$DIR/bus.env
derived=(nats.env redis.env gateway.env auth.env edge.env producer.env bridge.env)
bus_vars=(NATS_PASSWORD_GATEWAY NATS_PASSWORD_AUTH NATS_PASSWORD_EDGE NATS_PASSWORD_PRODUCER
          NATS_PASSWORD_BRIDGE REDIS_PASSWORD)
if [ ! -e "$bus" ]; then
  for f in "${derived[@]}"; do
    [ -e "$DIR/$f" ] && die "$DIR/$f exists but $bus does not; remove the *.env files to start over"
  done
  {
    echo "# Sidecast bus passwords - DEVELOPMENT ONLY (made by scripts/gen-dev.sh)."
    for v in "${bus_vars[@]}"; do
      # a letter first: nats-server reads a password from its environment as a configuration
      # value, where a leading digit makes a number
      echo "$v=sc$(openssl rand -hex 24)"
    done
  } | put "$bus" 0600
  echo "gen-dev: created $bus"
fi
# A directory made before a service joined (the bridge): its password is added, to bus.env
# and to nats.env (nats-server refuses a permission table naming a variable it lacks); the
# passwords already there stay as they are.
for v in "${bus_vars[@]}"; do
  grep -q "^$v=" "$bus" && continue
  echo "$v=sc$(openssl rand -hex 24)" >>"$bus"
  echo "gen-dev: added $v to $bus"
  if [ -e "$DIR/nats.env" ] && [[ $v == NATS_PASSWORD_* ]]; then
    grep "^$v=" "$bus" >>"$DIR/nats.env"
    echo "gen-dev: added $v to $DIR/nats.env"
  fi
done
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

# TLS: a development CA and the server certificate it signs (make up TLS=1; docs/DEPLOY.md,
# "TLS on the edge"). The CA is name-constrained: trusting it (the banner of make up TLS=1
# says how) lets it vouch for loopback names and addresses only.
ca=$DIR/ca.pem
cakey=$DIR/ca.key
tlscert=$DIR/tls.pem
tlskey=$DIR/tls.key
if [ ! -e "$tlscert" ] || [ ! -e "$tlskey" ]; then
  [ -e "$tlscert" ] && die "$tlscert exists but $tlskey does not; remove $tlscert to start over"
  [ -e "$tlskey" ] && die "$tlskey exists but $tlscert does not; remove $tlskey to start over"
  if [ ! -e "$cakey" ]; then
    [ -e "$ca" ] && die "$ca exists but $cakey does not; remove $ca to start over"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 2>/dev/null | put "$cakey" 0600
    echo "gen-dev: created $cakey"
  fi
  if [ ! -e "$ca" ]; then
    # -addext replaces openssl.cnf's v3_ca section: every extension is written out here
    openssl req -x509 -new -key "$cakey" -sha256 -days 825 -set_serial "0x$(openssl rand -hex 16)" \
      -subj "/O=Sidecast development/CN=Sidecast development CA ($(hostname 2>/dev/null || echo localhost), $(date -u +%F))" \
      -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -addext "subjectKeyIdentifier=hash" \
      -addext "nameConstraints=critical,permitted;DNS:localhost,permitted;IP:127.0.0.0/255.0.0.0,permitted;IP:0:0:0:0:0:0:0:1/FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF" \
      2>/dev/null | put "$ca" 0644
    [ -s "$ca" ] || die "openssl could not make $ca"
    echo "gen-dev: created $ca (development CA; how to trust it: make up TLS=1)"
  fi
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 2>/dev/null | put "$tlskey" 0600
  echo "gen-dev: created $tlskey"
  ext=$(mktemp "$DIR/tls.ext.XXXXXX")
  cat >"$ext" <<'EXT'
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1,DNS:api.sidecast.localhost,DNS:ws.sidecast.localhost
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EXT
  leaf=$(openssl req -new -key "$tlskey" -subj "/O=Sidecast development/CN=localhost" 2>/dev/null |
         openssl x509 -req -CA "$ca" -CAkey "$cakey" -set_serial "0x$(openssl rand -hex 16)" \
           -days 397 -sha256 -extfile "$ext" 2>/dev/null) || leaf=""
  rm -f "$ext"
  [ -n "$leaf" ] || die "openssl could not sign $tlscert"
  { echo "$leaf"; cat "$ca"; } | put "$tlscert" 0644
  echo "gen-dev: created $tlscert (localhost, 127.0.0.1, ::1; signed by $ca)"
elif ! openssl x509 -in "$tlscert" -noout -checkend 0 >/dev/null 2>&1; then
  echo "gen-dev: $tlscert has expired; remove $tlscert and $tlskey (and $ca, $cakey if the CA" \
       "has expired too) to make new ones" >&2
fi
