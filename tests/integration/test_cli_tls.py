"""The command-line client over TLS: `sidecast` with https:// gateway and wss:// edge URLs
(docs/CLI.md, "TLS"), against real auth, gateway, edge and producer processes.

The gateway and the edge do not listen for TLS themselves yet, so TlsProxy below terminates
TLS on a loopback port and forwards the bytes to their plain ports; when the native
listeners come, the tests keep their shape with the proxies' URLs replaced by theirs. The CA
and the certificates are made per run by pki.py (nothing is committed).

Covered: login, token renewal, listen, publish and order --wait over TLS with --cacert (and
with SIDECAST_CACERT); without the CA (not in the system's store) every command fails with
the verification error naming the URL and exit 7, without retrying; a certificate for
another name or address is refused (the hostname check); an https:// or wss:// URL pointing
at a plain server fails promptly with a TLS error, and a server that never answers the
handshake is given up at the deadline. Under VALGRIND=1 the CLI itself runs under memcheck
(exit 24 on an error or a definite leak)."""
import json
import os
import select
import socket
import ssl
import subprocess
import threading
import time

import harness
import natspub
import pki

SERVICES = ("auth", "gateway", "edge", "producer")

CLI = os.path.join(harness.BUILD, "sidecast")
PASSWORDS = {"alice": "wonderland", "bob": "builder"}
EXIT_TLS = 7


class TlsProxy:
    """A TLS-terminating TCP proxy on 127.0.0.1 (an ephemeral port, bound here): each
    accepted connection is TLS with cert/key (TLS 1.2+, ALPN http/1.1 offered), and its
    plain bytes go to 127.0.0.1:target and back. One thread accepts; one thread per
    connection pumps both ways with select (an ssl socket is used from that thread only).
    Records, per handshake, the TLS version, the ALPN protocol and the SNI name the client
    sent, and the handshake failures (a client that refuses the certificate aborts it)."""

    def __init__(self, target, cert, key):
        self.target = target
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
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

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
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, conn):
        conn.settimeout(10 * harness.SLOW)
        up = tls = None
        try:
            tls = self.ctx.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
            tls.do_handshake()
            self.sessions.append((tls.version(), tls.selected_alpn_protocol()))
            up = socket.create_connection(("127.0.0.1", self.target), timeout=10 * harness.SLOW)
            while not self.stop_evt.is_set():
                ready = [tls] if tls.pending() else select.select([tls, up], [], [], 0.2)[0]
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    (up if s is tls else tls).sendall(data)
        except (ssl.SSLError, OSError) as e:
            if tls is None or not self.sessions or up is None:
                self.failures.append(str(e))
        finally:
            for s in (up, tls or conn):
                if s is not None:
                    s.close()

    @property
    def https(self):
        return "https://127.0.0.1:%d" % self.port

    @property
    def wss(self):
        return "wss://127.0.0.1:%d/ws" % self.port

    def close(self):
        self.stop_evt.set()
        self.lsock.close()
        for t in self.threads:
            t.join(5)


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


def _pki(st):
    """The run's CA (once per module) with a certificate for 127.0.0.1 and localhost, one for
    other.example only, and a second CA that signed none of them."""
    d = os.path.join(st.dir, "pki")
    if not os.path.exists(os.path.join(d, "server.pem")):
        ca = pki.CA(d)
        ca.issue("server")
        ca.issue("other", san="DNS:other.example")
        pki.CA(d, name="otherca", cn="some-other-ca")
    return d


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


def _proxies(st, cert="server"):
    d = _pki(st)
    c, k = os.path.join(d, cert + ".pem"), os.path.join(d, cert + ".key")
    return TlsProxy(st.gateway_port, c, k), TlsProxy(st.edge_port, c, k)


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
    gw, edge = _proxies(st)
    ca = os.path.join(_pki(st), "ca.pem")
    try:
        env = _env(st, "alice")
        env["SIDECAST_EDGE"] = edge.wss
        rc, out, err, _ = _login(st, env, gw.https, "--cacert", ca)
        assert rc == 0 and "logged in as alice" in out, (rc, out, err)
        t = _tokens(env)
        assert t["gateway"] == gw.https, t["gateway"]
        # the handshake was TLS 1.2 or later and agreed on http/1.1; no SNI for an address
        assert gw.sessions and all(v in ("TLSv1.2", "TLSv1.3") and a == "http/1.1"
                                   for v, a in gw.sessions), gw.sessions
        assert gw.sni == [], gw.sni

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
        assert edge.sessions and all(a == "http/1.1" for _, a in edge.sessions), edge.sessions

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

        # a host name: SNI carries it, and the certificate (DNS:localhost) matches it
        rc, out, err, _ = _login(st, env, "https://localhost:%d" % gw.port, "--cacert", ca)
        assert rc == 0, (rc, out, err)
        assert gw.sni[-1:] == ["localhost"], gw.sni
        assert gw.failures == [] and edge.failures == [], (gw.failures, edge.failures)
    finally:
        gw.close()
        edge.close()


def test_untrusted_ca_is_refused_with_the_reason(st):
    gw, edge = _proxies(st)
    d = _pki(st)
    try:
        env = _env(st, "bob")
        # the test CA is not in the system's store: refused, nothing saved
        rc, out, err, took = _login(st, env, gw.https, user="bob")
        assert rc == EXIT_TLS, (rc, out, err)
        line = err.strip()
        assert "\n" not in line, err
        assert gw.https in line and "certificate verify failed" in line, err
        assert "unable to get local issuer certificate" in line, err
        print("  untrusted CA (exit %d): %s" % (rc, line))
        assert not os.path.exists(env["SIDECAST_TOKEN_FILE"])
        # another CA given: refused too
        rc, out, err, _ = _login(st, env, gw.https, "--cacert",
                                 os.path.join(d, "otherca.pem"), user="bob")
        assert rc == EXIT_TLS and "certificate verify failed" in err, (rc, err)

        # the edge: logged in with the CA, listening without it is refused at once, not
        # retried (a refused certificate stays refused)
        rc, out, err, _ = _login(st, env, gw.https, "--cacert", os.path.join(d, "ca.pem"),
                                 user="bob")
        assert rc == 0, (rc, out, err)
        env["SIDECAST_EDGE"] = edge.wss
        rc, out, err, took = run(env, "listen", "prices.BTC", "--timeout", "20")
        assert rc == EXIT_TLS, (rc, out, err)
        assert edge.wss in err and "certificate verify failed" in err, err
        print("  untrusted CA, edge (exit %d): %s" % (rc, err.strip()))
        assert "reconnecting" not in err and took < 15 * harness.SLOW, (took, err)
        rc, out, err, _ = run(env, "publish", "prices.BTC", "1")
        assert rc == EXIT_TLS and "certificate verify failed" in err, (rc, err)
        # the token refresh goes to the gateway: without the CA it is refused with exit 7
        path = env["SIDECAST_TOKEN_FILE"]
        t = _tokens(env)
        with open(path, "w") as f:
            json.dump(dict(t, expires_at=int(time.time()) - 1), f)
        rc, out, err, _ = run(env, "order", "BTC", "1")
        assert rc == EXIT_TLS and gw.https in err and "certificate verify failed" in err, (
            rc, err)
        assert gw.failures and edge.failures, "the CLI did not abort the handshakes"
    finally:
        gw.close()
        edge.close()


def test_certificate_for_another_name_is_refused(st):
    gw, edge = _proxies(st, cert="other")  # SAN DNS:other.example only
    ca = os.path.join(_pki(st), "ca.pem")
    try:
        env = _env(st, "alice", cacert=ca)
        rc, out, err, _ = _login(st, env, gw.https)
        assert rc == EXIT_TLS and "IP address mismatch" in err, (rc, err)
        rc, out, err, _ = _login(st, env, "https://localhost:%d" % gw.port)
        assert rc == EXIT_TLS and "hostname mismatch" in err, (rc, err)
        print("  another name (exit %d): %s" % (rc, err.strip()))
        # the edge, with a good login first (through the real gateway, plain)
        rc, out, err, _ = _login(st, env, st.gateway_url)
        assert rc == 0, (rc, out, err)
        env["SIDECAST_EDGE"] = "wss://localhost:%d/ws" % edge.port
        rc, out, err, _ = run(env, "listen", "prices.BTC", "--timeout", "20")
        assert rc == EXIT_TLS and "hostname mismatch" in err, (rc, err)
        assert gw.sessions == [] and edge.sessions == [], "a handshake completed"
    finally:
        gw.close()
        edge.close()


def test_plain_server_on_a_tls_url_is_a_clean_error(st):
    ca = os.path.join(_pki(st), "ca.pem")
    env = _env(st, "alice", cacert=ca)
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
    env = _env(st, "alice", cacert=os.path.join(_pki(st), "server.key"))  # not a certificate
    rc, out, err, _ = run(env, "listen", "prices.BTC")
    assert rc == 2 and "SIDECAST_CACERT" in err and "CA file" in err, (rc, err)
    rc, out, err, _ = run(env, "--help")
    assert rc == 0 and "--cacert" in out and "7 TLS" in out, out
