"""npaio.NocopyProtocol: length-prefixed frames read from the connection's
LinkBuffer and written back through an output LinkBuffer.

Runs on every loop id: on npaio the reader is the connection's own input
buffer (no data_received call at all); on stock asyncio the same protocol
works through data_received.
"""
import asyncio
import gc
import os
import random

import pytest

import npaio


def frame(payload):
    return len(payload).to_bytes(4, 'big') + payload


class FrameEcho(npaio.NocopyProtocol):
    """Echoes each length-prefixed frame; records what happened."""

    def __init__(self, registry=None, pause_after=None):
        self.calls = 0
        self.data_received_calls = 0
        self.readers = set()
        self.frames = 0
        self.events = []
        self.kept = []              # (view, bytes) kept past the connection
        self.pause_after = pause_after
        self.lost = asyncio.get_event_loop().create_future()
        if registry is not None:
            registry.append(self)

    def connection_made(self, transport):
        super().connection_made(transport)
        self.events.append('made')

    def data_received(self, data):
        self.data_received_calls += 1
        super().data_received(data)

    def on_request(self, reader, writer):
        self.calls += 1
        self.readers.add(id(reader))
        while len(reader) >= 4:
            size = int.from_bytes(reader.peek(4), 'big')
            if len(reader) < 4 + size:
                writer.flush()
                return 4 + size
            view = reader.next(4 + size)
            if len(self.kept) < 5:
                self.kept.append((view, bytes(view)))
            writer.write_bytes(view)
            self.frames += 1
            if self.pause_after and self.frames == self.pause_after:
                writer.flush()
                self.transport.pause_reading()
                asyncio.get_event_loop().call_later(
                    0.05, self.transport.resume_reading)
                return 0
        writer.flush()
        return 0

    def eof_received(self):
        self.events.append('eof')

    def connection_lost(self, exc):
        super().connection_lost(exc)
        self.events.append('lost')
        if not self.lost.done():
            self.lost.set_result(exc)


async def serve(loop, factory):
    server = await loop.create_server(factory, '127.0.0.1', 0)
    return server, server.sockets[0].getsockname()[1]


async def roundtrip(port, frames, chunk=None, seed=0):
    """Send the frames (in random pieces when chunk is set), read them back."""
    reader, writer = await asyncio.open_connection('127.0.0.1', port)
    blob = b''.join(frame(p) for p in frames)
    rnd = random.Random(seed)

    async def send():
        if chunk is None:
            writer.write(blob)
        else:
            i = 0
            while i < len(blob):
                n = rnd.randint(1, chunk)
                writer.write(blob[i:i + n])
                i += n
                await writer.drain()
        await writer.drain()

    sender = asyncio.ensure_future(send())
    got = await reader.readexactly(len(blob))
    await sender
    writer.close()
    await writer.wait_closed()
    assert got == blob
    return got


def is_npaio(loop):
    return isinstance(loop, npaio.Loop)


@pytest.mark.parametrize('sizes', [
    [0, 1, 3, 4, 5],
    [100] * 50,
    [4095, 4096, 4097, 70000],
    [2 * 1024 * 1024],              # bigger than the 256 KiB input mark
], ids=['tiny', 'many', 'around-4k', 'over-hwm'])
def test_frame_echo(loop, run, sizes):
    servers = []

    async def main():
        server, port = await serve(loop, lambda: FrameEcho(servers))
        frames = [os.urandom(n) for n in sizes]
        await roundtrip(port, frames)
        await roundtrip(port, frames, chunk=7000, seed=len(sizes))
        await asyncio.wait_for(asyncio.gather(*(s.lost for s in servers)), 10)
        server.close()
        await server.wait_closed()

    run(loop, main())
    assert len(servers) == 2
    for s in servers:
        assert s.frames == len(sizes)
        assert s.events[0] == 'made' and s.events[-1] == 'lost'
        for view, expected in s.kept:          # views outlive the connection
            assert bytes(view) == expected
        if is_npaio(loop):
            # The reactor's own buffer, one reader object, no bytes objects.
            assert s.data_received_calls == 0
            assert len(s.readers) == 1
        else:
            assert s.data_received_calls > 0


def test_many_connections_random_chunks(loop, run):
    servers = []

    async def main():
        server, port = await serve(loop, lambda: FrameEcho(servers))
        rnd = random.Random(5)
        jobs = []
        for i in range(40):
            frames = [os.urandom(rnd.choice([0, 10, 1000, 20000, 100000]))
                      for _ in range(rnd.randint(1, 8))]
            jobs.append(roundtrip(port, frames, chunk=rnd.choice([1, 100, 5000, 65536]),
                                  seed=i))
        await asyncio.gather(*jobs)
        server.close()
        await server.wait_closed()

    run(loop, main())
    assert len(servers) == 40


def test_pause_reading_inside_on_request(loop, run):
    servers = []

    async def main():
        server, port = await serve(loop, lambda: FrameEcho(servers, pause_after=3))
        frames = [os.urandom(500) for _ in range(20)]
        await roundtrip(port, frames)
        server.close()
        await server.wait_closed()

    run(loop, main())
    assert servers[0].frames == 20


def test_reader_closed_after_connection_lost(loop, run):
    seen = []

    class Keep(npaio.NocopyProtocol):
        def on_request(self, reader, writer):
            seen.append((reader, reader.peek(len(reader))))
            return 0

    async def main():
        server, port = await serve(loop, Keep)
        r, w = await asyncio.open_connection('127.0.0.1', port)
        w.write(b'hello')
        await w.drain()
        for _ in range(200):
            if seen:
                break
            await asyncio.sleep(0.01)
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.05)

    run(loop, main())
    reader, view = seen[0]
    assert bytes(view) == b'hello'
    gc.collect()
    assert bytes(view) == b'hello'
    with pytest.raises(ValueError):
        reader.next(1)


def test_eof_after_partial_frame(loop, run):
    servers = []

    async def main():
        server, port = await serve(loop, lambda: FrameEcho(servers))
        r, w = await asyncio.open_connection('127.0.0.1', port)
        w.write(frame(b'abc') + frame(b'0123456789')[:7])
        w.write_eof()
        assert await r.readexactly(7) == frame(b'abc')
        assert await r.read() == b''       # server closed after eof_received
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()

    run(loop, main())
    s = servers[0]
    assert s.frames == 1
    assert s.events == ['made', 'eof', 'lost']


@pytest.mark.loop_exceptions_expected
def test_on_request_error_closes_connection(loop, run):
    class Bad(npaio.NocopyProtocol):
        def on_request(self, reader, writer):
            raise ZeroDivisionError('boom')

    async def main():
        server, port = await serve(loop, Bad)
        r, w = await asyncio.open_connection('127.0.0.1', port)
        w.write(b'x')
        try:
            assert await r.read() == b''
        except ConnectionResetError:
            pass
        w.close()
        try:
            await w.wait_closed()
        except ConnectionResetError:
            pass
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_bad_return_value_is_a_clear_error(loop, run):
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    class Wrong(npaio.NocopyProtocol):
        def on_request(self, reader, writer):
            reader.skip(len(reader))
            return 'more'

    async def main():
        server, port = await serve(loop, Wrong)
        r, w = await asyncio.open_connection('127.0.0.1', port)
        w.write(b'x')
        await r.read()
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()

    run(loop, main())
    assert any(isinstance(c.get('exception'), TypeError) for c in errors)


def test_writer_after_close_is_dropped(loop, run):
    done = []

    class Late(npaio.NocopyProtocol):
        def on_request(self, reader, writer):
            data = reader.read_bytes(len(reader))
            self.transport.close()
            writer.write_bytes(data)
            writer.flush()           # after close(): dropped, as write() is
            done.append(data)
            return 0

    async def main():
        server, port = await serve(loop, Late)
        r, w = await asyncio.open_connection('127.0.0.1', port)
        w.write(b'ping')
        assert await r.read() == b''
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()

    run(loop, main())
    assert done == [b'ping']


def test_example_frame_server_self_test():
    import subprocess
    import sys
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, os.path.join(here, 'examples', 'frame_server.py'),
                          '--self-test'], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 'self-test passed' in out.stdout


def test_idle_timeout_closes_idle_connections_only(loop, run):
    class Idle(FrameEcho):
        idle_timeout = 0.3

    servers = []

    async def main():
        server, port = await serve(loop, lambda: Idle(servers))
        # A busy client: a frame every 0.05 s for 0.9 s (three timeouts).
        r1, w1 = await asyncio.open_connection('127.0.0.1', port)
        for i in range(18):
            w1.write(frame(b'%d' % i))
            assert await r1.readexactly(4 + len(b'%d' % i)) == frame(b'%d' % i)
            await asyncio.sleep(0.05)
        assert not servers[0].lost.done()
        # Then idle: the server closes it.
        assert await asyncio.wait_for(r1.read(), 5) == b''
        w1.close()
        await w1.wait_closed()
        server.close()
        await server.wait_closed()

    run(loop, main())
    assert servers[0].events[-1] == 'lost'
