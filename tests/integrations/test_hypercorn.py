"""hypercorn on npaio: examples/hypercorn_server.py, npaio.run(hypercorn.asyncio.serve(...))."""

import signal
import sys

import pytest

from _integ import EXAMPLES, ServerProcess, free_port, graceful_stop, http_battery

pytest.importorskip('hypercorn', reason='hypercorn is in the test extra')


def hypercorn_argv(port, *extra):
    # README: python examples/hypercorn_server.py --port 8000
    return [sys.executable, EXAMPLES / 'hypercorn_server.py', '--port', port, *extra]


@pytest.mark.asyncio
async def test_hypercorn_http():
    port = free_port()
    with ServerProcess(hypercorn_argv(port), port) as server:
        server.wait_ready()
        base = f'http://127.0.0.1:{port}'
        await http_battery(base)
        await graceful_stop(server, base, signal.SIGINT)
        server.stop_and_check(None)


@pytest.mark.asyncio
async def test_hypercorn_https(tls):
    certfile, keyfile, client_ctx = tls
    port = free_port()
    argv = hypercorn_argv(port, '--certfile', certfile, '--keyfile', keyfile)
    with ServerProcess(argv, port) as server:
        server.wait_ready()
        base = f'https://127.0.0.1:{port}'
        await http_battery(base, verify=client_ctx)
        await graceful_stop(server, base, signal.SIGTERM, verify=client_ctx)
        server.stop_and_check(None)
