"""The command-line client over TLS: `sidecast` with https:// gateway and wss:// edge URLs
(docs/CLI.md, "TLS"), against real auth, gateway, edge and producer processes, the gateway and
the edge serving TLS themselves (GATEWAY_TLS_LISTEN, EDGE_TLS_LISTEN) beside their plain
ports. The CA and the certificates are made per run by pki.py (nothing is committed); the
gateway and the edge read one pair from two files, which a test replaces before a SIGHUP.

Covered: login, token renewal, listen, publish and order --wait over TLS with --cacert (and
with SIDECAST_CACERT); what the CLI offers in its handshake (TLS 1.2 or later, ALPN
http/1.1, SNI with a host name and none with an address: a recording TLS server here, since
the servers do not say what a client offered); without the CA (not in the system's store)
every command fails with the verification error naming the URL and exit 7, without
retrying, and the edge counts the aborted handshakes; a certificate for another name or
address is refused (the hostname check); an https:// or wss:// URL pointing at a plain
server fails promptly with a TLS error, and a server that never answers the handshake is
given up at the deadline. Under VALGRIND=1 the CLI itself runs under memcheck (exit 24 on an
error or a definite leak)."""
import atexit
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time

import harness
import natspub
import pki

SERVICES = ("auth", "gateway", "edge", "producer")

CLI = os.path.join(harness.BUILD, "sidecast")
PASSWORDS = {"alice": "wonderland", "bob": "builder"}
EXIT_TLS = 7

# The run's CA with a certificate for 127.0.0.1 and localhost ("server"), one for
# other.example only ("other"), and a second CA that signed none of them.
DIR = tempfile.mkdtemp(prefix="sidecast-cli-tls-")
atexit.register(shutil.rmtree, DIR, True)
CA = pki.CA(DIR)
PAIRS = {"server": CA.issue("server"), "other": CA.issue("other", san="DNS:other.example")}
OTHER_CA = pki.CA(DIR, name="otherca", cn="some-other-ca")
LIVE_CERT, LIVE_KEY = os.path.join(DIR, "live.pem"), os.path.join(DIR, "live.key")
shutil.copyfile(PAIRS["server"][0], LIVE_CERT)
shutil.copyfile(PAIRS["server"][1], LIVE_KEY)
GW_TLS_PORT = harness.free_port()
EDGE_TLS_PORT = harness.free_port()
while EDGE_TLS_PORT == GW_TLS_PORT:
    EDGE_TLS_PORT = harness.free_port()
ENV = {
    "gateway": {"GATEWAY_TLS_LISTEN": "127.0.0.1:%d" % GW_TLS_PORT,
                "GATEWAY_TLS_CERT": LIVE_CERT, "GATEWAY_TLS_KEY": LIVE_KEY},
    "edge": {"EDGE_TLS_LISTEN": "127.0.0.1:%d" % EDGE_TLS_PORT,
             "EDGE_TLS_CERT": LIVE_CERT, "EDGE_TLS_KEY": LIVE_KEY},
}
GW_HTTPS = "https://127.0.0.1:%d" % GW_TLS_PORT
EDGE_WSS = "wss://127.0.0.1:%d/ws" % EDGE_TLS_PORT


class HandshakeRecorder:
    """A TLS server on 127.0.0.1 (an ephemeral port) that records what each client offers
    and then closes: per completed handshake the TLS version and the ALPN protocol agreed
    (TLS 1.2+, http/1.1 offered), the SNI names sent, and the handshakes that failed (a
    client that refuses the certificate aborts its handshake). One thread accepts and serves
    one connection at a time."""

    def __init__(self, cert, key):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self.ctx.load_cert_chain(cert, key)
        self.ctx.set_alpn_protocols(["http/1.1"])
        self.sni = []  # server names the clients sent (a handshake without SNI adds none)
        self.ctx.sni_callback = self._on_sni
        self.sessions = []  # (version, alpn) per completed handshake
        self.failures = []  # handshake errors, as text
        self.stop_evt = threading.Event()
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _on_sni(self, sock, name, ctx):
        if name is not None:
            self.sni.append(name)

    def _accept(self):
        while not self.stop_evt.is_set():
            try:
                conn, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(10 * harness.SLOW)
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    self.sessions.append((tls.version(), tls.selected_alpn_protocol()))
            except (ssl.SSLError, OSError) as e:
                self.failures.append(str(e))
            finally:
                conn.close()

    def close(self):
        self.stop_evt.set()
        self.lsock.close()
        self.thread.join(5)


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never says a word (a TLS handshake to it
    can only end at the client's deadline)."""

    def __init__(self):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.port = self.lsock.getsockname()[1]

    def close(self):
        self.lsock.close()


def _env(st, user, cacert=None):
    env = dict(os.environ)
    for k in ("SIDECAST_PASSWORD", "SIDECAST_CACERT", "SIDECAST_EDGE", "SIDECAST_GATEWAY"):
        env.pop(k, None)
    env["SIDECAST_TOKEN_FILE"] = os.path.join(st.dir, "cli-tls", user, "token.json")
    if cacert:
        env["SIDECAST_CACERT"] = cacert
    if harness.SAN:
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:exitcode=23")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    return env


def _argv(args):
    argv = [CLI] + [str(a) for a in args]
    return harness.VALGRIND_ARGV + argv if harness.VALGRIND else argv


def run(env, *args, timeout=30):
    t0 = time.monotonic()
    p = subprocess.run(_argv(args), env=env, capture_output=True, timeout=timeout * harness.SLOW,
                       stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout.decode(), p.stderr.decode(), time.monotonic() - t0


def start(env, *args):
    """The CLI in the background, killed by a watchdog after 90 s (hang guard)."""
    p = subprocess.Popen(_argv(args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL)
    dog = threading.Timer(90 * harness.SLOW, lambda: p.poll() is None and p.kill())
    dog.daemon = True
    dog.start()
    return p


def _tokens(env):
    with open(env["SIDECAST_TOKEN_FILE"]) as f:
        return json.load(f)


def _metric(st, url, series):
    body = harness.http("GET", url + "/metrics").body.decode()
    for line in body.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0


def _reloads(st):
    return (_metric(st, st.gateway_url, 'sc_gateway_tls_reloads_total{result="ok"}'),
            _metric(st, "http://127.0.0.1:%d" % st.edge_port,
                    'sc_edge_tls_reloads_total{result="ok"}'))


def _edge_handshakes(st, result):
    return _metric(st, "http://127.0.0.1:%d" % st.edge_port,
                   'sc_edge_tls_handshakes_total{result="%s"}' % result)


def _install(st, pair):
    """Puts the named pair where the gateway and the edge read it (each file by a rename, as
    a deploy tool would), sends both SIGHUP and waits until both have loaded it."""
    gw_ok, edge_ok = _reloads(st)
    for src, dst in zip(PAIRS[pair], (LIVE_CERT, LIVE_KEY)):
        shutil.copyfile(src, dst + ".new")
        os.replace(dst + ".new", dst)
    st.procs["gateway"].signal(signal.SIGHUP)
    st.procs["edge"].signal(signal.SIGHUP)
    harness.wait_for(lambda: _reloads(st) == (gw_ok + 1, edge_ok + 1),
                     timeout=10 * harness.SLOW, what="the gateway and the edge load " + pair)


def _publish_until(st, subject, stop, tag):
    nc = natspub.Nats(st.nats_url)
    try:
        n = 0
        while not stop.is_set() and n < 1000:
            n += 1
            nc.pub(subject, {"n": n, "tag": tag})
            nc.flush()
            stop.wait(0.2)
    finally:
        nc.close()


def _login(st, env, gateway, *extra, user="alice"):
    return run(env, "login", "--gateway", gateway, user, "--password", PASSWORDS[user], *extra)


def test_login_listen_publish_order_over_tls(st):
    ca = CA.pem
    env = _env(st, "alice")
    env["SIDECAST_EDGE"] = EDGE_WSS
    full = _edge_handshakes(st, "full")
    rc, out, err, _ = _login(st, env, GW_HTTPS, "--cacert", ca)
    assert rc == 0 and "logged in as alice" in out, (rc, out, err)
    t = _tokens(env)
    assert t["gateway"] == GW_HTTPS, t["gateway"]

    # listen over wss (the CA from the environment this time), events from NATS
    env_ca = dict(env, SIDECAST_CACERT=ca)
    p = start(env_ca, "listen", "prices.XTLS", "--json", "--count", "2")
    stop = threading.Event()
    pub = threading.Thread(target=_publish_until,
                           args=(st, "events.prices.XTLS", stop, "tls"), daemon=True)
    pub.start()
    try:
        out, err = p.communicate(timeout=30 * harness.SLOW)
    finally:
        stop.set()
        pub.join(10)
    assert p.returncode == 0, (p.returncode, err)
    evs = [json.loads(l) for l in out.decode().splitlines()]
    assert len(evs) == 2 and all(e["topic"] == "prices.XTLS" and e["data"]["tag"] == "tls"
                                 for e in evs), evs
    assert _edge_handshakes(st, "full") > full, "the edge counted no TLS handshake"

    # publish over wss, with its ack
    rc, out, err, _ = run(env, "publish", "chat.lobby", '{"text":"over tls"}', "--id",
                          "tls1", "--cacert", ca)
    assert rc == 0 and out.strip() == "ack tls1", (rc, out, err)

    # a token that is due is renewed through the https gateway before connecting
    path = env["SIDECAST_TOKEN_FILE"]
    before = _tokens(env)
    stale = dict(before, expires_at=int(time.time()) - 1, issued_at=int(time.time()) - 301)
    with open(path, "w") as f:
        json.dump(stale, f)
    os.chmod(path, 0o600)
    rc, out, err, _ = run(env_ca, "order", "BTC", "1", "--wait", "--timeout", "20")
    assert rc == 0, (rc, out, err)
    lines = out.splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["order_id"] == lines[0], lines
    after = _tokens(env)
    assert after["refresh_token"] != before["refresh_token"], "not renewed over https"
    assert after["expires_at"] > stale["expires_at"]
    for text in (out, err):
        assert after["access_token"] not in text and after["refresh_token"] not in text

    # a host name: the certificate (DNS:localhost) matches it, on both
    rc, out, err, _ = _login(st, env, "https://localhost:%d" % GW_TLS_PORT, "--cacert", ca)
    assert rc == 0, (rc, out, err)
    env["SIDECAST_EDGE"] = "wss://localhost:%d/ws" % EDGE_TLS_PORT
    rc, out, err, _ = run(env_ca, "publish", "chat.lobby", '{"text":"by name"}', "--id", "n1")
    assert rc == 0 and out.strip() == "ack n1", (rc, out, err)


def test_what_the_cli_offers_in_its_handshake(st):
    """TLS 1.2 or later and ALPN http/1.1 always; SNI with a host name, none with an address.
    The recorder completes the handshake and closes, so the commands themselves fail."""
    rec = HandshakeRecorder(*PAIRS["server"])
    try:
        env = _env(st, "alice", cacert=CA.pem)
        _login(st, env, "https://127.0.0.1:%d" % rec.port)
        assert rec.sessions and all(v in ("TLSv1.2", "TLSv1.3") and a == "http/1.1"
                                    for v, a in rec.sessions), rec.sessions
        assert rec.sni == [], rec.sni
        _login(st, env, "https://localhost:%d" % rec.port)
        assert rec.sni[-1:] == ["localhost"], rec.sni
        rc, out, err, _ = _login(st, env, st.gateway_url)
        assert rc == 0, (rc, out, err)
        n = len(rec.sessions)
        env["SIDECAST_EDGE"] = "wss://localhost:%d/ws" % rec.port
        run(env, "publish", "chat.lobby", "1", timeout=20)
        assert len(rec.sessions) > n and rec.sessions[-1][1] == "http/1.1", rec.sessions
        assert rec.sni[-1:] == ["localhost"], rec.sni
        assert rec.failures == [], rec.failures
    finally:
        rec.close()


def test_untrusted_ca_is_refused_with_the_reason(st):
    env = _env(st, "bob")
    # the test CA is not in the system's store: refused, nothing saved
    rc, out, err, took = _login(st, env, GW_HTTPS, user="bob")
    assert rc == EXIT_TLS, (rc, out, err)
    line = err.strip()
    assert "\n" not in line, err
    assert GW_HTTPS in line and "certificate verify failed" in line, err
    assert "unable to get local issuer certificate" in line, err
    print("  untrusted CA (exit %d): %s" % (rc, line))
    assert not os.path.exists(env["SIDECAST_TOKEN_FILE"])
    # another CA given: refused too
    rc, out, err, _ = _login(st, env, GW_HTTPS, "--cacert", OTHER_CA.pem, user="bob")
    assert rc == EXIT_TLS and "certificate verify failed" in err, (rc, err)

    # the edge: logged in with the CA, listening without it is refused at once, not
    # retried (a refused certificate stays refused); the edge sees the handshake aborted
    rc, out, err, _ = _login(st, env, GW_HTTPS, "--cacert", CA.pem, user="bob")
    assert rc == 0, (rc, out, err)
    env["SIDECAST_EDGE"] = EDGE_WSS
    failed = _edge_handshakes(st, "failed")
    rc, out, err, took = run(env, "listen", "prices.BTC", "--timeout", "20")
    assert rc == EXIT_TLS, (rc, out, err)
    assert EDGE_WSS in err and "certificate verify failed" in err, err
    print("  untrusted CA, edge (exit %d): %s" % (rc, err.strip()))
    assert "reconnecting" not in err and took < 15 * harness.SLOW, (took, err)
    rc, out, err, _ = run(env, "publish", "prices.BTC", "1")
    assert rc == EXIT_TLS and "certificate verify failed" in err, (rc, err)
    harness.wait_for(lambda: _edge_handshakes(st, "failed") >= failed + 2,
                     timeout=5 * harness.SLOW, what="the edge counting the aborted handshakes")
    # the token refresh goes to the gateway: without the CA it is refused with exit 7
    path = env["SIDECAST_TOKEN_FILE"]
    t = _tokens(env)
    with open(path, "w") as f:
        json.dump(dict(t, expires_at=int(time.time()) - 1), f)
    rc, out, err, _ = run(env, "order", "BTC", "1")
    assert rc == EXIT_TLS and GW_HTTPS in err and "certificate verify failed" in err, (
        rc, err)


def test_certificate_for_another_name_is_refused(st):
    """The gateway and the edge serve a certificate for other.example only (SIGHUP), then
    their own again."""
    env = _env(st, "alice", cacert=CA.pem)
    # a good login first (the plain gateway), for the edge part
    rc, out, err, _ = _login(st, env, st.gateway_url)
    assert rc == 0, (rc, out, err)
    _install(st, "other")
    try:
        full = _edge_handshakes(st, "full")
        rc, out, err, _ = _login(st, dict(env, SIDECAST_TOKEN_FILE=env["SIDECAST_TOKEN_FILE"]
                                          + ".other"), GW_HTTPS)
        assert rc == EXIT_TLS and "IP address mismatch" in err, (rc, err)
        rc, out, err, _ = _login(st, dict(env, SIDECAST_TOKEN_FILE=env["SIDECAST_TOKEN_FILE"]
                                          + ".other"), "https://localhost:%d" % GW_TLS_PORT)
        assert rc == EXIT_TLS and "hostname mismatch" in err, (rc, err)
        print("  another name (exit %d): %s" % (rc, err.strip()))
        env["SIDECAST_EDGE"] = "wss://localhost:%d/ws" % EDGE_TLS_PORT
        rc, out, err, _ = run(env, "listen", "prices.BTC", "--timeout", "20")
        assert rc == EXIT_TLS and "hostname mismatch" in err, (rc, err)
        env["SIDECAST_EDGE"] = EDGE_WSS
        rc, out, err, _ = run(env, "listen", "prices.BTC", "--timeout", "20")
        assert rc == EXIT_TLS and "IP address mismatch" in err, (rc, err)
        assert _edge_handshakes(st, "full") == full, "a handshake completed"
    finally:
        _install(st, "server")
    rc, out, err, _ = run(env, "publish", "chat.lobby", "1", "--id", "back")
    assert rc == 0 and out.strip() == "ack back", (rc, out, err)


def test_plain_server_on_a_tls_url_is_a_clean_error(st):
    env = _env(st, "alice", cacert=CA.pem)
    # the gateway's and the edge's plain ports, spoken to in TLS: they answer with HTTP
    plain_gw = "https://127.0.0.1:%d" % st.gateway_port
    rc, out, err, took = _login(st, env, plain_gw)
    assert rc == EXIT_TLS and plain_gw in err and "TLS handshake failed" in err, (rc, err)
    assert took < 8 * harness.SLOW, took
    print("  plain gateway (exit %d, %.1f s): %s" % (rc, took, err.strip()))
    rc, out, err, _ = _login(st, env, st.gateway_url)
    assert rc == 0, (rc, out, err)
    env["SIDECAST_EDGE"] = "wss://127.0.0.1:%d/ws" % st.edge_port
    rc, out, err, took = run(env, "listen", "prices.BTC", "--timeout", "20")
    assert rc == EXIT_TLS and "TLS handshake failed" in err, (rc, err)
    assert "reconnecting" not in err and took < 8 * harness.SLOW, (took, err)
    print("  plain edge (exit %d, %.1f s): %s" % (rc, took, err.strip()))
    # a server that accepts and never answers: given up at the 10 s bound, not a hang
    silent = SilentServer()
    try:
        rc, out, err, took = _login(st, env, "https://127.0.0.1:%d" % silent.port)
        assert rc == 4 and "timed out" in err, (rc, err)
        assert took < 20 * harness.SLOW, took
        print("  silent server (exit %d, %.1f s): %s" % (rc, took, err.strip()))
    finally:
        silent.close()


def test_cacert_that_cannot_be_used_is_a_usage_error(st):
    env = _env(st, "alice")
    rc, out, err, _ = run(env, "--cacert", "/nonexistent/ca.pem", "login", "alice",
                          "--password", "x")
    assert rc == 2 and "/nonexistent/ca.pem" in err, (rc, err)
    env = _env(st, "alice", cacert=PAIRS["server"][1])  # not a certificate
    rc, out, err, _ = run(env, "listen", "prices.BTC")
    assert rc == 2 and "SIDECAST_CACERT" in err and "CA file" in err, (rc, err)
    rc, out, err, _ = run(env, "--help")
    assert rc == 0 and "--cacert" in out and "7 TLS" in out, out
