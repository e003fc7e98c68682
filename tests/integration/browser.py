"""Drives the browser demo (tests/e2e/demo.test.mjs: playwright-core and Debian's chromium)
against a test stack; shared by test_browser.py (plain http/ws) and test_browser_tls.py
(https/wss, the CA trusted through an NSS database)."""
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import harness

E2E = os.path.join(harness.ROOT, "tests", "e2e")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def run(argv, timeout, env=None, cwd=None):
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


def tools_present():
    assert os.path.exists(os.path.join(harness.BUILD, "producer")), \
        "build/producer is missing: the demo needs the producer (issue 4)"
    assert shutil.which("node") and shutil.which("npm"), "node and npm are needed (Debian: nodejs npm)"
    assert os.access(CHROMIUM, os.X_OK), "%s missing: apt-get install chromium (make deps)" % CHROMIUM


def npm_ci():
    """node_modules as package.json pins it: installed once, again when the pin changed."""
    with open(os.path.join(E2E, "package.json")) as f:
        want = json.load(f)["dependencies"]["playwright-core"]
    have = os.path.join(E2E, "node_modules", "playwright-core", "package.json")
    if os.path.exists(have):
        with open(have) as f:
            if json.load(f).get("version") == want:
                return
    rc, out = run(["npm", "ci", "--no-audit", "--no-fund"], timeout=110, cwd=E2E)
    assert rc == 0, "npm ci in tests/e2e failed (%s):\n%s" % (rc, out[-3000:])


def demo(st, gateway_url, shot, env=None, edge="edge", timeout=110):
    """Runs demo.test.mjs against gateway_url with env added; when it prints
    EDGE-RESTART-NOW (E2E_EDGE_RESTART=1), stops the stack's edge and starts it again once
    the page has shown the loss (EDGE-DOWN-SEEN). Returns (exit code, output lines); the
    lines are printed with an "e2e:" prefix."""
    if os.path.exists(shot):
        os.unlink(shot)
    full = dict(os.environ, GATEWAY_URL=gateway_url, SCREENSHOT=shot, CHROMIUM=CHROMIUM,
                E2E_TIMEOUT_MS=str((timeout - 10) * 1000))
    full.update(env or {})
    p = subprocess.Popen(["node", os.path.join(E2E, "demo.test.mjs")], env=full,
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
    deadline = time.monotonic() + timeout
    while p.poll() is None and time.monotonic() < deadline:
        if restart.is_set():
            restart.clear()
            st.stop_service(edge)  # SIGTERM: the edge drains, clients get 1001
            # back once the page has shown that it lost the edge (or the script ended)
            while not down_seen.wait(0.1) and p.poll() is None and time.monotonic() < deadline:
                pass
            st.start_service(edge)
        time.sleep(0.1)  # the pace of this loop, which waits for the script's lines
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)  # node and the chromium it started
        lines.append("(killed after %d s)" % timeout)
    p.wait()
    t.join(5)
    print("\n".join("  e2e: " + line for line in lines))
    return p.returncode, lines
