"""Connections per source address on both public ports: EDGE_MAX_CONNECTIONS_PER_IP (an
upgrade over it is answered 429) and GATEWAY_MAX_CONNECTIONS_PER_IP (libmicrohttpd closes a
connection over it at once). Loopback has every 127.0.0.0/8 address, so a second source is a
bind() away. Both limits are off by default (behind an ingress every connection comes from
the ingress); this module turns them on."""
import base64
import os
import re
import socket
import subprocess
import time

import harness
import wsclient
from wsclient import WS

SERVICES = ("auth", "gateway", "edge")
EDGE_CAP, GW_CAP = 5, 3
ENV = {
    "edge": {"EDGE_MAX_CONNECTIONS_PER_IP": str(EDGE_CAP), "EDGE_WORKERS": "2"},
    "gateway": {"GATEWAY_MAX_CONNECTIONS_PER_IP": str(GW_CAP)},
}


def _sock(src, port, timeout=5):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s


def _upgrade(st, src, token):
    """A raw upgrade from source address src: (socket, status code or None on EOF)."""
    s = _sock(src, st.edge_port)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET /ws?access_token=%s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
               "\r\n" % (token, key)).encode())
    head = b""
    while b"\r\n" not in head:
        try:
            chunk = s.recv(4096)
        except (ConnectionResetError, socket.timeout):
            chunk = b""
        if not chunk:
            return s, None
        head += chunk
    return s, int(head.split(b" ", 2)[1])


def _scrape(src, port, name):
    """One series of /metrics at port, read from the loopback address src (a scrape from a
    capped address would be refused too, and would count against its cap); 0 if absent."""
    s = _sock(src, port)
    try:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    for line in data.decode(errors="replace").splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def _metric(st, name):
    """A metric of the edge (its /metrics is on its WebSocket port), read from 127.0.0.4."""
    return _scrape("127.0.0.4", st.edge_port, name)


def test_edge_caps_connections_per_address(st):
    token = st.token()["access_token"]
    rejected = _metric(st, 'sc_edge_rejected_total{reason="per_ip"}')
    held = []
    try:
        for _ in range(EDGE_CAP):
            s, code = _upgrade(st, "127.0.0.1", token)
            held.append(s)
            assert code == 101, code
        s, code = _upgrade(st, "127.0.0.1", token)
        s.close()
        assert code == 429, code
        assert _metric(st, 'sc_edge_rejected_total{reason="per_ip"}') == rejected + 1
        s, code = _upgrade(st, "127.0.0.3", token)  # another source is not affected
        held.append(s)
        assert code == 101, code
        held.pop(0).close()  # one of 127.0.0.1's goes: its slot comes back
        deadline = time.monotonic() + 5 * harness.SLOW
        while True:
            s, code = _upgrade(st, "127.0.0.1", token)
            held.append(s)
            if code == 101 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert code == 101, code
        print("  6th connection from 127.0.0.1: 429; from 127.0.0.3: 101; after a close: 101")
    finally:
        for s in held:
            s.close()
    # every slot is returned: a full set from one address works again
    deadline = time.monotonic() + 5 * harness.SLOW
    ws = []
    try:
        while len(ws) < EDGE_CAP and time.monotonic() < deadline:
            try:
                w = WS.connect(st.edge_url, token=token)
                w.recv_json(5, type="welcome")
                ws.append(w)
            except (AssertionError, OSError, wsclient.HandshakeError):
                time.sleep(0.05)
        assert len(ws) == EDGE_CAP, len(ws)
    finally:
        for w in ws:
            w.close()


def _get_healthz(src, port):
    """Status of GET /healthz from src, or None when the gateway closed the connection."""
    s = _sock(src, port)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            try:
                chunk = s.recv(4096)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            data += chunk
        return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None
    finally:
        s.close()


def _gateway_connections(port):
    """sc_gateway_connections, read from 127.0.0.3: the connections the gateway holds, this
    one included."""
    return int(_scrape("127.0.0.3", port, "sc_gateway_connections"))


def test_gateway_caps_connections_per_address(st):
    port = st.gateway_port
    assert _get_healthz("127.0.0.1", port) == 200
    # that connection's slot is returned when a gateway thread has cleaned it up, a moment
    # after the close: until then it would count against 127.0.0.1's cap below
    harness.wait_for(lambda: _gateway_connections(port) == 1,
                     what="the gateway holding no connection but the scrape")
    held = [_sock("127.0.0.1", port) for _ in range(GW_CAP)]  # idle, counted
    try:
        # taken by the gateway, which counts them per address as it does
        harness.wait_for(lambda: _gateway_connections(port) >= GW_CAP + 1,
                         what="the gateway holding the idle connections")
        assert _get_healthz("127.0.0.1", port) is None
        assert _get_healthz("127.0.0.2", port) == 200
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 5 * harness.SLOW
    code = None
    while code != 200 and time.monotonic() < deadline:
        code = _get_healthz("127.0.0.1", port)
        if code != 200:
            time.sleep(0.05)
    assert code == 200, code
    print("  4th connection from 127.0.0.1: closed unanswered; from 127.0.0.2: 200")


def test_an_edge_that_cannot_listen_exits_1_and_leaks_nothing(st):
    """With the per-address cap on, an edge whose port is taken exits 1 naming the address,
    and frees what it had made: its per-address table used to leak on this path (found by
    LeakSanitizer under `make asan`, where a leak turns the exit code into 23)."""
    hold = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # no SO_REUSEPORT: bind fails
    hold.bind(("127.0.0.1", 0))
    hold.listen(1)
    port = hold.getsockname()[1]
    try:
        e = dict(os.environ)
        e.update(st.service_env("edge"))
        e.update({"EDGE_LISTEN": "127.0.0.1:%d" % port,
                  "EDGE_MAX_CONNECTIONS_PER_IP": str(EDGE_CAP), "EDGE_WORKERS": "2"})
        if harness.SAN:
            e["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0:exitcode=23"
        r = subprocess.run([os.path.join(harness.BUILD, "edge")], env=e, capture_output=True,
                           timeout=30, stdin=subprocess.DEVNULL)
    finally:
        hold.close()
    err = (r.stdout + r.stderr).decode(errors="replace")
    assert "LeakSanitizer" not in err, err[-3000:]
    assert r.returncode == 1, (r.returncode, err[-1500:])
    assert re.search(r'msg="cannot listen" server=edge listen=127\.0\.0\.1:%d ' % port, err), \
        err[-1500:]
