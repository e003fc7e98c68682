"""A JetStream publisher for the fault drills: every publish waits for the stream's ack.

Standard library only; the NATS text protocol over one socket. `publish` sends with a
`Nats-Msg-Id` header and waits for JetStream's ack (`{"stream","seq"}`); when the node it
talks to dies, the leader moves, or the ack does not come in time, it connects to another
node of the list and sends the same message again: the stream's duplicate window drops the
copy, so each message is stored exactly once and the caller knows exactly what was sent.
Every wait has a deadline.
"""
import json
import os
import socket
import time
import urllib.parse


class PublishError(Exception):
    """No ack within the deadline, on any node."""


class NoResponders(Exception):
    """Nobody answered the subject (the stream has no leader for a moment)."""


class JSPublisher:
    """urls: NATS URLs (a list or a comma-separated string); tried in order, `prefer` first."""

    def __init__(self, urls, name="drill-pub", prefer=None, ack_timeout=1.0):
        if isinstance(urls, str):
            urls = [u for u in urls.split(",") if u]
        self.urls = list(urls)
        if prefer in self.urls:
            self.urls.remove(prefer)
            self.urls.insert(0, prefer)
        self.name = name
        self.ack_timeout = ack_timeout
        self.sock = None
        self.url = None
        self.buf = bytearray()
        self.inbox = "_DRILL.%s" % os.urandom(6).hex()
        self.n = 0
        self.retries = 0       # publishes sent again (after a timeout or a lost connection)
        self.reconnects = 0

    # connection ----------------------------------------------------------------------------
    def _connect_one(self, url, timeout=2.0):
        u = urllib.parse.urlsplit(url)
        s = socket.create_connection((u.hostname, u.port or 4222), timeout=timeout)
        self.sock, self.buf = s, bytearray()
        deadline = time.monotonic() + timeout
        line = self._line(deadline)
        if not line.startswith(b"INFO "):
            raise ConnectionError("not a NATS server: %r" % line[:80])
        opts = {"verbose": False, "pedantic": False, "headers": True, "no_responders": True,
                "name": self.name, "lang": "python-drill", "version": "1"}
        self._send(b"CONNECT %s\r\nSUB %s.* 1\r\nPING\r\n" % (
            json.dumps(opts).encode(), self.inbox.encode()))
        while True:  # bounded by the deadline
            line = self._line(deadline)
            if line == b"PONG":
                break
            if line.startswith(b"-ERR"):
                raise ConnectionError(line.decode(errors="replace"))
        self.url = url

    def connect(self, timeout=10.0, skip=None):
        """Connects to the first node that answers (skip: a URL to try last)."""
        self.close()
        order = [u for u in self.urls if u != skip] + ([skip] if skip in self.urls else [])
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            for url in order:
                try:
                    self._connect_one(url, timeout=max(0.2, min(2.0, deadline - time.monotonic())))
                    return url
                except (OSError, ConnectionError, TimeoutError) as e:
                    last = e
                    self.close()
            time.sleep(0.1)
        raise PublishError("no NATS node answered within %.0fs: %s" % (timeout, last))

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None

    def _send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("timed out") from None
        if not data:
            raise ConnectionError("NATS closed the connection")
        self.buf += data

    def _line(self, deadline):
        while True:  # bounded by the deadline
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            if len(self.buf) > 1 << 20:
                raise ConnectionError("protocol line too long")
            self._fill(deadline)

    def _read(self, n, deadline):
        while len(self.buf) < n + 2:  # bounded by the deadline
            self._fill(deadline)
        data = bytes(self.buf[:n])
        del self.buf[:n + 2]
        return data

    def _next_msg(self, deadline):
        """Next MSG/HMSG as (subject, status or None, payload); answers PINGs on the way."""
        while True:  # bounded by the deadline
            line = self._line(deadline)
            if line == b"PING":
                self._send(b"PONG\r\n")
                continue
            if line in (b"PONG", b"+OK") or line.startswith(b"INFO "):
                continue
            if line.startswith(b"-ERR"):
                raise ConnectionError(line.decode(errors="replace"))
            parts = line.split()
            if parts and parts[0] == b"MSG":
                return parts[1].decode(), None, self._read(int(parts[-1]), deadline)
            if parts and parts[0] == b"HMSG":
                hlen, tlen = int(parts[-2]), int(parts[-1])
                body = self._read(tlen, deadline)
                first = body[:hlen].split(b"\r\n", 1)[0].split()
                status = first[1].decode() if len(first) > 1 else None
                return parts[1].decode(), status, body[hlen:]
            raise ConnectionError("unexpected line from NATS: %r" % line[:80])

    # requests ------------------------------------------------------------------------------
    def _request_once(self, subject, payload, headers, timeout):
        self.n += 1
        reply = "%s.%d" % (self.inbox, self.n)
        if headers:
            h = ("NATS/1.0\r\n" + "".join("%s: %s\r\n" % kv for kv in headers.items())
                 + "\r\n").encode()
            self._send(b"HPUB %s %s %d %d\r\n%s%s\r\n" % (
                subject.encode(), reply.encode(), len(h), len(h) + len(payload), h, payload))
        else:
            self._send(b"PUB %s %s %d\r\n%s\r\n" % (subject.encode(), reply.encode(),
                                                      len(payload), payload))
        deadline = time.monotonic() + timeout
        while True:  # bounded by the deadline; answers to earlier tries are skipped
            subj, status, data = self._next_msg(deadline)
            if subj != reply:
                continue
            if status == "503":
                raise NoResponders("no responders for %s" % subject)
            return data

    def request(self, subject, payload=b"", headers=None, timeout=10.0):
        """Sends one request and returns the reply's payload; on a timeout, no responders or
        a lost connection it tries again (another node after a lost connection) until
        `timeout` passes, then PublishError."""
        if isinstance(payload, str):
            payload = payload.encode()
        deadline = time.monotonic() + timeout
        last = None
        tries = 0
        while time.monotonic() < deadline:
            try:
                if self.sock is None:
                    self.connect(timeout=max(0.5, deadline - time.monotonic()), skip=self.url)
                    self.reconnects += 1
                tries += 1
                if tries > 1:
                    self.retries += 1
                return self._request_once(subject, payload, headers,
                                          min(self.ack_timeout, max(0.05, deadline
                                                                   - time.monotonic())))
            except (TimeoutError, NoResponders) as e:
                last = e
                time.sleep(0.05)
            except (OSError, ConnectionError) as e:
                last = e
                self.close()
                time.sleep(0.05)
        raise PublishError("%s: no reply within %.0fs (%s)" % (subject, timeout, last))

    def publish(self, subject, data, msg_id, timeout=20.0):
        """Publishes data (bytes, str or a JSON-able object) to the stream exactly once (the
        Nats-Msg-Id dedups retries) and returns its stream sequence."""
        if not isinstance(data, (bytes, bytearray, str)):
            data = json.dumps(data, separators=(",", ":"))
        deadline = time.monotonic() + timeout
        while True:  # bounded: request() raises PublishError at the deadline
            raw = self.request(subject, data, {"Nats-Msg-Id": msg_id},
                               timeout=max(0.1, deadline - time.monotonic()))
            ack = json.loads(raw)
            if "seq" in ack:
                return ack["seq"]
            # an error ack (e.g. no quorum while a leader is elected): try again
            if time.monotonic() >= deadline:
                raise PublishError("%s: %r" % (subject, ack))
            time.sleep(0.1)

    def stream_last_seq(self, stream="SIDECAST", timeout=10.0):
        """The stream's last sequence number (0 when empty)."""
        deadline = time.monotonic() + timeout
        while True:  # bounded: request() raises PublishError at the deadline
            info = json.loads(self.request("$JS.API.STREAM.INFO." + stream, b"",
                                           timeout=max(0.1, deadline - time.monotonic())))
            if "state" in info:
                return info["state"]["last_seq"]
            if time.monotonic() >= deadline:
                raise PublishError("stream info: %r" % info)
            time.sleep(0.1)
