"""A minimal NATS client for tests: publish (with headers), request, purge a subject.

Speaks the text protocol over one socket, so a test can publish thousands of events without
starting a process per message. flush() is a PING/PONG round trip: everything published
before it has reached the server (and, for events.> and users.>, the JetStream stream).
"""
import json
import socket
import time
import urllib.parse


class Nats:
    def __init__(self, url, timeout=5.0):
        u = urllib.parse.urlparse(url.split(",")[0])
        self.sock = socket.create_connection((u.hostname, u.port or 4222), timeout=timeout)
        self.f = self.sock.makefile("rb")
        self._line()  # INFO
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,'
                          b'"no_responders":true}\r\n')
        self.sid = 0
        self.flush()

    def _line(self):
        line = self.f.readline()
        if not line:
            raise ConnectionError("nats closed the connection")
        return line.decode().rstrip("\r\n")

    def pub(self, subject, data, headers=None):
        if not isinstance(data, (bytes, bytearray)):
            data = (data if isinstance(data, str) else json.dumps(data)).encode()
        if headers:
            h = "NATS/1.0\r\n" + "".join("%s: %s\r\n" % kv for kv in headers.items()) + "\r\n"
            hb = h.encode()
            self.sock.sendall(b"HPUB %s %d %d\r\n%s%s\r\n"
                              % (subject.encode(), len(hb), len(hb) + len(data), hb, data))
        else:
            self.sock.sendall(b"PUB %s %d\r\n%s\r\n" % (subject.encode(), len(data), data))

    def _read_msg(self, deadline):
        """Next MSG/HMSG as (subject, headers dict, data); answers PINGs on the way."""
        while time.monotonic() < deadline:
            line = self._line()
            if line in ("PONG", "+OK") or line.startswith("INFO"):
                continue
            if line == "PING":
                self.sock.sendall(b"PONG\r\n")
                continue
            if line.startswith("-ERR"):
                raise RuntimeError(line)
            parts = line.split()
            if parts[0] == "MSG":
                n = int(parts[-1])
                return parts[1], {}, self.f.read(n + 2)[:-2]
            if parts[0] == "HMSG":
                hn, tn = int(parts[-2]), int(parts[-1])
                body = self.f.read(tn + 2)[:-2]
                hdrs = {}
                for hl in body[:hn].decode().split("\r\n")[1:]:
                    if ": " in hl:
                        k, v = hl.split(": ", 1)
                        hdrs[k] = v
                status = body[:hn].decode().split("\r\n")[0].split(" ")
                if len(status) > 1:
                    hdrs["Status"] = status[1]
                return parts[1], hdrs, body[hn:]
        raise TimeoutError("no message from nats")

    def request(self, subject, data=b"", timeout=5.0):
        self.sid += 1
        inbox = "_TINBOX.%d.%d" % (id(self), self.sid)
        if not isinstance(data, (bytes, bytearray)):
            data = (data if isinstance(data, str) else json.dumps(data)).encode()
        self.sock.sendall(b"SUB %s %d\r\nUNSUB %d 1\r\nPUB %s %s %d\r\n%s\r\n"
                          % (inbox.encode(), self.sid, self.sid, subject.encode(),
                             inbox.encode(), len(data), data))
        return self._read_msg(time.monotonic() + timeout)

    def purge(self, stream, subject):
        """Drops every retained message of subject from stream (as if they had aged out)."""
        _, _, body = self.request("$JS.API.STREAM.PURGE." + stream, {"filter": subject})
        r = json.loads(body)
        if not r.get("success"):
            raise RuntimeError("purge failed: %r" % r)
        return r

    def last_seq(self, stream, subject):
        """The stream sequence of subject's newest retained message (0: none)."""
        _, hdrs, _ = self.request("$JS.API.DIRECT.GET." + stream, {"last_by_subj": subject})
        return int(hdrs.get("Nats-Sequence", 0))

    def flush(self, timeout=5.0):
        self.sock.sendall(b"PING\r\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self._line()
            if line == "PONG":
                return
            if line == "PING":
                self.sock.sendall(b"PONG\r\n")
        raise TimeoutError("no PONG from nats")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
