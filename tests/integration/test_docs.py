"""Docs that must follow the code: the configuration reference (docs/CONFIG.md) is what the
processes' own --help says, and the README starts with the two commands."""
import os
import subprocess
import sys

import harness

sys.path.insert(0, os.path.join(harness.ROOT, "scripts"))
import config_doc  # noqa: E402


def test_config_reference_matches_help(st):
    with open(os.path.join(harness.ROOT, "docs", "CONFIG.md")) as f:
        have = f.read()
    want = config_doc.render(harness.BUILD)
    assert have == want, ("docs/CONFIG.md is out of date: "
                          "python3 scripts/config_doc.py > docs/CONFIG.md")


def test_readme_opens_with_make_up_and_make_test(st):
    with open(os.path.join(harness.ROOT, "README.md")) as f:
        head = f.read(1500)
    assert "make up" in head and "make test" in head
    assert head.index("make up") < head.index("make test")


def test_every_process_rejects_a_bad_value_naming_it(st):
    for p, var, bad in [("gateway", "GATEWAY_MAX_BODY", "lots"), ("auth", "ACCESS_TOKEN_TTL", "-1"),
                        ("edge", "EDGE_WORKERS", "many"), ("producer", "PRODUCER_TICK_MS", "x"),
                        ("bridge", "BRIDGE_RCVHWM", "0")]:
        files = {k: "/etc/hostname" for k in ("GATEWAY_ROUTES", "JWT_PUBLIC_KEYS",
                                               "JWT_PRIVATE_KEY", "AUTH_USERS", "BRIDGE_ROUTES")}
        env = dict(os.environ, **files, **{var: bad})
        r = subprocess.run([os.path.join(harness.BUILD, p)], env=env, capture_output=True,
                           timeout=10, stdin=subprocess.DEVNULL)
        assert r.returncode == 2 and var.encode() in r.stderr, (p, r.returncode, r.stderr)
