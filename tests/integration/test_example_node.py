"""examples/node-backend: a back end in Node with npm's nats (no Sidecast code) against the
real stack - "any NATS client in any language" is true. Its rpc method answers a client's
call through the edge, its events reach a subscriber and the history stream (replay with
since), its publish hook checks (and stamps, or refuses) a client's report, which then comes
back as an event it made. The packages come from the
lock file (npm ci, once per pin)."""
import json
import os
import subprocess
import tempfile

import harness
from wsclient import WS

SERVICES = ("auth", "edge")
EXAMPLE = os.path.join(harness.ROOT, "examples", "node-backend")
# weather.reports asks the example's publish hook (the rest of weather.* as the token says)
TOPICS = os.path.join(tempfile.mkdtemp(prefix="sidecast-example-"), "topics.json")
with open(TOPICS, "w") as _f:
    json.dump({"namespaces": [{"prefix": "weather.reports", "publish": "hook"}]}, _f)
ENV = {"edge": {"EDGE_TOPICS": TOPICS}}


def _npm_ci():
    with open(os.path.join(EXAMPLE, "package.json")) as f:
        want = json.load(f)["dependencies"]["nats"]
    have = os.path.join(EXAMPLE, "node_modules", "nats", "package.json")
    if os.path.exists(have):
        with open(have) as f:
            if json.load(f).get("version") == want:
                return
    r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=EXAMPLE,
                       capture_output=True, timeout=300)
    assert r.returncode == 0, "npm ci in examples/node-backend failed:\n%s" % r.stdout[-2000:]


def _start(st):
    if "weather" in st.procs and st.procs["weather"].alive():
        return
    _npm_ci()
    env = {"NATS_URL": st.nats_url, "WEATHER_PERIOD_MS": str(300 * harness.SLOW)}
    p = harness.Proc("weather", ["node", os.path.join(EXAMPLE, "weather.mjs")], env, st.dir,
                     ready_line="ready")
    st.procs["weather"] = p


def _ws(st, since=None):
    tok = harness.mint(st, sub="alice", sub_topics=("weather.*",),
                       pub_topics=("weather.reports",), rpc_methods=("weather.*",))
    ws = WS.connect(st.edge_url, token=tok)
    ws.recv_json(5, type="welcome")
    return ws


def test_its_rpc_method_answers_through_the_edge(st):
    _start(st)
    ws = _ws(st)
    ws.send_json({"type": "rpc", "id": 1, "method": "weather.now", "data": {"city": "oslo"}})
    r = ws.recv_json(10)
    assert r["type"] == "rpc_result" and r["data"]["city"] == "oslo", r
    assert r["data"]["asked_by"] == "alice", r  # Node read Sidecast-User
    ws.send_json({"type": "rpc", "id": 2, "method": "weather.now", "data": {"city": "atlantis"}})
    r = ws.recv_json(10)
    assert r["type"] == "error" and r["code"] == "not_found" and r["message"] == "no such city", r
    ws.close()
    print("  rpc weather.now served by Node: oslo answered (asked_by alice), atlantis not_found")


def test_its_events_reach_subscribers_and_the_history(st):
    _start(st)
    ws = _ws(st)
    ws.subscribe("weather.paris")
    first = ws.recv_json(10, type="event")
    assert first["topic"] == "weather.paris" and first["data"]["city"] == "paris", first
    assert first["seq"] > 0, first  # stored in the history stream by Node's JetStream publish
    second = ws.recv_json(10, type="event")
    ws.close()
    late = _ws(st)  # a client that comes later replays what it missed
    late.send_json({"type": "subscribe", "topic": "weather.paris", "since": first["seq"] - 1})
    got = []
    while len(got) < 2:
        m = late.recv_json(10)
        if m["type"] == "event":
            got.append(m["seq"])
    assert got[0] == first["seq"] and got[1] == second["seq"], (got, first, second)
    late.close()
    print("  events.weather.paris from Node, stored (seq %d, %d), replayed with since"
          % (first["seq"], second["seq"]))


def test_a_client_report_comes_back_as_its_event(st):
    _start(st)
    ws = _ws(st)
    ws.subscribe("weather.lima")
    ws.send_json({"type": "publish", "topic": "weather.reports", "id": "r1",
                  "data": {"city": "lima", "temp_c": 23.5}})
    for _ in range(50):  # ticks of lima come too: skip them until the report
        m = ws.recv_json(10)
        if m["type"] == "event" and "report" in m["data"]:
            break
    assert m["data"]["report"] == {"city": "lima", "temp_c": 23.5, "verified": True}, m
    assert m["data"]["by"] == "alice", m  # checked and stamped by Node's hook, then relayed
    ws.send_json({"type": "publish", "topic": "weather.reports", "id": "r2",
                  "data": {"city": "lima", "temp_c": 99}})
    while True:
        r = ws.recv_json(10)
        if r.get("id") == "r2":
            break
    assert r["type"] == "error" and r["code"] == "forbidden", r
    assert r["message"] == "temp_c out of range", r  # Node's publish hook said no
    ws.close()
    print("  a client's report: checked by Node's publish hook (stamped verified), relayed "
          "as an event; an impossible one refused with Node's reason")


