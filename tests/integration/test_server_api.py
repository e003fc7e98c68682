"""The server API (docs/BACKENDS.md, "The server API"): api.* on NATS, answered by either of
two edges, and the gateway's /api/v1 routes with a client-credentials token that carries the
scope sidecast.api (the producer client of scripts/gen-dev.sh).

Publish over NATS and over HTTP reaches a WebSocket subscriber; an idempotency key's retry
is stored once and answered duplicate; a broadcast; a disconnect of a user closes its
connections on both edges with 4003 (no reconnect) or 4010 (may reconnect) and the reason;
one connection by its conn_id; presence of a user and a topic; history with since and
limit; counts; a token without the scope gets 403 at the gateway; bad input 400.
"""
import json
import uuid

from harness import wait_for
from wsclient import WS

SERVICES = ("auth", "gateway", "edge1", "edge2")
ENV = {"edge": {"PRESENCE_TTL_S": "3", "EDGE_API_GATHER_MS": "300"}}


def _api(st, subject, body):
    """A request on the bus: (status, body)."""
    lines = st.busctl("req", subject, json.dumps(body), 5000)
    assert lines and lines[0] == "status=ok", lines
    status = 200
    for line in lines:
        if line.startswith("hdr Sidecast-Status: "):
            status = int(line.split(": ", 1)[1])
    return status, json.loads(lines[-1])


_TOKENS = {}


def _service_token(st):
    if "producer" not in _TOKENS:
        r = st.gw("POST", "/auth/token", body={
            "grant_type": "client_credentials", "client_id": "producer",
            "client_secret": st.read_secret("producer.secret")})
        assert r.status == 200, r
        _TOKENS["producer"] = r.json()["access_token"]
    return _TOKENS["producer"]


def _http(st, method, path, body=None, token=None):
    tok = token or _service_token(st)
    return st.gw(method, path, body=body, headers={"Authorization": "Bearer " + tok})


def _connect(st, edge, user="alice"):
    ws = WS.connect(st.edge_url_of(edge), token=st.token(user)["access_token"])
    w = ws.recv_json(5, type="welcome")
    return ws, w


def _topic(prefix):
    return "prices.%s%s" % (prefix, uuid.uuid4().hex[:8])


def test_publish_over_nats_and_http(st):
    topic = _topic("pub")
    ws, _ = _connect(st, "edge1")
    ws.subscribe(topic)
    status, ans = _api(st, "api.publish", {"topic": topic, "data": {"price": 1}})
    assert status == 200 and ans["topic"] == topic and ans["duplicate"] is False, ans
    ev = ws.recv_json(5, type="event")
    assert ev["topic"] == topic and ev["seq"] == ans["seq"] and ev["data"] == {"price": 1}, ev
    r = _http(st, "POST", "/api/v1/publish", {"topic": topic, "data": {"price": 2}})
    assert r.status == 200, r
    ev = ws.recv_json(5, type="event")
    assert ev["seq"] == r.json()["seq"] and ev["data"] == {"price": 2}, ev
    print("  publish:", ans, r.json())
    ws.close()


def test_idempotency_key_stores_once(st):
    topic = _topic("idem")
    key = str(uuid.uuid4())
    s1, a1 = _api(st, "api.publish", {"topic": topic, "data": "once", "idempotency_key": key})
    r = _http(st, "POST", "/api/v1/publish",
              {"topic": topic, "data": "once", "idempotency_key": key})
    assert s1 == 200 and a1["duplicate"] is False, a1
    assert r.status == 200 and r.json()["duplicate"] is True and r.json()["seq"] == a1["seq"], r
    r = _http(st, "GET", "/api/v1/history/%s" % topic)
    assert r.status == 200 and [e["data"] for e in r.json()["events"]] == ["once"], r
    print("  retry answered:", r.json())


def test_broadcast(st):
    topics = [_topic("bc") for _ in range(3)]
    ws, _ = _connect(st, "edge2")
    for t in topics[:2]:
        ws.subscribe(t)
    r = _http(st, "POST", "/api/v1/broadcast", {"topics": topics, "data": {"all": True}})
    assert r.status == 200, r
    ans = r.json()
    assert ans["published"] == 3 and ans["failed"] == 0, ans
    assert [x["topic"] for x in ans["results"]] == topics and all("seq" in x
                                                                   for x in ans["results"])
    got = {ws.recv_json(5, type="event")["topic"] for _ in range(2)}
    assert got == set(topics[:2]), got
    ws.close()


def test_disconnect_user_on_both_edges(st):
    a1, _ = _connect(st, "edge1", "alice")
    a2, _ = _connect(st, "edge2", "alice")
    b1, _ = _connect(st, "edge1", "bob")
    r = _http(st, "POST", "/api/v1/disconnect",
              {"user": "alice", "reason": "account suspended", "reconnect": False})
    assert r.status == 200, r
    ans = r.json()
    print("  disconnect alice:", ans)
    assert ans["closed"] == 2 and ans["edges"] == 2 and ans["code"] == 4003, ans
    for ws in (a1, a2):
        assert ws.expect_close(5) == (4003, "account suspended")
    # bob is untouched; a disconnect that allows a reconnect is 4010
    b1.send_json({"type": "ping", "id": 1})
    assert b1.recv_json(5, type="pong")["id"] == 1
    status, ans = _api(st, "api.disconnect", {"user": "bob", "reason": "rebalancing"})
    assert status == 200 and ans["closed"] == 1 and ans["reconnect"] is True, ans
    assert b1.expect_close(5) == (4010, "rebalancing")
    # nobody connected: 0 closed, not an error
    status, ans = _api(st, "api.disconnect", {"user": "nobody"})
    assert status == 200 and ans["closed"] == 0 and ans["edges"] == 2, ans


def test_disconnect_one_connection(st):
    a1, w1 = _connect(st, "edge1")
    a2, w2 = _connect(st, "edge2")
    status, ans = _api(st, "api.disconnect", {"conn": w2["conn_id"], "reconnect": False})
    assert status == 200 and ans["closed"] == 1, ans
    assert a2.expect_close(5) == (4003, "disconnected by the server")
    a1.send_json({"type": "ping", "id": 2})
    assert a1.recv_json(5, type="pong")["id"] == 2
    a1.close()


def test_presence_of_user_and_topic(st):
    topic = _topic("pres")
    ws, w = _connect(st, "edge1")
    ws.subscribe(topic)

    def user_seen():
        r = _http(st, "GET", "/api/v1/presence/users/alice")
        return r.status == 200 and w["conn_id"] in [c["conn_id"]
                                                    for c in r.json()["connections"]]
    wait_for(user_seen, what="alice in presence")

    def topic_seen():
        r = _http(st, "GET", "/api/v1/presence/topics/" + topic)
        return r.status == 200 and r.json()["occupied"] and r.json()["edges"] == 1
    wait_for(topic_seen, what="topic occupied")
    status, ans = _api(st, "api.presence.topic", {"topic": _topic("none")})
    assert status == 200 and ans["occupied"] is False, ans
    ws.close()


def test_history_since_and_limit(st):
    topic = _topic("hist")
    seqs = [_api(st, "api.publish", {"topic": topic, "data": i})[1]["seq"] for i in range(5)]
    r = _http(st, "GET", "/api/v1/history/%s?since=%d&limit=2" % (topic, seqs[0]))
    assert r.status == 200, r
    ans = r.json()
    assert [e["seq"] for e in ans["events"]] == seqs[1:3] and ans["more"] is True, ans
    assert [e["data"] for e in ans["events"]] == [1, 2] and ans["next"] == seqs[2], ans
    status, ans = _api(st, "api.history", {"topic": topic, "since": ans["next"]})
    assert status == 200 and [e["data"] for e in ans["events"]] == [3, 4], ans
    assert ans["more"] is False, ans
    r = _http(st, "GET", "/api/v1/history/%s?limit=1001" % topic)
    assert r.status == 400 and "limit" in r.json()["message"], r
    r = _http(st, "GET", "/api/v1/history/%s?since=-1" % topic)
    assert r.status == 400, r


def test_counts(st):
    a1, _ = _connect(st, "edge1")
    a2, _ = _connect(st, "edge2", "bob")
    r = _http(st, "GET", "/api/v1/counts")
    assert r.status == 200, r
    ans = r.json()
    print("  counts:", ans)
    assert ans["edges"] == 2 and ans["connections"] >= 2 and ans["users"] >= 2, ans
    assert {e["edge"] for e in ans["by_edge"]} == {"edge-1", "edge-2"}, ans
    a1.close()
    a2.close()


def test_scope_required_at_gateway(st):
    alice = st.token("alice")["access_token"]
    r = _http(st, "POST", "/api/v1/publish", {"topic": "prices.X", "data": 1}, token=alice)
    assert r.status == 403 and r.json()["error"] == "insufficient_scope", r
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"], r.headers
    assert 'scope="sidecast.api"' in r.headers["www-authenticate"], r.headers
    r = st.gw("GET", "/api/v1/counts")
    assert r.status == 401, r
    # the scope is in the token because the users file grants it to the client
    r = st.gw("POST", "/auth/token", body={
        "grant_type": "client_credentials", "client_id": "producer",
        "client_secret": st.read_secret("producer.secret"), "scope": "sidecast.other"})
    assert r.status == 400 and r.json()["error"] == "invalid_scope", r


def test_bad_input(st):
    cases = [
        ("POST", "/api/v1/publish", {"data": 1}, "topic"),
        ("POST", "/api/v1/publish", {"topic": "prices.*", "data": 1}, "topic"),
        ("POST", "/api/v1/publish", {"topic": "prices.A"}, "data"),
        ("POST", "/api/v1/publish", {"topic": "prices.A", "data": 1, "idempotency_key": ""},
         "idempotency_key"),
        ("POST", "/api/v1/broadcast", {"topics": ["prices.A%d" % i for i in range(101)],
                                       "data": 1}, "at most 100"),
        ("POST", "/api/v1/broadcast", {"topics": ["prices.A", "prices.A"], "data": 1},
         "twice"),
        ("POST", "/api/v1/disconnect", {"user": "alice", "conn": "edge-1-1"}, "either"),
        ("POST", "/api/v1/disconnect", {}, "either"),
        ("POST", "/api/v1/disconnect", {"user": "alice", "reason": "x" * 124}, "reason"),
        ("POST", "/api/v1/disconnect", {"user": "alice", "reconnect": "no"}, "reconnect"),
    ]
    for method, path, body, word in cases:
        r = _http(st, method, path, body)
        assert r.status == 400 and r.json()["error"] == "invalid_request", (path, body, r)
        assert word in r.json()["message"], (word, r)
    status, ans = _api(st, "api.publish", {"topic": "prices.A", "data": "x" * 70000})
    assert status == 400 and "data" in ans["message"], ans
    status, ans = _api(st, "api.nothing", {})
    assert status == 404, ans


def test_openapi_matches_the_routes(st):
    """docs/openapi.yaml describes exactly the routing table's /api/v1 routes: the same
    methods and paths, the same path params, the scope each route requires."""
    import os
    import re

    import yaml  # python3-yaml, in scripts/deps.sh's test set

    import harness
    with open(os.path.join(harness.ROOT, "docs", "openapi.yaml")) as f:
        doc = yaml.safe_load(f)
    with open(os.path.join(harness.ROOT, "deploy", "config", "routes.json")) as f:
        table = json.load(f)
    assert doc["openapi"].startswith("3.0"), doc["openapi"]
    routes = {(r["method"], r["path"]): r for r in table["routes"]
              if r["path"].startswith("/api/v1/")}
    described = {}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                described[(method.upper(), path)] = op
    assert set(described) == set(routes), (
        "described, not routed: %s; routed, not described: %s"
        % (sorted(set(described) - set(routes)), sorted(set(routes) - set(described))))
    params = doc["components"]["parameters"]
    scopes = doc["components"]["securitySchemes"]["bearer"]["flows"]["clientCredentials"]
    for key, op in described.items():
        r = routes[key]
        assert r["auth"] == "bearer" and r.get("scope") == "sidecast.api", r
        assert r["subject"].startswith("api."), r
        sec = op.get("security", doc["security"])
        assert {"bearer": ["sidecast.api"]} in sec and "sidecast.api" in scopes["scopes"], key
        want = set(re.findall(r"{([^}]+)}", key[1]))
        got = set()
        for p in op.get("parameters", []):
            p = params[p["$ref"].rsplit("/", 1)[1]] if "$ref" in p else p
            if p["in"] == "path":
                assert p["required"] is True, (key, p)
                got.add(p["name"])
        assert got == want, (key, got, want)
    print("  %d routes described" % len(described))


def _cli(st, *args, client="producer"):
    import os
    import subprocess

    import harness
    env = dict(os.environ, SIDECAST_GATEWAY=st.gateway_url, SIDECAST_CLIENT_ID=client,
               SIDECAST_TOKEN_FILE=os.path.join(st.dir, "cli-token.json"))
    env.pop("SIDECAST_CLIENT_SECRET", None)
    p = subprocess.run([os.path.join(harness.BUILD, "sidecast"), "api"] + list(args)
                       + ["--secret-file", os.path.join(st.keys, "producer.secret")],
                       capture_output=True, timeout=30 * harness.SLOW, env=env)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def test_cli(st):
    topic = _topic("cli")
    ws, w = _connect(st, "edge1")
    ws.subscribe(topic)
    key = str(uuid.uuid4())
    rc, out, err = _cli(st, "publish", topic, '{"n":1}', "--key", key)
    assert rc == 0 and json.loads(out)["duplicate"] is False, (rc, out, err)
    assert ws.recv_json(5, type="event")["data"] == {"n": 1}
    rc, out, err = _cli(st, "publish", topic, '{"n":1}', "--key", key)
    assert rc == 0 and json.loads(out)["duplicate"] is True, (rc, out, err)
    rc, out, err = _cli(st, "history", topic, "--since", "0", "--limit", "5")
    assert rc == 0 and [e["data"] for e in json.loads(out)["events"]] == [{"n": 1}], out
    rc, out, err = _cli(st, "presence", "--topic", topic)
    assert rc == 0 and json.loads(out)["topic"] == topic, (rc, out, err)
    rc, out, err = _cli(st, "presence", "--user", "alice")
    assert rc == 0 and json.loads(out)["user"] == "alice", (rc, out, err)
    rc, out, err = _cli(st, "counts")
    assert rc == 0 and json.loads(out)["edges"] == 2, (rc, out, err)
    rc, out, err = _cli(st, "history", topic, "--limit", "5000")
    assert rc == 2 and "limit" in err, (rc, out, err)
    rc, out, err = _cli(st, "disconnect", "--user", "alice", "--no-reconnect", "--reason", "cli")
    assert rc == 0 and json.loads(out)["closed"] == 1, (rc, out, err)
    assert ws.expect_close(5) == (4003, "cli")
    rc, out, err = _cli(st, "disconnect")
    assert rc == 2 and "usage" in err, (rc, out, err)
    rc, out, err = _cli(st, "counts", client="nobody")
    assert rc == 3, (rc, out, err)
