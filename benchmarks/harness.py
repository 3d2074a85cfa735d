"""The benchmark harness: the case-plugin interface, timing, memory, and result records.

A *case* is one piece of work (a fit of given shape, a batch of fits, a scoring pass) done by
several *implementations* ("gmmjax", "sklearn", peers). The harness builds the case's data once
(``setup``, untimed), asks each implementation for a :class:`Run`, and times ``Run.fn``:

* the first call is timed apart: for JAX code it includes tracing and XLA compilation, and
  ``compile_s`` = first call − best steady call;
* then repeated calls until ``min_time`` seconds or ``repeats`` calls; every output goes through
  ``jax.block_until_ready`` before the clock stops; ``time_s`` is the best (minimum) call,
  ``median_s`` the median; all samples are kept; ``cpu_s`` is the process CPU time (all threads)
  of the best call, a check on wall times taken on a busy machine;
* for a non-JAX implementation whose first call takes over ``slow_s`` seconds, that first call is
  a sample too (nothing to compile; saves minutes of sklearn time);
* peak memory: see :func:`measure` and :mod:`benchmarks.machine`.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import statistics
import sys
import time
import traceback
import warnings
from typing import Any, Callable

import jax

from .machine import PeakRSS, TracedPeak


class Skip(Exception):
    """Raised by an implementation factory (or ``setup``) to skip it, with the reason as message."""


@dataclasses.dataclass
class Run:
    """One implementation's prepared work.

    fn: the timed call (no arguments); its output is passed to ``jax.block_until_ready``.
    result: output -> dict of metrics, e.g. ``{"loglik": float}`` (the mean log-likelihood that
      the harness compares across implementations); not timed.
    scale: multiply the measured time by this to get the time of the case's full work (when
      ``fn`` does only a subset, e.g. 100 of 1000 sklearn fits); say so in ``note``.
    jax: True when ``fn`` runs JAX code (first call = compile + run).
    numpy_memory: also trace NumPy allocations with tracemalloc in the memory call.
    memory_analysis: optional () -> dict of XLA memory statistics for the same program (bytes).
    warmup_is_sample: a slow non-JAX first call (instrumented for memory) may count as a timing
      sample; set False for Python-heavy work (many small fits) where tracemalloc slows it.
    note: shown under the table and stored in the JSON.
    """

    fn: Callable[[], Any]
    result: Callable[[Any], dict] | None = None
    scale: float = 1.0
    jax: bool = True
    numpy_memory: bool = False
    memory_analysis: Callable[[], dict] | None = None
    note: str = ""
    warmup_is_sample: bool = True


@dataclasses.dataclass
class Case:
    """One benchmark case. Plugins return a list of these from ``cases(quick: bool)``.

    name: unique id, e.g. ``"em-full-N100000-D2-K8"``; group: what kind of work ("em", "n_init",
    "batch", "score", "bayesian", ...), used for table sections and ``--cases`` filtering.
    params: N, D, K, covariance_type, n_iter ... (shown, stored, used by the plots).
    setup: () -> payload (data, initial parameters...), untimed, called once.
    impls: name -> factory(payload) -> Run. A factory raises :class:`Skip` to skip itself.
    flops: floating-point operations of the full work of one timed call (None if not modelled);
      gives GFLOP/s and the fraction of the same-run matmul rate.
    n_iter: EM iterations per fit in one call (gives time per iteration), or None.
    work: how many fits (or rows, for scoring) one call does; ``throughput`` = work / time.
    work_unit: the unit of ``work`` ("fits", "rows").
    main / baseline: the implementations whose time ratio is the speedup (baseline / main).
    """

    name: str
    group: str
    params: dict
    setup: Callable[[], Any]
    impls: dict
    flops: float | None = None
    n_iter: int | None = None
    work: float = 1.0
    work_unit: str = "fits"
    main: str = "gmmjax"
    baseline: str = "sklearn"
    target_speedup: float | None = None


@dataclasses.dataclass
class Settings:
    repeats: int = 5
    min_time: float = 1.0
    slow_s: float = 1.0
    memory: bool = True
    memory_max_s: float = 5.0       # skip an extra RSS call when one call takes longer
    second_sample_below_s: float = 3.0  # JAX calls shorter than this are timed at least twice
    xla_memory: str | None = "main"  # XLA memory analysis for: "all" impls, the "main" one, None
    matmul_gflops: float | None = None
    platform: str | None = None     # jax's platform ("cpu", "gpu", "tpu")
    max_case_s: float | None = None  # cases estimate their time and skip work above this


SETTINGS = Settings()   # the run's settings; case factories may read them (set by the runner)


def _block(out):
    return jax.block_until_ready(out)


def _timed(fn) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = _block(fn())
    return time.perf_counter() - t0, out


def measure(run: Run, settings: Settings, progress: Callable[[str], None] | None = None,
            is_main: bool = True) -> dict:
    """Time one :class:`Run` as described in the module docstring. Returns its record.

    Memory: a non-JAX run is probed on its first (warm-up) call: tracemalloc peak of NumPy
    allocations and peak RSS growth. A JAX run gets XLA's memory analysis of the same program
    (``Run.memory_analysis``: one extra compile) when ``settings.xla_memory`` asks for it, else
    peak RSS growth in one extra call (allocator reuse makes that a lower bound).
    """
    rec: dict = {"status": "ok"}
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c0 = time.process_time()
        if not run.jax and settings.memory:
            with PeakRSS() as rss:
                if run.numpy_memory:
                    with TracedPeak() as traced:
                        first, out = _timed(run.fn)
                    rec["tracemalloc_peak_mb"] = traced.peak_mb
                else:
                    first, out = _timed(run.fn)
            rec["rss_peak_mb"] = rss.peak_mb
        else:
            first, out = _timed(run.fn)
        first_cpu = time.process_time() - c0
        samples, cpu = [], []
        spent = 0.0
        if not run.jax and run.warmup_is_sample and first > settings.slow_s:
            samples.append(first)
            cpu.append(first_cpu)
            spent = first
        need = 1
        while (len(samples) < need or (len(samples) < settings.repeats
                                       and spent < settings.min_time)):
            if progress:
                progress(f"run {len(samples) + 1}")
            c0 = time.process_time()
            t, out = _timed(run.fn)
            cpu.append(time.process_time() - c0)
            samples.append(t)
            spent += t
            if run.jax and len(samples) == 1 and t < settings.second_sample_below_s:
                need = 2    # the first steady JAX call can still pay one-off costs
        metrics = run.result(out) if run.result else {}
        del out
        best = min(samples)
        rec.update(first_call_s=first, compile_s=max(0.0, first - best) if run.jax else None,
                   samples_s=samples, cpu_s=cpu[samples.index(best)] * run.scale,
                   repeats=len(samples),
                   time_s=best * run.scale, median_s=statistics.median(samples) * run.scale,
                   scale=run.scale, metrics=_floats(metrics))
        want_xla = settings.xla_memory == "all" or (settings.xla_memory == "main" and is_main)
        if run.jax and settings.memory:
            if want_xla and run.memory_analysis is not None:
                if progress:
                    progress("memory (XLA analysis)")
                try:
                    rec["xla_memory"] = run.memory_analysis()
                except Exception as e:  # noqa: BLE001 - optional diagnostics
                    rec["xla_memory_error"] = f"{type(e).__name__}: {e}"
            elif best <= settings.memory_max_s:
                if progress:
                    progress("memory (RSS)")
                gc.collect()
                with PeakRSS() as rss:
                    _block(run.fn())
                rec["rss_peak_mb"] = rss.peak_mb
    if run.note:
        rec["note"] = run.note
    return rec


def _floats(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            out[k] = v
    return out


def run_case(case: Case, settings: Settings, impl_names=None,
             progress: Callable[[str], None] | None = None) -> dict:
    """Set the case up, measure every implementation, derive rates, speedup and agreement."""
    record = {"name": case.name, "group": case.group, "params": dict(case.params),
              "flops": case.flops, "n_iter": case.n_iter, "work": case.work,
              "work_unit": case.work_unit, "main": case.main, "baseline": case.baseline,
              "target_speedup": case.target_speedup, "impls": {}}
    try:
        if progress:
            progress("setup")
        payload = case.setup()
    except Skip as e:
        record["status"] = "skipped"
        record["note"] = str(e)
        return record
    except Exception as e:  # noqa: BLE001 - a broken case must not stop the suite
        record["status"] = "error"
        record["note"] = f"setup failed: {type(e).__name__}: {e}"
        record["traceback"] = traceback.format_exc(limit=4)
        return record
    record["status"] = "ok"
    for name, factory in case.impls.items():
        if impl_names is not None and name not in impl_names:
            continue
        if progress:
            progress(name)
        try:
            run = factory(payload)
            rec = measure(run, settings, (lambda s, n=name: progress(f"{n} {s}")) if progress
                          else None, is_main=name == case.main)
        except Skip as e:
            rec = {"status": "skipped", "note": str(e)}
        except Exception as e:  # noqa: BLE001
            rec = {"status": "error", "note": f"{type(e).__name__}: {e}",
                   "traceback": traceback.format_exc(limit=6)}
        if rec["status"] == "ok":
            t = rec["time_s"]
            if case.n_iter:
                rec["per_iter_s"] = t / case.n_iter
            rec["throughput"] = case.work / t if t > 0 else None
            if case.flops:
                rec["gflops"] = case.flops / t / 1e9 if t > 0 else None
                if settings.matmul_gflops and rec["gflops"] is not None:
                    rec["frac_of_matmul"] = rec["gflops"] / settings.matmul_gflops
        record["impls"][name] = rec
        gc.collect()
    del payload
    _compare(record)
    return record


def _compare(record: dict) -> None:
    impls = record["impls"]
    main, base = impls.get(record["main"]), impls.get(record["baseline"])
    ok = lambda r: r is not None and r.get("status") == "ok"  # noqa: E731
    if ok(main):
        for name, r in impls.items():
            if name != record["main"] and ok(r):
                r["speedup_of_main"] = r["time_s"] / main["time_s"]
                ll_a, ll_b = main["metrics"].get("loglik"), r["metrics"].get("loglik")
                if _finite(ll_a) and _finite(ll_b):
                    r["loglik_abs_diff_vs_main"] = abs(ll_a - ll_b)
    if ok(main) and ok(base):
        record["speedup"] = base["time_s"] / main["time_s"]
        if base.get("cpu_s") and main.get("cpu_s"):
            # process CPU time ratio: a cross-check when other processes share the cores
            record["speedup_cpu"] = base["cpu_s"] / main["cpu_s"]
        ll_a, ll_b = main["metrics"].get("loglik"), base["metrics"].get("loglik")
        if _finite(ll_a) and _finite(ll_b):
            record["loglik_abs_diff"] = abs(ll_a - ll_b)
            record["loglik_rel_diff"] = abs(ll_a - ll_b) / max(abs(ll_b), 1e-30)
        t = record.get("target_speedup")
        if t:
            record["target_met"] = record["speedup"] >= t


def _finite(v) -> bool:
    return isinstance(v, float) and math.isfinite(v)


class Progress:
    """A one-line progress bar on stderr (redrawn in place on a terminal, one line per step
    otherwise)."""

    def __init__(self, total: int, stream=None, width: int = 24):
        self.total, self.done, self.width = total, 0, width
        self.stream = stream or sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.t0 = time.perf_counter()
        self.case = ""

    def start(self, case: str) -> None:
        self.case = case
        self.update("")

    def update(self, what: str) -> None:
        if not self.tty and (" run " in what or " memory" in what):
            return      # in a log, one line per case and implementation is enough
        filled = int(self.width * self.done / max(1, self.total))
        bar = "#" * filled + "." * (self.width - filled)
        line = (f"[{bar}] {self.done}/{self.total} {time.perf_counter() - self.t0:6.1f}s "
                f"{self.case} {what}")
        if self.tty:
            self.stream.write("\r\x1b[2K" + line[:150])
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish_case(self) -> None:
        self.done += 1
        self.update("done")

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
        self.stream.flush()
