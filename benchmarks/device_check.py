"""``python -m benchmarks --device-check [--out DIR] [--tiny]``: the accelerator grid's key cases
in one short run (a few minutes on one H100/H200), for whoever is lent a device.

Cases (``--tiny`` shrinks every size so a test runs it on CPU in seconds):

* ``em-full`` N=1M D=64 K=64: time per EM iteration against the same-FLOP matmuls (one
  (N, D)×(D, K·D) GEMM for the E-step, the same again for the M-step), scikit-learn on the host
  CPU and scikit-learn's array API on torch on the same GPU (when torch is installed);
* ``chunked`` N=10M D=64 K=64 with row chunks: device memory (XLA's analysis of the program and
  the device's peak bytes in use) and time per iteration;
* ``estep`` K=1024 D=128 N=1M: one E-step (``gmmjax.log_prob``: the Mahalanobis GEMMs and the
  log-sum-exp) and one full EM step;
* ``batch`` 1,000 independent fits (400×2, K=2) in one vmapped program, and ``n_init`` = 10;
* matmul precision: gmmjax's statistics run at ``Precision.HIGHEST`` (full float32). The run
  reports the GEMM rate at HIGHEST, HIGH (bf16_3x on TPU, TF32 on some GPUs) and DEFAULT (TF32 /
  one bf16 pass), and evaluates the full-covariance E-step log-likelihood at each precision.

How a ``precision=`` option would be judged (not offered by the core yet): a faster precision
is worth offering only if (1) its E-step is clearly faster here (``precision`` section: time vs
HIGHEST) and (2) the mean log-likelihood stays within 1e-4 relative of HIGHEST, first in this
E-step check and then after full fits run at that precision on these data and on offset data.

Writes ``<device>-<date>-device-check.json`` / ``.md`` / ``.png`` under ``--out``.
"""

from __future__ import annotations

import datetime
import functools
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import gmmjax

from . import harness
from .harness import Case, Run, Settings, run_case
from .peers import Init, gmmjax_fit, make_init, sklearn_fit, sklearn_torch_fit

FULL = dict(em=(1_000_000, 64, 64, 10), chunked=(10_000_000, 64, 64, 3, 65_536),
            estep=(1_000_000, 128, 1024), batch=(1000, 400, 2, 2, 10, 50),
            n_init=(100_000, 16, 16, 10, 10), matmul_n=8192, sklearn_iter=3)
TINY = dict(em=(4096, 8, 4, 3), chunked=(8192, 4, 3, 2, 1024), estep=(2048, 8, 16),
            batch=(8, 60, 2, 2, 3, 4), n_init=(1000, 2, 3, 3, 3), matmul_n=128, sklearn_iter=2)
PRECISIONS = {"highest": jax.lax.Precision.HIGHEST, "high": jax.lax.Precision.HIGH,
              "default": jax.lax.Precision.DEFAULT}
JUDGE = ("A precision= option would be offered only if a faster precision keeps the mean "
         "log-likelihood within 1e-4 relative of HIGHEST (this E-step check first, then full "
         "fits at that precision, including offset data) and is clearly faster here.")


# ----------------------------------------------------------------------------- data

@functools.partial(jax.jit, static_argnames=("n_rows",))
def _mixture_rows(key, centres, scales, mix, n_rows):
    lab_key, z_key = jax.random.split(key)
    labels = jax.random.randint(lab_key, (n_rows,), 0, centres.shape[0])
    z = jax.random.normal(z_key, (n_rows,) + centres.shape[1:], centres.dtype)
    return centres[labels] + scales[labels, None] * jnp.matmul(
        z, mix, precision=jax.lax.Precision.HIGHEST)


def device_data(n: int, d: int, k: int, seed: int = 0, block: int = 1 << 20) -> jax.Array:
    """(n, d) float32 rows of a k-component Gaussian mixture, drawn on the device in blocks."""
    rng = np.random.default_rng(seed)
    centres = jnp.asarray(rng.normal(scale=4.0, size=(k, d)), jnp.float32)
    scales = jnp.asarray(rng.uniform(0.5, 1.5, size=k), jnp.float32)
    mix = jnp.asarray(np.eye(d) + rng.normal(size=(d, d)) * 0.3 / np.sqrt(d), jnp.float32)
    key = jax.random.key(seed)
    parts = [_mixture_rows(jax.random.fold_in(key, i), centres, scales, mix, min(block, n - s))
             for i, s in enumerate(range(0, n, block))]
    return jnp.concatenate(parts) if len(parts) > 1 else parts[0]


def shared_init(x: jax.Array, k: int, cov: str = "full", seed: int = 1) -> Init:
    """The suite's shared start, from a host subsample of the device rows."""
    sub = np.asarray(x[: min(x.shape[0], max(20_000, 40 * k))])
    return make_init(sub, k, cov, seed)


# ----------------------------------------------------------------------------- timing helpers

def _best(fn, repeats: int = 3) -> float:
    jax.block_until_ready(fn())
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return best


def _rows_in_blocks(x: jax.Array, rows: int):
    n = x.shape[0] - x.shape[0] % rows if x.shape[0] >= rows else x.shape[0]
    rows = min(rows, n)
    return x[:n].reshape(n // rows, rows, x.shape[1])


def same_flop_matmul_s(x: jax.Array, k: int, precision=jax.lax.Precision.HIGHEST,
                       rows: int = 1 << 16) -> float:
    """Seconds for the FLOPs of one full-covariance EM iteration done as plain GEMMs: twice
    (N, D)×(D, K·D), in row blocks (reduced on the fly, like the EM kernel's chunks)."""
    d = x.shape[1]
    b = jax.random.normal(jax.random.key(3), (d, k * d), x.dtype)
    blocks = _rows_in_blocks(x, rows)
    f = jax.jit(lambda xb: jnp.sum(jax.lax.map(
        lambda c: jnp.sum(jnp.matmul(c, b, precision=precision)), xb)))
    return 2.0 * _best(lambda: f(blocks)) * x.shape[0] / (blocks.shape[0] * blocks.shape[1])


def full_estep_loglik(params: gmmjax.MixtureParams, x: jax.Array, precision,
                      rows: int = 1 << 14) -> jax.Array:
    """Mean log-likelihood of a full-covariance mixture with its GEMMs at ``precision`` (the
    E-step arithmetic, written out here so the core needs no precision option)."""
    u = params.precisions_cholesky
    shift = jnp.mean(params.means, axis=0)
    mu = jnp.einsum("ke,ked->kd", params.means - shift, u, precision=precision)
    log_det = jnp.sum(jnp.log(jnp.diagonal(u, axis1=-2, axis2=-1)), axis=-1)
    const = jnp.log(params.weights) + log_det - 0.5 * x.shape[1] * jnp.log(2 * jnp.pi)

    def block(c):
        y = jnp.einsum("ne,ked->nkd", c - shift, u, precision=precision) - mu
        return jnp.sum(jax.nn.logsumexp(const - 0.5 * jnp.sum(y * y, axis=-1), axis=1))

    blocks = _rows_in_blocks(x, rows)
    return jnp.sum(jax.lax.map(block, blocks)) / (blocks.shape[0] * blocks.shape[1])


def precision_study(params: gmmjax.MixtureParams, x: jax.Array) -> dict:
    """E-step log-likelihood and time at each matmul precision, relative to HIGHEST."""
    out = {}
    for name, prec in PRECISIONS.items():
        f = jax.jit(lambda p, xx, pr=prec: full_estep_loglik(p, xx, pr))
        ll = float(f(params, x))
        out[name] = {"loglik": ll, "time_s": _best(lambda: f(params, x))}
    ref = out["highest"]
    for r in out.values():
        r["rel_diff_vs_highest"] = abs(r["loglik"] - ref["loglik"]) / max(abs(ref["loglik"]), 1e-30)
        r["speedup_vs_highest"] = ref["time_s"] / r["time_s"]
        r["within_1e-4"] = r["rel_diff_vs_highest"] <= 1e-4
    return out


def device_memory() -> dict:
    """The device's allocator statistics (GPU/TPU; empty on CPU)."""
    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # noqa: BLE001 - not every backend has them
        stats = {}
    return {k: int(v) for k, v in stats.items()
            if k in ("bytes_in_use", "peak_bytes_in_use", "bytes_limit")}


# ----------------------------------------------------------------------------- cases

def _em_flops(n, d, k):
    return 4.0 * n * k * d * d


def em_case(n, d, k, n_iter, sk_iter, name="em", chunk=None, peers=True) -> Case:
    def setup():
        x = device_data(n, d, min(k, 64))
        return x, shared_init(x, k)

    def sk(p, fn):
        it = min(n_iter, sk_iter)
        run = fn(np.asarray(p[0]), k, p[1], it, "full")
        run.scale = n_iter / it     # per-iteration times compare; scaled to n_iter iterations
        if it != n_iter:
            run.note = (run.note + "; " if run.note else "") + (
                f"{it} iterations timed, scaled to {n_iter}")
        return run

    impls = {"gmmjax": lambda p: gmmjax_fit(p[0], k, p[1], n_iter, "full", chunk_size=chunk)}
    if peers:
        impls["sklearn"] = lambda p: sk(p, sklearn_fit)
        impls["sklearn-torch"] = lambda p: sk(p, sklearn_torch_fit)
    return Case(name=f"{name}-full-N{n}-D{d}-K{k}", group="em",
                params=dict(N=n, D=d, K=k, covariance_type="full", n_iter=n_iter,
                            chunk_size=chunk),
                setup=setup, impls=impls, flops=n_iter * _em_flops(n, d, k), n_iter=n_iter)


def estep_case(n, d, k) -> Case:
    def setup():
        x = device_data(n, d, 64)
        return x, shared_init(x, k).mixture_params()

    def scoring(p):
        return Run(lambda: gmmjax.log_prob(p[1], p[0]), result=lambda v: {"loglik": jnp.mean(v)},
                   note="E-step = gmmjax.log_prob (Mahalanobis GEMMs + log-sum-exp, chunked)")

    def step(p):
        from gmmjax.rows import auto_chunk_size
        chunk = auto_chunk_size(n, k, d)
        f = jax.jit(lambda pp, xx: gmmjax.em_step(pp, xx, chunk_size=chunk))
        return Run(lambda: f(p[1], p[0]), result=lambda r: {"loglik": r[1]},
                   note=f"one E+M step (em_step, chunk_size={chunk})")

    return Case(name=f"estep-full-N{n}-D{d}-K{k}", group="estep",
                params=dict(N=n, D=d, K=k, covariance_type="full"), setup=setup,
                impls={"gmmjax": scoring, "em_step": step},
                flops=2.0 * n * k * d * d, work=n, work_unit="rows")


def device_cases(s: dict) -> list[Case]:
    from .cases_core import batch_case, n_init_case
    n, d, k, it = s["em"]
    cn, cd, ck, cit, chunk = s["chunked"]
    b_fits, b_n, b_d, b_k, b_it, b_sub = s["batch"]
    i_n, i_d, i_k, i_init, i_it = s["n_init"]
    return [em_case(n, d, k, it, s["sklearn_iter"]),
            em_case(cn, cd, ck, cit, s["sklearn_iter"], name="chunked", chunk=chunk, peers=False),
            estep_case(*s["estep"]),
            batch_case(b_fits, b_n, b_d, b_k, "full", b_it, sklearn_subset=b_sub),
            n_init_case(i_n, i_d, i_k, "full", i_init, i_it)]


# ----------------------------------------------------------------------------- run and report

def run(out: Path, tiny: bool = False, quiet: bool = False) -> dict:
    """Measure the device check, print the summary, write JSON + markdown + PNG under ``out``."""
    from .machine import blas_line, device_info, device_slug, matmul_rate
    from .runner import _clean, _json_default, collect_notes, render_table

    sizes = TINY if tiny else FULL
    info = device_info()
    t_start = time.perf_counter()
    log = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    log(f"device check{' (tiny)' if tiny else ''} on {info['platform']} {info['device_kind']}")
    mm = matmul_rate(sizes["matmul_n"], repeats=3, precisions=PRECISIONS)
    log("matmul GFLOP/s: " + ", ".join(f"{p} {mm[f'jax_{p}_gflops']:.0f}" for p in PRECISIONS)
        + f", NumPy (host) {mm['numpy_gflops']:.0f}")
    harness.SETTINGS = settings = Settings(
        repeats=1 if tiny else 3, min_time=0.0, memory=not tiny, memory_max_s=2.0,
        xla_memory=None if tiny else "main", platform=info["platform"],
        matmul_gflops=mm["jax_highest_gflops"])
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    results = {"meta": {"device": info, "date": date, "tiny": tiny, "sizes": sizes,
                        "matmul": mm, "dtype": "float32", "kind": "device-check",
                        "precision": "gmmjax statistics use Precision.HIGHEST (full float32); "
                                     "%matmul is against the HIGHEST GEMM rate",
                        "judge_precision": JUDGE},
               "notes": [], "cases": [], "extra": {}}
    for case in device_cases(sizes):
        log(f"[{time.perf_counter() - t_start:6.1f}s] {case.name}")
        before = device_memory()
        rec = run_case(case, settings)
        rec["device_memory"] = {"before": before, "after": device_memory()}
        results["cases"].append(rec)

    em_rec = results["cases"][0]
    x = device_data(*sizes["em"][:2], min(sizes["em"][2], 64))
    init = shared_init(x, sizes["em"][2]).mixture_params()
    mm_iter = same_flop_matmul_s(x, sizes["em"][2])
    jx = em_rec["impls"].get("gmmjax", {})
    results["extra"]["same_flop_matmul"] = {
        "seconds_per_iteration": mm_iter,
        "gmmjax_per_iteration_s": jx.get("per_iter_s"),
        "matmul_over_gmmjax": (mm_iter / jx["per_iter_s"]) if jx.get("per_iter_s") else None}
    log(f"[{time.perf_counter() - t_start:6.1f}s] precision study")
    results["extra"]["precision"] = precision_study(init, x)
    del x
    results["meta"]["total_s"] = time.perf_counter() - t_start
    results["notes"] = collect_notes(results)

    text = report(results, render_table(results, markdown=True), blas_line(info))
    if not quiet:
        print(text)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{device_slug(info)}-{date}-device-check"
    stem.with_suffix(".json").write_text(json.dumps(_clean(results), indent=1,
                                                    default=_json_default))
    (stem.parent / (stem.name + ".md")).write_text(text + "\n")
    written = [stem.with_suffix(".json"), stem.parent / (stem.name + ".md")]
    try:
        written.append(plot(results, stem.parent / (stem.name + ".png")))
    except Exception as e:  # noqa: BLE001 - plots are optional
        log(f"plot failed: {type(e).__name__}: {e}")
    log("wrote " + ", ".join(str(p) for p in written))
    return results


def report(results: dict, table: str, blas: str) -> str:
    m = results["meta"]
    mm = m["matmul"]
    ex = results["extra"]
    sf = ex["same_flop_matmul"]
    lines = [f"# gmmjax device check: {m['device']['platform']} {m['device']['device_kind']}"
             f"{' (tiny sizes)' if m['tiny'] else ''}, {m['date']}", "",
             f"Matmul precision: {m['precision']}.",
             f"GEMM rate ({mm['n']}² float32): " + ", ".join(
                 f"{p.upper()} {mm[f'jax_{p}_gflops']:.0f}" for p in PRECISIONS)
             + f" GFLOP/s; host NumPy {mm['numpy_gflops']:.0f} GFLOP/s ({blas}).", "",
             table, ""]
    if sf.get("matmul_over_gmmjax"):
        lines.append(f"EM iteration (full, {results['cases'][0]['name']}): gmmjax "
                     f"{sf['gmmjax_per_iteration_s'] * 1e3:.2f} ms vs same-FLOP matmuls "
                     f"{sf['seconds_per_iteration'] * 1e3:.2f} ms: "
                     f"{100 * sf['matmul_over_gmmjax']:.0f}% of the matmul speed.")
    for c in results["cases"]:
        dm = c.get("device_memory", {})
        xm = (c.get("impls", {}).get(c.get("main"), {}) or {}).get("xla_memory") or {}
        peak = dm.get("after", {}).get("peak_bytes_in_use")
        if peak or xm.get("peak_estimate_mb"):
            lines.append(f"Memory {c['name']}: XLA estimate "
                         f"{xm.get('peak_estimate_mb', float('nan')):.0f} MB"
                         + (f"; device peak so far {peak / 2 ** 20:.0f} MB" if peak else "") + ".")
    lines += ["", "Precision (full E-step log-likelihood vs HIGHEST):", ""]
    lines += ["| precision | mean loglik | rel. diff | time | speedup |", "|---|---|---|---|---|"]
    for p, r in ex["precision"].items():
        lines.append(f"| {p} | {r['loglik']:.6f} | {r['rel_diff_vs_highest']:.1e} | "
                     f"{r['time_s'] * 1e3:.2f} ms | {r['speedup_vs_highest']:.2f}× |")
    lines += ["", m["judge_precision"]]
    if results["notes"]:
        lines += ["", "Notes:"] + [f"- {n}" for n in results["notes"]]
    lines.append(f"\nTotal {m['total_s']:.0f} s.")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> Path:
    """Bars: seconds per call of every case and implementation (log scale)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, values = [], []
    for c in results["cases"]:
        for name, r in c.get("impls", {}).items():
            if r.get("status") == "ok" and r.get("time_s"):
                labels.append(f"{c['name']}\n{name}")
                values.append(r["time_s"])
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(values)), 4.5))
    ax.bar(range(len(values)), values, color="#1f77b4")
    ax.set_yscale("log")
    ax.set_ylabel("seconds per call")
    ax.set_xticks(range(len(values)), labels, rotation=70, ha="right", fontsize=7)
    dev = results["meta"]["device"]
    ax.set_title(f"gmmjax device check: {dev['platform']} {dev['device_kind']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
