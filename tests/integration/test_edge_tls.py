"""wss:// on the edge itself: EDGE_TLS_LISTEN beside EDGE_LISTEN, EDGE_TLS_CERT / EDGE_TLS_KEY.

A throwaway CA (pki.py) signs the edge's certificate. Clients use Python's ssl with that CA
trusted (never with verification turned off), except where a test is about a client that does
not trust it. Covered: both listeners at once deliver the same events; TLS 1.2 and 1.3, ALPN
http/1.1 and resumption; clean refusals (TLS 1.1, a plain-text request on the TLS port, a
client that does not trust the chain, ALPN without http/1.1); the handshake bound (per-IP cap
and the handshake timeout); SIGHUP reloads the certificate without closing a connection and a
bad file on reload keeps the old one; a bad pair at start stops the edge; EDGE_TLS_KTLS
(auto: the kernel seals the sends where it offers kTLS; this module checks the count and,
on a kernel without the tls ULP, the fallback; the kTLS path itself: tests/vm/ktls.sh).
"""
import json
import os
import re
import select
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import time

import harness
import pki
from wsclient import WS

SERVICES = ("auth", "edge")
DIR = tempfile.mkdtemp(prefix="sidecast-edge-tls-")
CA = pki.CA(DIR)
CERT, KEY = CA.issue("edge", cn="edge-1")
TLS_PORT = harness.free_port()
CAP = 6  # connections per source address (the flood test's bound)
HS_TIMEOUT_MS = 1000
ENV = {"edge": {
    "EDGE_TLS_LISTEN": "127.0.0.1:%d" % TLS_PORT,
    "EDGE_TLS_CERT": CERT,
    "EDGE_TLS_KEY": KEY,
    "EDGE_TLS_HANDSHAKE_TIMEOUT_MS": str(HS_TIMEOUT_MS * harness.SLOW),
    "EDGE_MAX_CONNECTIONS_PER_IP": str(CAP),
}}
WSS = "wss://127.0.0.1:%d/ws" % TLS_PORT


def _ctx(cafile=CA.pem, alpn=("http/1.1",)):
    ctx = ssl.create_default_context(cafile=cafile)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def _metric(st, series):
    return st.edge_metric(series) or 0


def _hs(st, result):
    return _metric(st, 'sc_edge_tls_handshakes_total{result="%s"}' % result)


def _welcome(st, url=WSS, ctx=None, user="alice"):
    ws = WS.connect(url, token=st.token(user)["access_token"], tls=ctx or _ctx())
    assert ws.recv_json(5, type="welcome")["user"] == user
    return ws


def _leaf_cn(ws_or_sock):
    sock = ws_or_sock.sock if isinstance(ws_or_sock, WS) else ws_or_sock
    for rdn in sock.getpeercert()["subject"]:
        for k, v in rdn:
            if k == "commonName":
                return v
    return None


def test_wss_and_ws_at_once_get_the_same_events(st):
    secure = _welcome(st)
    plain = _welcome(st, url=st.edge_url)
    for ws in (secure, plain):
        ws.subscribe("prices.TLS")
    st.busctl("pub", "events.prices.TLS", json.dumps({"n": 1, "blob": "y" * 40000}))
    for ws in (secure, plain):
        ev = ws.recv_json(10, type="event")
        assert ev["data"]["n"] == 1 and len(ev["data"]["blob"]) == 40000, ev
    assert secure.sock.version() == "TLSv1.3", secure.sock.version()
    assert secure.sock.selected_alpn_protocol() == "http/1.1"
    assert _leaf_cn(secure) == "edge-1"
    # a burst larger than a TLS record, several records per read on the way in too
    big = "z" * 100000
    for i in range(20):
        st.busctl("pub", "events.prices.TLS", json.dumps({"n": 2 + i, "blob": big[:20000]}))
    for i in range(20):
        assert secure.recv_json(10, type="event")["data"]["n"] == 2 + i
    secure.close()
    plain.close()
    print("  wss and ws on one edge: the same 21 events; TLS 1.3, ALPN http/1.1")


def test_tls12_works_and_sessions_resume(st):
    ctx12 = _ctx()
    ctx12.maximum_version = ssl.TLSVersion.TLSv1_2
    ws = _welcome(st, ctx=ctx12)
    assert ws.sock.version() == "TLSv1.2", ws.sock.version()
    ws.close()
    for ctx in (_ctx(), ctx12):  # TLS 1.3 tickets come after the handshake: read first
        first = socket.create_connection(("127.0.0.1", TLS_PORT), timeout=5)
        first = ctx.wrap_socket(first, server_hostname="127.0.0.1")
        first.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while first.recv(4096):
            pass
        session = first.session
        first.close()
        resumed = _hs(st, "resumed")
        again = socket.create_connection(("127.0.0.1", TLS_PORT), timeout=5)
        again = ctx.wrap_socket(again, server_hostname="127.0.0.1", session=session)
        assert again.session_reused, "no resumption with %s" % again.version()
        again.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert _read_all(again).startswith(b"HTTP/1.1 200"), "no answer after resuming"
        again.close()
        harness.wait_for(lambda: _hs(st, "resumed") == resumed + 1, what="resumption counted")
    print("  TLS 1.2 connects; a session resumes on 1.3 and on 1.2")


def _client_hello(version):
    """A TLS ClientHello that offers nothing newer than version (0x0301 TLS 1.0, 0x0302
    1.1): ECDHE suites, P-256, no supported_versions extension."""
    suites = struct.pack("!4H", 0xC009, 0xC013, 0x002F, 0x0035)
    groups = struct.pack("!HHH", 0x000A, 4, 2) + struct.pack("!H", 0x0017)
    points = struct.pack("!HHB", 0x000B, 2, 1) + b"\x00"
    ext = groups + points
    body = (struct.pack("!H", version) + os.urandom(32) + b"\x00" +
            struct.pack("!H", len(suites)) + suites + b"\x01\x00" +
            struct.pack("!H", len(ext)) + ext)
    hs = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16" + struct.pack("!HH", 0x0301, len(hs)) + hs


def _read_all(s, limit=65536):
    data = b""
    try:
        while len(data) < limit:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    return data


def test_old_protocols_get_a_protocol_version_alert(st):
    for version, name in ((0x0301, "TLS 1.0"), (0x0302, "TLS 1.1")):
        failed = _hs(st, "failed")
        s = socket.create_connection(("127.0.0.1", TLS_PORT), timeout=5)
        s.sendall(_client_hello(version))
        data = _read_all(s)
        s.close()
        # one fatal alert record: protocol_version (70), then the connection closes
        assert len(data) >= 7 and data[0] == 0x15, (name, data[:16])
        assert data[5] == 2 and data[6] == 70, (name, data[:16])
        harness.wait_for(lambda: _hs(st, "failed") == failed + 1, what="failed counted")
    print("  a TLS 1.0 and a TLS 1.1 ClientHello: alert protocol_version, closed, counted")


def test_plain_http_on_the_tls_port_is_told_so(st):
    s = socket.create_connection(("127.0.0.1", TLS_PORT), timeout=5)
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\r\n")
    data = _read_all(s)
    s.close()
    assert data.startswith(b"HTTP/1.1 400"), data[:80]
    assert b"speaks TLS" in data, data
    print("  plain HTTP on the TLS port: 400 \"this port speaks TLS\", closed")


def test_a_client_that_does_not_trust_the_chain_is_refused_cleanly(st):
    other = pki.CA(os.path.join(DIR, "other"), cn="someone-else")
    failed = _hs(st, "failed")
    try:
        _welcome(st, ctx=_ctx(cafile=other.pem))
        raise AssertionError("a client trusting another CA connected")
    except ssl.SSLCertVerificationError as e:
        assert "unable to get local issuer" in str(e) or "self-signed" in str(e), e
    harness.wait_for(lambda: _hs(st, "failed") == failed + 1, what="failed counted")
    # the right CA but another name: the hostname check refuses it
    s = socket.create_connection(("127.0.0.1", TLS_PORT), timeout=5)
    try:
        _ctx().wrap_socket(s, server_hostname="other.example")
        raise AssertionError("a certificate for 127.0.0.1 passed for other.example")
    except ssl.SSLCertVerificationError as e:
        assert "mismatch" in str(e), e
    finally:
        s.close()
    # ALPN that does not include http/1.1: no_application_protocol
    s = socket.create_connection(("127.0.0.1", TLS_PORT), timeout=5)
    try:
        _ctx(alpn=("h2",)).wrap_socket(s, server_hostname="127.0.0.1")
        raise AssertionError("ALPN h2 only was accepted")
    except ssl.SSLError as e:
        assert "NO APPLICATION PROTOCOL" in str(e).upper().replace("_", " "), e
    finally:
        s.close()
    _welcome(st).close()  # and the edge serves on
    print("  another CA: verify failed; another name: mismatch; ALPN h2: alert; edge fine")


def _tcp_from(src, port, timeout=5):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s


def test_a_handshake_flood_is_bounded(st):
    """Connections that never finish the handshake count against the per-address cap and the
    total, and are dropped after EDGE_TLS_HANDSHAKE_TIMEOUT_MS."""
    rejected = _metric(st, 'sc_edge_rejected_total{reason="per_ip"}')
    timeouts = _hs(st, "timeout")
    # the earlier tests' connections gone (the scrape itself is one)
    harness.wait_for(lambda: _metric(st, "sc_edge_connections") <= 1, what="an idle edge")
    open_before = 1
    flood = []
    try:
        for i in range(CAP):
            s = _tcp_from("127.0.0.5", TLS_PORT)
            if i % 2:
                s.sendall(_client_hello(0x0303)[:20])  # half a ClientHello, then silence
            flood.append(s)
        harness.wait_for(lambda: _metric(st, "sc_edge_connections") >= open_before + CAP,
                         what="the flood counted in sc_edge_connections")
        extra = _tcp_from("127.0.0.5", TLS_PORT)
        assert _read_all(extra) == b"", "the connection over the cap got bytes"
        extra.close()
        assert _metric(st, 'sc_edge_rejected_total{reason="per_ip"}') == rejected + 1
        _welcome(st).close()  # another address is served meanwhile
        t0 = time.monotonic()
        for s in flood:
            s.settimeout(10 * harness.SLOW)
            assert _read_all(s) == b"", "a stalled handshake got bytes"
        waited = time.monotonic() - t0
        harness.wait_for(lambda: _hs(st, "timeout") >= timeouts + CAP,
                         what="handshake timeouts counted")
    finally:
        for s in flood:
            s.close()
    # their slots came back: the address gets a full set again
    harness.wait_for(lambda: _metric(st, "sc_edge_connections") <= open_before,
                     what="the flood's connections gone")
    back = [_tcp_from("127.0.0.5", TLS_PORT) for _ in range(CAP)]
    for s in back:
        s.close()
    print("  %d stalled handshakes held, the next refused, all dropped by the timeout "
          "(%.1f s), slots returned" % (CAP, waited))


def _replace(src_cert, src_key):
    """Puts a new pair at the configured paths, each file swapped in whole."""
    for src, dst in ((src_cert, CERT), (src_key, KEY)):
        tmp = dst + ".new"
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)


def test_sighup_reloads_the_certificate_without_closing_a_connection(st):
    before = _welcome(st)
    before.subscribe("prices.RELOAD")
    assert _leaf_cn(before) == "edge-1"
    ok = _metric(st, 'sc_edge_tls_reloads_total{result="ok"}')
    new_cert, new_key = CA.issue("edge-2", cn="edge-2", days=1)
    saved = os.path.join(DIR, "edge-1.saved")
    shutil.copyfile(CERT, saved + ".pem")
    shutil.copyfile(KEY, saved + ".key")
    _replace(new_cert, new_key)
    st.procs["edge"].signal(1)  # SIGHUP
    harness.wait_for(lambda: _metric(st, 'sc_edge_tls_reloads_total{result="ok"}') == ok + 1,
                     what="reload counted")
    after = _welcome(st)
    assert _leaf_cn(after) == "edge-2", _leaf_cn(after)
    # the connection from before the reload is still open and still delivers
    st.busctl("pub", "events.prices.RELOAD", json.dumps({"n": 7}))
    assert before.recv_json(10, type="event")["data"]["n"] == 7
    not_after = _metric(st, "sc_edge_tls_cert_not_after_seconds")
    assert 0 < not_after - time.time() < 2 * 86400, not_after

    # a broken file: logged, counted, and the pair in use stays
    failed = _metric(st, 'sc_edge_tls_reloads_total{result="failed"}')
    with open(CERT, "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    st.procs["edge"].signal(1)
    harness.wait_for(
        lambda: _metric(st, 'sc_edge_tls_reloads_total{result="failed"}') == failed + 1,
        what="failed reload counted")
    assert "tls certificate not reloaded" in st.procs["edge"].tail(20)
    still = _welcome(st)
    assert _leaf_cn(still) == "edge-2"
    # a key that is not the certificate's: refused the same way
    _replace(saved + ".pem", new_key)
    st.procs["edge"].signal(1)
    harness.wait_for(
        lambda: _metric(st, 'sc_edge_tls_reloads_total{result="failed"}') == failed + 2,
        what="mismatched pair refused")
    assert "does not match" in st.procs["edge"].tail(20)
    _replace(saved + ".pem", saved + ".key")  # the module's pair back, for what follows
    st.procs["edge"].signal(1)
    harness.wait_for(lambda: _metric(st, 'sc_edge_tls_reloads_total{result="ok"}') == ok + 2,
                     what="reload back counted")
    st.busctl("pub", "events.prices.RELOAD", json.dumps({"n": 8}))
    assert before.recv_json(10, type="event")["data"]["n"] == 8
    for ws in (before, after, still):
        ws.close()
    print("  SIGHUP: new handshakes get the new certificate, the old connection delivers; "
          "a broken file and a mismatched key are refused, the pair in use stays")


def test_a_bad_pair_at_start_stops_the_edge(st):
    other_cert, _ = CA.issue("stranger")
    env = st.service_env("edge")
    env.update({"EDGE_LISTEN": "127.0.0.1:%d" % harness.free_port(),
                "EDGE_TLS_LISTEN": "127.0.0.1:%d" % harness.free_port(),
                "EDGE_TLS_CERT": other_cert, "EDGE_TLS_KEY": KEY})
    p = harness.Proc("edge-badpair", [os.path.join(harness.BUILD, "edge")], env, st.dir)
    st.procs["edge-badpair"] = p
    code = p.wait_exit(20)
    assert code == 2, code
    assert "does not match" in p.tail(5), p.tail(5)
    env["EDGE_TLS_CERT"] = ""  # half a TLS configuration is an error too
    p = harness.Proc("edge-halfcfg", [os.path.join(harness.BUILD, "edge")], env, st.dir)
    st.procs["edge-halfcfg"] = p
    assert p.wait_exit(20) == 2
    assert "go together" in p.tail(5), p.tail(5)
    print("  a key that is not the certificate's: exit 2; TLS keys half set: exit 2")


def _kernel_offers_tls():
    try:
        with open("/proc/sys/net/ipv4/tcp_available_ulp") as f:
            return "tls" in f.read().split()
    except OSError:
        return False


def _ktls(st, result):
    return _metric(st, 'sc_edge_tls_ktls_total{result="%s"}' % result)


def test_each_connection_is_counted_by_who_seals_its_sends(st):
    """EDGE_TLS_KTLS=auto (the default): the kernel seals a connection's sends where it offers
    the tls ULP, tlsrec where not; either way events arrive. (The kTLS path itself runs in a
    VM: tests/vm/ktls.sh.)"""
    k0, u0 = _ktls(st, "kernel"), _ktls(st, "user")
    ws = _welcome(st)
    ws.subscribe("prices.KTLS")
    st.busctl("pub", "events.prices.KTLS", json.dumps({"n": 7, "blob": "z" * 50000}))
    ev = ws.recv_json(5, type="event")
    assert ev["data"]["n"] == 7 and len(ev["data"]["blob"]) == 50000, ev
    ws.close()
    k1, u1 = _ktls(st, "kernel"), _ktls(st, "user")
    assert (k1 - k0) + (u1 - u0) == 1, (k0, k1, u0, u1)
    if not _kernel_offers_tls():
        assert u1 - u0 == 1, (u0, u1)
    print("  kTLS offered by this kernel: %s; the connection counted as %s" % (
        _kernel_offers_tls(), "kernel" if k1 > k0 else "user"))


def test_ktls_off_and_a_bad_value(st):
    env = st.service_env("edge")
    port, tport = harness.free_port(), harness.free_port()
    env.update({"EDGE_LISTEN": "127.0.0.1:%d" % port, "EDGE_TLS_LISTEN": "127.0.0.1:%d" % tport,
                "EDGE_TLS_KTLS": "sometimes"})
    p = harness.Proc("edge-badktls", [os.path.join(harness.BUILD, "edge")], env, st.dir)
    st.procs["edge-badktls"] = p
    assert p.wait_exit(20) == 2
    assert "EDGE_TLS_KTLS: auto or off" in p.tail(5), p.tail(5)
    env["EDGE_TLS_KTLS"] = "off"
    p = harness.Proc("edge-ktlsoff", [os.path.join(harness.BUILD, "edge")], env, st.dir)
    st.procs["edge-ktlsoff"] = p
    try:
        def ready():
            try:
                return harness.http("GET", "http://127.0.0.1:%d/readyz" % port).status == 200
            except OSError:
                return False
        harness.wait_for(ready, 20, what="edge with EDGE_TLS_KTLS=off ready")
        ws = WS.connect("wss://127.0.0.1:%d/ws" % tport, token=st.token("bob")["access_token"],
                        tls=_ctx())
        assert ws.recv_json(5, type="welcome")["user"] == "bob"
        ws.close()
        assert st.edge_metric('sc_edge_tls_ktls_total{result="user"}', port=port) == 1
        assert st.edge_metric('sc_edge_tls_ktls_total{result="kernel"}', port=port) == 0
    finally:
        p.stop()
    print("  EDGE_TLS_KTLS=sometimes: exit 2; off: tlsrec seals (counted as user)")


def test_wss_close_handshake_is_clean(st):
    ws = _welcome(st)
    code, _ = ws.close()
    assert code == 1000, code
    print("  close over TLS: 1000 echoed")



def test_records_cut_anywhere_are_put_together(st):
    """TLS records that arrive a few bytes at a time (and several in one read) are read
    whole: the request goes out in 1-7 byte pieces, two requests' records back to back."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = _ctx().wrap_bio(inc, out, server_hostname="127.0.0.1")
    s = socket.create_connection(("127.0.0.1", TLS_PORT), timeout=5)
    try:
        for _ in range(50):  # the handshake through memory buffers, bounded
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                s.sendall(out.read())
                inc.write(s.recv(65536))
        s.sendall(out.read())
        obj.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        obj.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        sealed = out.read()
        assert sealed.count(b"\x17\x03\x03") >= 2, "two records expected"
        i, k = 0, 1
        while i < len(sealed):  # bounded: under 200 pieces
            s.sendall(sealed[i:i + k])
            i += k
            k = k % 7 + 1
            time.sleep(0.002)
        answer = b""
        deadline = time.monotonic() + 10
        while b"200" not in answer and time.monotonic() < deadline:
            data = s.recv(65536)
            if not data:
                break
            inc.write(data)
            try:
                answer += obj.read(65536)
            except ssl.SSLWantReadError:
                pass
        assert answer.startswith(b"HTTP/1.1 200"), answer[:60]
    finally:
        s.close()
    print("  a request in %d pieces of 1-7 bytes: answered" % ((len(sealed) + 3) // 4))


def test_a_tls13_key_update_is_followed_and_answered(st):
    """openssl s_client asks for a KeyUpdate (update_requested) before its request: the edge
    must move its read key, send its own KeyUpdate, and answer under the new keys."""
    p = subprocess.Popen(
        ["openssl", "s_client", "-connect", "127.0.0.1:%d" % TLS_PORT, "-CAfile", CA.pem,
         "-verify_return_error", "-tls1_3", "-crlf", "-no_ign_eof", "-msg"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = b""
    try:
        # stdin stays open until the answer is in: at its end s_client would hang up first;
        # the command "K" is a line of its own (s_client takes a whole read as one command)

        def read_until(marker, seconds):
            nonlocal out
            deadline = time.monotonic() + seconds
            while marker not in out and time.monotonic() < deadline:
                ready, _, _ = select.select([p.stdout], [], [], 0.5)
                if ready:
                    chunk = os.read(p.stdout.fileno(), 65536)
                    if not chunk:
                        return
                    out += chunk

        def say(line):
            try:
                p.stdin.write(line)
                p.stdin.flush()
            except BrokenPipeError:  # s_client is gone: its output says why
                pass

        # the session ticket has come: the handshake is done on both sides. (Not the summary
        # s_client prints for it: that goes through a buffered BIO and, under load, came out
        # only after the edge's 10 s upgrade timeout had closed the connection)
        read_until(b"], NewSessionTicket", 10)
        say(b"K\n")
        read_until(b"<<< TLS 1.3, Handshake [length 0005], KeyUpdate", 10)
        say(b"GET /healthz HTTP/1.1\nHost: 127.0.0.1\nConnection: close\n\n")
        read_until(b"close_notify", 10)
    finally:
        try:
            p.stdin.close()
        except BrokenPipeError:
            pass
        p.kill()
        p.wait(10)
    text = out.decode(errors="replace")
    with open(os.path.join(st.dir, "s_client.out"), "w") as f:
        f.write(text)
    # -msg shows each message: ">>>" sent, "<<<" received
    assert re.search(r">>> TLS 1.3, Handshake \[length 0005\], KeyUpdate", text), text[-800:]
    if _kernel_offers_tls():  # kTLS cannot rekey: close_notify instead (tests/vm/ktls.sh)
        assert "close_notify" in text and "<<< TLS 1.3, Handshake [length 0005], KeyUpdate" \
            not in text, text[-800:]
        print("  KeyUpdate(update_requested) under kTLS: close_notify")
        return
    assert re.search(r"<<< TLS 1.3, Handshake \[length 0005\], KeyUpdate", text), text[-800:]
    assert "HTTP/1.1 200" in text, text[-800:]
    print("  KeyUpdate(update_requested) from openssl s_client: followed, answered")
