"""Connection lifecycle: callback order, half-close, eof_received result,
close()/abort(), writes after close / write_eof, peer reset, closing the
loop with live connections."""

import asyncio
import gc
import os
import shutil
import socket
import struct
import tempfile

import pytest

from _protocols import Recorder


def assert_order(events, expect_eof=None):
    assert events and events[0] == "made", events[:5]
    assert events.count("made") == 1, events
    assert events.count("lost") == 1, events
    assert events[-1] == "lost", events[-5:]
    if expect_eof is not None:
        assert ("eof" in events) == expect_eof, events
    if "eof" in events:
        assert events.count("eof") == 1
        assert "data" not in events[events.index("eof"):], events


async def wait_until(pred, timeout=10.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in %.1fs" % timeout)
        await asyncio.sleep(0.005)


async def make_pair(loop, family="tcp", path=None, server_kw=None, client_kw=None):
    servers = []
    skw = server_kw or {}
    ckw = client_kw or {}
    if family == "tcp":
        server = await loop.create_server(
            lambda: Recorder(loop, servers, **skw), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        tr, client = await loop.create_connection(
            lambda: Recorder(loop, **ckw), "127.0.0.1", port)
    else:
        server = await loop.create_unix_server(
            lambda: Recorder(loop, servers, **skw), path)
        tr, client = await loop.create_unix_connection(
            lambda: Recorder(loop, **ckw), path)
    await wait_until(lambda: servers)
    await servers[0].made
    return server, client, servers[0]


async def finish(server, *protos):
    for p in protos:
        if not p.transport.is_closing():
            p.transport.close()
    for p in protos:
        await p.lost
    server.close()
    await server.wait_closed()


@pytest.fixture(params=["tcp", "unix"])
def family(request):
    return request.param


@pytest.fixture
def sockpath():
    d = tempfile.mkdtemp(prefix="npt")
    yield os.path.join(d, "s")
    shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------
# half-close and eof_received

def test_client_half_close_server_keeps_writing(loop, run, family, sockpath):
    """Client write_eof(); the server's eof_received returns True, so its
    transport stays open and it can still answer; then it closes."""

    def on_eof(p):
        # reply after the EOF: total length then close
        p.transport.write(b"got %d" % len(p.data))
        p.transport.close()

    async def main():
        server, client, sproto = await make_pair(
            loop, family, sockpath,
            server_kw={"eof_result": True, "on_eof": on_eof})
        tr = client.transport
        assert tr.can_write_eof()
        tr.write(b"x" * 5000)
        tr.write_eof()
        assert not tr.is_closing()  # half-closed, not closing
        await client.lost
        assert bytes(client.data) == b"got 5000"
        assert_order(client.events, expect_eof=True)
        await sproto.lost
        assert_order(sproto.events, expect_eof=True)
        assert sproto.lost_excs == [None]
        server.close()
        await server.wait_closed()

    run(loop, main())


@pytest.mark.parametrize("result", [None, False])
def test_eof_received_falsy_closes_transport(loop, run, family, sockpath, result):
    seen = {}

    def on_eof(p):
        seen["closing_in_eof"] = p.transport.is_closing()

    async def main():
        server, client, sproto = await make_pair(
            loop, family, sockpath,
            server_kw={"eof_result": result, "on_eof": on_eof})
        client.transport.write(b"hello")
        client.transport.write_eof()
        await sproto.lost  # server closed itself without anyone calling close()
        assert sproto.transport.is_closing()
        assert bytes(sproto.data) == b"hello"
        assert_order(sproto.events, expect_eof=True)
        assert sproto.lost_excs == [None]
        await client.lost  # we see the server's close as EOF
        assert_order(client.events, expect_eof=True)
        server.close()
        await server.wait_closed()

    run(loop, main())
    assert seen["closing_in_eof"] is False


def test_server_half_close_client_keeps_writing(loop, run, family, sockpath):
    """Server write_eof(); the client's eof_received returns True and it
    keeps sending; the server still receives after its own write_eof."""

    async def main():
        server, client, sproto = await make_pair(
            loop, family, sockpath, client_kw={"eof_result": True},
            server_kw={"eof_result": None})
        sproto.transport.write(b"bye")
        sproto.transport.write_eof()
        await client.eof
        assert bytes(client.data) == b"bye"
        assert not client.transport.is_closing()
        assert not client.lost.done()
        payload = os.urandom(200_000)
        client.transport.write(payload)
        await sproto.wait_bytes(len(payload))
        assert bytes(sproto.data) == payload
        client.transport.close()
        await client.lost
        await sproto.lost
        assert_order(client.events, expect_eof=True)
        assert_order(sproto.events, expect_eof=True)
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_write_eof_flushes_pending_data_first(loop, run):
    async def main():
        server, client, sproto = await make_pair(loop)
        client.transport.pause_reading()
        data = os.urandom(8 * 1024 * 1024)
        sproto.transport.write(data)
        assert sproto.transport.get_write_buffer_size() > 0
        sproto.transport.write_eof()
        sproto.transport.write_eof()  # second call is a no-op
        client.transport.resume_reading()
        await client.eof
        assert bytes(client.data) == data
        await finish(server, client, sproto)

    run(loop, main(), timeout=60)


def test_write_after_write_eof_raises(loop, run, family, sockpath):
    async def main():
        server, client, sproto = await make_pair(loop, family, sockpath)
        client.transport.write_eof()
        with pytest.raises(RuntimeError):
            client.transport.write(b"nope")
        with pytest.raises(RuntimeError):
            client.transport.writelines([b"nope"])
        await finish(server, client, sproto)

    run(loop, main())


def test_stream_half_close(loop, run):
    async def handle(reader, writer):
        data = await reader.read()  # until the client's EOF
        writer.write(data.upper())
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert writer.can_write_eof()
        writer.write(b"abc" * 1000)
        writer.write_eof()
        assert await reader.read() == b"ABC" * 1000
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    run(loop, main())


# --------------------------------------------------------------------------
# close / abort

def test_close_flushes_pending_data(loop, run, family, sockpath):
    async def main():
        server, client, sproto = await make_pair(loop, family, sockpath)
        client.transport.pause_reading()
        data = os.urandom(8 * 1024 * 1024)
        tr = sproto.transport
        tr.write(data)
        assert tr.get_write_buffer_size() > 0
        tr.close()
        assert tr.is_closing()
        tr.close()  # idempotent
        await asyncio.sleep(0.05)
        assert not sproto.lost.done(), "connection_lost before the flush"
        client.transport.resume_reading()
        await client.lost
        assert len(client.data) == len(data)
        assert bytes(client.data) == data
        assert_order(client.events, expect_eof=True)
        assert await sproto.lost is None
        assert_order(sproto.events)
        server.close()
        await server.wait_closed()

    run(loop, main(), timeout=60)


def test_abort_discards_pending_data(loop, run, family, sockpath):
    async def main():
        server, client, sproto = await make_pair(loop, family, sockpath)
        client.transport.pause_reading()
        data = os.urandom(32 * 1024 * 1024)
        tr = sproto.transport
        tr.write(data)
        assert tr.get_write_buffer_size() > 0
        tr.abort()
        assert tr.is_closing()
        # connection_lost comes promptly, while the peer still reads nothing
        exc = await asyncio.wait_for(sproto.lost, 5)
        assert exc is None
        assert sproto.lost_excs == [None]
        assert_order(sproto.events)
        client.transport.resume_reading()
        await client.lost
        assert len(client.data) < len(data)
        assert bytes(client.data) == data[:len(client.data)]
        server.close()
        await server.wait_closed()

    run(loop, main(), timeout=60)


def test_write_after_close_is_silently_ignored(loop, run):
    async def main():
        server, client, sproto = await make_pair(loop)
        tr = sproto.transport
        tr.close()  # nothing pending: closes right away
        tr.write(b"dropped")  # no exception
        # (writelines() after close() is not tested: it raises TypeError on
        # stock CPython 3.13.0, an asyncio bug)
        await sproto.lost
        for _ in range(10):
            tr.write(b"dropped too")  # still no exception after connection_lost
        await client.lost
        assert client.data == b""
        assert_order(client.events, expect_eof=True)
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_abort_twice_and_close_after_abort(loop, run):
    async def main():
        server, client, sproto = await make_pair(loop)
        client.transport.abort()
        client.transport.abort()
        client.transport.close()
        await client.lost
        await sproto.lost
        assert client.lost_excs == [None]
        assert_order(client.events)
        assert_order(sproto.events)
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_callback_order_many_connections(loop, run):
    """connection_made first, connection_lost last and once, for both ends
    of many connections closed in different ways."""

    async def main():
        pairs = []
        server_protos = []
        server = await loop.create_server(
            lambda: Recorder(loop, server_protos, eof_result=False), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        for i in range(60):
            tr, cp = await loop.create_connection(
                lambda: Recorder(loop), "127.0.0.1", port)
            tr.write(b"x" * (i * 100 + 1))
            pairs.append(cp)
        await wait_until(lambda: len(server_protos) == 60)
        for i, cp in enumerate(pairs):
            how = i % 3
            if how == 0:
                cp.transport.close()
            elif how == 1:
                cp.transport.abort()
            else:
                cp.transport.write_eof()
        for cp in pairs:
            await cp.lost
        for sp in server_protos:
            await sp.lost
        for cp in pairs:
            assert_order(cp.events)
            assert cp.lost_excs[0] is None
        for sp in server_protos:
            assert_order(sp.events)
        server.close()
        await server.wait_closed()

    run(loop, main())


# --------------------------------------------------------------------------
# peer reset

def test_peer_reset_while_server_writes(loop, run):
    """The peer closes with SO_LINGER 0 (RST) while the server is writing a
    lot: connection_lost exactly once (exception or None), no crash."""

    async def main():
        servers = []

        def on_made(p):
            def pump():
                if p.lost.done():
                    return
                p.transport.write(b"z" * (1 << 20))
                if p.transport.get_write_buffer_size() < (64 << 20):
                    loop.call_later(0.001, pump)
            pump()

        server = await loop.create_server(
            lambda: Recorder(loop, servers, on_made=on_made), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        c = socket.socket()
        c.setblocking(False)
        await loop.sock_connect(c, ("127.0.0.1", port))
        await wait_until(lambda: servers)
        sp = servers[0]
        await sp.made
        await wait_until(lambda: sp.transport.get_write_buffer_size() > 0)
        # read a little, leave lots unread (with poller threads a buffered
        # write may not have reached the socket yet: wait for it)
        await loop.sock_recv(c, 1000)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        exc = await sp.lost
        assert exc is None or isinstance(exc, OSError), repr(exc)
        # keep writing into the dead transport: ignored, no exception
        sp.transport.write(b"more")
        await asyncio.sleep(0.1)
        assert sp.lost_excs.count(exc) == 1 and len(sp.lost_excs) == 1
        assert_order(sp.events)
        server.close()
        await server.wait_closed()

    run(loop, main(), timeout=60)


def test_peer_reset_with_unread_data_client_side(loop, run):
    """The server resets while our client transport has data pending to
    write: the client gets connection_lost once, with an OSError or None."""

    async def main():
        accepted = []
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(5)
        lsock.setblocking(False)
        port = lsock.getsockname()[1]
        tr, client = await loop.create_connection(
            lambda: Recorder(loop), "127.0.0.1", port)
        s, _ = await loop.sock_accept(lsock)
        accepted.append(s)
        for _ in range(64):
            tr.write(bytes(1 << 20))
        assert tr.get_write_buffer_size() > 0
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        lsock.close()
        exc = await client.lost
        assert exc is None or isinstance(exc, OSError), repr(exc)
        await asyncio.sleep(0.1)
        assert len(client.lost_excs) == 1
        assert_order(client.events)
        tr.write(b"ignored")  # no exception after connection_lost

    run(loop, main(), timeout=60)


def test_stream_reader_sees_reset(loop, run):
    async def main():
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(5)
        lsock.setblocking(False)
        port = lsock.getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        s, _ = await loop.sock_accept(lsock)
        s.sendall(b"partial")
        await reader.readexactly(7)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        lsock.close()
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await reader.readexactly(10)
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass

    run(loop, main())


# --------------------------------------------------------------------------
# closing the loop with live connections

@pytest.mark.parametrize("state", ["idle", "pending_writes", "paused"])
def test_loop_close_with_open_connections(loop, run, state):
    """Close the loop while connections (and the server) are still open:
    loop.close() returns, nothing crashes, and (checked by the fixture at
    teardown) every fd and every native object is released."""
    holder = {}

    async def main():
        servers = []
        server = await loop.create_server(
            lambda: Recorder(loop, servers), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        clients = []
        for _ in range(20):
            tr, cp = await loop.create_connection(
                lambda: Recorder(loop), "127.0.0.1", port)
            clients.append(cp)
        await wait_until(lambda: len(servers) == 20)
        for cp in clients:
            cp.transport.write(b"ping")
        await wait_until(lambda: all(len(sp.data) == 4 for sp in servers))
        if state == "pending_writes":
            for cp in clients:
                cp.transport.pause_reading()
            for sp in servers:
                sp.transport.write(b"q" * (4 << 20))
            assert any(sp.transport.get_write_buffer_size() for sp in servers)
        elif state == "paused":
            for cp in clients:
                cp.transport.pause_reading()
            for sp in servers:
                sp.transport.pause_reading()
        holder["server"] = server
        holder["protos"] = clients + servers

    run(loop, main(), timeout=60)
    loop.close()
    assert loop.is_closed()
    protos = holder.pop("protos")
    # nobody got connection_lost: the loop was closed under them
    assert all(p.lost_excs == [] for p in protos)
    del protos
    holder.clear()
    gc.collect()
    # leak checks happen in the fixture teardown


# --------------------------------------------------------------------------
# exceptions raised by protocol callbacks

class Boom(Exception):
    pass


class Raiser(asyncio.BufferedProtocol):
    """Raises from the chosen callback; records connection_lost."""

    def __init__(self, loop, where, registry):
        self.where = where
        self.buf = bytearray(1024)
        self.lost_excs = []
        self.lost = loop.create_future()
        self.raised = []
        registry.append(self)

    def connection_made(self, transport):
        self.transport = transport

    def _maybe_raise(self, name):
        if self.where == name:
            exc = Boom(name)
            self.raised.append(exc)
            raise exc

    def get_buffer(self, sizehint):
        self._maybe_raise("get_buffer")
        return self.buf

    def buffer_updated(self, nbytes):
        self._maybe_raise("buffer_updated")

    def eof_received(self):
        self._maybe_raise("eof_received")

    def connection_lost(self, exc):
        self.lost_excs.append(exc)
        if not self.lost.done():
            self.lost.set_result(exc)


class PlainRaiser(asyncio.Protocol):
    def __init__(self, loop, registry):
        self.lost_excs = []
        self.lost = loop.create_future()
        self.raised = []
        registry.append(self)

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        exc = Boom("data_received")
        self.raised.append(exc)
        raise exc

    def connection_lost(self, exc):
        self.lost_excs.append(exc)
        if not self.lost.done():
            self.lost.set_result(exc)


@pytest.mark.loop_exceptions_expected
@pytest.mark.parametrize("where", ["data_received", "get_buffer",
                                   "buffer_updated", "eof_received"])
def test_exception_in_protocol_callback_is_fatal(loop, run, loop_errors, where):
    """asyncio: an exception from data_received / get_buffer /
    buffer_updated / eof_received reaches the loop exception handler (with
    the transport and protocol in the context) and the transport is closed:
    connection_lost(that exception), exactly once."""

    async def main():
        protos = []
        if where == "data_received":
            factory = lambda: PlainRaiser(loop, protos)  # noqa: E731
        else:
            factory = lambda: Raiser(loop, where, protos)  # noqa: E731
        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"data")
        if where == "eof_received":
            writer.write_eof()
        await wait_until(lambda: protos)
        p = protos[0]
        exc = await p.lost
        assert isinstance(exc, Boom)
        assert exc is p.raised[0]
        await asyncio.sleep(0.05)
        assert len(p.lost_excs) == 1
        # the peer sees the connection go away
        try:
            assert await reader.read() == b""
        except ConnectionResetError:
            pass
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass
        server.close()
        await server.wait_closed()
        return p

    p = run(loop, main())
    assert len(loop_errors) == 1, loop_errors
    ctx = loop_errors[0]
    assert ctx["exception"] is p.raised[0]
    assert ctx.get("protocol") is p
    assert ctx.get("transport") is p.transport
    assert isinstance(ctx.get("message"), str)
    loop_errors.clear()
