"""Basic data path: Protocol / BufferedProtocol / streams echo over TCP (IPv4,
IPv6) and Unix sockets, connect_accepted_socket, extra info, set_protocol."""

import asyncio
import os
import random
import shutil
import socket
import sys
import tempfile

import pytest

from _protocols import Recorder


# --------------------------------------------------------------------------
# helpers

class EchoServer(asyncio.Protocol):
    """Echoes everything; closes on EOF (eof_received returns None)."""

    instances = None

    def __init__(self, registry=None):
        self.transport = None
        self.events = []
        if registry is not None:
            registry.append(self)

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport

    def data_received(self, data):
        self.events.append("data")
        self.transport.write(data)

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")


class BufferedEchoServer(asyncio.BufferedProtocol):
    def __init__(self, bufsize, registry=None):
        self.buf = bytearray(bufsize)
        self.transport = None
        self.events = []
        self.bad_sizes = []
        self.hints = []
        if registry is not None:
            registry.append(self)

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport

    def get_buffer(self, sizehint):
        self.hints.append(sizehint)
        self.events.append("get_buffer")
        return self.buf

    def buffer_updated(self, nbytes):
        self.events.append("buffer_updated")
        if not 0 < nbytes <= len(self.buf):
            self.bad_sizes.append(nbytes)
        self.transport.write(bytes(self.buf[:nbytes]))

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")


class Collector(Recorder):
    """Client side: collects data, records callback order and data types."""

    def __init__(self, loop, eof_result=None):
        super().__init__(loop, eof_result=eof_result)
        self.data_types = set()

    def data_received(self, data):
        self.data_types.add(type(data))
        super().data_received(data)


class BufferedCollector(asyncio.BufferedProtocol):
    def __init__(self, loop, bufsize):
        self.loop = loop
        self.buf = bytearray(bufsize)
        self.data = bytearray()
        self.events = []
        self.bad_sizes = []
        self.transport = None
        self.lost = loop.create_future()
        self._want = None

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport

    def get_buffer(self, sizehint):
        self.events.append("get_buffer")
        return self.buf

    def buffer_updated(self, nbytes):
        self.events.append("buffer_updated")
        if not 0 < nbytes <= len(self.buf):
            self.bad_sizes.append(nbytes)
        self.data += self.buf[:nbytes]
        if self._want and len(self.data) >= self._want[0] and not self._want[1].done():
            self._want[1].set_result(None)

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        if not self.lost.done():
            self.lost.set_result(exc)
        if self._want and not self._want[1].done():
            self._want[1].set_exception(ConnectionError("lost early"))

    async def wait_bytes(self, n):
        fut = self.loop.create_future()
        self._want = (n, fut)
        if len(self.data) >= n:
            fut.set_result(None)
        await fut


def assert_callback_order(events):
    """connection_made first and once, connection_lost last and once, no
    data after eof."""
    assert events, "no callbacks at all"
    assert events[0] == "made", events[:5]
    assert events.count("made") == 1, events
    assert events.count("lost") == 1, events
    assert events[-1] == "lost", events[-5:]
    if "eof" in events:
        assert events.count("eof") == 1, events
        after = events[events.index("eof") + 1:]
        assert after == ["lost"], after


def payload(n, seed=None):
    rng = random.Random(seed if seed is not None else n)
    return rng.randbytes(n)


def chunks(data, rng, maxchunk):
    i = 0
    while i < len(data):
        n = rng.randint(1, maxchunk)
        yield data[i:i + n]
        i += n


def ipv6_available():
    if not socket.has_ipv6:
        return False
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            s.bind(("::1", 0))
        finally:
            s.close()
    except OSError:
        return False
    return True


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="npt")  # short path: sun_path is 108 bytes
    yield d
    shutil.rmtree(d, ignore_errors=True)


async def protocol_echo_roundtrip(loop, server, connect, data, maxchunk=65536):
    """Connect with *connect*, send *data* in random chunks, check the echo."""
    tr, proto = await connect(lambda: Collector(loop))
    rng = random.Random(len(data))
    for c in chunks(data, rng, maxchunk):
        tr.write(c)
    await proto.wait_bytes(len(data))
    assert len(proto.data) == len(data)
    assert bytes(proto.data) == data
    tr.close()
    await proto.lost
    assert proto.data_types == {bytes}
    assert_callback_order(proto.events)
    return proto


# --------------------------------------------------------------------------
# Protocol echo

@pytest.mark.parametrize("size", [1, 1000, 300_000])
def test_protocol_echo_ipv4(loop, run, size):
    servers = []

    async def main():
        server = await loop.create_server(
            lambda: EchoServer(servers), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        data = payload(size)
        await protocol_echo_roundtrip(
            loop, server,
            lambda f: loop.create_connection(f, "127.0.0.1", port), data)
        # the server saw our close as EOF and closed itself
        for _ in range(200):
            if servers and servers[0].events[-1:] == ["lost"]:
                break
            await asyncio.sleep(0.01)
        server.close()
        await server.wait_closed()

    run(loop, main())
    assert len(servers) == 1
    assert_callback_order(servers[0].events)
    assert "eof" in servers[0].events


def test_protocol_echo_ipv6(loop, run):
    if not ipv6_available():
        pytest.skip("IPv6 loopback (::1) is not available")

    async def main():
        server = await loop.create_server(EchoServer, "::1", 0)
        sock = server.sockets[0]
        assert sock.family == socket.AF_INET6
        port = sock.getsockname()[1]
        data = payload(200_000)
        proto = await protocol_echo_roundtrip(
            loop, server, lambda f: loop.create_connection(f, "::1", port), data)
        assert proto.transport.get_extra_info("peername")[:2] == ("::1", port)
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_many_sequential_messages_keep_order(loop, run):
    """Many small writes from both sides arrive complete and in order."""

    async def main():
        server = await loop.create_server(EchoServer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        tr, proto = await loop.create_connection(
            lambda: Collector(loop), "127.0.0.1", port)
        expected = bytearray()
        for i in range(5000):
            msg = b"%d," % i
            expected += msg
            tr.write(msg)
            if i % 500 == 0:
                await asyncio.sleep(0)
        await proto.wait_bytes(len(expected))
        assert bytes(proto.data) == bytes(expected)
        tr.close()
        await proto.lost
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_write_accepts_bytes_like_and_rejects_str(loop, run):
    async def main():
        server = await loop.create_server(EchoServer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        tr, proto = await loop.create_connection(
            lambda: Collector(loop), "127.0.0.1", port)
        tr.write(b"ab")
        tr.write(bytearray(b"cd"))
        tr.write(memoryview(b"xxefxx")[2:4])
        tr.write(b"")  # no-op
        tr.writelines([b"gh", bytearray(b"ij"), memoryview(b"kl")])
        with pytest.raises(TypeError):
            tr.write("not bytes")
        await proto.wait_bytes(12)
        await asyncio.sleep(0.05)
        assert bytes(proto.data) == b"abcdefghijkl"
        tr.close()
        await proto.lost
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_connection_refused(loop, run):
    # find a port nobody listens on
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()

    async def main():
        with pytest.raises(ConnectionRefusedError):
            await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)

    run(loop, main())


# --------------------------------------------------------------------------
# BufferedProtocol

@pytest.mark.parametrize("bufsize", [1, 7, 1024, 65536, 1 << 20])
def test_buffered_protocol_echo(loop, run, bufsize):
    servers = []
    size = min(200_000, bufsize * 3000)

    async def main():
        server = await loop.create_server(
            lambda: BufferedEchoServer(bufsize, servers), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        tr, proto = await loop.create_connection(
            lambda: BufferedCollector(loop, max(1, bufsize // 2 + 1)),
            "127.0.0.1", port)
        data = payload(size, seed=bufsize)
        rng = random.Random(bufsize)
        for c in chunks(data, rng, 50_000):
            tr.write(c)
        await proto.wait_bytes(size)
        assert bytes(proto.data) == data
        tr.close()
        await proto.lost
        for _ in range(200):
            if servers and servers[0].events[-1:] == ["lost"]:
                break
            await asyncio.sleep(0.01)
        server.close()
        await server.wait_closed()
        return proto

    proto = run(loop, main())
    assert proto.bad_sizes == []
    srv = servers[0]
    assert srv.bad_sizes == []
    assert all(isinstance(h, int) for h in srv.hints)
    # every buffer_updated is preceded by get_buffer
    for i, ev in enumerate(srv.events):
        if ev == "buffer_updated":
            assert srv.events[i - 1] == "get_buffer"
    if bufsize < size:
        # data larger than the buffer must have needed several rounds
        assert srv.events.count("buffer_updated") >= size // bufsize
    assert srv.events[0] == "made" and srv.events[-1] == "lost"
    assert srv.events.count("lost") == 1


class EmptyBufferProtocol(asyncio.BufferedProtocol):
    def __init__(self, loop):
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        return bytearray()

    def buffer_updated(self, nbytes):  # pragma: no cover - must not happen
        raise AssertionError("buffer_updated with an empty buffer")

    def connection_lost(self, exc):
        self.lost.set_result(exc)


@pytest.mark.loop_exceptions_expected
def test_buffered_protocol_empty_buffer_is_fatal(loop, run, loop_errors):
    """asyncio: get_buffer() returning an empty buffer is a fatal error that
    closes the transport (connection_lost(RuntimeError)) and is reported to
    the loop exception handler."""

    async def main():
        protos = []

        def factory():
            p = EmptyBufferProtocol(loop)
            protos.append(p)
            return p

        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"hello")
        for _ in range(200):
            if protos:
                break
            await asyncio.sleep(0.01)
        exc = await protos[0].lost
        assert isinstance(exc, RuntimeError)
        w.close()
        try:
            await w.wait_closed()
        except ConnectionError:
            pass
        server.close()
        await server.wait_closed()

    run(loop, main())
    assert len(loop_errors) >= 1
    assert any(isinstance(c.get("exception"), RuntimeError) for c in loop_errors)
    loop_errors.clear()


# --------------------------------------------------------------------------
# streams

def test_streams_echo(loop, run):
    async def handle(reader, writer):
        while True:
            line = await reader.readline()
            if not line:
                break
            writer.write(line)
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def client(port, i):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        rng = random.Random(i)
        lines = [rng.randbytes(rng.randint(0, 3000)).replace(b"\n", b"x") + b"\n"
                 for _ in range(50)]
        for ln in lines:
            writer.write(ln)
        await writer.drain()
        for ln in lines:
            got = await reader.readline()
            assert got == ln
        # a large binary blob via readexactly
        blob = rng.randbytes(300_000).replace(b"\n", b"y") + b"\n"
        writer.write(blob)
        assert await reader.readexactly(len(blob)) == blob
        writer.write_eof()
        assert await reader.read() == b""
        assert reader.at_eof()
        writer.close()
        await writer.wait_closed()

    async def main():
        # limit: the 300 kB blob is read as one line by the server
        server = await asyncio.start_server(handle, "127.0.0.1", 0,
                                            limit=1 << 20)
        port = server.sockets[0].getsockname()[1]
        await asyncio.gather(*[client(port, i) for i in range(20)])
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_streams_read_until_eof_and_incomplete(loop, run):
    async def handle(reader, writer):
        writer.write(b"abc")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        with pytest.raises(asyncio.IncompleteReadError) as ei:
            await reader.readexactly(10)
        assert ei.value.partial == b"abc"
        assert reader.at_eof()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    run(loop, main())


# --------------------------------------------------------------------------
# create_server / create_connection with sock=, connect_accepted_socket

def test_create_server_and_connection_with_sock(loop, run):
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    port = lsock.getsockname()[1]
    csock = socket.socket()
    csock.setblocking(False)

    async def main():
        server = await loop.create_server(EchoServer, sock=lsock)
        assert server.sockets[0].getsockname() == ("127.0.0.1", port)
        await loop.sock_connect(csock, ("127.0.0.1", port))
        data = payload(100_000)
        await protocol_echo_roundtrip(
            loop, server, lambda f: loop.create_connection(f, sock=csock), data)
        server.close()
        await server.wait_closed()

    run(loop, main())
    # the transports/servers took ownership and closed the sockets
    assert lsock.fileno() == -1
    assert csock.fileno() == -1


def test_connect_accepted_socket_tcp(loop, run):
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    port = lsock.getsockname()[1]
    csock = socket.create_connection(("127.0.0.1", port))
    ssock, _ = lsock.accept()
    lsock.close()
    csock.setblocking(False)
    servers = []

    async def main():
        str_, sproto = await loop.connect_accepted_socket(
            lambda: EchoServer(servers), ssock)
        assert isinstance(sproto, EchoServer)
        assert str_.get_extra_info("peername") == csock.getsockname()
        data = payload(150_000)
        await protocol_echo_roundtrip(
            loop, None, lambda f: loop.create_connection(f, sock=csock), data)
        for _ in range(200):
            if servers[0].events[-1:] == ["lost"]:
                break
            await asyncio.sleep(0.01)

    run(loop, main())
    assert_callback_order(servers[0].events)
    assert ssock.fileno() == -1


def test_connect_accepted_socket_socketpair(loop, run):
    a, b = socket.socketpair()

    async def main():
        servers = []
        await loop.connect_accepted_socket(lambda: EchoServer(servers), a)
        tr, proto = await loop.connect_accepted_socket(
            lambda: Collector(loop), b)
        data = payload(120_000)
        for c in chunks(data, random.Random(1), 10_000):
            tr.write(c)
        await proto.wait_bytes(len(data))
        assert bytes(proto.data) == data
        tr.close()
        await proto.lost
        for _ in range(200):
            if servers[0].events[-1:] == ["lost"]:
                break
            await asyncio.sleep(0.01)
        assert_callback_order(servers[0].events)

    run(loop, main())


def test_start_server_with_sock_and_open_connection_with_sock(loop, run):
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    port = lsock.getsockname()[1]

    async def handle(reader, writer):
        data = await reader.read()
        writer.write(data[::-1])
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, sock=lsock)
        csock = socket.socket()
        csock.setblocking(False)
        await loop.sock_connect(csock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=csock)
        writer.write(b"0123456789")
        writer.write_eof()
        assert await reader.read() == b"9876543210"
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    run(loop, main())


# --------------------------------------------------------------------------
# Unix sockets

def test_unix_protocol_echo(loop, run, sockdir):
    path = os.path.join(sockdir, "s")
    servers = []

    async def main():
        server = await loop.create_unix_server(lambda: EchoServer(servers), path)
        assert server.sockets[0].family == socket.AF_UNIX
        assert server.sockets[0].getsockname() == path
        data = payload(250_000)
        proto = await protocol_echo_roundtrip(
            loop, server,
            lambda f: loop.create_unix_connection(f, path), data)
        assert proto.transport.get_extra_info("peername") == path
        for _ in range(200):
            if servers and servers[0].events[-1:] == ["lost"]:
                break
            await asyncio.sleep(0.01)
        server.close()
        await server.wait_closed()

    run(loop, main())
    assert_callback_order(servers[0].events)


def test_unix_streams_echo(loop, run, sockdir):
    path = os.path.join(sockdir, "s")

    async def handle(reader, writer):
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        writer.close()

    async def client(i):
        reader, writer = await asyncio.open_unix_connection(path)
        data = payload(50_000 + i, seed=i)
        writer.write(data)
        await writer.drain()
        assert await reader.readexactly(len(data)) == data
        writer.write_eof()
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_unix_server(handle, path)
        await asyncio.gather(*[client(i) for i in range(10)])
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_unix_server_socket_file_cleanup(loop, run, sockdir):
    """3.13+: closing a unix server removes its socket file (cleanup_socket
    defaults to True); before 3.13 the file stays."""
    path = os.path.join(sockdir, "s")

    async def main():
        server = await loop.create_unix_server(asyncio.Protocol, path)
        assert os.path.exists(path)
        server.close()
        await server.wait_closed()

    run(loop, main())
    if sys.version_info >= (3, 13):
        assert not os.path.exists(path)
    else:
        assert os.path.exists(path)


# --------------------------------------------------------------------------
# extra info, transport types, protocol switching

def test_extra_info_and_types(loop, run):
    servers = []

    async def main():
        server = await loop.create_server(
            lambda: EchoServer(servers), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        tr, proto = await loop.create_connection(
            lambda: Collector(loop), "127.0.0.1", port)
        tr.write(b"x")
        await proto.wait_bytes(1)
        str_ = servers[0].transport

        for t in (tr, str_):
            assert isinstance(t, asyncio.Transport)
            assert isinstance(t, asyncio.ReadTransport)
            assert isinstance(t, asyncio.WriteTransport)
            assert isinstance(t, asyncio.BaseTransport)
            sock = t.get_extra_info("socket")
            assert sock is not None
            assert sock.family == socket.AF_INET
            assert sock.type == socket.SOCK_STREAM
            assert sock.getsockname() == t.get_extra_info("sockname")
            assert sock.getpeername() == t.get_extra_info("peername")
            assert t.get_extra_info("no-such-key") is None
            assert t.get_extra_info("no-such-key", "dflt") == "dflt"
            # asyncio enables TCP_NODELAY on TCP transports
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            assert not t.is_closing()
            assert t.is_reading()
            assert t.can_write_eof()

        assert tr.get_extra_info("peername") == ("127.0.0.1", port)
        assert str_.get_extra_info("sockname") == ("127.0.0.1", port)
        assert str_.get_extra_info("peername") == tr.get_extra_info("sockname")
        assert tr.get_protocol() is proto
        assert str_.get_protocol() is servers[0]
        tr.close()
        assert tr.is_closing()
        await proto.lost
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_extra_info_unix(loop, run, sockdir):
    path = os.path.join(sockdir, "s")
    servers = []

    async def main():
        server = await loop.create_unix_server(lambda: EchoServer(servers), path)
        tr, proto = await loop.create_unix_connection(lambda: Collector(loop), path)
        tr.write(b"x")
        await proto.wait_bytes(1)
        str_ = servers[0].transport
        for t in (tr, str_):
            assert isinstance(t, asyncio.Transport)
            sock = t.get_extra_info("socket")
            assert sock.family == socket.AF_UNIX
            assert t.can_write_eof()
        assert tr.get_extra_info("peername") == path
        assert str_.get_extra_info("sockname") == path
        tr.close()
        await proto.lost
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_set_protocol_switches_delivery(loop, run):
    async def main():
        server = await loop.create_server(EchoServer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        tr, first = await loop.create_connection(
            lambda: Collector(loop), "127.0.0.1", port)
        tr.write(b"one")
        await first.wait_bytes(3)

        second = Collector(loop)
        tr.set_protocol(second)
        assert tr.get_protocol() is second
        tr.write(b"two")
        await second.wait_bytes(3)
        assert bytes(second.data) == b"two"
        assert bytes(first.data) == b"one"

        # switch to a BufferedProtocol on the fly
        third = BufferedCollector(loop, 2)
        tr.set_protocol(third)
        tr.write(b"three")
        await third.wait_bytes(5)
        assert bytes(third.data) == b"three"

        tr.close()
        await third.lost
        # callbacks went to the current protocol only
        assert "made" not in second.events and "made" not in third.events
        assert "lost" not in first.events and "lost" not in second.events
        assert first.events.count("made") == 1
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_loop_sendfile_over_transport(loop, run):
    """loop.sendfile(transport, file) sends the whole file (natively or by
    the read/write fallback) and returns the byte count."""
    data = payload(3 * 1024 * 1024 + 5, seed=99)
    fd, fname = tempfile.mkstemp()
    with os.fdopen(fd, "wb") as f:
        f.write(data)

    async def main():
        got = bytearray()
        done = loop.create_future()

        class Sink(asyncio.Protocol):
            def data_received(self, d):
                got.extend(d)

            def eof_received(self):
                done.set_result(None)

        server = await loop.create_server(Sink, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        tr, proto = await loop.create_connection(
            lambda: Collector(loop), "127.0.0.1", port)
        with open(fname, "rb") as f:
            tr.write(b"head:")
            n = await loop.sendfile(tr, f, offset=10, count=len(data) - 20)
            assert n == len(data) - 20
            assert f.tell() == len(data) - 10
        tr.write(b":tail")
        tr.write_eof()
        await done
        assert bytes(got) == b"head:" + data[10:-10] + b":tail"
        tr.close()
        await proto.lost
        server.close()
        await server.wait_closed()

    try:
        run(loop, main(), timeout=40)
    finally:
        os.unlink(fname)
