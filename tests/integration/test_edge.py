"""The edge against real NATS (JetStream) and auth, driven by a raw-socket WebSocket client.

Covers the sidecast.v1 protocol (DESIGN.md): token in header, query or first message;
welcome; subscribe / unsubscribe checked against sub_topics; events with increasing seq;
the user inbox; publish to client.<topic> with ack; refresh; revocation; the close codes;
fragmented messages with pings between; a 1000-connection fan-out; a slow client closed
4008 while others keep receiving; /healthz, /readyz, /metrics; SIGTERM drain with 1001.
"""
import base64
import json
import os
import signal
import socket
import struct
import time

import harness
import natspub
import wsclient
from wsclient import WS, HandshakeError

SERVICES = ("auth", "edge")
ENV = {"edge": {"EDGE_AUTH_TIMEOUT_MS": "800", "EDGE_MAX_MESSAGE": "8192",
                "EDGE_RATE_LIMIT": "20", "EDGE_RATE_BURST": "40", "EDGE_MAX_ERRORS": "5",
                "EDGE_OUTBOUND_LIMIT": "262144", "EDGE_MAX_SUBSCRIPTIONS": "20",
                "EDGE_CLOSE_TIMEOUT_MS": "20000"}}


def _token(st, user="alice"):
    return st.token(user)["access_token"]


def _exp(token):
    """The exp claim of a JWT (not verified: the edge did that)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"]


def _connect(st, user="alice", **kw):
    ws = WS.connect(st.edge_url, token=_token(st, user), **kw)
    w = ws.recv_json(5, type="welcome")
    assert w["user"] == user and w["edge"] == "edge-test", w
    return ws


def _publish(st, subject, obj):
    st.busctl("pub", subject, json.dumps(obj))


def test_health_endpoints_on_edge_port(st):
    base = "http://127.0.0.1:%d" % st.edge_port
    assert harness.http("GET", base + "/healthz").status == 200
    r = harness.http("GET", base + "/readyz")
    assert r.status == 200 and r.json()["status"] == "ready", r
    m = harness.http("GET", base + "/metrics")
    assert m.status == 200 and b"sc_edge_connections" in m.body


def test_handshake_refusals(st):
    for path, headers, status in [
        ("/nope", None, 404),
        ("/ws", {"Sec-WebSocket-Version": "8"}, 426),
        ("/ws", {"Sec-WebSocket-Key": "short"}, 400),
        ("/ws", {"Origin": "http://evil.example"}, 403),
    ]:
        url = "ws://127.0.0.1:%d%s" % (st.edge_port, path)
        try:
            WS.connect(url, headers=headers)
        except HandshakeError as e:
            assert e.status == status, (path, headers, e.status)
            continue
        raise AssertionError("upgrade accepted: %s %s" % (path, headers))
    # the gateway's own origin is allowed
    ws = WS.connect(st.edge_url, token=_token(st), origin="http://localhost:8080")
    ws.recv_json(5, type="welcome")
    ws.close()


def test_token_in_header_query_and_first_message(st):
    tok = _token(st)
    ws = WS.connect(st.edge_url, token=tok)
    assert ws.subprotocol == "sidecast.v1"
    w = ws.recv_json(5, type="welcome")
    assert w["expires_at"] == _exp(tok) and w["conn_id"].startswith("edge-test-"), w
    ws.close()
    ws = WS.connect(wsclient.ws_url(st.edge_url, access_token=tok))
    assert ws.recv_json(5, type="welcome")["user"] == "alice"
    ws.close()
    ws = WS.connect(st.edge_url)
    ws.send_json({"type": "auth", "token": tok})
    assert ws.recv_json(5, type="welcome")["user"] == "alice"
    ws.close()


def test_missing_invalid_and_late_tokens_close_4001(st):
    ws = WS.connect(st.edge_url)  # no token: the first message must be auth, in time
    assert ws.expect_close(5)[0] == 4001
    ws = WS.connect(st.edge_url, token="not.a.token")
    assert ws.expect_close(5)[0] == 4001
    tok = _token(st)
    forged = tok[:-4] + ("AAAA" if not tok.endswith("AAAA") else "BBBB")
    ws = WS.connect(st.edge_url)
    ws.send_json({"type": "auth", "token": forged})
    assert ws.expect_close(5)[0] == 4001
    ws = WS.connect(st.edge_url)
    ws.send_json({"type": "subscribe", "topic": "prices.BTC"})  # before auth
    assert ws.expect_close(5)[0] == 4001


def test_events_in_order_with_increasing_seq(st):
    ws = _connect(st)
    ws.subscribe("prices.ETH")
    for i in range(20):
        _publish(st, "events.prices.ETH", {"i": i})
    got = [ws.recv_json(5, type="event") for _ in range(20)]
    assert [e["data"]["i"] for e in got] == list(range(20)), got
    seqs = [e["seq"] for e in got]
    assert all(b > a for a, b in zip(seqs, seqs[1:])), seqs
    assert all(e["topic"] == "prices.ETH" for e in got)
    # unsubscribed: nothing more arrives
    ws.send_json({"type": "unsubscribe", "topic": "prices.ETH"})
    assert ws.recv_json(5, type="unsubscribed")["topic"] == "prices.ETH"
    _publish(st, "events.prices.ETH", {"i": 99})
    ws.send_json({"type": "ping", "id": "after"})
    r = ws.recv_json(5)
    assert r == {"type": "pong", "id": "after"}, r
    assert ws.close()[0] == 1000  # the edge echoes a normal close


def test_non_json_bus_data_arrives_as_a_string(st):
    ws = _connect(st)
    ws.subscribe("prices.SOL")
    st.busctl("pub", "events.prices.SOL", "plain text \x01")
    e = ws.recv_json(5, type="event")
    assert e["data"] == "plain text \x01", e
    ws.close()


def test_user_inbox_reaches_every_device(st):
    a1, a2, b = _connect(st), _connect(st), _connect(st, "bob")
    _publish(st, "users.alice", {"order_id": "o-1"})
    for ws in (a1, a2):
        e = ws.recv_json(5, type="event")
        assert e["topic"] == "user" and e["data"] == {"order_id": "o-1"}, e
    b.send_json({"type": "ping"})
    assert b.recv_json(5)["type"] == "pong"  # bob got nothing of alice's
    for ws in (a1, a2, b):
        ws.close()


def test_subscribe_checked_against_token(st):
    bob = _connect(st, "bob")  # prices.* only
    bob.send_json({"type": "subscribe", "topic": "chat.lobby", "id": 3})
    r = bob.recv_json(5)
    assert r["type"] == "error" and r["code"] == "forbidden" and r["id"] == 3, r
    bob.subscribe("prices.BTC")
    bob.send_json({"type": "subscribe", "topic": "bad..topic"})
    r = bob.recv_json(5)
    assert r["type"] == "error" and r["code"] == "bad_topic", r
    bob.close()


def test_publish_goes_to_client_subject_with_identity(st):
    sub = st.busctl_bg("sub", "client.>", 10, 1)
    ws = _connect(st)
    ws.send_json({"type": "publish", "topic": "chat.lobby", "data": {"text": "hi"}, "id": "m1"})
    assert ws.recv_json(5) == {"type": "ack", "id": "m1", "duplicate": False}
    line = sub.stdout.readline().decode().strip()
    sub.wait(10)
    subject, data = line.split(" ", 1)
    assert subject == "client.chat.lobby" and json.loads(data) == {"text": "hi"}, line
    ws.send_json({"type": "publish", "topic": "prices.BTC", "data": 1, "id": "m2"})
    r = ws.recv_json(5)
    assert r["type"] == "error" and r["code"] == "forbidden" and r["id"] == "m2", r
    ws.close()


def test_refresh_same_user_and_other_user(st):
    ws = _connect(st)
    new = _token(st)
    ws.send_json({"type": "refresh", "token": new})
    r = ws.recv_json(5, type="refreshed")
    assert r["expires_at"] == _exp(new), r  # the new token's exp
    ws.send_json({"type": "refresh", "token": _token(st, "bob")})
    assert ws.expect_close(5)[0] == 4003


def test_revocation_closes_the_users_sessions(st):
    a, b = _connect(st), _connect(st, "bob")
    st.busctl("pub", "auth.revoked", json.dumps({"sub": "alice"}))
    assert a.expect_close(5)[0] == 4003
    b.send_json({"type": "ping"})
    assert b.recv_json(5)["type"] == "pong"
    b.close()


def test_protocol_violations_close_with_their_codes(st):
    ws = _connect(st)
    ws.send_frame(wsclient.OP_TEXT, b'{"type":"ping"}', mask=False)  # unmasked
    assert ws.expect_close(5)[0] == 1002
    ws = _connect(st)
    ws.send_frame(wsclient.OP_TEXT, b'{"type":"ping","id":"\xff"}')  # invalid UTF-8
    assert ws.expect_close(5)[0] == 1007
    ws = _connect(st)
    ws.send_frame(wsclient.OP_TEXT, b"x" * 9000)  # over EDGE_MAX_MESSAGE
    assert ws.expect_close(5)[0] == 1009
    ws = _connect(st)
    ws.send_frame(wsclient.OP_TEXT, b"{}", rsv=wsclient.RSV1)
    assert ws.expect_close(5)[0] == 1002
    ws = _connect(st)
    ws.send_frame(wsclient.OP_PING, b"p" * 126)  # control frame over 125 bytes
    assert ws.expect_close(5)[0] == 1002


def test_bad_messages_get_errors_then_1008(st):
    ws = _connect(st)
    ws.send_text("{not json")
    r = ws.recv_json(5)
    assert r["type"] == "error" and r["code"] == "bad_json", r
    ws.send_json({"type": "dance"})
    assert ws.recv_json(5)["code"] == "unknown_type"
    for _ in range(6):
        ws.send_text("[]")
    assert ws.expect_close(5)[0] == 1008


def test_rate_limit_closes_4029(st):
    ws = _connect(st)
    for i in range(200):
        try:
            ws.send_json({"type": "ping", "id": i})
        except wsclient.ConnectionClosed:
            break
    assert ws.expect_close(5)[0] == 4029


def test_fragmented_message_with_pings_between(st):
    ws = _connect(st)
    ws.auto_pong = True
    msg = json.dumps({"type": "subscribe", "topic": "prices.BTC"}).encode()
    ws.send_frame(wsclient.OP_TEXT, msg[:5], fin=False)
    ws.send_frame(wsclient.OP_PING, b"one")
    ws.send_frame(wsclient.OP_CONT, msg[5:20], fin=False)
    ws.send_frame(wsclient.OP_PING, b"two")
    ws.send_frame(wsclient.OP_CONT, msg[20:], fin=True)
    pongs = []
    for _ in range(3):
        f = ws.recv_frame(5)
        if f.opcode == wsclient.OP_PONG:
            pongs.append(f.payload)
        else:
            assert json.loads(f.payload) == {"type": "subscribed", "topic": "prices.BTC"}, f
    assert pongs == [b"one", b"two"], pongs
    ws.close()


def test_fanout_1000_connections_exactly_once_in_order(st):
    tok = _token(st, "bob")
    clients = wsclient.open_many(1000, st.edge_url, token=tok, concurrency=64)
    try:
        welcomes = wsclient.drain_all(clients, 1, 20, type="welcome")
        assert all(len(w) == 1 for w in welcomes)
        # presence keeps up with the burst: all 1000 registered (in batches), not degraded
        harness.wait_for(lambda: _presence_count(st, "bob") == 1000, timeout=15,
                         what="1000 connections of bob in presence (%s)"
                         % _presence_count(st, "bob"))
        r = harness.http("GET", "http://127.0.0.1:%d/readyz" % st.edge_port)
        assert "presence=ok" in r.body.decode(), r.body
        for c in clients:
            c.send_json({"type": "subscribe", "topic": "prices.BTC"})
        subs = wsclient.drain_all(clients, 1, 30, type="subscribed")
        assert all(len(s) == 1 for s in subs), sum(len(s) for s in subs)
        n = 20
        for i in range(n):
            _publish(st, "events.prices.BTC", {"i": i})
        got = wsclient.drain_all(clients, n, 60, type="event")
        bad = [i for i, g in enumerate(got) if [e["data"]["i"] for e in g] != list(range(n))]
        assert not bad, "clients missing or reordering events: %d (first: %s)" % (
            len(bad), got[bad[0]] if bad else None)
    finally:
        wsclient.close_all(clients, timeout=30)
    harness.wait_for(lambda: _presence_count(st, "bob") == 0, timeout=15,
                     what="bob's connections gone from presence (%s)"
                     % _presence_count(st, "bob"))


def _presence_count(st, user):
    lines = st.busctl("req", "presence.get", json.dumps({"params": {"user": user}}), 2000)
    return json.loads(lines[-1]).get("count")


def _slow_closes(st):
    return st.edge_metric("sc_edge_slow_closes_total") or 0


def test_slow_client_closed_4008_others_keep_receiving(st):
    slow = _connect(st)
    fast = _connect(st)
    slow.subscribe("prices.BTC")
    fast.subscribe("prices.BTC")
    before = _slow_closes(st)
    blob = "x" * 16000
    sent = 0
    nc = natspub.Nats(st.nats_url)
    # 16 kB events until the slow client (which reads nothing) passes the 256 KiB bound,
    # on top of what the kernel buffers hold; the fast one reads every event meanwhile.
    while _slow_closes(st) == before and sent < 2000:
        for _ in range(5):  # 80 kB at a time: the fast reader keeps up
            nc.pub("events.prices.BTC", {"i": sent, "blob": blob})
            sent += 1
        nc.flush()
        for i in range(sent - 5, sent):
            assert fast.recv_json(10, type="event")["data"]["i"] == i
    assert _slow_closes(st) == before + 1, "the slow client was never closed"
    code = None
    for _ in range(5000):  # what the kernel held, then the close frame
        try:
            slow.recv_message(5)
        except wsclient.ConnectionClosed as e:
            code = e.code
            break
    assert code == 4008, code
    nc.pub("events.prices.BTC", {"i": sent, "blob": "after"})
    nc.flush()
    nc.close()
    assert fast.recv_json(10, type="event")["data"]["blob"] == "after"
    fast.close()


def test_the_log_holds_no_token(st):
    """Tokens reach the edge in the header, the query, the first message and refresh, valid
    or forged: none of them, nor a signature, may show up in its log (debug level here)."""
    good, other = _token(st), _token(st, "bob")
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    ws = WS.connect(st.edge_url, token=good)
    ws.recv_json(5, type="welcome")
    ws.send_json({"type": "refresh", "token": other})  # another user's: refused
    ws.send_json({"type": "refresh", "token": forged})
    ws.close()
    ws = WS.connect(wsclient.ws_url(st.edge_url, access_token=forged))
    ws.expect_close(5)
    ws = WS.connect(st.edge_url)
    ws.send_json({"type": "auth", "token": forged})
    ws.expect_close(5)
    ws = WS.connect(st.edge_url)
    ws.send_json({"type": "auth", "token": other})
    last = ws.recv_json(5, type="welcome")["conn_id"].rsplit("-", 1)[1]
    ws.close()

    def log_to_the_last():
        with open(st.procs["edge"].log_path, "rb") as f:
            text = f.read().decode(errors="replace")
        return 'msg="session authenticated" conn=%s user=bob' % last in text and text
    # the log is the debug one, and written up to the last connection's line
    log = harness.wait_for(log_to_the_last, what="the last connection's line in the log")
    for tok in (good, other, forged):
        assert tok not in log, "a token is in the edge's log"
        assert tok.split(".")[2] not in log, "a token signature is in the edge's log"


def test_sigterm_drains_with_1001(st):
    clients = [_connect(st) for _ in range(10)]
    st.procs["edge"].p.send_signal(signal.SIGTERM)
    codes = [c.expect_close(15)[0] for c in clients]
    assert codes == [1001] * 10, codes
    assert st.procs["edge"].p.wait(20) == 0
    st.start_service("edge")  # for the teardown check and any later test


def test_ping_flood_without_reading_is_bounded_4008(st):
    """Pongs count against EDGE_OUTBOUND_LIMIT: a client that pings and never reads is closed
    4008 instead of growing the edge's memory."""
    ws = _connect(st)
    ws.auto_pong = False
    sent = 0
    try:
        for sent in range(120000):  # 15 MB of pings: beyond the kernel buffers and the bound
            ws.send_frame(wsclient.OP_PING, b"p" * 125)
    except (wsclient.ConnectionClosed, OSError):
        pass
    code = None
    for _ in range(200000):  # the pongs the kernel held, then the close frame
        try:
            f = ws.recv_frame(10)
        except wsclient.ConnectionClosed as e:
            code = e.code
            break
        if f.opcode == wsclient.OP_CLOSE:
            code = wsclient.parse_close_payload(f.payload)[0]
            break
    assert code == 4008, (code, sent)


def _raw_upgrade(st, pieces):
    """The opening handshake written by hand, followed in the same bytes by a masked
    sidecast.v1 ping (id 7); sent split at the given offsets (negative: from the end of the
    head), each piece once the edge has read the one before (sc_edge_bytes_in_total).
    Returns the connection, whose first messages must be the welcome and then the pong: the
    edge keeps frames that arrive with (or inside the last piece of) the head, whether the
    head came in one read or gathered over several."""
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    head = ("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: sidecast.v1\r\nAuthorization: Bearer %s\r\n\r\n"
            % (st.edge_port, key, _token(st))).encode()
    frame = wsclient.encode_frame(wsclient.OP_TEXT, b'{"type":"ping","id":7}')
    data = head + frame
    cuts = sorted(p if p >= 0 else len(head) + p for p in pieces)
    # bytes the edge has read since base, less the /metrics requests that asked (each one
    # reads the same request, counted before its answer)
    base = st.edge_metric("sc_edge_bytes_in_total")
    req = st.edge_metric("sc_edge_bytes_in_total") - base
    reads = [1]  # the one just made

    def read_since():
        reads[0] += 1
        return st.edge_metric("sc_edge_bytes_in_total") - base - reads[0] * req
    sock = socket.create_connection(("127.0.0.1", st.edge_port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    last = 0
    for c in cuts + [len(data)]:
        sock.sendall(data[last:c])
        last = c
        if c < len(data):
            harness.wait_for(lambda: read_since() >= c, what="the edge reading the piece")
    deadline = time.monotonic() + 5
    status, _, hdrs, rest = wsclient.read_http_response(sock, deadline)
    assert status == 101 and hdrs["sec-websocket-accept"] == wsclient.accept_key(key), hdrs
    return WS(sock, st.edge_url, status, hdrs, hdrs.get("sec-websocket-protocol"), rest)


def test_handshake_in_pieces_and_with_a_frame_behind_it(st):
    for pieces in ([], [10], [10, 100, -3], [-1]):
        ws = _raw_upgrade(st, pieces)
        assert ws.recv_json(5)["type"] == "welcome", pieces
        p = ws.recv_json(5)
        assert p["type"] == "pong" and p.get("id") == 7, (pieces, p)
        ws.close()
