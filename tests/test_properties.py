"""Property tests over shapes and weights (few distinct shapes: each costs a compile)."""

import jax
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gmmjax as gj
from gmmjax.covariance import COVARIANCE_TYPES

SHAPES = [(40, 1, 1), (40, 2, 2), (48, 3, 3)]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=st.sampled_from(SHAPES), covariance_type=st.sampled_from(COVARIANCE_TYPES),
       seed=st.integers(0, 2**16), scale=st.floats(0.01, 100.0))
def test_em_invariants(shape, covariance_type, seed, scale):
    n, d, k = shape
    rng = np.random.default_rng(seed)
    X = (rng.normal(size=(n, d)) * rng.uniform(0.5, 3, size=d) + rng.normal(size=d) * 5)
    X = X.astype(np.float32)
    w = rng.uniform(0.0, 2.0, size=n).astype(np.float32)
    w[rng.random(n) < 0.2] = 0.0                          # some rows are padding
    w[0] = 1.0
    key = jax.random.key(seed)
    run = lambda weights: gj.fit(key, X, k, covariance_type=covariance_type, init="random",
                                 max_iter=8, tol=0.0, sample_weight=weights, reg_covar=1e-4)
    res = run(w)
    p = res.params
    hist = np.asarray(res.lower_bounds)
    assert int(res.status) == gj.Status.MAX_ITER_REACHED
    assert all(np.all(np.isfinite(np.asarray(a))) for a in jax.tree_util.tree_leaves(p))
    np.testing.assert_allclose(np.sum(p.weights), 1.0, rtol=1e-5)
    assert np.all(np.diff(hist) >= -1e-4 * (1 + np.abs(hist[1:])))          # EM is monotone
    # the weighted mean log density of the final params is at least the last bound
    final = float(np.sum(w * np.asarray(gj.log_prob(p, X))) / np.sum(w))
    assert final >= hist[-1] - 1e-4 * (1 + abs(hist[-1]))
    # rescaling all weights changes nothing
    scaled = run(w * np.float32(scale))
    np.testing.assert_allclose(scaled.lower_bounds, hist, rtol=2e-4, atol=2e-4)
