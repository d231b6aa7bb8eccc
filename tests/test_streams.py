"""asyncio's streams on every loop, around npaio's C path for them.

npaio hands a read to asyncio's own StreamReaderProtocol/StreamReader in C
(npaio/_native/stream_feed.c) instead of calling data_received: these tests
hold that path to what asyncio's Python code does (the "asyncio" id is the
reference), and check that subclasses and patched methods still get called.
"""

import asyncio

import pytest

try:
    from npaio import _speedups
except ImportError:             # conftest skips the npaio ids then
    _speedups = None


def feeds(loop_kind):
    """Reads stream_feed.c has handed to a StreamReader so far (0 on asyncio)."""
    return _speedups.stream_feeds() if loop_kind != "asyncio" else 0


class EchoServer:
    """start_server with an echo handler; close() waits for the handlers."""

    async def start(self, **kwargs):
        self.handlers = []
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0, **kwargs)
        return self.server.sockets[0].getsockname()[1]

    async def handle(self, reader, writer):
        done = asyncio.get_running_loop().create_future()
        self.handlers.append(done)
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()
        done.set_result(None)

    async def close(self):
        await asyncio.gather(*self.handlers)
        self.server.close()
        await self.server.wait_closed()


async def roundtrips(port, n=20, size=1000):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for i in range(n):
        msg = bytes([i % 256]) * size
        writer.write(msg)
        await writer.drain()
        assert await reader.readexactly(size) == msg
    writer.close()
    await writer.wait_closed()


def test_stream_reads_take_the_c_path(loop, loop_kind, run):
    async def main():
        server = EchoServer()
        port = await server.start()
        before = feeds(loop_kind)
        await roundtrips(port)
        await server.close()
        return feeds(loop_kind) - before

    fed = run(loop, main())
    if loop_kind == "asyncio":
        assert fed == 0
    else:
        assert fed >= 40        # both ends' reads: 20 replies, 20 requests


def test_subclass_data_received_is_called(loop, run):
    seen = []

    class Recording(asyncio.StreamReaderProtocol):
        def data_received(self, data):
            seen.append(bytes(data))
            super().data_received(data)

    async def main():
        got = asyncio.get_running_loop().create_future()

        async def handle(reader, writer):
            got.set_result(await reader.readexactly(3000))
            writer.close()

        def factory():
            reader = asyncio.StreamReader()
            return Recording(reader, handle)

        server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"a" * 3000)
        assert await got == b"a" * 3000
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    run(loop, main())
    assert b"".join(seen) == b"a" * 3000


def test_feed_data_patched_later_is_called(loop, loop_kind, run, monkeypatch):
    # The C path checks the classes again when they change: a method patched
    # after the loop ran streams is called, and unpatched the C path is back.
    calls = []
    original = asyncio.StreamReader.feed_data

    def feed_data(self, data):
        calls.append(len(data))
        original(self, data)

    async def main():
        server = EchoServer()
        port = await server.start()
        await roundtrips(port, n=3)
        monkeypatch.setattr(asyncio.StreamReader, "feed_data", feed_data)
        before = feeds(loop_kind)
        await roundtrips(port, n=5)
        patched_feeds = feeds(loop_kind) - before
        monkeypatch.undo()
        before = feeds(loop_kind)
        await roundtrips(port, n=5)
        await server.close()
        return patched_feeds, feeds(loop_kind) - before

    patched_feeds, unpatched_feeds = run(loop, main())
    assert sum(calls) == 2 * 5 * 1000
    assert patched_feeds == 0
    if loop_kind != "asyncio":
        assert unpatched_feeds >= 10


def test_reader_pauses_over_twice_the_limit_and_resumes(loop, run):
    async def main():
        loop = asyncio.get_running_loop()
        state = {}
        proceed = asyncio.Event()
        done = loop.create_future()

        async def handle(reader, writer):
            state["reader"], state["transport"] = reader, writer.transport
            await proceed.wait()
            total = 0
            while total < 256 * 1024:
                total += len(await reader.read(65536))
            done.set_result(writer.transport.is_reading())
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, limit=1024)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"z" * (256 * 1024))
        for _ in range(2000):
            if "reader" in state and state["reader"]._paused:
                break
            await asyncio.sleep(0.005)
        assert state["reader"]._paused
        assert not state["transport"].is_reading()
        assert len(state["reader"]._buffer) > 2 * 1024
        proceed.set()
        assert await done is True       # reading resumed to get the rest
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_cancelled_read_leaves_the_data_for_the_next(loop, run):
    async def main():
        loop = asyncio.get_running_loop()
        timed_out = asyncio.Event()
        got = loop.create_future()

        async def handle(reader, writer):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(reader.read(100), 0.05)
            timed_out.set()
            got.set_result(await reader.readexactly(5))
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await timed_out.wait()
        writer.write(b"hello")
        assert await got == b"hello"
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    run(loop, main())


@pytest.mark.loop_exceptions_expected
def test_feed_into_an_exported_buffer_fails_the_connection(loop, run, loop_errors):
    # bytearray.extend raises BufferError while a memoryview of it lives:
    # data_received fails, so the transport fails and the read raises.
    async def main():
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        outcome = loop.create_future()

        async def handle(reader, writer):
            view = memoryview(reader._buffer)
            ready.set()
            try:
                await reader.read(10)
            except BaseException as exc:
                outcome.set_result(exc)
            else:
                outcome.set_result(None)
            view.release()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await ready.wait()
        writer.write(b"x")
        exc = await outcome
        assert isinstance(exc, BufferError)
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
        server.close()
        await server.wait_closed()

    run(loop, main())
    assert any(isinstance(c.get("exception"), BufferError) for c in loop_errors)
    loop_errors.clear()


def test_a_woken_task_runs_before_the_next_poll(npaio_mod, leak_guard):
    # Inline, the iteration after a dispatch that woke a Task runs it
    # without polling first (speedups.c, loop_run_once): one epoll_wait per
    # round of input. A round trip between a streams client and server in
    # one loop is two rounds (request in, reply in); polling again before
    # each woken Task would make it four.
    loop = npaio_mod.new_event_loop(pollers=0, spin_us=0)

    async def main():
        server = EchoServer()
        port = await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        n = 200
        for i in range(n + 20):
            if i == 20:                 # after the connection settles
                before = loop.get_stats()["pollers"][0]["polls"]
            writer.write(b"x")
            assert await reader.readexactly(1) == b"x"
        polls = loop.get_stats()["pollers"][0]["polls"] - before
        writer.close()
        await writer.wait_closed()
        await server.close()
        assert loop.get_stats()["pollers"][0]["spins"] == 0
        return polls / n

    try:
        per_roundtrip = loop.run_until_complete(main())
    finally:
        loop.close()
    assert 1.5 <= per_roundtrip <= 2.5, per_roundtrip
