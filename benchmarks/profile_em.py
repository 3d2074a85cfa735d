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
"""

from __future__ import annotations

import argparse
import sys
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
from gmmjax.stats import SuffStats, log_resp_and_norm, weighted_log_prob

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
        nk = jnp.sum(r, axis=0)
        sx = jnp.matmul(r.T, xx, precision=HIGHEST) - nk[:, None] * centers
        return SuffStats(nk, sx, model.scatter(xx, r, centers), jnp.zeros(()), jnp.sum(w))

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


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.profile_em")
    ap.add_argument("n", type=int)
    ap.add_argument("d", type=int)
    ap.add_argument("k", type=int)
    ap.add_argument("cov", nargs="?", default="full")
    a = ap.parse_args(argv)
    res = profile(a.n, a.d, a.k, a.cov)
    for key, v in res.items():
        timed = isinstance(v, float) and key != "parts x chunks"
        print(f"{key:20s} {v * 1e3:9.2f} ms" if timed else f"{key:20s} {v}")


if __name__ == "__main__":
    main()
