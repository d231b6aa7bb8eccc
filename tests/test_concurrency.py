"""Many concurrent connections, random payload sizes, every byte checked."""

import asyncio
import os
import random

import pytest

N_CONNECTIONS = int(os.environ.get("NPAIO_TEST_CONNECTIONS", "1000"))
SEED = int(os.environ.get("NPAIO_TEST_SEED", "12345"))


class CountingEcho(asyncio.Protocol):
    """Echo server protocol that tracks live / peak connection counts."""

    def __init__(self, state):
        self.state = state

    def connection_made(self, transport):
        self.transport = transport
        st = self.state
        st["live"] += 1
        st["made"] += 1
        st["peak"] = max(st["peak"], st["live"])
        if st["made"] == st["target"] and not st["all_made"].done():
            st["all_made"].set_result(None)

    def data_received(self, data):
        self.state["bytes"] += len(data)
        self.transport.write(data)

    def connection_lost(self, exc):
        self.state["live"] -= 1
        self.state["lost"] += 1
        if exc is not None:
            self.state["errors"].append(exc)


class BufferedCountingEcho(asyncio.BufferedProtocol):
    def __init__(self, state, bufsize):
        self.state = state
        self.buf = bytearray(bufsize)

    connection_made = CountingEcho.connection_made
    connection_lost = CountingEcho.connection_lost

    def get_buffer(self, sizehint):
        return self.buf

    def buffer_updated(self, n):
        self.state["bytes"] += n
        self.transport.write(bytes(self.buf[:n]))


def make_sizes(n, rng):
    """Mostly small payloads, ~15% large ones up to 1 MiB, at least one
    exactly 1 MiB."""
    sizes = []
    for i in range(n):
        r = rng.random()
        if r < 0.15:
            sizes.append(rng.randint(64 * 1024, 1 << 20))
        elif r < 0.3:
            sizes.append(rng.randint(4096, 32 * 1024))
        else:
            sizes.append(rng.randint(1, 4096))
    sizes[0] = 1 << 20
    sizes[-1] = 1
    return sizes


async def _client(loop, port, idx, size, seed, go, results):
    rng = random.Random(seed)
    data = os.urandom(size)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await go.wait()  # every connection is open before anyone sends

        async def send():
            i = 0
            while i < size:
                n = rng.randint(1, 256 * 1024)
                writer.write(data[i:i + n])
                i += n
                await writer.drain()

        sender = asyncio.ensure_future(send())
        got = await reader.readexactly(size)
        await sender
        if got != data:
            # locate the first difference for a useful failure message
            pos = next(i for i in range(size) if got[i] != data[i])
            results["bad"].append((idx, size, pos))
        else:
            results["ok"] += 1
            results["bytes"] += size
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass


@pytest.mark.parametrize("server_kind", ["protocol", "buffered"])
def test_many_concurrent_connections_random_payloads(loop, run, server_kind):
    rng = random.Random(SEED)
    n = N_CONNECTIONS
    sizes = make_sizes(n, rng)
    if server_kind == "buffered":
        # fewer bytes on the second variant, same connection count
        sizes = [min(s, 256 * 1024) for s in sizes]
    state = {"live": 0, "made": 0, "lost": 0, "peak": 0, "bytes": 0,
             "errors": [], "target": n, "all_made": loop.create_future()}
    results = {"ok": 0, "bad": [], "bytes": 0}

    if server_kind == "protocol":
        factory = lambda: CountingEcho(state)  # noqa: E731
    else:
        factory = lambda: BufferedCountingEcho(state, 16 * 1024)  # noqa: E731

    async def main():
        server = await loop.create_server(factory, "127.0.0.1", 0, backlog=4096)
        port = server.sockets[0].getsockname()[1]
        go = asyncio.Event()
        clients = [
            asyncio.ensure_future(
                _client(loop, port, i, sizes[i], rng.random(), go, results))
            for i in range(n)]
        await state["all_made"]
        assert state["live"] == n
        go.set()
        done = await asyncio.gather(*clients, return_exceptions=True)
        failures = [(i, r) for i, r in enumerate(done)
                    if isinstance(r, BaseException)]
        assert not failures, "%d clients failed, first: %r" % (
            len(failures), failures[:3])
        for _ in range(500):
            if state["live"] == 0:
                break
            await asyncio.sleep(0.01)
        server.close()
        await server.wait_closed()

    run(loop, main(), timeout=90)
    assert results["bad"] == [], "corrupted echoes (idx, size, first bad offset): %r" % (
        results["bad"][:10],)
    assert results["ok"] == n
    assert results["bytes"] == sum(sizes)
    assert state["bytes"] == sum(sizes)
    assert state["peak"] == n
    assert state["made"] == n
    assert state["lost"] == n
    assert state["live"] == 0
    assert state["errors"] == []
