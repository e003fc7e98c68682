"""Integration-test harness: real nats-server, redis-server and Sidecast processes.

Every test module gets its own Stack (fresh NATS with JetStream, fresh Redis, fresh keys and
users, the services it lists in SERVICES) on free loopback ports, started before its first
test and stopped after its last. Tests are plain functions `test_*(st)` taking the Stack;
they assert with `assert` or `check(...)`. run.py discovers and runs them.

Processes come from $BUILD (build/ or build-asan/). A service that exits non-zero when it is
stopped (a sanitizer report, a crash) fails the module's teardown check.

Many edges on a NATS cluster (the fault drills): a module's NATS_CLUSTER = N starts N
nats-servers with JetStream as one cluster (procs "nats1".."natsN", routes on free loopback
ports, a store directory each under the stack's directory), every service gets all N URLs in
NATS_URL and the edges create the history stream with 3 replicas from 3 nodes on. Services
named "edge1", "edge2", ... are edges too, each on its own free port with EDGE_ID "edge-1",
"edge-2", ... (edge_url_of(name)). kill / restart (and kill_nats, restart_nats, kill_redis,
restart_redis, kill_service, restart_service) stop one process with a signal and start it
again with the same ports, store and environment.
"""
import base64
import http.client as httpclient
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("BUILD", "build"))
SAN = os.environ.get("SAN", "0") == "1"
# make valgrind: Sidecast's own processes run under memcheck; an error or a definite leak
# makes the process exit 24, which the module's teardown check reports
VALGRIND = os.environ.get("VALGRIND", "0") == "1"
# How much longer a wall-clock bound in a test may be: every Sidecast process runs under
# memcheck (make valgrind) or ASan (make asan). Used only for bounds that guard against a
# hang, never to judge speed.
SLOW = 4 if VALGRIND else 1
VALGRIND_ARGV = ["valgrind", "-q", "--error-exitcode=24", "--leak-check=full",
                 "--show-leak-kinds=definite", "--errors-for-leak-kinds=definite",
                 "--num-callers=30"]


class Skip(Exception):
    """Raised by a test that cannot run here (with the reason): counted as skipped, never as
    passed (run.py)."""


def is_infra(name):
    """Whether a process name is NATS or Redis (not a Sidecast process): "redis", "nats",
    "nats2", or one a test named so ("nats-auth", "redis-pw")."""
    return re.fullmatch(r"(nats|redis)(\d*|-[\w-]+)", name) is not None


def edge_index(name):
    """N for an edge variant "edgeN", 0 for "edge", None for anything else."""
    if name == "edge":
        return 0
    m = re.fullmatch(r"edge(\d+)", name)
    return int(m.group(1)) if m else None


_given_ports = set()


def free_port():
    """A loopback TCP port nobody listens on right now, taken below the kernel's ephemeral
    range (net.ipv4.ip_local_port_range, 32768-60999 by default). A port from bind(0) comes
    out of that range, and between our close() and the service's bind() any outgoing
    connect() on the machine (a client to NATS, the edge to Redis) may take it as its local
    port: the service then fails to listen and the stack does not start, once in a few
    hundred runs. Below the range nothing takes a port unasked, and a port is handed out
    once per test run."""
    lo, hi = 20000, 32767
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            eph_lo = int(f.read().split()[0])
        hi = min(hi, eph_lo - 1)
        lo = min(lo, hi - 2000)
    except (OSError, ValueError, IndexError):
        pass
    for _ in range(200):
        port = random.randint(lo, hi)
        if port in _given_ports:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given_ports.add(port)
        return port
    raise AssertionError("no free loopback port in %d-%d after 200 tries" % (lo, hi))


def wait_for(cond, timeout=10.0, interval=0.05, what="condition"):
    """Polls cond() until it returns a truthy value or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last_exc = e
        time.sleep(interval)
    raise AssertionError("timed out waiting for %s (%s)" % (what, last_exc))


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # dict with lower-case names
        self.body = body

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<%d %s>" % (self.status, self.body[:300])


def http(method, url, body=None, headers=None, timeout=10.0):
    """One HTTP request. body: bytes, str, or dict (sent as JSON). Returns a Response."""
    u = urllib.parse.urlsplit(url)
    hdrs = dict(headers or {})
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    elif isinstance(body, str):
        body = body.encode()
    conn = httpclient.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        path = u.path or "/"
        if u.query:
            path += "?" + u.query
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        data = r.read()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        conn.close()


def form(**fields):
    """An application/x-www-form-urlencoded body and its header."""
    return (urllib.parse.urlencode(fields),
            {"Content-Type": "application/x-www-form-urlencoded"})


class Proc:
    """A child process whose stderr/stdout go to a log file in the run directory."""

    def __init__(self, name, argv, env, logdir, ready_line=None):
        self.name = name
        self.log_path = os.path.join(logdir, name + ".log")
        self.log = open(self.log_path, "ab")
        full_env = dict(os.environ)
        full_env.update(env)
        if SAN:
            full_env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:exitcode=23")
            full_env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        if VALGRIND and argv and argv[0].startswith(BUILD + os.sep):
            argv = VALGRIND_ARGV + list(argv)
        self.argv = argv
        self.env = full_env
        self.ready_line = ready_line
        self.p = None
        self.exit_code = None
        self.start()
        Stack.started.append(self)

    def start(self):
        if self.p is not None and self.p.poll() is None:
            raise AssertionError("%s is already running" % self.name)
        stdout = subprocess.PIPE if self.ready_line else self.log
        self.p = subprocess.Popen(self.argv, env=self.env, stdout=stdout, stderr=self.log,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
        if self.ready_line:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                line = self.p.stdout.readline()
                if not line:
                    break
                if line.decode(errors="replace").strip() == self.ready_line:
                    return
            raise AssertionError("%s did not print %r" % (self.name, self.ready_line))

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Stops the process; returns its exit code (negative: killed by a signal)."""
        if self.p is None:
            return self.exit_code
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.exit_code = self.p.returncode
        if self.p.stdout:
            self.p.stdout.close()
        self.p = None
        return self.exit_code

    def kill(self):
        return self.stop(signal.SIGKILL)

    def wait_exit(self, timeout=10.0):
        """Waits (no signal) up to timeout for the process to exit; returns its exit code, or
        None if it is still running."""
        if self.p is None:
            return self.exit_code
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.stop()

    def signal(self, sig):
        """Sends sig and returns at once (stop() waits for the exit)."""
        if self.p is not None and self.p.poll() is None:
            self.p.send_signal(sig)

    @property
    def pid(self):
        return self.p.pid if self.alive() else None

    def stopped(self):
        """Whether every thread of the process is stopped (SIGSTOP has taken effect: the
        signal is only queued when kill returns, and a thread busy on another core stops a
        moment later)."""
        pid = self.pid
        if pid is None:
            return False
        try:
            tasks = os.listdir("/proc/%d/task" % pid)
            for t in tasks:
                with open("/proc/%d/task/%s/stat" % (pid, t)) as f:
                    if f.read().rsplit(")", 1)[1].split()[0] not in ("T", "t"):
                        return False
        except (FileNotFoundError, ProcessLookupError):
            return False
        return bool(tasks)

    def freeze(self):
        """SIGSTOP, returning once it has taken effect."""
        self.signal(signal.SIGSTOP)
        wait_for(self.stopped, timeout=10, what="%s stopped" % self.name)

    def tail(self, n=30):
        """The last n lines of the log, without the start-up lines that print the
        configuration (a service that fails at start prints forty of them, and the line
        that says why comes after them)."""
        try:
            with open(self.log_path, "rb") as f:
                lines = [l for l in f.readlines() if b'msg="config"' not in l]
                return b"".join(lines[-n:]).decode(errors="replace")
        except OSError:
            return ""


class Stack:
    """NATS + Redis + the requested Sidecast services, on free loopback ports."""

    started = []  # every Proc any Stack started, so a stack that fails half-way is cleaned

    @classmethod
    def stop_all_started(cls):
        for p in cls.started[::-1]:
            p.stop()
        cls.started.clear()

    def __init__(self, name, services=(), env=None, routes=None, echo_subjects=(),
                 nats_cluster=1):
        self.name = name
        self.dir = os.path.join(BUILD, "test-run", name)
        subprocess.run(["rm", "-rf", self.dir], check=True)
        os.makedirs(self.dir)
        self.procs = {}
        self.extra_env = dict(env or {})
        self.routes = routes or os.path.join(ROOT, "deploy", "config", "routes.json")
        # one node: procs["nats"]; a cluster: procs["nats1"].. with these ports each
        self.nats_cluster = int(nats_cluster)
        self.nats_nodes = [{"port": free_port(), "mon": free_port(), "route": free_port()}
                           for _ in range(self.nats_cluster)]
        self.nats_port = self.nats_nodes[0]["port"]
        self.nats_mon_port = self.nats_nodes[0]["mon"]
        # what the services get: every node, comma-separated (DESIGN.md, NATS_URL)
        self.nats_url = ",".join("nats://127.0.0.1:%d" % n["port"] for n in self.nats_nodes)
        self.edge_ports = {}  # edge variant name -> port
        self.redis_port = free_port()
        self.redis_url = "redis://127.0.0.1:%d/0" % self.redis_port
        self.gateway_port = free_port()
        self.gateway_url = "http://127.0.0.1:%d" % self.gateway_port
        self.auth_admin_port = free_port()
        self.producer_admin_port = free_port()
        self.bridge_admin_port = free_port()
        self.edge_port = free_port()
        self.edge_url = "ws://127.0.0.1:%d/ws" % self.edge_port
        self.keys = os.path.join(self.dir, "dev")
        subprocess.run(["bash", os.path.join(ROOT, "scripts", "gen-dev.sh"), self.keys],
                       check=True, stdout=subprocess.DEVNULL)
        self.start_nats()
        self.start_redis()
        if echo_subjects:
            self.procs["echosvc"] = Proc(
                "echosvc", [os.path.join(BUILD, "tests", "tools", "echosvc"),
                            self.nats_url_one()]
                + list(echo_subjects), {}, self.dir, ready_line="ready")
        for s in services:
            self.start_service(s)

    # infrastructure -----------------------------------------------------------------------
    def _other_port(self):
        """A free port that is not one this stack has handed out already (they are not all
        bound yet, so free_port() alone could return one of them)."""
        mine = {self.redis_port, self.gateway_port, self.auth_admin_port,
                self.producer_admin_port, self.bridge_admin_port, self.edge_port}
        mine.update(self.edge_ports.values())
        for n in self.nats_nodes:
            mine.update(n.values())
        for _ in range(100):
            port = free_port()
            if port not in mine:
                return port
        raise AssertionError("no free port outside this stack's")

    def _start_or_new_ports(self, name, start, ready, new_ports):
        """start() a server and wait for ready(). free_port() only says a port was free a
        moment ago: when the server exits at once because another process took the port
        meanwhile (other tests on the machine), new_ports() picks others, up to 3 tries."""
        for attempt in range(3):
            start()
            p = self.procs[name]
            wait_for(lambda: p.p.poll() is not None or ready(), what=name)
            if p.p.poll() is None:
                return
            with open(p.log_path, "rb") as f:
                taken = b"already in use" in f.read()
            if not taken or attempt == 2:
                raise AssertionError("%s exited at start (%s)" % (name, p.p.returncode))
            del self.procs[name]
            new_ports()

    def start_nats(self):
        if self.nats_cluster == 1:
            jsdir = os.path.join(self.dir, "jetstream")

            def start():
                self.procs["nats"] = Proc("nats", [
                    "nats-server", "-a", "127.0.0.1", "-p", str(self.nats_port), "-m",
                    str(self.nats_mon_port), "-js", "-sd", jsdir], {}, self.dir)

            def ready():
                return http("GET", "http://127.0.0.1:%d/healthz" % self.nats_mon_port,
                            timeout=1).status == 200

            def new_ports():
                node = self.nats_nodes[0]
                node["port"] = self._other_port()
                node["mon"] = self._other_port()
                self.nats_port, self.nats_mon_port = node["port"], node["mon"]
                self.nats_url = "nats://127.0.0.1:%d" % self.nats_port

            self._start_or_new_ports("nats", start, ready, new_ports)
            return
        for i in range(1, self.nats_cluster + 1):
            self._start_cluster_node(i)
        for i in range(1, self.nats_cluster + 1):
            self.wait_nats(i, retry_taken=True)

    def _start_cluster_node(self, i):
        node = self.nats_nodes[i - 1]
        routes = ",".join("nats://127.0.0.1:%d" % n["route"]
                          for j, n in enumerate(self.nats_nodes, 1) if j != i)
        self.procs["nats%d" % i] = Proc("nats%d" % i, [
            "nats-server", "-a", "127.0.0.1", "-p", str(node["port"]), "-m",
            str(node["mon"]), "-n", "nats%d" % i, "--cluster_name", "sc-test",
            "--cluster", "nats://127.0.0.1:%d" % node["route"], "--routes", routes,
            "-js", "-sd", os.path.join(self.dir, "nats%d" % i)], {}, self.dir)

    def _restart_node_on_new_ports(self, i, tries):
        """At start, a cluster node that exited because one of its three ports was taken
        meanwhile (free_port() only says a port was free a moment ago) starts again on new
        ones, up to twice. Its routes to the others are unchanged, so it joins them."""
        p = self.procs["nats%d" % i]
        with open(p.log_path, "rb") as f:
            taken = b"already in use" in f.read()
        if not taken or tries[0] >= 2:
            raise AssertionError("nats%d exited at start (%s)" % (i, p.p.returncode))
        tries[0] += 1
        node = self.nats_nodes[i - 1]
        node["port"], node["mon"], node["route"] = (
            self._other_port(), self._other_port(), self._other_port())
        if i == 1:
            self.nats_port, self.nats_mon_port = node["port"], node["mon"]
        self.nats_url = ",".join("nats://127.0.0.1:%d" % n["port"] for n in self.nats_nodes)
        self._start_cluster_node(i)

    def nats_names(self):
        """The NATS process names: ["nats"] or ["nats1", ..., "natsN"]."""
        if self.nats_cluster == 1:
            return ["nats"]
        return ["nats%d" % i for i in range(1, self.nats_cluster + 1)]

    def jsz(self, i=1):
        """/jsz of NATS node i (1-based) as a dict."""
        return http("GET", "http://127.0.0.1:%d/jsz" % self.nats_nodes[i - 1]["mon"],
                    timeout=2).json()

    def wait_nats(self, i, timeout=30.0, retry_taken=False):
        """Waits until node i serves clients and, in a cluster, JetStream has a meta leader
        that this node knows, and the node reports itself healthy (caught up). retry_taken
        (a cluster's start): a node that exited because a port was taken restarts on new
        ones (_restart_node_on_new_ports)."""
        tries = {j: [0] for j in range(1, self.nats_cluster + 1)}

        def ready():
            for j in tries if retry_taken else ():  # a node down keeps the others waiting
                p = self.procs.get("nats%d" % j)
                if p is not None and p.p.poll() is not None:
                    self._restart_node_on_new_ports(j, tries[j])
                    return False
            mon = "http://127.0.0.1:%d" % self.nats_nodes[i - 1]["mon"]
            if self.nats_cluster > 1 and not (self.jsz(i).get("meta_cluster") or {}).get(
                    "leader"):
                return False
            return http("GET", mon + "/healthz", timeout=1).status == 200
        wait_for(ready, timeout=timeout, interval=0.1, what="nats node %d" % i)

    def nats_url_of(self, i):
        return "nats://127.0.0.1:%d" % self.nats_nodes[i - 1]["port"]

    def nats_url_one(self):
        """The URL of one running NATS node (for test tools that take a single URL)."""
        for i, name in enumerate(self.nats_names(), 1):
            if self.procs[name].alive():
                return self.nats_url_of(i)
        raise AssertionError("no NATS node is running")

    def kill_nats(self, i=1, sig=signal.SIGKILL):
        """Stops NATS node i (1-based; the single node is 1) with sig; returns its exit code."""
        return self.kill(self.nats_names()[i - 1], sig)

    def restart_nats(self, i=1, wait=True):
        return self.restart(self.nats_names()[i - 1], wait=wait)

    def nats_node_of(self, name):
        """The 1-based index of the NATS node the process `name` is connected to (from its
        established TCP connections), or None."""
        p = self.procs[name]
        if not p.alive():
            return None
        ports = {n["port"]: i for i, n in enumerate(self.nats_nodes, 1)}
        inodes = set()
        fddir = "/proc/%d/fd" % p.pid
        for fd in os.listdir(fddir):
            try:
                link = os.readlink(os.path.join(fddir, fd))
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(table) as f:
                    rows = f.read().splitlines()[1:]
            except OSError:
                continue
            for row in rows:
                cols = row.split()
                if len(cols) > 9 and cols[3] == "01" and cols[9] in inodes:
                    port = int(cols[2].rsplit(":", 1)[1], 16)
                    if port in ports:
                        return ports[port]
        return None

    def start_redis(self):
        def start():
            self.procs["redis"] = Proc("redis", [
                "redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--dir", self.dir], {}, self.dir)

        def new_port():
            self.redis_port = self._other_port()
            self.redis_url = "redis://127.0.0.1:%d/0" % self.redis_port

        self._start_or_new_ports("redis", start, self.redis_ping, new_port)

    def kill_redis(self, sig=signal.SIGKILL):
        return self.kill("redis", sig)

    def restart_redis(self, wait=True):
        return self.restart("redis", wait=wait)

    def redis_ping(self):
        with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")

    def redis_cmd(self, *args):
        """Runs one Redis command with redis-cli and returns its raw output."""
        out = subprocess.run(["redis-cli", "-p", str(self.redis_port)] + [str(a) for a in args],
                             capture_output=True, check=True, timeout=10)
        return out.stdout.decode()

    # services ------------------------------------------------------------------------------
    def service_env(self, name):
        # The test stacks run nats-server and redis-server without authentication, on
        # loopback, so the services need the development flag to start on them (without it
        # they refuse an open bus). test_bus_auth.py runs the real permission table instead.
        env = {
            "NATS_URL": self.nats_url,
            "REDIS_URL": self.redis_url,
            "DEV_INSECURE_BUS": "1",
            "LOG_LEVEL": "debug",
            "JWT_ISSUER": "sidecast",
            "JWT_AUDIENCE": "sidecast",
            "JWT_PUBLIC_KEYS": os.path.join(self.keys, "public.pem"),
        }
        if name == "auth":
            env.update({
                "ADMIN_LISTEN": "127.0.0.1:%d" % self.auth_admin_port,
                "JWT_PRIVATE_KEY": os.path.join(self.keys, "signing-key.pem"),
                "JWT_KID": "dev-1",
                "AUTH_USERS": os.path.join(self.keys, "users.conf"),
                "EDGE_PUBLIC_URL": "ws://127.0.0.1:%d/ws" % self.edge_port,
            })
        elif edge_index(name) is not None:
            k = edge_index(name)
            env.update({
                "EDGE_LISTEN": "127.0.0.1:%d" % self.edge_port_of(name),
                "EDGE_ID": "edge-%d" % k if k else "edge-test",
                "EDGE_WORKERS": "2",
                "HISTORY_STORAGE": "memory",
                "ALLOWED_ORIGINS": "http://localhost:8080,http://127.0.0.1:8080,"
                                   "http://127.0.0.1:%d,http://localhost:%d"
                                   % (self.gateway_port, self.gateway_port),
            })
            if self.nats_cluster >= 3:
                env["HISTORY_REPLICAS"] = "3"
            if VALGRIND:
                # a resuming client's subscribe {user, since} must arrive within the inbox
                # hold; under memcheck the CLI's reconnect takes longer than the 500 ms default
                # (test_cli lost an inbox event to that once)
                env["EDGE_INBOX_HOLD_MS"] = str(500 * SLOW)
        elif name == "producer":
            env.update({"ADMIN_LISTEN": "127.0.0.1:%d" % self.producer_admin_port})
        elif name == "bridge":
            env.update({"ADMIN_LISTEN": "127.0.0.1:%d" % self.bridge_admin_port})
        elif name == "gateway":
            env.update({
                "GATEWAY_LISTEN": "127.0.0.1:%d" % self.gateway_port,
                "GATEWAY_ROUTES": self.routes,
                "GATEWAY_STATIC_DIR": os.path.join(ROOT, "clients", "web"),
            })
        if edge_index(name):  # edgeN: the module's ENV for "edge", then for "edgeN"
            env.update(self.extra_env.get("edge", {}))
        env.update(self.extra_env.get(name, {}))
        return env

    def edge_port_of(self, name):
        """The port of edge variant `name` ("edge" or "edgeN"), chosen on first use."""
        if name == "edge":
            return self.edge_port
        if name not in self.edge_ports:
            self.edge_ports[name] = free_port()
        return self.edge_ports[name]

    def edge_url_of(self, name):
        return "ws://127.0.0.1:%d/ws" % self.edge_port_of(name)

    def ready_url(self, name):
        if name == "auth":
            return "http://127.0.0.1:%d/readyz" % self.auth_admin_port
        if name == "gateway":
            return self.gateway_url + "/readyz"
        if edge_index(name) is not None:
            return "http://127.0.0.1:%d/readyz" % self.edge_port_of(name)
        if name == "producer":
            return "http://127.0.0.1:%d/readyz" % self.producer_admin_port
        if name == "bridge":
            return "http://127.0.0.1:%d/readyz" % self.bridge_admin_port
        return None

    def start_service(self, name, wait=True):
        binary = "edge" if edge_index(name) is not None else name
        self.procs[name] = Proc(name, [os.path.join(BUILD, binary)], self.service_env(name),
                                self.dir)
        if wait:
            self.wait_ready(name)
        return self.procs[name]

    def wait_ready(self, name, timeout=20.0):
        """Waits for a service's /readyz (200), Redis's PING or a NATS node's health. Under
        valgrind a process starts ten to fifty times slower (auth's key load alone took 5 s
        on a loaded machine), so the wait is SLOW times as long there."""
        timeout *= SLOW
        if name == "redis":
            wait_for(self.redis_ping, timeout=timeout, what="redis-server")
            return
        if is_infra(name):
            self.wait_nats(self.nats_names().index(name) + 1, timeout=timeout)
            return
        url = self.ready_url(name)
        if not url:
            return

        last = []

        def ready():
            if not self.procs[name].alive():
                raise AssertionError("%s exited:\n%s" % (name, self.procs[name].tail()))
            r = http("GET", url, timeout=1)
            last[:] = [r]
            return r.status == 200
        try:
            wait_for(ready, timeout=timeout, what=name + " /readyz")
        except AssertionError as e:
            raise AssertionError("%s; last answer %r; log tail:\n%s" % (
                e, last[0] if last else None, self.procs[name].tail(10))) from None

    def stop_service(self, name, sig=signal.SIGTERM):
        return self.procs[name].stop(sig)

    def kill(self, name, sig=signal.SIGKILL, timeout=10.0):
        """Stops one process (a service, "redis", "nats" or "natsN") with sig and waits for
        it to exit (SIGKILL after timeout); returns its exit code (-9: killed)."""
        return self.procs[name].stop(sig, timeout=timeout)

    def restart(self, name, wait=True):
        """Starts a stopped process again: same command, ports, store and environment."""
        p = self.procs[name]
        if p.alive():
            raise AssertionError("%s is still running" % name)
        p.log.write(b"--- harness: restarting %s ---\n" % name.encode())
        p.log.flush()
        p.start()
        if wait:
            self.wait_ready(name)
        return p

    def kill_service(self, name, sig=signal.SIGKILL, timeout=10.0):
        return self.kill(name, sig, timeout)

    def restart_service(self, name, wait=True):
        return self.restart(name, wait=wait)

    def edge_metric(self, series, port=None):
        """The value of one series on the edge's /metrics (its name, with its labels if it
        has any: 'sc_edge_settle_flushes_total{result="failed"}'), or None when absent."""
        body = http("GET", "http://127.0.0.1:%d/metrics" % (port or self.edge_port)).body
        for line in body.decode().splitlines():
            if line.startswith(series + " "):
                v = float(line.split()[-1])
                return int(v) if v.is_integer() else v
        return None

    def token(self, user="alice", password=None):
        """An access token from auth over NATS (no gateway needed)."""
        pw = password or {"alice": "wonderland", "bob": "builder"}[user]
        lines = self.busctl("req", "auth.token", json.dumps(
            {"body": {"grant_type": "password", "username": user, "password": pw}}), 5000)
        return json.loads(lines[-1])

    def read_secret(self, name):
        with open(os.path.join(self.keys, name)) as f:
            return f.read().strip()

    # helpers --------------------------------------------------------------------------------
    def gw(self, method, path, body=None, headers=None, timeout=10.0):
        return http(method, self.gateway_url + path, body=body, headers=headers,
                    timeout=timeout)

    def busctl(self, *args, timeout=15):
        """Runs tests/tools/busctl against this stack's NATS; returns its stdout lines."""
        out = subprocess.run([os.path.join(BUILD, "tests", "tools", "busctl"),
                              self.nats_url_one()] + [str(a) for a in args],
                             capture_output=True, timeout=timeout)
        return out.stdout.decode().splitlines()

    def busctl_bg(self, *args):
        """Starts busctl in the background (e.g. `sub`); returns the Popen once it is ready."""
        p = subprocess.Popen([os.path.join(BUILD, "tests", "tools", "busctl"),
                              self.nats_url_one()] + [str(a) for a in args],
                             stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)
        line = p.stdout.readline().decode().strip()
        assert line == "ready", "busctl did not get ready: %r" % line
        return p

    def shutdown(self):
        """Stops everything; returns a list of "name exited N" problems of Sidecast processes."""
        problems = []
        for name in list(self.procs)[::-1]:
            p = self.procs[name]
            was_running = p.alive()
            code = p.stop()
            if is_infra(name):
                continue
            if was_running and code not in (0, None):
                problems.append("%s exited %s on SIGTERM:\n%s" % (name, code, p.tail(40)))
        Stack.started.clear()
        return problems


# ---- tokens signed here (openssl does the signing) ------------------------------------------

def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _der_to_raw(der):
    """ECDSA signature: DER SEQUENCE{r, s} -> 64-byte r||s (JWS ES256)."""
    assert der[0] == 0x30
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        n = der[i + 1]
        out += der[i + 2:i + 2 + n].lstrip(b"\x00").rjust(32, b"\x00")
        i += 2 + n
    return out


def mint(st, sub="alice", exp_in=300, iss="sidecast", aud="sidecast", kid="dev-1",
         sub_topics=("prices.*",), pub_topics=(), key=None, **extra):
    """An ES256 access token for sub signed with the stack's dev key (or the EC private key
    at path key): the claims auth would give, with the topic patterns (and any extra claim)
    chosen by the test; sub_topics None leaves the claim out."""
    now = int(time.time())
    head = {"alg": "ES256", "typ": "JWT", "kid": kid}
    claims = {"iss": iss, "aud": aud, "sub": sub, "iat": now - 1, "nbf": now - 1,
              "exp": now + exp_in, "jti": "t%d" % time.monotonic_ns(),
              "pub_topics": list(pub_topics)}
    if sub_topics is not None:
        claims["sub_topics"] = list(sub_topics)
    claims.update(extra)
    signing_input = b64url(json.dumps(head).encode()) + "." + b64url(json.dumps(claims).encode())
    der = subprocess.run(["openssl", "dgst", "-sha256", "-sign",
                          key or os.path.join(st.keys, "signing-key.pem")],
                         input=signing_input.encode(), capture_output=True, check=True).stdout
    return signing_input + "." + b64url(_der_to_raw(der))
