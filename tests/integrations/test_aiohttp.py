"""aiohttp.web on npaio: run_app(app, loop=npaio.new_event_loop()), and in-process."""

import asyncio
import signal
import sys

import pytest

from _integ import (live_counters, EXAMPLES, NPAIO_LOOP, ServerProcess, free_port, graceful_stop,
                    http_battery, websocket_battery)

import npaio

pytest.importorskip('aiohttp', reason='aiohttp is in the test extra')


def aiohttp_argv(port, *extra):
    # README: python examples/aiohttp_server.py --port 8000
    return [sys.executable, EXAMPLES / 'aiohttp_server.py', '--port', port, *extra]


@pytest.mark.asyncio
async def test_aiohttp_run_app_http():
    port = free_port()
    with ServerProcess(aiohttp_argv(port), port) as server:
        server.wait_ready()
        base = f'http://127.0.0.1:{port}'
        await http_battery(base)
        await websocket_battery(f'ws://127.0.0.1:{port}/ws')
        await graceful_stop(server, base, signal.SIGINT)
        server.stop_and_check(None)


@pytest.mark.asyncio
async def test_aiohttp_run_app_https(tls):
    certfile, keyfile, client_ctx = tls
    port = free_port()
    argv = aiohttp_argv(port, '--certfile', certfile, '--keyfile', keyfile)
    with ServerProcess(argv, port) as server:
        server.wait_ready()
        base = f'https://127.0.0.1:{port}'
        await http_battery(base, verify=client_ctx)
        await websocket_battery(f'wss://127.0.0.1:{port}/ws', ssl=client_ctx)
        await graceful_stop(server, base, signal.SIGTERM, verify=client_ctx)
        server.stop_and_check(None)


def test_aiohttp_run_app_fails_when_npaio_cannot_make_a_loop():
    port = free_port()
    with ServerProcess(aiohttp_argv(port), port,
                       env={'NPAIO_POLLERS': 'not-a-number'}) as server:
        rc = server.wait_exit()
        out = server.output()
    assert rc != 0, out
    assert 'NPAIO_POLLERS must be an integer' in out, out
    assert 'Running on' not in out, out


def _load_example():
    sys.path.insert(0, str(EXAMPLES))
    try:
        import aiohttp_server
    finally:
        sys.path.remove(str(EXAMPLES))
    return aiohttp_server


@pytest.mark.asyncio
async def test_aiohttp_in_process_with_aiohttp_client():
    """Server and aiohttp's client in this (npaio) loop; native objects balance."""
    import aiohttp
    from aiohttp import web
    example = _load_example()
    assert type(asyncio.get_running_loop()) is npaio.Loop
    before = live_counters()
    runner = web.AppRunner(example.make_app())
    await runner.setup()
    site = web.TCPSite(runner, '127.0.0.1', 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        base = f'http://127.0.0.1:{port}'
        async with aiohttp.ClientSession() as session:
            async with session.get(f'{base}/loop') as r:
                assert (await r.json())['loop'] == NPAIO_LOOP
            n = 3 * 1024 * 1024 + 5
            async with session.get(f'{base}/bytes/{n}') as r:
                assert r.headers['Transfer-Encoding'] == 'chunked'
                assert await r.read() == example.random.Random(n).randbytes(n)
            data = bytes(range(256)) * 4096

            async def gen():
                for i in range(0, len(data), 9999):
                    yield data[i:i + 9999]
            async with session.post(f'{base}/echo', data=gen()) as r:
                assert await r.read() == data
            replies = await asyncio.gather(*(session.get(f'{base}/bytes/{k}')
                                             for k in range(1000, 11000, 1000)))
            for k, r in zip(range(1000, 11000, 1000), replies):
                assert await r.read() == example.random.Random(k).randbytes(k)
                r.release()
        await http_battery(base)
    finally:
        await runner.cleanup()
    # Every native connection of the server and the clients is gone.
    for _ in range(50):
        if live_counters() == before:
            break
        await asyncio.sleep(0.02)
    assert live_counters() == before
