"""Writes docs/CONFIG.md from the processes' own --help (their configuration tables), so the
reference cannot drift from the code: tests/integration/test_docs.py fails when the file
differs from what this prints. Usage: python3 scripts/config_doc.py [BUILD] > docs/CONFIG.md"""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROCESSES = ["gateway", "auth", "edge", "producer", "bridge"]


def options(binary):
    """[(name, type, help, default-or-None)] parsed from `binary --help`."""
    out = subprocess.run([binary, "--help"], capture_output=True, check=True, timeout=10,
                         text=True).stdout
    opts = []
    for line in out.splitlines():
        m = re.match(r"^  ([A-Z][A-Z0-9_]+)\s+(\S+)\s+(.*)$", line)
        if m:
            opts.append([m.group(1), m.group(2), m.group(3).strip(), None, None])
            continue
        m = re.match(r"^\s+default: (.*)$", line)
        if m and opts:
            opts[-1][3] = m.group(1)
        elif line.strip() == "(required)" and opts:
            opts[-1][3] = "(required)"
        m = re.match(r"^\s+range: (.*)$", line)
        if m and opts:
            opts[-1][4] = m.group(1)
    return opts


def render(build):
    lines = ["# Configuration reference", "",
             "Every process is configured by environment variables, validated at start (a bad",
             "value stops it with a message naming the variable). This page is generated from the",
             "processes' own `--help` by `scripts/config_doc.py`; `make test` fails when it is out",
             "of date (regenerate: `python3 scripts/config_doc.py > docs/CONFIG.md`). The example",
             "values for the local runner, docker-compose and Kubernetes are in",
             "`deploy/config/`.", ""]
    for p in PROCESSES:
        lines += ["## `%s`" % p, "", "| variable | type | default | range | meaning |",
                  "|---|---|---|---|---|"]
        for name, typ, hlp, default, rng in options(os.path.join(build, p)):
            default = (default or "").replace("|", "\\|")
            lines.append("| `%s` | %s | %s | %s | %s |" % (
                name, typ, "`%s`" % default if default and default not in ("(empty)", "(required)")
                else default, rng or "", hlp.replace("|", "\\|")))
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(render(os.path.join(ROOT, sys.argv[1] if len(sys.argv) > 1 else "build")))
