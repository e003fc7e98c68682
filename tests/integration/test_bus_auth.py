"""No open bus: the stack on nats-server and redis-server with authentication, as `make up`,
Docker Compose and Kubernetes run them.

nats-server runs deploy/config/nats-auth.conf, the permission table, with the passwords that
scripts/gen-dev.sh made for this stack (nats.env); redis-server requires its password; every
service gets only its own <service>.env (NATS_USER, NATS_PASSWORD, REDIS_PASSWORD), and no
DEV_INSECURE_BUS. Checked: the whole flow works (login, a tick, an order and its fill, a
client publish); anonymous and wrong clients are refused by both servers; each service is
held to its subjects by nats-server (the edge may not publish auth.revoked, the producer may
not answer auth.token, the gateway may not read auth's replies, ...); and a service without
credentials refuses to start, naming the flag."""
import json
import os
import subprocess
import threading

import harness
from wsclient import WS

SERVICES = ()  # this module starts its own servers and services, with authentication
AUTH_CONF = os.path.join(harness.ROOT, "deploy", "config", "nats-auth.conf")
BUSCTL = os.path.join(harness.BUILD, "tests", "tools", "busctl")


def _env_file(path):
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                k, v = line.split("=", 1)
                out[k] = v
    return out


class Secured:
    """nats-server (the permission table) and redis-server (a password) on free ports, and
    the four services, each with its own credentials only."""

    def __init__(self, st):
        self.st = st
        self.dev = st.keys  # gen-dev.sh made bus.env and the per-process files there
        self.bus = _env_file(os.path.join(self.dev, "bus.env"))
        self.port, self.mon, self.redis_port = harness.free_port(), harness.free_port(), \
            harness.free_port()
        self.nats_url = "nats://127.0.0.1:%d" % self.port
        self.redis_url = "redis://127.0.0.1:%d/0" % self.redis_port
        st.procs["nats-auth"] = harness.Proc("nats-auth", [
            "nats-server", "-c", AUTH_CONF, "-a", "127.0.0.1", "-p", str(self.port), "-m",
            str(self.mon), "-js", "-sd", os.path.join(st.dir, "js-auth")],
            _env_file(os.path.join(self.dev, "nats.env")), st.dir)
        harness.wait_for(lambda: harness.http("GET", "http://127.0.0.1:%d/healthz" % self.mon,
                                              timeout=1).status == 200, what="nats with auth")
        conf = os.path.join(st.dir, "redis-auth.conf")
        with open(os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write("requirepass %s\n" % self.bus["REDIS_PASSWORD"])
        st.procs["redis-auth"] = harness.Proc("redis-auth", [
            "redis-server", conf, "--port", str(self.redis_port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", st.dir], {}, st.dir)
        harness.wait_for(lambda: "PONG" in self.redis_cli("ping", password=True),
                         what="redis with a password")
        self.gw = harness.free_port()
        self.edge = harness.free_port()
        self.auth_admin = harness.free_port()
        self.prod_admin = harness.free_port()
        for name in ("auth", "producer", "gateway", "edge"):
            st.procs[name + "-sec"] = harness.Proc(name + "-sec", [
                os.path.join(harness.BUILD, name)], self.env(name), st.dir)
        for url in ("http://127.0.0.1:%d/readyz" % p
                    for p in (self.auth_admin, self.prod_admin, self.gw, self.edge)):
            harness.wait_for(lambda u=url: harness.http("GET", u, timeout=1).status == 200,
                             timeout=20 * harness.SLOW, what=url)

    def env(self, name):
        """What the service gets: the stack's settings, this bus, its own .env file."""
        e = self.st.service_env(name)
        del e["DEV_INSECURE_BUS"]
        e.update({"NATS_URL": self.nats_url, "REDIS_URL": self.redis_url})
        e.update({
            "auth": {"ADMIN_LISTEN": "127.0.0.1:%d" % self.auth_admin},
            "producer": {"ADMIN_LISTEN": "127.0.0.1:%d" % self.prod_admin,
                         "PRODUCER_TICK_MS": "200", "PRODUCER_FILL_DELAY_MS": "200"},
            "gateway": {"GATEWAY_LISTEN": "127.0.0.1:%d" % self.gw},
            "edge": {"EDGE_LISTEN": "127.0.0.1:%d" % self.edge, "EDGE_ID": "edge-sec"},
        }[name])
        e.update(_env_file(os.path.join(self.dev, name + ".env")))
        return e

    def redis_cli(self, *args, password=False):
        env = dict(os.environ)
        env.pop("REDISCLI_AUTH", None)
        if password:
            env["REDISCLI_AUTH"] = self.bus["REDIS_PASSWORD"]
        r = subprocess.run(["redis-cli", "-p", str(self.redis_port)] + list(args), env=env,
                           capture_output=True, text=True, timeout=10)
        return r.stdout + r.stderr

    def as_user(self, user, *args, seconds=10, password=None):
        """busctl as a service's NATS user (its inbox prefix too): (exit code, output)."""
        pw = password if password is not None else self.bus.get(
            "NATS_PASSWORD_" + (user or "").upper(), "")
        url = "nats://%s:%s@127.0.0.1:%d" % (user, pw, self.port) if user else self.nats_url
        env = dict(os.environ, BUSCTL_NAME=user or "anonymous")
        r = subprocess.run([BUSCTL, url] + [str(a) for a in args], env=env,
                           capture_output=True, text=True, timeout=seconds + 10)
        return r.returncode, r.stdout + r.stderr


_sec = None


def _secured(st):
    global _sec
    if _sec is None or _sec.st is not st:
        _sec = Secured(st)
    return _sec


def test_the_whole_flow_runs_on_an_authenticated_bus(st):
    s = _secured(st)
    base = "http://127.0.0.1:%d" % s.gw
    body, hdrs = harness.form(grant_type="password", username="alice", password="wonderland")
    r = harness.http("POST", base + "/auth/token", body=body, headers=hdrs)
    assert r.status == 200, r
    token = json.loads(r.body)["access_token"]
    ws = WS.connect("ws://127.0.0.1:%d/ws" % s.edge, token=token)
    ws.recv_json(5, type="welcome")
    ws.subscribe("prices.BTC")
    tick = ws.recv_json(10, type="event", topic="prices.BTC")
    r = harness.http("POST", base + "/api/orders", body=b'{"symbol":"BTC","qty":1}',
                     headers={"Content-Type": "application/json",
                              "Authorization": "Bearer " + token})
    assert r.status == 202, r
    order = json.loads(r.body)["order_id"]
    fill = ws.recv_json(10, type="event", topic="user")
    assert fill["data"]["order_id"] == order, fill
    ws.send_json({"type": "publish", "topic": "chat.lobby", "data": {"text": "hi"}, "id": "m1"})
    assert ws.recv_json(5, type="ack")["id"] == "m1"
    # presence.get, answered by the edge (a queue group) for the gateway
    r = harness.http("GET", base + "/api/presence/alice",
                     headers={"Authorization": "Bearer " + token})
    assert r.status == 200 and json.loads(r.body)["count"] >= 1, (r, r.body)
    # the server API: a back end's client-credentials token through the gateway (the edge
    # stores the event on events.>), and the producer on the bus itself (api.>, edges.>)
    with open(os.path.join(s.dev, "producer.secret")) as f:
        body, hdrs = harness.form(grant_type="client_credentials", client_id="producer",
                                  client_secret=f.read().strip())
    r = harness.http("POST", base + "/auth/token", body=body, headers=hdrs)
    assert r.status == 200, r
    svc = {"Authorization": "Bearer " + json.loads(r.body)["access_token"],
           "Content-Type": "application/json"}
    r = harness.http("POST", base + "/api/v1/publish", headers=svc,
                     body=b'{"topic":"prices.BTC","data":{"api":true},"idempotency_key":"k1"}')
    assert r.status == 200, (r, r.body)
    ev = ws.recv_json(10, type="event", topic="prices.BTC", max_skip=1000)
    while ev["data"] != {"api": True}:  # ticks meanwhile; bounded by recv_json's timeout
        ev = ws.recv_json(10, type="event", topic="prices.BTC", max_skip=1000)
    rc, out = s.as_user("producer", "req", "api.counts", "{}", 3000)
    assert rc == 0 and '"edges":1' in out, out
    r = harness.http("POST", base + "/api/v1/disconnect", headers=svc,
                     body=b'{"user":"alice","reason":"bye","reconnect":false}')
    assert r.status == 200 and json.loads(r.body)["closed"] == 1, (r, r.body)
    assert ws.expect_close(5) == (4003, "bye")
    print("  login, tick %s #%d, order %s filled, chat publish acked: all with credentials"
          % (tick["topic"], tick["seq"], order))


def test_anonymous_and_wrong_clients_are_refused(st):
    s = _secured(st)
    rc, out = s.as_user(None, "pub", "events.prices.BTC", "{}")
    assert rc != 0 and "cannot connect" in out, out
    rc, out = s.as_user("edge", "pub", "events.prices.BTC", "{}", password="wrong")
    assert rc != 0 and "cannot connect" in out and "wrong" not in out, out
    assert "NOAUTH" in s.redis_cli("ping"), "redis answered without a password"
    assert "NOAUTH" in s.redis_cli("get", "x")
    print("  NATS: anonymous and wrong password refused; Redis: NOAUTH without the password")


def _listen(s, user, subject, seconds):
    """A background busctl sub as user: its output lines, once it said ready."""
    pw = s.bus["NATS_PASSWORD_" + user.upper()]
    p = subprocess.Popen([BUSCTL, "nats://%s:%s@127.0.0.1:%d" % (user, pw, s.port), "sub",
                          subject, str(seconds)], env=dict(os.environ, BUSCTL_NAME=user),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []

    def read():
        for line in p.stdout:
            lines.append(line.strip())
    t = threading.Thread(target=read, daemon=True)
    t.start()
    harness.wait_for(lambda: "ready" in lines, what="busctl sub %s as %s" % (subject, user))
    return p, t, lines


def test_each_service_is_held_to_its_subjects(st):
    """nats-server refuses what the table does not allow, and says so to the client ("Not
    Permitted" in its asynchronous errors); what it allows goes through."""
    s = _secured(st)
    p, t, seen = _listen(s, "edge", "auth.revoked", 8)  # the edges listen for revocations
    for user in ("edge", "producer", "gateway"):  # ... which only auth may announce
        rc, out = s.as_user(user, "pub", "auth.revoked", '{"sub":"alice","from":"%s"}' % user)
        assert "Not Permitted" in out, (user, out)
    rc, out = s.as_user("auth", "pub", "auth.revoked", '{"sub":"nobody","from":"auth"}')
    assert rc == 0 and "Not Permitted" not in out, out
    harness.wait_for(lambda: any('"from":"auth"' in l for l in seen), what="auth's revocation")
    p.terminate()
    p.wait(5)
    t.join(5)
    assert not any('"from":"edge"' in l or '"from":"producer"' in l or '"from":"gateway"' in l
                   for l in seen), seen
    # nobody but the producer (the back end) makes inbox messages; events come from the back
    # end, or from an edge storing a back end's api.publish (docs/SECURITY.md); only edges
    # tell the edges to disconnect (edges.>)
    for user, subject in (("edge", "users.alice"), ("gateway", "events.prices.BTC"),
                          ("auth", "users.alice"), ("producer", "edges.disconnect"),
                          ("gateway", "edges.disconnect"), ("auth", "api.disconnect")):
        rc, out = s.as_user(user, "pub", subject, "{}")
        assert "Not Permitted" in out, (user, subject, out)
    # nobody may answer auth's subjects but auth, nor read another service's replies
    for user, subject in (("producer", "auth.token"), ("edge", "auth.token"),
                          ("gateway", "_INBOX.auth.>"), ("producer", "_INBOX.gateway.>"),
                          ("edge", "_INBOX.>"), ("gateway", "live.>")):
        rc, out = s.as_user(user, "sub", subject, "1")
        assert "Not Permitted" in out, (user, subject, out)
    # the gateway's own requests work: a JWKS request answered by auth on the gateway's inbox
    rc, out = s.as_user("gateway", "req", "auth.jwks", "{}", "3000")
    assert rc == 0 and out.startswith("status=ok") and '"keys"' in out, out
    print("  auth.revoked: refused from edge, producer and gateway, delivered from auth;"
          " events/users only from the producer; auth.token and other inboxes unreadable")


def _start_without(s, name, *drop):
    """Runs the service with its env less the variables in drop: (exit code, stderr)."""
    env = dict(os.environ)
    env.update({k: v for k, v in s.env(name).items() if k not in drop})
    r = subprocess.run([os.path.join(harness.BUILD, name)], env=env, capture_output=True,
                       text=True, timeout=20, stdin=subprocess.DEVNULL)
    return r.returncode, r.stderr


def test_a_service_without_credentials_refuses_to_start(st):
    s = _secured(st)
    for name in ("gateway", "auth", "producer", "edge"):
        rc, err = _start_without(s, name, "NATS_USER", "NATS_PASSWORD")
        assert rc == 2, (name, rc, err[-500:])
        assert "NATS_URL" in err and "DEV_INSECURE_BUS" in err, (name, err)
    for name in ("auth", "edge"):  # NATS credentials, but an open Redis
        rc, err = _start_without(s, name, "REDIS_PASSWORD")
        assert rc == 2, (name, rc, err[-500:])
        assert "REDIS_URL" in err and "DEV_INSECURE_BUS" in err, (name, err)
    print("  gateway, auth, producer, edge: exit 2 on an open bus, naming DEV_INSECURE_BUS;"
          " auth and edge likewise on an open Redis")


def test_no_password_in_any_log(st):
    s = _secured(st)
    secrets = [v for k, v in s.bus.items() if "PASSWORD" in k]
    for name in ("auth-sec", "producer-sec", "gateway-sec", "edge-sec", "nats-auth",
                 "redis-auth"):
        with open(st.procs[name].log_path, "rb") as f:
            log = f.read().decode(errors="replace")
        for pw in secrets:
            assert pw not in log, "a bus password is in %s's log" % name
