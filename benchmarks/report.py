"""Summaries and markdown tables from run records.

Ratios to uvloop are computed round by round (variant / uvloop in the same
round), then the median and min-max of those ratios are shown."""
import statistics


def _med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(w, result):
    """{variant: summary dict} for one workload."""
    runs = result["runs"]
    by_round = {}
    for r in runs:
        by_round.setdefault(r["round"], {})[r["variant"]] = r
    out = {}
    for v in dict.fromkeys(r["variant"] for r in runs):
        mine = [r for r in runs if r["variant"] == v]
        ratios = [rr[v]["throughput"] / rr["uvloop"]["throughput"]
                  for rr in by_round.values() if v in rr and "uvloop" in rr
                  and rr["uvloop"]["throughput"] > 0]
        cores = sorted(mine[0]["cores"])
        stats = result["stats"].get(v, {}).get("npaio")
        total = sum(r["total"] for r in mine)
        out[v] = {
            "throughput": _med(r["throughput"] for r in mine),
            "unit": mine[0]["unit"],
            "mib_per_s": _med(r["mib_per_s"] for r in mine),
            "ratio": (_med(ratios), min(ratios), max(ratios)) if ratios else None,
            "p50_us": _med(r["p50_us"] for r in mine),
            "p99_us": _med(r["p99_us"] for r in mine),
            "errors": sum(r["errors"] for r in mine),
            "cpu_proc": _med(r["cpu_us_per_req"]["process"] for r in mine),
            "cpu_sys": _med(r["cpu_us_per_req"].get("system") for r in mine),
            "cpu_main": _med(r["cpu_us_per_req"]["main"] for r in mine),
            "cpu_others": _med(r["cpu_us_per_req"]["others"] for r in mine),
            "server_pct": _med(r["server_core_pct"] for r in mine),
            "busy": {c: _med(r["cores"][c]["busy"] for r in mine) for c in cores},
            "steal": {c: _med(r["cores"][c]["steal"] for r in mine) for c in cores},
            "npaio": npaio_summary(stats, total) if stats else None,
        }
    return out


def npaio_summary(stats, total_requests):
    loop = stats.get("loop", {})
    pollers = stats.get("pollers", [])
    n = max(total_requests, 1)
    return {
        "completions_per_drain": loop.get("completions_per_drain"),
        "loop_wakeups_per_req": loop.get("loop_wakeups", 0) / n,
        "poller_wakeups_per_req": sum(p.get("wakeups", 0) for p in pollers) / n,
        "poller_events_per_req": sum(p.get("events", 0) for p in pollers) / n,
        "spins_per_req": sum(p.get("spins", 0) for p in pollers) / n,
        "spin_hit_pct": 100.0 * sum(p.get("spin_hits", 0) for p in pollers)
                        / max(sum(p.get("spins", 0) for p in pollers), 1),
        "read_share": [100.0 * p.get("bytes_read", 0) / max(sum(q.get("bytes_read", 0) for q in pollers), 1)
                       for p in pollers],
    }


def _f(x, fmt="{:,.0f}"):
    return "-" if x is None else fmt.format(x)


def _ratio(r):
    return "-" if r is None else f"{r[0]:.2f} ({r[1]:.2f}-{r[2]:.2f})"


def tables(results, pinned):
    """Markdown for the pinned or the unpinned workloads."""
    chosen = [(w, res) for w, res in results if w.pinned == pinned]
    if not chosen:
        return ""
    lines = ["| workload | loop | throughput (median) | vs uvloop: median (min-max) | MiB/s "
             "| p50 us | p99 us | errors |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    cpu = ["| workload | loop | CPU us/req: process | uvloop's / this | of which kernel "
           "| main (loop) thread | other threads (npaio pollers) | server CPU % of one core "
           "| core 0 busy % | core 1 busy % | steal % (0/1) |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    nstat = ["| workload | loop | completions per drain | loop wake-ups/req "
             "| poller wake-ups/req | poller events/req | spins/req (found I/O %) "
             "| bytes read per poller % |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    skipped = []
    for w, res in chosen:
        summary = summarize(w, res)
        uv_cpu = summary.get("uvloop", {}).get("cpu_proc")
        for v, s in summary.items():
            lines.append(f"| {w.name} | {v} | {_f(s['throughput'])} {s['unit']} | {_ratio(s['ratio'])} "
                         f"| {_f(s['mib_per_s'], '{:,.1f}')} | {_f(s['p50_us'])} "
                         f"| {_f(s['p99_us'])} | {s['errors']} |")
            b, st = s["busy"], s["steal"]
            cpu_ratio = uv_cpu / s["cpu_proc"] if uv_cpu and s["cpu_proc"] else None
            cpu.append(f"| {w.name} | {v} | {_f(s['cpu_proc'], '{:.2f}')} | {_f(cpu_ratio, '{:.2f}')} "
                       f"| {_f(s['cpu_sys'], '{:.2f}')} "
                       f"| {_f(s['cpu_main'], '{:.2f}')} "
                       f"| {_f(s['cpu_others'], '{:.2f}')} | {_f(s['server_pct'], '{:.0f}')} | {_f(b.get(0), '{:.0f}')} "
                       f"| {_f(b.get(1), '{:.0f}')} | {_f(st.get(0), '{:.0f}')}/{_f(st.get(1), '{:.0f}')} |")
            n = s["npaio"]
            if n:
                nstat.append(f"| {w.name} | {v} | {_f(n['completions_per_drain'], '{:.2f}')} "
                             f"| {_f(n['loop_wakeups_per_req'], '{:.3f}')} "
                             f"| {_f(n['poller_wakeups_per_req'], '{:.3f}')} "
                             f"| {_f(n['poller_events_per_req'], '{:.3f}')} "
                             f"| {n['spins_per_req']:.3f} ({n['spin_hit_pct']:.0f}) "
                             f"| {'/'.join(f'{x:.0f}' for x in n['read_share'])} |")
        for v, why in res["skipped"].items():
            skipped.append(f"- {v}: {why}")
    out = ["### Throughput and latency", "", *lines, "",
           "### Server CPU per request and core busy %", "", *cpu, ""]
    if len(nstat) > 2:
        out += ["### npaio loop stats (whole workload, all rounds)", "", *nstat, ""]
    if skipped:
        out += ["Skipped:", "", *sorted(set(skipped)), ""]  # one line per variant and reason
    return "\n".join(out)
