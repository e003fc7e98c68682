"""The browser demo page (clients/web) in headless Chromium against the whole stack.

The gateway serves the page (GATEWAY_STATIC_DIR); tests/e2e/demo.test.mjs (playwright-core
driving Debian's /usr/bin/chromium) logs in as alice, waits for price ticks from the
producer to be drawn, buys 1 BTC, waits for the fill in the inbox, calls rpc, publish and
presence through the page's client (clients/js/sidecast.js, which the page is built on),
refreshes the token in band, reconnects after the edge restarts and saves a screenshot
(browser.py drives it; test_browser_tls.py does the same over https and wss). Needs node
and npm (tests/e2e's dependencies are installed with `npm ci` on first use) and the
chromium package (scripts/deps.sh).
"""
import os

import browser
import harness

SERVICES = ("auth", "gateway", "edge", "producer")
# the page's client calls rpc prices.quote: alice's token names no rpc methods
ENV = {"producer": {"PRODUCER_TICK_MS": "200"}, "edge": {"JWT_DEFAULT_RPC_METHODS": "prices.*"}}

SHOT = os.path.join(harness.BUILD, "e2e", "demo.png")


def test_tools_present(st):
    browser.tools_present()


def test_npm_ci(st):
    browser.npm_ci()


def test_page_is_served(st):
    r = st.gw("GET", "/")
    assert r.status == 200 and b'id="chart"' in r.body, r
    r = st.gw("GET", "/app.js")
    assert r.status == 200 and b'from "./sidecast.js"' in r.body, r
    # the page's copy of the client is the client (the gateway follows no symbolic link)
    r = st.gw("GET", "/sidecast.js")
    with open(os.path.join(harness.ROOT, "clients", "js", "sidecast.js"), "rb") as f:
        assert r.status == 200 and r.body == f.read(), \
            "clients/web/sidecast.js differs from clients/js/sidecast.js: cp the latter over"
    assert r.headers["content-type"].startswith("text/javascript"), r.headers


def test_demo_page_in_chromium(st):
    rc, lines = browser.demo(st, st.gateway_url, SHOT, env={"E2E_EDGE_RESTART": "1"})
    assert rc == 0, "demo.test.mjs exited %s:\n%s" % (rc, "\n".join(lines[-60:]))
    assert os.path.getsize(SHOT) > 10000, "no screenshot at " + SHOT
