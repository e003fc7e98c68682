"""The command-line client `sidecast` (clients/sidecast, docs/CLI.md) against real auth,
gateway and edge processes: login (good and wrong password, unreachable gateway, the token
file's mode), listen (--json, the human format, --count, a forbidden topic, Ctrl-C, an
unreachable edge with --max-retries), publish with its ack, reconnection across an edge
restart without losing the position, and in-band token renewal.

Auth issues 10 s access tokens here and the edge warns 6 s before expiry, so every command
also exercises the refresh path: a token file older than a few seconds is renewed first.
When build/producer exists the producer runs too and `order --wait` is tested end to end."""
import json
import os
import re
import signal
import stat
import subprocess
import threading
import time

import harness
import natspub

# The producer is built with everything else (make all): a stack without it is a broken
# build, not a reason to pass the order test without running it.
SERVICES = ("auth", "gateway", "edge", "producer")
ENV = {"auth": {"ACCESS_TOKEN_TTL": "10"}, "edge": {"EDGE_TOKEN_WARNING_S": "6"}}

CLI = os.path.join(harness.BUILD, "sidecast")
PASSWORDS = {"alice": "wonderland", "bob": "builder"}


def _env(st, user):
    env = dict(os.environ)
    env.pop("SIDECAST_PASSWORD", None)
    env["SIDECAST_TOKEN_FILE"] = os.path.join(st.dir, "cli", user, "token.json")
    env["SIDECAST_EDGE"] = st.edge_url  # auth hands out ws://localhost:8090/ws
    if harness.SAN:
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:exitcode=23")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    return env


def run(st, user, *args, timeout=30, env=None):
    e = env or _env(st, user)
    p = subprocess.run([CLI] + [str(a) for a in args], env=e, capture_output=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def start(st, user, *args):
    """Starts the CLI in the background. Bounded: a watchdog kills it after 90 s, so a test
    that fails half-way leaves no client retrying behind it."""
    p = subprocess.Popen([CLI] + [str(a) for a in args], env=_env(st, user),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL)
    dog = threading.Timer(90, lambda: p.poll() is None and p.kill())
    dog.daemon = True
    dog.start()
    return p


def login(st, user):
    rc, out, err = run(st, user, "login", "--gateway", st.gateway_url, user, "--password",
                       PASSWORDS[user])
    assert rc == 0, (rc, out, err)
    return rc, out, err


def tokens(st, user):
    with open(_env(st, user)["SIDECAST_TOKEN_FILE"]) as f:
        return json.load(f)


class Publisher:
    """Publishes {"n": i, "tag": tag} on events.<topic> every interval s until stopped, over
    one NATS connection, each publish flushed (a process per publish could exit before its
    message left, under load, and the test would blame the edge)."""

    def __init__(self, st, topic, tag, interval=0.2, subject=None):
        self.st, self.topic, self.tag, self.interval = st, topic, tag, interval
        self.subject = subject or "events." + topic
        self.n = 0
        self.error = None
        self.nc = natspub.Nats(st.nats_url)
        self.stop_evt = threading.Event()
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def loop(self):
        try:
            while not self.stop_evt.is_set() and self.n < 10000:
                self.n += 1
                self.nc.pub(self.subject, {"n": self.n, "tag": self.tag})
                self.nc.flush()
                self.stop_evt.wait(self.interval)
        except Exception as e:  # noqa: BLE001 - reported by stop()
            self.error = e

    def stop(self):
        self.stop_evt.set()
        self.t.join(10)
        self.nc.close()
        assert self.error is None, "publisher: %r" % self.error


def _lines_of(p, want, timeout, out):
    """Reads stdout lines of p into out until want lines or timeout s."""
    deadline = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        out.append(line.decode().rstrip("\n"))
    return out


def _finish(p, timeout=10):
    """SIGINT to p, then (rest of stdout, all of stderr) as bytes. Reads stdout through
    p.stdout itself: communicate() reads the raw pipe and would lose the lines readline()
    (in _lines_of) had already read ahead into p.stdout's buffer."""
    p.send_signal(signal.SIGINT)
    err = []
    t = threading.Thread(target=lambda: err.append(p.stderr.read()), daemon=True)
    t.start()
    out = p.stdout.read()  # to EOF: the CLI exits on SIGINT (the watchdog bounds it)
    t.join(timeout)
    p.wait(timeout)
    return out, err[0] if err else b""


def _no_secret(st, user, *texts):
    t = tokens(st, user)
    for text in texts:
        assert t["access_token"] not in text and t["refresh_token"] not in text, "token printed"


def test_help_and_usage(st):
    rc, out, _ = run(st, "alice", "--help")
    assert rc == 0 and "listen" in out and "Exit codes" in out, out
    for cmd in ("login", "listen", "publish", "order"):
        rc, out, _ = run(st, "alice", cmd, "--help")
        assert rc == 0 and out.startswith("usage: sidecast " + cmd), (cmd, out)
    rc, _, err = run(st, "alice", "frobnicate")
    assert rc == 2 and "unknown command" in err, err
    rc, _, err = run(st, "alice", "listen", "bad..topic")
    assert rc == 2 and "bad topic" in err, err


def test_login_saves_tokens_0600(st):
    before = int(time.time())
    rc, out, err = login(st, "alice")
    assert "logged in as alice" in out, out
    path = _env(st, "alice")["SIDECAST_TOKEN_FILE"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, oct(os.stat(path).st_mode)
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    t = tokens(st, "alice")
    assert t["user"] == "alice" and t["access_token"].count(".") == 2, t.keys()
    assert t["refresh_token"] and t["ws_url"].startswith("ws://"), t.keys()
    # issued now (not before the login began) for auth's 10 s
    assert t["issued_at"] >= before and t["expires_at"] - t["issued_at"] == 10, t.keys()
    assert not [f for f in os.listdir(os.path.dirname(path)) if ".tmp" in f]
    _no_secret(st, "alice", out, err)
    # the password from the environment works too
    env = _env(st, "bob")
    env["SIDECAST_PASSWORD"] = "builder"
    rc, out, err = run(st, "bob", "login", "--gateway", st.gateway_url, "bob", env=env)
    assert rc == 0, (rc, out, err)


def test_login_wrong_password_and_unreachable_gateway(st):
    rc, out, err = run(st, "carol", "login", "--gateway", st.gateway_url, "alice",
                       "--password", "nope")
    assert rc == 3 and "login failed: wrong user or password" in err, (rc, out, err)
    assert not os.path.exists(_env(st, "carol")["SIDECAST_TOKEN_FILE"])
    dead = "http://127.0.0.1:%d" % harness.free_port()
    rc, out, err = run(st, "carol", "login", "--gateway", dead, "alice", "--password", "x")
    assert rc == 4 and "unreachable" in err, (rc, out, err)
    rc, out, err = run(st, "carol", "login", "alice", "--gateway", st.gateway_url, env=dict(
        _env(st, "carol")))
    assert rc == 2 and "no password" in err, (rc, out, err)  # no tty, no env, no flag
    rc, out, err = run(st, "carol", "listen", "prices.BTC", "--timeout", "2")
    assert rc == 3 and "not logged in" in err, (rc, err)


def test_listen_json_count(st):
    login(st, "alice")
    p = start(st, "alice", "listen", "prices.XJS", "--json", "--count", "3")
    pub = Publisher(st, "prices.XJS", "json")
    try:
        out, err = p.communicate(timeout=20)
    finally:
        pub.stop()
    assert p.returncode == 0, (p.returncode, err)
    lines = out.decode().splitlines()
    assert len(lines) == 3, lines
    evs = [json.loads(l) for l in lines]
    assert all(e["type"] == "event" and e["topic"] == "prices.XJS" for e in evs), evs
    assert all(e["data"]["tag"] == "json" for e in evs), evs
    seqs = [e["seq"] for e in evs]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3, seqs
    _no_secret(st, "alice", out.decode(), err.decode())


def test_listen_human_format(st):
    login(st, "alice")
    p = start(st, "alice", "listen", "prices.XHU", "--count", "1")
    stop = threading.Event()

    def pub():
        while not stop.is_set():
            st.busctl("pub", "events.prices.XHU", '{"price":0.1,"sym":"XHU"}')
            stop.wait(0.2)
    t = threading.Thread(target=pub, daemon=True)
    t.start()
    try:
        out, err = p.communicate(timeout=20)
    finally:
        stop.set()
        t.join(5)
    assert p.returncode == 0, (p.returncode, err)
    assert re.fullmatch(r'prices\.XHU #\d+ \{"price":0\.1,"sym":"XHU"\}\n', out.decode()), out


def test_forbidden_topic(st):
    login(st, "bob")
    rc, out, err = run(st, "bob", "listen", "chat.lobby", "--timeout", "10")
    assert rc == 5 and "cannot subscribe to chat.lobby: forbidden" in err, (rc, err)
    # with an allowed topic beside it, bob keeps listening to that one
    p = start(st, "bob", "listen", "chat.lobby", "prices.XBOB", "--count", "1")
    pub = Publisher(st, "prices.XBOB", "bob")
    try:
        out, err = p.communicate(timeout=20)
    finally:
        pub.stop()
    assert p.returncode == 0 and "prices.XBOB #" in out.decode(), (p.returncode, out, err)
    assert "cannot subscribe to chat.lobby: forbidden" in err.decode(), err


def test_publish_waits_for_ack(st):
    login(st, "alice")
    login(st, "bob")
    sub = st.busctl_bg("sub", "client.chat.lobby", 15, 1)
    rc, out, err = run(st, "alice", "publish", "chat.lobby", '{"text":"hi"}', "--id", "m1")
    assert rc == 0 and out.strip() == "ack m1", (rc, out, err)
    line = sub.stdout.readline().decode()
    sub.wait(5)
    assert line.startswith("client.chat.lobby ") and json.loads(line.split(" ", 1)[1]) == {
        "text": "hi"}, line
    rc, out, err = run(st, "alice", "publish", "chat.lobby", "{not json")
    assert rc == 2 and "not one valid JSON" in err, (rc, err)
    rc, out, err = run(st, "bob", "publish", "chat.lobby", '{"text":"hi"}')
    assert rc == 5 and "cannot publish to chat.lobby: forbidden" in err, (rc, out, err)


def test_ctrl_c_exits_cleanly(st):
    login(st, "alice")
    p = start(st, "alice", "listen", "prices.XCC")
    pub = Publisher(st, "prices.XCC", "cc")
    try:
        # listening for real: an event has come through
        assert len(_lines_of(p, 1, 30, [])) == 1, "no event before the Ctrl-C"
    finally:
        pub.stop()
    _, err = _finish(p, timeout=30)  # SIGINT; the timeout is a hang guard
    assert p.returncode == 0, (p.returncode, err)


def test_edge_unreachable_gives_up_after_max_retries(st):
    login(st, "alice")
    env = _env(st, "alice")
    env["SIDECAST_EDGE"] = "ws://127.0.0.1:%d/ws" % harness.free_port()
    rc, out, err = run(st, "alice", "listen", "prices.BTC", "--max-retries", "3", env=env)
    assert rc == 4, (rc, err)
    assert "unreachable" in err and "giving up after 4 failed attempts" in err, err
    # the waits it announces: exponential backoff from 200 ms with full jitter (docs/CLI.md)
    delays = [int(d) for d in re.findall(r"reconnecting in (\d+) ms", err)]
    assert len(delays) == 3 and all(d <= 200 << k for k, d in enumerate(delays)), err


def test_reconnects_after_edge_restart_and_resumes(st):
    """The edge is restarted while events keep coming on a topic and to the user's inbox:
    the CLI reconnects, resubscribes with since, and misses nothing (replay)."""
    login(st, "alice")
    p = start(st, "alice", "listen", "prices.XRC", "user", "--json", "--timeout", "60")
    pub = Publisher(st, "prices.XRC", "rc")
    inbox = Publisher(st, "user", "rc", subject="users.alice")
    lines = []
    try:
        _lines_of(p, 6, 15, lines)
        assert len(lines) == 6, lines
        st.stop_service("edge")
        # events go on while no edge runs: a few more of each published meanwhile
        n_pub, n_inbox = pub.n, inbox.n
        harness.wait_for(lambda: pub.n >= n_pub + 3 and inbox.n >= n_inbox + 3,
                         what="events published while the edge is down")
        before = len(lines)
        st.start_service("edge")
        _lines_of(p, before + 12, 30, lines)
        assert len(lines) >= before + 12, lines
    finally:
        pub.stop()
        inbox.stop()
        out, err = _finish(p)
    err = err.decode()
    lines += [l for l in out.decode().splitlines() if l]
    for topic in ("prices.XRC", "user"):
        evs = [json.loads(l) for l in lines if json.loads(l)["topic"] == topic]
        seqs = [e["seq"] for e in evs]
        ns = [e["data"]["n"] for e in evs]
        missed = sorted(set(range(ns[0], ns[-1] + 1)) - set(ns))
        print("  %s: received n=%d..%d, %d events, missed %d, duplicated %d"
              % (topic, ns[0], ns[-1], len(ns), len(missed), len(ns) - len(set(ns))))
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
        assert ns == list(range(ns[0], ns[-1] + 1)), (topic, missed, ns)
    assert "connection closed: 1001" in err or "connection closed: 1006" in err, err
    assert "reconnected" in err, err
    assert p.returncode == 0, (p.returncode, err)


def test_inband_refresh_keeps_the_connection(st):
    """The CLI listens past its first access token's exp (the edge closes 4001 at exp a
    connection whose token was not renewed in band): an event published after that exp
    comes on the same connection, and none is missed."""
    login(st, "alice")
    first = tokens(st, "alice")
    p = start(st, "alice", "listen", "prices.XRF", "--json")
    pub = Publisher(st, "prices.XRF", "rf", interval=0.5)
    lines = []
    try:
        # the first token's exp, plus the second the edge's whole-second check may take: a
        # lower bound on when to look, reading meanwhile (the output is a pipe)
        while time.time() < first["expires_at"] + 1.5:
            n = len(lines)
            _lines_of(p, n + 1, 30, lines)
            assert len(lines) > n, "the CLI stopped printing events"
        after = pub.n
        while not lines or json.loads(lines[-1])["data"]["n"] <= after:
            n = len(lines)
            _lines_of(p, n + 1, 30, lines)
            assert len(lines) > n, "no event after the first token's exp"
    finally:
        pub.stop()
        out, err = _finish(p)
    err = err.decode()
    assert p.returncode == 0, (p.returncode, err)
    assert "access token refreshed" in err, err
    assert "connection closed" not in err and "reconnect" not in err, err
    evs = [json.loads(l) for l in lines + out.decode().splitlines() if l]
    ns = [e["data"]["n"] for e in evs]
    assert ns == list(range(ns[0], ns[-1] + 1)) and ns[-1] > after, ns
    now = tokens(st, "alice")
    assert now["refresh_token"] != first["refresh_token"], "tokens not rotated in the file"
    assert now["expires_at"] > first["expires_at"]
    path = _env(st, "alice")["SIDECAST_TOKEN_FILE"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    _no_secret(st, "alice", out.decode(), err)


def test_stale_token_file_is_refreshed_first(st):
    login(st, "bob")
    stale = tokens(st, "bob")
    # until the access token in the file has expired (its own exp, in whole seconds: a
    # lower bound; the timeout is a hang guard)
    harness.wait_for(lambda: time.time() >= stale["expires_at"] + 1, timeout=60,
                     interval=0.2, what="the access token in the file expiring")
    p = start(st, "bob", "listen", "prices.XST", "--count", "1")
    pub = Publisher(st, "prices.XST", "st")
    try:
        out, err = p.communicate(timeout=20)
    finally:
        pub.stop()
    err = err.decode()
    assert p.returncode == 0 and "prices.XST #" in out.decode(), (p.returncode, err)
    # renewed before connecting: the edge never refused it (4001 and a reconnection)
    assert "connection closed" not in err and "reconnect" not in err, err
    now = tokens(st, "bob")
    assert now["access_token"] != stale["access_token"], "the stale token was not renewed"
    assert now["expires_at"] > stale["expires_at"], (stale["expires_at"], now["expires_at"])


def test_order_wait_prints_the_fill(st):
    login(st, "alice")
    rc, out, err = run(st, "alice", "order", "BTC", "1", "--wait", "--timeout", "20")
    assert rc == 0, (rc, out, err)
    lines = out.splitlines()
    assert len(lines) == 2, lines
    fill = json.loads(lines[1])
    assert fill["order_id"] == lines[0], (lines, fill)
    rc, out, err = run(st, "alice", "order", "BTC", "1", "--side", "sell")
    assert rc == 0 and out.strip(), (rc, out, err)


def _bench_tokens(st, n, keydir=None, prefix="bench-"):
    """n distinct access tokens minted by `sidecast bench tokens`, in a file; its path."""
    key = os.path.join(keydir or st.keys, "signing-key.pem")
    path = os.path.join(st.dir, "cli", "bench-%s-%d.txt" % (prefix, n))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rc, out, err = run(st, "alice", "bench", "tokens", "--key", key, "--count", n,
                       "--user-prefix", prefix)
    assert rc == 0, (rc, err)
    toks = out.split()
    assert len(toks) == n and len(set(toks)) == n, len(toks)
    with open(path, "w") as f:
        f.write(out)
    return path


def _bench_json(out):
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert len(lines) == 1, out
    return json.loads(lines[0])


def test_bench_fanout_counts_every_delivery(st):
    """`sidecast bench fanout` (docs/CLI.md): 20 connections from 2 processes and 3 source
    addresses, 20 messages through NATS: every connection gets each once, in order, and the
    result names the edge's CPU and RSS. Counts only; speed is not judged."""
    toks = _bench_tokens(st, 8)
    edge_pid = st.procs["edge"].pid
    rc, out, err = run(st, "alice", "bench", "fanout", "--url", st.edge_url, "--tokens", toks,
                       "--conns", 20, "--procs", 2, "--source", "127.0.0.1-127.0.0.3",
                       "--topic", "prices.BENCHT", "--nats", st.nats_url, "--rate", 20,
                       "--seconds", 1, "--drain", 10, "--pid", edge_pid, "--json",
                       timeout=60)
    d = _bench_json(out)
    assert rc == 0, (rc, out, err)
    assert d["mode"] == "fanout" and d["target"] == "sidecast" and d["tokens"] == 8, d
    assert d["ready"] == 20 and d["failed"] == 0 and d["lost_conns"] == 0, d
    assert d["published"] == 20 and d["expected"] == 400 and d["deliveries"] == 400, d
    assert d["loss"] == 0 and d["gaps"] == 0 and d["disorder"] == 0, d
    assert d["min_per_conn"] == 20 and d["max_per_conn"] == 20, d
    assert d["lat_samples"] == 400 and d["lat_p50_ms"] > 0, d
    # every read carried the kernel's receipt time, which comes before the read
    assert d["lat_sock_samples"] == 400, d
    assert 0 < d["lat_sock_p50_ms"] <= d["lat_p50_ms"], d
    assert d["servers"][0]["pid"] == edge_pid and d["servers"][0]["rss_end_kib"] > 0, d
    assert d["complete"] is True, d
    assert "up 20/20" in err, err  # the progress line


def test_bench_connect_distinct_tokens_and_foreign_key(st):
    """`sidecast bench connect` with distinct tokens: every handshake gets its welcome; with
    tokens signed by a key the edge does not know, none does and the exit code says so."""
    toks = _bench_tokens(st, 30, prefix="conn-")
    rc, out, err = run(st, "alice", "bench", "connect", "--url", st.edge_url, "--tokens", toks,
                       "--conns", 30, "--pid", st.procs["edge"].pid, "--json", "--quiet",
                       timeout=60)
    d = _bench_json(out)
    assert rc == 0 and d["ready"] == 30 and d["tokens"] == 30, (rc, d, err)
    assert d["latency"] == "handshake" and d["lat_samples"] == 30, d
    assert d["handshakes_per_s"] > 0 and d["unclean_closes"] == 0, d
    other = os.path.join(st.dir, "cli", "otherkey")
    subprocess.run(["bash", os.path.join(harness.ROOT, "scripts", "gen-dev.sh"), other],
                   check=True, capture_output=True)
    bad = _bench_tokens(st, 5, keydir=other, prefix="forged-")
    rc, out, err = run(st, "alice", "bench", "connect", "--url", st.edge_url, "--tokens", bad,
                       "--conns", 5, "--json", "--quiet", "--setup-timeout", 20, timeout=60)
    d = _bench_json(out)
    assert rc == 3 and d["ready"] == 0 and d["failed"] == 5 and d["complete"] is False, (rc, d)
    rc, _, err = run(st, "alice", "bench", "connect", "--url", "ws://10.0.0.1:1/ws",
                     "--token", "x")
    assert rc == 2 and "loopback" in err, err
