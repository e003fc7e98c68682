"""The C client library (clients/c, libsidecast, docs/CLIENT-C.md) against real auth, edges
and producer, through tests/tools/sc_probe (a small program linked with libsidecast.a alone):
events, publish with its ack, rpc (the producer answers rpc.prices.quote), a refused
subscribe, in-band token renewal with no reconnection, the blocking and the event-loop ways
of driving it, a resumed position the stream no longer holds (history_gone), a token
provider that gives up, two edges where the one in use is killed mid-stream and the client
moves to the other without losing or repeating an event, and `make install` into a DESTDIR
with the example built against the installed header and pkg-config file.

Auth issues 10 s access tokens and the edges warn 6 s before expiry, so every run that lasts
a few seconds renews its token in band; a thread keeps the token file fresh (the probe's
token provider reads it at every call)."""
import json
import os
import re
import signal
import subprocess
import threading
import time

import harness
import natspub

SERVICES = ("auth", "edge1", "edge2", "producer")
ENV = {"auth": {"ACCESS_TOKEN_TTL": "10"},
       "edge": {"EDGE_TOKEN_WARNING_S": "6", "JWT_DEFAULT_RPC_METHODS": "prices.*"}}

PROBE = os.path.join(harness.BUILD, "tests", "tools", "sc_probe")
EREMOTEIO = 121


class TokenFile:
    """A file holding a fresh access token of user from auth, rewritten every 2 s (atomic
    rename) until stop(): what the probe's token provider reads."""

    def __init__(self, st, user="alice", name="tok"):
        self.st, self.user = st, user
        self.path = os.path.join(st.dir, "client-c-%s-%s.txt" % (user, name))
        self.first = None
        self.error = None
        self.write()
        self.stop_evt = threading.Event()
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def write(self):
        t = self.st.token(self.user)
        if self.first is None:
            self.first = t
        with open(self.path + ".tmp", "w") as f:
            f.write(t["access_token"] + "\n")
        os.replace(self.path + ".tmp", self.path)

    def loop(self):
        while not self.stop_evt.wait(2):
            try:
                self.write()
            except Exception as e:  # noqa: BLE001 - reported by stop()
                self.error = e

    def stop(self):
        self.stop_evt.set()
        self.t.join(10)
        assert self.error is None, "token file: %r" % self.error


class Publisher:
    """Publishes {"n": i} on subject every interval s over one NATS connection."""

    def __init__(self, st, subject, interval=0.2):
        self.subject, self.interval, self.n, self.error = subject, interval, 0, None
        self.nc = natspub.Nats(st.nats_url)
        self.stop_evt = threading.Event()
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def loop(self):
        try:
            while not self.stop_evt.is_set() and self.n < 10000:
                self.n += 1
                self.nc.pub(self.subject, {"n": self.n})
                self.nc.flush()
                self.stop_evt.wait(self.interval)
        except Exception as e:  # noqa: BLE001 - reported by stop()
            self.error = e

    def stop(self):
        self.stop_evt.set()
        self.t.join(10)
        self.nc.close()
        assert self.error is None, "publisher: %r" % self.error


def _env():
    env = dict(os.environ)
    if harness.SAN:
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:exitcode=23")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    return env


def start(*args):
    """The probe in the background; a watchdog kills it after 90 s (a hang guard)."""
    p = subprocess.Popen([PROBE] + [str(a) for a in args], env=_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    dog = threading.Timer(90, lambda: p.poll() is None and p.kill())
    dog.daemon = True
    dog.start()
    return p


def finish(p, timeout=30):
    """Waits for the probe to end; its stdout lines (it must have ended cleanly). Reads
    through p.stdout itself: communicate() would read the raw pipe and lose what readline()
    (read_until) had already buffered."""
    err = []
    t = threading.Thread(target=lambda: err.append(p.stderr.read()), daemon=True)
    t.start()
    out = p.stdout.read()  # to EOF: the probe ends (its --timeout, the watchdog bound it)
    t.join(timeout)
    p.wait(timeout)
    lines = out.decode().splitlines()
    assert p.returncode == 0 and lines and lines[-1].startswith("done"), (
        p.returncode, lines, (err[0] if err else b"").decode())
    return lines


def read_until(p, lines, cond, timeout):
    """Reads stdout lines of p into lines until cond(lines) or timeout s (a hang guard)."""
    deadline = time.monotonic() + timeout
    while not cond(lines) and time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        lines.append(line.decode().rstrip("\n"))
    return cond(lines)


def events(lines, topic):
    """[(seq, n)] of the event lines of topic."""
    out = []
    for l in lines:
        parts = l.split(" ", 3)
        if parts[0] == "event" and parts[1] == topic:
            n = json.loads(parts[3])["n"]
            out.append((int(parts[2]), n))
    return out


def assert_complete(evs, what):
    seqs = [s for s, _ in evs]
    ns = [n for _, n in evs]
    assert len(ns) >= 2, (what, evs)
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), (what, "seq", seqs)
    assert ns == list(range(ns[0], ns[-1] + 1)), (what, "lost or repeated", ns)


def test_events_publish_rpc_and_refused_subscribe(st):
    tf = TokenFile(st)
    sub = st.busctl_bg("sub", "client.chat.lobby", 20, 1)
    pub = Publisher(st, "events.prices.XC1")
    try:
        p = start("--url", st.edge_url_of("edge1"), "--token-file", tf.path,
                  "--sub", "prices.XC1", "--sub", "secret.XC1", "--events", 4,
                  "--publish", "chat.lobby", '{"text":"hi","x":0.1}', "m1",
                  "--publish", "chat.lobby", '{"text":"again"}', "-",
                  "--publish", "secret.XC1", '{"text":"no"}', "m3",
                  "--rpc", "prices.quote", '{"symbol":"BTC"}',
                  "--rpc", "prices.quote", '{"symbol":"NOPE"}', "--timeout", 30)
        # --events: it ends by itself once 4 events came and everything was answered
        lines = finish(p)
    finally:
        pub.stop()
        tf.stop()
    print("  " + "\n  ".join(l for l in lines if not l.startswith("event")))
    assert "token 1" in lines and lines.count("state ready 0 edge-1") == 1, lines
    assert "sub prices.XC1 live - 0" in lines, lines
    assert "sub secret.XC1 refused forbidden 0" in lines, lines
    assert_complete(events(lines, "prices.XC1"), "prices.XC1")
    assert len(events(lines, "prices.XC1")) >= 4
    assert "ack m1 0 0 -" in lines, lines
    made = [l for l in lines if l.startswith("ack c")]  # the id the library made
    assert len(made) == 1 and made[0].endswith(" 0 0 -"), lines
    assert "ack m3 %d 0 forbidden" % -EREMOTEIO in lines, lines
    quotes = [l for l in lines if l.startswith("rpc 0 - ")]
    assert len(quotes) == 1 and '"symbol":"BTC"' in quotes[0] and '"price":' in quotes[0], lines
    assert "rpc %d not_found no such symbol" % -EREMOTEIO in lines, lines
    got = sub.stdout.readline().decode()
    sub.wait(10)
    # the data exactly as given (0.1 stays 0.1)
    assert got.strip() == 'client.chat.lobby {"text":"hi","x":0.1}', got
    assert lines[-1] == "done 0", lines


def test_blocking_run_renews_the_token_in_band(st):
    """sc_client_run for longer than the first token lives: the provider is asked again
    (token_expiring), the token goes in band, and the connection stays the same."""
    tf = TokenFile(st)
    pub = Publisher(st, "events.prices.XC2", interval=0.5)
    try:
        p = start("--blocking", "--url", st.edge_url_of("edge1"), "--token-file", tf.path,
                  "--sub", "prices.XC2", "--timeout", 1)
        lines = finish(p)  # the alarm ends a blocking run: a plain stop, done 0
        assert lines[-1] == "done 0", lines
        p = start("--blocking", "--url", st.edge_url_of("edge1"), "--token-file", tf.path,
                  "--sub", "prices.XC2", "--timeout", tf.first["expires_in"] + 4)
        lines = finish(p, timeout=60)
    finally:
        pub.stop()
        tf.stop()
    print("  " + "\n  ".join(l for l in lines if not l.startswith("event")))
    calls = [l for l in lines if l.startswith("token ")]
    assert len(calls) >= 2, lines
    assert lines.count("state ready 0 edge-1") == 1, lines
    assert not [l for l in lines if l.startswith("state backoff")], lines
    evs = events(lines, "prices.XC2")
    assert_complete(evs, "prices.XC2")
    # an event came after the first token's exp, on that same connection
    i_second = lines.index(calls[1])
    assert events(lines[i_second:], "prices.XC2"), "no event after the renewal"
    assert lines[-1] == "done 0", lines


def test_a_position_no_longer_retained_is_reported_as_a_gap(st):
    """A subscription resumed from a position whose next events left the stream (purged, as
    if aged out) gets RESUMED, then GAP history_gone with the oldest retained seq, then live
    events from there."""
    tf = TokenFile(st)
    nc = natspub.Nats(st.nats_url)
    for i in range(1, 6):
        nc.pub("events.prices.XC6", {"n": -i})
    nc.flush()
    since = nc.last_seq("SIDECAST", "events.prices.XC6") - 2  # the client saw the first 3
    nc.purge("SIDECAST", "events.prices.XC6")  # the 4th and 5th are gone
    nc.close()
    pub = Publisher(st, "events.prices.XC6")
    try:
        p = start("--url", st.edge_url_of("edge2"), "--token-file", tf.path,
                  "--sub", "prices.XC6@%d" % since, "--events", 5, "--timeout", 30)
        lines = finish(p)
    finally:
        pub.stop()
        tf.stop()
    print("  " + "\n  ".join(l for l in lines if not l.startswith("event")))
    gaps = [l.split() for l in lines if l.startswith("sub prices.XC6 gap ")]
    assert len(gaps) == 1 and gaps[0][3] == "history_gone", lines
    oldest = int(gaps[0][4])
    assert oldest > since + 2, (since, lines)
    assert "sub prices.XC6 resumed - 0" in lines, lines
    evs = events(lines, "prices.XC6")
    assert len(evs) >= 5 and evs[0][0] >= oldest and evs[0][1] >= 1, evs
    assert_complete(evs, "prices.XC6")
    assert lines[-1] == "done 0", lines


def test_since_last_then_live_with_mode_latest(st):
    """SC_CLIENT_SUB_FROM_LAST (since "last"): the topic's latest retained event first, then
    live ones in order; with SC_CLIENT_SUB_LATEST (mode "latest") beside it, which a client
    that keeps up never notices (nothing skipped)."""
    tf = TokenFile(st)
    nc = natspub.Nats(st.nats_url)
    for i in range(1, 4):
        nc.pub("events.prices.XC7", {"n": -i})
    nc.flush()
    nc.close()
    p = start("--url", st.edge_url_of("edge1"), "--token-file", tf.path,
              "--sub", "prices.XC7@last+latest", "--events", 4, "--timeout", 30)
    lines = []
    pub = None
    try:
        # the latest retained event comes first, before anything is published live
        assert read_until(p, lines, lambda ls: events(ls, "prices.XC7"), 20), lines
        pub = Publisher(st, "events.prices.XC7")
        lines += finish(p)
    finally:
        if pub:
            pub.stop()
        if p.poll() is None:
            p.kill()
        tf.stop()
    evs = events(lines, "prices.XC7")
    print("  prices.XC7: n = %s" % [n for _, n in evs])
    assert evs[0][1] == -3, evs  # the latest retained one, not the two before it
    assert [n for _, n in evs[1:]] == list(range(evs[1][1], evs[1][1] + len(evs) - 1)), evs
    assert evs[1][1] >= 1 and [s for s, _ in evs] == sorted(s for s, _ in evs), evs
    assert "sub prices.XC7 live - 0" in lines and lines[-1] == "done 0", lines


def test_token_provider_gives_up(st):
    path = os.path.join(st.dir, "client-c-refuse.txt")
    with open(path, "w") as f:
        f.write("refuse\n")
    p = start("--blocking", "--url", st.edge_url_of("edge1"), "--token-file", path,
              "--sub", "prices.XC4", "--publish", "chat.lobby", "{}", "q1", "--timeout", 20)
    lines = finish(p)
    assert lines[:2] == ["state connecting 0 starting", "token 1"], lines
    assert "state stopped 4001 the token provider gave up" in lines, lines
    assert "ack q1 %d 0 -" % -125 in lines, lines  # -ECANCELED: never sent
    assert lines[-1] == "done -13", lines  # -EACCES from sc_client_run


def test_two_edges_one_killed_mid_stream(st):
    """Connected to edge1 (first of two URLs), subscribed to a topic and the inbox: edge1 is
    killed with SIGKILL; the client sees 1006, moves to edge2, resubscribes with since, and
    every event arrives once, in order."""
    tf = TokenFile(st)
    pub = Publisher(st, "events.prices.XC3")
    inbox = Publisher(st, "users.alice")
    lines = []
    p = start("--url", st.edge_url_of("edge1"), "--url", st.edge_url_of("edge2"),
              "--token-file", tf.path, "--sub", "prices.XC3", "--sub", "user",
              "--base-ms", 100, "--timeout", 80)
    try:
        assert read_until(p, lines, lambda ls: len(events(ls, "prices.XC3")) >= 5 and
                          len(events(ls, "user")) >= 5, 30), lines
        st.kill("edge1", signal.SIGKILL)
        assert read_until(p, lines, lambda ls: any(l.startswith("state ready 0 edge-2")
                                                   for l in ls), 30), lines
        k = len(lines)
        assert read_until(p, lines, lambda ls: len(events(ls[k:], "prices.XC3")) >= 5 and
                          len(events(ls[k:], "user")) >= 5, 30), lines
    finally:
        pub.stop()
        inbox.stop()
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        tf.stop()
        rest = finish(p)
        st.start_service("edge1")
    lines += rest
    print("  " + "\n  ".join(l for l in lines if not l.startswith("event")))
    assert [l for l in lines if l.startswith("state backoff 1006")], lines
    assert "sub prices.XC3 resumed - 0" in lines and "sub user resumed - 0" in lines, lines
    for topic in ("prices.XC3", "user"):
        evs = events(lines, topic)
        print("  %s: n=%d..%d, %d events" % (topic, evs[0][1], evs[-1][1], len(evs)))
        assert_complete(evs, topic)
    assert lines[-1] == "done 0", lines


def test_installed_library_builds_the_example(st):
    """`make install DESTDIR=...` puts the header, the archive and sidecast.pc in place; the
    example, compiled against the installed header and linked as the .pc file says (nothing
    from the source tree), subscribes and prints an event, and exits 0 on Ctrl-C."""
    dest = os.path.join(st.dir, "destdir")
    prefix = "/opt/sidecast-test"
    make = ["make", "--no-print-directory", "-C", harness.ROOT,
            "BUILD=" + os.path.relpath(harness.BUILD, harness.ROOT),
            "PREFIX=" + prefix, "DESTDIR=" + dest, "install"]
    if harness.SAN:
        make += ["SAN=1", "OPT=-O1 -g"]
    subprocess.run(make, check=True, capture_output=True, timeout=300)
    root = dest + prefix
    for f in ("include/sidecast.h", "lib/libsidecast.a", "lib/pkgconfig/sidecast.pc"):
        assert os.path.isfile(os.path.join(root, f)), f
    with open(os.path.join(root, "lib/pkgconfig/sidecast.pc")) as f:
        assert "prefix=%s\n" % prefix in f.read()
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(root, "lib/pkgconfig"))
    # DESTDIR is a staging area: pkg-config is told where the prefix sits for now
    pc = subprocess.run(["pkg-config", "--define-variable=prefix=" + root, "--cflags", "--libs",
                         "sidecast"], env=env, check=True, capture_output=True, text=True)
    flags = pc.stdout.split()
    assert "-lsidecast" in flags and "-I%s/include" % root in flags, flags
    exe = os.path.join(st.dir, "example-installed")
    cc = ["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-o", exe,
          os.path.join(harness.ROOT, "clients", "c", "example.c")] + flags
    if harness.SAN:
        cc[1:1] = ["-fsanitize=address,undefined"]
    out = subprocess.run(cc, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    tf = TokenFile(st, name="example")
    pub = Publisher(st, "events.prices.XC5")
    e = _env()
    e.update(SIDECAST_URL=st.edge_url_of("edge2"), SIDECAST_TOKEN_FILE=tf.path)
    p = subprocess.Popen([exe, "prices.XC5"], env=e, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    dog = threading.Timer(60, lambda: p.poll() is None and p.kill())
    dog.daemon = True
    dog.start()
    try:
        line = p.stdout.readline().decode()
    finally:
        pub.stop()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
        tf.stop()
    assert re.fullmatch(r'prices\.XC5 #\d+ \{"n": \d+\}\n', line), (line, err.decode())
    assert p.returncode == 0, (p.returncode, err.decode())
    assert "example: ready" in err.decode() and "example: stopped" in err.decode(), err
