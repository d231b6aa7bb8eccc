"""uvicorn on npaio: ``uvicorn ... --loop npaio:new_event_loop`` (uvicorn >= 0.36)."""

import signal

import pytest

from _integ import (EXAMPLES, ServerProcess, free_port, graceful_stop,
                    http_battery, tool)

pytest.importorskip('uvicorn', reason='uvicorn is in the test extra')


def uvicorn_argv(port, *extra):
    # README: uvicorn --app-dir examples asgi_app:app --loop npaio:new_event_loop
    return [*tool('uvicorn'), '--app-dir', EXAMPLES, 'asgi_app:app',
            '--loop', 'npaio:new_event_loop', '--host', '127.0.0.1',
            '--port', port, '--timeout-graceful-shutdown', '5', *extra]


@pytest.mark.asyncio
async def test_uvicorn_cli_http():
    port = free_port()
    with ServerProcess(uvicorn_argv(port), port) as server:
        server.wait_ready()
        base = f'http://127.0.0.1:{port}'
        await http_battery(base)
        await graceful_stop(server, base, signal.SIGINT)
        out = server.stop_and_check(None)
        assert 'Finished server process' in out


@pytest.mark.asyncio
async def test_uvicorn_cli_https(tls):
    certfile, keyfile, client_ctx = tls
    port = free_port()
    argv = uvicorn_argv(port, '--ssl-certfile', certfile, '--ssl-keyfile', keyfile)
    with ServerProcess(argv, port) as server:
        server.wait_ready()
        base = f'https://127.0.0.1:{port}'
        await http_battery(base, verify=client_ctx)
        await graceful_stop(server, base, signal.SIGTERM, verify=client_ctx)
        # After a graceful shutdown uvicorn re-raises the signal it caught
        # (Server.capture_signals), so SIGTERM ends it with -SIGTERM.
        server.stop_and_check(None, expect_rc=-signal.SIGTERM)


@pytest.mark.asyncio
async def test_uvicorn_run_from_python():
    """examples/uvicorn_server.py: uvicorn.run(..., loop='npaio:new_event_loop')."""
    port = free_port()
    argv = [tool('uvicorn')[0], EXAMPLES / 'uvicorn_server.py', '--port', port]
    with ServerProcess(argv, port) as server:
        server.wait_ready()
        await http_battery(f'http://127.0.0.1:{port}')
        server.stop_and_check(signal.SIGINT)


def test_uvicorn_fails_when_npaio_cannot_make_a_loop():
    port = free_port()
    with ServerProcess(uvicorn_argv(port), port,
                       env={'NPAIO_POLLERS': 'not-a-number'}) as server:
        rc = server.wait_exit()
        out = server.output()
    assert rc != 0, out
    assert 'NPAIO_POLLERS must be an integer' in out, out
    assert 'Uvicorn running' not in out, out


def test_uvicorn_fails_when_npaio_is_not_importable(tmp_path):
    # A broken npaio shadows the installed one (PYTHONPATH comes first).
    (tmp_path / 'npaio').mkdir()
    (tmp_path / 'npaio' / '__init__.py').write_text(
        'raise ImportError("npaio is broken in this test")\n')
    port = free_port()
    with ServerProcess(uvicorn_argv(port), port, cwd=tmp_path,
                       env={'PYTHONPATH': str(tmp_path)}) as server:
        rc = server.wait_exit()
        out = server.output()
    assert rc != 0, out
    assert 'ImportError: npaio is broken in this test' in out, out
    assert 'Uvicorn running' not in out, out
