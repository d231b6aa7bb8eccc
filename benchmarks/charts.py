"""PNG charts: median throughput and median p99 per loop, one panel per workload,
with min-max whiskers across rounds."""
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

COLORS = {"asyncio": "#888888", "uvloop": "#1f77b4", "npaio": "#d62728", "c-epoll": "#2ca02c"}


def _color(variant):
    return COLORS.get(variant, "#ff7f0e" if variant.startswith("npaio") else "#9467bd")


def _panel(ax, w, result, key):
    names = list(dict.fromkeys(r["variant"] for r in result["runs"]))
    meds, lo, hi = [], [], []
    for v in names:
        xs = sorted(r[key] for r in result["runs"] if r["variant"] == v and r[key] is not None)
        m = xs[len(xs) // 2] if len(xs) % 2 else (sum(xs[len(xs) // 2 - 1:len(xs) // 2 + 1]) / 2
                                                   if xs else 0)
        meds.append(m)
        lo.append(m - xs[0] if xs else 0)
        hi.append(xs[-1] - m if xs else 0)
    ax.bar(range(len(names)), meds, yerr=[lo, hi], capsize=3, color=[_color(v) for v in names])
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
    ax.set_title(w.name, fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:,.0f}"))


def _figure(results, key, ylabel, path):
    n = len(results)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(4 * cols, 7), 3.3 * rows + 0.4), squeeze=False)
    for ax, (w, res) in zip(axes.flat, results):
        _panel(ax, w, res, key)
        unit = res["runs"][0]["unit"] if key == "throughput" and res["runs"] else "us"
        ax.set_ylabel(unit if key == "throughput" else ylabel, fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(f"{ylabel} per loop\n(median; whiskers: min-max over rounds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(results, outdir):
    os.makedirs(outdir, exist_ok=True)
    results = [(w, r) for w, r in results if r["runs"]]
    paths = [os.path.join(outdir, "throughput.png"), os.path.join(outdir, "p99.png")]
    _figure(results, "throughput", "throughput", paths[0])
    _figure(results, "p99_us", "p99 latency (us)", paths[1])
    return paths
