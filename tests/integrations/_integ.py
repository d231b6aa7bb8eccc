"""Helpers for the integration tests: server subprocesses and checking clients.

The servers are the ones in examples/, started as the README says. Clients
run in the test's own loop, which pytest-asyncio makes with npaio (this
project sets ``npaio_loop = "npaio"``: npaio/pytest_plugin.py).
"""

import asyncio
import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import npaio

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / 'examples'
NPAIO_LOOP = f'{npaio.Loop.__module__}.{npaio.Loop.__qualname__}'
MiB = 1024 * 1024

# Lines in a server's output that mean something went wrong even when it
# exited 0 (tracebacks, leaked transports, tasks destroyed while pending).
BAD_OUTPUT = ('Traceback', 'Task was destroyed', 'Unclosed', 'ResourceWarning',
              'never awaited', 'Exception in callback', '[ERROR]', 'ERROR:',
              'Error handling request')


def live_counters():
    """npaio's live native objects (not the running node allocation totals)."""
    live = npaio.native_counters()
    live.pop('node_allocs')
    live.pop('node_frees')
    return live


def payload(n):
    """What GET /bytes/N answers (examples/asgi_app.py, aiohttp_server.py)."""
    return random.Random(n).randbytes(n)


def check_bytes(got, expected, what):
    """Fail with the first differing offset instead of a multi-MiB diff."""
    if got == expected:
        return
    first = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b),
                 min(len(got), len(expected)))
    pytest.fail(f'{what}: {len(got)} bytes received, {len(expected)} expected; '
                f'first difference at offset {first}', pytrace=False)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def tool(name):
    """argv prefix running a tool of this Python's environment (python -m NAME)."""
    return [sys.executable, '-m', name]


class ServerProcess:
    """A server in a subprocess: started, waited for, stopped, checked.

    Use as a context manager; the process is always killed on the way out."""

    # cwd: not the repository, whose source npaio/ (without the built C core
    # when npaio is installed non-editable) would shadow the installed one.
    def __init__(self, argv, port, *, env=None, cwd=EXAMPLES):
        self.argv = [str(a) for a in argv]
        self.port = port
        self.env = dict(os.environ, PYTHONWARNINGS='default::ResourceWarning',
                        PYTHONUNBUFFERED='1', **(env or {}))
        self.cwd = cwd
        self.proc = None
        self.log = tempfile.TemporaryFile()

    def __enter__(self):
        self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env,
                                     stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc):
        try:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
        finally:
            self.log.close()

    def output(self):
        self.log.seek(0)
        return self.log.read().decode(errors='replace')

    def wait_ready(self, timeout=20.0, ready_text=None):
        """Poll connect() until the server listens (or fail with its log).

        With *ready_text*, wait for that text in the server's output instead:
        for servers that log a bare probe connection as an error (websockets
        < 17 logs "opening handshake failed" with a traceback)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f'server exited with {self.proc.returncode} before '
                            f'listening: {self.argv}\n{self.output()}', pytrace=False)
            if ready_text is not None:
                if ready_text in self.output():
                    return
                time.sleep(0.05)
                continue
            try:
                socket.create_connection(('127.0.0.1', self.port), 0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        pytest.fail(f'server not listening on {self.port} after {timeout}s\n'
                    f'{self.output()}', pytrace=False)

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=15.0):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f'server still running {timeout}s after the signal\n'
                        f'{self.output()}', pytrace=False)

    def stop_and_check(self, sig=signal.SIGTERM, expect_rc=0):
        """Signal (unless *sig* is None: already sent), wait, and check the
        exit code and that the log is clean."""
        if sig is not None:
            self.send_signal(sig)
        rc = self.wait_exit()
        out = self.output()
        assert rc == expect_rc, f'exit code {rc} after {sig!r}\n{out}'
        bad = [line for line in out.splitlines()
               if any(marker in line for marker in BAD_OUTPUT)]
        assert not bad, 'server log has errors:\n' + '\n'.join(bad) + '\n---\n' + out
        return out


# --------------------------------------------------------------------------
# HTTP and WebSocket checks, run with the test's (npaio) loop

def assert_npaio_loop():
    assert type(asyncio.get_running_loop()) is npaio.Loop


async def http_battery(base_url, verify=True, http1_chunked=True):
    """Every check of the HTTP servers; each response byte is compared."""
    import httpx
    assert_npaio_loop()
    timeout = httpx.Timeout(30.0)
    one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=base_url, verify=verify, timeout=timeout,
                                 limits=one) as client:
        r = await client.get('/')
        assert r.status_code == 200 and r.text == 'Hello from npaio\n'

        # The handler's loop, and keep-alive: one connection for all of these.
        ports = set()
        for _ in range(3):
            r = await client.get('/loop')
            assert r.status_code == 200, r.text
            info = r.json()
            assert info['loop'] == NPAIO_LOOP, f'server ran on {info["loop"]}'
            ports.add(info['peer_port'])
        assert len(ports) == 1, f'keep-alive broken: client ports {ports}'

        # Download of several MiB, streamed with chunked transfer encoding.
        n = 5 * MiB + 123
        r = await client.get(f'/bytes/{n}')
        assert r.status_code == 200
        if http1_chunked:
            assert r.headers.get('transfer-encoding') == 'chunked', r.headers
        check_bytes(r.content, payload(n), 'GET /bytes')

        # Chunked request bodies: an upload of 4 MiB and an echo of 1 MiB
        # (the echo streams back while the client still sends, so it stays
        # within what the socket buffers hold for a client that sends first).
        data = random.Random(1).randbytes(4 * MiB + 7)

        async def pieces(blob, size=100_003):
            for i in range(0, len(blob), size):
                yield blob[i:i + size]

        r = await client.post('/upload', content=pieces(data))
        assert r.status_code == 200, r.text
        assert r.json() == {'length': len(data),
                            'sha256': hashlib.sha256(data).hexdigest()}
        echo = data[:MiB + 3]
        r = await client.post('/echo', content=pieces(echo, 65_537))
        assert r.status_code == 200
        check_bytes(r.content, echo, 'POST /echo (chunked)')

        # A large upload with Content-Length.
        data = random.Random(2).randbytes(8 * MiB)
        r = await client.post('/upload', content=data)
        assert r.json() == {'length': len(data),
                            'sha256': hashlib.sha256(data).hexdigest()}

        # Same connection still in use after all that.
        r = await client.get('/loop')
        assert {r.json()['peer_port']} == ports

    # Concurrent requests on several connections.
    many = httpx.Limits(max_connections=8)
    async with httpx.AsyncClient(base_url=base_url, verify=verify, timeout=timeout,
                                 limits=many) as client:
        sizes = [1000 * i + 17 for i in range(1, 25)] + [MiB, MiB + 1]
        responses = await asyncio.gather(*(client.get(f'/bytes/{n}') for n in sizes))
        for n, r in zip(sizes, responses):
            assert r.status_code == 200
            check_bytes(r.content, payload(n), f'concurrent GET /bytes/{n}')
        infos = await asyncio.gather(*(client.get('/loop') for _ in range(8)))
        assert {i.json()['loop'] for i in infos} == {NPAIO_LOOP}


async def graceful_stop(server, base_url, sig, verify=True):
    """A request in flight when the signal arrives still gets its answer."""
    import httpx
    async with httpx.AsyncClient(base_url=base_url, verify=verify,
                                 timeout=15.0) as client:
        pending = asyncio.ensure_future(client.get('/slow'))
        await asyncio.sleep(0.25)
        assert not pending.done()
        server.send_signal(sig)
        r = await pending
        assert r.status_code == 200 and r.text == 'done'


async def websocket_battery(uri, ssl=None):
    from websockets.asyncio.client import connect
    assert_npaio_loop()
    async with connect(uri, ssl=ssl, max_size=16 * MiB) as ws:
        await ws.send('loop')
        assert await ws.recv() == NPAIO_LOOP
        await ws.send('héllo, wörld')
        assert await ws.recv() == 'héllo, wörld'
        big = random.Random(3).randbytes(4 * MiB + 1)
        await ws.send(big)
        check_bytes(await ws.recv(), big, 'binary echo')
        # Fragmented messages: the server gets one message from the frames.
        frags = [random.Random(i).randbytes(70_000 + i) for i in range(20)]
        await ws.send(frags)
        check_bytes(await ws.recv(), b''.join(frags), 'fragmented binary echo')
        text_frags = ['ab' * 5000, 'ç' * 3000, 'end']
        await ws.send(text_frags)
        assert await ws.recv() == ''.join(text_frags)
        await asyncio.wait_for(await ws.ping(b'x'), 10)

    async def one(i):
        async with connect(uri, ssl=ssl, max_size=16 * MiB) as ws:
            msg = random.Random(100 + i).randbytes(200_000 + i)
            for _ in range(3):
                await ws.send(msg)
                check_bytes(await ws.recv(), msg, f'concurrent echo {i}')

    await asyncio.gather(*(one(i) for i in range(6)))
