"""Core cases: EM fits (the N × D × K × covariance grid), n_init restarts, 1000 independent small
fits under ``jax.vmap``, and ``score_samples`` throughput.

FLOP model of one EM iteration (E-step Mahalanobis GEMMs + M-step scatter), used for the achieved
rate: full 4·N·K·D²; tied 4·N·D² + 6·N·K·D; diag 8·N·K·D; spherical 6·N·K·D. Only the full model
is GEMM-dominated; for the others exp/log over the N×K responsibilities dominate.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np

import gmmjax

from . import harness
from .harness import Case, Run, Skip
from .peers import (REG_COVAR, gmmjax_fit, gmmx_fit, make_data, make_init, sklearn_fit,
                    sklearn_restarts, sklearn_torch_fit, stack_inits)

COV_TYPES = ("full", "tied", "diag", "spherical")


def em_flops(n: int, d: int, k: int, covariance_type: str) -> float:
    """Modelled flops of one EM iteration (see the module docstring)."""
    return {"full": 4.0 * n * k * d * d,
            "tied": 4.0 * n * d * d + 6.0 * n * k * d,
            "diag": 8.0 * n * k * d,
            "spherical": 6.0 * n * k * d}[covariance_type]


def estimate_seconds(impl: str, n: int, d: int, k: int, covariance_type: str, n_iter: int) -> float:
    """Rough run time, to skip work too big for this machine within ``--max-case-s``.

    sklearn ≈ 10% of the matmul rate plus ~20 ns per (row, component) per iteration (exp/log in
    NumPy); gmmjax ≈ 30% of the rate plus ~3 ns (CPU) per (row, component).
    """
    rate = (harness.SETTINGS.matmul_gflops or 50.0) * 1e9
    gpu = harness.SETTINGS.platform not in (None, "cpu")
    frac, per_elem = {"sklearn": (0.1, 20e-9), "gmmjax": (0.3, 0.05e-9 if gpu else 3e-9)}.get(
        impl, (0.1, 20e-9))
    return n_iter * (em_flops(n, d, k, covariance_type) / (frac * rate) + n * k * per_elem)


def _capped(impl: str, factory, n, d, k, cov, n_iter):
    """Wrap a factory so it skips itself when its estimated time exceeds ``--max-case-s``."""

    @functools.wraps(factory)
    def wrapped(payload):
        cap = harness.SETTINGS.max_case_s
        est = estimate_seconds(impl, n, d, k, cov, n_iter)
        if cap and est > cap:
            raise Skip(f"{impl}: estimated {est:.0f} s per call > --max-case-s {cap:.0f}")
        return factory(payload)

    return wrapped


PEERS = ("gmmx", "sklearn-torch")


def em_case(n: int, d: int, k: int, cov: str, n_iter: int, *, peers=PEERS,
            target: float | None = None, seed: int = 0) -> Case:
    """n_iter EM iterations of a K-component mixture on N×D float32 data, identical start.
    ``peers``: which peer columns to add (True: all, False: none)."""

    def setup():
        x = make_data(n, d, k, seed)
        return x, make_init(x, k, cov, seed + 1)

    impls = {
        "gmmjax": lambda p: gmmjax_fit(p[0], k, p[1], n_iter, cov),
        "sklearn": lambda p: sklearn_fit(p[0], k, p[1], n_iter, cov),
    }
    peers = PEERS if peers is True else (peers or ())
    if "gmmx" in peers:
        impls["gmmx"] = lambda p: gmmx_fit(p[0], k, p[1], n_iter, cov)
    if "sklearn-torch" in peers:
        impls["sklearn-torch"] = lambda p: sklearn_torch_fit(p[0], k, p[1], n_iter, cov)
    impls = {name: _capped("gmmjax" if name == "gmmjax" else "sklearn", f, n, d, k, cov, n_iter)
             for name, f in impls.items()}
    return Case(name=f"em-{cov}-N{n}-D{d}-K{k}", group="em",
                params=dict(N=n, D=d, K=k, covariance_type=cov, n_iter=n_iter, n_init=1),
                setup=setup, impls=impls, flops=n_iter * em_flops(n, d, k, cov), n_iter=n_iter,
                target_speedup=target)


def n_init_case(n: int, d: int, k: int, cov: str, n_init: int, n_iter: int,
                target: float | None = None) -> Case:
    """n_init restarts from n_init different starts, best kept: one vmapped gmmjax program vs a
    loop of sklearn fits."""

    def setup():
        x = make_data(n, d, k, 3)
        return x, [make_init(x, k, cov, 100 + i) for i in range(n_init)]

    return Case(
        name=f"n_init{n_init}-{cov}-N{n}-D{d}-K{k}", group="n_init",
        params=dict(N=n, D=d, K=k, covariance_type=cov, n_iter=n_iter, n_init=n_init),
        setup=setup,
        impls={"gmmjax": lambda p: gmmjax_fit(p[0], k, stack_inits(p[1]), n_iter, cov,
                                              n_init=n_init),
               "sklearn": lambda p: sklearn_restarts(p[0], k, p[1], n_iter, cov)},
        flops=n_init * n_iter * em_flops(n, d, k, cov), n_iter=n_iter * n_init,
        target_speedup=target)


def batch_case(n_fits: int, n: int, d: int, k: int, cov: str, n_iter: int,
               sklearn_subset: int | None = None, target: float | None = None) -> Case:
    """n_fits independent fits of n×d data: ``jax.jit(jax.vmap(gmmjax.fit))`` vs a loop of
    sklearn fits (in quick mode on ``sklearn_subset`` fits, the time scaled up)."""

    def setup():
        rng = np.random.default_rng(7)
        xs, inits = [], []
        for i in range(n_fits):
            centres = rng.normal(scale=3.0, size=(k, d))
            lab = rng.integers(0, k, size=n)
            x = (centres[lab] + rng.standard_normal((n, d))).astype(np.float32)
            xs.append(x)
            inits.append(make_init(x, k, cov, 1000 + i))
        return np.stack(xs), inits

    def jax_impl(p):
        xs, inits = p
        xd = jnp.asarray(xs)
        params = stack_inits(inits)
        keys = jax.random.split(jax.random.key(0), n_fits)
        fit = jax.jit(jax.vmap(lambda kk, x, pp: gmmjax.fit(
            kk, x, k, covariance_type=cov, init=pp, max_iter=n_iter, tol=0.0,
            reg_covar=REG_COVAR)))
        m = min(sklearn_subset or n_fits, n_fits)

        def memory_analysis():
            from .peers import _xla_memory
            return _xla_memory(fit.lower(keys, xd, params).compile())

        # loglik: mean final bound over the fits sklearn runs (the first m), for agreement
        return Run(lambda: fit(keys, xd, params),
                   result=lambda r: {"loglik": jnp.mean(r.lower_bound[:m]),
                                     "loglik_all_fits": jnp.mean(r.lower_bound)}, jax=True,
                   memory_analysis=memory_analysis,
                   note="gmmjax: jax.jit(jax.vmap(gmmjax.fit)) over all fits at once")

    def sk_impl(p):
        xs, inits = p
        m = n_fits if not sklearn_subset else min(sklearn_subset, n_fits)
        import warnings

        from sklearn.mixture import GaussianMixture

        def fn():
            lbs = []
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for i in range(m):
                    ini = inits[i]
                    g = GaussianMixture(k, covariance_type=cov, tol=0.0, reg_covar=REG_COVAR,
                                        max_iter=n_iter, weights_init=ini.weights,
                                        means_init=ini.means,
                                        precisions_init=ini.precisions).fit(xs[i])
                    lbs.append(g.lower_bound_)
            return np.asarray(lbs)

        note = "" if m == n_fits else (f"sklearn: timed on the first {m} of {n_fits} fits and "
                                       f"scaled ×{n_fits / m:g} (extrapolated)")
        return Run(fn, result=lambda lbs: {"loglik": np.mean(lbs)}, scale=n_fits / m,
                   jax=False, numpy_memory=True, note=note, warmup_is_sample=False)

    return Case(name=f"batch{n_fits}-{cov}-N{n}-D{d}-K{k}", group="batch",
                params=dict(N=n, D=d, K=k, covariance_type=cov, n_iter=n_iter, n_fits=n_fits,
                            sklearn_subset=sklearn_subset),
                setup=setup, impls={"gmmjax": jax_impl, "sklearn": sk_impl},
                flops=n_fits * n_iter * em_flops(n, d, k, cov), n_iter=n_iter, work=n_fits,
                work_unit="fits", target_speedup=target)


def score_case(n: int, d: int, k: int, cov: str) -> Case:
    """``score_samples`` throughput (rows/s): ``gmmjax.log_prob`` vs sklearn's, same parameters
    (those of a sklearn model after 2 EM steps)."""

    def setup():
        x = make_data(n, d, k, 11)
        init = make_init(x, k, cov, 12)
        import warnings

        from sklearn.mixture import GaussianMixture
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = GaussianMixture(k, covariance_type=cov, max_iter=2, tol=0.0,
                                weights_init=init.weights, means_init=init.means,
                                precisions_init=init.precisions).fit(x)
        params = gmmjax.from_precisions_cholesky(
            jnp.asarray(g.weights_, jnp.float32), jnp.asarray(g.means_, jnp.float32),
            jnp.asarray(g.precisions_cholesky_, jnp.float32), cov)
        return x, g, params

    def jax_impl(p):
        xd = jnp.asarray(p[0])

        def memory_analysis():
            from .peers import _xla_memory
            f = jax.jit(gmmjax.log_prob)
            return _xla_memory(f.lower(p[2], xd).compile())

        return Run(lambda: gmmjax.log_prob(p[2], xd),
                   result=lambda v: {"loglik": jnp.mean(v)}, jax=True,
                   memory_analysis=memory_analysis)

    def sk_impl(p):
        x, g = p[0], p[1]
        return Run(lambda: g.score_samples(x), result=lambda v: {"loglik": np.mean(v)},
                   jax=False, numpy_memory=True)

    return Case(name=f"score-{cov}-N{n}-D{d}-K{k}", group="score",
                params=dict(N=n, D=d, K=k, covariance_type=cov),
                setup=setup, impls={"gmmjax": jax_impl, "sklearn": sk_impl},
                flops=2.0 * n * k * d * d if cov == "full" else None, work=n, work_unit="rows")


def estep_case(n: int, d: int, k: int, cov: str = "full", target_s: float | None = None) -> Case:
    """One E-step pass (log-likelihood + responsibilities, reduced inside the program so the
    N×K array is not returned): accelerator-only (the issue's K=1024, D=128, N=1M case)."""

    def setup():
        if harness.SETTINGS.platform in (None, "cpu"):
            raise Skip("E-step at this size is an accelerator case (skipped on CPU)")
        x = make_data(n, d, min(k, 64), 21)
        return x, make_init(x, k, cov, 22)

    def jax_impl(p):
        xd = jnp.asarray(p[0])
        params = p[1].mixture_params()

        @jax.jit
        def estep(pp, xx):
            ll, log_resp = gmmjax.e_step(pp, xx)
            return ll, jnp.max(log_resp)

        return Run(lambda: estep(params, xd), result=lambda r: {"loglik": r[0]}, jax=True,
                   note=f"E-step target ≤ {target_s * 1e3:.0f} ms" if target_s else "")

    return Case(name=f"estep-{cov}-N{n}-D{d}-K{k}", group="estep",
                params=dict(N=n, D=d, K=k, covariance_type=cov, target_s=target_s),
                setup=setup, impls={"gmmjax": jax_impl},
                flops=2.0 * n * k * d * d if cov == "full" else None)


# ----------------------------------------------------------------------------- the grid

def quick_cases(it: int = 5, all_peers: bool = False) -> list[Case]:
    """The issue's speed targets plus one scoring case; ``it`` EM iterations per fit (5 keeps
    ``--quick`` under 3 minutes on 2 CPU cores; per-iteration times hardly depend on it)."""
    # --quick runs the slow sklearn-torch peer on the two cheaper EM cases only
    heavy = PEERS if all_peers else ("gmmx",)
    return [
        em_case(100_000, 2, 8, "full", it, target=5.0),
        em_case(100_000, 16, 16, "full", it, peers=heavy, target=3.0),
        em_case(100_000, 16, 16, "diag", it, target=3.0),
        em_case(65_536, 32, 32, "full", it, peers=heavy, target=3.0),
        n_init_case(20_000, 2, 4, "full", 10, 10, target=10.0),
        batch_case(1000, 400, 2, 2, "full", 10, sklearn_subset=50, target=100.0),
        score_case(100_000, 16, 16, "full"),
    ]


def full_cases() -> list[Case]:
    """The issue's grid: N in 1e4..1e6 (1e7 on an accelerator), D in {2,16,64}, K in {4,16,64},
    all four covariance types (cells over ``--max-case-s`` skip themselves), plus the targets."""
    gpu = harness.SETTINGS.platform not in (None, "cpu")
    it = 10
    ns = (10_000, 100_000, 1_000_000) + ((10_000_000,) if gpu else ())
    out = quick_cases(it, all_peers=True)
    names = {c.name for c in out}
    for n, d, k, cov in itertools.product(ns, (2, 16, 64), (4, 16, 64), COV_TYPES):
        c = em_case(n, d, k, cov, it, peers=PEERS if n <= 100_000 or gpu else ())
        if c.name not in names:
            out.append(c)
            names.add(c.name)
    out.append(n_init_case(100_000, 16, 16, "full", 10, it))
    out.append(batch_case(1000, 400, 2, 2, "diag", it))
    for cov in COV_TYPES:
        out.append(score_case(1_000_000, 16, 16, cov))
    out.append(estep_case(1_000_000, 128, 1024, "full", target_s=0.2))
    return out


def cases(quick: bool) -> list[Case]:
    return quick_cases() if quick else full_cases()
