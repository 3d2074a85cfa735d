"""PNG plots of a results JSON: time per EM iteration vs N, and speedup per case."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf"]
MARKERS = {"sklearn": "o", "gmmx": "s", "sklearn-torch": "^"}


def _ok(r) -> bool:
    return r is not None and r.get("status") == "ok" and r.get("time_s")


def plot_time_vs_n(results: dict, path: Path) -> Path | None:
    """One panel per covariance type: time per EM iteration vs N (log-log), gmmjax solid,
    scikit-learn dashed, one colour per (D, K)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict = defaultdict(lambda: defaultdict(list))
    for c in results["cases"]:
        if c.get("group") != "em" or c.get("status") != "ok":
            continue
        p = c["params"]
        for impl in ("gmmjax", "sklearn"):
            r = c["impls"].get(impl)
            if _ok(r) and r.get("per_iter_s"):
                series[p["covariance_type"]][(p["D"], p["K"], impl)].append(
                    (p["N"], r["per_iter_s"]))
    if not series:
        return None
    covs = [t for t in ("full", "tied", "diag", "spherical") if t in series]
    fig, axes = plt.subplots(1, len(covs), figsize=(4.2 * len(covs), 3.8), squeeze=False)
    for ax, cov in zip(axes[0], covs):
        dks = sorted({(d, k) for (d, k, _) in series[cov]})
        for i, (d, k) in enumerate(dks):
            color = COLORS[i % len(COLORS)]
            for impl, style, marker in (("gmmjax", "-", "o"), ("sklearn", "--", "x")):
                pts = sorted(series[cov].get((d, k, impl), []))
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker=marker,
                            ms=5, color=color, label=f"D={d} K={k} {impl}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{cov} covariance")
        ax.set_xlabel("N (rows)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    axes[0][0].set_ylabel("seconds per EM iteration\n(solid o: gmmjax, dashed x: sklearn)")
    fig.suptitle(_title(results), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_speedup(results: dict, path: Path) -> Path | None:
    """Horizontal bars: how many times faster gmmjax is than scikit-learn per case (log scale);
    peers as markers; the issue's targets as ticks."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [c for c in results["cases"] if c.get("status") == "ok" and c.get("speedup")]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(9.5, 0.32 * len(rows) + 1.6))
    ys = list(range(len(rows)))[::-1]
    ax.barh(ys, [c["speedup"] for c in rows], color="#1f77b4", alpha=0.8,
            label="vs sklearn (bar)")
    seen = set()
    for y, c in zip(ys, rows):
        if c.get("target_speedup"):
            ax.plot([c["target_speedup"]] * 2, [y - 0.4, y + 0.4], color="k", lw=2,
                    label="target" if "target" not in seen else None)
            seen.add("target")
        for name, r in c["impls"].items():
            if name in (c["main"], c["baseline"]) or not _ok(r) or not r.get("speedup_of_main"):
                continue
            ax.plot(r["speedup_of_main"], y, MARKERS.get(name, "D"), color="#d62728",
                    label=f"vs {name}" if name not in seen else None)
            seen.add(name)
        ax.text(c["speedup"] * 1.08, y + 0.25, f"{c['speedup']:.1f}×", va="center", fontsize=7)
    ax.set_yticks(ys)
    ax.set_yticklabels([c["name"] for c in rows], fontsize=7)
    ax.set_xscale("log")
    ax.axvline(1.0, color="gray", lw=1)
    lo = min([c["speedup"] for c in rows] + [1.0])
    hi = max([c["speedup"] for c in rows] + [c.get("target_speedup") or 1 for c in rows])
    ax.set_xlim(max(lo / 2, 1e-3), hi * 3)
    ax.set_xlabel("speedup of gmmjax (time of other / time of gmmjax, same work)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(_title(results), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _title(results: dict) -> str:
    m = results.get("meta", {})
    dev = m.get("device", {})
    mm = m.get("matmul", {}).get("reference_gflops")
    mm_s = f", matmul {mm:.0f} GFLOP/s" if mm and math.isfinite(mm) else ""
    mode = " (quick)" if m.get("quick") else ""
    kind = dev.get("device_kind", "")
    kind = "" if kind == dev.get("platform") else f" {kind}"
    return (f"gmmjax vs scikit-learn{mode}: {dev.get('platform', '?')}{kind}"
            f" [{dev.get('cpu_model', '')}, {dev.get('affinity_cores', '?')} cores]{mm_s}, "
            f"float32, {m.get('date', '')}")


def make_plots(results: dict, stem: Path) -> list[Path]:
    out = []
    for suffix, fn in (("time_vs_n", plot_time_vs_n), ("speedup", plot_speedup)):
        p = fn(results, stem.with_name(f"{stem.name}-{suffix}.png"))
        if p is not None:
            out.append(p)
    return out


def main(argv=None) -> None:
    import argparse
    ap = argparse.ArgumentParser(description="Re-draw the plots of a results JSON.")
    ap.add_argument("json", type=Path)
    a = ap.parse_args(argv)
    results = json.loads(a.json.read_text())
    for p in make_plots(results, a.json.with_suffix("")):
        print(p)


if __name__ == "__main__":
    main()
