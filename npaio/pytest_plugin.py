"""pytest plugin: run a test suite's pytest-asyncio tests on npaio.

Installed with npaio (a ``pytest11`` entry point) and off until asked for, in
the project's pytest configuration or on the command line::

    [tool.pytest.ini_options]          # pyproject.toml (pytest.ini: [pytest])
    npaio_loop = "npaio"               # every asyncio test on npaio
    # npaio_loop = "both"              # each asyncio test twice: stock asyncio and npaio

    pytest --npaio-loop=npaio          # the same, for one run (off|npaio|both)

It answers pytest-asyncio's (>= 1.4) ``pytest_asyncio_loop_factories`` hook
with ``{"npaio": npaio.new_event_loop}`` (and ``"asyncio":
asyncio.SelectorEventLoop`` for "both"), so pytest-asyncio's own runners make
the loops and its ``loop_scope`` rules apply unchanged (a module-scoped loop
is one npaio loop for the module). A test picks among them with
``@pytest.mark.asyncio(loop_factories=["asyncio"])``. A conftest.py that
implements the hook itself takes precedence (this one runs last).

When the mode is on and npaio cannot make a loop, or the installed
pytest-asyncio predates the hook, the session stops with a usage error rather
than running the tests on the stock loop. Nothing here imports npaio's C core
while the mode is off.
"""

import asyncio
import warnings

import pytest

MODES = ('off', 'npaio', 'both')

_HELP = ('run pytest-asyncio tests on npaio: off (default), npaio (every asyncio '
         'test on an npaio loop) or both (each on stock asyncio and on npaio)')


def pytest_addoption(parser):
    group = parser.getgroup('npaio')
    group.addoption('--npaio-loop', dest='npaio_loop', default=None,
                    metavar='MODE', help=_HELP)
    parser.addini('npaio_loop', _HELP, default='off')


def _mode(config):
    mode = config.getoption('npaio_loop', None) or config.getini('npaio_loop') or 'off'
    mode = str(mode).strip().lower()
    if mode not in MODES:
        raise pytest.UsageError(
            f'npaio_loop must be one of {", ".join(MODES)}; got {mode!r}')
    return mode


def loop_factories(mode='npaio'):
    """The {name: zero-argument loop factory} mapping for *mode*."""
    try:
        import npaio
        npaio.new_event_loop().close()  # fail now, not in every test
    except Exception as exc:
        raise pytest.UsageError(
            f'npaio_loop = {mode}: npaio cannot make an event loop '
            f'({type(exc).__name__}: {exc}); not running the asyncio tests on '
            'the stock loop instead') from exc
    factories = {'npaio': npaio.new_event_loop}
    if mode == 'both':
        factories = {'asyncio': asyncio.SelectorEventLoop, **factories}
    return factories


class NpaioLoopFactories:
    """The hook implementation registered when the mode is not 'off'."""

    def __init__(self, factories):
        self.factories = factories

    @pytest.hookimpl(trylast=True, optionalhook=True)
    def pytest_asyncio_loop_factories(self, config, item):
        return self.factories


def pytest_configure(config):
    mode = _mode(config)
    if mode == 'off':
        return
    if not config.pluginmanager.hasplugin('asyncio'):
        warnings.warn(pytest.PytestConfigWarning(
            f'npaio_loop = {mode}, but pytest-asyncio is not installed: '
            'asyncio tests cannot run on any loop'))
        return
    if not hasattr(config.hook, 'pytest_asyncio_loop_factories'):
        import pytest_asyncio
        raise pytest.UsageError(
            f'npaio_loop = {mode} needs pytest-asyncio >= 1.4 (its '
            'pytest_asyncio_loop_factories hook); installed: '
            f'{getattr(pytest_asyncio, "__version__", "unknown")}')
    config.pluginmanager.register(NpaioLoopFactories(loop_factories(mode)),
                                  'npaio-loop-factories')


def pytest_report_header(config):
    mode = _mode(config)
    if mode != 'off':
        return [f'npaio: pytest-asyncio loops: {mode}']
    return None
