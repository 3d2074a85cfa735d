"""Model-selection cases: ``gmmjax.select_model`` (one compiled program per covariance type: every K
padded to the largest with masked components, all K × n_init restarts in one vmap) against the
usual scikit-learn loop ``for covariance_type: for K: GaussianMixture(K, ...).fit(X).bic(X)``.

Same work description on both sides (data, K range, covariance types, n_init, max_iter, tol,
reg_covar, criterion), but not identical iterations: each side initialises with its own k-means,
so the EM iteration counts differ. The metrics record both choices (``best_k``, ``best_cov``
index) and the winning criterion value, so a disagreement is visible in the results.
"""

from __future__ import annotations

import warnings

import jax
import numpy as np
from sklearn.mixture import GaussianMixture as SkGaussianMixture

import gmmjax

from .harness import Case, Run

COV_TYPES = ("full", "tied", "diag", "spherical")
MAX_ITER = 100
TOL = 1e-3


def three_gaussians(scale: int = 1, dtype=np.float32) -> np.ndarray:
    """The issue's 1-D example: 2000 from N(0, 2), 2000 from N(5, 5), 600 from N(3, 0.5)
    (standard deviations), each count times ``scale``."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 2, 2000 * scale), rng.normal(5, 5, 2000 * scale),
                        rng.normal(3, 0.5, 600 * scale)])
    return x[:, None].astype(dtype)


def blobs(n: int, d: int, k: int, dtype=np.float32) -> np.ndarray:
    rng = np.random.default_rng(1)
    centres = rng.normal(scale=5.0, size=(k, d))
    scales = rng.uniform(0.5, 1.5, size=(k, d))
    lab = rng.integers(0, k, size=n)
    return (centres[lab] + rng.standard_normal((n, d)) * scales[lab]).astype(dtype)


def _metrics(best_cov: str, best_k: int, value: float, loglik: float) -> dict:
    return {"best_k": float(best_k), "best_cov": float(COV_TYPES.index(best_cov)),
            "best_criterion": float(value), "loglik": float(loglik)}


def selection_case(name: str, make, n: int, d: int, ks, types, n_init: int,
                   criterion: str = "bic") -> Case:
    ks = tuple(ks)

    def setup():
        return make()

    def jax_impl(x):
        key = jax.random.key(0)

        def fn():
            return gmmjax.select_model(key, x, ks, types, criterion, n_init=n_init,
                                       max_iter=MAX_ITER, tol=TOL, return_estimator=False)

        def result(res):
            i = res.covariance_types.index(res.best_covariance_type)
            j = res.n_components.index(res.best_n_components)
            return _metrics(res.best_covariance_type, res.best_n_components, res.table[i, j],
                            res.log_likelihood[i, j] / x.shape[0])

        return Run(fn, result=result, jax=True,
                   note=f"gmmjax: {len(types)} compiled programs ({len(ks)}·{n_init} restarts "
                        "each, padded to max K); inits differ from sklearn's")

    def sk_impl(x):
        def fn():
            best = None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for ct in types:
                    for k in ks:
                        g = SkGaussianMixture(k, covariance_type=ct, n_init=n_init,
                                              max_iter=MAX_ITER, tol=TOL, random_state=0).fit(x)
                        value = getattr(g, criterion)(x)
                        if best is None or value < best[0]:
                            best = (value, ct, k, g.score(x))
            return best

        return Run(fn, result=lambda b: _metrics(b[1], b[2], b[0], b[3]), jax=False,
                   numpy_memory=True)

    return Case(name=name, group="selection",
                params=dict(K=f"{ks[0]}..{ks[-1]}", covariance_types=",".join(types),
                            n_init=n_init, criterion=criterion, N=n, D=d),
                setup=setup, impls={"gmmjax": jax_impl, "sklearn": sk_impl},
                work=len(ks) * len(types) * n_init, work_unit="fits")


def quick_cases() -> list[Case]:
    return [
        selection_case("select-1d3g-K1-10", three_gaussians, 4600, 1, range(1, 11),
                       ("full", "tied"), 1),
        selection_case("select-blobs-N20000-D2-K1-10", lambda: blobs(20_000, 2, 5), 20_000, 2,
                       range(1, 11), ("full",), 1),
    ]


def full_cases() -> list[Case]:
    return quick_cases() + [
        selection_case("select-1d3g-K1-10-all-types", three_gaussians, 4600, 1, range(1, 11),
                       COV_TYPES, 1),
        selection_case("select-1d3g-x10-K1-10-n_init3", lambda: three_gaussians(10), 46_000, 1,
                       range(1, 11), COV_TYPES, 3),
        selection_case("select-blobs-N100000-D8-K1-16", lambda: blobs(100_000, 8, 8), 100_000, 8,
                       range(1, 17), COV_TYPES, 1),
    ]


def cases(quick: bool) -> list[Case]:
    return quick_cases() if quick else full_cases()
