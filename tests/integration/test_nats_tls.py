"""NATS over TLS and mutual TLS, as configured by NATS_TLS_CA / NATS_TLS_CERT / NATS_TLS_KEY.

A CA, a server certificate for 127.0.0.1 and a client certificate are made with openssl;
a nats-server that requires TLS (and one that also requires a client certificate) runs on
a free loopback port; the producer (any service reads the same keys) must get ready with
the right settings and must not connect without them.
"""
import os

import harness
import pki

SERVICES = ()


def _pki(d):
    ca = pki.CA(d)
    for name in ("server", "client"):
        ca.issue(name)


def _nats_tls(st, d, verify):
    port = harness.free_port()
    mon = harness.free_port()
    argv = ["nats-server", "-a", "127.0.0.1", "-p", str(port), "-m", str(mon), "--tls",
            "--tlscert", os.path.join(d, "server.pem"), "--tlskey", os.path.join(d, "server.key"),
            "--tlscacert", os.path.join(d, "ca.pem")]
    if verify:
        argv.append("--tlsverify")
    name = "nats-tls-verify" if verify else "nats-tls"
    st.procs[name] = harness.Proc(name, argv, {}, st.dir)
    harness.wait_for(lambda: harness.http("GET", "http://127.0.0.1:%d/healthz" % mon,
                                          timeout=1).status == 200, what=name)
    return port


def _producer(st, name, env):
    admin = harness.free_port()
    e = st.service_env("producer")
    e.update({"ADMIN_LISTEN": "127.0.0.1:%d" % admin, "PRODUCER_TICK_MS": "1000"})
    e.update(env)
    p = harness.Proc(name, [os.path.join(harness.BUILD, "producer")], e, st.dir)
    st.procs[name] = p
    return p, "http://127.0.0.1:%d/readyz" % admin


def _stop(st, *names):
    """Stops what a test started (nats-server exits 1 on SIGTERM: not a service's failure)."""
    for n in names:
        p = st.procs.pop(n)
        code = p.stop()
        if n in ("producer-tls", "producer-mtls"):  # the refused ones may have given up
            assert code == 0, (n, code, p.tail())


def _ready(url):
    try:
        r = harness.http("GET", url, timeout=1)
        return r.status == 200 and b"nats=up" in r.body
    except OSError:
        return False


def test_tls_with_the_ca_connects_and_without_it_does_not(st):
    d = os.path.join(st.dir, "pki")
    _pki(d)
    port = _nats_tls(st, d, verify=False)
    url = "tls://127.0.0.1:%d" % port
    good, good_url = _producer(st, "producer-tls", {
        "NATS_URL": url, "NATS_TLS_CA": os.path.join(d, "ca.pem")})
    bad, bad_url = _producer(st, "producer-notrust", {"NATS_URL": url})
    harness.wait_for(lambda: _ready(good_url), timeout=15, what="producer over TLS ready")
    assert not _ready(bad_url), "connected without trusting the server's CA"
    print("  TLS with NATS_TLS_CA: ready; without it: not connected")
    _stop(st, "producer-tls", "producer-notrust", "nats-tls")


def test_mutual_tls_needs_the_client_certificate(st):
    d = os.path.join(st.dir, "pki")
    port = _nats_tls(st, d, verify=True)
    url = "tls://127.0.0.1:%d" % port
    good, good_url = _producer(st, "producer-mtls", {
        "NATS_URL": url, "NATS_TLS_CA": os.path.join(d, "ca.pem"),
        "NATS_TLS_CERT": os.path.join(d, "client.pem"),
        "NATS_TLS_KEY": os.path.join(d, "client.key")})
    bad, bad_url = _producer(st, "producer-nocert", {
        "NATS_URL": url, "NATS_TLS_CA": os.path.join(d, "ca.pem")})
    harness.wait_for(lambda: _ready(good_url), timeout=15, what="producer over mTLS ready")
    assert not _ready(bad_url), "connected without a client certificate"
    log = open(os.path.join(st.dir, "producer-mtls.log")).read() if os.path.exists(
        os.path.join(st.dir, "producer-mtls.log")) else ""
    assert "client.key" not in log or "****" in log, "the key path is masked in the config log"
    print("  mutual TLS with NATS_TLS_CERT/KEY: ready; without a client certificate: not")
    _stop(st, "producer-mtls", "producer-nocert", "nats-tls-verify")


def test_url_credentials_connect_and_stay_out_of_the_log(st):
    """NATS user and password in NATS_URL: the right ones connect, wrong ones do not, and the
    password shows up in no log line (the config line, "nats connected", errors). The
    password holds a '/', as generated base64 secrets do: nats.c splits the URL at the last
    '@' and connects, and the mask used to stop at the '/' and log it in clear."""
    secret = "S3cret/PW+" + os.urandom(4).hex()
    port, mon = harness.free_port(), harness.free_port()
    st.procs["nats-auth"] = harness.Proc("nats-auth", [
        "nats-server", "-a", "127.0.0.1", "-p", str(port), "-m", str(mon), "--user", "sc",
        "--pass", secret], {}, st.dir)
    harness.wait_for(lambda: harness.http("GET", "http://127.0.0.1:%d/healthz" % mon,
                                          timeout=1).status == 200, what="nats-auth")
    good, good_url = _producer(st, "producer-auth", {
        "NATS_URL": "nats://sc:%s@127.0.0.1:%d" % (secret, port)})
    bad, bad_url = _producer(st, "producer-badpw", {
        "NATS_URL": "nats://sc:wrong-%s@127.0.0.1:%d" % (secret, port)})
    harness.wait_for(lambda: _ready(good_url), timeout=15, what="producer with credentials")
    assert not _ready(bad_url), "connected with a wrong password"
    for p in (good, bad):
        with open(p.log_path, "rb") as f:
            log = f.read().decode(errors="replace")
        assert "sc:****@" in log, log[-1500:]  # the config line, masked
        assert secret not in log, "a NATS password is in %s's log" % p.name
    print("  NATS_URL with user:password: ready; a wrong password: not; the password in no log")
    for n in ("producer-auth", "producer-badpw"):
        st.procs.pop(n).stop()
    st.procs.pop("nats-auth").stop()
