#!/usr/bin/env python3
"""The tree is formatted as .clang-format says (clang-format 14, Debian 12's).

    python3 tests/house/format.py          reformat every C file in place (make fmt)
    python3 tests/house/format.py --check  change nothing; exit 1 naming each file that
                                           differs, 3 when clang-format 14 is not installed
    ... --root DIR                         the C files of a scratch directory instead

The files: every *.c and *.h under common/, services/, clients/, bench/, tests/unit/,
tests/tools/ and tests/fuzz/ (the same list tests/house/layers.py checks). Another major
version of clang-format formats some constructs differently, so only 14 is asked."""
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DIRS = ("common", "services", "clients", "bench", "tests/unit", "tests/tools", "tests/fuzz")


def files(root):
    if root != ROOT:  # a scratch tree (tests/house/run.py): every C file in it
        return sorted(n for n in os.listdir(root) if n.endswith((".c", ".h")))
    out = []
    for top in DIRS:
        for d, _, names in os.walk(os.path.join(root, top)):
            out += [os.path.relpath(os.path.join(d, n), root) for n in sorted(names)
                    if n.endswith((".c", ".h"))]
    return sorted(out)


def tool():
    for name in ("clang-format-14", "clang-format"):
        path = shutil.which(name)
        if not path:
            continue
        v = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
        m = re.search(r"version (\d+)\.", v)
        if m and m.group(1) == "14":
            return path
    return None


def main():
    args = sys.argv[1:]
    check = "--check" in args
    root = os.path.abspath(args[args.index("--root") + 1]) if "--root" in args else ROOT
    cf = tool()
    if not cf:
        print("clang-format 14 not installed (make deps installs it): formatting not checked")
        return 3
    fs = files(root)
    if not check:
        subprocess.run([cf, "-i", "--style=file"] + fs, cwd=root, check=True)
        print("%d files formatted" % len(fs))
        return 0
    bad = []
    for f in fs:
        with open(os.path.join(root, f), "rb") as fh:
            before = fh.read()
        after = subprocess.run([cf, "--style=file", "--assume-filename=" + f],
                               input=before, capture_output=True, cwd=root).stdout
        if after != before:
            bad.append(f)
    for f in bad:
        print("not formatted: %s (make fmt)" % f)
    print("%d files, %d not formatted as .clang-format says" % (len(fs), len(bad)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
