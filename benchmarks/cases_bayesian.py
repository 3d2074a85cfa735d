"""Bayesian (variational) mixture cases: ``gmmjax.fit_bayesian`` vs scikit-learn's
``BayesianGaussianMixture``.

* ``bayes-*``: identical work. Both start from the same initial responsibilities (sklearn's
  ``init_params='random'`` draws from ``RandomState(seed)``; gmmjax gets that exact array as
  ``init``), run ``n_iter`` variational iterations with ``tol=0`` and report the ELBO per sample
  as ``loglik``. gmmjax runs on float32 data (its fast path); sklearn upcasts to float64
  internally, so the bounds agree to ~1e-4 relative, not bit for bit.
* ``bgm-estimator-*``: the seeds' workload, ``BayesianGaussianMixture(n_components=10,
  n_init=10)`` with default settings (k-means init, up to 100 iterations, tol 1e-3), estimator vs
  estimator. Not identical work (different k-means draws, different iteration counts): the
  metric is the mean ``score`` on the data and ``active`` the number of weights > 0.01.

The E-step costs about what an EM E-step costs (one Mahalanobis GEMM per component block plus
digamma terms of size K), so the FLOP model is ``cases_core.em_flops``.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

import gmmjax

from .cases_core import em_flops
from .harness import Case, Run
from .peers import REG_COVAR, _xla_memory, make_data


def random_resp(n: int, k: int, seed: int) -> np.ndarray:
    """sklearn's ``init_params='random'`` responsibilities for ``RandomState(seed)``."""
    resp = np.random.RandomState(seed).uniform(size=(n, k))
    return resp / resp.sum(1)[:, None]


def bayes_case(n: int, d: int, k: int, cov: str, weight_type: str, n_iter: int,
               seed: int = 5) -> Case:
    """``n_iter`` variational iterations from identical initial responsibilities."""

    def setup():
        x = make_data(n, d, max(2, k // 3), seed)
        return x, random_resp(n, k, seed + 1)

    kwargs = dict(covariance_type=cov, weight_concentration_prior_type=weight_type,
                  max_iter=n_iter, tol=0.0, reg_covar=REG_COVAR)

    def jax_impl(p):
        xd = jnp.asarray(p[0])
        resp = jnp.asarray(p[1], jnp.float32)
        key = jax.random.key(0)

        def memory_analysis():
            f = jax.jit(lambda kk, xx, rr: gmmjax.fit_bayesian(kk, xx, k, init=rr, **kwargs))
            return _xla_memory(f.lower(key, xd, resp).compile())

        return Run(lambda: gmmjax.fit_bayesian(key, xd, k, init=resp, **kwargs),
                   result=lambda r: {"loglik": r.lower_bound / n, "n_iter_run": r.n_iter},
                   jax=True, memory_analysis=memory_analysis)

    def sk_impl(p):
        from sklearn.mixture import BayesianGaussianMixture

        def fn():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return BayesianGaussianMixture(
                    n_components=k, init_params="random", random_state=seed + 1,
                    **kwargs).fit(p[0])

        return Run(fn, result=lambda g: {"loglik": float(np.squeeze(g.lower_bound_)) / n,
                                         "n_iter_run": g.n_iter_},
                   jax=False, numpy_memory=True)

    short = "dp" if weight_type == "dirichlet_process" else "dd"
    return Case(name=f"bayes-{short}-{cov}-N{n}-D{d}-K{k}", group="bayesian",
                params=dict(N=n, D=d, K=k, covariance_type=cov, n_iter=n_iter,
                            weight_concentration_prior_type=weight_type),
                setup=setup, impls={"gmmjax": jax_impl, "sklearn": sk_impl},
                flops=n_iter * em_flops(n, d, k, cov), n_iter=n_iter)


def estimator_case(n: int, d: int, k: int = 10, n_init: int = 10, cov: str = "full",
                   seed: int = 9) -> Case:
    """The seeds' ``BayesianGaussianMixture(n_components=10, n_init=10)``, estimator vs
    estimator with default settings (not identical work; see the module docstring)."""

    def setup():
        return make_data(n, d, 3, seed).astype(np.float64)

    def make(module):
        def factory(x):
            est_cls = module.BayesianGaussianMixture
            is_jax = module is gmmjax

            def fn():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return est_cls(n_components=k, n_init=n_init, covariance_type=cov,
                                   random_state=0).fit(x)

            return Run(fn, result=lambda g: {"loglik": g.score(x), "n_iter_run": g.n_iter_,
                                             "active": int(np.sum(g.weights_ > 0.01))},
                       jax=is_jax, numpy_memory=not is_jax,
                       note="estimators with default settings and random_state=0: the same "
                            "(scikit-learn's) initialisations, so the same EM (identical work; "
                            "gmmjax's fit skips the labelling E-step scikit-learn's fit "
                            "computes and discards: one pass over the rows)")
        return factory

    import sklearn.mixture
    return Case(name=f"bgm-estimator-{cov}-N{n}-D{d}-K{k}-n_init{n_init}", group="bayesian",
                params=dict(N=n, D=d, K=k, covariance_type=cov, n_init=n_init),
                setup=setup, impls={"gmmjax": make(gmmjax), "sklearn": make(sklearn.mixture)},
                work=1, work_unit="fits")


def cases(quick: bool) -> list[Case]:
    out = [bayes_case(100_000, 2, 10, "full", "dirichlet_process", 10),
           bayes_case(100_000, 16, 16, "diag", "dirichlet_distribution", 10),
           estimator_case(20_000, 2)]
    if not quick:
        for cov in ("full", "tied", "diag", "spherical"):
            for n in (100_000, 1_000_000):
                c = bayes_case(n, 16, 16, cov, "dirichlet_process", 10)
                if c.name not in {o.name for o in out}:
                    out.append(c)
        out.append(estimator_case(100_000, 16, cov="diag"))
    return out
