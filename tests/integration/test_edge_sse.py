"""Server-Sent Events on the edge: GET /sse?topic=A&topic=B against the real edge, NATS
JetStream and Redis, with a raw-socket client (sseclient.py) and curl.

What is sent is known exactly (each event carries a counter), so the resume tests check every
event received for loss, duplicates and order per topic. Covered: events and inbox messages
arrive as SSE messages whose id holds every topic's position; refusals before the stream
starts (no token, bad token, forbidden topic, bad topic, too many topics, bad Last-Event-ID,
origin, method) with a status and a short body; CORS for the allowed origins and the
preflight; Last-Event-ID (header or last_event_id) resumes every topic, the inbox too, with
nothing lost and nothing twice, also when the stream is cut in the middle of a replay and for
a topic that had no event yet; the retry field and heartbeat comments; a reader that reads
nothing is closed by the outbound bound; the per-IP limit; the TLS listener; drain ends the
stream with a last close message.
"""
import json
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse

import harness
import natspub
import pki
from sseclient import SSE, Closed
from wsclient import WS

SERVICES = ("auth", "edge", "edge2", "edge3")
DIR = tempfile.mkdtemp(prefix="sidecast-edge-sse-")
CA = pki.CA(DIR)
CERT, KEY = CA.issue("edge", cn="localhost")
TLS_PORT = harness.free_port()
HEARTBEAT_MS = 400
PER_IP = 3  # edge2's connections per source address
# namespaces: gated.* asks this test's hook, last.* starts with the last event, nohist.* keeps
# no replay
TOPICS = os.path.join(DIR, "topics.json")
with open(TOPICS, "w") as _f:
    json.dump({"namespaces": [{"prefix": "gated", "subscribe": "hook", "hook_ttl_s": 0},
                              {"prefix": "last", "latest": True},
                              {"prefix": "nohist", "history": False}]}, _f)
ENV = {
    "edge": {
        "EDGE_TOPICS": TOPICS,
        "EDGE_TLS_LISTEN": "127.0.0.1:%d" % TLS_PORT,
        "EDGE_TLS_CERT": CERT,
        "EDGE_TLS_KEY": KEY,
        "EDGE_SSE_HEARTBEAT_MS": str(HEARTBEAT_MS),
        "EDGE_SSE_RETRY_MS": "1500",
        "EDGE_SSE_MAX_TOPICS": "4",
        "EDGE_REPLAY_MAX_EVENTS": "5000",
        "EDGE_OUTBOUND_LIMIT": "262144",
    },
    # edgeN takes "edge"'s ENV first: no TLS listener of its own (the port is edge's)
    "edge2": {"EDGE_MAX_CONNECTIONS_PER_IP": str(PER_IP), "EDGE_TLS_LISTEN": "",
              "EDGE_TLS_CERT": "", "EDGE_TLS_KEY": ""},
    # edge3: SSE turned off, and room for 2 connections in all
    "edge3": {"EDGE_SSE": "off", "EDGE_MAX_CONNECTIONS": "2", "EDGE_TLS_LISTEN": "",
              "EDGE_TLS_CERT": "", "EDGE_TLS_KEY": ""},
}
ORIGIN = "http://localhost:8080"  # in the harness's ALLOWED_ORIGINS


def _tok(st, user="alice", topics=("prices.*", "chat.*")):
    return harness.mint(st, sub=user, sub_topics=topics)


def _open(st, topics, user="alice", port=None, **kw):
    s = SSE.open(port or st.edge_port, topics, token=kw.pop("token", None) or _tok(st, user), **kw)
    assert s.status == 200, (s.status, s.body)
    return s


def _ready(s, topics):
    """welcome, then one subscribed per topic (the inbox's first): the stream is live."""
    assert s.json(type="welcome")["type"] == "welcome"
    want = {"user"} | set(topics)
    while want:
        m = s.json()
        assert m["type"] == "subscribed", m
        want.discard(m["topic"])


def _publish(nc, subject, first, count, size=0):
    for n in range(first, first + count):
        body = {"n": n}
        if size:
            body["pad"] = "x" * size
        nc.pub(subject, body)
    nc.flush()


def _events(s, want, timeout=20.0):
    """Reads until every (topic, n) of want arrived: [(topic, seq, n, id)] in arrival order."""
    got, left = [], set(want)
    deadline = time.monotonic() + timeout
    while left:
        try:
            m = s.json(max(0.05, deadline - time.monotonic()))
        except TimeoutError:
            raise AssertionError("timed out: still waiting for %s; last received %r"
                                 % (sorted(left)[:5], got[-3:]))
        if m["type"] != "event":
            continue
        got.append((m["topic"], m["seq"], m["data"]["n"], m["_id"]))
        left.discard((m["topic"], m["data"]["n"]))
    return got


def _check_exact(got, topic, first, last):
    ns = [n for t, _, n, _ in got if t == topic]
    lost = sorted(set(range(first, last + 1)) - set(ns))
    dups = len(ns) - len(set(ns))
    print("  %s: expected %d..%d, received %d, lost %d, duplicated %d"
          % (topic, first, last, len(ns), len(lost), dups))
    assert not lost and not dups, (topic, lost[:10], dups)
    assert ns == list(range(first, last + 1)), "%s out of order" % topic


def test_events_and_inbox_arrive_with_every_topics_position(st):
    s = _open(st, ["prices.sse1", "chat.sse1"])
    assert s.headers["content-type"] == "text/event-stream"
    assert s.headers["cache-control"] == "no-store"
    _ready(s, ["prices.sse1", "chat.sse1"])
    assert s.retry == 1500
    nc = natspub.Nats(st.nats_url)
    _publish(nc, "events.prices.sse1", 1, 3)
    _publish(nc, "events.chat.sse1", 1, 2)
    _publish(nc, "users.alice", 1, 2)
    got = _events(s, [("prices.sse1", n) for n in (1, 2, 3)] + [("chat.sse1", n) for n in (1, 2)]
                  + [("user", n) for n in (1, 2)])
    for topic, seq, n, eid in got:
        pos = [int(p) for p in eid.split(".")]
        assert len(pos) == 3, eid  # the inbox, then the request's topics in order
        assert pos[{"user": 0, "prices.sse1": 1, "chat.sse1": 2}[topic]] == seq, (topic, seq, eid)
    ids = [tuple(int(p) for p in g[3].split(".")) for g in got]
    for a, b in zip(ids, ids[1:]):  # positions never go back
        assert all(y >= x for x, y in zip(a, b)), (a, b)
    s.close()
    nc.close()


def test_refused_before_the_stream_starts(st):
    port = st.edge_port
    cases = [
        (dict(topics=["prices.a"]), 401, "token required"),
        (dict(topics=["prices.a"], token="not.a.jwt"), 401, "invalid token"),
        (dict(topics=["secret.a"], token=_tok(st)), 403, "not allowed by the token: secret.a"),
        (dict(topics=["prices.*"], token=_tok(st)), 400, "bad topic"),
        (dict(topics=["prices..a"], token=_tok(st)), 400, "bad topic"),
        (dict(topics=["prices.%d" % i for i in range(5)], token=_tok(st)), 400,
         "too many topics: at most 4"),
        (dict(topics=["prices.a"], token=_tok(st), last_event_id="1.2.3"), 400, "Last-Event-ID"),
        (dict(topics=["prices.a"], token=_tok(st), last_event_id="x.1"), 400, "Last-Event-ID"),
        (dict(topics=["prices.a"], token=_tok(st), origin="http://evil.example"), 403,
         "origin not allowed"),
        (dict(topics=["prices.a"], token=_tok(st), method="POST"), 405, "use GET"),
    ]
    for kw, status, text in cases:
        s = SSE.open(port, **kw)
        body = s.body.decode()
        print("  %r -> %d %s" % ({k: v for k, v in kw.items() if k != "token"}, s.status,
                                  body.strip()))
        assert s.status == status, (kw, s.status, body)
        assert text in body, (text, body)
        assert "\n" == body[-1] and len(body) < 200
        s.close()
    assert (st.edge_metric('sc_edge_sse_requests_total{result="forbidden"}') or 0) >= 2


def test_token_in_the_query_and_cors_for_allowed_origins(st):
    s = SSE.open(st.edge_port, ["prices.q1"], query_token=_tok(st), origin=ORIGIN)
    assert s.status == 200, s.body
    assert s.headers["access-control-allow-origin"] == ORIGIN
    _ready(s, ["prices.q1"])
    s.close()
    p = SSE.open(st.edge_port, method="OPTIONS", origin=ORIGIN,
                 headers={"Access-Control-Request-Method": "GET",
                          "Access-Control-Request-Headers": "authorization,last-event-id"})
    assert p.status == 204, p.status
    assert p.headers["access-control-allow-origin"] == ORIGIN
    assert "Last-Event-ID" in p.headers["access-control-allow-headers"]
    p.close()


def test_heartbeat_comments_while_quiet(st):
    s = _open(st, ["prices.quiet"])
    _ready(s, ["prices.quiet"])
    assert s.comment(HEARTBEAT_MS * 10 / 1000.0) == "ping"
    assert s.comment(HEARTBEAT_MS * 10 / 1000.0) == "ping"
    s.close()


def _resume(st, topics, last_id, query=False, user="alice"):
    if query:
        return _open(st, topics, user=user, query_last_id=last_id)
    return _open(st, topics, user=user, last_event_id=last_id)


def test_last_event_id_resumes_every_topic_and_the_inbox_exactly(st):
    nc = natspub.Nats(st.nats_url)
    topics = ["prices.r1", "chat.r1"]
    s = _open(st, topics, user="bob")
    _ready(s, topics)
    # interleaved traffic on both topics and the inbox; read part of it, then the cut
    for n in range(1, 31):
        nc.pub("events.prices.r1", {"n": n})
        if n % 2 == 0:
            nc.pub("events.chat.r1", {"n": n // 2})
        if n % 3 == 0:
            nc.pub("users.bob", {"n": n // 3})
    nc.flush()
    first = _events(s, [("prices.r1", 20)])
    last_id = s.last_id
    s.close()
    # while nobody listens: more of everything
    for n in range(31, 61):
        nc.pub("events.prices.r1", {"n": n})
        if n % 2 == 0:
            nc.pub("events.chat.r1", {"n": n // 2})
        if n % 3 == 0:
            nc.pub("users.bob", {"n": n // 3})
    nc.flush()
    print("  cut after %d events, id %s" % (len(first), last_id))
    r = _resume(st, topics, last_id, user="bob")
    rest = _events(r, [("prices.r1", 60), ("chat.r1", 30), ("user", 20)])
    got = first + rest
    _check_exact(got, "prices.r1", 1, 60)
    _check_exact(got, "chat.r1", 1, 30)
    _check_exact(got, "user", 1, 20)
    r.close()
    nc.close()


def test_cut_in_the_middle_of_a_replay_and_resumed_again(st):
    """The id of an event sent while another topic catches up still says exactly where each
    topic is: a stream cut mid-replay and resumed from its last id loses and repeats nothing."""
    nc = natspub.Nats(st.nats_url)
    topics = ["prices.r2", "chat.r2"]
    s = _open(st, topics)
    _ready(s, topics)
    _publish(nc, "events.prices.r2", 1, 5)
    _publish(nc, "events.chat.r2", 1, 5)
    got = _events(s, [("prices.r2", 5), ("chat.r2", 5)])
    last_id = s.last_id
    s.close()
    _publish(nc, "events.prices.r2", 6, 400, size=200)
    _publish(nc, "events.chat.r2", 6, 400, size=200)
    for round_ in range(3):  # each time: part of the replay, then cut
        r = _resume(st, topics, last_id, query=round_ == 1)
        part = []
        for _ in range(150):
            m = r.json()
            if m["type"] == "event":
                part.append((m["topic"], m["seq"], m["data"]["n"], m["_id"]))
        got += part
        last_id = r.last_id
        r.close()
        print("  round %d: %d events, id %s" % (round_, len(part), last_id))
    r = _resume(st, topics, last_id)
    got += _events(r, [("prices.r2", 405), ("chat.r2", 405)])
    _check_exact(got, "prices.r2", 1, 405)
    _check_exact(got, "chat.r2", 1, 405)
    r.close()
    nc.close()


def test_a_quiet_topic_resumes_from_its_streams_position(st):
    """A topic with no event yet keeps where it started (0: its subject had none, so all
    the stream will hold of it is new); once a live event of it followed on from there, its
    position keeps up with the newest seq of its stream that came live. Either way what came
    for it during a cut is replayed, not lost."""
    nc = natspub.Nats(st.nats_url)
    topics = ["prices.busy3", "prices.quiet3"]
    s = _open(st, topics)
    _ready(s, topics)
    _publish(nc, "events.prices.busy3", 1, 3)
    got = _events(s, [("prices.busy3", 3)])
    pos = [int(p) for p in s.last_id.split(".")]
    assert pos[1] == got[-1][1] and pos[2] == 0, s.last_id  # quiet3: where it started
    _publish(nc, "events.prices.quiet3", 1, 1)
    _publish(nc, "events.prices.busy3", 4, 3)
    got = _events(s, [("prices.quiet3", 1), ("prices.busy3", 6)])
    last_id = s.last_id
    pos = [int(p) for p in last_id.split(".")]
    assert pos[2] == pos[1] == got[-1][1], (last_id, got)  # quiet3 keeps up with busy3
    s.close()
    _publish(nc, "events.prices.quiet3", 2, 2)
    r = _resume(st, topics, last_id)
    got = _events(r, [("prices.quiet3", 2), ("prices.quiet3", 3)])
    _check_exact(got, "prices.quiet3", 2, 3)
    r.close()
    # a stream cut before a topic's first event: that topic resumes from where it started
    s = _open(st, ["prices.busy4", "prices.quiet4"])
    _ready(s, ["prices.busy4", "prices.quiet4"])
    _publish(nc, "events.prices.busy4", 1, 2)
    _events(s, [("prices.busy4", 2)])
    last_id = s.last_id
    assert last_id.endswith(".0"), last_id
    s.close()
    _publish(nc, "events.prices.quiet4", 1, 2)
    r = _resume(st, ["prices.busy4", "prices.quiet4"], last_id)
    _check_exact(_events(r, [("prices.quiet4", 2)]), "prices.quiet4", 1, 2)
    r.close()
    nc.close()


def test_curl_reads_the_stream(st):
    nc = natspub.Nats(st.nats_url)
    url = "http://127.0.0.1:%d/sse?topic=prices.curl" % st.edge_port
    p = subprocess.Popen(["curl", "-sN", "--max-time", "20", "-H",
                          "Authorization: Bearer " + _tok(st), url], stdout=subprocess.PIPE)
    try:
        lines = []
        while not any('"subscribed","topic":"prices.curl"' in x for x in lines):
            lines.append(p.stdout.readline().decode())
        nc.pub("events.prices.curl", {"n": 1})
        nc.flush()
        while not any('"type":"event"' in x for x in lines):
            lines.append(p.stdout.readline().decode())
    finally:
        p.kill()
        p.wait()
    ev = [x for x in lines if '"type":"event"' in x][0]
    i = lines.index(ev)
    assert lines[i - 1].startswith("id: "), lines[i - 1:i + 1]
    assert json.loads(ev[len("data: "):])["data"] == {"n": 1}
    nc.close()


def test_tls_listener_streams_too(st):
    ctx = ssl.create_default_context(cafile=CA.pem)
    s = SSE.open(TLS_PORT, ["prices.tls1"], token=_tok(st), tls=ctx, host="127.0.0.1")
    assert s.status == 200, s.body
    _ready(s, ["prices.tls1"])
    nc = natspub.Nats(st.nats_url)
    _publish(nc, "events.prices.tls1", 1, 3)
    _check_exact(_events(s, [("prices.tls1", 3)]), "prices.tls1", 1, 3)
    s.close()
    nc.close()


def test_a_reader_that_reads_nothing_is_closed_by_the_outbound_bound(st):
    before = st.edge_metric("sc_edge_slow_closes_total") or 0
    s = _open(st, ["prices.slow"])
    _ready(s, ["prices.slow"])
    nc = natspub.Nats(st.nats_url)
    blob = "x" * 16000
    sent = 0
    while (st.edge_metric("sc_edge_slow_closes_total") or 0) == before and sent < 3000:
        for _ in range(10):
            nc.pub("events.prices.slow", {"n": sent, "blob": blob})
            sent += 1
        nc.flush()
    assert (st.edge_metric("sc_edge_slow_closes_total") or 0) == before + 1, "never closed"
    print("  closed after %d events of 16 kB" % sent)
    last = None
    try:  # what the kernel held, then the end (a slow close has no last message)
        for _ in range(100000):
            last = s.next(5)
    except (Closed, ConnectionResetError):
        pass
    assert last is None or json.loads(last["data"])["type"] == "event", last
    s.close()
    nc.close()


def test_per_ip_limit_holds_for_streams(st):
    port = st.edge_port_of("edge2")
    opened = [_open(st, ["prices.ip"], port=port) for _ in range(PER_IP)]
    over = SSE.open(port, ["prices.ip"], token=_tok(st))
    assert over.status == 429, (over.status, over.body)
    over.close()
    for s in opened:
        s.close()


class Hook(threading.Thread):
    """hooks.subscribe.gated.> answered by this test on a plain NATS socket (a real responder,
    not a mock of the edge): gated.open is allowed, anything else refused with a reason."""

    def __init__(self, st):
        super().__init__(daemon=True)
        u = urllib.parse.urlparse(st.nats_url.split(",")[0])
        self.sock = socket.create_connection((u.hostname, u.port), timeout=5)
        self.f = self.sock.makefile("rb")
        self.f.readline()  # INFO
        self.sock.sendall(b'CONNECT {"verbose":false,"headers":true}\r\nSUB hooks.subscribe.gated.> 1'
                          b'\r\nPING\r\n')
        while self.f.readline().strip() != b"PONG":
            pass
        self.sock.settimeout(0.5)
        self.asked, self.stop_ = [], False
        self.start()

    def run(self):
        while not self.stop_:
            try:
                line = self.f.readline().decode().split()
            except (socket.timeout, OSError, ValueError):
                continue
            if not line or line[0] not in ("MSG", "HMSG"):
                if line and line[0] == "PING":
                    self.sock.sendall(b"PONG\r\n")
                continue
            body = self.f.read(int(line[-1]) + 2)[:-2]
            if line[0] == "HMSG":
                body = body[int(line[-2]):]
            topic = json.loads(body)["topic"]
            self.asked.append(topic)
            answer = {"allow": True} if topic == "gated.open" else \
                {"allow": False, "reason": "not on your plan"}
            data = json.dumps(answer).encode()
            reply = line[3]
            self.sock.sendall(b"PUB %s %d\r\n%s\r\n" % (reply.encode(), len(data), data))

    def stop(self):
        self.stop_ = True
        self.join(5)
        self.sock.close()


def test_a_hook_decides_in_the_stream_a_refusal_is_an_error_message(st):
    hook = Hook(st)
    try:
        s = _open(st, ["gated.open", "gated.closed", "prices.h1"],
                  token=_tok(st, topics=("prices.*", "gated.*")))
        seen = []
        while not ({"subscribed gated.open", "subscribed prices.h1"} <= set(seen)
                   and any(x.startswith("error") for x in seen)):
            m = s.json()
            seen.append("%s %s" % (m["type"], m.get("topic") or m.get("code")))
            if m["type"] == "error":
                assert m["code"] == "forbidden" and m["message"] == "not on your plan", m
        assert "subscribed gated.closed" not in seen, seen
        assert sorted(hook.asked) == ["gated.closed", "gated.open"], hook.asked
        nc = natspub.Nats(st.nats_url)
        _publish(nc, "events.gated.open", 1, 2)
        _publish(nc, "events.gated.closed", 1, 2)
        _publish(nc, "events.prices.h1", 1, 1)
        got = _events(s, [("gated.open", 2), ("prices.h1", 1)])
        assert not [g for g in got if g[0] == "gated.closed"], got
        _check_exact(got, "gated.open", 1, 2)
        s.close()
        nc.close()
    finally:
        hook.stop()


def test_latest_and_history_off_namespaces(st):
    nc = natspub.Nats(st.nats_url)
    tok = _tok(st, topics=("last.*", "nohist.*"))
    _publish(nc, "events.last.l1", 1, 3)
    _publish(nc, "events.nohist.n1", 1, 2)
    s = _open(st, ["last.l1", "nohist.n1"], token=tok)
    first = _events(s, [("last.l1", 3)])
    assert [g[2] for g in first] == [3], first  # latest: the last event first, then live
    _publish(nc, "events.nohist.n1", 3, 1)
    got = _events(s, [("nohist.n1", 3)])
    assert [g[2] for g in got if g[0] == "nohist.n1"] == [3], got  # no replay: live only
    last_id = s.last_id
    s.close()
    _publish(nc, "events.last.l1", 4, 2)
    _publish(nc, "events.nohist.n1", 4, 2)  # while away: nohist keeps nothing to resume
    r = _open(st, ["last.l1", "nohist.n1"], token=tok, last_event_id=last_id)
    got = _events(r, [("last.l1", 5)])
    _check_exact(got, "last.l1", 4, 5)
    _publish(nc, "events.nohist.n1", 6, 1)
    got = _events(r, [("nohist.n1", 6)])
    assert [g[2] for g in got if g[0] == "nohist.n1"] == [6], got
    r.close()
    nc.close()


def test_token_expiry_ends_the_stream_with_4001(st):
    s = _open(st, ["prices.exp"], token=harness.mint(st, sub="alice", exp_in=3,
                                                     sub_topics=("prices.*",)))
    assert s.json(10, type="token_expiring")["type"] == "token_expiring"
    m = s.json(10, type="close")
    assert m["code"] == 4001, m
    try:
        s.next(5)
        raise AssertionError("the stream went on after its close message")
    except Closed:
        pass
    s.close()
    again = SSE.open(st.edge_port, ["prices.exp"], token=harness.mint(
        st, sub="alice", exp_in=-60, sub_topics=("prices.*",)))
    assert again.status == 401, again.status  # what a browser's reconnect then gets
    again.close()


def test_server_api_disconnect_and_revocation_end_streams(st):
    s = _open(st, ["prices.d1"], user="carol")
    _ready(s, ["prices.d1"])
    lines = st.busctl("req", "api.disconnect", json.dumps({"user": "carol",
                                                            "reason": "rebalancing"}), 5000)
    assert json.loads(lines[-1])["closed"] == 1, lines
    m = s.json(10, type="close")
    assert (m["code"], m["reason"]) == (4010, "rebalancing"), m
    s.close()
    s = _open(st, ["prices.d1"], user="dave")
    _ready(s, ["prices.d1"])
    st.busctl("pub", "auth.revoked", json.dumps({"sub": "dave"}))
    m = s.json(10, type="close")
    assert (m["code"], m["reason"]) == (4003, "revoked"), m
    s.close()


def test_sse_turned_off_and_the_connection_cap(st):
    port = st.edge_port_of("edge3")
    off = SSE.open(port, ["prices.a"], token=_tok(st))
    assert off.status == 404, (off.status, off.body)  # EDGE_SSE=off: no such path
    off.close()
    # two WebSocket clients, welcomed: the edge has them both (a bare TCP connection may
    # still wait in its listener's queue while a later one is taken)
    held = [WS.connect(st.edge_url_of("edge3"), token=_tok(st)) for _ in range(2)]
    try:
        for h in held:
            h.recv_json(10, type="welcome")
        full = SSE.open(port, ["prices.a"], token=_tok(st))
        assert full.status == 503, (full.status, full.body)
        full.close()
    finally:
        for h in held:
            h.close()


def test_drain_ends_the_stream_with_a_close_message(st):
    s = _open(st, ["prices.drain"])
    _ready(s, ["prices.drain"])
    st.stop_service("edge")
    m = s.json(10, type="close")
    assert m["code"] == 1001, m
    try:
        s.next(5)
        raise AssertionError("the stream went on after its close message")
    except Closed:
        pass
    s.close()
    st.start_service("edge")
