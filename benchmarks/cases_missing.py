"""Missing-value case (issue 18): EM that marginalises NaN entries (``gmmjax.fit(...,
missing="marginalize")``) against the same EM on the same data without holes.

N=100k, D=16, K=16, full covariances, 20% of entries missing at random. Both sides start from the
same parameters and run a fixed number of iterations (tol=0), so the time per EM iteration is
comparable; the target is ``holes`` within 5x of ``complete``. Memory is bounded by chunk_size
(automatic) as for plain EM: the per-chunk temporaries are (K, chunk, Q, Q) with Q the slots of
a chunk's most-missing row (rows are sorted by their count). scikit-learn has no such fit (its
mixtures reject NaN), so there is no sklearn column.

Run alone: ``python -m benchmarks --cases missing`` (or ``--quick``: N=20k).
"""

from __future__ import annotations

import jax
import numpy as np

import gmmjax

from .harness import Case, Run

D, K, MISSING = 16, 16, 0.2
N_ITER = 5


def data(n: int):
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=3.0, size=(K, D))
    x = (centres[rng.integers(0, K, n)] + rng.standard_normal((n, D))).astype(np.float32)
    holes = x.copy()
    holes[rng.random((n, D)) < MISSING] = np.nan
    holes[np.isnan(holes).all(axis=1), 0] = x[np.isnan(holes).all(axis=1), 0]
    start = gmmjax.fit(jax.random.key(0), x[:4096], K, max_iter=3).params
    return x, holes, start


def missing_case(n: int) -> Case:
    def setup():
        return data(n)

    def run(which):
        def factory(payload):
            x, holes, start = payload
            arr = holes if which == "holes" else x
            missing = "marginalize" if which == "holes" else "error"

            def fn():
                return gmmjax.fit(jax.random.key(0), arr, K, init=start, max_iter=N_ITER,
                                  tol=0.0, missing=missing)

            return Run(fn, result=lambda r: {"loglik": float(r.lower_bound)}, jax=True,
                       note="holes: observed-data log-likelihood (not comparable to complete's)")
        return factory

    return Case(name=f"missing-full-N{n}-D{D}-K{K}", group="missing",
                params=dict(N=n, D=D, K=K, covariance_type="full", missing=MISSING,
                            n_iter=N_ITER),
                setup=setup, impls={"holes": run("holes"), "complete": run("complete")},
                n_iter=N_ITER, main="holes", baseline="complete")


def cases(quick: bool) -> list[Case]:
    return [missing_case(20_000 if quick else 100_000)]
