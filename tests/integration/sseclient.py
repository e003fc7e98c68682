"""A minimal Server-Sent Events client for tests: one raw socket (plain or TLS), GET /sse, then
the stream parsed as the HTML standard's EventSource parses it (fields id, data, event, retry;
comments; messages end at a blank line). Nothing is hidden: the status line, headers, each
message's id and data, and comments are all visible to the test.
"""
import json
import socket
import time
import urllib.parse


class Closed(Exception):
    """The server ended the stream (EOF)."""


class SSE:
    def __init__(self, sock, status, headers, body, rest):
        self.sock = sock
        self.status = status
        self.headers = headers
        self.body = body  # an error answer's body (status != 200)
        self.buf = rest
        self.last_id = None  # as a browser keeps it: the last id: field seen
        self.retry = None
        self.comments = []

    @classmethod
    def open(cls, port, topics=(), token=None, query_token=None, last_event_id=None,
             query_last_id=None, origin=None, method="GET", host="127.0.0.1", tls=None,
             extra_query="", headers=None, timeout=10.0):
        """Sends the request; returns an SSE whose status is the answer's (200: streaming)."""
        q = [("topic", t) for t in topics]
        if query_token:
            q.append(("access_token", query_token))
        if query_last_id:
            q.append(("last_event_id", query_last_id))
        target = "/sse" + ("?" + urllib.parse.urlencode(q) if q else "")
        if extra_query:
            target += ("&" if q else "?") + extra_query
        lines = ["%s %s HTTP/1.1" % (method, target), "Host: %s:%d" % (host, port),
                 "Accept: text/event-stream", "Cache-Control: no-cache"]
        if token:
            lines.append("Authorization: Bearer %s" % token)
        if last_event_id is not None:
            lines.append("Last-Event-ID: %s" % last_event_id)
        if origin:
            lines.append("Origin: %s" % origin)
        for k, v in (headers or {}).items():
            lines.append("%s: %s" % (k, v))
        sock = socket.create_connection((host, port), timeout=timeout)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname="localhost")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in data:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                raise Closed("closed before the answer's head: %r" % data[:200])
            data += chunk
        head, rest = data.split(b"\r\n\r\n", 1)
        hl = head.decode("latin-1").split("\r\n")
        status = int(hl[0].split()[1])
        hdrs = {}
        for line in hl[1:]:
            k, v = line.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
        body = b""
        if status != 200:
            n = int(hdrs.get("content-length", "0"))
            while len(rest) < n:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
            body, rest = rest[:n], rest[n:]
        return cls(sock, status, hdrs, body, rest)

    def _fill(self, deadline):
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no SSE message in time")
        if not chunk:
            raise Closed("stream ended")
        self.buf += chunk

    def next(self, timeout=10.0, comments=False):
        """The next message: {"id": str or None, "data": str, "event": str or None}. Comments
        and retry fields are recorded on the way (self.comments, self.retry)."""
        deadline = time.monotonic() + timeout
        msg = {"id": None, "data": None, "event": None}
        while True:
            while b"\n" not in self.buf:
                self._fill(deadline)
            line, self.buf = self.buf.split(b"\n", 1)
            line = line.rstrip(b"\r").decode()
            if line == "":
                if msg["data"] is not None:
                    return msg
                msg = {"id": None, "data": None, "event": None}
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                if comments:
                    return {"comment": line[1:].strip()}
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "id":
                msg["id"] = value
                self.last_id = value
            elif field == "data":
                msg["data"] = value if msg["data"] is None else msg["data"] + "\n" + value
            elif field == "event":
                msg["event"] = value
            elif field == "retry":
                self.retry = int(value)

    def json(self, timeout=10.0, type=None):
        """The next message's data as JSON (of that type, skipping others when type is set)."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.next(max(0.01, deadline - time.monotonic()))
            j = json.loads(m["data"])
            j["_id"] = m["id"]
            if type is None or j.get("type") == type:
                return j

    def comment(self, timeout=10.0):
        """Waits for the next comment line (a heartbeat), messages skipped: returns its text."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.next(max(0.01, deadline - time.monotonic()), comments=True)
            if "comment" in m:
                return m["comment"]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
