"""The asynchronous gateway (docs/GATEWAY.md, "Threads and bounds"): connections are
suspended while their route runs over the bus, so a few epoll threads hold every
connection. Ten thousand idle keep-alive connections are held and a new client is served;
3,000 slowloris request heads do not lock a legitimate client out; a thousand requests wait
on a service that answers after a second, all answered, while another route answers; the
in-flight bounds answer 503 and 429 and are released; clients that leave mid-request and
replies that come after the route's deadline touch nothing (the ASan and valgrind runs
check); compositions (parallel and sequence) run the same way. Counts and order, never
durations: the timings are in bench/gateway_goals.py."""
import errno
import os
import resource
import selectors
import signal
import socket

import harness

SERVICES = ("gateway",)
ECHO_SUBJECTS = ("echo.get", "echo.slow", "svc.delay", "par.delay")
ROUTES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gateway_async_routes.json")
ENV = {"gateway": {"LOG_LEVEL": "warn"}}  # GATEWAY_THREADS and the limits: their defaults

# the test process opens the client side of every connection: as many files as allowed
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))
# valgrind runs every gateway instruction ~50x slower: the same paths with fewer sockets
SCALE = 20 if harness.VALGRIND else 1
IDLE = min(10000, _hard - 1000) // SCALE
SLOWLORIS = 3000 // SCALE
INFLIGHT = 1000 // SCALE


def get(path, host="127.0.0.1"):
    return ("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, host)).encode()


class Conn:
    """One client connection, driven by a selector: writes out, reads answers."""

    def __init__(self, port, src=None):
        self.s = socket.socket()
        if src:
            self.s.bind((src, 0))
        self.s.setblocking(False)
        rc = self.s.connect_ex(("127.0.0.1", port))
        self.err = None if rc in (0, errno.EINPROGRESS) else rc  # why it closed, if it did
        self.out = b""
        self.buf = b""
        self.answers = []  # statuses, in order
        self.heads = []  # (head text in lower case, body), in order
        self.closed = False

    def why(self):
        return os.strerror(self.err) if self.err else "end of stream" if self.closed else "open"

    def answer_ready(self):
        head, sep, rest = self.buf.partition(b"\r\n\r\n")
        if not sep:
            return False
        n = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                n = int(v)
        if len(rest) < n:
            return False
        self.answers.append(int(head.split(b" ", 2)[1]))
        self.heads.append((head.decode(errors="replace").lower(), rest[:n]))
        self.buf = rest[n:]
        return True


def drive(conns, until, timeout):
    """Runs the selector until until() is true (or timeout); returns until()."""
    sel = selectors.DefaultSelector()
    for c in conns:
        sel.register(c.s, selectors.EVENT_READ | (selectors.EVENT_WRITE if c.out else 0), c)
    deadline = harness.time.monotonic() + timeout * harness.SLOW
    try:
        while not until() and harness.time.monotonic() < deadline:
            for key, ev in sel.select(0.2):
                c = key.data
                try:
                    if ev & selectors.EVENT_WRITE and c.out:
                        n = c.s.send(c.out)
                        c.out = c.out[n:]
                        if not c.out:
                            sel.modify(c.s, selectors.EVENT_READ, c)
                    if ev & selectors.EVENT_READ:
                        d = c.s.recv(65536)
                        if not d:
                            c.closed = True
                            sel.unregister(c.s)
                            continue
                        c.buf += d
                        while c.answer_ready():
                            pass
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError as e:
                    c.closed = True
                    c.err = e.errno
                    sel.unregister(c.s)
    finally:
        sel.close()
    return until()


def open_conns(st, n, path=None, batch=500, src=None):
    """n connections, each with one answered request on path (None: connected only)."""
    conns = []
    while len(conns) < n:
        part = [Conn(st.gateway_port, src) for _ in range(min(batch, n - len(conns)))]
        if path:
            for c in part:
                c.out = get(path)
            assert drive(part, lambda: all(c.answers or c.closed for c in part), 60), \
                "a batch of connections was not answered"
            bad = [c for c in part if c.answers != [200]]
            assert not bad, "%d of a batch of %d not answered 200 (%d before it); the first: %s" % (
                len(bad), len(part), len(conns),
                [(c.answers, c.why()) for c in bad[:5]])
        conns += part
    return conns


def close_all(conns):
    for c in conns:
        c.s.close()


def metric(st, name):
    r = st.gw("GET", "/metrics")
    for line in r.body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def gateway_threads(st):
    p = st.procs["gateway"]
    pid = p.pid() if callable(p.pid) else p.pid
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return None


# ---- connections ------------------------------------------------------------------------------

def test_idle_keepalive_connections_held_and_new_client_served(st):
    conns = open_conns(st, IDLE, "/pub/echo")
    try:
        harness.wait_for(lambda: metric(st, "sc_gateway_connections") >= IDLE,
                         what="every connection counted open by the gateway")
        # a new client, with them all open
        assert st.gw("GET", "/pub/echo").status == 200
        # the idle ones are still usable: the first and last few, once more each
        sample = conns[:50] + conns[-50:]
        for c in sample:
            c.out = get("/pub/echo")
        assert drive(sample, lambda: all(len(c.answers) == 2 for c in sample), 30)
        assert all(c.answers == [200, 200] for c in sample)
        assert not any(c.closed for c in conns), "the gateway closed idle connections"
        threads = gateway_threads(st)
        # a handful (GATEWAY_THREADS: one per core, and nats.c's), not one per connection
        assert threads is not None and threads <= min(os.cpu_count(), 64) + 16, threads
    finally:
        close_all(conns)
    print("  %d idle keep-alive connections held by %d gateway threads; a new client served"
          % (IDLE, threads))


def test_slowloris_heads_do_not_lock_out_a_client(st):
    heads = [Conn(st.gateway_port) for _ in range(SLOWLORIS)]
    try:
        for c in heads:
            c.out = b"GET /pub/echo HTTP/1.1\r\nHost: x\r\n"
        drive(heads, lambda: all(not c.out for c in heads), 30)
        harness.wait_for(lambda: metric(st, "sc_gateway_connections") >= SLOWLORIS,
                         what="the slow heads counted open")
        for rnd in range(3):  # a header byte each, every round, as a slowloris does
            for c in heads:
                c.out = b"X"
            drive(heads, lambda: all(not c.out for c in heads), 30)
            r = st.gw("GET", "/pub/echo")
            assert r.status == 200, r
        # none of the heads was answered: they are still waiting for their end
        assert not any(c.answers for c in heads)
    finally:
        close_all(heads)
    print("  %d slow request heads open; a legitimate client answered each round" % SLOWLORIS)


# ---- requests in flight -------------------------------------------------------------------------

def test_thousand_in_flight_to_a_slow_service(st):
    conns = [Conn(st.gateway_port) for _ in range(INFLIGHT)]
    other = Conn(st.gateway_port)
    try:
        for c in conns:
            c.out = get("/pub/delay")
        assert drive(conns, lambda: all(not c.out for c in conns), 30)
        # another route, sent after all of them: answered before they are
        other.out = get("/pub/echo")
        everyone = conns + [other]
        assert drive(everyone, lambda: other.answers or other.closed, 30)
        assert other.answers == [200]
        waiting_then = sum(1 for c in conns if not c.answers)
        assert drive(conns, lambda: all(c.answers or c.closed for c in conns), 60)
        assert all(c.answers == [200] for c in conns), \
            sorted(set(tuple(c.answers) for c in conns))
    finally:
        close_all(conns + [other])
    if not harness.VALGRIND:
        assert waiting_then > 0, "every delayed request was answered before the other route"
    print("  %d requests to a 1 s service all answered; another route answered while %d of "
          "them waited" % (INFLIGHT, waiting_then))


def test_compositions_run_asynchronously(st):
    n = 100 // SCALE
    conns = [Conn(st.gateway_port) for _ in range(2 * n)]
    try:
        for i, c in enumerate(conns):
            c.out = get("/pub/par" if i % 2 == 0 else "/pub/seq")
        assert drive(conns, lambda: all(c.answers or c.closed for c in conns), 60)
        assert all(c.answers == [200] for c in conns), [c.answers for c in conns][:5]
    finally:
        close_all(conns)
    doc = st.gw("GET", "/pub/par").json()
    assert doc["a"] == {"delayed": True} and doc["b"] == {"delayed": True}, doc
    assert doc["c"]["subject"] == "echo.get", doc
    doc = st.gw("GET", "/pub/seq").json()
    assert doc["a"] == {"delayed": True} and doc["b"]["subject"] == "echo.get", doc


def test_deadlines(st):
    """A route whose service answers after the deadline: 504 at the deadline, and the late
    reply is dropped (it finds no pending request); a sequence whose first step takes most
    of its time: the second step has what is left, and 504."""
    r = st.gw("GET", "/pub/late")
    assert r.status == 504 and r.json()["error"] == "gateway_timeout", r
    r = st.gw("GET", "/pub/seq-late")
    assert r.status == 504, r
    # the late replies arrive (echo.slow answers after 3 s, par.delay after 1 s): the
    # gateway keeps serving and nothing waits any more
    harness.time.sleep(3.5)
    assert st.gw("GET", "/pub/echo").status == 200
    harness.wait_for(lambda: metric(st, "sc_gateway_requests_waiting") == 0,
                     what="no request left waiting")


def test_clients_leaving_mid_request(st):
    """Clients close their sockets while their requests wait on the service: each answer
    resumes a connection whose client is gone; the gateway goes on (ASan/valgrind check the
    memory)."""
    n = 200 // SCALE
    conns = [Conn(st.gateway_port) for _ in range(n)]
    for i, c in enumerate(conns):
        c.out = get("/pub/delay" if i % 2 else "/pub/par")
    drive(conns, lambda: all(not c.out for c in conns), 30)
    harness.wait_for(lambda: metric(st, "sc_gateway_requests_waiting") >= n // 2,
                     what="the requests waiting on the service")
    for c in conns:
        c.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.s.close()  # a reset, at once
    harness.wait_for(lambda: metric(st, "sc_gateway_requests_waiting") == 0, timeout=30,
                     what="the abandoned requests answered and released")
    # the /metrics request's own connection is the one left
    harness.wait_for(lambda: metric(st, "sc_gateway_connections") <= 1, timeout=30,
                     what="the abandoned connections closed")
    assert st.gw("GET", "/pub/echo").status == 200


def test_inflight_bounds(st):
    """GATEWAY_MAX_INFLIGHT=6 and GATEWAY_MAX_INFLIGHT_PER_IP=4 on a gateway of its own:
    a fifth request from one address waiting on a held service gets 429, the seventh in
    all 503, each with Retry-After; once the service answers, the counts are released."""
    port = harness.free_port()
    env = st.service_env("gateway")
    env.update({"GATEWAY_LISTEN": "127.0.0.1:%d" % port, "GATEWAY_MAX_INFLIGHT": "6",
                "GATEWAY_MAX_INFLIGHT_PER_IP": "4", "LOG_LEVEL": "warn"})
    gw = harness.Proc("gateway-bounds", [os.path.join(harness.BUILD, "gateway")], env, st.dir)
    held = harness.Proc("echosvc-held", [os.path.join(harness.BUILD, "tests", "tools",
                                                      "echosvc"), st.nats_url_one(), "held.get"],
                        {}, st.dir, ready_line="ready")
    url = "http://127.0.0.1:%d" % port
    harness.wait_for(lambda: harness.http("GET", url + "/readyz").status == 200,
                     what="the bounded gateway ready")
    conns = []

    def waiting():
        r = harness.http("GET", url + "/metrics")
        for line in r.body.decode().splitlines():
            if line.startswith("sc_gateway_requests_waiting "):
                return float(line.split()[1])
        return -1

    def one(src):
        c = Conn(port, src)
        c.out = get("/pub/held")
        conns.append(c)
        drive([c], lambda: not c.out, 10)
        return c

    try:
        held.signal(signal.SIGSTOP)
        a = [one("127.0.0.1") for _ in range(4)] + [one("127.0.0.2")]
        harness.wait_for(lambda: waiting() == 5, what="five requests waiting")
        over_ip = one("127.0.0.1")  # a fifth from 127.0.0.1
        assert drive([over_ip], lambda: over_ip.answers, 10)
        assert over_ip.answers == [429], over_ip.answers
        a.append(one("127.0.0.3"))  # the sixth in all: waits
        harness.wait_for(lambda: waiting() == 6, what="six requests waiting")
        over_all = one("127.0.0.2")
        assert drive([over_all], lambda: over_all.answers, 10)
        assert over_all.answers == [503], over_all.answers
        for c, code in ((over_ip, "too_many_requests"), (over_all, "overloaded")):
            head, body = c.heads[0]
            assert "\r\nretry-after: 1\r\n" in head + "\r\n", head
            assert ('"error":"%s"' % code) in body.decode().replace(" ", ""), body
        assert not any(c.answers for c in a), "a held request was answered"
        held.signal(signal.SIGCONT)
        assert drive(a, lambda: all(c.answers for c in a), 30)
        assert all(c.answers == [200] for c in a), [c.answers for c in a]
        harness.wait_for(lambda: waiting() == 0, what="the counts released")
        again = [one("127.0.0.1") for _ in range(4)]
        assert drive(again, lambda: all(c.answers for c in again), 30)
        assert all(c.answers == [200] for c in again), [c.answers for c in again]
    finally:
        held.signal(signal.SIGCONT)
        close_all(conns)
        held.stop()
        rc = gw.stop()
    assert rc == 0, gw.tail()


def test_connection_limit_lowered_to_the_file_limit(st):
    """A gateway whose file limit (a hard 600 set with prlimit) cannot hold
    GATEWAY_MAX_CONNECTIONS (the default 16,384) lowers it to what fits, (600 - 128) = 472,
    and says so. 700 idle connections then find the connection limit, not the file limit:
    no accept fails on EMFILE, and once they leave a new client is served."""
    port = harness.free_port()
    env = st.service_env("gateway")
    env.update({"GATEWAY_LISTEN": "127.0.0.1:%d" % port, "LOG_LEVEL": "warn"})
    argv = ["prlimit", "--nofile=600:600", os.path.join(harness.BUILD, "gateway")]
    gw = harness.Proc("gateway-nofile", argv, env, st.dir)
    url = "http://127.0.0.1:%d" % port
    socks = []

    def log():
        with open(gw.log_path, errors="replace") as f:
            return f.read()

    try:
        harness.wait_for(lambda: harness.http("GET", url + "/readyz").status == 200,
                         what="the gateway with 600 files ready")
        assert "GATEWAY_MAX_CONNECTIONS lowered to fit the file limit" in log(), gw.tail()
        assert "now=472" in log(), gw.tail()
        for _ in range(700):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            socks.append(s)
        harness.time.sleep(1.5)
        assert "Too many open files" not in log(), gw.tail()
        for s in socks:
            s.close()
        socks = []
        harness.wait_for(lambda: harness.http("GET", url + "/readyz").status == 200,
                         what="a new client served after they left")
        assert "Too many open files" not in log(), gw.tail()
        # the ones past the limit had been closed at once by the acceptor, and counted
        refused = [ln for ln in harness.http("GET", url + "/metrics").body.decode().splitlines()
                   if ln.startswith("sc_gateway_connections_refused_total ")]
        assert refused and float(refused[0].split()[1]) >= 700 - 472, refused
    finally:
        for s in socks:
            s.close()
        rc = gw.stop()
    assert rc == 0, gw.tail()


def test_sigterm_while_clients_come_and_go(st):
    """SIGTERM while requests wait on a service and new clients keep connecting, on the
    default epoll threads: the listeners close at once (a new client is refused, not left
    waiting), every request in flight is answered, and the gateway exits 0. (The gateway
    once let libmicrohttpd take the listening socket back from its busy epoll threads, which
    aborted the process now and then: this is the drill for that path.)"""
    port = harness.free_port()
    env = st.service_env("gateway")
    env.update({"GATEWAY_LISTEN": "127.0.0.1:%d" % port, "LOG_LEVEL": "warn"})
    gw = harness.Proc("gateway-drain", [os.path.join(harness.BUILD, "gateway")], env, st.dir)
    url = "http://127.0.0.1:%d" % port
    harness.wait_for(lambda: harness.http("GET", url + "/readyz").status == 200,
                     what="the gateway ready")
    n = 40 // (SCALE // 4 or 1)
    waiting = [Conn(port) for _ in range(n)]
    churn = []
    try:
        for c in waiting:
            c.out = get("/pub/delay")  # svc.delay answers after a second
        assert drive(waiting, lambda: all(not c.out for c in waiting), 10)
        harness.wait_for(lambda: metric_at(url, "sc_gateway_requests_waiting") == n,
                         what="the delayed requests waiting")
        churn = [Conn(port) for _ in range(200 // SCALE)]  # handshakes on the way in
        gw.signal(signal.SIGTERM)
        churn += [Conn(port) for _ in range(200 // SCALE)]

        def refused():
            s = socket.socket()
            try:
                s.settimeout(2)
                return s.connect_ex(("127.0.0.1", port)) != 0
            finally:
                s.close()
        harness.wait_for(refused, what="a new client refused while the gateway drains")
        assert drive(waiting, lambda: all(c.answers or c.closed for c in waiting), 20)
        assert all(c.answers == [200] for c in waiting), [c.answers for c in waiting]
        rc = gw.wait_exit(30 * harness.SLOW)
        assert rc == 0, (rc, gw.tail())
    finally:
        close_all(waiting + churn)
        gw.stop()
    print("  %d requests in flight answered after SIGTERM, %d clients connecting meanwhile, "
          "new clients refused, exit 0" % (n, len(churn)))


def metric_at(url, name):
    for line in harness.http("GET", url + "/metrics").body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None
