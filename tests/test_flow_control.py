"""Read and write flow control: pause_reading/resume_reading/is_reading,
pause_writing/resume_writing, write buffer limits, StreamWriter.drain."""

import asyncio
import os
import random
import shutil
import tempfile

import pytest

from _protocols import Recorder


class Peer(Recorder):
    """Records callbacks, collects data, and records flow control."""

    def __init__(self, loop, registry=None, pause_in_data=False):
        super().__init__(loop, registry)
        self.data_while_paused = 0
        self.paused = False
        self.pause_sizes = []
        self.resume_sizes = []
        self.resumed = loop.create_future()
        self.pause_in_data = pause_in_data

    def data_received(self, data):
        if not self.transport.is_reading():
            self.data_while_paused += 1
        super().data_received(data)
        if self.pause_in_data:
            self.transport.pause_reading()

    def pause_writing(self):
        self.events.append("pause_writing")
        assert not self.paused, "pause_writing twice without resume_writing"
        self.paused = True
        self.pause_sizes.append(self.transport.get_write_buffer_size())

    def resume_writing(self):
        self.events.append("resume_writing")
        assert self.paused, "resume_writing without pause_writing"
        self.paused = False
        self.resume_sizes.append(self.transport.get_write_buffer_size())
        if not self.resumed.done():
            self.resumed.set_result(None)


async def tcp_pair(loop, client_kwargs=None, server_kwargs=None):
    """Return (server, client_proto, server_proto)."""
    servers = []
    server = await loop.create_server(
        lambda: Peer(loop, servers, **(server_kwargs or {})), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tr, cproto = await loop.create_connection(
        lambda: Peer(loop, **(client_kwargs or {})), "127.0.0.1", port)
    for _ in range(500):
        if servers:
            break
        await asyncio.sleep(0.01)
    assert len(servers) == 1
    await servers[0].made
    return server, cproto, servers[0]


async def unix_pair(loop, path):
    servers = []
    server = await loop.create_unix_server(lambda: Peer(loop, servers), path)
    tr, cproto = await loop.create_unix_connection(lambda: Peer(loop), path)
    for _ in range(500):
        if servers:
            break
        await asyncio.sleep(0.01)
    await servers[0].made
    return server, cproto, servers[0]


async def close_all(server, *protos):
    for p in protos:
        if p.transport is not None and not p.transport.is_closing():
            p.transport.close()
    for p in protos:
        await p.lost
    server.close()
    await server.wait_closed()


async def wait_until(pred, timeout=10.0, step=0.005):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in %.1fs" % timeout)
        await asyncio.sleep(step)


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="npt")
    yield d
    shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------
# read side

def test_pause_reading_holds_data_until_resume(loop, run):
    async def main():
        server, client, sproto = await tcp_pair(loop)
        ctr = client.transport
        assert ctr.is_reading()
        ctr.pause_reading()
        assert not ctr.is_reading()
        ctr.pause_reading()  # idempotent
        assert not ctr.is_reading()

        data = os.urandom(32 * 1024)  # small enough to sit in kernel buffers
        for i in range(0, len(data), 1000):
            sproto.transport.write(data[i:i + 1000])
        await wait_until(lambda: sproto.transport.get_write_buffer_size() == 0)
        await asyncio.sleep(0.2)
        assert client.data == b"", "data delivered while reading was paused"
        assert "data" not in client.events

        ctr.resume_reading()
        assert ctr.is_reading()
        ctr.resume_reading()  # idempotent
        await client.wait_bytes(len(data))
        assert bytes(client.data) == data
        assert client.data_while_paused == 0
        await close_all(server, client, sproto)

    run(loop, main())


def test_pause_reading_inside_data_received(loop, run):
    """Pausing from data_received stops further callbacks until resumed;
    repeated pause/resume cycles lose nothing and keep order."""

    async def main():
        server, client, sproto = await tcp_pair(
            loop, client_kwargs={"pause_in_data": True})
        data = os.urandom(2 * 1024 * 1024)
        rng = random.Random(7)
        i = 0
        while i < len(data):
            n = rng.randint(1, 100_000)
            sproto.transport.write(data[i:i + n])
            i += n
        cycles = 0
        while len(client.data) < len(data):
            await wait_until(lambda: not client.transport.is_reading()
                             or len(client.data) >= len(data))
            seen = len(client.data)
            await asyncio.sleep(0.002 if cycles % 10 else 0.05)
            # nothing more was delivered while paused
            assert len(client.data) == seen
            cycles += 1
            client.transport.resume_reading()
            await asyncio.sleep(0)
            if cycles > 100_000:
                raise AssertionError("too many cycles")
        assert bytes(client.data) == data
        assert client.data_while_paused == 0
        assert cycles >= 2
        await close_all(server, client, sproto)

    run(loop, main(), timeout=60)


def test_eof_not_delivered_while_paused(loop, run):
    """The peer sends data and closes while we are paused: nothing (neither
    data nor EOF nor connection_lost) arrives until resume_reading(), then
    data, eof_received and connection_lost in that order."""

    async def main():
        server, client, sproto = await tcp_pair(loop)
        client.transport.pause_reading()
        data = os.urandom(20_000)
        sproto.transport.write(data)
        sproto.transport.close()
        await sproto.lost
        await asyncio.sleep(0.2)
        assert client.events == ["made"]
        assert not client.eof.done() and not client.lost.done()

        client.transport.resume_reading()
        await client.lost
        assert bytes(client.data) == data
        assert client.events[0] == "made"
        assert client.events[-2:] == ["eof", "lost"]
        assert set(client.events[1:-2]) == {"data"}
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_buffered_protocol_pause_reading(loop, run):
    class BufPeer(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(1000)
            self.data = bytearray()
            self.while_paused = 0
            self.lost = loop.create_future()

        def connection_made(self, transport):
            self.transport = transport

        def get_buffer(self, sizehint):
            if not self.transport.is_reading():
                self.while_paused += 1
            return self.buf

        def buffer_updated(self, n):
            if not self.transport.is_reading():
                self.while_paused += 1
            self.data += self.buf[:n]
            self.transport.pause_reading()

        def connection_lost(self, exc):
            self.lost.set_result(exc)

    async def main():
        servers = []
        server = await loop.create_server(
            lambda: Peer(loop, servers), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        tr, proto = await loop.create_connection(BufPeer, "127.0.0.1", port)
        await wait_until(lambda: servers)
        await servers[0].made
        data = os.urandom(50_000)
        servers[0].transport.write(data)
        while len(proto.data) < len(data):
            await wait_until(lambda: not tr.is_reading())
            n = len(proto.data)
            await asyncio.sleep(0.001)
            assert len(proto.data) == n
            tr.resume_reading()
        assert bytes(proto.data) == data
        assert proto.while_paused == 0
        tr.close()
        await proto.lost
        await servers[0].lost
        server.close()
        await server.wait_closed()

    run(loop, main(), timeout=60)


def test_is_reading_false_after_close(loop, run):
    async def main():
        server, client, sproto = await tcp_pair(loop)
        tr = client.transport
        assert tr.is_reading()
        tr.close()
        assert not tr.is_reading()
        tr.pause_reading()   # no error on a closing transport
        tr.resume_reading()
        assert not tr.is_reading()
        await client.lost
        await sproto.lost
        server.close()
        await server.wait_closed()

    run(loop, main())


# --------------------------------------------------------------------------
# write side

def test_write_buffer_limits_api(loop, run, sockdir):
    async def check(tr):
        assert tr.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        assert tr.get_write_buffer_size() == 0
        tr.set_write_buffer_limits(high=100)
        assert tr.get_write_buffer_limits() == (25, 100)
        tr.set_write_buffer_limits(low=100)
        assert tr.get_write_buffer_limits() == (100, 400)
        tr.set_write_buffer_limits(high=200, low=50)
        assert tr.get_write_buffer_limits() == (50, 200)
        tr.set_write_buffer_limits(high=0)
        assert tr.get_write_buffer_limits() == (0, 0)
        tr.set_write_buffer_limits(high=7, low=7)
        assert tr.get_write_buffer_limits() == (7, 7)
        with pytest.raises(ValueError):
            tr.set_write_buffer_limits(high=10, low=20)
        with pytest.raises(ValueError):
            tr.set_write_buffer_limits(high=-1)
        with pytest.raises(ValueError):
            tr.set_write_buffer_limits(low=-4)
        # a failed call leaves the limits unchanged
        assert tr.get_write_buffer_limits() == (7, 7)
        tr.set_write_buffer_limits()
        assert tr.get_write_buffer_limits() == (16 * 1024, 64 * 1024)

    async def main():
        server, client, sproto = await tcp_pair(loop)
        await check(client.transport)
        await check(sproto.transport)
        await close_all(server, client, sproto)
        server, client, sproto = await unix_pair(
            loop, os.path.join(sockdir, "s"))
        await check(client.transport)
        await check(sproto.transport)
        await close_all(server, client, sproto)

    run(loop, main())


def test_pause_and_resume_writing(loop, run):
    """The writer passes the high mark: pause_writing is called inside
    write(); once the peer reads, resume_writing is called when the buffer
    is at or below the low mark; nothing is lost. (With poller threads the
    loop hands writes over instead of sending them, so the buffer can pass
    the high mark before the kernel's socket buffers are full; a poller then
    drains it and the protocol resumes although the peer is not reading.
    The writer keeps writing until a pause lasts.)"""
    high, low = 64 * 1024, 16 * 1024

    async def main():
        server, client, sproto = await tcp_pair(loop)
        client.transport.pause_reading()  # slow peer
        tr = sproto.transport
        tr.set_write_buffer_limits(high=high, low=low)
        assert tr.get_write_buffer_limits() == (low, high)
        sent = bytearray()
        chunk_rng = random.Random(3)
        while True:
            while not sproto.paused:
                chunk = chunk_rng.randbytes(32 * 1024)
                tr.write(chunk)
                sent += chunk
                # pause_writing is called synchronously inside write()
                # (the size can only shrink behind our back, never grow)
                if tr.get_write_buffer_size() > high:
                    assert sproto.paused
                if len(sent) > 256 * 1024 * 1024:
                    raise AssertionError("pause_writing never called")
                if len(sent) % (1024 * 1024) == 0:
                    await asyncio.sleep(0)  # let a background flusher run
            assert sproto.pause_sizes[-1] > high
            assert tr.get_write_buffer_size() > high
            # keep writing while paused: still buffered, no second pause
            pauses = sproto.events.count("pause_writing")
            extra = os.urandom(100_000)
            tr.write(extra)
            sent += extra
            assert sproto.events.count("pause_writing") == pauses
            await asyncio.sleep(0.1)
            if sproto.paused:   # the peer's socket is full: the pause lasts
                break
            assert sproto.resume_sizes[-1] <= low
            sproto.resumed = loop.create_future()
        resumes = sproto.events.count("resume_writing")
        assert resumes == pauses - 1
        client.transport.resume_reading()
        await sproto.resumed
        assert sproto.resume_sizes[-1] <= low
        await client.wait_bytes(len(sent))
        assert bytes(client.data) == bytes(sent)
        await wait_until(lambda: tr.get_write_buffer_size() == 0)
        assert sproto.events.count("resume_writing") == pauses
        await close_all(server, client, sproto)

    run(loop, main(), timeout=60)


def test_set_write_buffer_limits_rechecks_pause(loop, run):
    """Lowering the high mark below the current buffer size calls
    pause_writing at once (asyncio re-checks in set_write_buffer_limits)."""

    async def main():
        server, client, sproto = await tcp_pair(loop)
        client.transport.pause_reading()
        tr = sproto.transport
        tr.set_write_buffer_limits(high=512 * 1024 * 1024)
        sent = bytearray()
        while tr.get_write_buffer_size() < 512 * 1024:
            chunk = os.urandom(256 * 1024)
            tr.write(chunk)
            sent += chunk
            if len(sent) > 256 * 1024 * 1024:
                raise AssertionError("write buffer never filled up")
        assert not sproto.paused
        tr.set_write_buffer_limits(high=4096)
        assert sproto.paused
        assert sproto.pause_sizes[0] > 4096
        client.transport.resume_reading()
        await sproto.resumed
        assert sproto.resume_sizes[0] <= 1024
        await client.wait_bytes(len(sent))
        assert bytes(client.data) == bytes(sent)
        await close_all(server, client, sproto)

    run(loop, main(), timeout=60)


def test_high_zero_pauses_on_any_buffered_data(loop, run):
    async def main():
        server, client, sproto = await tcp_pair(loop)
        client.transport.pause_reading()
        tr = sproto.transport
        tr.set_write_buffer_limits(high=0)
        sent = bytearray()
        while not sproto.paused:
            chunk = os.urandom(64 * 1024)
            tr.write(chunk)
            sent += chunk
            if tr.get_write_buffer_size() > 0:
                assert sproto.paused
            if len(sent) > 256 * 1024 * 1024:
                raise AssertionError("pause_writing never called")
        client.transport.resume_reading()
        await sproto.resumed
        assert sproto.resume_sizes == [0]
        await client.wait_bytes(len(sent))
        assert bytes(client.data) == bytes(sent)
        await close_all(server, client, sproto)

    run(loop, main(), timeout=60)


def test_stream_drain_waits_for_slow_peer(loop, run):
    async def main():
        go = asyncio.Event()
        received = []

        async def handle(reader, writer):
            await go.wait()
            received.append(await reader.read())
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        data = os.urandom(16 * 1024 * 1024)
        writer.write(data)
        high = writer.transport.get_write_buffer_limits()[1]
        assert writer.transport.get_write_buffer_size() > high
        drain = asyncio.ensure_future(writer.drain())
        await asyncio.sleep(0.2)
        assert not drain.done(), "drain() returned while the peer reads nothing"
        go.set()
        await drain
        writer.write_eof()
        await wait_until(lambda: received)
        assert received[0] == data
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    run(loop, main(), timeout=60)


def test_drain_to_a_client_outside_the_loop(loop, run):
    """A server streams 5 MiB in 64 KiB writes with drain() to a client that
    is not on the loop (a thread with a blocking socket): once a flush
    leaves the buffer at the low mark the writer resumes, although nothing
    else happens on the loop. (Regression: with writes sent at the
    iteration's end, inline mode once slept on the DRAINED that its own
    flush had just posted; only the first 64 KiB arrived.)"""
    import socket
    import threading

    n, chunk = 5 * 1024 * 1024 + 7, 64 * 1024
    data = random.Random(5).randbytes(n)

    async def main():
        async def handle(reader, writer):
            for i in range(0, n, chunk):
                writer.write(data[i:i + chunk])
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        got = bytearray()

        def client():
            with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
                while True:
                    b = s.recv(1 << 20)
                    if not b:
                        break
                    got.extend(b)

        t = threading.Thread(target=client)
        t.start()
        await loop.run_in_executor(None, t.join)
        assert len(got) == n and bytes(got) == data
        server.close()
        await server.wait_closed()

    run(loop, main(), timeout=60)


def test_write_eof_while_paused_resumes_writing(loop, run):
    """A protocol paused with bytes still queued, then write_eof(): once the
    bytes are sent, resume_writing is called and the peer sees all of them
    and the EOF. (npaio queues a small write until the iteration's end, so
    lowering the high mark to 0 pauses here; write_eof sends the queue at
    once and must still report it drained.)"""

    async def main():
        server, client, sproto = await tcp_pair(loop)
        tr = sproto.transport
        tr.write(b"x" * 100)
        tr.set_write_buffer_limits(high=0)
        tr.write_eof()
        for _ in range(500):
            if not sproto.paused and client.eof.done():
                break
            await asyncio.sleep(0.01)
        assert not sproto.paused, "still paused after write_eof sent everything"
        assert sproto.events.count("pause_writing") == sproto.events.count("resume_writing")
        await client.wait_bytes(100)
        assert bytes(client.data) == b"x" * 100
        await close_all(server, client, sproto)

    run(loop, main())
