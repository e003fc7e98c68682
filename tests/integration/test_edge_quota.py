"""Edge limits from the second security review.

What one publisher can do to everyone's history: topic traffic and the users' inboxes live
in two JetStream streams, so that a flood of topic events, however large, never evicts an
inbox message (an order fill); and client publishes have byte budgets, per connection and
per user on the edge, beside the message rate. The events stream is bounded at 1 MiB here so
that a flood is quick to make. And a token in the URL can be turned off (EDGE_QUERY_TOKEN,
off here)."""
import harness
import natspub
import wsclient
from wsclient import WS

SERVICES = ("auth", "edge")
ENV = {"edge": {"HISTORY_MAX_BYTES": "1048576",
                # slow refills (1 kB/s): what the bursts hold decides, however slowly the
                # edge runs (valgrind), since a 15 kB publish takes 15 s to earn back
                "EDGE_PUBLISH_BYTES_PER_S": "1024", "EDGE_PUBLISH_BYTES_BURST": "65536",
                "EDGE_USER_PUBLISH_BYTES_PER_S": "1024",
                "EDGE_USER_PUBLISH_BYTES_BURST": "131072",
                "EDGE_RATE_LIMIT": "200", "EDGE_RATE_BURST": "400",
                "EDGE_QUERY_TOKEN": "off"}}
PAD = "x" * 15000


def _connect(st, token):
    ws = WS.connect(st.edge_url, token=token)
    ws.recv_json(5, type="welcome")
    return ws


def test_topic_traffic_cannot_evict_an_inbox(st):
    """An inbox message, then 3 MB of topic events (three times the events stream's bound,
    as a back end relaying a user's chat would publish them): a client resuming its inbox
    still gets the message. With one stream for both, the flood evicted it: history_gone."""
    nc = natspub.Nats(st.nats_url)
    ws = _connect(st, st.token()["access_token"])
    nc.pub("users.alice", {"order": "o-flood"})
    nc.flush()
    m = ws.recv_json(5, type="event", topic="user")
    assert m["data"] == {"order": "o-flood"}, m
    ws.close()
    for i in range(200):
        nc.pub("events.chat.flood", {"i": i, "pad": PAD})
    nc.flush()
    ws = _connect(st, st.token()["access_token"])
    ws.send_json({"type": "subscribe", "topic": "user", "since": m["seq"] - 1})
    got = None
    for _ in range(5):
        try:
            r = ws.recv_json(5)
        except TimeoutError:
            raise AssertionError("the inbox message never came back: evicted by the flood")
        assert r.get("code") != "history_gone", r
        if r.get("type") == "event" and r.get("topic") == "user":
            got = r
            break
    assert got and got["data"] == {"order": "o-flood"} and got["seq"] == m["seq"], got
    # the flood did evict topic history: its first events are gone
    ws.send_json({"type": "subscribe", "topic": "chat.flood", "since": 1})
    for _ in range(5):
        r = ws.recv_json(5)
        if r.get("code") == "history_gone" or r.get("type") == "event":
            break
    assert r.get("code") == "history_gone", r
    print("  inbox message kept through 3 MB of topic events; the topic's own oldest gone")
    ws.close()
    nc.close()


def _publish_all(ws, topic, n, tag):
    for i in range(n):
        ws.send_json({"type": "publish", "topic": topic, "data": {"pad": PAD},
                      "id": "%s%d" % (tag, i)})
    return [ws.recv_json(5) for _ in range(n)]


def test_publish_bytes_are_budgeted_per_connection(st):
    """64 kB at once, 1 kB/s after that per connection: of eight 15 kB publishes sent at
    once the first four are acked and the rest refused with a clear error (the connection
    stays open). Before, the message rate alone was the bound: all eight were acked."""
    token = harness.mint(st, sub="quota-conn", sub_topics=("chat.>",), pub_topics=("chat.>",))
    ws = _connect(st, token)
    replies = _publish_all(ws, "chat.q1", 8, "c")
    acks = [r["id"] for r in replies if r["type"] == "ack"]
    refused = [r for r in replies if r.get("code") == "publish_quota"]
    assert len(acks) == 4 and len(refused) == 4, replies
    assert acks == ["c0", "c1", "c2", "c3"], acks
    assert refused[0]["id"] == "c4" and "EDGE_PUBLISH_BYTES_PER_S" in refused[0]["message"], refused
    assert st.edge_metric("sc_edge_publish_quota_refused_total") >= 4
    ws.send_json({"type": "ping", "id": 1})
    assert ws.recv_json(5)["type"] == "pong"  # still open
    ws.close()


def test_publish_bytes_are_budgeted_per_user(st):
    """Five connections of one user, each within its own budget (two 15 kB publishes), are
    150 kB at once: over the user's 128 kB on this edge, so some are refused, naming the
    user's budget. Before, twenty sockets of one user could write tens of MB a second."""
    token = harness.mint(st, sub="quota-user", sub_topics=("chat.>",), pub_topics=("chat.>",))
    conns = [_connect(st, token) for _ in range(5)]
    replies = []
    for i, ws in enumerate(conns):
        replies += _publish_all(ws, "chat.q2", 2, "u%d-" % i)
    acks = [r for r in replies if r["type"] == "ack"]
    refused = [r for r in replies if r.get("code") == "publish_quota"]
    assert len(acks) + len(refused) == 10, replies
    assert len(refused) == 2, replies  # 128 kB hold eight of them
    assert all("EDGE_USER_PUBLISH_BYTES_PER_S" in r["message"] for r in refused), refused
    for ws in conns:
        ws.close()


def test_a_token_in_the_url_can_be_turned_off(st):
    """With EDGE_QUERY_TOKEN=off, ?access_token= is refused 4001 with a reason that says why
    (not ignored, which would look like a slow auth); the header and the auth message work."""
    tok = st.token()["access_token"]
    ws = WS.connect(wsclient.ws_url(st.edge_url, access_token=tok))
    code, reason = ws.expect_close(5)
    assert code == 4001 and "turned off" in reason, (code, reason)
    ws = _connect(st, tok)  # the Authorization header
    ws.close()
    ws = WS.connect(st.edge_url)
    ws.send_json({"type": "auth", "token": tok})
    ws.recv_json(5, type="welcome")
    ws.close()
