"""Run workloads x loop variants in alternating rounds and collect per-run records."""
import subprocess
import sys
import time

from . import loadgen, procstat
from .servers_proc import ROOT, Server

SERVER_CPUS, CLIENT_CPUS, ALL_CPUS = "0", "1", "0,1"
BASE_PORT = 26000


def npaio_problem():
    """None if npaio imports and makes a loop from the repo, else the reason."""
    code = "import npaio; npaio.new_event_loop().close()"
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    if p.returncode == 0:
        return None
    lines = (p.stderr.strip() or f"exit {p.returncode}").splitlines()
    return lines[-1]


def measure(server, w, cpus_client, seconds, warmup):
    """One load-generator run against one server, with CPU accounting around it."""
    cores0, cpu0, t0 = procstat.cores(), procstat.process_cpu(server.pid), time.time()
    if w.http:
        r = loadgen.wrk(cpus_client, server.port, w, seconds)
    else:
        r = loadgen.echo(cpus_client, server.port, w, seconds, warmup)
    cpu = procstat.cpu_delta(server.pid, cpu0, procstat.process_cpu(server.pid))
    r["cores"] = procstat.core_busy(cores0, procstat.cores())
    r["server_core_pct"] = 100.0 * cpu["process"] / (time.time() - t0)
    n = max(r["total"], 1)
    r["cpu_us_per_req"] = {k: 1e6 * v / n for k, v in cpu.items()}
    return r


def run_workload(w, rounds, seconds, warmup, skip, log):
    """Start one server per variant, run `rounds` alternating rounds, stop them.
    Returns {"runs": [...], "stats": {variant: stats}, "skipped": {variant: reason}}."""
    server_cpus = SERVER_CPUS if w.pinned else ALL_CPUS
    client_cpus = CLIENT_CPUS if w.pinned else ALL_CPUS
    result = {"runs": [], "stats": {}, "skipped": {}}
    servers = []
    for i, v in enumerate(w.variants):
        if v.loop in skip:
            result["skipped"][v.name] = skip[v.loop]
            continue
        s = Server(w, v, BASE_PORT + i, server_cpus)
        try:
            s.wait_ready()
            servers.append(s)
        except RuntimeError as e:
            result["skipped"][v.name] = str(e)
            log(f"  skip {v.name}: {e}")
    try:
        for s in servers:       # one unrecorded run each: the first run is always slow
            measure(s, w, client_cpus, min(seconds, 0.3), 0)
        for rnd in range(rounds):
            order = servers if rnd % 2 == 0 else servers[::-1]
            for s in order:
                r = measure(s, w, client_cpus, seconds, warmup)
                r.update(variant=s.variant.name, round=rnd)
                result["runs"].append(r)
                p99 = f"{r['p99_us']:.0f}" if r["p99_us"] else "-"
                log(f"  r{rnd} {s.variant.name:<18} {r['throughput']:>12,.0f} {r['unit']}"
                    f"  p99 {p99} us  errors {r['errors']}")
    finally:
        for s in servers:
            result["stats"][s.variant.name] = s.stop()
    return result


def run_all(workloads, rounds, seconds, warmup, log=print):
    loadgen.build()
    skip = {}
    problem = npaio_problem()
    if problem:
        skip["npaio"] = f"import npaio failed: {problem}"
        log(f"npaio skipped: {skip['npaio']}")
    results = []
    t0 = time.time()
    for w in workloads:
        log(f"{w.name}  ({'pinned: server core 0, client core 1' if w.pinned else 'unpinned'})")
        results.append((w, run_workload(w, rounds, seconds, warmup, skip, log)))
    log(f"total {time.time() - t0:.0f} s")
    return results
