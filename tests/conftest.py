"""Shared fixtures for the npaio behaviour suite.

Every behaviour test takes the ``loop`` fixture, which is parametrised over
stock asyncio and several npaio configurations.  The tests assert behaviour
that stock asyncio already has, so the "asyncio" id is the reference.

Fixtures provided:

* ``loop``        -- a fresh event loop (see LOOP_CONFIGS for the ids)
* ``loop_kind``   -- the id string of the current loop ("asyncio", "npaio-p1", ...)
* ``run``         -- ``run(loop, coro, timeout=DEFAULT_TIMEOUT)``: run a coroutine
                     under ``asyncio.wait_for`` so that no test can hang
* ``loop_errors`` -- the list of contexts that reached the loop exception
                     handler; a test that expects some may inspect and clear it
* ``npaio_mod``   -- the imported npaio module (skips when unavailable)
* ``leak_guard``  -- fd / native-counter balance check for tests that create
                     their own npaio loops

Teardown of ``loop`` closes the loop and then fails the test if
  - any unexpected exception reached the loop exception handler
    (mark the test ``@pytest.mark.loop_exceptions_expected`` to allow them),
  - the number of open fds is not back to its value before the test,
  - (npaio ids) npaio.native_counters() is not back to its earlier value.

A faulthandler watchdog (NPAIO_TEST_HANG_TIMEOUT seconds, default 120) dumps
all thread stacks and exits the process if a single test hangs anyway (for
instance inside a native call that never returns).
"""

import asyncio
import faulthandler
import gc
import os
import time

import pytest

try:
    import npaio  # noqa: F401
    NPAIO_IMPORT_ERROR = None
    _missing = [name for name in ("new_event_loop", "native_counters")
                if not hasattr(npaio, name)]
    if _missing:
        # e.g. a bare source directory imported as a namespace package
        NPAIO_IMPORT_ERROR = ("import npaio gave %r without %s"
                              % (npaio, ", ".join(_missing)))
        npaio = None
except Exception as exc:  # ImportError, or a broken native build
    npaio = None
    NPAIO_IMPORT_ERROR = "import npaio failed: %s: %s" % (type(exc).__name__, exc)


DEFAULT_TIMEOUT = 20.0
HANG_TIMEOUT = float(os.environ.get("NPAIO_TEST_HANG_TIMEOUT", "120"))

# id -> options for npaio.new_event_loop (None means stock asyncio)
LOOP_CONFIGS = {
    "asyncio": None,
    "npaio-p0-inline": {"pollers": 0},
    "npaio-p1": {"pollers": 1},
    "npaio-p3-rr": {"pollers": 3, "load_balance": "round_robin"},
    "npaio-p2-random": {"pollers": 2, "load_balance": "random"},
    "npaio-p2-least": {"pollers": 2, "load_balance": "least_connections"},
}

NPAIO_IDS = [k for k, v in LOOP_CONFIGS.items() if v is not None]


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "loop_exceptions_expected: the test expects calls to the loop "
        "exception handler; do not fail it at teardown because of them")


# --------------------------------------------------------------------------
# helpers

def count_fds():
    return len(os.listdir("/proc/self/fd"))


def list_fds():
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[name] = os.readlink("/proc/self/fd/" + name)
        except OSError:
            pass
    return out


def native_counters():
    if npaio is None:
        return None
    live = dict(npaio.native_counters())
    live.pop('node_allocs', None)       # running totals, not live objects
    live.pop('node_frees', None)
    return live


def _run(loop, coro, timeout=DEFAULT_TIMEOUT):
    """Run *coro* on *loop* to completion, failing after *timeout* seconds."""
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def make_loop(kind):
    opts = LOOP_CONFIGS[kind]
    if opts is None:
        return asyncio.SelectorEventLoop()
    return npaio.new_event_loop(**opts)


def _cancel_all_tasks(loop):
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    if not tasks:
        return
    for t in tasks:
        t.cancel()
    try:
        loop.run_until_complete(asyncio.wait_for(
            asyncio.gather(*tasks, return_exceptions=True), 10))
    except Exception:
        pass


def shutdown_loop(loop):
    """Cancel leftover tasks, shut the loop down cleanly and close it."""
    if loop.is_closed():
        return
    if loop.is_running():  # pragma: no cover - would be a test bug
        loop.stop()
    _cancel_all_tasks(loop)
    try:
        loop.run_until_complete(asyncio.wait_for(loop.shutdown_asyncgens(), 10))
    except Exception:
        pass
    if hasattr(loop, "shutdown_default_executor"):
        try:
            loop.run_until_complete(
                asyncio.wait_for(loop.shutdown_default_executor(), 10))
        except Exception:
            pass
    loop.close()


class LeakGuard:
    """Snapshot fds and npaio native counters; check they come back."""

    def __init__(self, native):
        self.native = native and npaio is not None
        self.fds_before = None
        self.fd_map_before = None
        self.counters_before = None

    def start(self):
        gc.collect()
        self.fds_before = count_fds()
        self.fd_map_before = list_fds()
        if self.native:
            self.counters_before = native_counters()

    def check(self, settle=3.0):
        """Return a list of problem strings (empty when balanced)."""
        problems = []
        deadline = time.monotonic() + settle
        while True:
            gc.collect()
            fds = count_fds()
            counters = native_counters() if self.native else None
            ok_fds = fds == self.fds_before
            ok_native = (not self.native) or counters == self.counters_before
            if ok_fds and ok_native:
                return problems
            if time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        if not ok_fds:
            now = list_fds()
            added = {k: v for k, v in now.items()
                     if self.fd_map_before.get(k) != v}
            removed = {k: v for k, v in self.fd_map_before.items()
                       if now.get(k) != v}
            problems.append(
                "open fd count changed: %d before, %d after; new: %r; gone: %r"
                % (self.fds_before, fds, added, removed))
        if not ok_native:
            problems.append(
                "npaio.native_counters() not back to earlier values: "
                "before %r, after %r" % (self.counters_before, counters))
        return problems


# --------------------------------------------------------------------------
# fixtures

def _loop_params():
    params = []
    for kind, opts in LOOP_CONFIGS.items():
        marks = ()
        if opts is not None and npaio is None:
            marks = (pytest.mark.skip(reason=NPAIO_IMPORT_ERROR),)
        params.append(pytest.param(kind, id=kind, marks=marks))
    return params


@pytest.fixture
def run():
    """``run(loop, coro, timeout=20.0)`` -> result of *coro*."""
    return _run


@pytest.fixture(params=_loop_params())
def loop_kind(request):
    return request.param


@pytest.fixture
def loop(request, loop_kind):
    faulthandler.dump_traceback_later(HANG_TIMEOUT, exit=True)
    guard = LeakGuard(native=LOOP_CONFIGS[loop_kind] is not None)
    guard.start()
    errors = []
    request.node._npaio_loop_errors = errors

    lp = make_loop(loop_kind)

    def handler(lp_, context):
        errors.append(context)

    lp.set_exception_handler(handler)
    try:
        yield lp
    finally:
        problems = []
        try:
            shutdown_loop(lp)
        except Exception as exc:  # report, but still run the leak checks
            problems.append("closing the loop raised %r" % (exc,))
            try:
                if not lp.is_closed():
                    lp.close()
            except Exception:
                pass
        del lp
        gc.collect()

        expected = request.node.get_closest_marker("loop_exceptions_expected")
        if errors and expected is None:
            descr = []
            for ctx in errors:
                exc = ctx.get("exception")
                descr.append("%s (exception=%r)" % (ctx.get("message"), exc))
            problems.append(
                "unexpected call(s) to the loop exception handler: "
                + "; ".join(descr))

        problems.extend(guard.check())
        faulthandler.cancel_dump_traceback_later()
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def loop_errors(request, loop):
    """Contexts passed to the loop exception handler during the test."""
    return request.node._npaio_loop_errors


@pytest.fixture
def npaio_mod():
    if npaio is None:
        pytest.skip(NPAIO_IMPORT_ERROR)
    return npaio


@pytest.fixture
def leak_guard(npaio_mod):
    """For tests that create (and close) their own npaio loops."""
    faulthandler.dump_traceback_later(HANG_TIMEOUT, exit=True)
    guard = LeakGuard(native=True)
    guard.start()
    yield guard
    problems = guard.check()
    faulthandler.cancel_dump_traceback_later()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def is_npaio(loop_kind):
    return LOOP_CONFIGS[loop_kind] is not None


@pytest.fixture
def npaio_only(loop_kind):
    if LOOP_CONFIGS[loop_kind] is None:
        pytest.skip("npaio-only test")
