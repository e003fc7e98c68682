"""Runs the integration tests: every tests/integration/test_*.py module.

A module may define SERVICES (names of Sidecast processes to start; "edge1", "edge2", ... are
more edges), ECHO_SUBJECTS (subjects the echosvc test service answers), ROUTES (routing-table
path), ENV ({service: {VAR: v}}) and NATS_CLUSTER (number of nats-servers in one cluster,
default 1).
Each test_* function gets the module's Stack. Prints PASS/FAIL (SKIP, for a test that raises
harness.Skip) per test and a closing line "N passed, N failed, N skipped". Usage: run.py
[substring-filter]."""
import importlib.util
import os
import signal
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

TEST_TIMEOUT = 120


class Timeout(Exception):
    pass


alarms = 0  # alarms fired: one raised inside a finalizer is swallowed, so it is counted too


def on_alarm(signum, frame):
    global alarms
    alarms += 1
    raise Timeout("test took longer than %d s" % TEST_TIMEOUT)


def main():
    flt = sys.argv[1] if len(sys.argv) > 1 else ""
    here = os.path.dirname(os.path.abspath(__file__))
    mods = sorted(f for f in os.listdir(here) if f.startswith("test_") and f.endswith(".py"))
    passed = failed = skipped = 0
    signal.signal(signal.SIGALRM, on_alarm)
    for fname in mods:
        spec = importlib.util.spec_from_file_location(fname[:-3], os.path.join(here, fname))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        tests = [(n, getattr(mod, n)) for n in sorted(vars(mod), key=lambda n: getattr(
                 getattr(mod, n), "__code__", None) and getattr(mod, n).__code__.co_firstlineno
                 or 0) if n.startswith("test_") and callable(getattr(mod, n))]
        tests = [(n, f) for n, f in tests if flt in fname + "." + n]
        if not tests:
            continue
        print("== %s (%d tests)" % (fname, len(tests)), flush=True)
        st = None
        try:
            signal.alarm(120)
            st = harness.Stack(fname[:-3], services=getattr(mod, "SERVICES", ()),
                               env=getattr(mod, "ENV", None), routes=getattr(mod, "ROUTES", None),
                               echo_subjects=getattr(mod, "ECHO_SUBJECTS", ()),
                               nats_cluster=getattr(mod, "NATS_CLUSTER", 1))
            signal.alarm(0)
        except BaseException as e:  # noqa: BLE001
            signal.alarm(0)
            print("FAIL %s: stack did not start: %s" % (fname, e), flush=True)
            traceback.print_exc()
            harness.Stack.stop_all_started()
            failed += len(tests)
            continue
        for name, fn in tests:
            t0 = time.monotonic()
            try:
                fired = alarms
                signal.alarm(TEST_TIMEOUT)
                fn(st)
                signal.alarm(0)
                if alarms != fired:  # the Timeout was raised where it could not stop the test
                    raise Timeout("test took longer than %d s (its alarm went off inside a "
                                  "finalizer)" % TEST_TIMEOUT)
                passed += 1
                print("PASS %s.%s (%.2fs)" % (fname[:-3], name, time.monotonic() - t0),
                      flush=True)
            except harness.Skip as e:
                signal.alarm(0)
                skipped += 1
                print("SKIP %s.%s: %s" % (fname[:-3], name, e), flush=True)
            except BaseException as e:  # noqa: BLE001
                signal.alarm(0)
                failed += 1
                print("FAIL %s.%s: %s" % (fname[:-3], name, e), flush=True)
                traceback.print_exc(limit=4, file=sys.stdout)
                for p in st.procs.values():
                    if not harness.is_infra(p.name):
                        print("--- %s log tail ---\n%s" % (p.name, p.tail(15)))
        problems = st.shutdown()
        if problems:
            for pr in problems:
                failed += 1
                print("FAIL %s teardown: %s" % (fname[:-3], pr), flush=True)
        else:
            passed += 1
            print("PASS %s teardown (clean exit of every service)" % fname[:-3], flush=True)
    print("%d passed, %d failed, %d skipped" % (passed, failed, skipped), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
