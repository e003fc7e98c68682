"""Idempotent client publishes: a publish with an id goes through the client stream
(HISTORY_CLIENT_STREAM, SIDECAST_CLIENT on client.>) with "<user>:<id>" as its JetStream
message id, so a retry after a lost ack is stored once; the ack says whether it was a
duplicate (PUBLISH_DEDUP_WINDOW_S). Real nats-server with JetStream; the stream's own count
is the judge."""
import json

import harness
from wsclient import WS

SERVICES = ("auth", "edge")
STREAM = "SIDECAST_CLIENT"


def _ws(st, user="alice"):
    ws = WS.connect(st.edge_url, token=harness.mint(st, sub=user, pub_topics=("chat.*",)))
    ws.recv_json(5, type="welcome")
    return ws


def _stored(st):
    lines = st.busctl("req", "$JS.API.STREAM.INFO." + STREAM, "", 5000)
    return json.loads(lines[-1])["state"]["messages"]


def _publish(ws, id_, text, topic="chat.room"):
    ws.send_json({"type": "publish", "topic": topic, "id": id_, "data": {"text": text}})
    while True:
        m = ws.recv_json(10)
        if m.get("id") == id_:
            return m


def test_a_retry_is_stored_once_and_the_ack_says_so(st):
    harness.wait_for(lambda: _stored(st) >= 0, what="the client stream")
    before = _stored(st)
    ws = _ws(st)
    first = _publish(ws, "m-1", "hello")
    assert first == {"type": "ack", "id": "m-1", "duplicate": False}, first
    again = _publish(ws, "m-1", "hello")  # the client did not see the ack: it retries
    assert again == {"type": "ack", "id": "m-1", "duplicate": True}, again
    ws.close()
    ws = _ws(st)  # and after reconnecting, too
    assert _publish(ws, "m-1", "hello")["duplicate"] is True
    assert _publish(ws, 7, "numeric id")["duplicate"] is False
    assert _publish(ws, "7", "the string 7 is another id")["duplicate"] is False
    ws.close()
    bob = _ws(st, "bob")  # ids are per user: bob's m-1 is his own
    assert _publish(bob, "m-1", "bob's")["duplicate"] is False
    bob.close()
    assert _stored(st) == before + 4, (_stored(st), before)
    dups = st.edge_metric("sc_edge_publish_duplicates_total")
    assert dups == 2, dups
    print("  m-1 three times (one reconnect): stored once, acked duplicate false, true, true; "
          "7 and \"7\" are two ids; bob's m-1 is his own")


def test_without_an_id_nothing_waits(st):
    before = _stored(st)
    ws = _ws(st)
    ws.send_json({"type": "publish", "topic": "chat.room", "data": {"text": "fire and forget"}})
    ws.send_json({"type": "ping", "id": "p"})
    assert ws.recv_json(5)["type"] == "pong"  # no ack came first
    harness.wait_for(lambda: _stored(st) == before + 1, what="the publish stored")
    ws.close()
    print("  a publish without an id: no ack, stored all the same")
