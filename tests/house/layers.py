#!/usr/bin/env python3
"""The layers of the tree (docs/ARCHITECTURE.md, "Layout and its rules"), checked on every
#include. The Makefile links each binary only with the archives it may use, so a wrong call
fails to link; this check catches the include before it becomes a call, and the rules the
linker cannot see (a parser that reaches I/O, the ws core that reaches the bus).

    python3 tests/house/layers.py [ROOT]     one line per violation, exit 1 if any

Layers, from the bottom:
  ws-codec   common/ws/{utf8,ws_frame,ws_reader,ws_http,ws_deflate}: RFC 6455 bytes in and
             out, zlib and OpenSSL's SHA-1 only
  common     common/*: configuration, logs, metrics, admin port, bus, Redis, tokens
  ws         common/ws/*: the WebSocket server core (loop, connections, per-IP limits, TLS)
  proto      common/proto/*: sidecast.v1's messages, close codes and topics
  svc:<n>    services/<n>/*
  clientlib  clients/c/*: the C client library (libsidecast) over proto, ws and common; its
             public face is clients/c/sidecast.h, the only file of it others may include
  client:<n> clients/<n>/* (the CLI: clients/sidecast, which may use clientlib)
  bench, tools (tests/tools), unit (tests/unit), fuzz (tests/fuzz)
A header named <module>_int.h is private to its module (<module>.c, <module>_*.c beside it).
"""
import os
import re
import sys

CODEC = {"utf8", "ws_frame", "ws_reader", "ws_http", "ws_deflate", "ws_key", "ws_url"}
# common/ files the ws core and the protocol codec must not reach: the bus, Redis, the
# admin port, tokens and the bus subjects are the application's business
APP_ONLY = {"bus.h", "rds.h", "admin.h", "token.h", "contract.h"}
# pure parsers and encoders: no I/O of any kind, no logging
PARSERS = {"common/ws/%s.c" % n for n in CODEC} | {
    "common/proto/msg.c", "common/proto/topic.c", "common/form.c", "common/b64url.c",
    "common/ws/tlsrec.c",
    "services/gateway/tmpl.c", "services/bridge/zmap.c", "clients/c/sc_wire.c"}
IO_SYSTEM = re.compile(r"^(unistd|fcntl|poll|netdb|dirent|sys/(socket|epoll|uio|stat|"
                       r"eventfd|timerfd|sendfile|mman)|netinet/.*|arpa/.*)\.h$")
IO_PROJECT = {"loop.h", "wsc.h", "iplimit.h", "mailbox.h", "log.h", "bus.h", "rds.h",
              "admin.h", "cfg.h"}
CLIENTLIB_API = "clients/c/sidecast.h"
SOURCES = ("common", "services", "clients", "bench", "tests/tools", "tests/unit", "tests/fuzz")
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)


def layer(rel):
    parts = rel.split("/")
    stem = os.path.splitext(parts[-1])[0]
    if parts[0] == "common":
        if len(parts) == 2:
            return "common"
        if parts[1] == "ws":
            return "ws-codec" if stem in CODEC else "ws"
        if parts[1] == "proto":
            return "proto"
        return "common/" + parts[1]
    if parts[0] == "services":
        return "svc:" + parts[1]
    if parts[0] == "clients":
        return "clientlib" if parts[1] == "c" else "client:" + parts[1]
    if parts[0] == "bench":
        return "bench"
    if parts[:2] == ["tests", "tools"]:
        return "tools"
    if parts[:2] == ["tests", "unit"]:
        return "unit"
    if parts[:2] == ["tests", "fuzz"]:
        return "fuzz"
    return "other"


def may_include(src, dst, dst_rel):
    """None when a file of layer src may include dst_rel (layer dst), else the rule broken."""
    if src in ("unit", "fuzz"):
        return None  # tests reach into anything they test
    if dst in ("unit", "fuzz", "bench", "tools", "other"):
        return "nothing includes a test, a bench or a file outside the layers"
    base = os.path.basename(dst_rel)
    if src == "ws-codec":
        return None if dst == "ws-codec" else "the ws codec includes only itself"
    if src == "common":
        return None if dst == "common" else "common/ reaches only common/"
    if src == "ws":
        if dst in ("ws", "ws-codec"):
            return None
        if dst == "common":
            return ("the ws core reaches the bus, Redis or tokens" if base in APP_ONLY
                    else None)
        return "the ws core reaches %s" % ("sidecast.v1" if dst == "proto" else dst)
    if src == "proto":
        if dst == "proto":
            return None
        if dst == "common":
            return "sidecast.v1's codec reaches the bus" if base in APP_ONLY else None
        return "sidecast.v1's codec reaches %s" % dst
    if src == "clientlib":
        if dst in ("common", "ws", "ws-codec", "proto", "clientlib"):
            return ("the client library reaches the bus, Redis or tokens" if base in APP_ONLY
                    else None)
        return "the client library reaches %s" % dst
    if dst == "clientlib":
        # the CLI, tools and benches are the library's users: its public header only
        if src.startswith("client:") or src in ("bench", "tools"):
            return (None if dst_rel == CLIENTLIB_API else
                    "%s is internal to the client library (include %s)" % (dst_rel,
                                                                          CLIENTLIB_API))
        return "%s reaches the client library" % src
    if src.startswith("svc:") or src.startswith("client:") or src in ("bench", "tools"):
        if dst in ("common", "ws", "ws-codec", "proto") or dst == src:
            return None
        if dst.startswith("svc:"):
            return "%s reaches service %s" % (src, dst[4:])
        return "%s reaches %s" % (src, dst)
    return "%s is no known layer" % src


def resolve(root, rel, name):
    here = os.path.dirname(rel)
    for cand in (os.path.join(here, name), os.path.join("common", name)):
        cand = os.path.normpath(cand)
        if os.path.isfile(os.path.join(root, cand)):
            return cand
    return None


def check(root):
    problems = []
    files = []
    for top in SOURCES:
        for d, _, names in os.walk(os.path.join(root, top)):
            for n in sorted(names):
                if n.endswith((".c", ".h")):
                    files.append(os.path.relpath(os.path.join(d, n), root))
    for rel in sorted(files):
        src = layer(rel)
        with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as f:
            text = f.read()
        for m in INCLUDE.finditer(text):
            kind, name = m.group(1), m.group(2)
            line = text.count("\n", 0, m.start()) + 1
            where = "%s:%d: #include %s%s%s" % (rel, line, kind, name, '"' if kind == '"' else ">")
            if kind == "<":
                if rel in PARSERS and IO_SYSTEM.match(name):
                    problems.append("%s: a parser reaches I/O" % where)
                continue
            dst_rel = resolve(root, rel, name)
            if dst_rel is None:
                problems.append("%s: not found beside the file or in common/" % where)
                continue
            if rel in PARSERS and os.path.basename(dst_rel) in IO_PROJECT:
                problems.append("%s: a parser reaches I/O" % where)
                continue
            base = os.path.basename(dst_rel)
            module = base[:-len("_int.h")] if base.endswith("_int.h") else None
            stem = os.path.splitext(os.path.basename(rel))[0]
            if module and not (os.path.dirname(dst_rel) == os.path.dirname(rel) and
                               (stem == module or stem.startswith(module + "_"))):
                problems.append("%s: %s is private to %s.c and %s_*.c" % (
                    where, base, module, module))
                continue
            if dst_rel == "common/err.h":
                continue  # the error codes: every layer's contract, no code behind it
            why = may_include(src, layer(dst_rel), dst_rel)
            if why:
                problems.append("%s: %s" % (where, why))
    return files, problems


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__),
                                                              "..", "..")
    files, problems = check(os.path.abspath(root))
    for p in problems:
        print("layer violation: " + p)
    print("%d files, %d includes out of place" % (len(files), len(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
