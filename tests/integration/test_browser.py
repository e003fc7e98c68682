"""The browser demo page (clients/web) in headless Chromium against the whole stack.

The gateway serves the page (GATEWAY_STATIC_DIR); tests/e2e/demo.test.mjs (playwright-core
driving Debian's /usr/bin/chromium) logs in as alice, waits for price ticks from the
producer to be drawn, buys 1 BTC, waits for the fill in the inbox, refreshes the token in
band and saves a screenshot (browser.py drives it; test_browser_tls.py does the same over
https and wss). Needs node and npm (tests/e2e's dependencies are installed
with `npm ci` on first use) and the chromium package (scripts/deps.sh).
"""
import os

import browser
import harness

SERVICES = ("auth", "gateway", "edge", "producer")
ENV = {"producer": {"PRODUCER_TICK_MS": "200"}}

SHOT = os.path.join(harness.BUILD, "e2e", "demo.png")


def test_tools_present(st):
    browser.tools_present()


def test_npm_ci(st):
    browser.npm_ci()


def test_page_is_served(st):
    r = st.gw("GET", "/")
    assert r.status == 200 and b'id="chart"' in r.body, r
    r = st.gw("GET", "/app.js")
    assert r.status == 200 and b"sidecast.v1" in r.body, r


def test_demo_page_in_chromium(st):
    rc, lines = browser.demo(st, st.gateway_url, SHOT, env={"E2E_EDGE_RESTART": "1"})
    assert rc == 0, "demo.test.mjs exited %s:\n%s" % (rc, "\n".join(lines[-60:]))
    assert os.path.getsize(SHOT) > 10000, "no screenshot at " + SHOT
