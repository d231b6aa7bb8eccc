"""Ready callbacks and write() arguments: what the loop's C fast paths
(npaio/_native/speedups.c: run_ready, TransportBase.write, dispatch) must do
exactly as stock asyncio does.

Each test runs on stock asyncio (the reference) and on every npaio
configuration; the inline one (npaio-p0-inline) is the one that runs the
ready queue in C.
"""
import asyncio
import contextvars
import gc
import math
import sys
import weakref

import pytest

var = contextvars.ContextVar("var", default="unset")


class Boom(Exception):
    pass


@pytest.mark.loop_exceptions_expected
def test_callback_exception_reaches_handler_and_loop_goes_on(loop, run, loop_errors):
    ran = []

    def bad(a, b):
        ran.append(("bad", a, b))
        raise Boom("from a callback")

    async def main():
        h = loop.call_soon(bad, 1, 2)
        loop.call_soon(ran.append, "after")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return h

    h = run(loop, main())
    assert ran == [("bad", 1, 2), "after"]
    assert len(loop_errors) == 1, loop_errors
    ctx = loop_errors[0]
    assert ctx["message"].startswith("Exception in callback ")
    assert "bad" in ctx["message"]
    assert ctx["handle"] is h
    assert isinstance(ctx["exception"], Boom)
    tb = ctx["exception"].__traceback__
    assert tb is not None
    while tb.tb_next is not None:
        tb = tb.tb_next
    assert tb.tb_frame.f_code.co_name == "bad"
    loop_errors.clear()


@pytest.mark.loop_exceptions_expected
def test_timer_callback_exception_reaches_handler(loop, run, loop_errors):
    def bad():
        raise Boom("from a timer")

    async def main():
        h = loop.call_later(0.001, bad)
        await asyncio.sleep(0.05)
        return h

    h = run(loop, main())
    assert len(loop_errors) == 1, loop_errors
    assert loop_errors[0]["handle"] is h
    assert isinstance(loop_errors[0]["exception"], Boom)
    loop_errors.clear()


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exceptions_from_callbacks_propagate(loop, exc_type):
    """KeyboardInterrupt and SystemExit leave run_forever(); the callbacks
    behind the one that raised stay ready and run on the next run."""
    ran = []

    def interrupt():
        raise exc_type()

    loop.call_soon(ran.append, 1)
    loop.call_soon(interrupt)
    loop.call_soon(ran.append, 2)
    with pytest.raises(exc_type):
        loop.run_forever()
    assert ran == [1]
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert ran == [1, 2]


@pytest.mark.parametrize("size", [100, 8192])
def test_keyboard_interrupt_in_data_received_loses_no_data(loop, size):
    """Three connections' data arrive in one loop iteration and every
    protocol raises KeyboardInterrupt at its first data_received: each
    run_forever() ends with it, and the data of the connections behind the
    one that raised is still delivered on the next runs (asyncio keeps
    their callbacks ready; npaio keeps their completion records). 100 B
    goes through the drain arena, 8 KiB is handed over in place."""
    import socket

    got = {}

    class P(asyncio.Protocol):
        def connection_made(self, tr):
            self.key = tr.get_extra_info("peername")[1]
            got[self.key] = bytearray()
            self.raised = False

        def data_received(self, data):
            got[self.key] += data
            if not self.raised:
                self.raised = True
                raise KeyboardInterrupt

    server = loop.run_until_complete(loop.create_server(P, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    loop.run_until_complete(asyncio.sleep(0.1))      # accepted, reading
    assert len(got) == 3
    payload = {c.getsockname()[1]: bytes([i + 1]) * size for i, c in enumerate(clients)}
    for c in clients:
        c.sendall(payload[c.getsockname()[1]])
    interrupts = 0
    for _ in range(20):
        try:
            loop.run_until_complete(asyncio.sleep(0.05))
        except KeyboardInterrupt:
            interrupts += 1
        if all(len(got[k]) == size for k in got):
            break
    assert {k: bytes(v) for k, v in got.items()} == payload
    assert interrupts == 3
    for c in clients:
        c.close()
    server.close()
    loop.run_until_complete(server.wait_closed())


def test_callbacks_run_in_their_context(loop, run):
    seen = []

    def look(tag):
        seen.append((tag, var.get()))

    async def main():
        var.set("at call_soon")
        loop.call_soon(look, "copied")          # a copy of the current context
        var.set("changed after")
        ctx = contextvars.copy_context()
        ctx.run(var.set, "explicit")
        loop.call_soon(look, "explicit", context=ctx)
        loop.call_later(0.001, look, "timer", context=ctx)
        await asyncio.sleep(0.05)

    run(loop, main())
    assert seen == [("copied", "at call_soon"), ("explicit", "explicit"),
                    ("timer", "explicit")]


@pytest.mark.loop_exceptions_expected
def test_callback_in_an_entered_context_is_reported(loop, loop_errors):
    """A callback whose context is already entered (the loop itself runs
    inside that context) cannot run: Context.run's RuntimeError reaches the
    exception handler and the loop goes on, as in asyncio."""
    ctx = contextvars.copy_context()
    ran = []

    async def main():
        h = loop.call_soon(ran.append, "in ctx", context=ctx)
        loop.call_soon(ran.append, "other")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return h

    h = ctx.run(loop.run_until_complete, main())
    assert ran == ["other"]
    if sys.version_info >= (3, 12):
        # 3.12+ runs the exception handler in the handle's context too, which
        # fails the same way: asyncio logs "Unhandled error in exception
        # handler" and the handler never sees it.
        assert loop_errors == []
        return
    assert len(loop_errors) == 1, loop_errors
    assert loop_errors[0]["handle"] is h
    exc = loop_errors[0]["exception"]
    assert isinstance(exc, RuntimeError)
    assert "already entered" in str(exc)
    loop_errors.clear()


def test_cancelled_handles_do_not_run(loop, run):
    ran = []

    async def main():
        h1 = loop.call_soon(ran.append, "soon")
        h2 = loop.call_later(0.001, ran.append, "later")
        loop.call_soon(ran.append, "kept")
        h1.cancel()
        h2.cancel()
        await asyncio.sleep(0.05)

    run(loop, main())
    assert ran == ["kept"]


def test_many_callbacks_in_order(loop, run):
    ran = []

    async def main():
        for i in range(5000):
            loop.call_soon(ran.append, i)
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    run(loop, main())
    assert ran == list(range(5000))


def test_callbacks_scheduled_by_callbacks_run_next_iteration(loop):
    order = []

    def first():
        order.append("first")
        loop.call_soon(order.append, "scheduled by first")

    loop.call_soon(first)
    loop.call_soon(order.append, "second")
    loop.call_soon(loop.stop)
    loop.run_forever()
    # asyncio runs only what was ready when the iteration began; stop()
    # ends the loop after the iteration that saw it.
    assert order == ["first", "second"]
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert order == ["first", "second", "scheduled by first"]


def test_run_handles_release_what_they_held(loop, run):
    # npaio keeps run Handles no one else refers to for reuse (speedups.c's
    # handle pool): the callback's arguments must still be released, and a
    # Handle someone holds a weak reference to must still die.
    class Arg:
        pass

    async def main():
        a = Arg()
        arg_ref = weakref.ref(a)
        handle_ref = weakref.ref(loop.call_soon(lambda x: None, a))
        del a
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        gc.collect()
        return arg_ref() is None, handle_ref() is None

    assert run(loop, main()) == (True, True)


def test_a_kept_handle_keeps_its_fields_after_running(loop, run):
    # asyncio leaves a Handle's callback and args in place after it runs; a
    # Handle the caller keeps is never taken back for reuse.
    ran = []

    async def main():
        kept = [loop.call_soon(ran.append, i) for i in range(100)]
        await asyncio.sleep(0)
        for i in range(100):          # reuse happens here, if anywhere
            loop.call_soon(ran.append, 100 + i)
        await asyncio.sleep(0)
        return kept

    kept = run(loop, main())
    assert ran == list(range(200))
    assert [h._args for h in kept] == [(i,) for i in range(100)]
    assert all(h._callback == ran.append and not h.cancelled() for h in kept)


def test_timers_fire_in_order_of_when(loop, run):
    # call_at's heap (in C on npaio): float and int deadlines mixed.
    order = []

    async def main():
        now = loop.time()
        whens = [now + 0.03, now + 0.01, math.floor(now) - 1, now + 0.02, now + 0.005,
                 now + 0.025, now - 0.5, now + 0.015]
        for w in whens:
            loop.call_at(w, order.append, w)
        await asyncio.sleep(0.06)
        return whens

    whens = run(loop, main())
    assert order == sorted(whens)


def test_a_patched_timerhandle_lt_is_called(loop, run, monkeypatch):
    # heapq compares TimerHandles with `<`; npaio compares their deadlines
    # in C only while TimerHandle.__lt__ is asyncio's own.
    calls = []
    orig = asyncio.TimerHandle.__lt__

    def lt(self, other):
        calls.append((self, other))
        return orig(self, other)

    monkeypatch.setattr(asyncio.TimerHandle, "__lt__", lt)
    order = []

    async def main():
        for d in (0.02, 0.01, 0.015, 0.005):
            loop.call_later(d, order.append, d)
        await asyncio.sleep(0.04)

    run(loop, main())
    assert calls
    assert order == [0.005, 0.01, 0.015, 0.02]


class _Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class _Collect(asyncio.Protocol):
    def __init__(self):
        self.got = bytearray()

    def data_received(self, data):
        self.got.extend(data)


async def _echo_pair(loop, send, expect, timeout_steps=500):
    """Connect to an echo server, call send(transport), wait until `expect`
    bytes came back; returns them."""
    server = await loop.create_server(_Echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tr, client = await loop.create_connection(_Collect, "127.0.0.1", port)
    try:
        send(tr)
        for _ in range(timeout_steps):
            if len(client.got) >= expect:
                break
            await asyncio.sleep(0.01)
    finally:
        tr.close()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.01)
    return bytes(client.got)


def test_write_accepts_bytes_like_and_rejects_others(loop, run):
    def send(tr):
        tr.write(b"")
        tr.write(b"a")
        tr.write(bytearray(b"b"))
        tr.write(memoryview(b"xcdx")[1:3])
        tr.write(memoryview(bytearray(b"e")))
        for bad in ("text", 5, None, [b"x"]):
            with pytest.raises(TypeError):
                tr.write(bad)
        tr.writelines([b"f", bytearray(b"g"), memoryview(b"h")])

    assert run(loop, _echo_pair(loop, send, 8)) == b"abcdefgh"


def test_write_after_write_eof_raises_for_every_type(loop, run):
    def send(tr):
        tr.write(b"x")
        tr.write_eof()
        for data in (b"after eof", bytearray(b"after eof"), memoryview(b"after eof")):
            with pytest.raises(RuntimeError):
                tr.write(data)

    assert run(loop, _echo_pair(loop, send, 1)) == b"x"


def test_write_from_a_bytes_subclass(loop, run):
    """Not exactly bytes: the Python path, same result."""
    class B(bytes):
        pass

    assert run(loop, _echo_pair(loop, lambda tr: tr.write(B(b"subclass")), 8)) == b"subclass"


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="CPython refcounts")
def test_write_and_dispatch_keep_refcounts(loop, run):
    """The C write() and dispatch neither leak nor steal references: the
    data object's refcount is back where it was after many writes."""
    payload = b"r" * 1000
    before = sys.getrefcount(payload)

    def send(tr):
        for _ in range(100):
            tr.write(payload)

    got = run(loop, _echo_pair(loop, send, 100 * len(payload)))
    assert got == payload * 100
    assert sys.getrefcount(payload) == before
