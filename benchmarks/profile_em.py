"""Where does one EM iteration spend its time? ``python -m benchmarks.profile_em N D K COV``.

Times, each as its own jitted program on the same data (best of several calls, blocked):

* ``fit/iter``: slope of ``gmmjax.fit`` time between ``max_iter=a`` and ``max_iter=b`` (one EM
  iteration inside the while_loop), and ``fit/fixed`` (the intercept: validation, padding, shift,
  dispatch, transfers);
* ``em_step``: one ``gmmjax.em_step`` with the chunk size ``fit`` would pick;
* ``mahalanobis``: the covariance model's (N, K) distances alone;
* ``logsumexp+exp``: responsibilities from an (N, K) array of log probabilities;
* ``scatter``: the M-step statistics (Σ r·x and the type-shaped Σ r (x−c)(x−c)ᵀ) given resp;
* ``m_step params``: covariances, Cholesky and precision factors from the statistics (K·D³);
* ``matmul same flops``: a plain (N, D) × (D, K·D) GEMM, twice (the E+M flop count of full).

Parts run on one chunk of rows (the chunk size ``fit`` picks) and are multiplied by the number
of chunks. They are separate programs, so they do not add up exactly to ``em_step`` (fusion differs); they
show which one dominates. Uses gmmjax internals (``gmmjax.stats``), read-only.

``--kernels`` instead profiles the fit program itself (``jax.profiler.trace``) and lists the XLA
kernels (fusions, GEMMs, library calls) that take the most time per EM iteration, with their
counts: the fused program as it runs, which the separate parts above cannot show (e.g. a tiny
batched GEMM that XLA:CPU lowers to a slow library kernel).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

from .machine import reexec_with_fair_blas

if __name__ == "__main__":   # before NumPy loads (see benchmarks.machine)
    reexec_with_fair_blas("benchmarks.profile_em", sys.argv[1:])

import jax  # noqa: E402
import jax.numpy as jnp
import numpy as np

import gmmjax
from gmmjax.covariance import get_covariance_model
from gmmjax.em import params_from_stats
from gmmjax.rows import auto_chunk_size
from gmmjax.stats import log_resp_and_norm, weighted_log_prob, weighted_resp_stats

from .peers import make_data, make_init

HIGHEST = jax.lax.Precision.HIGHEST


def best_of(fn, *args, repeats: int = 5, min_time: float = 0.5) -> float:
    jax.block_until_ready(fn(*args))
    best, spent, n = float("inf"), 0.0, 0
    while n < repeats and (n < 2 or spent < min_time):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        t = time.perf_counter() - t0
        best, spent, n = min(best, t), spent + t, n + 1
    return best


def profile(n: int, d: int, k: int, cov: str, iters=(2, 6)) -> dict:
    x_np = make_data(n, d, k)
    init = make_init(x_np, k, cov)
    params = init.mixture_params()
    x = jnp.asarray(x_np)
    w = jnp.ones((n,), x.dtype)
    model = get_covariance_model(cov)
    shift = jnp.mean(x, axis=0)
    xs = x - shift
    ps = params.replace(means=params.means - shift)
    chunk = auto_chunk_size(n, k, d)
    out: dict = {"N": n, "D": d, "K": k, "covariance_type": cov, "chunk_size": chunk}

    key = jax.random.key(0)
    ts = {}
    for it in iters:
        ts[it] = best_of(lambda: gmmjax.fit(key, x, k, covariance_type=cov, init=params,
                                            max_iter=it, tol=0.0), repeats=3)
    a, b = iters
    out["fit/iter"] = (ts[b] - ts[a]) / (b - a)
    out["fit/fixed"] = ts[a] - a * out["fit/iter"]

    step = jax.jit(lambda p, xx: gmmjax.em_step(p, xx, chunk_size=chunk))
    out["em_step"] = best_of(step, params, x)

    # the parts run on one chunk (as em_step does) and are scaled by the number of chunks
    n_chunks = 1
    if chunk is not None and chunk < n:
        n_chunks = n / chunk
        xs, w = xs[:chunk], w[:chunk]
    out["parts x chunks"] = n_chunks

    maha = jax.jit(lambda p, xx: model.mahalanobis(xx, p.means, p.precisions_cholesky))
    out["mahalanobis"] = n_chunks * best_of(maha, ps, xs)

    wlp = jax.jit(lambda p, xx: weighted_log_prob(p, xx))(ps, xs)
    lse = jax.jit(lambda a_: jnp.exp(log_resp_and_norm(a_)[0]))
    out["logsumexp+exp"] = n_chunks * best_of(lse, wlp)
    resp = lse(wlp)

    def stats(xx, r, centers):
        return weighted_resp_stats(r.T, jnp.zeros((), xx.dtype), xx, w, centers, cov)

    scat = jax.jit(stats)
    out["scatter"] = n_chunks * best_of(scat, xs, resp, ps.means)
    st = scat(xs, resp, ps.means)
    mstep = jax.jit(lambda s, c: params_from_stats(s, c, cov, 1e-6, shift))
    out["m_step params"] = best_of(mstep, st, ps.means)

    if cov == "full":
        bmat = jnp.asarray(np.random.default_rng(0).standard_normal((d, k * d)), x.dtype)
        mm = jax.jit(lambda a_, b_: jnp.matmul(a_, b_, precision=HIGHEST))
        out["matmul same flops"] = n_chunks * 2 * best_of(mm, xs, bmat)
    return out


# Kernels appear in the trace under their HLO names (lowercase, [\w.-]); other events are the
# runtime's and Python's (CamelCase, "$file:line", "end: ..."), control-flow containers whose time
# includes their kernels, or host-side argument handling.
_HLO_NAME = re.compile(r"[a-z][\w.\-]*")
_NOT_KERNELS = ("while", "cond", "call", "conditional", "shard_args")


def kernel_times(fn, calls: int = 3) -> list[tuple[str, float, float]]:
    """Run ``fn`` (returns JAX arrays) ``calls`` times under ``jax.profiler.trace`` after a warm-up;
    -> (kernel name, seconds per call, executions per call) of every XLA kernel, slowest first."""
    jax.block_until_ready(fn())
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp):
            for _ in range(calls):
                jax.block_until_ready(fn())
        paths = glob.glob(os.path.join(tmp, "**", "*.trace.json.gz"), recursive=True)
        if not paths:
            raise RuntimeError("jax.profiler wrote no trace (is the profiler plugin available?)")
        with gzip.open(paths[0]) as f:
            events = json.load(f)["traceEvents"]
    total, count = collections.Counter(), collections.Counter()
    for e in events:
        name = e.get("name", "")
        if (e.get("ph") != "X" or not _HLO_NAME.fullmatch(name)
                or name.split(".")[0] in _NOT_KERNELS):
            continue
        total[name] += e.get("dur", 0) * 1e-6
        count[name] += 1
    return [(name, t / calls, count[name] / calls) for name, t in total.most_common()]


def kernel_profile(n: int, d: int, k: int, cov: str, n_iter: int = 10, top: int = 15) -> list:
    """:func:`kernel_times` of ``gmmjax.fit`` (``n_iter`` EM iterations from a fixed start) on
    the suite's data; -> the ``top`` kernels as (name, seconds per EM iteration, executions per
    EM iteration)."""
    x_np = make_data(n, d, k)
    params = make_init(x_np, k, cov).mixture_params()
    x = jnp.asarray(x_np)
    key = jax.random.key(0)
    rows = kernel_times(lambda: gmmjax.fit(key, x, k, covariance_type=cov, init=params,
                                           max_iter=n_iter, tol=0.0).params)
    return [(name, t / n_iter, c / n_iter) for name, t, c in rows[:top]]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.profile_em")
    ap.add_argument("n", type=int)
    ap.add_argument("d", type=int)
    ap.add_argument("k", type=int)
    ap.add_argument("cov", nargs="?", default="full")
    ap.add_argument("--kernels", action="store_true",
                    help="the fit program's slowest XLA kernels per EM iteration (jax.profiler)")
    a = ap.parse_args(argv)
    if a.kernels:
        print(f"{'kernel':40s} {'ms/iter':>9s} {'runs/iter':>9s}")
        for name, t, c in kernel_profile(a.n, a.d, a.k, a.cov):
            print(f"{name[:40]:40s} {t * 1e3:9.3f} {c:9.1f}")
        return
    res = profile(a.n, a.d, a.k, a.cov)
    for key, v in res.items():
        timed = isinstance(v, float) and key != "parts x chunks"
        print(f"{key:20s} {v * 1e3:9.2f} ms" if timed else f"{key:20s} {v}")


if __name__ == "__main__":
    main()
