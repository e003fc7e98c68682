"""permessage-deflate (RFC 7692) on the edge, against real NATS (JetStream) and auth.

A client that offers permessage-deflate gets it with no context takeover both ways; events
of at least EDGE_DEFLATE_MIN bytes reach it compressed (RSV1; the fabric compresses each
event once) and decode to the same text a plain client gets uncompressed; replayed events
and replies are compressed per message; its compressed messages are inflated; a zip bomb
is closed 1009, corrupt data 1007; a client that did not negotiate never sees RSV1 and is
closed 1002 when it sends it.
"""
import json

import harness
import wsclient
from wsclient import WS

SERVICES = ("auth", "edge")
ENV = {"edge": {"EDGE_MAX_MESSAGE": "8192", "EDGE_DEFLATE_MIN": "64"}}


def _connect(st, user="alice", deflate=True):
    ws = WS.connect(st.edge_url, token=st.token(user)["access_token"], deflate=deflate)
    w = ws.recv_json(5, type="welcome")
    assert w["user"] == user, w
    return ws


def _event_data(i):
    """A typical event: about 300 bytes of JSON."""
    return {"i": i, "symbol": "BTC-USD", "price": "64012.55", "bid": "64012.50",
            "ask": "64012.60", "volume_24h": "18234.1209", "change_24h": "-0.0123",
            "exchange": "sidecast-test", "ts": 1764380000123 + i,
            "note": "a typical ticker event, repetitive enough to compress"}


def _frame_event(ws, timeout=5):
    """The next data frame as sent, skipping nothing: (rsv, decoded JSON)."""
    f = ws.recv_frame(timeout)
    assert f.opcode == wsclient.OP_TEXT and f.fin, f
    data = wsclient.inflate_message(f.payload) if f.rsv == 4 else f.payload
    return f.rsv, json.loads(data), len(f.payload)


def _deflated(st):
    m = harness.http("GET", "http://127.0.0.1:%d/metrics" % st.edge_port).body.decode()
    line = [x for x in m.splitlines() if x.startswith("sc_edge_deflated_total")]
    return int(line[0].split()[-1]) if line else 0


def test_events_not_compressed_ahead_without_deflate_clients(st):
    # With no client on permessage-deflate the fabric compresses nothing ahead (it did every
    # event, for nobody); once one connects, its events come compressed all the same.
    plain = _connect(st, deflate=False)
    plain.subscribe("prices.NOZ")
    for i in range(20):  # a deflate client an earlier test closed may still be going away
        before = _deflated(st)
        st.busctl("pub", "events.prices.NOZ", json.dumps(_event_data(i)))
        assert _frame_event(plain)[0] == 0
        if _deflated(st) == before:
            break
    else:
        raise AssertionError("every event was compressed with no deflate client open")
    before = _deflated(st)
    for i in range(3):
        st.busctl("pub", "events.prices.NOZ", json.dumps(_event_data(i)))
        assert _frame_event(plain)[0] == 0
    assert _deflated(st) == before, (before, _deflated(st))
    z = _connect(st)
    z.subscribe("prices.NOZ")
    st.busctl("pub", "events.prices.NOZ", json.dumps(_event_data(9)))
    zrsv, zev, _ = _frame_event(z)
    prsv, pev, _ = _frame_event(plain)
    assert zrsv == 4 and prsv == 0 and zev == pev, (zrsv, prsv, zev, pev)
    assert _deflated(st) > before  # compressed ahead again, once for both
    z.close()
    plain.close()


def test_negotiation_answer(st):
    ws = _connect(st)
    ext = ws.headers["sec-websocket-extensions"]
    assert ext == ("permessage-deflate; server_no_context_takeover; "
                   "client_no_context_takeover"), ext
    ws.close()
    # a bad first offer is declined, the next one accepted with its window bits
    ws = WS.connect(st.edge_url, token=st.token()["access_token"],
                    deflate="permessage-deflate; x=1, permessage-deflate; "
                            "server_max_window_bits=10; client_max_window_bits")
    assert ws.deflate == {"server_no_context_takeover": None,
                          "client_no_context_takeover": None,
                          "server_max_window_bits": "10"}, ws.deflate
    ws.recv_json(5, type="welcome")
    ws.close()
    # only bad offers: the handshake succeeds without the extension
    ws = WS.connect(st.edge_url, token=st.token()["access_token"],
                    deflate="permessage-deflate; server_max_window_bits=7, "
                            "permessage-deflate; server_no_context_takeover; "
                            "server_no_context_takeover")
    assert ws.deflate is None and "sec-websocket-extensions" not in ws.headers
    ws.recv_json(5, type="welcome")
    ws.close()


def test_events_compressed_once_plain_for_others(st):
    z, plain = _connect(st), _connect(st, deflate=False)
    for ws in (z, plain):
        ws.subscribe("prices.DFL")
    for i in range(5):
        st.busctl("pub", "events.prices.DFL", json.dumps(_event_data(i)))
    for i in range(5):
        zrsv, zev, zlen = _frame_event(z)
        prsv, pev, plen = _frame_event(plain)
        assert zrsv == 4 and prsv == 0, (zrsv, prsv)
        assert zev == pev and zev["data"] == _event_data(i), (zev, pev)
        assert zlen < plen, (zlen, plen)
    # an event under EDGE_DEFLATE_MIN goes out uncompressed to everyone
    st.busctl("pub", "events.prices.DFL", "1")
    assert _frame_event(z)[0] == 0 and _frame_event(plain)[0] == 0
    m = harness.http("GET", "http://127.0.0.1:%d/metrics" % st.edge_port).body.decode()
    line = [x for x in m.splitlines() if x.startswith("sc_edge_deflated_total")]
    assert line and int(line[0].split()[-1]) >= 5, line
    line = [x for x in m.splitlines() if x.startswith("sc_edge_deflate_connections_total")]
    assert line and int(line[0].split()[-1]) >= 1, line
    z.close()
    plain.close()


def test_replayed_events_and_replies_compressed(st):
    ws = _connect(st)
    ws.subscribe("prices.RPL")
    for i in range(3):
        st.busctl("pub", "events.prices.RPL", json.dumps(_event_data(i)))
    got = [_frame_event(ws) for _ in range(3)]
    first = got[0][1]["seq"]
    ws.close()
    # a new connection replays from the first seq: the replayed events are compressed too
    ws = _connect(st)
    ws.send_json({"type": "subscribe", "topic": "prices.RPL", "since": first - 1})
    replayed = []
    for _ in range(10):  # "subscribed" may come before or after the replayed events
        e = _frame_event(ws)
        if e[1]["type"] == "event":
            replayed.append(e)
        if len(replayed) == 3:
            break
    assert [e[1]["data"]["i"] for e in replayed] == [0, 1, 2], replayed
    assert all(e[0] == 4 for e in replayed), [e[0] for e in replayed]
    # a reply over EDGE_DEFLATE_MIN is compressed per message, a short one is not
    ws.send_json({"type": "ping", "id": "r1"})
    rsv, r, _ = _frame_event(ws)
    assert r == {"type": "pong", "id": "r1"} and rsv == 0, (rsv, r)
    ws.send_json({"type": "subscribe", "topic": "forbidden." + "x" * 100, "id": "r2"})
    for _ in range(10):
        rsv, r, _ = _frame_event(ws)
        if r["type"] != "subscribed":
            break
    assert r["type"] == "error" and r["id"] == "r2" and rsv == 4, (rsv, r)
    ws.close()


def test_compressed_client_messages(st):
    ws = _connect(st)
    ws.send_compressed(wsclient.OP_TEXT, json.dumps({"type": "ping", "id": "z" * 64}))
    assert ws.recv_json(5) == {"type": "pong", "id": "z" * 64}
    # fragmented compressed message: RSV1 on the first frame only
    ws.send_compressed(wsclient.OP_TEXT, json.dumps({"type": "ping", "id": "frag"}),
                       fragment_size=5)
    assert ws.recv_json(5) == {"type": "pong", "id": "frag"}
    # plain messages still work on a deflate connection
    ws.send_json({"type": "ping", "id": "plain"})
    assert ws.recv_json(5) == {"type": "pong", "id": "plain"}
    ws.close()


def test_zip_bomb_1009_corrupt_1007(st):
    ws = _connect(st)
    bomb = wsclient.deflate_message(b" " * (4 << 20))  # 4 MiB of spaces in a few KiB
    assert len(bomb) < 8192
    ws.send_frame(wsclient.OP_TEXT, bomb, rsv=4)
    assert ws.expect_close(5)[0] == 1009
    ws = _connect(st)
    ws.send_frame(wsclient.OP_TEXT, b"\xff\xff\xff\xff", rsv=4)  # reserved block type
    assert ws.expect_close(5)[0] == 1007
    ws = _connect(st)
    ws.send_frame(wsclient.OP_TEXT, wsclient.deflate_message(b'{"id":"\xff"}'), rsv=4)
    assert ws.expect_close(5)[0] == 1007  # inflated text is not UTF-8
    ws = _connect(st)
    ws.send_frame(wsclient.OP_TEXT, wsclient.deflate_message(b"{}"), fin=False, rsv=4)
    ws.send_frame(wsclient.OP_CONT, b"", rsv=4)  # RSV1 on a continuation frame
    assert ws.expect_close(5)[0] == 1002
    ws = _connect(st)
    ws.send_frame(wsclient.OP_PING, b"", rsv=4)  # RSV1 on a control frame
    assert ws.expect_close(5)[0] == 1002


def test_client_without_deflate_gets_plain_frames(st):
    ws = _connect(st, deflate=False)
    assert ws.deflate is None
    ws.subscribe("prices.PLN")
    st.busctl("pub", "events.prices.PLN", json.dumps(_event_data(7)))
    rsv, ev, _ = _frame_event(ws)
    assert rsv == 0 and ev["data"] == _event_data(7), (rsv, ev)
    ws.send_compressed(wsclient.OP_TEXT, json.dumps({"type": "ping"}))
    assert ws.expect_close(5)[0] == 1002
