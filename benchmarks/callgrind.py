"""Deterministic cost per request: valgrind instruction counts of the server.

    python -m benchmarks.callgrind [--loops npaio,uvloop,asyncio] [--server echo_protocol]
                                   [--conns 10] [--size 1024] [--depth 1]
                                   [--n1 200] [--n2 1200] [--annotate]

For each loop the server runs under ``valgrind --tool=callgrind`` twice; the
C echo client (``echo_client -n``) sends exactly N1 (then N2) messages per
connection. Startup, connecting and shutdown are the same in both runs, so
(Ir(N2) - Ir(N1)) / (conns * (N2 - N1)) is the server's instruction count per
request, to a fraction of a percent run to run: a measurement that does not
care how busy the machine is. Under valgrind the server is ~50x slower than
the client, so every loop iteration finds all connections ready (the same
regime as the pinned throughput benchmark, where the server is the
bottleneck). ``--annotate`` prints callgrind_annotate's top functions of the
N2 run (inclusive of startup: read the per-request columns, not the top).

npaio runs with NPAIO_SPIN_US=0 unless the environment sets it: the spin
is timed, so it would make the count depend on the machine's speed.

Also prints syscalls per request from ``strace -c -f`` when --strace is given.
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

from . import loadgen

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _server_cmd(loop, server, port, extra):
    return [sys.executable, os.path.join(HERE, "servers", server + ".py"),
            "--loop", loop, "--port", str(port)] + extra


def _run_once(wrapper, loop, server, port, a, n, extra=()):
    # No spin: polling for a fixed time before sleeping makes the count
    # depend on timing (ping-pong: 4,667 instructions without, 4,742-4,885
    # with), and under valgrind the server is the slow side anyway.
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=ROOT)
    env.setdefault("NPAIO_SPIN_US", "0")
    p = subprocess.Popen(wrapper + _server_cmd(loop, server, port, list(extra)),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env)
    line = p.stdout.readline()
    if "READY" not in line:
        p.kill()
        raise RuntimeError(f"{loop}: no READY: {line!r} {p.stderr.read()[-2000:]}")
    if server.startswith("http"):
        raise SystemExit("echo servers only")
    cmd = [os.path.join(loadgen.BUILD, "echo_client"), "-p", str(port), "-c", str(a.conns),
           "-s", str(a.size), "-d", str(a.depth), "-n", str(n)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600).stdout
    time.sleep(0.2)
    # Signal the server itself (under strace it is strace's child).
    pid = p.pid
    if wrapper and wrapper[0] == "strace":
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pid = int(f.read().split()[0])
    os.kill(pid, signal.SIGTERM)
    _, err = p.communicate(timeout=600)
    if '"errors": 0' not in out:
        raise RuntimeError(f"client errors: {out}")
    return err


def callgrind(loop, a, n, port, outfile, extra=()):
    wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={outfile}"]
    _run_once(wrapper, loop, a.server, port, a, n, extra)
    with open(outfile) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError("no totals in " + outfile)


def strace(loop, a, n, port, extra=()):
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as f:
        _run_once(["strace", "-c", "-f", "-o", f.name], loop, a.server, port, a, n, extra)
        return f.read()


def _parse_strace(text):
    calls = {}
    for line in text.splitlines():
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
        if m:
            calls[m.group(2)] = int(m.group(1))
    return calls


def _functions(path, inclusive):
    ann = subprocess.run(["callgrind_annotate", "--threshold=100", "--auto=no",
                          f"--inclusive={'yes' if inclusive else 'no'}", path],
                         capture_output=True, text=True).stdout
    out = {}
    for line in ann.splitlines():
        m = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(.*)$", line)
        if m and "PROGRAM TOTALS" not in line:
            name = re.sub(r"^/tmp/python-build[^ ]*?Python-3[.\d]+/", "", m.group(2))
            name = re.sub(r" \[[^]]*\]$", "", name)
            out[name] = out.get(name, 0) + int(m.group(1).replace(",", ""))
    return out


def annotate_diff(f1, f2, reqs, inclusive=False):
    """Per-function instructions per request: (Ir in run 2 - run 1) / requests."""
    a, b = _functions(f1, inclusive), _functions(f2, inclusive)
    diff = {k: (b.get(k, 0) - a.get(k, 0)) / reqs for k in b}
    return sorted(diff.items(), key=lambda kv: -kv[1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loops", default="npaio,uvloop,asyncio")
    ap.add_argument("--server", default="echo_protocol")
    ap.add_argument("--conns", type=int, default=10)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--depth", type=int, default=1)
    ap.add_argument("--n1", type=int, default=200)
    ap.add_argument("--n2", type=int, default=1200)
    ap.add_argument("--port", type=int, default=25990)
    ap.add_argument("--annotate", action="store_true")
    ap.add_argument("--annotate-top", type=int, default=40)
    ap.add_argument("--inclusive", action="store_true")
    ap.add_argument("--strace", action="store_true")
    ap.add_argument("--diff-only", default=None,
                    help="DIR: just print the per-function diff of DIR/LOOP.n1/n2.out")
    ap.add_argument("--keep", default=None, help="directory for the callgrind.out files")
    a = ap.parse_args()
    if a.diff_only:
        reqs = a.conns * (a.n2 - a.n1)
        for loop in a.loops.split(","):
            print(loop)
            top = annotate_diff(os.path.join(a.diff_only, f"{loop}.n1.out"),
                                os.path.join(a.diff_only, f"{loop}.n2.out"), reqs, a.inclusive)
            for fn, v in top[:a.annotate_top]:
                print(f"   {v:9.1f}  {fn}")
        return
    loadgen.build()
    outdir = a.keep or tempfile.mkdtemp(prefix="npaio-cg-")
    os.makedirs(outdir, exist_ok=True)
    reqs = a.conns * (a.n2 - a.n1)
    rows = []
    for loop in a.loops.split(","):
        i1 = callgrind(loop, a, a.n1, a.port, os.path.join(outdir, f"{loop}.n1.out"))
        i2 = callgrind(loop, a, a.n2, a.port, os.path.join(outdir, f"{loop}.n2.out"))
        per = (i2 - i1) / reqs
        rows.append((loop, per))
        print(f"{loop:8s} {per:10.0f} instructions/request  (Ir {i1} -> {i2})", flush=True)
        if a.strace:
            c1 = _parse_strace(strace(loop, a, a.n1, a.port))
            c2 = _parse_strace(strace(loop, a, a.n2, a.port))
            per_sc = {k: (c2.get(k, 0) - c1.get(k, 0)) / reqs for k in c2}
            per_sc = {k: v for k, v in per_sc.items() if v >= 0.01}
            print("   syscalls/request: " + ", ".join(
                f"{k} {v:.2f}" for k, v in sorted(per_sc.items(), key=lambda kv: -kv[1])))
        if a.annotate:
            top = annotate_diff(os.path.join(outdir, f"{loop}.n1.out"),
                                os.path.join(outdir, f"{loop}.n2.out"), reqs, a.inclusive)
            for fn, v in top[:a.annotate_top]:
                print(f"   {v:9.1f}  {fn}")
    base = dict(rows).get("uvloop")
    if base:
        print("ratio to uvloop: " + ", ".join(f"{k} {v / base:.2f}x" for k, v in rows))
    print(f"callgrind files: {outdir}")


if __name__ == "__main__":
    main()
