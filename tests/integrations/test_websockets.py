"""websockets on npaio: examples/websockets_server.py (npaio.run(main())), and in-process."""

import asyncio
import signal
import sys

import pytest

from _integ import (live_counters, EXAMPLES, NPAIO_LOOP, ServerProcess, free_port,
                    websocket_battery)

import npaio

pytest.importorskip('websockets', reason='websockets is in the test extra')


def ws_argv(port, *extra):
    # README: python examples/websockets_server.py --port 8765
    return [sys.executable, EXAMPLES / 'websockets_server.py', '--port', port, *extra]


@pytest.mark.asyncio
@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT], ids=['TERM', 'INT'])
async def test_websockets_server(sig):
    from websockets.asyncio.client import connect
    port = free_port()
    with ServerProcess(ws_argv(port), port) as server:
        server.wait_ready(ready_text=f'websockets server on 127.0.0.1:{port}')
        uri = f'ws://127.0.0.1:{port}'
        await websocket_battery(uri)
        # Graceful stop: an open connection gets a closing handshake (1001).
        async with connect(uri) as ws:
            await ws.send('loop')
            assert await ws.recv() == NPAIO_LOOP
            server.send_signal(sig)
            await asyncio.wait_for(ws.wait_closed(), 10)
            assert ws.close_code == 1001, ws.close_code
        out = server.stop_and_check(None)
    assert NPAIO_LOOP in out  # the example's start-up line names its loop


@pytest.mark.asyncio
async def test_websockets_server_tls(tls):
    certfile, keyfile, client_ctx = tls
    port = free_port()
    with ServerProcess(ws_argv(port, '--certfile', certfile, '--keyfile', keyfile),
                       port) as server:
        server.wait_ready(ready_text=f'websockets server on 127.0.0.1:{port}')
        await websocket_battery(f'wss://127.0.0.1:{port}', ssl=client_ctx)
        server.stop_and_check(signal.SIGTERM)


@pytest.mark.asyncio
async def test_websockets_in_process():
    """Server and client in this (npaio) loop; native objects balance."""
    from websockets.asyncio.server import serve
    sys.path.insert(0, str(EXAMPLES))
    try:
        import websockets_server as example
    finally:
        sys.path.remove(str(EXAMPLES))
    assert type(asyncio.get_running_loop()) is npaio.Loop
    before = live_counters()
    async with serve(example.echo, '127.0.0.1', 0, max_size=16 * 1024 * 1024) as server:
        port = server.sockets[0].getsockname()[1]
        await websocket_battery(f'ws://127.0.0.1:{port}')
    for _ in range(50):
        if live_counters() == before:
            break
        await asyncio.sleep(0.02)
    assert live_counters() == before
