"""Server objects: close/wait_closed, serve_forever, start_serving,
is_serving, sockets, reuse_port, backlog, async with, closing a server with
clients connected (per-version asyncio semantics)."""

import asyncio
import os
import shutil
import socket
import sys
import tempfile

import pytest


class Echo(asyncio.Protocol):
    def __init__(self, registry=None):
        self.lost = None
        if registry is not None:
            registry.append(self)

    def connection_made(self, transport):
        self.transport = transport
        self.lost = asyncio.get_running_loop().create_future()

    def data_received(self, data):
        self.transport.write(data)

    def connection_lost(self, exc):
        self.lost.set_result(exc)


async def echo_once(port, msg=b"ping"):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(msg)
        assert await reader.readexactly(len(msg)) == msg
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass


async def wait_until(pred, timeout=10.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in %.1fs" % timeout)
        await asyncio.sleep(0.005)


def port_of(server):
    return server.sockets[0].getsockname()[1]


# 3.12.1+: wait_closed() waits for every connection to be dropped;
# 3.11 and before: it returns at once once the server is closed.
WAIT_CLOSED_WAITS_FOR_CLIENTS = sys.version_info >= (3, 12, 1)


def test_server_basic_properties(loop, run):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        assert isinstance(server, asyncio.AbstractServer)
        assert server.get_loop() is loop
        assert server.is_serving()
        socks = server.sockets
        assert len(socks) == 1
        s = socks[0]
        assert s.family == socket.AF_INET
        assert s.type == socket.SOCK_STREAM
        host, port = s.getsockname()
        assert host == "127.0.0.1" and port > 0
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        # the sockets property is stable
        assert [x.getsockname() for x in server.sockets] == [(host, port)]
        await echo_once(port)
        server.close()
        assert not server.is_serving()
        assert server.sockets == ()
        await server.wait_closed()
        server.close()  # idempotent
        await server.wait_closed()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)

    run(loop, main())


def test_async_with_server(loop, run):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        async with server as s:
            assert s is server
            assert server.is_serving()
            await echo_once(port_of(server))
        assert not server.is_serving()
        assert server.sockets == ()

    run(loop, main())


def test_start_serving_false(loop, run):
    async def main():
        server = await loop.create_server(
            Echo, "127.0.0.1", 0, start_serving=False)
        assert not server.is_serving()
        port = port_of(server)
        # asyncio only calls listen() in start_serving(): connects are refused
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        await server.start_serving()
        assert server.is_serving()
        await server.start_serving()  # second call is a no-op
        assert server.is_serving()
        await echo_once(port)
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_start_server_streams_start_serving_false(loop, run):
    async def handle(reader, writer):
        writer.write(await reader.readexactly(3))
        writer.close()

    async def main():
        server = await asyncio.start_server(
            handle, "127.0.0.1", 0, start_serving=False)
        assert not server.is_serving()
        await server.start_serving()
        await echo_once(port_of(server), b"abc")
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_serve_forever_cancelled(loop, run):
    async def main():
        server = await loop.create_server(
            Echo, "127.0.0.1", 0, start_serving=False)
        port = port_of(server)
        task = asyncio.ensure_future(server.serve_forever())
        await asyncio.sleep(0)
        await wait_until(server.is_serving)
        await echo_once(port)
        # a second serve_forever() on the same server is refused
        with pytest.raises(RuntimeError):
            await server.serve_forever()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # serve_forever closes the server when cancelled
        assert not server.is_serving()
        assert server.sockets == ()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        # and a closed server cannot serve_forever again
        with pytest.raises(RuntimeError):
            await server.serve_forever()

    run(loop, main())


def test_serve_forever_ends_when_server_closed(loop, run):
    """server.close() cancels the serve_forever() future."""

    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        task = asyncio.ensure_future(server.serve_forever())
        await asyncio.sleep(0.01)
        server.close()
        with pytest.raises(asyncio.CancelledError):
            await task
        await server.wait_closed()

    run(loop, main())


def test_close_keeps_existing_connections(loop, run):
    """server.close() stops accepting but does not drop live connections;
    wait_closed() follows the running Python version's semantics."""

    async def main():
        protos = []
        server = await loop.create_server(lambda: Echo(protos), "127.0.0.1", 0)
        port = port_of(server)
        streams = [await asyncio.open_connection("127.0.0.1", port)
                   for _ in range(5)]
        await wait_until(lambda: len(protos) == 5)
        server.close()
        assert not server.is_serving()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)

        waiter = asyncio.ensure_future(server.wait_closed())
        await asyncio.sleep(0.1)
        if WAIT_CLOSED_WAITS_FOR_CLIENTS:
            assert not waiter.done(), "wait_closed() returned with clients open"
        elif sys.version_info < (3, 12):
            assert waiter.done()

        # existing connections still work, in both directions
        for i, (r, w) in enumerate(streams):
            msg = b"still alive %d" % i
            w.write(msg)
            assert await r.readexactly(len(msg)) == msg
        for p in protos:
            assert not p.lost.done()

        for r, w in streams:
            w.close()
            await w.wait_closed()
        for p in protos:
            await p.lost
        await waiter

    run(loop, main())


@pytest.mark.skipif(sys.version_info < (3, 13),
                    reason="Server.close_clients/abort_clients are 3.13+")
@pytest.mark.parametrize("how", ["close_clients", "abort_clients"])
def test_close_clients(loop, run, how):
    async def main():
        protos = []
        server = await loop.create_server(lambda: Echo(protos), "127.0.0.1", 0)
        port = port_of(server)
        streams = [await asyncio.open_connection("127.0.0.1", port)
                   for _ in range(4)]
        await wait_until(lambda: len(protos) == 4)
        server.close()
        getattr(server, how)()
        for p in protos:
            assert await p.lost is None
        await server.wait_closed()
        for r, w in streams:
            try:
                assert await r.read() == b""
            except ConnectionResetError:
                pass
            w.close()
            try:
                await w.wait_closed()
            except ConnectionError:
                pass

    run(loop, main())


def test_reuse_port(loop, run):
    if not hasattr(socket, "SO_REUSEPORT"):
        pytest.skip("SO_REUSEPORT not available")

    async def main():
        a_protos, b_protos = [], []
        a = await loop.create_server(lambda: Echo(a_protos), "127.0.0.1", 0,
                                     reuse_port=True)
        port = port_of(a)
        for s in a.sockets:
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) != 0
            assert s.getsockname()[1] == port
        # a second server on the very same port
        b = await loop.create_server(lambda: Echo(b_protos), "127.0.0.1", port,
                                     reuse_port=True)
        assert port_of(b) == port
        await asyncio.gather(*[echo_once(port, b"m%d" % i) for i in range(64)])
        assert len(a_protos) + len(b_protos) == 64
        # without reuse_port, binding the port again fails
        with pytest.raises(OSError):
            await loop.create_server(Echo, "127.0.0.1", port)
        a.close()
        b.close()
        await a.wait_closed()
        await b.wait_closed()

    run(loop, main())


def test_backlog_pending_connections_all_served(loop, run):
    """With a small backlog, a burst of clients larger than the backlog is
    still served completely (accept drains the queue)."""

    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=16)
        port = port_of(server)
        await asyncio.gather(*[echo_once(port, b"c%d" % i) for i in range(24)])
        server.close()
        await server.wait_closed()

    run(loop, main(), timeout=40)


def test_backlog_burst_with_start_serving_later(loop, run):
    """Connections that queue up in the kernel backlog while the loop is
    busy are all accepted and served afterwards."""

    async def main():
        protos = []
        server = await loop.create_server(lambda: Echo(protos), "127.0.0.1", 0,
                                          start_serving=False, backlog=50)
        sock = server.sockets[0]
        port = sock.getsockname()[1]
        # listen() via start_serving, then stall the loop while clients queue up
        await server.start_serving()
        clients = []
        for _ in range(20):
            c = socket.socket()
            c.connect(("127.0.0.1", port))  # completes in the kernel backlog
            clients.append(c)
        await wait_until(lambda: len(protos) == 20)
        for i, c in enumerate(clients):
            c.sendall(b"x%d" % i)
        for i, c in enumerate(clients):
            c.setblocking(False)
            want = b"x%d" % i
            got = b""
            while len(got) < len(want):
                chunk = await loop.sock_recv(c, 100)
                assert chunk
                got += chunk
            assert got == want
            c.close()
        for p in protos:
            await p.lost
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_multiple_servers_independent(loop, run):
    async def main():
        s1 = await loop.create_server(Echo, "127.0.0.1", 0)
        s2 = await loop.create_server(Echo, "127.0.0.1", 0)
        p1, p2 = port_of(s1), port_of(s2)
        assert p1 != p2
        await echo_once(p1)
        await echo_once(p2)
        s1.close()
        await s1.wait_closed()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", p1)
        await echo_once(p2)  # the other server is unaffected
        s2.close()
        await s2.wait_closed()

    run(loop, main())


def test_server_ipv6_and_dual(loop, run):
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
    except OSError:
        pytest.skip("IPv6 loopback not available")

    async def main():
        server = await loop.create_server(Echo, ["127.0.0.1", "::1"], 0)
        fams = sorted(s.family for s in server.sockets)
        assert fams == sorted([socket.AF_INET, socket.AF_INET6])
        # port 0: each address gets its own port
        for s in server.sockets:
            host, port = s.getsockname()[:2]
            r, w = await asyncio.open_connection(host, port)
            w.write(host.encode())
            assert await r.readexactly(len(host)) == host.encode()
            assert w.get_extra_info("peername")[:2] == (host, port)
            w.close()
            await w.wait_closed()
        server.close()
        await server.wait_closed()

    run(loop, main())


def test_unix_server_lifecycle(loop, run):
    d = tempfile.mkdtemp(prefix="npt")
    path = os.path.join(d, "s")
    try:
        async def main():
            server = await loop.create_unix_server(
                Echo, path, start_serving=False)
            assert not server.is_serving()
            await server.start_serving()
            assert server.is_serving()
            r, w = await asyncio.open_unix_connection(path)
            w.write(b"u")
            assert await r.readexactly(1) == b"u"
            w.close()
            await w.wait_closed()
            server.close()
            await server.wait_closed()
            assert server.sockets == ()
            assert not server.is_serving()

        run(loop, main())
    finally:
        shutil.rmtree(d, ignore_errors=True)
