"""Load generators: the C echo client and wrk; both report JSON.
Returns {"throughput", "unit", "p50_us", "p99_us", "max_us", "errors", "total"}
where total counts every request served during the whole client run (for CPU/req)."""
import json
import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.path.join(HERE, ".build")


def build():
    """Compile the C programs with gcc -O2 into .build/ when out of date."""
    os.makedirs(BUILD, exist_ok=True)
    for name in ("echo_client", "echo_server_c"):
        src, exe = os.path.join(HERE, name + ".c"), os.path.join(BUILD, name)
        if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(src):
            subprocess.run(["gcc", "-O2", "-Wall", "-o", exe, src], check=True)


def _run(cmd, timeout):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"{cmd[0]} gave no result (rc={p.returncode}): {p.stderr[-500:]}")


def echo(cpus, port, w, seconds, warmup):
    cmd = ["taskset", "-c", cpus, os.path.join(BUILD, "echo_client"), "-h", "127.0.0.1",
           "-p", str(port), "-c", str(w.conns), "-s", str(w.size), "-d", str(w.depth),
           "-t", str(seconds), "-w", str(warmup)]
    r = _run(cmd, seconds + warmup + 60)
    return {"throughput": r["msgs_per_s"], "unit": "msg/s", "mib_per_s": r["mib_per_s"],
            "p50_us": r["p50_us"], "p99_us": r["p99_us"], "max_us": r["max_us"],
            "errors": r["errors"], "total": r["total_msgs"]}


def _wrk_script(depth):
    """lua_report.lua, plus lua_pipeline.lua when pipelining, as one file in .build/."""
    parts = ["lua_report.lua"] + (["lua_pipeline.lua"] if depth > 1 else [])
    path = os.path.join(BUILD, f"wrk_{'_'.join(p[4:-4] for p in parts)}.lua")
    with open(path, "w") as out:
        for p in parts:
            with open(os.path.join(HERE, p)) as f:
                out.write(f.read() + "\n")
    return path


def wrk(cpus, port, w, seconds):
    secs = max(1, round(seconds))              # wrk takes whole seconds
    cmd = ["taskset", "-c", cpus, "wrk", "-t1", f"-c{w.conns}", f"-d{secs}s",
           "-s", _wrk_script(w.depth), f"http://127.0.0.1:{port}/", "--", str(w.depth)]
    r = _run(cmd, secs + 60)
    dur = r["duration_us"] / 1e6
    # wrk's coordinated-omission correction can leave percentiles at 0 (wrk 4.1
    # bug, mostly with pipelining): report those as missing.
    return {"throughput": r["requests"] / dur, "unit": "req/s", "mib_per_s": r["bytes"] / dur / 2**20,
            "p50_us": r["p50_us"] or None, "p99_us": r["p99_us"] or None, "max_us": r["max_us"],
            "errors": r["errors"], "total": r["requests"]}
