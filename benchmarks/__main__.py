"""python -m benchmarks [--quick] [--rounds N] [--duration S] [--only TEXT]

Runs workloads x loops (asyncio, uvloop, npaio, plain C echo ceiling) in
alternating rounds, prints markdown tables, writes benchmarks/RESULTS.md and
PNG charts in benchmarks/charts/."""
import argparse
import datetime
import os
import platform
import subprocess
import sys

from . import charts, report, run, workloads

HERE = os.path.dirname(os.path.abspath(__file__))


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = []
    for mod in ("uvloop", "uvicorn", "httptools"):
        try:
            versions.append(f"{mod} {__import__(mod).__version__}")
        except Exception:
            versions.append(f"{mod} missing")
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    return (f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}, "
            f"Python {platform.python_version()}, {', '.join(versions)}, {wrk.strip()}")


def main():
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small matrix, under 2 minutes")
    p.add_argument("--rounds", type=int, help="rounds per workload (quick 3, full 3)")
    p.add_argument("--duration", type=float, help="seconds measured per run (quick 0.7, full 3; wrk rounds to whole seconds)")
    p.add_argument("--warmup", type=float, help="echo client warm-up seconds per run")
    p.add_argument("--only", help="run only workloads whose name contains this text")
    p.add_argument("--output", default=os.path.join(HERE, "RESULTS.md"),
                   help="markdown file; charts go to charts/ beside it")
    a = p.parse_args()

    wl = workloads.quick() if a.quick else workloads.full()
    if a.only:
        wl = [w for w in wl if a.only in w.name]
    rounds = a.rounds or 3
    seconds = a.duration or (0.7 if a.quick else 3.0)
    warmup = a.warmup if a.warmup is not None else (0.15 if a.quick else 0.5)
    started = datetime.datetime.now().astimezone()
    results = run.run_all(wl, rounds, seconds, warmup, log=lambda m: print(m, flush=True))

    pinned, unpinned = report.tables(results, True), report.tables(results, False)
    chart_paths = charts.write(results, os.path.join(os.path.dirname(os.path.abspath(a.output)), "charts"))
    command = "python -m benchmarks " + " ".join(sys.argv[1:])
    md = [
        "# npaio benchmark results", "",
        f"- Date: {started:%Y-%m-%d %H:%M %Z}",
        f"- Command: `{command.strip()}`",
        f"- Machine: {machine()}",
        f"- Rounds: {rounds} per workload, loop order alternated each round "
        f"(A B C, C B A, ...); {seconds:g} s measured per run"
        + (f" after {warmup:g} s warm-up (echo)" if warmup else ""),
        "- Load: C epoll echo client (`echo_client.c`, every byte checked) and "
        "`wrk -t1` (with `lua_pipeline.lua`) for HTTP.",
        "- Throughput and p99 are medians over rounds; the uvloop ratio is the median of "
        "per-round ratios (min-max in brackets).",
        "- CPU us/req: server utime+stime delta over the client run (/proc/<pid>/stat, "
        "per thread from /proc/<pid>/task/<tid>/stat; main thread = event loop thread, "
        "other threads = npaio pollers) divided by all requests served in that run; "
        "'of which kernel' is the process's stime alone (system calls and the TCP stack "
        "they run, the same work for every loop; sampled at the clock tick, so a rough split). 'uvloop's / this' is uvloop's CPU per "
        "request over this loop's: the throughput ratio a server-bound row tends to, and "
        "steadier than it on a busy machine.",
        "- Core busy %: /proc/stat deltas over the client run (user+nice+system+irq+softirq); "
        "steal is shown separately (shared VM). Core 0 busy % well above the server's own "
        "CPU % means other processes on the machine were using the server's core during the run.",
        "- wrk p50/p99 include wrk's coordinated-omission correction; '-' where wrk 4.1 "
        "returned 0 (its correction bug).", "",
        "## Pinned: server on core 0, load generator on core 1", "", pinned or "(none)", "",
    ]
    if unpinned:
        md += ["## Unpinned: server and load generator both on cores 0,1", "", unpinned, ""]
    md += ["## Charts", ""] + [f"![{os.path.basename(c)}](charts/{os.path.basename(c)})"
                               for c in chart_paths] + [""]
    attempts = os.path.join(HERE, "ATTEMPTS.md")   # the hand-kept log of tries
    if os.path.exists(attempts):
        with open(attempts) as f:
            md += [f.read()]
    text = "\n".join(md)
    with open(a.output, "w") as f:
        f.write(text)
    print()
    print(text)
    print(f"wrote {a.output} and {', '.join(chart_paths)}")


if __name__ == "__main__":
    main()
