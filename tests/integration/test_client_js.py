"""The JavaScript client (clients/js/sidecast.js) in Node against the real stack: auth,
gateway, producer and two edges.

tests/clientjs/run.mjs runs the client with the ws package as Node 20's WebSocket (installed
from that directory's lock file with `npm ci`, once per pin). Its tokens come from the
gateway's token endpoint (alice's password, then her rotating refresh token). Access tokens
live 20 s here and the edges warn 17 s ahead, so token_expiring comes 3 s after each
token is issued and every connection refreshes in band while the tests run.

* basics: connect, subscribe (ticks with increasing seq), a refused subscribe, publish with
  an id (ack, then duplicate: true for the same id), a refused publish, rpc (an answer, the
  service's not_found, a method not allowed), presence through the gateway, close;
* tokens: a first token the edge refuses (4001) makes the client ask its provider again
  (reasons "start", "rejected"); token_expiring: the provider's new token goes in band and
  the connection lives on (same conn_id);
* failover: the client holds [edge1, edge2]; the test publishes numbered events at a steady
  rate on a topic of its own and on alice's inbox, and stops edge1 half-way (SIGKILL: the
  TCP connection just ends; SIGTERM: the edge drains with 1001). The client moves to edge2,
  resubscribes with since, reports both gaps recovered, and has received every number once,
  in order, on both topics; and the same with the client in headless Chromium (a page of the
  gateway's origin importing /sidecast.js, tests/e2e/client-failover.test.mjs), SIGKILL;
* reconnect: the backoff delays against a port nobody listens on (each in [0, min(cap,
  base * 2^attempt)), so capped), the attempt count reset after a stable period, a hung
  edge (SIGSTOP) found out by ping/pong (close 4000) and left for the other, and a publish
  and an rpc asked while the edge is stopped, answered once it is back;
* resume: subscribe with a since still retained (replayed, reported recovered) and one whose
  events were purged (reported history_gone with the oldest seq);
* types: index.d.ts compiles under tsc --strict with the uses in tests/clientjs/types.check.ts;
* npm pack: the tarball installs into an empty project and imports by its package name,
  with its type declarations.

The same client in headless Chromium: the demo page is built on it (test_browser.py,
test_browser_tls.py, tests/e2e/demo.test.mjs).
"""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import browser
import harness
import natspub

SERVICES = ("auth", "gateway", "producer", "edge1", "edge2")
ENV = {
    "auth": {"ACCESS_TOKEN_TTL": "20"},
    "edge": {"EDGE_TOKEN_WARNING_S": "17", "JWT_DEFAULT_RPC_METHODS": "prices.*",
             "EDGE_DRAIN_TIMEOUT_MS": "2000", "EDGE_CLOSE_TIMEOUT_MS": "1000"},
    "producer": {"PRODUCER_TICK_MS": "200"},
}
CLIENT = os.path.join(harness.ROOT, "clients", "js")
TESTS = os.path.join(harness.ROOT, "tests", "clientjs")
RUN = os.path.join(TESTS, "run.mjs")
COUNT = 100        # events per topic in a failover run
RATE = 25          # of them per second


def _npm_ci():
    """tests/clientjs/node_modules as its package.json pins it (once, again when a pin changed)."""
    with open(os.path.join(TESTS, "package.json")) as f:
        want = json.load(f)["dependencies"]
    have = {}
    for name in want:
        try:
            with open(os.path.join(TESTS, "node_modules", name, "package.json")) as f:
                have[name] = json.load(f).get("version")
        except OSError:
            pass
    if have == want:
        return
    rc, out = browser.run(["npm", "ci", "--no-audit", "--no-fund"], timeout=110, cwd=TESTS)
    assert rc == 0, "npm ci in tests/clientjs failed (%s):\n%s" % (rc, out[-3000:])


def _env(st, **extra):
    env = {"SC_GATEWAY": st.gateway_url,
           "SC_EDGES": ",".join(st.edge_url_of(e) for e in ("edge1", "edge2"))}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _scenario(st, name, timeout=100, **env):
    """Runs run.mjs <name>; does what it asks on the way ("DO STOP edge2", "DO START edge2":
    stop a service with SIGTERM, start it again; "DO FREEZE edge1", "DO THAW edge1": SIGSTOP,
    SIGCONT) and answers OK on its stdin."""
    _npm_ci()
    p = subprocess.Popen(["node", RUN, name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.PIPE, start_new_session=True,
                         env=dict(os.environ, **_env(st, **env)))
    lines = []
    deadline = time.monotonic() + timeout
    timer = threading.Timer(timeout, lambda: os.killpg(p.pid, signal.SIGKILL))
    timer.start()
    try:
        for raw in p.stdout:
            line = raw.decode(errors="replace").rstrip()
            lines.append(line)
            if line.startswith("DO "):
                verb, svc = line[3:].split()
                if verb == "STOP":
                    st.stop_service(svc)
                elif verb == "START":
                    st.restart(svc)
                else:  # FREEZE / THAW: the process hangs (no byte answered) / goes on
                    st.procs[svc].signal(signal.SIGSTOP if verb == "FREEZE" else signal.SIGCONT)
                p.stdin.write(b"OK\n")
                p.stdin.flush()
        rc = p.wait(max(1, deadline - time.monotonic()))
    finally:
        timer.cancel()
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    out = "\n".join(lines)
    print("\n".join("  node: " + l for l in lines))
    assert rc == 0, "run.mjs %s exited %s:\n%s" % (name, rc, out[-4000:])
    assert "PASS " + name in lines, out[-2000:]
    return out


def test_tools_present(st):
    assert shutil.which("node") and shutil.which("npm"), "node and npm are needed (Debian: nodejs npm)"


def test_npm_ci(st):
    _npm_ci()


def test_basics(st):
    _scenario(st, "basics")


def test_tokens_rejected_then_refreshed_in_band(st):
    _scenario(st, "tokens")


def test_reconnect_backoff_and_requests_while_away(st):
    _ensure(st, "edge1", "edge2")
    _scenario(st, "reconnect", SC_DEAD_PORT=harness.free_port())


def test_resume_reports_recovered_and_history_gone(st):
    nats = natspub.Nats(st.nats_url_one())

    def pub(topic, n):  # a request: JetStream's ack says the event is stored, and where
        _, _, body = nats.request("events." + topic, {"run": topic, "n": n})
        return json.loads(body)["seq"]
    kept = "chat.jsresume.k%d" % time.monotonic_ns()
    gone = "chat.jsresume.g%d" % time.monotonic_ns()
    kept_since = pub(kept, 1)
    pub(kept, 2)
    pub(kept, 3)
    gone_since = pub(gone, 1)
    pub(gone, 2)
    nats.purge("SIDECAST", "events." + gone)  # as if they had aged out
    oldest = pub(gone, 3)
    nats.close()
    _scenario(st, "resume", SC_KEPT_TOPIC=kept, SC_KEPT_SINCE=kept_since, SC_GONE_TOPIC=gone,
              SC_GONE_SINCE=gone_since, SC_GONE_OLDEST=oldest)


def test_since_last_hands_the_current_value(st):
    nats = natspub.Nats(st.nats_url_one())
    topic = "chat.jslast.t%d" % time.monotonic_ns()
    for n in (1, 2, 3):
        nats.request("events." + topic, {"n": n})  # stored before the client comes
    nats.close()
    _scenario(st, "last", SC_LAST_TOPIC=topic)


def _ensure(st, *names):
    for n in names:
        if not st.procs[n].alive():
            st.restart(n)


def _failover(st, sig, in_browser=False):
    """One run: the client on edge1 (in Node, or in Chromium on a page of the gateway),
    numbered events on a topic and the inbox, edge1 stopped with sig half-way. Returns the
    topic and the client's RESULT."""
    _ensure(st, "edge1", "edge2")
    topic = "chat.jsfail.%s%s%d" % ("b" if in_browser else "n",
                                    "k" if sig == signal.SIGKILL else "t", time.monotonic_ns())
    env = _env(st, SC_TOPIC=topic, SC_COUNT=COUNT)
    if in_browser:
        browser.npm_ci()
        argv = ["node", os.path.join(browser.E2E, "client-failover.test.mjs")]
        env.update(GATEWAY_URL=st.gateway_url, CHROMIUM=browser.CHROMIUM)
    else:
        _npm_ci()
        argv = ["node", RUN, "failover"]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True, env=dict(os.environ, **env))
    lines = []
    ready = threading.Event()

    def reader():
        for raw in p.stdout:
            line = raw.decode(errors="replace").rstrip()
            lines.append(line)
            if line.startswith("READY"):
                ready.set()
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        assert ready.wait(60), "the client did not get ready:\n" + "\n".join(lines)
        assert lines[-1] == "READY edge-1", lines  # urls[0] is edge1
        nats = natspub.Nats(st.nats_url_one())
        killer = None
        t0 = time.monotonic()
        for n in range(1, COUNT + 1):
            body = {"run": topic, "n": n}
            nats.pub("events." + topic, body)
            nats.pub("users.alice", body)
            if n == COUNT // 2:  # mid-stream; a thread, so that publishing goes on meanwhile
                killer = threading.Thread(target=st.kill, args=("edge1", sig))
                killer.start()
            # a steady rate: the n-th publish at n / RATE s (pacing, not a timed assertion)
            time.sleep(max(0.0, t0 + n / RATE - time.monotonic()))
        nats.flush()
        killer.join(15)
        rc = p.wait(60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        t.join(5)
    print("\n".join("  node: " + l for l in lines if not l.startswith("RESULT")))
    res = [l for l in lines if l.startswith("RESULT ")]
    assert rc == 0 and res, "%s exited %s:\n%s" % (argv[-1], rc, "\n".join(lines[-40:]))
    return topic, json.loads(res[-1][7:])


def _check_failover(topic, r, close_code):
    want = list(range(1, COUNT + 1))
    for tp in (topic, "user"):
        got = r["got"][tp]
        lost = sorted(set(want) - set(got))
        dup = len(got) - len(set(got))
        print("  %s: %d received, %d lost, %d duplicated, in order: %s" % (
            tp, len(got), len(lost), dup, got == sorted(got)))
        assert got == want, "%s: lost %s, %d duplicated, got %s" % (tp, lost[:20], dup, got)
    print("  edges %s, closes %s, resumed %s, dropped duplicates %d, token calls %s" % (
        r["edges"], r["closes"], [(x["topic"][:12], x["recovered"]) for x in r["resumed"]],
        r["duplicatesDropped"], r["tokenReasons"]))
    assert r["edges"][0] == "edge-1" and r["edges"][-1] == "edge-2", r["edges"]
    assert close_code in r["closes"], r["closes"]
    for tp in (topic, "user"):
        reps = [x for x in r["resumed"] if x["topic"] == tp]
        assert reps and all(x["recovered"] for x in reps), (tp, r["resumed"])
    assert not r["errors"], r["errors"]


def test_failover_edge_sigkill(st):
    topic, r = _failover(st, signal.SIGKILL)
    _check_failover(topic, r, 1006)


def test_failover_edge_sigterm(st):
    topic, r = _failover(st, signal.SIGTERM)
    _check_failover(topic, r, 1001)


def test_failover_in_chromium_edge_sigkill(st):
    browser.tools_present()
    topic, r = _failover(st, signal.SIGKILL, in_browser=True)
    _check_failover(topic, r, 1006)


def test_type_declarations_compile(st):
    """index.d.ts under tsc --strict: tests/clientjs/types.check.ts uses the API as an
    application does (and two misuses that must not compile)."""
    _npm_ci()
    rc, out = browser.run([os.path.join(TESTS, "node_modules", ".bin", "tsc"), "-p", TESTS],
                          timeout=120, cwd=TESTS)
    assert rc == 0, "tsc:\n" + out[-3000:]


def test_npm_pack_installs_and_imports(st):
    tmp = tempfile.mkdtemp(prefix="sidecast-pack-")
    try:
        rc, out = browser.run(["npm", "pack", "--pack-destination", tmp], timeout=60, cwd=CLIENT)
        assert rc == 0, out[-2000:]
        tgz = [f for f in os.listdir(tmp) if f.endswith(".tgz")]
        assert len(tgz) == 1, (os.listdir(tmp), out)
        listing = subprocess.run(["tar", "tzf", os.path.join(tmp, tgz[0])], capture_output=True,
                                 check=True).stdout.decode().split()
        assert sorted(listing) == ["package/README.md", "package/index.d.ts",
                                   "package/package.json", "package/sidecast.js"], listing
        proj = os.path.join(tmp, "app")
        os.makedirs(proj)
        with open(os.path.join(proj, "package.json"), "w") as f:
            json.dump({"name": "pack-check", "private": True, "type": "module"}, f)
        rc, out = browser.run(["npm", "install", "--offline", "--no-audit", "--no-fund",
                               os.path.join(tmp, tgz[0])], timeout=60, cwd=proj)
        assert rc == 0, "npm install of the tarball failed:\n" + out[-2000:]
        script = (
            'import { Sidecast, SidecastError, PROTOCOL, VERSION, DEFAULTS } from "@sidecast/client";\n'
            'import def from "@sidecast/client";\n'
            'import { createRequire } from "node:module";\n'
            'import fs from "node:fs";\n'
            'const pkg = createRequire(import.meta.url)("@sidecast/client/package.json");\n'
            'if (def !== Sidecast || PROTOCOL !== "sidecast.v1" || VERSION !== pkg.version) throw new Error("exports");\n'
            'if (!fs.existsSync("node_modules/@sidecast/client/" + pkg.types)) throw new Error("types");\n'
            'if (typeof WebSocket === "undefined") { // Node 20: the ws package must be given\n'
            '  let e = null; try { new Sidecast({ url: "ws://x/ws", token: "t" }); } catch (x) { e = x; }\n'
            '  if (!e || !/WebSocket/.test(e.message)) throw new Error("no WebSocket: " + e);\n'
            '}\n'
            'console.log("imported", pkg.name, VERSION, Object.keys(DEFAULTS).length, "defaults");\n')
        rc, out = browser.run(["node", "--input-type=module", "-e", script], timeout=30, cwd=proj)
        assert rc == 0 and "imported @sidecast/client" in out, out[-2000:]
        print("  " + tgz[0] + ": " + out.strip())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
