#!/usr/bin/env python3
"""Run CPython's own asyncio test suite (``test.test_asyncio``) against npaio.

Usage
-----
    python tests/cpython/run.py [--loop npaio|asyncio] [--compare]
                                [--pollers N] [--modules test_streams,test_server,...]
                                [--timeout SECONDS] [--test-timeout SECONDS]
                                [--python 3.10,3.11,...] [-j N]
                                [--json out.json] [--logdir DIR] [--skip-listed]

Default modules: test_streams, test_server, test_protocols, test_buffered_proto,
test_sock_lowlevel, test_sslproto, test_events.

The test modules are the ones shipped with the interpreter that runs them
(``test.test_asyncio`` of 3.10 / 3.11 / 3.12 / 3.13 differ), so every module is
run by the matching interpreter.  ``--python`` takes interpreter paths or short
versions (``3.11`` -> ``/root/.pyenv/versions/3.11.*/bin/python``); default is
the interpreter running this script.

How the loop is swapped (``--loop npaio``)
------------------------------------------
Each module runs in its own subprocess: ``<python> run.py --child ...``.  The
child imports ``npaio`` (from the repository root, which is put on ``sys.path``)
and, BEFORE the test module is imported, sets::

    asyncio.SelectorEventLoop                          = npaio.Loop
    asyncio.unix_events.SelectorEventLoop              = npaio.Loop
    asyncio.unix_events.DefaultEventLoopPolicy._loop_factory = npaio.Loop
    asyncio.EventLoop / asyncio.unix_events.EventLoop  = npaio.Loop   (3.13+)

so both ``asyncio.new_event_loop()`` (the tests reset the policy with
``set_event_loop_policy(None)``; the class attribute survives that) and the
explicit ``asyncio.SelectorEventLoop(selectors.SelectSelector())`` etc. used by
test_events / test_sock_lowlevel / test_server / test_buffered_proto /
test_sslproto build ``npaio.Loop``.  ``--pollers N`` exports ``NPAIO_POLLERS=N``.

Probe: the child wraps ``asyncio.BaseEventLoop.__init__`` and counts every loop
created per class.  The summary shows the npaio.Loop count and any *stock*
selector loop created in npaio mode (which would mean the patch was bypassed).
``test_utils.TestLoop`` (the mock loop of ``new_test_loop``) is a
``BaseEventLoop`` and is deliberately left alone; it is counted as "other".

Robustness
----------
* Every module has a hard wall-clock budget (``--timeout``, default 900 s) and
  every single test a watchdog (``--test-timeout``, default 120 s, via
  ``faulthandler.dump_traceback_later(exit=True)`` which also dumps all thread
  stacks into the log).  Results are streamed per test (JSON lines), so when a
  test hangs or the interpreter crashes (e.g. a segfault in native code), that
  test is recorded as ``timeout`` / ``crash`` and the module is restarted with
  the remaining tests (up to ``--max-restarts``).  A module that exceeds its
  total budget is reported as TIMEOUT with everything that finished counted.
* Logs (full ``unittest -v`` output + tracebacks) go to ``--logdir``
  (default: a fresh directory under /tmp), never into the repository.

Expected failures (npaio mode only)
-----------------------------------
``tests/cpython/expected_failures.txt`` lists tests that inspect the stock
loop's private internals (``_SelectorSocketTransport`` attributes, a mocked
``loop._selector``, ``transport._sock`` ...).  Line format::

    [VERSIONS:] [skip] TEST_ID   # reason

* TEST_ID is ``test_module.Class.test_method`` (the ``test.test_asyncio.``
  prefix is optional); shell wildcards (fnmatch) are allowed, e.g.
  ``test_events.*EventLoopTests.test_foo`` covers the Epoll/Poll/Select classes.
* VERSIONS is optional: ``3.10:``, ``3.10,3.11:``, ``>=3.12:``, ``<3.12:``.
* ``skip`` deselects the test entirely (for listed tests that would hang);
  otherwise the test runs but is marked as an expected failure: if it fails it
  is counted under "xfail(list)", if it passes it is reported as "XPASS"
  (reported, not an error).  ``--skip-listed`` deselects all listed tests.
The list is not applied to ``--loop asyncio`` (stock is the reference).

Exit status: non-zero if any run (in ``--compare`` mode: any npaio run) has an
unlisted failure, error, crash or timeout.

``--compare`` runs each module on stock asyncio and on npaio and prints a table
(stock passed/failed/skipped vs npaio passed/failed/skipped) plus the tests that
fail only on npaio.  ``--json FILE`` writes all results (per test) as JSON.
"""

import argparse
import fnmatch
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PREFIX = "test.test_asyncio."
DEFAULT_MODULES = ["test_streams", "test_server", "test_protocols",
                   "test_buffered_proto", "test_sock_lowlevel", "test_sslproto",
                   "test_events"]
XFAIL_FILE = os.path.join(HERE, "expected_failures.txt")

# Outcomes recorded per test id.
PASS, FAIL, ERROR, SKIP = "pass", "fail", "error", "skip"
XFAIL, XPASS = "xfail", "xpass"          # expected failure / unexpected success
TIMEOUT, CRASH, DESELECTED = "timeout", "crash", "deselected"
BAD = (FAIL, ERROR, TIMEOUT, CRASH)


def short_id(tid):
    return tid[len(PREFIX):] if tid.startswith(PREFIX) else tid


# --------------------------------------------------------------------------
# child side: patch, run one module, stream results as JSON lines
# --------------------------------------------------------------------------

def child_main(a):
    import faulthandler
    import atexit
    import traceback
    import unittest

    events_fp = open(a.events, "a", buffering=1)

    def emit(**kw):
        events_fp.write(json.dumps(kw) + "\n")
        events_fp.flush()

    faulthandler.enable(file=sys.stderr, all_threads=True)

    # Started from a shell's background job, Python inherits SIGINT ignored.
    # asyncio.Runner then installs no SIGINT handler and _thread.interrupt_main
    # does nothing, so test_runners' interrupt tests wait forever (on a mock
    # loop that never sleeps, whose call records grow by gigabytes). The
    # tests assume Python's default handler.
    import signal
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)

    import asyncio
    import asyncio.base_events
    import asyncio.selector_events
    import asyncio.unix_events

    npaio_cls = None
    if a.loop == "npaio":
        try:
            if a.repo not in sys.path:
                sys.path.insert(0, a.repo)
            import npaio
            npaio_cls = npaio.Loop
            asyncio.SelectorEventLoop = npaio_cls
            asyncio.unix_events.SelectorEventLoop = npaio_cls
            asyncio.unix_events.DefaultEventLoopPolicy._loop_factory = npaio_cls
            if hasattr(asyncio.unix_events, "EventLoop"):          # 3.13+
                asyncio.unix_events.EventLoop = npaio_cls
            if hasattr(asyncio, "EventLoop"):
                asyncio.EventLoop = npaio_cls
            asyncio.set_event_loop_policy(None)
        except BaseException:
            traceback.print_exc()
            emit(ev="end", id="<import npaio / patch asyncio>", outcome=ERROR,
                 detail=traceback.format_exc(), dur=0)
            emit(ev="done")
            return 1

    # ---- probe: count loops created per class --------------------------
    loop_counts = {}
    orig_init = asyncio.base_events.BaseEventLoop.__init__

    def counting_init(self, *args, **kw):
        cls = type(self)
        if npaio_cls is not None and isinstance(self, npaio_cls):
            key = "npaio"
        elif isinstance(self, asyncio.selector_events.BaseSelectorEventLoop):
            key = "stock_selector"
        else:
            key = "other"
        loop_counts[key] = loop_counts.get(key, 0) + 1
        name = cls.__module__ + "." + cls.__qualname__
        loop_counts["class:" + name] = loop_counts.get("class:" + name, 0) + 1
        return orig_init(self, *args, **kw)

    asyncio.base_events.BaseEventLoop.__init__ = counting_init
    emitted = []

    def emit_loops():
        if not emitted:
            emitted.append(1)
            emit(ev="loops", counts=dict(loop_counts))
    atexit.register(emit_loops)

    # ---- build suite --------------------------------------------------
    # "test_streams" -> test.test_asyncio.test_streams; dotted names are used
    # as-is (handy to self-test the harness with a scratch module)
    modname = a.module if "." in a.module else PREFIX + a.module
    exclude = set()
    if a.exclude:
        with open(a.exclude) as f:
            exclude = {l.strip() for l in f if l.strip()}
    xfail = []
    if a.xfail:
        with open(a.xfail) as f:
            xfail = json.load(f)      # [[pattern, "xfail" | "skip"], ...]

    loader = unittest.TestLoader()
    try:
        suite = loader.loadTestsFromName(modname)
    except Exception:
        emit(ev="end", id=modname + ".<import>", outcome=ERROR,
             detail=traceback.format_exc(), dur=0)
        emit(ev="done")
        return 1

    def flatten(s):
        for t in s:
            if isinstance(t, unittest.TestSuite):
                yield from flatten(t)
            else:
                yield t

    tests = []
    listing = []
    for t in flatten(suite):
        tid = t.id()
        listing.append(tid)
        if tid in exclude:
            continue
        m = match_xfail([(p, md, "") for p, md in xfail], tid)
        mode = m[0] if m else None
        if mode == "skip":
            emit(ev="end", id=tid, outcome=DESELECTED, detail="", dur=0)
            continue
        if mode == "xfail":
            t.__unittest_expecting_failure__ = True
        tests.append(t)
    emit(ev="listing", ids=listing)

    test_timeout = a.test_timeout

    class Result(unittest.TextTestResult):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            self._cur = {}

        def _fmt(self, test, err):
            try:
                return self._exc_info_to_string(err, test)
            except Exception:
                return "".join(traceback.format_exception(*err))

        def startTest(self, test):
            super().startTest(test)
            tid = test.id()
            self._cur[tid] = {"outcome": None, "detail": "",
                              "t0": time.monotonic(), "sub": []}
            emit(ev="start", id=tid)
            if test_timeout:
                faulthandler.dump_traceback_later(test_timeout, exit=True,
                                                  file=sys.stderr)

        def _set(self, test, outcome, detail=""):
            tid = test.id()
            st = self._cur.get(tid)
            if st is None:
                # class/module fixture errors (_ErrorHolder): no start/stop
                emit(ev="end", id=tid, outcome=outcome, detail=detail, dur=0)
                return
            # keep the worst outcome
            if st["outcome"] in (FAIL, ERROR) and outcome == PASS:
                return
            st["outcome"] = outcome
            if detail:
                st["detail"] += detail

        def addSuccess(self, test):
            super().addSuccess(test)
            self._set(test, PASS)

        def addFailure(self, test, err):
            super().addFailure(test, err)
            self._set(test, FAIL, self._fmt(test, err))

        def addError(self, test, err):
            super().addError(test, err)
            self._set(test, ERROR, self._fmt(test, err))

        def addSkip(self, test, reason):
            super().addSkip(test, reason)
            self._set(test, SKIP, str(reason))

        def addExpectedFailure(self, test, err):
            super().addExpectedFailure(test, err)
            self._set(test, XFAIL, self._fmt(test, err))

        def addUnexpectedSuccess(self, test):
            super().addUnexpectedSuccess(test)
            self._set(test, XPASS)

        def addSubTest(self, test, subtest, err):
            super().addSubTest(test, subtest, err)
            if err is not None:
                st = self._cur.get(test.id())
                kind = FAIL if issubclass(err[0], test.failureException) else ERROR
                if issubclass(err[0], unittest.SkipTest):
                    return
                detail = "[%s]\n%s" % (subtest._subDescription(),
                                       self._fmt(test, err))
                if st is not None:
                    st["sub"].append(kind)
                    st["detail"] += detail
                else:
                    emit(ev="end", id=test.id(), outcome=kind, detail=detail,
                         dur=0)

        def stopTest(self, test):
            if test_timeout:
                faulthandler.cancel_dump_traceback_later()
            super().stopTest(test)
            tid = test.id()
            st = self._cur.pop(tid, None)
            if st is None:
                return
            outcome = st["outcome"]
            if st["sub"] and outcome in (None, PASS):
                outcome = ERROR if ERROR in st["sub"] else FAIL
            if outcome is None:
                outcome = PASS
            emit(ev="end", id=tid, outcome=outcome, detail=st["detail"][-20000:],
                 dur=round(time.monotonic() - st["t0"], 3))

    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=2,
                                     resultclass=Result)
    runner.run(unittest.TestSuite(tests))
    emit_loops()
    emit(ev="done")
    return 0


# --------------------------------------------------------------------------
# parent side
# --------------------------------------------------------------------------

def resolve_python(spec):
    if os.path.sep in spec or spec.startswith("python"):
        return spec
    cands = sorted(glob.glob("/root/.pyenv/versions/%s*/bin/python" % spec))
    cands = [c for c in cands
             if re.match(r".*/versions/%s(\.\d+)*/bin/python$" % re.escape(spec), c)]
    if not cands:
        sys.exit("cannot find interpreter for %r" % spec)
    return cands[-1]


def python_version(py):
    out = subprocess.check_output(
        [py, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
        text=True)
    return out.strip()


def _vtuple(s):
    return tuple(int(x) for x in s.split("."))


def version_matches(spec, version):
    v = _vtuple(version)[:2]
    for part in spec.split(","):
        part = part.strip()
        m = re.match(r"^(>=|<=|>|<|==)?\s*(\d+\.\d+)$", part)
        if not m:
            raise ValueError("bad version spec %r" % part)
        op, want = m.group(1) or "==", _vtuple(m.group(2))
        ok = {"==": v == want, ">=": v >= want, "<=": v <= want,
              ">": v > want, "<": v < want}[op]
        if ok:
            return True
    return False


def load_xfail_list(path, version):
    """Returns list of (pattern, mode, reason) applying to this version."""
    entries = []
    if not os.path.exists(path):
        return entries
    with open(path) as f:
        for lineno, raw in enumerate(f, 1):
            line, _, reason = raw.partition("#")
            line = line.strip()
            if not line:
                continue
            m = re.match(r"^([<>=\d.,\s]+):\s*(.*)$", line)
            if m:
                if not version_matches(m.group(1), version):
                    continue
                line = m.group(2).strip()
            mode = "xfail"
            if line.startswith("skip "):
                mode, line = "skip", line[5:].strip()
            pat = PREFIX + line if line.startswith("test_") else line
            entries.append((pat, mode, reason.strip()))
    return entries


def match_xfail(entries, tid):
    for pat, mode, reason in entries:
        if tid == pat or fnmatch.fnmatchcase(tid, pat):
            return mode, reason
    return None


def read_events(path):
    evs = []
    if not os.path.exists(path):
        return evs
    with open(path) as f:
        for line in f:
            try:
                evs.append(json.loads(line))
            except ValueError:
                pass      # a line cut by a kill
    return evs


def run_module(py, version, loop, module, a, logdir, xfail_entries):
    """Run one module (with restarts after hangs/crashes). Returns a dict."""
    tag = "%s-%s-%s" % (version, loop, module)
    log_path = os.path.join(logdir, tag + ".log")
    ev_path = os.path.join(logdir, tag + ".events.jsonl")
    excl_path = os.path.join(logdir, tag + ".exclude")
    xf_path = os.path.join(logdir, tag + ".xfail.json")
    for p in (log_path, ev_path, excl_path):
        if os.path.exists(p):
            os.unlink(p)

    env = dict(os.environ)
    env["PYTHONPATH"] = a.repo + (os.pathsep + env["PYTHONPATH"]
                                if env.get("PYTHONPATH") else "")
    env.pop("PYTHONASYNCIODEBUG", None)
    if a.pollers is not None:
        env["NPAIO_POLLERS"] = str(a.pollers)

    results = {}          # id -> {"outcome","detail","dur"}
    listing = None
    loops = {}
    status = "ok"
    notes = []
    t_start = time.monotonic()
    restarts = 0
    while True:
        # tests already decided are excluded on a restart
        with open(excl_path, "w") as f:
            for tid in results:
                f.write(tid + "\n")
        cmd = [py, os.path.abspath(__file__), "--child", "--module", module,
               "--loop", loop, "--repo", a.repo, "--events", ev_path, "--exclude", excl_path,
               "--test-timeout", str(a.test_timeout)]
        if loop == "npaio" and xfail_entries:
            with open(xf_path, "w") as f:
                json.dump([[pat, "skip" if a.skip_listed else mode]
                           for pat, mode, _ in xfail_entries], f)
            cmd += ["--xfail", xf_path]
        remaining = a.timeout - (time.monotonic() - t_start)
        if remaining <= 1:
            status = "TIMEOUT"
            break
        before = len(read_events(ev_path))
        log_off = os.path.getsize(log_path) if os.path.exists(log_path) else 0
        with open(log_path, "a") as logf:
            logf.write("\n===== %s (attempt %d) =====\n" % (" ".join(cmd),
                                                            restarts + 1))
            logf.flush()
            proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                    env=env, cwd=REPO, start_new_session=True)
            try:
                rc = proc.wait(timeout=remaining)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
                try:
                    os.killpg(proc.pid, 9)
                except OSError:
                    pass
                proc.wait()
                rc = None
        evs = read_events(ev_path)[before:]
        running = None
        done = False
        for ev in evs:
            k = ev.get("ev")
            if k == "listing":
                if listing is None:
                    listing = ev["ids"]
            elif k == "start":
                running = ev["id"]
            elif k == "end":
                results[ev["id"]] = {"outcome": ev["outcome"],
                                     "detail": ev.get("detail", ""),
                                     "dur": ev.get("dur", 0)}
                if ev["id"] == running:
                    running = None
            elif k == "loops":
                for key, n in ev["counts"].items():
                    loops[key] = loops.get(key, 0) + n
            elif k == "done":
                done = True
        if done and rc == 0:
            break
        if done:
            # finished but with a non-zero exit status (e.g. crash at exit)
            notes.append("exit status %s after the run finished" % rc)
            if rc is not None and rc < 0:
                status = "CRASH"
            break
        # hang / crash / watchdog exit
        tail = _log_tail(log_path, log_off)
        fired = rc == 1 and re.search(r"Timeout \(\d+:\d\d:\d\d\)!", tail)
        what = TIMEOUT if (timed_out or fired) else CRASH
        if running is not None:
            results[running] = {"outcome": what,
                                "detail": "%s (exit status %s); see %s\n%s"
                                          % (what, rc, log_path, tail[-6000:]),
                                "dur": None}
            notes.append("%s in %s" % (what, short_id(running)))
        else:
            notes.append("%s outside a test (exit status %s)" % (what, rc))
        if timed_out:
            notes.append("module exceeded its --timeout budget of %ss" % a.timeout)
            status = "TIMEOUT"
            break
        restarts += 1
        if running is None or restarts > a.max_restarts:
            status = "CRASH" if what == CRASH else "TIMEOUT"
            break
    elapsed = time.monotonic() - t_start
    if listing:
        never = [t for t in listing if t not in results]
        if never and status != "ok":
            notes.append("%d tests never ran" % len(never))
    return summarize(results, listing, loops, status, notes, elapsed, version,
                     loop, module, log_path, xfail_entries if loop == "npaio" else [])


def _log_tail(log_path, offset):
    """Text written to the log since `offset` (an attempt's own output)."""
    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def summarize(results, listing, loops, status, notes, elapsed, version, loop,
              module, log_path, xfail_entries):
    counts = {k: 0 for k in (PASS, FAIL, ERROR, SKIP, XFAIL, XPASS, TIMEOUT,
                             CRASH, DESELECTED)}
    listed_xfail = 0
    unlisted_bad = []
    listed_bad = []
    xpass = []
    for tid, r in sorted(results.items()):
        o = r["outcome"]
        counts[o] = counts.get(o, 0) + 1
        listed = match_xfail(xfail_entries, tid) if xfail_entries else None
        if o == XFAIL and listed:
            listed_xfail += 1
        if o in BAD:
            (listed_bad if listed else unlisted_bad).append(tid)
        if o == XPASS:
            xpass.append(tid)
    ran = sum(counts[k] for k in (PASS, FAIL, ERROR, SKIP, XFAIL, XPASS,
                                  TIMEOUT, CRASH))
    if status == "ok" and unlisted_bad:
        status = "FAIL"
    return {
        "python": version, "loop": loop, "module": module, "status": status,
        "ran": ran, "passed": counts[PASS], "failed": counts[FAIL],
        "errors": counts[ERROR], "skipped": counts[SKIP],
        "expected_failures": counts[XFAIL], "listed_xfail": listed_xfail,
        "unexpected_successes": counts[XPASS], "timeouts": counts[TIMEOUT],
        "crashes": counts[CRASH], "deselected": counts[DESELECTED],
        "total_listed_tests": len(listing or []),
        "seconds": round(elapsed, 1),
        "loops": loops, "notes": notes, "log": log_path,
        "unlisted_failures": unlisted_bad, "listed_failures": listed_bad,
        "xpass": xpass,
        "tests": results,
    }


def loops_cell(r):
    lp = r["loops"]
    s = "npaio=%d" % lp.get("npaio", 0) if r["loop"] == "npaio" else \
        "selector=%d" % lp.get("stock_selector", 0)
    if r["loop"] == "npaio" and lp.get("stock_selector"):
        s += " STOCK=%d!" % lp["stock_selector"]
    s += " other=%d" % lp.get("other", 0)
    return s


def print_table(runs, out=sys.stdout):
    w = out.write
    w("\n## Results\n\n")
    w("| python | loop | module | status | ran | pass | fail | err | skip "
      "| xfail | xpass | timeout | crash | desel | time s | loops created |\n")
    w("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
    for r in runs:
        w("| %s | %s | %s | %s | %d | %d | %d | %d | %d | %d | %d | %d | %d | %d "
          "| %.1f | %s |\n" % (
              r["python"], r["loop"], r["module"], r["status"], r["ran"],
              r["passed"], r["failed"], r["errors"], r["skipped"],
              r["expected_failures"], r["unexpected_successes"], r["timeouts"],
              r["crashes"], r["deselected"], r["seconds"], loops_cell(r)))
    bad = [(r, t) for r in runs for t in r["unlisted_failures"]]
    if bad:
        w("\n### Unlisted failures / errors / timeouts\n\n")
        for r, t in bad:
            res = r["tests"][t]
            first = _last_line(res["detail"])
            w("- [%s %s] `%s` **%s**: %s\n" % (r["python"], r["loop"],
                                                short_id(t), res["outcome"], first))
    xp = [(r, t) for r in runs for t in r["xpass"]]
    if xp:
        w("\n### Listed as expected failure but passed (XPASS)\n\n")
        for r, t in xp:
            w("- [%s %s] `%s`\n" % (r["python"], r["loop"], short_id(t)))
    notes = [(r, n) for r in runs for n in r["notes"]]
    if notes:
        w("\n### Notes\n\n")
        for r, n in notes:
            w("- [%s %s %s] %s\n" % (r["python"], r["loop"], r["module"], n))
    w("\nLogs: %s\n" % os.path.dirname(runs[0]["log"]) if runs else "")


def _last_line(detail):
    m = re.search(r"(Timeout \(\d+:\d\d:\d\d\)!|Fatal Python error: [^\n]*)",
                  detail or "")
    if m:
        return m.group(1)
    lines = [l for l in (detail or "").strip().splitlines() if l.strip()]
    if not lines:
        return ""
    s = lines[-1].strip()
    return s[:200]


def print_compare(runs, out=sys.stdout):
    w = out.write
    by = {}
    for r in runs:
        by[(r["python"], r["module"], r["loop"])] = r
    keys = sorted({(r["python"], r["module"]) for r in runs},
                  key=lambda k: (_vtuple(k[0]), k[1]))
    w("\n## Compare: stock asyncio vs npaio\n\n")
    w("| python | module | stock pass/fail/skip | npaio pass/fail/skip "
      "| npaio listed xfail/xpass/desel | npaio status | stock s | npaio s | npaio-only failures |\n")
    w("|---|---|---|---|---:|---|---:|---:|---|\n")
    only = []
    for k in keys:
        s = by.get(k + ("asyncio",))
        n = by.get(k + ("npaio",))
        if not s or not n:
            continue
        sbad = {t for t, x in s["tests"].items() if x["outcome"] in BAD}
        nonly = [t for t in n["unlisted_failures"] if t not in sbad]
        only += [(n, t) for t in nonly]

        def pfs(r):
            return "%d/%d/%d" % (r["passed"], r["failed"] + r["errors"] +
                                 r["timeouts"] + r["crashes"], r["skipped"])
        w("| %s | %s | %s | %s | %d/%d/%d | %s | %.1f | %.1f | %d |\n" % (
            k[0], k[1], pfs(s), pfs(n), n["listed_xfail"],
            n["unexpected_successes"], n["deselected"], n["status"],
            s["seconds"], n["seconds"], len(nonly)))
    if only:
        w("\n### Tests failing only on npaio\n\n")
        for r, t in only:
            res = r["tests"][t]
            w("- [%s] `%s` **%s**: %s\n" % (r["python"], short_id(t),
                                            res["outcome"],
                                            _last_line(res["detail"])))


def parent_main(a):
    pythons = [resolve_python(p) for p in a.python.split(",")] if a.python \
        else [sys.executable]
    modules = [m.strip() for m in a.modules.split(",") if m.strip()]
    modules = [m[len(PREFIX):] if m.startswith(PREFIX) else m for m in modules]
    loops = ["asyncio", "npaio"] if a.compare else [a.loop]
    logdir = a.logdir or tempfile.mkdtemp(prefix="npaio-cpython-")
    os.makedirs(logdir, exist_ok=True)

    jobs = []
    for py in pythons:
        version = python_version(py)
        xf = load_xfail_list(a.xfail_file, version)
        for m in modules:
            for lp in loops:
                jobs.append((py, version, lp, m, xf))

    runs = []

    def one(job):
        py, version, lp, m, xf = job
        r = run_module(py, version, lp, m, a, logdir, xf)
        sys.stderr.write("[%s %-7s %-20s] %-7s ran=%d pass=%d fail=%d err=%d "
                         "skip=%d xfail=%d xpass=%d timeout=%d crash=%d %.1fs  %s\n"
                         % (version, lp, m, r["status"], r["ran"], r["passed"],
                            r["failed"], r["errors"], r["skipped"],
                            r["expected_failures"], r["unexpected_successes"],
                            r["timeouts"], r["crashes"], r["seconds"],
                            loops_cell(r)))
        sys.stderr.flush()
        return r

    if a.jobs > 1:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(a.jobs) as ex:
            runs = list(ex.map(one, jobs))
    else:
        runs = [one(j) for j in jobs]

    print_table(runs)
    if a.compare:
        print_compare(runs)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"argv": sys.argv, "runs": runs}, f, indent=1)
    rc = 0
    for r in runs:
        if a.compare and r["loop"] != "npaio":
            continue
        if r["unlisted_failures"] or r["status"] not in ("ok",):
            rc = 1
    return rc


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--loop", choices=["npaio", "asyncio"], default="npaio")
    p.add_argument("--compare", action="store_true",
                   help="run every module on stock asyncio and on npaio")
    p.add_argument("--pollers", type=int, default=None,
                   help="export NPAIO_POLLERS=N to the test processes")
    p.add_argument("--modules", default=",".join(DEFAULT_MODULES))
    p.add_argument("--timeout", type=float, default=900.0,
                   help="hard wall-clock budget per module (s)")
    p.add_argument("--test-timeout", type=float, default=120.0,
                   help="watchdog per single test (s); 0 disables")
    p.add_argument("--max-restarts", type=int, default=10,
                   help="restarts of a module after hung/crashed tests")
    p.add_argument("--python", default=None,
                   help="comma list of interpreters or versions (3.10,3.11,...)")
    p.add_argument("-j", "--jobs", type=int, default=1,
                   help="modules run in parallel")
    p.add_argument("--json", default=None, help="write results as JSON")
    p.add_argument("--logdir", default=None)
    p.add_argument("--xfail-file", default=XFAIL_FILE)
    p.add_argument("--repo", default=REPO,
                   help="directory npaio is imported from (default: this repo)")
    p.add_argument("--skip-listed", action="store_true",
                   help="deselect listed expected failures instead of running them")
    # child mode (internal)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--module", help=argparse.SUPPRESS)
    p.add_argument("--events", help=argparse.SUPPRESS)
    p.add_argument("--exclude", help=argparse.SUPPRESS)
    p.add_argument("--xfail", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        return child_main(a)
    return parent_main(a)


if __name__ == "__main__":
    sys.exit(main())
