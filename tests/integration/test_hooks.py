"""Namespaces and hooks (EDGE_TOPICS, deploy/config/topics.json): the back end decides.

- orders.<id> asks hooks.subscribe.orders.<id>, which the sample producer answers: only the
  order's owner may watch it (whatever the token's claims say), a yes is remembered for its
  ttl_s; the fill comes to the watcher as an event of orders.<id>;
- prices.* may not be published by anyone (publish "nobody");
- chat.* asks hooks.publish.chat.<room> (this test's own hook, through busctl's replies), which
  may refuse or rewrite the data;
- hooks.connect may refuse a connection (4003 with its reason) or grant it more topics;
  hooks.disconnect is told when an authenticated connection ends;
- a hook that is down or slow fails closed (deny) and recovers when it is back; a namespace
  with hook_failure "allow" fails open;
- short.* replays 2 s back at most (history_s): an older first event is history_gone;
- last.* hands a new subscriber the topic's last event first (latest), then live;
- svc.* rpc methods may be called by anyone connected (namespace rule "rpc": "anyone"), and
  what hooks.connect says in "info" rides on the connection's requests (Sidecast-Info).
Real processes: auth, gateway, edge, producer; busctl stands in for the test's own hook
services (a real NATS responder, not a mock of the edge)."""
import json
import os
import socket
import tempfile
import threading
import time
import urllib.parse
import signal

import harness
from wsclient import WS

SERVICES = ("auth", "gateway", "edge", "edge2", "producer")
# deploy/config/topics.json's namespaces, and this test's own: review.* published through a
# hook (this test's), open.* subscribed through a hook nobody serves that fails open
with open(os.path.join(harness.ROOT, "deploy", "config", "topics.json")) as _f:
    _NS = json.load(_f)
_NS["namespaces"] += [{"prefix": "review", "publish": "hook"},
                      {"prefix": "open", "subscribe": "hook", "hook_failure": "allow"},
                      {"prefix": "short", "history_s": 2},
                      {"prefix": "last", "latest": True},
                      {"prefix": "svc", "rpc": "anyone"}]
TOPICS = os.path.join(tempfile.mkdtemp(prefix="sidecast-hooks-"), "topics.json")
with open(TOPICS, "w") as _f:
    json.dump(_NS, _f)
ENV = {"edge": {"EDGE_TOPICS": TOPICS, "EDGE_HOOK_TIMEOUT_MS": str(500 * harness.SLOW),
                "EDGE_HOOK_DISCONNECT": "true", "JWT_DEFAULT_RPC_METHODS": ""},
       "edge2": {"EDGE_HOOK_CONNECT": "true"}}  # edge2 asks hooks.connect first


class Responder(threading.Thread):
    """A NATS service of the test's own on a plain socket: answers the requests of its
    subjects with fn(subject, data) -> (headers, body), or None for no answer at all."""

    def __init__(self, st, subjects, fn):
        super().__init__(daemon=True)
        u = urllib.parse.urlparse(st.nats_url.split(",")[0])
        self.sock = socket.create_connection((u.hostname, u.port), timeout=5)
        self.f = self.sock.makefile("rb")
        self.f.readline()  # INFO
        self.sock.sendall(b'CONNECT {"verbose":false,"headers":true}\r\n')
        for i, subj in enumerate(subjects):
            self.sock.sendall(b"SUB %s %d\r\n" % (subj.encode(), i + 1))
        self.sock.sendall(b"PING\r\n")
        while self.f.readline().strip() != b"PONG":  # subscribed
            pass
        self.sock.settimeout(0.5)
        self.fn, self.stop_ = fn, False
        self.start()

    def run(self):
        while not self.stop_:
            try:
                line = self.f.readline().decode().split()
            except (socket.timeout, OSError, ValueError):
                continue
            if not line:
                continue
            if line[0] == "PING":
                self.sock.sendall(b"PONG\r\n")
                continue
            if line[0] not in ("MSG", "HMSG"):
                continue
            total = int(line[-1])
            body = self.f.read(total + 2)[:-2]
            self.headers = {}  # the request's NATS headers, for fn to look at
            if line[0] == "HMSG":
                for h in body[:int(line[-2])].decode().split("\r\n")[1:]:
                    if ":" in h:
                        k, v = h.split(":", 1)
                        self.headers[k.strip()] = v.strip()
                body = body[int(line[-2]):]
            reply = line[3] if len(line) == (5 if line[0] == "MSG" else 6) else None
            out = self.fn(line[1], json.loads(body or b"null"))
            if out is None or not reply:
                continue
            hdrs, data = out
            data = json.dumps(data).encode()
            if hdrs:
                h = ("NATS/1.0\r\n" + "".join("%s: %s\r\n" % kv for kv in hdrs.items())
                     + "\r\n").encode()
                self.sock.sendall(b"HPUB %s %d %d\r\n%s%s\r\n"
                                  % (reply.encode(), len(h), len(h) + len(data), h, data))
            else:
                self.sock.sendall(b"PUB %s %d\r\n%s\r\n" % (reply.encode(), len(data), data))

    def stop(self):
        self.stop_ = True
        self.join(5)
        self.sock.close()


def _ws(st, user="alice", **claims):
    claims.setdefault("sub_topics", ("prices.*", "chat.*", "open.*"))
    claims.setdefault("pub_topics", ("chat.*", "prices.*"))
    ws = WS.connect(st.edge_url, token=harness.mint(st, sub=user, **claims))
    ws.recv_json(5, type="welcome")
    return ws


def _reply(ws, msg, timeout=10):
    ws.send_json(msg)
    while True:
        m = ws.recv_json(timeout)
        if m.get("id") == msg.get("id"):
            return m
        if m["type"] in ("subscribed",) and m.get("topic") == msg.get("topic"):
            return m


def _order(st, user):
    tok = st.token(user)["access_token"]
    r = st.gw("POST", "/api/orders", {"symbol": "ETH", "qty": 1},
              {"Authorization": "Bearer " + tok})
    assert r.status == 202, r
    return r.json()["order_id"]


def _hooks(st, result):
    return st.edge_metric('sc_edge_hooks_total{result="%s"}' % result) or 0


def test_only_the_owner_watches_an_order(st):
    oid = _order(st, "alice")
    bob = _ws(st, "bob", sub_topics=("orders.*",))  # his claims say orders.*: the hook decides
    r = _reply(bob, {"type": "subscribe", "topic": "orders." + oid, "id": "b"})
    assert r["type"] == "error" and r["code"] == "forbidden", r
    assert r["message"] == "not your order", r
    alice = _ws(st, "alice", sub_topics=())  # her claims give nothing: the hook lets her in
    r = _reply(alice, {"type": "subscribe", "topic": "orders." + oid, "id": "a"})
    assert r["type"] == "subscribed", r
    ev = alice.recv_json(10, type="event", topic="orders." + oid)
    assert ev["data"]["type"] == "order_filled" and ev["data"]["order_id"] == oid, ev
    cached = _hooks(st, "cached")
    alice.send_json({"type": "unsubscribe", "topic": "orders." + oid})
    alice.recv_json(5, type="unsubscribed")
    r = _reply(alice, {"type": "subscribe", "topic": "orders." + oid, "id": "again"})
    assert r["type"] == "subscribed", r
    assert _hooks(st, "cached") == cached + 1  # remembered (ttl_s 300): not asked again
    alice.close()
    bob.close()
    print("  orders.%s: bob refused (\"not your order\") despite orders.* in his token; "
          "alice let in by the hook, got the fill; her second subscribe from the cache" % oid)


def test_publish_rules_nobody_and_a_rewriting_hook(st):
    def review(subject, req):  # hooks.publish.review.<x>: refuse rude words, stamp the rest
        text = (req.get("data") or {}).get("text", "")
        if "rude" in text:
            return {}, {"allow": False, "reason": "be nice"}
        return {}, {"allow": True, "data": {"text": text, "checked_by": "review-svc",
                                             "user": req["user"]}}
    svc = Responder(st, ["hooks.publish.review.>"], review)
    sub = st.busctl_bg("sub", "client.review.>", 10, 1)
    try:
        ws = _ws(st, pub_topics=("chat.*", "prices.*"))  # no review.* in the token: the hook
        r = _reply(ws, {"type": "publish", "topic": "prices.BTC", "data": 1, "id": "p"})
        assert r["type"] == "error" and r["code"] == "forbidden", r  # publish "nobody"
        r = _reply(ws, {"type": "publish", "topic": "review.books", "id": "bad",
                        "data": {"text": "a rude one"}})
        assert r["type"] == "error" and r["code"] == "forbidden", r
        assert r["message"] == "be nice", r
        r = _reply(ws, {"type": "publish", "topic": "review.books", "id": "good",
                        "data": {"text": "a fine book"}})
        assert r["type"] == "ack", r
        line = sub.stdout.readline().decode().strip()
        subject, data = line.split(" ", 1)
        assert subject == "client.review.books", line
        assert json.loads(data) == {"text": "a fine book", "checked_by": "review-svc",
                                    "user": "alice"}, data  # what the back end made of it
        ws.close()
    finally:
        svc.stop()
        sub.kill()
        sub.wait(5)
    print("  prices.*: nobody publishes; review.*: the hook refused one (\"be nice\") and "
          "rewrote the other before client.review.books")


def test_a_namespace_may_fail_open(st):
    ws = _ws(st, sub_topics=())
    r = _reply(ws, {"type": "subscribe", "topic": "open.door", "id": 1})  # nobody answers
    assert r["type"] == "subscribed", r
    ws.close()
    print("  open.*: its hook has no service, hook_failure allow: subscribed")


def _whoami(st):
    """rpc.svc.whoami: answers with the caller's headers, as a service sees them."""
    def whoami(subject, req):
        info = who.headers.get("Sidecast-Info")
        return {}, {"user": who.headers.get("Sidecast-User"),
                    "info": json.loads(info) if info else None}
    who = Responder(st, ["rpc.svc.whoami"], whoami)
    return who


def test_rpc_by_a_namespace_rule(st):
    who = _whoami(st)
    try:
        ws = _ws(st)  # its token names no rpc methods, and the edge's default is none
        r = _reply(ws, {"type": "rpc", "id": 1, "method": "svc.whoami"})
        assert r["type"] == "rpc_result" and r["data"] == {"user": "alice", "info": None}, r
        r = _reply(ws, {"type": "rpc", "id": 2, "method": "prices.quote"})
        assert r["type"] == "error" and r["code"] == "forbidden", r
        ws.close()
    finally:
        who.stop()
    print("  svc.* (rpc anyone) answered without a claim; prices.quote refused: forbidden")


def test_connect_hook_refuses_or_grants(st):
    def connect(subject, req):
        if req["user"] == "mallory":
            return {}, {"allow": False, "reason": "account suspended"}
        return {}, {"allow": True, "grant": {"sub_topics": ["extra.*"], "rpc_methods": []},
                    "info": {"plan": "gold", "name": "Carol"}}
    svc = Responder(st, ["hooks.connect"], connect)
    who = _whoami(st)
    try:
        ws = WS.connect(st.edge_url_of("edge2"),
                        token=harness.mint(st, sub="mallory", sub_topics=("prices.*",)))
        code, reason = ws.expect_close(10)
        assert code == 4003 and reason == "account suspended", (code, reason)
        carol = WS.connect(st.edge_url_of("edge2"),
                           token=harness.mint(st, sub="carol", sub_topics=("prices.*",)))
        carol.recv_json(10, type="welcome")
        r = _reply(carol, {"type": "subscribe", "topic": "extra.news", "id": 1})
        assert r["type"] == "subscribed", r  # granted by the hook, not in the token
        r = _reply(carol, {"type": "rpc", "id": 2, "method": "svc.whoami"})
        assert r["type"] == "rpc_result", r
        assert r["data"] == {"user": "carol", "info": {"plan": "gold", "name": "Carol"}}, r
        carol.close()
    finally:
        svc.stop()
        who.stop()
    # the hook gone: edge2 fails closed (EDGE_HOOK_CONNECT_FAILURE deny): 1013, try again
    ws = WS.connect(st.edge_url_of("edge2"),
                    token=harness.mint(st, sub="dave", sub_topics=("prices.*",)))
    code, _ = ws.expect_close(10)
    assert code == 1013, code
    print("  hooks.connect: mallory closed 4003 \"account suspended\"; carol granted extra.*; "
          "no hook service: 1013")


def test_a_hook_that_is_down_fails_closed_and_recovers(st):
    oid = _order(st, "alice")
    failed = _hooks(st, "failed")
    st.procs["producer"].signal(signal.SIGSTOP)  # the hook's service hangs: a slow hook
    try:
        ws = _ws(st, "alice", sub_topics=())
        t0 = time.monotonic()
        r = _reply(ws, {"type": "subscribe", "topic": "orders." + oid + "x", "id": 1})
        assert r["type"] == "error" and r["code"] == "forbidden", r
        waited = time.monotonic() - t0
        assert _hooks(st, "failed") == failed + 1
    finally:
        st.procs["producer"].signal(signal.SIGCONT)
    r = _reply(ws, {"type": "subscribe", "topic": "orders." + oid, "id": 2})
    assert r["type"] == "subscribed", r  # the hook is back
    ws.close()
    print("  producer stopped: the subscribe denied after the hook's timeout (%.1f s); "
          "after SIGCONT: allowed" % waited)


def test_disconnect_is_told(st):
    sub = st.busctl_bg("sub", "hooks.disconnect", 10, 1)
    ws = _ws(st, "bob")
    ws.close()
    line = sub.stdout.readline().decode().strip()
    sub.wait(10)
    subject, data = line.split(" ", 1)
    d = json.loads(data)
    assert subject == "hooks.disconnect" and d["user"] == "bob" and d["code"] == 1000, line
    print("  hooks.disconnect: %s" % data)


def test_a_namespace_keeps_a_shorter_history(st):
    live = _ws(st, sub_topics=("short.*",))
    live.subscribe("short.news")
    st.busctl("pub", "events.short.news", json.dumps({"n": 1}))
    first = live.recv_json(10, type="event", topic="short.news")
    time.sleep(2.5)  # older than the namespace's history_s (2 s) from here on
    st.busctl("pub", "events.short.news", json.dumps({"n": 2}))
    second = live.recv_json(10, type="event", topic="short.news")
    live.close()
    late = _ws(st, sub_topics=("short.*",))
    late.send_json({"type": "subscribe", "topic": "short.news", "since": 0})
    r = late.recv_json(10, type="error")
    assert r["code"] == "history_gone" and r["topic"] == "short.news", r
    late.close()
    late = _ws(st, sub_topics=("short.*",))
    late.send_json({"type": "subscribe", "topic": "short.news", "since": first["seq"]})
    ev = late.recv_json(10, type="event", topic="short.news")
    assert ev["seq"] == second["seq"] and ev["data"] == {"n": 2}, (ev, first, second)
    late.close()
    print("  short.*: since 0 reaches an event older than 2 s: history_gone; since the old "
          "one: the newer replayed")


def _no_event(ws, topic, seconds):
    try:
        m = ws.recv_json(seconds, type="event", topic=topic)
    except (TimeoutError, AssertionError):
        return
    raise AssertionError("an event nobody asked for: %r" % (m,))


def test_a_latest_namespace_hands_the_last_event_first(st):
    first = _ws(st, sub_topics=("last.*",))
    first.subscribe("last.board")  # nothing retained yet: nothing comes
    _no_event(first, "last.board", 1)
    sent = []
    for n in (1, 2, 3):
        st.busctl("pub", "events.last.board", json.dumps({"n": n}))
        sent.append(first.recv_json(10, type="event", topic="last.board"))
    assert [e["data"]["n"] for e in sent] == [1, 2, 3], sent
    late = _ws(st, sub_topics=("last.*",))
    late.subscribe("last.board")
    ev = late.recv_json(10, type="event", topic="last.board")
    assert ev["seq"] == sent[-1]["seq"] and ev["data"] == {"n": 3}, (ev, sent)
    st.busctl("pub", "events.last.board", json.dumps({"n": 4}))
    ev = late.recv_json(10, type="event", topic="last.board")
    assert ev["data"] == {"n": 4} and ev["seq"] > sent[-1]["seq"], ev  # no repeat, no gap
    # a subscribe with since is a replay as before: everything after it
    again = _ws(st, sub_topics=("last.*",))
    again.send_json({"type": "subscribe", "topic": "last.board", "since": sent[0]["seq"]})
    got = [again.recv_json(10, type="event", topic="last.board")["data"]["n"] for _ in range(3)]
    assert got == [2, 3, 4], got
    # a namespace without latest: live only
    other = _ws(st, sub_topics=("short.*",))
    other.subscribe("short.news")
    _no_event(other, "short.news", 1)
    for ws in (first, late, again, other):
        ws.close()
    print("  last.*: a new subscriber gets seq %d (the last of 3) first, then the next live "
          "one; since and other namespaces unchanged" % sent[-1]["seq"])


def test_latest_meets_live_without_a_gap_or_a_repeat(st):
    """Events keep coming while new subscribers join a latest topic: what each one gets is
    an unbroken run of the topic's events, its first the last one stored when it joined."""
    watch = _ws(st, sub_topics=("last.*",))
    watch.subscribe("last.feed")
    u = urllib.parse.urlparse(st.nats_url.split(",")[0])
    pub = socket.create_connection((u.hostname, u.port), timeout=5)
    pub.recv(4096)  # INFO
    pub.sendall(b'CONNECT {"verbose":false}\r\n')
    total, joiners = 300, []
    for n in range(total):
        data = json.dumps({"n": n}).encode()
        pub.sendall(b"PUB events.last.feed %d\r\n%s\r\n" % (len(data), data))
        if n % 60 == 30:  # a new subscriber joins mid-flow
            ws = _ws(st, sub_topics=("last.*",))
            ws.send_json({"type": "subscribe", "topic": "last.feed"})
            joiners.append(ws)
        time.sleep(0.002)
    pub.close()
    seen = [watch.recv_json(10, type="event", topic="last.feed")["seq"] for _ in range(total)]
    assert seen == sorted(seen) and len(set(seen)) == total, seen[:10]
    for ws in joiners:
        got = []
        while not got or got[-1] != seen[-1]:
            got.append(ws.recv_json(10, type="event", topic="last.feed")["seq"])
        k = seen.index(got[0])
        assert got == seen[k:k + len(got)], (got[:5], seen[k:k + 5])
        ws.close()
    watch.close()
    print("  %d joiners mid-flow of %d events: each got an unbroken run from its first" % (
        len(joiners), total))
