"""Topic permissions as the edge keeps them: each worker interns the tokens' sub_topics and
pub_topics, so connections whose tokens carry the same lists share one copy. Sharing must
never blur two sets: the same patterns split differently between the two lists are two sets,
a set outlives a connection that leaves it while another still holds it, and a refresh moves
a connection to its new set (dropping the subscriptions it no longer allows) without touching
the others. One worker, so every connection here meets the same table.
"""
import json

import harness
from wsclient import WS

SERVICES = ("edge",)
ENV = {"edge": {"EDGE_WORKERS": "1"}}


def _connect(st, user, sub_topics, pub_topics):
    tok = harness.mint(st, sub=user, sub_topics=sub_topics, pub_topics=pub_topics)
    ws = WS.connect(st.edge_url, token=tok)
    assert ws.recv_json(5, type="welcome")["user"] == user
    return ws


def _ask(ws, msg):
    ws.send_json(msg)
    return ws.recv_json(5)


def _may_subscribe(ws, topic):
    r = _ask(ws, {"type": "subscribe", "topic": topic, "id": "s-" + topic})
    assert r["type"] in ("subscribed", "error"), r
    if r["type"] == "error":
        assert r["code"] == "forbidden", r
    return r["type"] == "subscribed"


def _may_publish(ws, topic):
    r = _ask(ws, {"type": "publish", "topic": topic, "data": 1, "id": "p-" + topic})
    assert r.get("id") == "p-" + topic, r
    if r["type"] == "error":
        assert r["code"] == "forbidden", r
    return r["type"] == "ack"


def test_same_patterns_in_other_lists_are_other_sets(st):
    # The same bytes one way and the other: chat.* to subscribe to, or to publish on.
    both_sub = _connect(st, "p1", ["prices.*", "chat.*"], [])
    split = _connect(st, "p2", ["prices.*"], ["chat.*"])
    twin = _connect(st, "p3", ["prices.*", "chat.*"], [])  # shares both_sub's set
    assert _may_subscribe(both_sub, "chat.lobby") and not _may_publish(both_sub, "chat.lobby")
    assert not _may_subscribe(split, "chat.lobby") and _may_publish(split, "chat.lobby")
    # the first holder leaves: the set stays for the twin, whole
    both_sub.close()
    assert _may_subscribe(twin, "chat.room") and _may_subscribe(twin, "prices.BTC")
    assert not _may_publish(twin, "chat.room") and not _may_publish(twin, "prices.BTC")
    # and a newcomer with the same lists finds them intact
    again = _connect(st, "p4", ["prices.*", "chat.*"], [])
    assert _may_subscribe(again, "chat.other") and not _may_subscribe(again, "news.x")
    for ws in (split, twin, again):
        ws.close()


def test_refresh_moves_one_connection_to_its_new_set(st):
    wide = ["prices.*", "chat.*"]
    mover = _connect(st, "r1", wide, [])
    stayer = _connect(st, "r2", wide, [])
    for t in ("prices.BTC", "chat.lobby"):
        assert _may_subscribe(mover, t)
    mover.send_json({"type": "refresh",
                     "token": harness.mint(st, sub="r1", sub_topics=["chat.*"], pub_topics=[])})
    gone = mover.recv_json(5, type="unsubscribed")
    assert gone["topic"] == "prices.BTC", gone
    mover.recv_json(5, type="refreshed")
    assert not _may_subscribe(mover, "prices.ETH") and _may_subscribe(mover, "chat.room")
    # the set the mover left is still whole for the other holder
    assert _may_subscribe(stayer, "prices.ETH") and _may_subscribe(stayer, "chat.lobby")
    # the mover's remaining subscription still delivers
    st.busctl("pub", "events.chat.lobby", json.dumps({"n": 1}))
    for ws in (mover, stayer):
        ev = ws.recv_json(5, type="event", topic="chat.lobby")
        assert ev["data"] == {"n": 1}, ev
    # a refresh to the very same lists keeps everything
    mover.send_json({"type": "refresh",
                     "token": harness.mint(st, sub="r1", sub_topics=["chat.*"], pub_topics=[])})
    assert mover.recv_json(5)["type"] == "refreshed"
    assert _may_subscribe(mover, "chat.x") and not _may_subscribe(mover, "prices.X")
    for ws in (mover, stayer):
        ws.close()
