"""fork() with npaio loops alive: the child can close an inherited loop and
run its own, and the parent keeps serving (epoll sets are shared across fork,
so the child must not unregister anything). npaio-only: stock asyncio makes
no such promise."""
import os
import subprocess
import sys

import pytest

npaio = pytest.importorskip("npaio")

SCRIPT = os.path.join(os.path.dirname(__file__), "soak", "fork_script.py")


def test_fork_child_and_parent_both_work():
    # The child imports the same npaio as this process (installed or in-tree).
    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(npaio.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, env.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, SCRIPT], capture_output=True,
                         text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "parent b'p1'" in lines
    assert "child b'c1'" in lines
    assert "child status 0" in lines
    assert "parent again b'p2'" in lines
    assert "parent serving after child closed loop: b'after-fork'" in lines
    assert lines[-1] == str({'conns': 0, 'nodes': 0, 'reactors': 0,
                             'threads': 0, 'node_bytes': 0})
