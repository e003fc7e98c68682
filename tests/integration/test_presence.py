"""Presence in Redis across two edges, the per-user connection limit, a dead edge's entries,
and Redis going away and coming back (no client disconnected, presence rewritten).

GET /api/presence/{user} goes through the real gateway to presence.get, answered by either
edge from Redis. Bob may hold at most MAX_CONNECTIONS_PER_USER=2 connections on all edges.
"""
import json
import time

import harness
import natspub
from harness import wait_for
from wsclient import WS, ConnectionClosed

SERVICES = ("auth", "gateway", "edge1", "edge2")
ENV = {"edge": {"PRESENCE_TTL_S": "3", "MAX_CONNECTIONS_PER_USER": "2"}}


def _connect(st, edge, user="alice"):
    ws = WS.connect(st.edge_url_of(edge), token=st.token(user)["access_token"])
    w = ws.recv_json(5, type="welcome")
    return ws, w


def _presence(st, user, as_user=None):
    tok = st.token(as_user or user)["access_token"]
    r = st.gw("GET", "/api/presence/" + user, headers={"Authorization": "Bearer " + tok})
    assert r.status == 200, r
    return r.json()


def _conn_ids(st, user):
    return sorted(c["conn_id"] for c in _presence(st, user)["connections"])


def test_presence_across_edges(st):
    a1, w1 = _connect(st, "edge1")
    a2, w2 = _connect(st, "edge2")
    want = sorted([w1["conn_id"], w2["conn_id"]])
    got = wait_for(lambda: _conn_ids(st, "alice") == want and _presence(st, "alice"),
                   what="both connections in presence")
    print("  presence of alice:", json.dumps(got))
    assert got["count"] == 2 and {c["edge"] for c in got["connections"]} == {"edge-1", "edge-2"}
    assert all(c["connected_at"] > 1.7e9 for c in got["connections"])
    a1.close()
    wait_for(lambda: _conn_ids(st, "alice") == [w2["conn_id"]], what="closed one gone")
    a2.close()
    wait_for(lambda: _conn_ids(st, "alice") == [], what="all gone")


def test_presence_get_rejects_bad_input(st):
    tok = st.token("alice")["access_token"]
    r = st.gw("GET", "/api/presence/alice", headers={"Authorization": "Bearer " + tok})
    assert r.status == 200 and r.json()["user"] == "alice", r
    # another user's presence: only with a sub_topics grant on presence.<user> (alice has none)
    r = st.gw("GET", "/api/presence/bob", headers={"Authorization": "Bearer " + tok})
    assert r.status == 403 and r.json()["error"] == "forbidden", r
    # a back-end service on the bus may ask about anyone
    lines = st.busctl("req", "presence.get", json.dumps({"params": {"user": "nobody"}}), 2000)
    assert "hdr Sidecast-Status: 200" in lines and any('"count":0' in l for l in lines), lines
    r = st.gw("GET", "/api/presence/alice")  # no token
    assert r.status == 401, r
    lines = st.busctl("req", "presence.get", json.dumps({"params": {"user": "a b"}}), 2000)
    assert "hdr Sidecast-Status: 400" in lines, lines


def test_connection_limit_per_user_across_edges(st):
    b1, _ = _connect(st, "edge1", "bob")
    b2, _ = _connect(st, "edge2", "bob")
    third = WS.connect(st.edge_url_of("edge1"), token=st.token("bob")["access_token"])
    code, reason = third.expect_close(5)
    print("  third connection of bob: close", code, reason)
    assert code == 4009, (code, reason)
    b2.close()
    wait_for(lambda: len(_conn_ids(st, "bob")) == 1, what="bob's second gone")
    b3, _ = _connect(st, "edge2", "bob")  # room again
    b1.close()
    b3.close()
    wait_for(lambda: _conn_ids(st, "bob") == [], what="bob gone")


def test_killed_edge_vanishes_and_is_reaped(st):
    a1, w1 = _connect(st, "edge1")
    a2, w2 = _connect(st, "edge2")
    wait_for(lambda: len(_conn_ids(st, "alice")) == 2, what="two connections")
    st.kill("edge2")  # SIGKILL: no chance to clean up
    t0 = time.monotonic()
    wait_for(lambda: _conn_ids(st, "alice") == [w1["conn_id"]], timeout=10,
             what="the dead edge's connection hidden")
    print("  dead edge hidden from presence after %.1f s (PRESENCE_TTL_S=3)"
          % (time.monotonic() - t0))
    wait_for(lambda: "edge-2" not in st.redis_cmd("HKEYS", "sc:presence:user:alice"),
             timeout=20, what="the dead edge's entries reaped by edge-1")
    print("  reaped after %.1f s" % (time.monotonic() - t0))
    st.restart("edge2")
    a1.close()
    try:
        a2.close(timeout=1)
    except (ConnectionClosed, OSError):
        pass
    wait_for(lambda: _conn_ids(st, "alice") == [], what="all gone")


def test_redis_down_keeps_clients_and_presence_recovers(st):
    nc = natspub.Nats(st.nats_url)
    a1, w1 = _connect(st, "edge1")
    a1.send_json({"type": "subscribe", "topic": "chat.presence"})
    a1.recv_json(5, type="subscribed")
    wait_for(lambda: _conn_ids(st, "alice") == [w1["conn_id"]], what="registered")
    st.kill_redis()
    ready = "http://127.0.0.1:%d/readyz" % st.edge_port_of("edge1")
    r = wait_for(lambda: (lambda x: "presence=degraded" in x.body.decode() and x)(
        harness.http("GET", ready)), timeout=10, what="presence degraded in readyz")
    assert r.status == 200, r  # still ready: it serves connections and events
    # events still flow, new connections (limit fails open) still come in
    nc.pub("events.chat.presence", {"n": 1})
    nc.flush()
    ev = a1.recv_json(5, type="event")
    assert ev["data"] == {"n": 1}, ev
    a2, w2 = _connect(st, "edge2")
    st.restart_redis()
    want = sorted([w1["conn_id"], w2["conn_id"]])
    wait_for(lambda: _conn_ids(st, "alice") == want, timeout=15,
             what="presence rewritten after Redis came back")
    wait_for(lambda: "presence=ok" in harness.http("GET", ready).body.decode(),
             what="presence ok again")
    assert a1.is_open and a2.is_open
    a1.close()
    a2.close()
    nc.close()
