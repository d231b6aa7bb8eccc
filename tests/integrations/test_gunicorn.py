"""gunicorn with npaio's async workers (npaio/workers.py), -w 1."""

import signal

import pytest

from pathlib import Path

from _integ import (EXAMPLES, ServerProcess, free_port, graceful_stop,
                    http_battery, tool, websocket_battery)

gunicorn = pytest.importorskip('gunicorn', reason='gunicorn is in the test extra')
from gunicorn.config import Config  # noqa: E402

# gunicorn >= 24 opens a control socket in ~/.gunicorn by default; tests
# running side by side would race for it.
NO_CONTROL = ['--no-control-socket'] if 'control_socket_disable' in Config().settings else []


def gunicorn_argv(port, worker, app, *extra):
    # README: cd examples && gunicorn -w 1 -k npaio.workers.<Worker> <app>
    # (ServerProcess runs it in examples/)
    return [*tool('gunicorn'), '-w', '1', '-k', worker,
            '-b', f'127.0.0.1:{port}', '--graceful-timeout', '5', *NO_CONTROL,
            *extra, app]


def check_worker_log(out, worker):
    assert f'Using worker: {worker}' in out, out
    assert 'Booting worker' in out, out


@pytest.mark.asyncio
async def test_gunicorn_uvicorn_worker_conf_file():
    """examples/gunicorn.conf.py: worker_class = npaio.workers.UvicornWorker."""
    port = free_port()
    # README: cd examples && gunicorn -c gunicorn.conf.py asgi_app:app
    argv = [*tool('gunicorn'), '-c', 'gunicorn.conf.py',
            '-b', f'127.0.0.1:{port}', *NO_CONTROL, 'asgi_app:app']
    with ServerProcess(argv, port) as server:
        server.wait_ready()
        base = f'http://127.0.0.1:{port}'
        await http_battery(base)
        await graceful_stop(server, base, signal.SIGTERM)
        out = server.stop_and_check(None)
    check_worker_log(out, 'npaio.workers.UvicornWorker')


@pytest.mark.asyncio
async def test_gunicorn_uvicorn_worker_https(tls):
    certfile, keyfile, client_ctx = tls
    port = free_port()
    argv = gunicorn_argv(port, 'npaio.workers.UvicornWorker', 'asgi_app:app',
                         '--certfile', certfile, '--keyfile', keyfile)
    with ServerProcess(argv, port) as server:
        server.wait_ready()
        await http_battery(f'https://127.0.0.1:{port}', verify=client_ctx)
        server.stop_and_check(signal.SIGTERM)


@pytest.mark.asyncio
async def test_gunicorn_aiohttp_worker():
    port = free_port()
    argv = gunicorn_argv(port, 'npaio.workers.GunicornWebWorker', 'aiohttp_server:app')
    with ServerProcess(argv, port) as server:
        server.wait_ready()
        base = f'http://127.0.0.1:{port}'
        await http_battery(base)
        await websocket_battery(f'ws://127.0.0.1:{port}/ws')
        await graceful_stop(server, base, signal.SIGTERM)
        out = server.stop_and_check(None)
    check_worker_log(out, 'npaio.workers.GunicornWebWorker')


@pytest.mark.asyncio
async def test_gunicorn_aiohttp_worker_https(tls):
    certfile, keyfile, client_ctx = tls
    port = free_port()
    argv = gunicorn_argv(port, 'npaio.workers.GunicornWebWorker', 'aiohttp_server:app',
                         '--certfile', certfile, '--keyfile', keyfile)
    with ServerProcess(argv, port) as server:
        server.wait_ready()
        await http_battery(f'https://127.0.0.1:{port}', verify=client_ctx)
        server.stop_and_check(signal.SIGTERM)


@pytest.mark.asyncio
async def test_gunicorn_asgi_worker():
    pytest.importorskip('gunicorn.workers.gasgi',
                        reason="this gunicorn has no ASGI worker of its own")
    port = free_port()
    argv = gunicorn_argv(port, 'npaio.workers.ASGIWorker', 'asgi_app:app')
    with ServerProcess(argv, port) as server:
        server.wait_ready()
        base = f'http://127.0.0.1:{port}'
        await http_battery(base)
        await graceful_stop(server, base, signal.SIGTERM)
        out = server.stop_and_check(None)
    check_worker_log(out, 'npaio.workers.ASGIWorker')


@pytest.mark.parametrize('worker, app', [
    ('npaio.workers.UvicornWorker', 'asgi_app:app'),
    ('npaio.workers.GunicornWebWorker', 'aiohttp_server:app'),
    ('npaio.workers.ASGIWorker', 'asgi_app:app'),
])
def test_gunicorn_worker_fails_to_boot_without_npaio(worker, app):
    """No fall-back to the stock loop: the worker fails to boot, gunicorn stops."""
    if worker.endswith('ASGIWorker'):
        pytest.importorskip('gunicorn.workers.gasgi',
                            reason="this gunicorn has no ASGI worker of its own")
    port = free_port()
    with ServerProcess(gunicorn_argv(port, worker, app), port,
                       env={'NPAIO_POLLERS': 'not-a-number'}) as server:
        rc = server.wait_exit()
        out = server.output()
    assert rc == 3, out  # gunicorn's Arbiter.WORKER_BOOT_ERROR
    assert 'npaio: cannot create the npaio event loop for this worker' in out, out
    assert 'NPAIO_POLLERS must be an integer' in out, out
    assert 'Worker failed to boot' in out, out


def test_unbuilt_source_tree_says_so(tmp_path):
    """gunicorn puts its working directory first on sys.path, so started in
    npaio's repository root it imports the source tree, where no C core is
    built. The error must say that (npaio/__init__.py), not just 'No module
    named npaio._np'. Run with -S: an editable install's finder would
    otherwise supply the built core to the copy."""
    import shutil
    import subprocess
    import sys
    import npaio
    shutil.copytree(Path(npaio.__file__).parent, tmp_path / 'npaio',
                    ignore=shutil.ignore_patterns('*.so', '__pycache__', 'build'))
    proc = subprocess.run([sys.executable, '-S', '-c', 'import npaio'], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0, proc.stderr
    assert "ImportError: npaio's C core (npaio._np) is not built in" in proc.stderr, \
        proc.stderr
