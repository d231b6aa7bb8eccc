"""npaio's own API (npaio ids only): constructor validation, NPAIO_POLLERS,
npaio.run, asyncio.Runner, EventLoopPolicy/install, get_stats,
native_counters."""

import asyncio
import functools
import re
import sys
import warnings

import pytest


POLICY_DEPRECATED = sys.version_info >= (3, 14)


def _close(loop):
    if not loop.is_closed():
        loop.close()


# --------------------------------------------------------------------------
# constructor

@pytest.mark.parametrize("pollers", [-1, 257])
def test_pollers_out_of_range(npaio_mod, leak_guard, pollers):
    with pytest.raises(ValueError):
        npaio_mod.new_event_loop(pollers=pollers)


def test_pollers_zero_is_inline(npaio_mod, leak_guard):
    before = npaio_mod.native_counters()["threads"]
    loop = npaio_mod.new_event_loop(pollers=0)
    try:
        st = loop.get_stats()
        assert st["config"]["inline"] is True
        assert len(st["pollers"]) == 1          # one poller round, on the loop thread
        assert npaio_mod.native_counters()["threads"] == before
    finally:
        _close(loop)


@pytest.mark.parametrize("pollers", ["x", "2", 1.5, b"1"])
def test_pollers_must_be_int(npaio_mod, leak_guard, pollers):
    with pytest.raises(TypeError):
        npaio_mod.new_event_loop(pollers=pollers)


def test_unknown_load_balance(npaio_mod, leak_guard):
    with pytest.raises(ValueError):
        npaio_mod.new_event_loop(load_balance="nope")
    with pytest.raises(ValueError):
        npaio_mod.new_event_loop(pollers=2, load_balance="nope")


@pytest.mark.parametrize("lb", ["round_robin", "random", "least_connections"])
def test_load_balance_values_accepted(npaio_mod, leak_guard, lb):
    loop = npaio_mod.new_event_loop(pollers=2, load_balance=lb)
    try:
        assert isinstance(loop, npaio_mod.Loop)
        assert len(loop.get_stats()["pollers"]) == 2
    finally:
        _close(loop)


def test_loop_is_a_selector_event_loop(npaio_mod, leak_guard):
    loop = npaio_mod.new_event_loop()
    try:
        assert isinstance(loop, npaio_mod.Loop)
        assert isinstance(loop, asyncio.SelectorEventLoop)
        assert isinstance(loop, asyncio.AbstractEventLoop)
        assert not loop.is_running()
        assert not loop.is_closed()
    finally:
        _close(loop)
    assert loop.is_closed()
    loop.close()  # closing twice is fine, as in asyncio


def test_default_is_inline(npaio_mod, leak_guard, monkeypatch):
    monkeypatch.delenv("NPAIO_POLLERS", raising=False)
    threads = npaio_mod.native_counters()["threads"]
    loop = npaio_mod.new_event_loop()
    try:
        cfg = loop.get_stats()["config"]
        assert cfg["pollers"] == 0 and cfg["inline"] is True
        assert npaio_mod.native_counters()["threads"] == threads
    finally:
        _close(loop)


@pytest.mark.parametrize("n", [1, 3])
def test_npaio_pollers_env(npaio_mod, leak_guard, monkeypatch, n):
    monkeypatch.setenv("NPAIO_POLLERS", str(n))
    loop = npaio_mod.new_event_loop()
    try:
        assert len(loop.get_stats()["pollers"]) == n
    finally:
        _close(loop)
    # an explicit argument wins over the environment
    loop = npaio_mod.new_event_loop(pollers=2)
    try:
        assert len(loop.get_stats()["pollers"]) == 2
    finally:
        _close(loop)


@pytest.mark.parametrize("bad,exc", [("x", TypeError), (1.5, TypeError), (True, TypeError),
                                     (-1, ValueError), (10**7, ValueError)])
def test_spin_us_validated(npaio_mod, leak_guard, bad, exc):
    with pytest.raises(exc):
        npaio_mod.new_event_loop(spin_us=bad)


def test_spin_us_env(npaio_mod, leak_guard, monkeypatch):
    monkeypatch.setenv("NPAIO_SPIN_US", "7")
    loop = npaio_mod.new_event_loop()
    try:
        assert loop.get_stats()["config"]["spin_us"] == 7
    finally:
        _close(loop)
    loop = npaio_mod.new_event_loop(spin_us=0)     # the argument wins
    try:
        assert loop.get_stats()["config"]["spin_us"] == 0
    finally:
        _close(loop)
    monkeypatch.setenv("NPAIO_SPIN_US", "many")
    with pytest.raises(ValueError, match="NPAIO_SPIN_US"):
        npaio_mod.new_event_loop()


def _spins(loop):
    p = loop.get_stats()["pollers"][0]
    return p["spins"], p["spin_hits"]


class _Inbox(asyncio.Protocol):
    """Collects what a connection receives; next() waits for the next read."""

    def __init__(self):
        self.waiter = None

    def data_received(self, data):
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(data)

    async def next(self):
        self.waiter = asyncio.get_running_loop().create_future()
        return await asyncio.wait_for(self.waiter, 10)


async def _exchange(inbox, peer, n=3):
    # n rounds that each serve this one connection: what makes the inline
    # loop spin before its next sleep (poller_epoll.c spin_wait).
    for i in range(n):
        peer.sendall(b"x%d" % i)
        assert await inbox.next() == b"x%d" % i


@pytest.mark.parametrize("spin_us", [0, 200])
def test_idle_loop_backs_off_spinning(npaio_mod, leak_guard, spin_us):
    # After one connection's round trips, 40 waits of 2 ms that no I/O
    # ends: a spin that finds nothing makes the next 2^k - 1 waits sleep at
    # once (k failed spins in a row), so only waits 1, 3, 7, 15 and 31
    # spin. With spin_us=0 none does.
    import socket
    loop = npaio_mod.new_event_loop(spin_us=spin_us)
    a, b = socket.socketpair()
    try:
        async def main():
            tr, inbox = await loop.create_connection(_Inbox, sock=a)
            await _exchange(inbox, b)
            before = _spins(loop)
            for _ in range(40):
                await asyncio.sleep(0.002)
            after = _spins(loop)
            tr.close()
            return after[0] - before[0], after[1] - before[1]
        spins, hits = loop.run_until_complete(main())
        assert hits == 0
        if spin_us:
            assert 1 <= spins <= 8, spins
        else:
            assert spins == 0
    finally:
        b.close()
        _close(loop)


def test_spin_catches_input(npaio_mod, leak_guard):
    # A 1 s spin budget, after one connection's round trips: input sent
    # 30 ms into the wait is found by the spin (no sleep), and delivered as
    # usual.
    import socket
    import threading
    loop = npaio_mod.new_event_loop(spin_us=1_000_000)
    a, b = socket.socketpair()
    try:
        async def main():
            tr, inbox = await loop.create_connection(_Inbox, sock=a)
            await _exchange(inbox, b)
            t = threading.Timer(0.03, b.sendall, (b"ping",))
            t.start()
            try:
                return await inbox.next()
            finally:
                t.join()
                tr.close()
        assert loop.run_until_complete(main()) == b"ping"
        spins, hits = _spins(loop)
        assert hits >= 1 and spins >= hits
    finally:
        b.close()
        _close(loop)


def test_no_spin_while_several_connections_take_turns(npaio_mod, leak_guard):
    # Rounds that serve different connections (each round one, in turn):
    # their inputs gather better in a sleep than a spin catches them one
    # at a time, so the loop does not spin, even with a big budget.
    import socket
    loop = npaio_mod.new_event_loop(spin_us=1_000_000)
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        async def main():
            conns = [await loop.create_connection(_Inbox, sock=a) for a, _ in pairs]
            for i in range(6):
                (tr, inbox), (_, peer) = conns[i % 2], pairs[i % 2]
                peer.sendall(b"y%d" % i)
                assert await inbox.next() == b"y%d" % i
            await asyncio.sleep(0.01)
            for tr, _ in conns:
                tr.close()
        loop.run_until_complete(main())
        assert _spins(loop) == (0, 0)
    finally:
        for _, b in pairs:
            b.close()
        _close(loop)


def test_stats_structure(npaio_mod, leak_guard):
    loop = npaio_mod.new_event_loop(pollers=2)
    try:
        st = loop.get_stats()
        assert isinstance(st, dict)
        assert len(st["pollers"]) == 2
        for p in st["pollers"]:
            for key in ("connections", "events", "bytes_read", "bytes_written",
                        "wakeups", "reads", "writes", "spins", "spin_hits", "polls"):
                assert isinstance(p[key], int), key
                assert p[key] >= 0
            assert p["connections"] == 0
        for key in ("drains", "completions", "completions_per_drain",
                    "loop_wakeups", "accepts"):
            assert key in st["loop"], key
        assert isinstance(st["loop"]["completions_per_drain"], (int, float))
    finally:
        _close(loop)


def test_native_counters_structure_and_balance(npaio_mod, leak_guard):
    before = npaio_mod.native_counters()
    assert set(before) >= {"conns", "nodes", "reactors", "threads"}
    for v in before.values():
        assert isinstance(v, int) and v >= 0
    loop = npaio_mod.new_event_loop(pollers=3)
    try:
        async def main():
            server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            r, w = await asyncio.open_connection("127.0.0.1", port)
            during = npaio_mod.native_counters()
            w.close()
            await w.wait_closed()
            server.close()
            await server.wait_closed()
            return during

        during = loop.run_until_complete(asyncio.wait_for(main(), 20))
        # something native is alive while the loop serves a connection
        assert during["conns"] > before["conns"]
        assert during["threads"] >= before["threads"] + 3
    finally:
        _close(loop)
    # leak_guard checks the return to `before` (with a short settle time)


# --------------------------------------------------------------------------
# npaio.run / Runner / policy

def test_npaio_run_returns_result(npaio_mod, leak_guard):
    async def main(x):
        loop = asyncio.get_running_loop()
        assert isinstance(loop, npaio_mod.Loop)
        await asyncio.sleep(0)
        return x * 2

    assert npaio_mod.run(main(21)) == 42


def test_npaio_run_propagates_exception(npaio_mod, leak_guard):
    async def main():
        raise KeyError("boom")

    with pytest.raises(KeyError):
        npaio_mod.run(main())


def test_npaio_run_options(npaio_mod, leak_guard):
    async def main():
        loop = asyncio.get_running_loop()
        return len(loop.get_stats()["pollers"]), loop.get_debug()

    n, debug = npaio_mod.run(main(), pollers=2, debug=True)
    assert n == 2
    assert debug is True


def test_npaio_run_echo(npaio_mod, leak_guard):
    async def main():
        async def handle(r, w):
            w.write(await r.readexactly(5))
            await w.drain()
            w.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"hello")
        data = await r.readexactly(5)
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()
        return data

    assert npaio_mod.run(asyncio.wait_for(main(), 20)) == b"hello"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.Runner is 3.11+")
def test_asyncio_runner_loop_factory(npaio_mod, leak_guard):
    async def main():
        return type(asyncio.get_running_loop())

    with asyncio.Runner(loop_factory=npaio_mod.new_event_loop) as runner:
        assert issubclass(runner.run(main()), npaio_mod.Loop)
        assert isinstance(runner.get_loop(), npaio_mod.Loop)

    factory = functools.partial(npaio_mod.new_event_loop, pollers=2)
    with asyncio.Runner(loop_factory=factory) as runner:
        loop = runner.get_loop()
        assert len(loop.get_stats()["pollers"]) == 2


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="asyncio.run(loop_factory=) is 3.12+")
def test_asyncio_run_loop_factory(npaio_mod, leak_guard):
    async def main():
        return isinstance(asyncio.get_running_loop(), npaio_mod.Loop)

    assert asyncio.run(main(), loop_factory=npaio_mod.new_event_loop)


@pytest.fixture
def restore_policy():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = asyncio.get_event_loop_policy()
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_event_loop_policy(old)


@pytest.mark.skipif(sys.version_info >= (3, 16),
                    reason="event loop policies are gone in 3.16")
def test_event_loop_policy(npaio_mod, leak_guard, restore_policy):
    with warnings.catch_warnings():
        if POLICY_DEPRECATED:
            warnings.simplefilter("ignore", DeprecationWarning)
        else:
            warnings.simplefilter("error", DeprecationWarning)
        policy = npaio_mod.EventLoopPolicy()
        assert isinstance(policy, asyncio.AbstractEventLoopPolicy)
        loop = policy.new_event_loop()
        try:
            assert isinstance(loop, npaio_mod.Loop)
        finally:
            loop.close()
        asyncio.set_event_loop_policy(policy)

        async def main():
            return type(asyncio.get_running_loop())

        assert issubclass(asyncio.run(main()), npaio_mod.Loop)


@pytest.mark.skipif(sys.version_info >= (3, 16),
                    reason="event loop policies are gone in 3.16")
def test_install(npaio_mod, leak_guard, restore_policy):
    with warnings.catch_warnings():
        if POLICY_DEPRECATED:
            warnings.simplefilter("ignore", DeprecationWarning)
        else:
            warnings.simplefilter("error", DeprecationWarning)
        npaio_mod.install()
        assert isinstance(asyncio.get_event_loop_policy(),
                          npaio_mod.EventLoopPolicy)
        loop = asyncio.new_event_loop()
        try:
            assert isinstance(loop, npaio_mod.Loop)
        finally:
            loop.close()

        async def main():
            return type(asyncio.get_running_loop())

        assert issubclass(asyncio.run(main()), npaio_mod.Loop)


# --------------------------------------------------------------------------
# stats on a live loop (every npaio config)

def test_stats_count_bytes_echoed(loop, run, npaio_only):
    total = 3 * 1024 * 1024 + 17

    async def main():
        async def handle(r, w):
            while True:
                data = await r.read(65536)
                if not data:
                    break
                w.write(data)
                await w.drain()
            w.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        before = loop.get_stats()
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"a" * total)
        await w.drain()
        got = await r.readexactly(total)
        w.write_eof()
        assert await r.read() == b""
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()
        after = loop.get_stats()
        return got, before, after

    got, before, after = run(loop, main())
    assert len(got) == total

    def tot(st, key):
        return sum(p[key] for p in st["pollers"])

    # both ends are on this loop: server reads `total`, client reads `total`
    assert tot(after, "bytes_read") - tot(before, "bytes_read") == 2 * total
    assert tot(after, "bytes_written") - tot(before, "bytes_written") == 2 * total
    assert after["loop"]["accepts"] - before["loop"]["accepts"] == 1
    assert tot(after, "connections") == 0
    assert tot(after, "events") > tot(before, "events")


def test_stats_connections_and_balance(loop, run, npaio_only):
    n = 30

    async def main():
        protos = []

        class P(asyncio.Protocol):
            def connection_made(self, tr):
                self.tr = tr
                protos.append(self)

        server = await loop.create_server(P, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        clients = [await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
                   for _ in range(n)]
        for _ in range(1000):
            if len(protos) == n:
                break
            await asyncio.sleep(0.005)
        st = loop.get_stats()
        for tr, _ in clients:
            tr.close()
        for p in protos:
            p.tr.close()
        await asyncio.sleep(0.05)
        server.close()
        await server.wait_closed()
        return st

    st = run(loop, main())
    conns = [p["connections"] for p in st["pollers"]]
    # both ends of each connection live on this loop
    assert sum(conns) == 2 * n
    assert st["loop"]["accepts"] == n
    if len(conns) > 1:
        assert all(c > 0 for c in conns), conns


def test_loop_fixture_kind(loop, loop_kind, is_npaio):
    """The parametrised fixture really gives the loop it claims."""
    assert isinstance(loop, asyncio.SelectorEventLoop)
    if not is_npaio:
        assert type(loop) is asyncio.SelectorEventLoop
        return
    import npaio
    assert isinstance(loop, npaio.Loop)
    m = re.search(r"-p(\d+)", loop_kind)
    # pollers=0 is inline mode: one poller round run by the loop thread
    assert len(loop.get_stats()["pollers"]) == max(1, int(m.group(1)))


def test_socket_the_core_cannot_own_gets_asyncio_transport(npaio_mod, leak_guard):
    # A mock socket (CPython's test_base_events passes one): its fileno() is
    # a MagicMock whose int() is 1. The C core closes the fds it owns, so it
    # must not take this one; asyncio's own transport serves it instead.
    import os
    from unittest import mock
    from asyncio import selector_events
    loop = npaio_mod.new_event_loop()
    try:
        sock = mock.MagicMock()
        loop._add_reader = mock.Mock()
        tr = loop._make_socket_transport(sock, asyncio.Protocol())
        assert isinstance(tr, selector_events._SelectorSocketTransport)
        tr.close()
        loop.run_until_complete(asyncio.sleep(0))
        os.fstat(1)             # stdout is still open
        real = __import__("socket").socketpair()
        try:
            tr2 = loop._make_socket_transport(real[0], asyncio.Protocol())
            assert not isinstance(tr2, selector_events._SelectorSocketTransport)
            tr2.close()
            loop.run_until_complete(asyncio.sleep(0.01))
        finally:
            real[1].close()
    finally:
        _close(loop)


def test_speedups_setup_checks_the_slots(npaio_mod):
    # setup_transport (like setup_loop and setup_timers) takes only the
    # class's own writable __slots__, whose offsets C then reads directly.
    from npaio import _speedups, transports
    cls = transports._NativeSocketTransport
    with pytest.raises(TypeError, match="setup_transport"):
        _speedups.setup_transport(cls, (1, 2, 3))
    with pytest.raises(TypeError, match="setup_transport"):
        _speedups.setup_transport(cls, (cls.__dict__["_wconn"],))

    class Other:
        __slots__ = ("_wconn", "_direct", "_closing")
    with pytest.raises(TypeError, match="writable __slots__"):
        _speedups.setup_transport(cls, tuple(Other.__dict__[f] for f in Other.__slots__))
    # the real ones still work (and stay in force)
    _speedups.setup_transport(cls, tuple(cls.__dict__[f] for f in ("_wconn", "_direct", "_closing")))
