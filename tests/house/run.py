#!/usr/bin/env python3
"""The house rules, as part of make test: the layers hold on the tree (tests/house/layers.py),
and the check itself fails on each kind of forbidden include (planted in a scratch copy of
the sources, never in the tree), so it cannot pass by checking nothing. Then the tree is
formatted as .clang-format says (when clang-format is installed: make deps installs it).
Prints PASS/FAIL lines and "N passed, N failed, N skipped"."""
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import layers  # noqa: E402

# (file, line to add after its first #include, the violation the check must report)
PLANTED = [
    ("common/log.c", '#include "ws/wsc.h"', "common/ reaches only common/"),
    ("common/cfg.c", '#include "proto/msg.h"', "common/ reaches only common/"),
    ("services/gateway/proxy.c", '#include "../edge/session.h"', "reaches service edge"),
    ("services/edge/fabric.c", '#include "../auth/store.h"', "reaches service auth"),
    ("clients/sidecast/main.c", '#include "../../services/edge/session.h"',
     "reaches service edge"),
    ("tests/tools/wsecho.c", '#include "../../services/edge/fabric.h"', "reaches service edge"),
    ("common/ws/wsc.c", '#include "bus.h"', "the ws core reaches the bus"),
    ("common/ws/wsc.c", '#include "proto/msg.h"', "the ws core reaches sidecast.v1"),
    ("common/ws/loop.c", '#include "../../services/edge/session.h"', "the ws core reaches svc:edge"),
    ("common/ws/ws_frame.c", "#include <sys/socket.h>", "a parser reaches I/O"),
    ("common/ws/ws_reader.c", '#include "loop.h"', "a parser reaches I/O"),
    ("common/proto/msg.c", '#include "log.h"', "a parser reaches I/O"),
    ("common/proto/msg.c", '#include "bus.h"', "a parser reaches I/O"),
    ("services/auth/grants.c", '#include "token_int.h"', "token_int.h is private"),
    ("services/edge/fabric.c", '#include "session_int.h"', "session_int.h is private"),
    ("common/proto/msg.c", '#include "../../clients/c/sidecast.h"',
     "sidecast.v1's codec reaches clientlib"),
    ("services/edge/fabric.c", '#include "../../clients/c/sidecast.h"',
     "svc:edge reaches the client library"),
    ("clients/c/sc_wire.c", '#include "../sidecast/net.h"',
     "the client library reaches client:sidecast"),
    ("clients/c/sc_client.c", '#include "bus.h"', "the client library reaches the bus"),
    ("tests/tools/sc_probe.c", '#include "../../clients/c/sc_conn.h"',
     "internal to the client library"),
]

passed = failed = skipped = 0


def report(ok, name, detail=""):
    global passed, failed
    print("%s house.%s%s" % ("PASS" if ok else "FAIL", name, (": " + detail) if detail else ""),
          flush=True)
    if ok:
        passed += 1
    else:
        failed += 1


def copy_sources(dst):
    for top in layers.SOURCES:
        src = os.path.join(ROOT, top)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(dst, top),
                            ignore=shutil.ignore_patterns("corpus", "*.o", "*.a"))


def plant(root, rel, line):
    path = os.path.join(root, rel)
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    at = next(i for i, l in enumerate(lines) if l.startswith("#include"))
    lines.insert(at + 1, line)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


def main():
    files, problems = layers.check(ROOT)
    report(not problems, "layers", "%d files; %s" % (
        len(files), "; ".join(problems) if problems else "every include in its layer"))

    with tempfile.TemporaryDirectory(prefix="sidecast-layers-") as tmp:
        copy_sources(tmp)
        for rel, line, want in PLANTED:
            backup = open(os.path.join(tmp, rel), encoding="utf-8").read()
            plant(tmp, rel, line)
            _, got = layers.check(tmp)
            hit = [p for p in got if p.startswith(rel + ":") and want in p]
            report(len(got) == 1 and hit, "layers_refuse[%s %s]" % (rel, line.split()[-1]),
                   hit[0] if hit else "expected %r, got %r" % (want, got))
            with open(os.path.join(tmp, rel), "w", encoding="utf-8") as f:
                f.write(backup)

    fmt = subprocess.run([sys.executable, os.path.join(HERE, "format.py"), "--check"],
                         cwd=ROOT, capture_output=True, text=True) \
        if os.path.exists(os.path.join(HERE, "format.py")) else None
    if fmt is not None:
        if fmt.returncode == 3:
            global skipped
            skipped += 1
            print("SKIP house.format: %s" % fmt.stdout.strip(), flush=True)
        else:
            report(fmt.returncode == 0, "format", fmt.stdout.strip().splitlines()[-1]
                   if fmt.stdout.strip() else fmt.stderr.strip()[-300:])
            if fmt.returncode != 0:
                print(fmt.stdout[-3000:])
            # and the check sees a badly formatted file as one
            with tempfile.TemporaryDirectory(prefix="sidecast-fmt-") as tmp:
                shutil.copy(os.path.join(ROOT, ".clang-format"), tmp)
                bad = "int  f( int x ){\nif(x) return  1 ;\n  return 0;}\n"
                with open(os.path.join(tmp, "bad.c"), "w") as f:
                    f.write(bad)
                out = subprocess.run([sys.executable, os.path.join(HERE, "format.py"),
                                      "--check", "--root", tmp], capture_output=True, text=True)
                report(out.returncode == 1 and "not formatted: bad.c" in out.stdout,
                       "format_refuses[bad.c]", out.stdout.strip().splitlines()[-1]
                       if out.stdout.strip() else out.stderr.strip()[-300:])
    print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
