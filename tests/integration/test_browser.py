"""The browser demo page (clients/web) in headless Chromium against the whole stack.

The gateway serves the page (GATEWAY_STATIC_DIR); tests/e2e/demo.test.mjs (playwright-core
driving Debian's /usr/bin/chromium) logs in as alice, waits for price ticks from the
producer to be drawn, buys 1 BTC, waits for the fill in the inbox, refreshes the token in
band and saves a screenshot. Needs node and npm (tests/e2e's dependencies are installed
with `npm ci` on first use) and the chromium package (scripts/deps.sh).
"""
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import harness

SERVICES = ("auth", "gateway", "edge", "producer")
ENV = {"producer": {"PRODUCER_TICK_MS": "200"}}

E2E = os.path.join(harness.ROOT, "tests", "e2e")
SHOT = os.path.join(harness.BUILD, "e2e", "demo.png")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def _run(argv, timeout, env=None, cwd=None):
    """Runs argv in its own process group; kills the whole group (chromium too) on timeout.
    Returns (exit code, output)."""
    p = subprocess.Popen(argv, cwd=cwd, env=dict(os.environ, **(env or {})),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        return None, out.decode(errors="replace") + "\n(killed after %d s)" % timeout
    return p.returncode, out.decode(errors="replace")


def test_tools_present(st):
    assert os.path.exists(os.path.join(harness.BUILD, "producer")), \
        "build/producer is missing: the demo needs the producer (issue 4)"
    assert shutil.which("node") and shutil.which("npm"), "node and npm are needed (Debian: nodejs npm)"
    assert os.access(CHROMIUM, os.X_OK), "%s missing: apt-get install chromium (make deps)" % CHROMIUM


def test_npm_ci(st):
    """node_modules as package.json pins it: installed once, again when the pin changed."""
    with open(os.path.join(E2E, "package.json")) as f:
        want = json.load(f)["dependencies"]["playwright-core"]
    have = os.path.join(E2E, "node_modules", "playwright-core", "package.json")
    if os.path.exists(have):
        with open(have) as f:
            if json.load(f).get("version") == want:
                return
    rc, out = _run(["npm", "ci", "--no-audit", "--no-fund"], timeout=110, cwd=E2E)
    assert rc == 0, "npm ci in tests/e2e failed (%s):\n%s" % (rc, out[-3000:])


def test_page_is_served(st):
    r = st.gw("GET", "/")
    assert r.status == 200 and b'id="chart"' in r.body, r
    r = st.gw("GET", "/app.js")
    assert r.status == 200 and b"sidecast.v1" in r.body, r


def test_demo_page_in_chromium(st):
    if os.path.exists(SHOT):
        os.unlink(SHOT)
    env = dict(os.environ, GATEWAY_URL=st.gateway_url, SCREENSHOT=SHOT, CHROMIUM=CHROMIUM,
               E2E_TIMEOUT_MS="100000", E2E_EDGE_RESTART="1")
    p = subprocess.Popen(["node", os.path.join(E2E, "demo.test.mjs")], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    lines = []
    restart, down_seen = threading.Event(), threading.Event()

    def reader():
        for raw in p.stdout:
            line = raw.decode(errors="replace").rstrip()
            lines.append(line)
            if line == "EDGE-RESTART-NOW":
                restart.set()
            elif line == "EDGE-DOWN-SEEN":
                down_seen.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    deadline = time.monotonic() + 110
    while p.poll() is None and time.monotonic() < deadline:
        if restart.is_set():
            restart.clear()
            st.stop_service("edge")  # SIGTERM: the edge drains, clients get 1001
            # back once the page has shown that it lost the edge (or the script ended)
            while not down_seen.wait(0.1) and p.poll() is None and time.monotonic() < deadline:
                pass
            st.start_service("edge")
        time.sleep(0.1)  # the pace of this loop, which waits for the script's lines
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)  # node and the chromium it started
        lines.append("(killed after 110 s)")
    p.wait()
    t.join(5)
    print("\n".join("  e2e: " + line for line in lines))
    assert p.returncode == 0, "demo.test.mjs exited %s:\n%s" % (p.returncode,
                                                                 "\n".join(lines[-60:]))
    assert os.path.getsize(SHOT) > 10000, "no screenshot at " + SHOT
