"""Gunicorn worker classes that run their server on an npaio loop.

    gunicorn -w 1 -k npaio.workers.UvicornWorker app:app         # ASGI, uvicorn
    gunicorn -w 1 -k npaio.workers.GunicornWebWorker app:app     # aiohttp.web
    gunicorn -w 1 -k npaio.workers.ASGIWorker app:app            # gunicorn's own ASGI

Each worker makes its npaio loop in the worker process, after the fork, with
``npaio.new_event_loop()`` (options from NPAIO_POLLERS / NPAIO_LOAD_BALANCE),
never through an event loop policy. If npaio cannot make its loop the worker
fails to boot with the reason in gunicorn's log, and gunicorn stops: there is
no fall-back to the stock asyncio loop.

gunicorn, uvicorn and aiohttp are imported only when the class that needs
them is first looked up (``import npaio`` and ``import npaio.workers`` need
none of them), so an aiohttp deployment does not need uvicorn and vice versa.
"""

import asyncio
import warnings

# The worker classes (UvicornWorker, UvicornH11Worker, GunicornWebWorker,
# ASGIWorker) are made on first attribute access; see __getattr__ below.
__all__ = ['new_worker_loop']


def new_worker_loop():
    """A new npaio loop for a worker; a clear error instead of a fall-back."""
    from . import new_event_loop
    try:
        return new_event_loop()
    except Exception as exc:
        raise RuntimeError(
            'npaio: cannot create the npaio event loop for this worker '
            f'({type(exc).__name__}: {exc}); not falling back to the stock '
            'asyncio loop') from exc


def _uvicorn_base():
    try:  # the maintained home of uvicorn's gunicorn worker
        from uvicorn_worker import UvicornWorker as base
    except ImportError:
        with warnings.catch_warnings():  # uvicorn.workers is deprecated
            warnings.simplefilter('ignore', DeprecationWarning)
            from uvicorn.workers import UvicornWorker as base
    return base


def _make_uvicorn_worker():
    base = _uvicorn_base()

    class UvicornWorker(base):
        """uvicorn's gunicorn worker, serving on an npaio loop."""

        # uvicorn >= 0.36 takes a zero-argument loop factory as "module:attr".
        CONFIG_KWARGS = {'loop': 'npaio.workers:new_worker_loop', 'http': 'auto'}

        def init_process(self):
            # uvicorn makes its loop in run(), after gunicorn has counted the
            # worker as booted; a failure there would make the arbiter respawn
            # it forever. Check first, so that it is a boot failure (gunicorn
            # logs the reason and stops).
            new_worker_loop().close()
            super().init_process()

    UvicornWorker.__module__ = __name__
    return UvicornWorker


def _make_uvicorn_h11_worker():
    class UvicornH11Worker(_get('UvicornWorker')):
        """UvicornWorker with the pure-Python h11 HTTP implementation."""

        CONFIG_KWARGS = {'loop': 'npaio.workers:new_worker_loop', 'http': 'h11'}

    UvicornH11Worker.__module__ = __name__
    return UvicornH11Worker


def _make_web_worker():
    from aiohttp.worker import GunicornWebWorker as base
    from gunicorn.workers.base import Worker

    class GunicornWebWorker(base):
        """aiohttp's gunicorn worker (like GunicornUVLoopWebWorker), on npaio.

        The npaio loop is made after the fork and set as the thread's current
        loop; no event loop policy is involved (policies go in Python 3.16).
        """

        def init_process(self):
            self.loop = new_worker_loop()
            asyncio.set_event_loop(self.loop)
            # aiohttp's init_process would make a stock loop: skip to gunicorn's.
            Worker.init_process(self)

    GunicornWebWorker.__module__ = __name__
    return GunicornWebWorker


def _make_asgi_worker():
    try:
        from gunicorn.workers.gasgi import ASGIWorker as base
    except ImportError as exc:
        raise ImportError('npaio.workers.ASGIWorker needs a gunicorn with its own '
                          'ASGI worker (gunicorn.workers.gasgi)') from exc

    class ASGIWorker(base):
        """gunicorn's own ASGI worker (``-k asgi``), on an npaio loop."""

        def _setup_event_loop(self):
            self.loop = new_worker_loop()
            asyncio.set_event_loop(self.loop)

    ASGIWorker.__module__ = __name__
    return ASGIWorker


_FACTORIES = {
    'UvicornWorker': _make_uvicorn_worker,
    'UvicornH11Worker': _make_uvicorn_h11_worker,
    'GunicornWebWorker': _make_web_worker,
    'ASGIWorker': _make_asgi_worker,
}


def _get(name):
    cls = globals().get(name)
    if cls is None:
        cls = _FACTORIES[name]()
        globals()[name] = cls
    return cls


def __getattr__(name):
    if name in _FACTORIES:
        return _get(name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
    return sorted(set(globals()) | set(_FACTORIES))
