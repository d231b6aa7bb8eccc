"""npaio's pytest plugin (npaio/pytest_plugin.py) with pytest-asyncio >= 1.4.

Each test runs a small test suite in a fresh pytest process (pytester), as a
project using npaio would; the inner tests assert the loop they run on.
"""

import pytest

pytest_plugins = ['pytester']

pytest.importorskip('pytest_asyncio', reason='pytest-asyncio is in the test extra')

INI = """
[pytest]
asyncio_default_fixture_loop_scope = function
{extra}
"""

SUITE = """
import asyncio
import pytest
import pytest_asyncio
import npaio

def loop_type():
    return type(asyncio.get_running_loop())

@pytest.mark.asyncio
async def test_function_loop():
    assert loop_type() is {expected}

@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def module_loop():
    return asyncio.get_running_loop()

@pytest.mark.asyncio(loop_scope="module")
async def test_module_loop_1(module_loop):
    assert asyncio.get_running_loop() is module_loop
    assert loop_type() is {expected}

@pytest.mark.asyncio(loop_scope="module")
async def test_module_loop_2(module_loop):
    assert asyncio.get_running_loop() is module_loop
    assert loop_type() is {expected}

seen = []

@pytest.mark.asyncio
async def test_fresh_loop_a():
    seen.append(asyncio.get_running_loop())

@pytest.mark.asyncio
async def test_fresh_loop_b():
    seen.append(asyncio.get_running_loop())
    assert seen[0] is not seen[1] and seen[0].is_closed()

@pytest.mark.asyncio
async def test_streams_work():
    async def handle(reader, writer):
        writer.write(await reader.readexactly(100_000))
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(handle, '127.0.0.1', 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection('127.0.0.1', port)
    writer.write(b'x' * 100_000)
    assert await reader.read() == b'x' * 100_000
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
"""


def make_suite(pytester, expected, extra_ini=''):
    pytester.makefile('.ini', pytest=INI.format(extra=extra_ini))
    pytester.makepyfile(test_suite=SUITE.format(expected=expected))


def test_ini_npaio_runs_every_asyncio_test_on_npaio(pytester):
    make_suite(pytester, 'npaio.Loop', 'npaio_loop = npaio')
    result = pytester.runpytest_subprocess('-v')
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(['*npaio: pytest-asyncio loops: npaio*'])


def test_off_by_default(pytester):
    make_suite(pytester, 'asyncio.SelectorEventLoop')
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=6)


def test_command_line_turns_it_on(pytester):
    make_suite(pytester, 'npaio.Loop')
    result = pytester.runpytest_subprocess('--npaio-loop=npaio')
    result.assert_outcomes(passed=6)


def test_both_runs_each_test_on_asyncio_and_npaio(pytester):
    pytester.makefile('.ini', pytest=INI.format(extra='npaio_loop = both'))
    pytester.makepyfile(test_both="""
        import asyncio
        import pytest
        import npaio

        @pytest.mark.asyncio
        async def test_each(request):
            name = request.node.callspec.id
            expected = {'asyncio': asyncio.SelectorEventLoop, 'npaio': npaio.Loop}[name]
            assert type(asyncio.get_running_loop()) is expected

        @pytest.mark.asyncio(loop_factories=['asyncio'])
        async def test_stock_only():
            assert type(asyncio.get_running_loop()) is asyncio.SelectorEventLoop

        @pytest.mark.asyncio(loop_factories=['npaio'])
        async def test_npaio_only():
            assert type(asyncio.get_running_loop()) is npaio.Loop
    """)
    result = pytester.runpytest_subprocess('-v')
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(['*test_each?asyncio? PASSED*',
                                 '*test_each?npaio? PASSED*'])


def test_a_conftest_hook_takes_precedence(pytester):
    pytester.makefile('.ini', pytest=INI.format(extra='npaio_loop = npaio'))
    pytester.makeconftest("""
        import asyncio

        def pytest_asyncio_loop_factories(config, item):
            if 'stock' in item.name:
                return {'stock': asyncio.SelectorEventLoop}
            return None
    """)
    pytester.makepyfile(test_mixed="""
        import asyncio
        import pytest
        import npaio

        @pytest.mark.asyncio
        async def test_stock():
            assert type(asyncio.get_running_loop()) is asyncio.SelectorEventLoop

        @pytest.mark.asyncio
        async def test_default():
            assert type(asyncio.get_running_loop()) is npaio.Loop
    """)
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=2)


def test_broken_npaio_stops_the_session(pytester, monkeypatch):
    make_suite(pytester, 'npaio.Loop', 'npaio_loop = npaio')
    monkeypatch.setenv('NPAIO_POLLERS', 'not-a-number')
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        '*npaio_loop = npaio: npaio cannot make an event loop*NPAIO_POLLERS*'
        'not running the asyncio tests on the stock loop*'])


def test_bad_mode_is_a_usage_error(pytester):
    make_suite(pytester, 'npaio.Loop', 'npaio_loop = sometimes')
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*npaio_loop must be one of off, npaio, both*"])


def test_anyio_backend_with_npaio_loop_factory(pytester):
    """The README's anyio route: ("asyncio", {"loop_factory": npaio.new_event_loop})."""
    pytest.importorskip('anyio', reason='anyio comes with httpx (test extra)')
    pytester.makefile('.ini', pytest=INI.format(extra=''))
    pytester.makepyfile(test_anyio="""
        import asyncio
        import pytest
        import npaio

        @pytest.fixture
        def anyio_backend():
            return ('asyncio', {'loop_factory': npaio.new_event_loop})

        @pytest.mark.anyio
        async def test_on_npaio():
            assert type(asyncio.get_running_loop()) is npaio.Loop
    """)
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)


@pytest.mark.asyncio
async def test_this_suite_runs_on_npaio():
    """npaio's own pyproject sets npaio_loop = npaio for its asyncio tests."""
    import asyncio
    import npaio
    assert type(asyncio.get_running_loop()) is npaio.Loop
