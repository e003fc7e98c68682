"""Raw-socket WebSocket client (RFC 6455) for the integration tests; standard library only.

Two layers over one TCP socket: ws://, or wss:// with `WS.connect(..., tls=<ssl.SSLContext>)`:

* frame level, for protocol tests: `send_frame` builds any frame (unmasked, RSV bits, reserved
  opcodes, non-minimal or lying lengths, oversized control frames), `send_raw` sends arbitrary
  bytes (optionally in small chunks with pauses), `recv_frame` returns the next frame exactly as
  the server sent it (only a masked server frame, a non-minimal length or a length with the top
  bit set is refused, with ProtocolError);
* message level: `send_text` / `send_json` / `send_binary`, `recv_message` / `recv_json`
  (fragments assembled, pings answered with pongs, the server's frames checked strictly),
  `ping`, `close`, `expect_close`.

permessage-deflate (RFC 7692): `WS.connect(..., deflate=True)` offers it (or deflate=<the
offer as a string>); when the server accepts, `ws.deflate` holds the answer's parameters,
compressed messages (RSV1) are inflated by the message layer (counted in
`ws.compressed_received`, bounded by max_message) and `send_compressed` sends one.
`deflate_message` / `inflate_message` are the codec (stdlib zlib, no context takeover).

Plus helpers for many connections: `open_many` (threads, bounded concurrency) and
`drain_all` / `expect_close_all` / `close_all` (one `selectors` loop, per-socket buffers).

Every wait has a deadline: `timeout=None` means the connection's default timeout (the
`timeout` given to `WS.connect`, 5 s unless told). A wait that expires raises TimeoutError
(`recv_*`) or AssertionError (`expect_close`, `ping` with a timeout, `recv_json` skip bound).

Do not mix the two receive layers on one connection in the middle of a fragmented message:
`recv_frame` reads raw frames from the buffer, the message layer keeps its own queue of
complete messages (drained first by `recv_message`).
"""
import base64
import collections
import concurrent.futures
import hashlib
import json
import os
import selectors
import socket
import struct
import time
import urllib.parse
import zlib

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
RSV1, RSV2, RSV3 = 4, 2, 1  # values of send_frame's `rsv` (bits 6, 5, 4 of the first byte)

MAX_HEAD = 64 * 1024         # bound on an HTTP response head
MAX_BODY = 1024 * 1024       # bound on a refused handshake's body
RECV_CHUNK = 256 * 1024


class WSError(Exception):
    """Base class of this module's errors."""


class HandshakeError(WSError):
    """The opening handshake failed: a non-101 answer (status, headers, body carry it), or a
    101 answer that does not validate (status 101, `message` says why), or the connection
    closed before any answer (status 0)."""

    def __init__(self, status, reason="", headers=None, body=b"", message=""):
        self.status = status
        self.reason = reason
        self.headers = headers or {}   # lower-case names; repeated headers joined by ", "
        self.body = body
        self.message = message
        super().__init__("handshake failed: %s %s%s %r" % (
            status, reason, (" (%s)" % message) if message else "", body[:300]))

    def json(self):
        return json.loads(self.body.decode("utf-8"))


class ProtocolError(WSError):
    """The server broke RFC 6455 (masked frame, RSV bits, bad close payload, ...)."""


class ConnectionClosed(WSError):
    """The connection is closed: `code`/`reason` of the server's close frame, or 1006 when the
    TCP connection ended (or failed) without one."""

    def __init__(self, code, reason=""):
        self.code = code
        self.reason = reason
        super().__init__("connection closed: %s %r" % (code, reason))


Frame = collections.namedtuple("Frame", "fin rsv opcode payload")
Frame.__doc__ = "One frame: fin (bool), rsv (0..7, RSV1=4), opcode (0..15), payload (bytes)."


# frames ------------------------------------------------------------------------------------
def accept_key(key):
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 section 4.2.2)."""
    return base64.b64encode(hashlib.sha1((key + GUID).encode("ascii")).digest()).decode()


def mask_bytes(data, key, offset=0):
    """data XOR the 4-byte mask key; `offset` is the position of data[0] in the payload (to
    mask a payload sent in several pieces with send_raw)."""
    n = len(data)
    if n == 0:
        return b""
    k = offset % 4
    key = bytes(key[k:] + key[:k])
    full = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(full, "little")).to_bytes(
        n, "little")


def encode_frame(opcode, payload=b"", fin=True, rsv=0, mask=True, mask_key=None,
                 length_override=None, length_bits=None):
    """The bytes of one frame.

    rsv: 0..7 (RSV1=4, RSV2=2, RSV3=1). mask_key: 4 bytes (random when None; ignored when
    mask is False). length_override: the payload length written in the header instead of the
    real one (the payload itself is sent as is). length_bits: 7, 16 or 64, the length
    encoding to use (default: the minimal one for the declared length)."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    declared = len(payload) if length_override is None else length_override
    if length_bits is None:
        length_bits = 7 if declared <= 125 else 16 if declared <= 0xFFFF else 64
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0xF)
    mbit = 0x80 if mask else 0
    if length_bits == 7:
        if declared > 127:
            raise ValueError("length %d does not fit 7 bits" % declared)
        head = bytes((b0, mbit | declared))
    elif length_bits == 16:
        head = bytes((b0, mbit | 126)) + struct.pack("!H", declared)
    elif length_bits == 64:
        head = bytes((b0, mbit | 127)) + struct.pack("!Q", declared)
    else:
        raise ValueError("length_bits must be 7, 16 or 64")
    if not mask:
        return head + bytes(payload)
    key = os.urandom(4) if mask_key is None else bytes(mask_key)
    if len(key) != 4:
        raise ValueError("mask key must be 4 bytes")
    return head + key + mask_bytes(payload, key)


def parse_frame(buf, pos=0, max_payload=1 << 62, strict=True):
    """Parses one frame at buf[pos:]. Returns None when the frame is not complete yet, else
    (fin, rsv, opcode, mask_key or None, unmasked payload, end position).
    strict: a non-minimal length encoding raises ProtocolError (a length with the top bit
    set, or over max_payload, always does)."""
    n = len(buf)
    if n - pos < 2:
        return None
    b0, b1 = buf[pos], buf[pos + 1]
    length = b1 & 0x7F
    p = pos + 2
    if length == 126:
        if n < p + 2:
            return None
        length = struct.unpack_from("!H", buf, p)[0]
        p += 2
        if strict and length <= 125:
            raise ProtocolError("non-minimal 16-bit length %d" % length)
    elif length == 127:
        if n < p + 8:
            return None
        length = struct.unpack_from("!Q", buf, p)[0]
        p += 8
        if length >> 63:
            raise ProtocolError("64-bit length with the most significant bit set")
        if strict and length <= 0xFFFF:
            raise ProtocolError("non-minimal 64-bit length %d" % length)
    if length > max_payload:
        raise ProtocolError("frame of %d bytes over the limit %d" % (length, max_payload))
    key = None
    if b1 & 0x80:
        if n < p + 4:
            return None
        key = bytes(buf[p:p + 4])
        p += 4
    if n < p + length:
        return None
    payload = bytes(buf[p:p + length])
    if key is not None:
        payload = mask_bytes(payload, key)
    return bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF, key, payload, p + length


def close_payload(code=1000, reason=""):
    """A close frame's payload: empty when code is None."""
    if code is None:
        return b""
    if isinstance(reason, str):
        reason = reason.encode("utf-8")
    return struct.pack("!H", code) + reason


def valid_close_code(code):
    """Whether a close code may appear on the wire (RFC 6455 section 7.4)."""
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013,
                    1014) or 3000 <= code <= 4999


def parse_close_payload(payload):
    """(code, reason) of a close frame's payload; (1005, "") when empty. ProtocolError for a
    1-byte payload, a code that must not be sent, or a reason that is not UTF-8."""
    if not payload:
        return 1005, ""
    if len(payload) == 1:
        raise ProtocolError("close frame with a 1-byte payload")
    code = struct.unpack("!H", payload[:2])[0]
    if not valid_close_code(code):
        raise ProtocolError("close code %d must not be sent" % code)
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("close reason is not UTF-8: %r" % payload[2:]) from None
    return code, reason


PMD_OFFER = "permessage-deflate; client_max_window_bits"
PMD_TAIL = b"\x00\x00\xff\xff"


def deflate_message(data, level=6):
    """One message compressed as RFC 7692 §7.2.1 says: raw deflate, sync flush, without the
    trailing 00 00 ff ff; a fresh compressor each time (no context takeover)."""
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    out = c.compress(bytes(data)) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(PMD_TAIL)
    return out[:-4]


def inflate_message(data, max_size=64 << 20):
    """Inflates one compressed message (the tail appended); ProtocolError when it is not
    valid deflate data or inflates past max_size."""
    d = zlib.decompressobj(-15)
    try:
        out = d.decompress(bytes(data) + PMD_TAIL, max_size + 1)
    except zlib.error as e:
        raise ProtocolError("invalid compressed message: %s" % e) from None
    if len(out) > max_size or d.unconsumed_tail:
        raise ProtocolError("compressed message inflates past %d bytes" % max_size)
    return out


def parse_extensions(value):
    """A Sec-WebSocket-Extensions value as [(name, {param: value or None})]."""
    out = []
    for ext in value.split(","):
        parts = [p.strip() for p in ext.split(";")]
        if not parts[0]:
            continue
        params = {}
        for p in parts[1:]:
            k, _, v = p.partition("=")
            params[k.strip()] = v.strip().strip('"') if _ else None
        out.append((parts[0], params))
    return out


def ws_url(url, **query):
    """url with query parameters added (URL-encoded), e.g. ws_url(u, access_token=t)."""
    u = urllib.parse.urlsplit(url)
    q = urllib.parse.parse_qsl(u.query, keep_blank_values=True) + list(query.items())
    return urllib.parse.urlunsplit(u._replace(query=urllib.parse.urlencode(q)))


# HTTP --------------------------------------------------------------------------------------
def _remaining(deadline):
    r = deadline - time.monotonic()
    if r <= 0:
        raise TimeoutError("timed out")
    return r


def _recv(sock, deadline, n=RECV_CHUNK):
    """One recv bounded by deadline; b"" at EOF or on a reset connection."""
    sock.settimeout(_remaining(deadline))
    try:
        return sock.recv(n)
    except socket.timeout:
        raise TimeoutError("timed out") from None
    except (ConnectionResetError, ConnectionAbortedError):
        return b""


def _parse_head(head):
    lines = head.decode("iso-8859-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise HandshakeError(0, message="bad status line %r" % lines[0])
    status, reason = int(parts[1]), parts[2] if len(parts) > 2 else ""
    headers = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise HandshakeError(status, reason, headers, message="bad header line %r" % line)
        name, value = name.strip().lower(), value.strip()
        headers[name] = headers[name] + ", " + value if name in headers else value
    return status, reason, headers


def read_http_response(sock, deadline, buf=b""):
    """Reads one HTTP response head from sock. Returns (status, reason, headers, rest): rest
    is what arrived after the head (the start of the body or of the WebSocket stream)."""
    buf = bytearray(buf)
    for _ in range(MAX_HEAD):  # bounded: each round adds at least one byte or ends
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            status, reason, headers = _parse_head(bytes(buf[:end]))
            return status, reason, headers, bytes(buf[end + 4:])
        if len(buf) > MAX_HEAD:
            raise HandshakeError(0, message="response head over %d bytes" % MAX_HEAD)
        data = _recv(sock, deadline)
        if not data:
            raise HandshakeError(0, message="connection closed before a complete response "
                                 "(got %r)" % bytes(buf[:200]))
        buf += data
    raise HandshakeError(0, message="response head too long")


def read_http_body(sock, status, headers, rest, deadline):
    """The body of a (non-101) response: Content-Length, chunked, or up to EOF. When the
    deadline passes first, returns what arrived (never raises TimeoutError)."""
    buf = bytearray(rest)
    if status < 200 or status in (204, 304):
        return bytes(buf)
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    clen = headers.get("content-length")
    try:
        while len(buf) < MAX_BODY:
            if chunked:
                body, done = _dechunk(buf)
                if done:
                    return body
            elif clen is not None and clen.isdigit() and len(buf) >= int(clen):
                return bytes(buf[:int(clen)])
            data = _recv(sock, deadline)
            if not data:
                break
            buf += data
    except TimeoutError:
        pass
    return _dechunk(buf)[0] if chunked else bytes(buf)


def _dechunk(buf):
    """(body so far, complete?) of a chunked body."""
    out, pos = bytearray(), 0
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return bytes(out), False
        try:
            size = int(bytes(buf[pos:eol]).split(b";")[0].strip() or b"x", 16)
        except ValueError:
            return bytes(out), True  # malformed: give back what we have
        if size == 0:
            return bytes(out), True
        if len(buf) < eol + 2 + size + 2:
            out += buf[eol + 2:eol + 2 + size]
            return bytes(out), False
        out += buf[eol + 2:eol + 2 + size]
        pos = eol + 2 + size + 2


def raw_request(url, data, timeout=5.0):
    """Sends arbitrary bytes to url's host:port and reads one HTTP response. Returns
    (status, headers, body); for handshake requests no WS.connect would produce."""
    u = urllib.parse.urlsplit(url)
    deadline = time.monotonic() + timeout
    with socket.create_connection((u.hostname, u.port or 80), timeout=timeout) as s:
        s.sendall(data)
        status, _, headers, rest = read_http_response(s, deadline)
        if status == 101:
            return status, headers, rest
        return status, headers, read_http_body(s, status, headers, rest, deadline)


# the connection ----------------------------------------------------------------------------
class WS:
    """One client connection. Made by WS.connect; attributes after the handshake:

    status, headers (lower-case names), subprotocol, request (the bytes sent);
    pings / pongs: payloads of pings and pongs the message layer received (bounded deques);
    skipped: messages recv_json / drain_all / expect_close passed over (bounded deque);
    close_received: (code, reason) once the server's close frame arrived, else None;
    close_sent: (code, reason) once we sent a close frame, else None;
    eof: the server closed the TCP connection (or reset it).
    Settings: auto_pong (True), auto_close_reply (True: answer a close frame by echoing its
    code), max_message (64 MiB), timeout (default wait)."""

    def __init__(self, sock, url, status, headers, subprotocol, rest=b"", timeout=5.0,
                 request=b""):
        self.sock = sock
        self.url = url
        self.status = status
        self.headers = headers
        self.subprotocol = subprotocol
        self.request = request
        self.timeout = timeout
        self.auto_pong = True
        self.auto_close_reply = True
        self.max_message = 64 << 20
        self.pings = collections.deque(maxlen=1000)
        self.pongs = collections.deque(maxlen=1000)
        self.skipped = collections.deque(maxlen=10000)
        self.close_received = None
        self.close_sent = None
        self.eof = False
        self._buf = bytearray(rest)
        self._pending = collections.deque()  # complete messages (opcode, bytes)
        self._frag_op = None
        self._frag = []
        self._frag_len = 0
        self._want_pong = None
        self._got_pong = False
        self.deflate = None  # the server's permessage-deflate parameters when accepted
        self.compressed_received = 0
        self._frag_compressed = False
        for name, params in parse_extensions(headers.get("sec-websocket-extensions", "")):
            if name == "permessage-deflate":
                self.deflate = params

    # opening handshake -----------------------------------------------------------------
    @classmethod
    def connect(cls, url, token=None, subprotocols=("sidecast.v1",), origin=None,
                headers=None, timeout=5.0, method="GET", require_subprotocol=True,
                check=True, deflate=False, tls=None):
        """Opens a connection and performs the opening handshake.

        url: ws://host:port/path?query (put access_token in the query with ws_url).
        token: sent as "Authorization: Bearer <token>". headers: a dict overrides or adds
        request headers by case-insensitive name (value None removes a default header, e.g.
        {"Sec-WebSocket-Version": None}); a list of (name, value) pairs is appended verbatim
        (duplicates allowed). A custom Sec-WebSocket-Key is honoured when checking Accept.
        A non-101 answer raises HandshakeError(status, headers, body). With check, a 101 must
        carry Upgrade/Connection, the right Accept, one of the offered subprotocols (required
        when some were offered and require_subprotocol) and no unrequested extension.
        deflate: True offers permessage-deflate (PMD_OFFER), a string is sent as the
        Sec-WebSocket-Extensions offer. tls: the ssl.SSLContext a wss:// URL needs (its
        verification settings are the test's to choose)."""
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("ws", "http", "wss", "https"):
            raise ValueError("only ws:// and wss:// URLs: %r" % url)
        secure = u.scheme in ("wss", "https")
        if secure and tls is None:
            raise ValueError("a wss:// URL needs tls=<ssl.SSLContext>")
        host, port = u.hostname, u.port or (443 if secure else 80)
        path = (u.path or "/") + ("?" + u.query if u.query else "")
        key = base64.b64encode(os.urandom(16)).decode()
        hdrs = [("Host", "%s:%d" % (host, port)), ("Upgrade", "websocket"),
                ("Connection", "Upgrade"), ("Sec-WebSocket-Key", key),
                ("Sec-WebSocket-Version", "13")]
        if subprotocols:
            hdrs.append(("Sec-WebSocket-Protocol", ", ".join(subprotocols)))
        if origin is not None:
            hdrs.append(("Origin", origin))
        if token is not None:
            hdrs.append(("Authorization", "Bearer " + token))
        if deflate:
            hdrs.append(("Sec-WebSocket-Extensions", PMD_OFFER if deflate is True else deflate))
        extra = []
        if isinstance(headers, dict):
            for name, value in headers.items():
                idx = [i for i, (n, _) in enumerate(hdrs) if n.lower() == name.lower()]
                if idx:
                    if value is None:
                        del hdrs[idx[0]]
                    else:
                        hdrs[idx[0]] = (name, value)
                elif value is not None:
                    hdrs.append((name, value))
        elif headers:
            extra = list(headers)
        hdrs += extra
        sent = {n.lower(): v for n, v in hdrs}
        key = sent.get("sec-websocket-key", key)
        request = ("%s %s HTTP/1.1\r\n" % (method, path) + "".join(
            "%s: %s\r\n" % (n, v) for n, v in hdrs) + "\r\n").encode("utf-8")

        deadline = time.monotonic() + timeout
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if secure:
                sock.settimeout(_remaining(deadline))
                sock = tls.wrap_socket(sock, server_hostname=host)
            sock.settimeout(_remaining(deadline))
            sock.sendall(request)
            status, reason, rhdrs, rest = read_http_response(sock, deadline)
            if status != 101:
                body = read_http_body(sock, status, rhdrs, rest, deadline)
                raise HandshakeError(status, reason, rhdrs, body)
            proto = rhdrs.get("sec-websocket-protocol")
            if check:
                cls._check_101(rhdrs, key, sent, subprotocols, proto, require_subprotocol,
                               reason, rest)
        except BaseException:
            sock.close()
            raise
        return cls(sock, url, status, rhdrs, proto, rest, timeout, request)

    @staticmethod
    def _check_101(h, key, sent, offered, proto, require_subprotocol, reason, rest):
        def fail(msg):
            raise HandshakeError(101, reason, h, rest, msg)
        if h.get("upgrade", "").lower() != "websocket":
            fail("Upgrade header is %r" % h.get("upgrade"))
        if "upgrade" not in [t.strip().lower() for t in h.get("connection", "").split(",")]:
            fail("Connection header is %r" % h.get("connection"))
        if h.get("sec-websocket-accept") != accept_key(key):
            fail("Sec-WebSocket-Accept %r, expected %r" % (h.get("sec-websocket-accept"),
                                                          accept_key(key)))
        if proto is not None and proto not in offered:
            fail("server selected subprotocol %r, offered %r" % (proto, list(offered)))
        if proto is None and offered and require_subprotocol:
            fail("server selected no subprotocol, offered %r" % list(offered))
        if "sec-websocket-extensions" in h and "sec-websocket-extensions" not in sent:
            fail("unrequested extension %r" % h["sec-websocket-extensions"])

    # plumbing ----------------------------------------------------------------------------
    def fileno(self):
        return self.sock.fileno()

    def _deadline(self, timeout):
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    def _read_some(self, deadline):
        """One recv into the buffer (bounded by deadline); sets eof at EOF/reset."""
        data = _recv(self.sock, deadline)
        if data:
            self._buf += data
        else:
            self.eof = True
        return bool(data)

    def _read_ready(self):
        """One recv on a socket a selector reported readable."""
        self.sock.settimeout(self.timeout)
        try:
            data = self.sock.recv(RECV_CHUNK)
        except (ConnectionResetError, ConnectionAbortedError):
            data = b""
        except (BlockingIOError, InterruptedError):
            return
        if data:
            self._buf += data
            # TLS: what is decrypted already is not in the socket for a selector to see
            while getattr(self.sock, "pending", None) and self.sock.pending():
                self._buf += self.sock.recv(self.sock.pending())
        else:
            self.eof = True

    def _send(self, data, timeout=None):
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as e:
            raise ConnectionClosed(1006, "send failed: %s" % e) from None

    def _process(self):
        """Parses every complete frame in the buffer into the message layer; stops after a
        close frame (what follows it stays in the buffer)."""
        buf, pos = self._buf, 0
        try:
            while self.close_received is None:
                r = parse_frame(buf, pos, self.max_message)
                if r is None:
                    break
                fin, rsv, op, key, payload, pos = r
                if key is not None:
                    raise ProtocolError("masked frame from the server")
                self._on_frame(fin, rsv, op, payload)
        finally:
            if pos:
                del buf[:pos]

    def _on_frame(self, fin, rsv, op, payload):
        compressed = False
        if rsv == 4 and self.deflate is not None and op in (OP_TEXT, OP_BINARY):
            compressed = True  # RSV1 on a first frame: a compressed message (RFC 7692 §6)
        elif rsv:
            raise ProtocolError("RSV bits %d set without a negotiated extension" % rsv)
        if op >= 8:
            if not fin:
                raise ProtocolError("fragmented control frame (opcode %d)" % op)
            if len(payload) > 125:
                raise ProtocolError("control frame of %d bytes" % len(payload))
            if op == OP_PING:
                self.pings.append(payload)
                if self.auto_pong and self.close_sent is None:
                    try:
                        self._send(encode_frame(OP_PONG, payload))
                    except ConnectionClosed:
                        pass
            elif op == OP_PONG:
                self.pongs.append(payload)
                if payload == self._want_pong:
                    self._got_pong = True
            elif op == OP_CLOSE:
                self.close_received = parse_close_payload(payload)
                if self.auto_close_reply and self.close_sent is None:
                    code = self.close_received[0]
                    self._send_close_quietly(None if code == 1005 else code, "")
            else:
                raise ProtocolError("reserved control opcode %d" % op)
        elif op == OP_CONT:
            if self._frag_op is None:
                raise ProtocolError("continuation frame without a message to continue")
            self._frag.append(payload)
            self._frag_len += len(payload)
            if self._frag_len > self.max_message:
                raise ProtocolError("message over %d bytes" % self.max_message)
            if fin:
                op, data = self._frag_op, b"".join(self._frag)
                self._frag_op, self._frag, self._frag_len = None, [], 0
                self._deliver(op, data, self._frag_compressed)
        elif op in (OP_TEXT, OP_BINARY):
            if self._frag_op is not None:
                raise ProtocolError("new data frame inside a fragmented message")
            if fin:
                self._deliver(op, payload, compressed)
            else:
                self._frag_op, self._frag, self._frag_len = op, [payload], len(payload)
                self._frag_compressed = compressed
        else:
            raise ProtocolError("reserved data opcode %d" % op)

    def _deliver(self, op, data, compressed=False):
        if compressed:
            data = inflate_message(data, self.max_message)
            self.compressed_received += 1
        if op == OP_TEXT:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError("text message is not UTF-8: %r" % data[:100]) from None
        self._pending.append((op, data))

    def _pump_until(self, cond, deadline):
        """Reads and processes until cond() holds; ConnectionClosed when the connection ends
        first, TimeoutError at the deadline."""
        while True:  # bounded: each round blocks on one recv bounded by deadline, or ends
            self._process()
            if cond():
                return
            if self.close_received is not None:
                raise ConnectionClosed(*self.close_received)
            if self.eof:
                raise ConnectionClosed(1006, "TCP connection closed without a close frame")
            self._read_some(deadline)

    # frame level -------------------------------------------------------------------------
    def send_frame(self, opcode, payload=b"", fin=True, rsv=0, mask=True, mask_key=None,
                   length_override=None, length_bits=None):
        """Sends one frame built by encode_frame (see there for the arguments)."""
        self._send(encode_frame(opcode, payload, fin, rsv, mask, mask_key, length_override,
                                length_bits))

    def send_raw(self, data, chunk=None, delay=0.0):
        """Sends arbitrary bytes; with chunk, in pieces of that many bytes, sleeping delay
        seconds between them (each piece leaves as its own TCP segment: TCP_NODELAY)."""
        if not chunk:
            self._send(data)
            return
        for i in range(0, len(data), chunk):
            if i:
                time.sleep(delay)
            self._send(data[i:i + chunk])

    def recv_frame(self, timeout=None):
        """The next frame as the server sent it: Frame(fin, rsv, opcode, payload). No pong,
        no reassembly. ProtocolError for a masked frame; ConnectionClosed(1006) at EOF;
        TimeoutError when none arrives in time."""
        deadline = self._deadline(timeout)
        while True:  # bounded by the deadline
            r = parse_frame(self._buf, 0, self.max_message)
            if r is not None:
                fin, rsv, op, key, payload, end = r
                del self._buf[:end]
                if key is not None:
                    raise ProtocolError("masked frame from the server")
                if op == OP_CLOSE and self.close_received is None:
                    self.close_received = parse_close_payload(payload)
                return Frame(fin, rsv, op, payload)
            if self.eof:
                raise ConnectionClosed(1006, "EOF (%d bytes of a partial frame)" % len(
                    self._buf))
            self._read_some(deadline)

    # message level -----------------------------------------------------------------------
    def send_message(self, opcode, payload, fragment_size=None):
        """Sends a text/binary message, in frames of fragment_size bytes when given."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        if not fragment_size or len(payload) <= fragment_size:
            self._send(encode_frame(opcode, payload))
            return
        parts = [payload[i:i + fragment_size] for i in range(0, len(payload), fragment_size)]
        self._send(b"".join(encode_frame(opcode if i == 0 else OP_CONT, p,
                                         fin=i == len(parts) - 1)
                            for i, p in enumerate(parts)))

    def send_compressed(self, opcode, payload, fragment_size=None):
        """Sends a text/binary message compressed here (deflate_message), RSV1 on its first
        frame, whether or not the server accepted permessage-deflate (tests of refusal).
        Bytes already compressed (a zip bomb, corrupt data) go with send_frame(rsv=4)."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        z = deflate_message(payload)
        if not fragment_size or len(z) <= fragment_size:
            self._send(encode_frame(opcode, z, rsv=4))
            return
        parts = [z[i:i + fragment_size] for i in range(0, len(z), fragment_size)]
        self._send(b"".join(encode_frame(opcode if i == 0 else OP_CONT, p,
                                         fin=i == len(parts) - 1, rsv=4 if i == 0 else 0)
                            for i, p in enumerate(parts)))

    def send_text(self, text, fragment_size=None):
        self.send_message(OP_TEXT, text.encode("utf-8"), fragment_size)

    def send_binary(self, data, fragment_size=None):
        self.send_message(OP_BINARY, data, fragment_size)

    def send_json(self, obj, fragment_size=None):
        self.send_text(json.dumps(obj, separators=(",", ":")), fragment_size)

    def subscribe(self, topic, since=None, timeout=5):
        """sidecast.v1: subscribe to topic (from since, when given) and wait for its
        "subscribed" (other messages before it are skipped). Returns that reply."""
        msg = {"type": "subscribe", "topic": topic}
        if since is not None:
            msg["since"] = since
        self.send_json(msg)
        r = self.recv_json(timeout, type="subscribed")
        assert r["topic"] == topic, r
        return r

    def recv_message(self, timeout=None):
        """The next complete data message: (opcode, bytes). Pings are answered (auto_pong),
        fragments assembled, server frames checked (ProtocolError). ConnectionClosed(code,
        reason) once the server closed (after every message that came before it);
        TimeoutError when nothing arrives in time."""
        self._pump_until(lambda: self._pending, self._deadline(timeout))
        return self._pending.popleft()

    def recv_json(self, timeout=None, type=None, max_skip=100, topic=None):  # noqa: A002
        """The next text message decoded as JSON. With type (and topic), messages of another
        "type" (or "topic") are skipped (kept in self.skipped), at most max_skip of them (then
        AssertionError). The timeout covers the whole wait."""
        deadline = self._deadline(timeout)
        for _ in range(max_skip + 1):
            op, data = self.recv_message(max(0.0, deadline - time.monotonic()))
            if op != OP_TEXT:
                raise AssertionError("expected a text message, got opcode %d: %r" % (
                    op, data[:200]))
            try:
                msg = json.loads(data.decode("utf-8"))
            except ValueError:
                raise AssertionError("text message is not JSON: %r" % data[:200]) from None
            if (type is None or (isinstance(msg, dict) and msg.get("type") == type)) and (
                    topic is None or (isinstance(msg, dict) and msg.get("topic") == topic)):
                return msg
            self.skipped.append(msg)
        raise AssertionError("no %r message (topic %r) among %d others (last: %r)" % (
            type, topic, max_skip + 1, list(self.skipped)[-3:]))

    def ping(self, payload=b"", timeout=None):
        """Sends a ping. With a timeout, waits for the pong carrying the same payload
        (AssertionError if none in time); messages arriving meanwhile stay queued."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        self._want_pong, self._got_pong = payload, False
        self._send(encode_frame(OP_PING, payload))
        if timeout is None:
            return
        try:
            self._pump_until(lambda: self._got_pong, self._deadline(timeout))
        except TimeoutError:
            raise AssertionError("no pong for ping %r within %.1fs" % (payload, timeout)) \
                from None
        finally:
            self._want_pong = None

    def _send_close_quietly(self, code, reason):
        self.close_sent = (code, reason)
        try:
            self._send(encode_frame(OP_CLOSE, close_payload(code, reason)))
        except (ConnectionClosed, OSError):
            pass

    def close(self, code=1000, reason="", timeout=None):
        """Closing handshake started by us: sends close(code, reason) (code None: empty
        payload), waits for the server's close frame and its closing of TCP. Returns the
        server's (code, reason) -- (1006, "") if it just dropped the connection; raises
        AssertionError if it does neither in time. The socket is closed in every case."""
        try:
            if self.close_sent is None and not self.eof:
                self._send_close_quietly(code, reason)
            return self.expect_close(timeout)
        finally:
            self.abort()

    def expect_close(self, timeout=None, reply=True, allow_data=True):
        """Waits for the server to close: its close frame, then (after our reply, unless
        reply is False) the end of the TCP connection, both within timeout. Data messages
        before the close frame go to self.skipped (AssertionError if not allow_data).
        Returns (code, reason), (1005, "") for an empty close payload, (1006, "") when the
        TCP connection ended without a close frame. AssertionError on timeout;
        ProtocolError for bytes after the close frame. The socket is closed afterwards."""
        deadline = self._deadline(timeout)
        saved, self.auto_close_reply = self.auto_close_reply, reply
        try:
            while self.close_received is None:  # bounded by the deadline
                self._process()
                while self._pending:
                    msg = self._pending.popleft()
                    if not allow_data:
                        raise AssertionError("data message before the close frame: %r" % (
                            msg[1][:200],))
                    self.skipped.append(msg)
                if self.close_received is not None:
                    break
                if self.eof:
                    self.abort()
                    return 1006, ""
                try:
                    self._read_some(deadline)
                except TimeoutError:
                    raise AssertionError("no close frame from the server within %.1fs" % (
                        self.timeout if timeout is None else timeout)) from None
        finally:
            self.auto_close_reply = saved
        while not self.eof:  # bounded by the deadline
            if self._buf:
                raise ProtocolError("data after the close frame: %r" % bytes(self._buf[:100]))
            try:
                self._read_some(deadline)
            except TimeoutError:
                raise AssertionError("server sent close %r but did not close the TCP "
                                     "connection in time" % (self.close_received,)) from None
        if self._buf:
            raise ProtocolError("data after the close frame: %r" % bytes(self._buf[:100]))
        self.abort()
        return self.close_received

    def abort(self, rst=False):
        """Closes the socket now, without a closing handshake (rst: with a TCP reset)."""
        if self.sock.fileno() < 0:
            return
        if rst:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                     struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.sock.close()

    @property
    def is_open(self):
        return self.sock.fileno() >= 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        """Quiet close: a short closing handshake if the connection is still up."""
        if self.is_open:
            try:
                if not self.eof and self.close_received is None:
                    self.close(timeout=min(self.timeout, 1.0))
            except (WSError, AssertionError, OSError):
                pass
            finally:
                self.abort()
        return False

    def __repr__(self):
        return "<WS %s %s>" % (self.url, "open" if self.is_open else "closed")


connect = WS.connect


# many connections ------------------------------------------------------------------------
def open_many(n, url, token=None, concurrency=64, timeout=10.0, total_timeout=120.0,
              allow_fail=False, **kwargs):
    """Opens n connections with up to `concurrency` handshakes in flight (threads).

    token: one token for all, a sequence (token[i]) or a callable (token(i)). Other keyword
    arguments go to WS.connect; `timeout` is each connection's. Returns the WS list in order.
    If any fails: with allow_fail the failed slots hold the exception, else every opened
    connection is aborted and AssertionError is raised."""
    def tok(i):
        if token is None or isinstance(token, str):
            return token
        return token(i) if callable(token) else token[i]

    def one(i):
        return WS.connect(url, token=tok(i), timeout=timeout, **kwargs)

    results = [None] * n
    deadline = time.monotonic() + total_timeout
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(concurrency, n))) as ex:
        futs = [ex.submit(one, i) for i in range(n)]
        concurrent.futures.wait(futs, max(0.0, deadline - time.monotonic()))
        for f in futs:
            f.cancel()  # the ones not started yet; running ones end within `timeout`
    for i, f in enumerate(futs):
        if f.cancelled():
            results[i] = TimeoutError("not connected within total_timeout")
        else:
            results[i] = f.exception() or f.result()
    failed = [(i, r) for i, r in enumerate(results) if not isinstance(r, WS)]
    if failed and not allow_fail:
        for r in results:
            if isinstance(r, WS):
                r.abort()
        raise AssertionError("%d of %d connections failed; first: #%d %r" % (
            len(failed), n, failed[0][0], failed[0][1]))
    return results


def _decode(op, data, decode):
    if decode == "json":
        if op != OP_TEXT:
            raise AssertionError("expected a text message, got opcode %d" % op)
        try:
            return json.loads(data.decode("utf-8"))
        except ValueError:
            raise AssertionError("text message is not JSON: %r" % data[:200]) from None
    if decode == "text":
        return data.decode("utf-8")
    return op, data


def drain_all(clients, count, timeout=10.0, type=None, decode="json"):  # noqa: A002
    """Collects up to `count` messages per client with one selector loop; returns a list
    (parallel to clients) of message lists. decode: "json" (dicts), "text" (str) or None
    ((opcode, bytes)). With type (json only), only messages of that "type" are counted;
    others go to the client's skipped deque. Pings are answered. A client is done when it has
    count messages or its connection ends (close frame or EOF; see close_received / eof).
    At the deadline returns what arrived (no exception): assert on the result. Messages past
    `count` stay queued on the client for recv_message. ProtocolError names the client."""
    results = [[] for _ in clients]
    deadline = time.monotonic() + timeout

    def harvest(i, c):
        try:
            c._process()
        except ProtocolError as e:
            raise ProtocolError("client #%d: %s" % (i, e)) from None
        out = results[i]
        while c._pending and len(out) < count:
            op, data = c._pending.popleft()
            try:
                msg = _decode(op, data, decode)
            except AssertionError as e:
                raise AssertionError("client #%d: %s" % (i, e)) from None
            if type is not None and not (isinstance(msg, dict) and msg.get("type") == type):
                c.skipped.append(msg)
                continue
            out.append(msg)
        return len(out) >= count or c.close_received is not None or c.eof

    with selectors.DefaultSelector() as sel:
        for i, c in enumerate(clients):
            if not harvest(i, c):
                sel.register(c.sock, selectors.EVENT_READ, i)
        while sel.get_map():  # bounded by the deadline
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, _ in sel.select(left):
                i = key.data
                c = clients[i]
                c._read_ready()
                if harvest(i, c):
                    sel.unregister(key.fileobj)
    return results


def expect_close_all(clients, timeout=10.0, reply=True):
    """expect_close for many clients at once (one selector loop). Returns a list parallel to
    clients: (code, reason) once the server's close frame and its closing of TCP arrived,
    (1006, "") if TCP ended without a close frame, None if not done by the deadline. Data
    messages go to each client's skipped deque. Every socket is closed afterwards."""
    results = [None] * len(clients)
    deadline = time.monotonic() + timeout

    def step(i, c):
        if c.close_received is None:
            c.auto_close_reply = reply
            c._process()
            while c._pending:
                c.skipped.append(c._pending.popleft())
        if c.close_received is not None and c._buf:
            raise ProtocolError("client #%d: data after the close frame" % i)
        if c.eof:
            results[i] = c.close_received or (1006, "")
            return True
        return False

    with selectors.DefaultSelector() as sel:
        for i, c in enumerate(clients):
            if not c.is_open:
                results[i] = c.close_received or (1006, "")
            elif not step(i, c):
                sel.register(c.sock, selectors.EVENT_READ, i)
        while sel.get_map():  # bounded by the deadline
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, _ in sel.select(left):
                i = key.data
                clients[i]._read_ready()
                if step(i, clients[i]):
                    sel.unregister(key.fileobj)
    for c in clients:
        c.abort()
    return results


def close_all(clients, code=1000, reason="", timeout=10.0):
    """Starts the closing handshake on every client, then expect_close_all."""
    for c in clients:
        if c.is_open and c.close_sent is None and not c.eof:
            c._send_close_quietly(code, reason)
    return expect_close_all(clients, timeout)
