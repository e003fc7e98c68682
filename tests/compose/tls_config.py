"""Static checks of the compose stack with docker-compose.tls.yml, on the merged configuration
(`docker-compose -f docker-compose.yml -f docker-compose.override.yml -f docker-compose.tls.yml
config` on stdin). Needs no Docker engine: tests/compose/run.sh runs it beside its other
config checks, and it runs alone as
    docker-compose -f docker-compose.yml -f docker-compose.override.yml \\
      -f docker-compose.tls.yml config | python3 tests/compose/tls_config.py
Checked: the gateway's and every edge's TLS listener is published on the host; their
certificate and key are files of the tls-keys volume, mounted read-only, which the tls-keys
one-shot fills from the tls_cert and tls_key secrets; auth hands out edge-1's published wss
URL; each edge's EDGE_PUBLIC_URL is its own published wss URL; the https origin of the
gateway is allowed at every edge and by the gateway's CORS. Prints PASS/FAIL lines and
"N passed, N failed"; exits 1 on a failure."""
import sys

import yaml

cfg = yaml.safe_load(sys.stdin)
services = cfg["services"]
passed = failed = 0


def report(name, problems, detail=""):
    global passed, failed
    if problems:
        failed += 1
        print("FAIL compose.tls.%s" % name)
        for p in problems:
            print("       " + p)
    else:
        passed += 1
        print("PASS compose.tls.%s%s" % (name, ": " + detail if detail else ""))


def port_of(addr):
    return int(str(addr).rsplit(":", 1)[1]) if addr and ":" in str(addr) else None


def published(svc, target):
    """The host port svc publishes container port target on, or None."""
    for p in services[svc].get("ports", []):
        if isinstance(p, dict):
            if int(p["target"]) == target:
                return int(p["published"])
        else:
            parts = str(p).split(":")
            if int(parts[-1]) == target:
                return int(parts[-2])
    return None


def read_only_volume_file(svc, path, problems):
    """path must lie under a read-only mount of the named volume tls-keys."""
    for v in services[svc].get("volumes", []):
        if isinstance(v, dict):
            src, dst, ro = v.get("source"), v.get("target"), v.get("read_only", False)
        else:
            parts = str(v).split(":")
            src, dst, ro = parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")
        if path.startswith(dst.rstrip("/") + "/"):
            if src != "tls-keys":
                problems.append("%s: %s is in %s, not the tls-keys volume" % (svc, path, src))
            elif not ro:
                problems.append("%s: the tls-keys volume is mounted read-write" % svc)
            return path[len(dst.rstrip("/")) + 1:]
    problems.append("%s: %s is under no mounted volume" % (svc, path))
    return None


edges = sorted(n for n in services if n.startswith("edge-"))
gw_env = services["gateway"].get("environment", {})
p = []
gw_port = published("gateway", port_of(gw_env.get("GATEWAY_TLS_LISTEN")) or -1)
if gw_port is None:
    p.append("GATEWAY_TLS_LISTEN %s is not published" % gw_env.get("GATEWAY_TLS_LISTEN"))
files = set()
for k in ("GATEWAY_TLS_CERT", "GATEWAY_TLS_KEY"):
    if k not in gw_env:
        p.append(k + " not set")
    else:
        files.add(read_only_volume_file("gateway", gw_env[k], p))
origin = "https://localhost:%s" % gw_port
if origin not in gw_env.get("GATEWAY_CORS_ORIGINS", "").split(","):
    p.append("GATEWAY_CORS_ORIGINS lacks " + origin)
report("gateway", p, "%s -> GATEWAY_TLS_LISTEN %s, certificate and key read-only from tls-keys"
       % (gw_port, gw_env.get("GATEWAY_TLS_LISTEN")))

urls = {}
for e in edges:
    env = services[e].get("environment", {})
    p = []
    port = published(e, port_of(env.get("EDGE_TLS_LISTEN")) or -1)
    if port is None:
        p.append("EDGE_TLS_LISTEN %s is not published" % env.get("EDGE_TLS_LISTEN"))
    urls[e] = "wss://localhost:%s/ws" % port
    if env.get("EDGE_PUBLIC_URL") != urls[e]:
        p.append("EDGE_PUBLIC_URL %s, but it is published as %s" % (env.get("EDGE_PUBLIC_URL"),
                                                                    urls[e]))
    for k in ("EDGE_TLS_CERT", "EDGE_TLS_KEY"):
        if k not in env:
            p.append(k + " not set")
        else:
            files.add(read_only_volume_file(e, env[k], p))
    if origin not in env.get("ALLOWED_ORIGINS", "").split(","):
        p.append("ALLOWED_ORIGINS lacks " + origin)
    report(e, p, "%s on %s, origin %s allowed" % (urls[e], env.get("EDGE_TLS_LISTEN"), origin))

p = []
auth_url = services["auth"].get("environment", {}).get("EDGE_PUBLIC_URL")
if not edges or auth_url != urls[edges[0]]:
    p.append("auth hands out %s, want %s" % (auth_url, urls.get(edges[0]) if edges else "-"))
report("ws_url", p, "auth hands out %s" % auth_url)

p = []
one = services.get("tls-keys")
if not one:
    p.append("no tls-keys one-shot")
else:
    cmd = " ".join(one.get("command") or [])
    if [s.get("source") if isinstance(s, dict) else s for s in one.get("secrets", [])] != [
            "tls_cert", "tls_key"]:
        p.append("tls-keys does not get the tls_cert and tls_key secrets")
    for f in sorted(x for x in files if x):
        if "/tls/" + f not in cmd:
            p.append("tls-keys does not write %s" % f)
    for dep in ["gateway"] + edges:
        c = services[dep].get("depends_on", {}).get("tls-keys", {}).get("condition")
        if c != "service_completed_successfully":
            p.append("%s does not wait for tls-keys" % dep)
    for s in ("tls_cert", "tls_key"):
        if s not in cfg.get("secrets", {}):
            p.append("secret %s not declared" % s)
report("files", p, "tls-keys writes %s, every TLS service waits for it"
       % ", ".join(sorted(x for x in files if x)))

print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
