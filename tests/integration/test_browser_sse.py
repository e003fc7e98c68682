"""Server-Sent Events in Chromium's own EventSource, with no SDK (docs/SSE.md).

tests/e2e/sse.test.mjs (playwright-core driving Debian's /usr/bin/chromium) opens a page of
the gateway's origin and, in it, an EventSource on the edge's /sse (cross-origin: CORS for
ALLOWED_ORIGINS). Once the stream is live this test publishes n = 1..LAST on the topic,
one every PACE seconds; after KILL_AT events have arrived it kills the edge (SIGKILL: no
drain, no last message) while publishing goes on into JetStream, and starts it again. The
browser reconnects by itself with its Last-Event-ID, and every event must arrive exactly
once, in order. Needs node, npm and chromium, as test_browser.py.
"""
import threading
import time

import browser
import harness
import natspub

SERVICES = ("auth", "gateway", "edge")
ENV = {"edge": {"EDGE_SSE_RETRY_MS": "300"}}
TOPIC = "prices.browser-sse"
LAST = 150
KILL_AT = 40
PACE = 0.02  # between events: the outage falls in the middle of the flow


def test_tools_present(st):
    browser.tools_present()


def test_npm_ci(st):
    browser.npm_ci()


def test_eventsource_resumes_after_the_edge_is_killed(st):
    import os
    import signal
    import subprocess
    token = harness.mint(st, sub="alice", sub_topics=("prices.*",))
    env = dict(os.environ, GATEWAY_URL=st.gateway_url,
               EDGE_URL="http://127.0.0.1:%d" % st.edge_port, SSE_TOKEN=token, SSE_TOPIC=TOPIC,
               SSE_LAST=str(LAST), SSE_KILL_AT=str(KILL_AT), CHROMIUM=browser.CHROMIUM,
               E2E_TIMEOUT_MS="100000")
    p = subprocess.Popen(["node", os.path.join(browser.E2E, "sse.test.mjs")], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    lines = []
    published = []

    def publish():
        nc = natspub.Nats(st.nats_url)
        for n in range(1, LAST + 1):
            nc.pub("events." + TOPIC, {"n": n})
            nc.flush()  # stored in the stream: the edge's absence does not lose it
            published.append(n)
            time.sleep(PACE)  # the pace of the flow, not a timing assertion
        nc.close()

    pub = threading.Thread(target=publish, daemon=True)
    killed = False
    try:
        for raw in p.stdout:
            line = raw.decode(errors="replace").rstrip()
            lines.append(line)
            print("  e2e: " + line, flush=True)
            if line == "SSE-OPEN":
                pub.start()
            elif line == "SSE-KILL-NOW" and not killed:
                killed = True
                assert st.kill("edge") == -signal.SIGKILL
                print("  edge killed after %d published" % len(published), flush=True)
                time.sleep(1.0)  # down for a while: the browser's reconnects are refused
                st.restart("edge")
                print("  edge up again after %d published" % len(published), flush=True)
        rc = p.wait(timeout=110)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        pub.join(30)
    assert killed, "the edge was never killed:\n" + "\n".join(lines[-30:])
    assert rc == 0, "sse.test.mjs exited %s:\n%s" % (rc, "\n".join(lines[-40:]))
