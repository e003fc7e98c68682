"""Self-test of wsclient.py against a minimal in-process WebSocket server written here (its own
framing code, independent of the client's): handshake and its refusals, masking, the 7/16/64-bit
lengths around 125/126/65535/65536, fragmentation both ways with interleaved pings, automatic
pongs, closing handshakes from either side, an abrupt close (1006), detection of server
protocol violations, slow raw sends, bounded waits, and open_many/drain_all/close_all over
1000 connections. The Stack is not used."""
import base64
import hashlib
import json
import socket
import struct
import threading
import time

import harness
import wsclient
from wsclient import WS, HandshakeError, ProtocolError, ConnectionClosed

SERVICES = ()

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# the test server ---------------------------------------------------------------------------
def s_frame(op, payload=b"", fin=True, mask=None):
    """A server frame (unmasked unless a mask key is given)."""
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | op])
    mbit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack(">Q", n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        head += mask
    return head + payload


class Conn:
    """One accepted connection of the test server."""

    def __init__(self, server, sock):
        self.server = server
        self.sock = sock
        self.buf = b""
        self.closing = False  # we sent a close frame

    def read_exact(self, n):
        while len(self.buf) < n:
            d = self.sock.recv(65536)
            if not d:
                raise EOFError
            self.server.events.append(("recv", len(d)))
            self.buf += d
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, data):
        self.sock.sendall(data)

    def lingering_close(self):
        """Close after our last frame without a reset: stop sending, drain, close."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.settimeout(2)
            for _ in range(1000):
                if not self.sock.recv(65536):
                    break
        except OSError:
            pass
        self.sock.close()

    def fail(self, code, why):
        self.server.events.append(("fail", code, why))
        self.send(s_frame(8, struct.pack(">H", code) + why.encode()))
        self.lingering_close()

    def read_request(self):
        while b"\r\n\r\n" not in self.buf:
            d = self.sock.recv(4096)
            if not d:
                raise EOFError
            self.buf += d
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ")
        hdrs = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
        return method, target, hdrs

    def respond(self, status, hdrs, body=b"", chunked=False, length=True):
        out = "HTTP/1.1 %s\r\n" % status + "".join("%s: %s\r\n" % kv for kv in hdrs)
        if chunked:
            out += "Transfer-Encoding: chunked\r\n\r\n"
            half = len(body) // 2
            data = out.encode() + b"".join(b"%x\r\n%s\r\n" % (len(p), p)
                                           for p in (body[:half], body[half:])) + b"0\r\n\r\n"
        else:
            if length:
                out += "Content-Length: %d\r\n" % len(body)
            data = out.encode() + b"\r\n" + body
        self.send(data)

    def run(self):
        try:
            self.sock.settimeout(30)
            self.handle()
        except (EOFError, OSError):
            pass
        finally:
            self.sock.close()

    def handle(self):
        method, target, hdrs = self.read_request()
        path = target.split("?")[0]
        key = hdrs.get("sec-websocket-key", "")
        accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        if path == "/426":
            return self.respond("426 Upgrade Required", [("Sec-WebSocket-Version", "13"),
                                ("Content-Type", "text/plain")], b"upgrade required")
        if path == "/403":
            return self.respond("403 Forbidden", [("Content-Type", "application/json")],
                                b'{"error":"origin not allowed"}', chunked=True)
        if path == "/400eof":
            self.respond("400 Bad Request", [("Connection", "close")], b"bad request body",
                         length=False)
            return self.lingering_close()
        if path == "/drop":
            return
        ok = (method == "GET" and hdrs.get("upgrade", "").lower() == "websocket"
              and "upgrade" in hdrs.get("connection", "").lower() and key)
        if not ok:
            return self.respond("400 Bad Request", [], b"not a websocket handshake")
        if hdrs.get("sec-websocket-version") != "13":
            return self.respond("426 Upgrade Required", [("Sec-WebSocket-Version", "13")])
        resp = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                ("Sec-WebSocket-Accept", "AAAA" + accept[4:] if path == "/badaccept"
                 else accept)]
        offered = [p.strip() for p in hdrs.get("sec-websocket-protocol", "").split(",")]
        if path == "/otherproto":
            resp.append(("Sec-WebSocket-Protocol", "other.v9"))
        elif "sidecast.v1" in offered and path != "/noproto":
            resp.append(("Sec-WebSocket-Protocol", "sidecast.v1"))
        if path == "/ext":
            resp.append(("Sec-WebSocket-Extensions", "permessage-deflate"))
        welcome = s_frame(1, json.dumps({"type": "welcome", "target": target,
                                         "headers": hdrs}))
        self.send(("HTTP/1.1 101 Switching Protocols\r\n" + "".join(
            "%s: %s\r\n" % kv for kv in resp) + "\r\n").encode() + welcome)
        self.frames()

    def frames(self):
        frag_op, frag = None, b""
        for _ in range(10 ** 6):
            h = self.read_exact(2)
            fin, rsv, op = h[0] >> 7, (h[0] >> 4) & 7, h[0] & 15
            masked, n = h[1] >> 7, h[1] & 127
            bits = 7
            if n == 126:
                n, bits = struct.unpack(">H", self.read_exact(2))[0], 16
            elif n == 127:
                n, bits = struct.unpack(">Q", self.read_exact(8))[0], 64
            self.server.events.append(("frame", fin, rsv, op, masked, n, bits))
            if not masked:
                return self.fail(1002, "unmasked frame")
            if rsv:
                return self.fail(1002, "rsv bits")
            if n > 1 << 24:
                return self.fail(1009, "too big")
            mask = self.read_exact(4)
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.read_exact(n)))
            if op == 8:
                if not self.closing:
                    self.send(s_frame(8, data[:2]))
                return self.lingering_close() if not self.closing else None
            if op == 9:
                self.send(s_frame(10, data))
                continue
            if op == 10:
                self.send(s_frame(1, b"pong:" + data))
                continue
            if op == 0:
                if frag_op is None:
                    return self.fail(1002, "bad continuation")
                frag += data
            elif op in (1, 2):
                if frag_op is not None:
                    return self.fail(1002, "expected continuation")
                frag_op, frag = op, data
            else:
                return self.fail(1002, "bad opcode %d" % op)
            if fin:
                op, msg, frag_op, frag = frag_op, frag, None, b""
                if self.closing:
                    continue
                if op == 1 and msg.startswith(b"cmd:"):
                    if self.command(msg.decode()[4:].split(":")) == "stop":
                        return
                else:
                    self.send(s_frame(op, msg))

    def command(self, args):
        cmd = args[0]
        if cmd == "frag":  # frag:N:text -> N fragments with a ping in the middle
            n, text = int(args[1]), args[2].encode()
            size = -(-len(text) // n)
            parts = [text[i:i + size] for i in range(0, len(text), size)]
            out = b""
            for i, p in enumerate(parts):
                out += s_frame(1 if i == 0 else 0, p, fin=i == len(parts) - 1)
                if i == 0:
                    out += s_frame(9, b"hb")
            self.send(out)
        elif cmd == "ping":
            self.send(s_frame(9, args[1]))
        elif cmd == "binlen":
            n = int(args[1])
            self.send(s_frame(2, bytes(i % 251 for i in range(n))))
        elif cmd == "close":  # close:CODE:reason (CODE 0: empty payload)
            code = int(args[1])
            self.closing = True
            self.send(s_frame(8, b"" if code == 0 else struct.pack(">H", code)
                              + args[2].encode()))
        elif cmd == "closestay":  # a close frame, then TCP kept open until the client drops
            self.closing = True  # it (or 20 s pass: a hang guard, the test ends it sooner)
            self.send(s_frame(8, struct.pack(">H", 1000)))
            self.sock.settimeout(20)
            while self.sock.recv(65536):  # the client's close reply, then its EOF
                pass
            self.server.events.append(("client dropped", None))
            return "stop"
        elif cmd == "abort":
            self.sock.shutdown(socket.SHUT_RDWR)
            return "stop"
        elif cmd == "masked":
            self.send(s_frame(1, b"masked!", mask=b"\x01\x02\x03\x04"))
        elif cmd == "rsv":
            self.send(bytes([0x80 | 0x40 | 1, 2]) + b"hi")
        elif cmd == "badutf8":
            self.send(s_frame(1, b"\xff\xfe"))
        elif cmd == "burst":  # burst:N -> N events, with noise, pings and fragments
            n, out = int(args[1]), []
            for i in range(n):
                ev = json.dumps({"type": "event", "seq": i}).encode()
                if i % 10 == 3:
                    out.append(s_frame(9, b"hb%d" % i))
                    out.append(s_frame(1, b'{"type":"noise"}'))
                if i % 7 == 5:
                    out.append(s_frame(1, ev[:5], fin=False) + s_frame(9, b"x")
                               + s_frame(0, ev[5:]))
                else:
                    out.append(s_frame(1, ev))
            self.send(b"".join(out))
        elif cmd == "trickle":  # trickle:N -> N noise messages, one every 50 ms
            for _ in range(int(args[1])):
                self.send(s_frame(1, b'{"type":"noise"}'))
                time.sleep(0.05)  # the pace of the feed itself, not a wait for anything
        elif cmd == "silent":
            pass


class EchoServer:
    """A threaded test server on 127.0.0.1; .url is its ws:// URL (path /ws)."""

    def __init__(self):
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(2048)
        self.lsock.settimeout(0.1)
        self.port = self.lsock.getsockname()[1]
        self.base = "ws://127.0.0.1:%d" % self.port
        self.url = self.base + "/ws"
        self.events = []
        self.stopping = False
        self.threads = []
        self.acceptor = threading.Thread(target=self.accept_loop, daemon=True)
        self.acceptor.start()

    def accept_loop(self):
        while not self.stopping:
            try:
                s, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=Conn(self, s).run, daemon=True)
            t.start()
            self.threads.append(t)

    def close(self):
        self.stopping = True
        self.acceptor.join(5)
        self.lsock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def welcome(ws):
    msg = ws.recv_json(type="welcome")
    return msg


# tests ----------------------------------------------------------------------------------------
def test_frame_encoding(st):
    k = b"\x11\x22\x33\x44"
    for n, head in ((0, b"\x82\x80"), (125, b"\x82\xfd"), (126, b"\x82\xfe\x00\x7e"),
                    (65535, b"\x82\xfe\xff\xff"),
                    (65536, b"\x82\xff\x00\x00\x00\x00\x00\x01\x00\x00")):
        payload = bytes(range(256)) * (n // 256 + 1)
        payload = payload[:n]
        f = wsclient.encode_frame(2, payload, mask_key=k)
        assert f[:len(head)] == head, (n, f[:12])
        assert f[len(head):len(head) + 4] == k
        body = f[len(head) + 4:]
        assert bytes(b ^ k[i % 4] for i, b in enumerate(body)) == payload
        fin, rsv, op, key, got, end = wsclient.parse_frame(f)
        assert (fin, rsv, op, key, got, end) == (True, 0, 2, k, payload, len(f))
        assert wsclient.parse_frame(f[:-1]) is None if n else True
    assert wsclient.encode_frame(1, b"hi", mask=False) == b"\x81\x02hi"
    assert wsclient.encode_frame(9, b"", fin=False, rsv=wsclient.RSV1 | wsclient.RSV3,
                                 mask=False) == b"\x59\x00"
    assert wsclient.encode_frame(2, b"ab", mask=False, length_bits=64) == \
        b"\x82\x7f" + struct.pack(">Q", 2) + b"ab"
    assert wsclient.encode_frame(2, b"ab", mask=False, length_override=1 << 63) == \
        b"\x82\x7f\x80" + b"\x00" * 7 + b"ab"
    assert wsclient.mask_bytes(wsclient.mask_bytes(b"hello", k), k) == b"hello"
    assert wsclient.mask_bytes(b"hello", k)[2:] == wsclient.mask_bytes(b"llo", k, offset=2)
    for bad in (b"\x82\x7e\x00\x05hello", b"\x82\x7f" + struct.pack(">Q", 1 << 63)):
        try:
            wsclient.parse_frame(bad)
            raise AssertionError("accepted %r" % bad)
        except ProtocolError:
            pass
    assert wsclient.parse_close_payload(b"") == (1005, "")
    assert wsclient.parse_close_payload(b"\x0f\xa1bye") == (4001, "bye")
    for bad in (b"\x03", b"\x03\xed", b"\x03\xe8\xff"):
        try:
            wsclient.parse_close_payload(bad)
            raise AssertionError("accepted close %r" % bad)
        except ProtocolError:
            pass
    u = wsclient.ws_url("ws://h:1/ws?a=1", access_token="x y+z")
    assert u == "ws://h:1/ws?a=1&access_token=x+y%2Bz", u


def test_handshake(st):
    with EchoServer() as srv:
        url = wsclient.ws_url(srv.url, access_token="tok2")
        with WS.connect(url, token="tok1", origin="http://localhost:8080",
                        headers={"X-Test": "1"}) as ws:
            assert ws.status == 101 and ws.subprotocol == "sidecast.v1"
            w = welcome(ws)  # sent in the same segment as the 101: read from the leftover
            h = w["headers"]
            assert h["authorization"] == "Bearer tok1", h
            assert h["origin"] == "http://localhost:8080" and h["x-test"] == "1", h
            assert h["sec-websocket-protocol"] == "sidecast.v1", h
            assert h["sec-websocket-version"] == "13", h
            assert w["target"] == "/ws?access_token=tok2", w
        # no subprotocol offered: none selected, accepted
        with WS.connect(srv.url, subprotocols=()) as ws:
            assert ws.subprotocol is None
            assert "sec-websocket-protocol" not in welcome(ws)["headers"]
        # a custom key is honoured
        with WS.connect(srv.url, headers={"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
                        ) as ws:
            assert ws.headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def expect_refusal(url, status, **kw):
    """The refusal is read from the server's answer (its status, or its message below): a
    client that only gave up at its timeout would report neither."""
    try:
        WS.connect(url, **kw)
    except HandshakeError as e:
        assert e.status == status, (e.status, e)
        return e
    raise AssertionError("handshake to %s succeeded" % url)


def test_handshake_errors(st):
    with EchoServer() as srv:
        e = expect_refusal(srv.base + "/426", 426)
        assert e.headers["sec-websocket-version"] == "13" and e.body == b"upgrade required", e
        assert e.reason == "Upgrade Required"
        e = expect_refusal(srv.base + "/403", 403, origin="http://evil.example")
        assert e.json() == {"error": "origin not allowed"}, e.body
        e = expect_refusal(srv.base + "/400eof", 400)
        assert e.body == b"bad request body", e.body
        e = expect_refusal(srv.url, 426, headers={"Sec-WebSocket-Version": None})
        e = expect_refusal(srv.url, 400, headers={"Upgrade": None})
        e = expect_refusal(srv.url, 400, method="POST")
        for path, why in (("/badaccept", "Accept"), ("/noproto", "no subprotocol"),
                          ("/otherproto", "other.v9"), ("/ext", "extension")):
            e = expect_refusal(srv.base + path, 101)
            assert why in e.message, e.message
        e = expect_refusal(srv.base + "/drop", 0)
        assert "closed before" in e.message
        # raw_request: arbitrary request bytes
        status, hdrs, body = wsclient.raw_request(srv.url, b"GET /ws HTTP/1.1\r\nHost: x\r\n"
                                                  b"Connection: close\r\n\r\n")
        assert status == 400 and body == b"not a websocket handshake", (status, body)


def test_lengths_roundtrip(st):
    with EchoServer() as srv, WS.connect(srv.url) as ws:
        welcome(ws)
        for n in (0, 1, 125, 126, 127, 65535, 65536, 300000):
            data = bytes((i * 7) % 256 for i in range(n))
            ws.send_binary(data)
            assert ws.recv_message() == (wsclient.OP_BINARY, data), n
            ws.send_text("cmd:binlen:%d" % n)
            op, got = ws.recv_message()
            assert op == 2 and got == bytes(i % 251 for i in range(n)), n
        frames = [e for e in srv.events if e[0] == "frame" and e[3] == 2]
        assert [e[6] for e in frames] == [7, 7, 7, 16, 16, 16, 64, 64], frames
        assert all(e[4] == 1 for e in srv.events if e[0] == "frame"), "unmasked frame sent"
        ws.send_text("héllo ✓")
        assert ws.recv_message() == (1, "héllo ✓".encode())
        # non-minimal 64-bit length, accepted by this lenient server
        ws.send_frame(2, b"xy", length_bits=64)
        assert ws.recv_message() == (2, b"xy")


def test_fragmentation(st):
    with EchoServer() as srv, WS.connect(srv.url) as ws:
        welcome(ws)
        # client fragments, with a ping between fragments
        ws.send_frame(1, b"hel", fin=False)
        ws.send_frame(9, b"mid")
        ws.send_frame(0, b"lo ", fin=False)
        ws.send_frame(0, b"world")
        assert ws.recv_message() == (1, b"hello world")
        assert b"mid" in ws.pongs
        ws.send_json({"type": "x", "v": "y" * 1000}, fragment_size=100)
        assert ws.recv_json() == {"type": "x", "v": "y" * 1000}
        # server fragments with a ping inside: assembled, ping answered automatically
        ws.send_text("cmd:frag:3:abcdefghij")
        assert ws.recv_message() == (1, b"abcdefghij")
        assert ws.pings[-1] == b"hb"
        assert ws.recv_message() == (1, b"pong:hb")  # the server saw our automatic pong
        # frame level: the same, raw
        ws.send_text("cmd:frag:2:xyz")
        got = [ws.recv_frame() for _ in range(3)]
        assert got == [(False, 0, 1, b"xy"), (True, 0, 9, b"hb"), (True, 0, 0, b"z")], got


def test_ping_pong(st):
    with EchoServer() as srv, WS.connect(srv.url) as ws:
        welcome(ws)
        ws.send_text("queued")
        ws.ping(b"abc", timeout=2)            # the message arriving meanwhile stays queued
        assert ws.recv_message() == (1, b"queued")
        ws.send_text("cmd:ping:xyz")
        assert ws.recv_message() == (1, b"pong:xyz")
        ws.auto_pong = False
        ws.send_text("cmd:ping:nope")
        deadline = time.monotonic() + 10  # a hang guard
        while b"nope" not in ws.pings:  # read until the ping has been taken in
            assert time.monotonic() < deadline, "no ping"
            try:
                raise AssertionError("unexpected message %r" % (ws.recv_message(0.1),))
            except TimeoutError:
                pass
        # the server answers a pong with "pong:..." and handles frames in order: had one
        # been sent for that ping, its answer would come before the echo of "after"
        ws.send_text("after")
        assert ws.recv_message(5) == (1, b"after")
        # a bounded wait: TimeoutError, and not before its time (a lower bound only)
        t0 = time.monotonic()
        try:
            ws.recv_message(timeout=0.3)
            raise AssertionError("a message came from a silent server")
        except TimeoutError:
            assert time.monotonic() - t0 >= 0.3


def test_close_by_client(st):
    with EchoServer() as srv:
        ws = WS.connect(srv.url)
        welcome(ws)
        assert ws.close(1000, "bye") == (1000, "")  # the server echoes the code only
        assert not ws.is_open and ws.close_sent == (1000, "bye")
        ws = WS.connect(srv.url)
        assert ws.close(None) == (1005, "")


def test_close_by_server(st):
    with EchoServer() as srv:
        ws = WS.connect(srv.url)
        welcome(ws)
        ws.send_text("cmd:close:4001:token expired")
        assert ws.expect_close(timeout=2) == (4001, "token expired")
        assert ws.close_sent == (4001, "")  # our reply echoed the code
        close_frames = [e for e in srv.events if e[0] == "frame" and e[3] == 8]
        assert close_frames and close_frames[-1][5] == 2, close_frames
        ws = WS.connect(srv.url)
        ws.send_text("echo-me")
        ws.send_text("cmd:close:0:")
        assert ws.expect_close(timeout=2) == (1005, "")
        assert ws.skipped[-1] == (1, b"echo-me"), ws.skipped  # data before the close frame
        # the message layer reports the close as ConnectionClosed after earlier messages
        ws = WS.connect(srv.url)
        ws.send_text("cmd:close:1001:draining")
        assert welcome(ws)["type"] == "welcome"
        try:
            ws.recv_message(timeout=2)
            raise AssertionError("no ConnectionClosed")
        except ConnectionClosed as e:
            assert (e.code, e.reason) == (1001, "draining")
        assert ws.expect_close(timeout=2) == (1001, "draining")
        # a server that never closes TCP after its close frame: bounded AssertionError
        # (it holds TCP until the client drops it: expect_close has to give up by itself)
        ws = WS.connect(srv.url)
        ws.send_text("cmd:closestay")
        t0 = time.monotonic()
        try:
            ws.expect_close(timeout=0.5)
            raise AssertionError("expect_close accepted a lingering TCP connection")
        except AssertionError as e:
            assert "did not close the TCP" in str(e), e
        assert time.monotonic() - t0 >= 0.5  # not before its time (a lower bound only)
        assert ("client dropped", None) not in srv.events  # the server held on till now
        ws.abort()
        # no close at all in time
        ws = WS.connect(srv.url)
        ws.send_text("cmd:silent")
        try:
            ws.expect_close(timeout=0.3)
            raise AssertionError("no timeout")
        except AssertionError as e:
            assert "no close frame" in str(e), e
        ws.abort()


def test_abrupt_close(st):
    with EchoServer() as srv:
        ws = WS.connect(srv.url)
        ws.send_text("cmd:abort")
        assert ws.expect_close(timeout=2) == (1006, "")
        ws = WS.connect(srv.url)
        welcome(ws)
        ws.send_text("cmd:abort")
        try:
            ws.recv_message(timeout=2)
            raise AssertionError("no ConnectionClosed")
        except ConnectionClosed as e:
            assert e.code == 1006


def test_violations(st):
    with EchoServer() as srv:
        # what we send wrong, the server catches (and closes 1002)
        for kw in ({"mask": False}, {"rsv": wsclient.RSV1}):
            ws = WS.connect(srv.url)
            ws.send_frame(1, b"bad", **kw)
            assert ws.expect_close(timeout=2) == (1002, "unmasked frame" if "mask" in kw
                                                  else "rsv bits"), kw
        ws = WS.connect(srv.url)
        ws.send_frame(0xB, b"")
        assert ws.expect_close(timeout=2) == (1002, "bad opcode 11")
        # what the server sends wrong, the client catches
        for cmd, why in (("masked", "masked"), ("rsv", "RSV"), ("badutf8", "UTF-8")):
            ws = WS.connect(srv.url)
            welcome(ws)
            ws.send_text("cmd:" + cmd)
            try:
                ws.recv_message(timeout=2)
                raise AssertionError("accepted " + cmd)
            except ProtocolError as e:
                assert why in str(e), e
            ws.abort()
        ws = WS.connect(srv.url)
        welcome(ws)
        ws.send_text("cmd:masked")
        try:
            ws.recv_frame(timeout=2)
            raise AssertionError("recv_frame accepted a masked frame")
        except ProtocolError:
            pass
        ws.abort()


def test_slow_raw_send(st):
    with EchoServer() as srv, WS.connect(srv.url) as ws:
        welcome(ws)
        key = b"\x0a\x0b\x0c\x0d"
        frame = wsclient.encode_frame(1, b"one byte at a time", mask_key=key)
        t0 = time.monotonic()
        ws.send_raw(frame, chunk=1, delay=0.01)
        # 24 pieces, 10 ms apart: a lower bound only (it cannot be quicker than that)
        assert time.monotonic() - t0 > 0.15
        assert ws.recv_message() == (1, b"one byte at a time")
        # a header that announces 5 bytes, the payload following in pieces: the second
        # piece is sent once the server has read the first (and is waiting for the rest)
        i0 = len(srv.events)
        ws.send_frame(1, b"", length_override=5, mask_key=key)
        harness.wait_for(lambda: any(e[0] == "frame" and e[5] == 5 for e in srv.events[i0:]),
                         what="the server reading the frame header")
        recvs = sum(1 for e in srv.events if e[0] == "recv")
        ws.send_raw(wsclient.mask_bytes(b"he", key))
        harness.wait_for(lambda: sum(1 for e in srv.events if e[0] == "recv") > recvs,
                         what="the server reading the first piece")
        ws.send_raw(wsclient.mask_bytes(b"llo", key, offset=2))
        assert ws.recv_message() == (1, b"hello")


def test_recv_json_skip(st):
    with EchoServer() as srv, WS.connect(srv.url) as ws:
        ws.auto_pong = False  # this server would answer each pong with a non-JSON "pong:..."
        ws.send_text("cmd:burst:20")
        seqs = [ws.recv_json(type="event")["seq"] for _ in range(20)]
        assert seqs == list(range(20)), seqs
        assert {"type": "welcome"}.items() <= ws.skipped[0].items()
        assert sum(1 for m in ws.skipped if m.get("type") == "noise") == 2
        ws.send_text("cmd:burst:5")
        try:
            ws.recv_json(type="nothing", max_skip=3)
            raise AssertionError("skip bound not enforced")
        except AssertionError as e:
            assert "no 'nothing' message" in str(e), e
        # the timeout covers the whole wait: with a message every 50 ms for 10 s, a
        # timeout per message would never expire before the feed ends
        ws.send_text("cmd:trickle:200")
        skipped = len(ws.skipped)
        try:
            ws.recv_json(timeout=0.3, type="nothing", max_skip=100000)
            raise AssertionError("no timeout")
        except TimeoutError:
            pass
        got = len(ws.skipped) - skipped
        assert got < 200, "TimeoutError only after the whole feed (%d messages)" % got


def test_many(st):
    n, events = 1000, 30
    with EchoServer() as srv:
        t0 = time.monotonic()
        clients = wsclient.open_many(n, srv.url, token=lambda i: "t%d" % i)
        t_open = time.monotonic() - t0
        assert len(clients) == n and all(isinstance(c, WS) for c in clients)
        for c in clients:
            c.send_text("cmd:burst:%d" % events)
        t0 = time.monotonic()
        got = wsclient.drain_all(clients, events, timeout=30, type="event")
        t_drain = time.monotonic() - t0
        for i, msgs in enumerate(got):
            assert [m["seq"] for m in msgs] == list(range(events)), (i, msgs[:3])
            assert clients[i].skipped[0]["headers"]["authorization"] == "Bearer t%d" % i
        assert all(len(c.pings) == 7 for c in clients)  # 3 heart-beats, 4 between fragments
        t0 = time.monotonic()
        codes = wsclient.close_all(clients, timeout=20)
        t_close = time.monotonic() - t0
        assert codes == [(1000, "")] * n, [c for c in codes if c != (1000, "")][:5]
        assert all(not c.is_open for c in clients)
        print("   %d clients: open %.2fs, drain %d msgs %.2fs, close %.2fs" % (
            n, t_open, n * events, t_drain, t_close))
        # allow_fail: refused handshakes are reported in place
        res = wsclient.open_many(5, srv.base + "/426", allow_fail=True)
        assert all(isinstance(r, HandshakeError) and r.status == 426 for r in res), res
        try:
            wsclient.open_many(3, srv.base + "/426")
            raise AssertionError("open_many hid failures")
        except AssertionError as e:
            assert "3 of 3 connections failed" in str(e), e
        # expect_close_all: server-initiated closes, some dropping instead
        clients = wsclient.open_many(20, srv.url)
        for i, c in enumerate(clients):
            c.send_text("cmd:abort" if i % 5 == 0 else "cmd:close:1001:drain")
        res = wsclient.expect_close_all(clients, timeout=5)
        assert res == [(1006, "") if i % 5 == 0 else (1001, "drain") for i in range(20)], res
