"""npaio: a drop-in asyncio event loop for Linux on a netpoll-style reactor.

Public surface only; see loop.py (the loop), transports.py (stream
transports), _reactor.py (the C core's Python face) and _native/ (the C core).
"""

import asyncio as _asyncio
import sys as _sys

try:
    from ._reactor import native_counters
except ModuleNotFoundError as _exc:
    if _exc.name != __name__ + '._np':
        raise
    import os as _os
    raise ImportError(
        "npaio's C core (npaio._np) is not built in "
        f"{_os.path.dirname(__file__)}: this looks like npaio's source tree, "
        "not an installed npaio. Install npaio (pip install .), or run from a "
        "directory where the source tree does not shadow the installed npaio "
        "(for example, gunicorn puts its working directory first on sys.path)."
    ) from _exc
from .linkbuffer import LinkBuffer, LinkBufferError
from .loop import Loop
from .nocopy import NocopyProtocol

__all__ = ['Loop', 'new_event_loop', 'run', 'native_counters',
           'LinkBuffer', 'LinkBufferError', 'NocopyProtocol']
__version__ = '0.1.0.dev0'


def new_event_loop(**options):
    """Return a new npaio event loop (options: pollers=N, load_balance=NAME,
    spin_us=N)."""
    return Loop(**options)


def run(main, *, debug=None, **options):
    """Run coroutine `main` on a new npaio loop, like asyncio.run()."""
    if _sys.version_info >= (3, 11):
        def factory():
            return new_event_loop(**options)
        with _asyncio.Runner(debug=debug, loop_factory=factory) as runner:
            return runner.run(main)
    return _run_310(main, debug, options)


def _run_310(main, debug, options):
    from asyncio import coroutines, events, runners
    if events._get_running_loop() is not None:
        raise RuntimeError("npaio.run() cannot be called from a running event loop")
    if not coroutines.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")
    loop = new_event_loop(**options)
    try:
        events.set_event_loop(loop)
        if debug is not None:
            loop.set_debug(debug)
        return loop.run_until_complete(main)
    finally:
        try:
            runners._cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            events.set_event_loop(None)
            loop.close()


if _sys.version_info < (3, 16):
    import warnings as _warnings

    _base_policy = getattr(_asyncio.unix_events, '_UnixDefaultEventLoopPolicy')

    class EventLoopPolicy(_base_policy):
        """Event loop policy whose loops are npaio loops (Python < 3.16).

        Deprecated on Python 3.14+, as asyncio's policies are: prefer
        npaio.run() or asyncio.Runner(loop_factory=npaio.new_event_loop).
        """

        def __init__(self):
            if _sys.version_info >= (3, 14):
                _warnings.warn('npaio.EventLoopPolicy is deprecated, as asyncio '
                                'policies are; use npaio.run() or a loop factory',
                                DeprecationWarning, stacklevel=2)
            super().__init__()

        def _loop_factory(self):
            return new_event_loop()

    def install():
        """Make npaio the loop that asyncio's policy creates (Python < 3.16)."""
        if _sys.version_info >= (3, 14):
            _warnings.warn('npaio.install() is deprecated, as asyncio policies '
                            'are; use npaio.run() or a loop factory',
                            DeprecationWarning, stacklevel=2)
        _asyncio.set_event_loop_policy(EventLoopPolicy())

    __all__ += ['EventLoopPolicy', 'install']
