"""``python -m benchmarks``: discover the case plugins, measure, print the table, write JSON + PNG."""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import importlib
import importlib.util
import json
import math
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import harness
from .harness import Case, Progress, Settings, run_case

PACKAGE_DIR = Path(__file__).resolve().parent
RESULTS_DIR = PACKAGE_DIR / "results"
EXPECTED_PLUGINS = ("cases_core", "cases_bayesian", "cases_selection", "cases_streaming",
                    "cases_missing")


# ----------------------------------------------------------------------------- plugins

def discover(quick: bool, directory: Path | None = None,
             package: str = "benchmarks") -> tuple[list[Case], list[str]]:
    """Import every ``cases_*.py`` in ``directory`` (default: this package) and collect
    ``module.cases(quick)``. A module that is absent, fails to import, or whose ``cases`` raises
    or returns something else is skipped with a note; duplicate case names are dropped."""
    directory = Path(directory) if directory is not None else PACKAGE_DIR
    files = sorted(directory.glob("cases_*.py"), key=lambda p: (p.stem != "cases_core", p.stem))
    notes: list[str] = []
    present = {p.stem for p in files}
    if directory == PACKAGE_DIR:
        for name in EXPECTED_PLUGINS:
            if name not in present:
                notes.append(f"plugin {name}.py not present: its cases are skipped")
    cases: list[Case] = []
    names: set[str] = set()
    for path in files:
        mod_name = f"{package}.{path.stem}"
        try:
            if directory == PACKAGE_DIR:
                module = importlib.import_module(mod_name)
            else:
                spec = importlib.util.spec_from_file_location(mod_name, path)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
            found = module.cases(quick)
            found = list(found)
            bad = [c for c in found if not isinstance(c, Case)]
            if bad:
                raise TypeError(f"cases() returned {type(bad[0]).__name__}, not Case")
        except Exception as e:  # noqa: BLE001 - one broken plugin must not stop the suite
            notes.append(f"plugin {path.stem}.py skipped: {type(e).__name__}: {e}")
            continue
        for c in found:
            if c.name in names:
                notes.append(f"{path.stem}: duplicate case name {c.name!r} dropped")
                continue
            names.add(c.name)
            cases.append(c)
    return cases, notes


def select(cases: list[Case], patterns: list[str] | None) -> list[Case]:
    """Cases whose name or group matches any pattern (glob if it has wildcards, else substring)."""
    if not patterns:
        return cases

    def match(c: Case, p: str) -> bool:
        if any(ch in p for ch in "*?["):
            return fnmatch.fnmatch(c.name, p) or fnmatch.fnmatch(c.group, p)
        return p in c.name or p == c.group

    return [c for c in cases if any(match(c, p) for p in patterns)]


# ----------------------------------------------------------------------------- formatting

def fmt_time(t) -> str:
    if t is None or not isinstance(t, (int, float)) or not math.isfinite(t):
        return "-"
    if t < 1e-3:
        return f"{t * 1e6:.0f}µs"
    if t < 1:
        return f"{t * 1e3:.1f}ms"
    return f"{t:.2f}s"


def fmt_num(v, spec=".3g", suffix="") -> str:
    if v is None or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "-"
    return f"{v:{spec}}{suffix}"


def fmt_rate(v, unit) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    for scale, p in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= scale:
            return f"{v / scale:.3g}{p} {unit}/s"
    return f"{v:.3g} {unit}/s"


def _mem(r) -> str:
    if not r or r.get("status") != "ok":
        return "-"
    v = r.get("tracemalloc_peak_mb")
    if v is None:
        v = (r.get("xla_memory") or {}).get("peak_estimate_mb")
    if v is None:
        v = r.get("rss_peak_mb")
    return fmt_num(v, ".0f")


SHOWN_METRICS = {"loglik", "n_iter_run", "loglik_all_fits"}


def _extra_metrics(r) -> str:
    """Case-specific metrics of the main implementation (those the fixed columns don't show)."""
    if not r or r.get("status") != "ok":
        return ""
    items = [(k, v) for k, v in r.get("metrics", {}).items() if k not in SHOWN_METRICS]
    return " ".join(f"{k}={fmt_num(v, '.3g') if isinstance(v, float) else v}" for k, v in items)


def _impl_cell(r) -> str:
    if r is None:
        return "-"
    if r.get("status") == "skipped":
        return "skip"
    if r.get("status") == "error":
        return "error"
    return fmt_time(r.get("time_s"))


def table_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    cases = results["cases"]
    peers: list[str] = []
    for c in cases:
        for name in c.get("impls", {}):
            if name not in (c["main"], c["baseline"]) and name not in peers:
                peers.append(name)
    head = ["case", "gmmjax", "compile", "sklearn", "speedup", "target", "ms/it jx",
            "ms/it sk", "|Δ loglik|", "GFLOP/s", "%matmul", "mem jx MB", "mem sk MB",
            "throughput"] + peers + ["metrics (gmmjax)"]
    rows = []
    for c in cases:
        im = c.get("impls", {})
        jx, sk = im.get(c["main"]), im.get(c["baseline"])
        if c.get("status") != "ok":
            rows.append([c["name"], c.get("status", "?")] + [""] * (len(head) - 2))
            continue
        ok = lambda r: r is not None and r.get("status") == "ok"  # noqa: E731
        sp = c.get("speedup")
        target = c.get("target_speedup")
        met = c.get("target_met")
        tgt = "-" if not target else (f"{target:g}× " + ("n/a" if met is None else
                                                          "ok" if met else "MISS"))
        rows.append([
            c["name"], _impl_cell(jx), fmt_time(jx.get("compile_s")) if ok(jx) else "-",
            _impl_cell(sk) + ("*" if ok(sk) and sk.get("scale", 1) != 1 else ""),
            fmt_num(sp, ".1f", "×"), tgt,
            fmt_num(jx.get("per_iter_s") * 1e3 if ok(jx) and jx.get("per_iter_s") else None,
                    ".3g"),
            fmt_num(sk.get("per_iter_s") * 1e3 if ok(sk) and sk.get("per_iter_s") else None,
                    ".3g"),
            fmt_num(c.get("loglik_abs_diff"), ".1e"),
            fmt_num(jx.get("gflops") if ok(jx) else None, ".3g"),
            fmt_num(100 * jx["frac_of_matmul"] if ok(jx) and jx.get("frac_of_matmul") else None,
                    ".0f", "%"),
            _mem(jx), _mem(sk),
            fmt_rate(jx.get("throughput"), c.get("work_unit", "fits")) if ok(jx) else "-",
        ] + [_impl_cell(im.get(p)) + (f" ({im[p]['speedup_of_main']:.1f}×)"
                                      if ok(im.get(p)) and im[p].get("speedup_of_main") else "")
             for p in peers] + [_extra_metrics(jx)])
    if all(not r[-1] for r in rows if len(r) == len(head)):
        head, rows = head[:-1], [r[:-1] for r in rows]
    return head, rows


def render_table(results: dict, markdown: bool = False) -> str:
    head, rows = table_rows(results)
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = lambda r: "  ".join(str(x).ljust(w) if i == 0 else str(x).rjust(w)  # noqa: E731
                              for i, (x, w) in enumerate(zip(r, widths)))
    return "\n".join([fmt(head), "-" * (sum(widths) + 2 * (len(widths) - 1))]
                     + [fmt(r) for r in rows])


def collect_notes(results: dict) -> list[str]:
    """Run-level notes, case notes, then implementation notes (the same message from several
    cases is shown once, with the count)."""
    notes = list(results.get("notes", []))
    per_impl: dict = {}
    for c in results["cases"]:
        if c.get("note"):
            notes.append(f"{c['name']}: {c['note']}")
        for name, r in c.get("impls", {}).items():
            if r.get("note"):
                per_impl.setdefault((name, r["status"], r["note"]), []).append(c["name"])
    for (name, status, note), where in per_impl.items():
        more = f" (and {len(where) - 1} more)" if len(where) > 1 else ""
        notes.append(f"[{name}] {status} in {where[0]}{more}: {note}")
    return notes


LEGEND = """\
gmmjax / sklearn: best wall time of one call (one fit, one batch of fits, or one scoring pass),
  steady state, after jax.block_until_ready; '*' = extrapolated from a subset (see notes).
compile: first call minus best call (tracing + XLA compile). speedup = sklearn / gmmjax.
ms/it: time per EM iteration (call time / iterations). |Δ loglik|: |final mean log-likelihood
  (lower bound) of gmmjax − sklearn| from the same start. GFLOP/s, %matmul: modelled flops / time,
  and that rate as a share of the same-run matmul rate. mem MB: sklearn = tracemalloc peak of
  NumPy allocations; gmmjax = XLA buffer estimate when measured, else peak RSS growth.
  Peer columns: time (and how many times faster gmmjax is)."""


# ----------------------------------------------------------------------------- main

def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks",
                                 description="gmmjax vs scikit-learn (and peers) on identical work.")
    ap.add_argument("--quick", action="store_true",
                    help="the representative subset (< 3 min on 2 CPU cores)")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for JSON and PNG")
    ap.add_argument("--cases", nargs="+", metavar="PATTERN",
                    help="only cases whose name contains PATTERN, whose group is PATTERN, or "
                         "that match a glob (e.g. 'em-full-*')")
    ap.add_argument("--impls", nargs="+", metavar="NAME",
                    help="only these implementations (e.g. gmmjax sklearn)")
    ap.add_argument("--no-peers", action="store_true", help="only gmmjax and sklearn")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--repeats", type=int, help="max timed calls per implementation")
    ap.add_argument("--min-time", type=float, help="keep repeating a call until this many s")
    ap.add_argument("--max-case-s", type=float,
                    help="skip an implementation whose estimated call time exceeds this")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory call")
    ap.add_argument("--xla-memory", choices=["all", "main", "none"],
                    help="compile an XLA memory analysis (one extra compile) for all JAX "
                         "implementations, only gmmjax ('main', the default in --quick), or none "
                         "(default: all)")
    ap.add_argument("--matmul-n", type=int, help="size of the square matmul rate probe")
    ap.add_argument("--workflows", nargs="*", metavar="NAME",
                    help="time-to-first-result workflows in fresh processes (default: classic in "
                         "--quick, all otherwise; none with --no-workflows)")
    ap.add_argument("--no-workflows", action="store_true", help="skip the workflow section")
    ap.add_argument("--only-workflows", action="store_true", help="skip the speed cases")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--no-save", action="store_true", help="print only; write no files")
    ap.add_argument("--device-check", action="store_true",
                    help="the accelerator's key cases in one short run (see device_check.py)")
    ap.add_argument("--tiny", action="store_true", help="with --device-check: tiny sizes (a test)")
    ap.add_argument("--keep-blas-env", action="store_true",
                    help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (by default the suite restarts "
                         "without them so NumPy/scikit-learn use OpenBLAS's best kernel)")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.device_check:
        from .device_check import run
        return run(args.out, tiny=args.tiny)
    import jax

    from .machine import blas_line, device_info, device_slug, matmul_rate

    info = device_info()
    quick = args.quick
    settings = Settings(
        repeats=args.repeats or (3 if quick else 5),
        min_time=args.min_time if args.min_time is not None else (0.5 if quick else 2.0),
        memory=not args.no_memory,
        memory_max_s=3.0 if quick else 30.0,
        xla_memory=({"none": None}.get(args.xla_memory, args.xla_memory) if args.xla_memory
                    else ("main" if quick else "all")),
        platform=info["platform"],
        max_case_s=args.max_case_s if args.max_case_s is not None else (None if quick else 120.0),
    )
    harness.SETTINGS = settings
    cases, notes = discover(quick)
    cases = [] if args.only_workflows else select(cases, args.cases)
    impl_names = None
    if args.impls:
        impl_names = set(args.impls)
    elif args.no_peers:
        impl_names = {"gmmjax", "sklearn"}
    if args.list:
        for c in cases:
            print(f"{c.name:40s} {c.group:10s} {', '.join(c.impls)}")
        for n in notes:
            print("note:", n)
        return {}

    t_start = time.perf_counter()
    print(f"gmmjax benchmarks{' (quick)' if quick else ''}: {len(cases)} cases on "
          f"{info['platform']}"
          f"{'' if info['device_kind'] == info['platform'] else ' ' + info['device_kind']} "
          f"({info['cpu_model']}, "
          f"{info.get('affinity_cores')} cores), jax {jax.__version__}", file=sys.stderr)
    n_mm = args.matmul_n or (1024 if quick else 2048)
    if info["platform"] != "cpu":
        n_mm = args.matmul_n or 8192
    mm = matmul_rate(n_mm, repeats=3 if quick else 5)
    settings.matmul_gflops = mm["reference_gflops"]
    print(f"matmul rate ({n_mm}×{n_mm} float32): XLA HIGHEST {mm['jax_highest_gflops']:.1f}, "
          f"NumPy {mm['numpy_gflops']:.1f} GFLOP/s"
          + (f", XLA DEFAULT {mm['jax_default_gflops']:.1f}" if "jax_default_gflops" in mm
             else "") + f"; NumPy BLAS: {blas_line(info)}", file=sys.stderr)

    import os
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    results = {
        "meta": {"device": info, "date": date, "quick": quick, "argv": sys.argv[1:],
                 "matmul": mm, "settings": {k: v for k, v in vars(settings).items()},
                 "dtype": "float32",
                 "scipy_array_api": os.environ.get("SCIPY_ARRAY_API"),
                 "timing": "best (min) of repeated calls after a first (compile) call; outputs "
                           "blocked with jax.block_until_ready; compile_s = first − best, "
                           "programs built in a fresh gmmjax cache folder",
                 "memory": "sklearn/NumPy: tracemalloc peak; all: peak RSS growth sampled every "
                           "2 ms in one extra call (psutil); gmmjax: XLA memory_analysis "
                           "(arguments + outputs + temporaries) when xla_memory is on",
                 "flops": "full 4·N·K·D², tied 4·N·D²+6·N·K·D, diag 8·N·K·D, spherical 6·N·K·D "
                          "per EM iteration"},
        "notes": notes,
        "cases": [],
    }
    # compile_s must be a compile: the cases build their programs in a fresh gmmjax cache folder
    # (with the user's, a repeated run would load them, and the prefetch thread would load an
    # earlier run's programs beside the first case). Removed after the cases.
    from gmmjax import compile_cache
    bench_cache = tempfile.mkdtemp(prefix="gmmjax-bench-cache-")
    compile_cache.configure(bench_cache)
    prog = Progress(len(cases))
    for case in cases:
        prog.start(case.name)
        try:
            rec = run_case(case, settings, impl_names, progress=prog.update)
        except Exception as e:  # noqa: BLE001
            rec = {"name": case.name, "group": case.group, "params": case.params,
                   "status": "error", "note": f"{type(e).__name__}: {e}", "impls": {},
                   "main": case.main, "baseline": case.baseline,
                   "traceback": traceback.format_exc(limit=6)}
        results["cases"].append(rec)
        prog.finish_case()
    prog.close()
    compile_cache.configure()
    shutil.rmtree(bench_cache, ignore_errors=True)
    workflow_text = _run_workflows(args, quick, results)
    results["meta"]["total_s"] = time.perf_counter() - t_start
    try:
        with open("/proc/loadavg") as f:
            results["meta"]["loadavg_at_end"] = [float(v) for v in f.read().split()[:3]]
    except OSError:
        pass

    print()
    print(render_table(results))
    print()
    print(LEGEND)
    notes_out = collect_notes(results)
    if notes_out:
        print("\nnotes:")
        for n in notes_out:
            print("  -", n)
    if workflow_text:
        print("\n" + workflow_text)
    load = results["meta"].get("loadavg_at_end")
    busy = ""
    if load and info.get("affinity_cores") and load[0] > 1.5 * info["affinity_cores"]:
        busy = (f"; WARNING: load average {load[0]:.1f} on {info['affinity_cores']} cores: "
                "other processes were running, timings are noisy")
    print(f"\nmatmul reference rate: {mm['reference_gflops']:.1f} GFLOP/s (best of XLA "
          f"{mm['jax_highest_gflops']:.1f}, NumPy {mm['numpy_gflops']:.1f}); NumPy BLAS: "
          f"{blas_line(info)}; "
          f"total {results['meta']['total_s']:.0f} s{busy}")
    if not args.no_save:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        stem = out / f"{device_slug(info)}-{date}{'-quick' if quick else ''}"
        stem.with_suffix(".json").write_text(json.dumps(_clean(results), indent=1, default=_json_default))
        (stem.parent / (stem.name + ".md")).write_text(
            f"matmul reference {mm['reference_gflops']:.1f} GFLOP/s (XLA HIGHEST "
            f"{mm['jax_highest_gflops']:.1f}, NumPy {mm['numpy_gflops']:.1f}); NumPy BLAS: "
            f"{blas_line(info)}{busy}\n\n" +
            render_table(results, markdown=True) + "\n\n" + "\n".join(
                f"- {n}" for n in notes_out) + "\n")
        written = [stem.with_suffix(".json"), stem.parent / (stem.name + ".md")]
        if not args.no_plots:
            try:
                from .plots import make_plots
                written += make_plots(results, stem)
            except Exception as e:  # noqa: BLE001
                print(f"plots failed: {type(e).__name__}: {e}", file=sys.stderr)
        print("wrote " + ", ".join(str(p) for p in written))
    return results


def _run_workflows(args, quick: bool, results: dict) -> str:
    """The time-to-first-result section (benchmarks/workflow.py): fills results["workflows"]
    and results["imports"]; -> its table."""
    if args.no_workflows:
        return ""
    from . import workflow
    names = args.workflows or (["classic"] if quick else sorted(workflow.WORKFLOWS))
    print(f"workflows {', '.join(names)} in fresh processes (first runs compile: minutes)",
          file=sys.stderr)
    try:
        results["workflows"] = workflow.run_workflows(names)
        results["imports"] = workflow.import_times()
    except Exception as e:  # noqa: BLE001
        results["workflows_error"] = f"{type(e).__name__}: {e}"
        return f"workflows failed: {results['workflows_error']}"
    return workflow.render(results["workflows"], results["imports"])


def _clean(o):
    """JSON-safe copy: non-finite floats become null."""
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def _json_default(o):
    try:
        return float(o)
    except (TypeError, ValueError):
        return str(o)
