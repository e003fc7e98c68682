"""The browser demo over TLS, as `make up TLS=1` serves it: headless Chromium loads the page
from the gateway's https listener (GATEWAY_TLS_LISTEN) and holds its WebSocket to the edge's
wss listener (EDGE_TLS_LISTEN), which auth hands out as ws_url.

The certificate is the one scripts/gen-dev.sh makes for `make up TLS=1` (the stack runs it
into its own directory): tls.pem for localhost, 127.0.0.1 and ::1, signed by the development
CA ca.pem, whose name constraints Chromium enforces as well. Chromium is made to trust that
CA the way a developer does (the banner of make up TLS=1): certutil (Debian's libnss3-tools)
adds it to a fresh NSS database in a temporary HOME ($HOME/.pki/nssdb), which is where
Chromium on Linux reads trust from. Certificate errors are never ignored: the same page with
an empty NSS database must be refused (net::ERR_CERT_AUTHORITY_INVALID).

Covered: the page over https (TLS details from the browser), login, WebSocket to
wss://localhost:<edge TLS port>/ws only, ticks, an order and its fill, the in-band token
refresh, and a reconnect over wss after the edge restarts; the untrusted CA refused.
"""
import os
import shutil
import subprocess
import tempfile

import browser
import harness

SERVICES = ("auth", "gateway", "edge", "producer")
# The stack runs scripts/gen-dev.sh into build/test-run/<this module>/dev before it starts
# any service (harness.Stack), so the paths are known now.
DEV = os.path.join(harness.BUILD, "test-run", "test_browser_tls", "dev")
GW_TLS_PORT = harness.free_port()
EDGE_TLS_PORT = harness.free_port()
while EDGE_TLS_PORT == GW_TLS_PORT:
    EDGE_TLS_PORT = harness.free_port()
PAGE = "https://localhost:%d" % GW_TLS_PORT
WSS = "wss://localhost:%d/ws" % EDGE_TLS_PORT
ENV = {
    "producer": {"PRODUCER_TICK_MS": "200"},
    "auth": {"EDGE_PUBLIC_URL": WSS},
    "gateway": {
        "GATEWAY_TLS_LISTEN": "127.0.0.1:%d" % GW_TLS_PORT,
        "GATEWAY_TLS_CERT": os.path.join(DEV, "tls.pem"),
        "GATEWAY_TLS_KEY": os.path.join(DEV, "tls.key"),
    },
    "edge": {
        "EDGE_TLS_LISTEN": "127.0.0.1:%d" % EDGE_TLS_PORT,
        "EDGE_TLS_CERT": os.path.join(DEV, "tls.pem"),
        "EDGE_TLS_KEY": os.path.join(DEV, "tls.key"),
        "EDGE_PUBLIC_URL": WSS,
        "JWT_DEFAULT_RPC_METHODS": "prices.*",  # the page's client calls prices.quote
        "ALLOWED_ORIGINS": "https://localhost:%d,https://127.0.0.1:%d" % (GW_TLS_PORT,
                                                                         GW_TLS_PORT),
    },
}
SHOT = os.path.join(harness.BUILD, "e2e", "demo-tls.png")
CERTUTIL = shutil.which("certutil") or "/usr/bin/certutil"


def _home(trust):
    """A temporary HOME with a fresh NSS database in .pki/nssdb, holding the dev CA as a
    trusted issuer of server certificates when trust (certutil -t C,,), else nothing."""
    home = tempfile.mkdtemp(prefix="sidecast-nss-")
    db = os.path.join(home, ".pki", "nssdb")
    os.makedirs(db)
    for argv in ([CERTUTIL, "-d", "sql:" + db, "-N", "--empty-password"],
                 [CERTUTIL, "-d", "sql:" + db, "-A", "-t", "C,,", "-n", "sidecast-dev",
                  "-i", os.path.join(DEV, "ca.pem")] if trust else None):
        if argv:
            r = subprocess.run(argv, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
            assert r.returncode == 0, "%s: %s" % (" ".join(argv), r.stderr.decode()[-500:])
    return home


def test_tools_present(st):
    browser.tools_present()
    assert os.access(CERTUTIL, os.X_OK), \
        "certutil missing: apt-get install libnss3-tools (make deps)"


def test_npm_ci(st):
    browser.npm_ci()


def test_ws_url_is_the_wss_listener(st):
    t = st.token("alice")
    assert t["ws_url"] == WSS, t["ws_url"]


def test_untrusted_ca_is_refused(st):
    home = _home(trust=False)
    try:
        rc, lines = browser.demo(st, PAGE, SHOT, timeout=60,
                                 env={"HOME": home, "E2E_EXPECT_UNTRUSTED": "1"})
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert rc == 0, "Chromium did not refuse the page:\n%s" % "\n".join(lines[-30:])
    assert any("ERR_CERT_AUTHORITY_INVALID" in l for l in lines), lines


def test_demo_page_over_https_and_wss(st):
    home = _home(trust=True)
    try:
        rc, lines = browser.demo(st, PAGE, SHOT, env={
            "HOME": home, "E2E_EXPECT_WS_URL": WSS, "E2E_EDGE_RESTART": "1"})
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert rc == 0, "demo.test.mjs exited %s:\n%s" % (rc, "\n".join(lines[-60:]))
    assert os.path.getsize(SHOT) > 10000, "no screenshot at " + SHOT
    served = [l for l in lines if l.startswith("PASS page served")]
    assert served and "TLS" in served[0], served
