"""K buckets: fit pads K to a bucket (2^j or 3·2^j) with masked components; results equal the unpadded
fit of K with the same key, and a sweep over K compiles one program per bucket."""

import importlib

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gmmjax as gj
from gmmjax.fit import _fit_program, component_bucket
from gmmjax.rows import bucket_rows

fit_module = importlib.import_module("gmmjax.fit")

KEY = jax.random.key(4)
INITS = {"full": "kmeans", "tied": "k-means++", "diag": "random", "spherical": "random_from_data"}


def test_component_bucket_rule():
    # tiny (rows·16·D ≤ 2^17): every K ≤ 16 in the 16-component program, larger K on the ladder
    assert {component_bucket(100, k, 2) for k in range(1, 17)} == {(16, True)}
    assert [component_bucket(100, k, 2)[0] for k in (17, 24, 25, 33)] == [24, 24, 32, 48]
    # small (rows·K_bucket·D ≤ 2^20): the ladder 1, 2, 4, 6, 8, 12, 16, 24 (2^j, 3·2^j for j ≥ 1)
    assert [component_bucket(5000, k, 2)[0] for k in range(1, 18)] == [1, 2, 4, 4, 6, 6, 8, 8,
                                                                       12, 12, 12, 12, 16, 16,
                                                                       16, 16, 24]
    assert component_bucket(10 ** 6, 5, 16) == (5, False)    # large: compile time is noise


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 10 ** 7), st.sampled_from([None, 256, 512, 768, 2304, 4096, 9984]))
def test_row_buckets_are_idempotent(n, chunk_size):
    """Rows padded once (the estimators pad before fit) are not padded again: a second pad
    would cost run time and an eager concatenate compiled in every process."""
    rows = bucket_rows(n, chunk_size)
    assert n <= rows <= n + max(n // 8, 8) + (chunk_size or 0)
    assert bucket_rows(rows, chunk_size) == rows
    if chunk_size is not None:
        assert rows % chunk_size == 0


def test_bucketed_equals_unbucketed(x64, blobs, covariance_type, monkeypatch):
    """K = 5 runs in the K = 16 program (11 masked components) and gives the unpadded K = 5 fit:
    same init draws (every method), same iterations, same parameters."""
    kw = dict(covariance_type=covariance_type, init=INITS[covariance_type], n_init=2, tol=1e-8,
              reg_covar=0.0 if covariance_type == "diag" else 1e-6)
    padded = gj.fit(KEY, blobs, 5, **kw)
    assert component_bucket(blobs.shape[0], 5, 3) == (16, True)
    monkeypatch.setattr(fit_module, "K_BUCKET_ELEMENTS", 0)       # no padding
    monkeypatch.setattr(fit_module, "TINY_ELEMENTS", 0)
    assert component_bucket(blobs.shape[0], 5, 3) == (5, False)
    exact = gj.fit(KEY, blobs, 5, **kw)
    assert padded.params.means.shape == exact.params.means.shape == (5, 3)
    np.testing.assert_array_equal(padded.n_iter, exact.n_iter)
    np.testing.assert_array_equal(padded.restart_status, exact.restart_status)
    np.testing.assert_allclose(padded.restart_lower_bounds, exact.restart_lower_bounds,
                               rtol=1e-12)
    for a, b in zip(jax.tree_util.tree_leaves(padded.params),
                    jax.tree_util.tree_leaves(exact.params)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_given_params_are_padded(x64, blobs, covariance_type, monkeypatch):
    """Initial params of K = 5 of each type are padded with a masked component (unit
    covariance), held in the full layout, and give the unpadded fit of the type's own program."""
    start = gj.fit(KEY, blobs, 5, covariance_type=covariance_type, max_iter=1).params
    padded = gj.fit(KEY, blobs, 5, init=start, tol=1e-8, covariance_type=covariance_type)
    monkeypatch.setattr(fit_module, "K_BUCKET_ELEMENTS", 0)
    monkeypatch.setattr(fit_module, "TINY_ELEMENTS", 0)
    exact = gj.fit(KEY, blobs, 5, init=start, tol=1e-8, covariance_type=covariance_type)
    assert padded.params.covariance_type == exact.params.covariance_type == covariance_type
    np.testing.assert_array_equal(padded.n_iter, exact.n_iter)
    for a, b in zip(jax.tree_util.tree_leaves(padded), jax.tree_util.tree_leaves(exact)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("n_rows, programs", [(120, 1), (4000, 6)])
def test_k_sweep_compiles_one_program_per_bucket(n_rows, programs):
    """A BIC loop over K = 1..10 (what a user writes with the estimator) compiles one program
    when tiny (K ≤ 16 share the 16-component program) and at most the 6 buckets 1, 2, 4, 6, 8,
    12 when small, not 10; every K comes back with K components."""
    X = np.random.default_rng(n_rows).normal(size=(n_rows, 3)).astype(np.float32)
    before = _fit_program._cache_size()
    for k in range(1, 11):
        res = gj.fit(KEY, X, k, covariance_type="diag", n_init=2, max_iter=3)
        assert res.params.weights.shape == (k,) and res.params.covariances.shape == (k, 3)
        np.testing.assert_allclose(float(res.params.weights.sum()), 1.0, rtol=1e-6)
        assert np.isfinite(gj.bic(res.params, X))
    assert _fit_program._cache_size() - before <= programs


def test_n_init_and_max_iter_changes_share_the_program(blobs):
    """On CPU restarts run in a loop over a traced count: other n_init / max_iter values (within
    the capacities) reuse the program; restart i is the same whatever n_init is."""
    if not fit_module.restarts_in_a_loop():
        return
    X = blobs.astype(np.float32)
    one = gj.fit(KEY, X, 2, covariance_type="spherical", n_init=1, max_iter=30)
    before = _fit_program._cache_size()
    three = gj.fit(KEY, X, 2, covariance_type="spherical", n_init=3, max_iter=30)
    longer = gj.fit(KEY, X, 2, covariance_type="spherical", n_init=2, max_iter=60)
    assert _fit_program._cache_size() == before
    assert three.restart_lower_bounds.shape == (3,) and three.lower_bounds.shape == (30,)
    assert longer.lower_bounds.shape == (60,)
    assert float(three.restart_lower_bounds[0]) == float(one.lower_bound)
    assert float(three.lower_bound) == float(np.max(three.restart_lower_bounds))


def test_covariance_types_share_one_program(blobs):
    """Small problems hold every covariance type in the full layout with the type as an operand:
    the four types compile one program, and each comes back in its own layout."""
    X = blobs[:100].astype(np.float32)
    shapes = {"full": (2, 3, 3), "tied": (3, 3), "diag": (2, 3), "spherical": (2,)}
    _fit_program.clear_cache()     # another test in this worker may hold this program already
    before = _fit_program._cache_size()
    for covariance_type, shape in shapes.items():
        res = gj.fit(KEY, X, 2, covariance_type=covariance_type, n_init=2)
        assert res.params.covariance_type == covariance_type
        assert res.params.covariances.shape == res.params.precisions_cholesky.shape == shape
        assert isinstance(res.params.means, jax.Array)
    assert _fit_program._cache_size() == before + 1


def test_medium_estimator_sweep_shares_fit_and_evaluation_programs():
    """Above the small regime (20,000×6: rows·K·D ≈ 2^20 at K = 8) the estimators still pad K
    to a bucket and hold every type in the full layout: K = 5 and 6 of full, diag and
    spherical compile one fit program (the automatic chunk is sized for the bucket, so the
    rows and chunk agree too) and their scores one evaluation program (K padded to 16)."""
    from gmmjax import GaussianMixture
    from gmmjax.density import evaluate
    rng = np.random.default_rng(6)
    X = (rng.normal(size=(20000, 6)) + 4 * rng.integers(0, 3, (20000, 1))).astype(np.float32)
    assert component_bucket(20000, 5, 6) == (6, True)
    _fit_program.clear_cache()
    evaluate.clear_cache()
    scores = {}
    for covariance_type, k in [("full", 5), ("full", 6), ("diag", 5), ("spherical", 6)]:
        gm = GaussianMixture(k, covariance_type=covariance_type, max_iter=3, random_state=0)
        gm.fit(X)
        assert gm.means_.shape == (k, 6)
        scores[covariance_type, k] = gm.score(X)
        np.testing.assert_allclose(gm.score_samples(X).mean(), scores[covariance_type, k],
                                   rtol=1e-6)
    assert _fit_program._cache_size() == 1
    assert evaluate._cache_size() == 1
    assert all(np.isfinite(s) for s in scores.values())


def test_tiny_programs_compile_quickly_with_the_same_results(x64, blobs, monkeypatch):
    """On CPU, tiny fit and evaluation programs (rows·K·D ≤ 2^17, 2^18) are built with the
    quick compile options (the classic loop emitters); larger ones, or with the limits at 0,
    with XLA's defaults. Same arithmetic: the fits and densities agree to rounding."""
    density = importlib.import_module("gmmjax.density")
    _fit_program.clear_cache()
    density.evaluate.clear_cache()
    quick = gj.fit(KEY, blobs, 3, covariance_type="full", n_init=2, tol=1e-8)
    quick_density = gj.log_prob(quick.params, blobs)
    monkeypatch.setattr(fit_module, "QUICK_COMPILE_ELEMENTS", 0)
    monkeypatch.setattr(density, "QUICK_EVAL_ELEMENTS", 0)
    default = gj.fit(KEY, blobs, 3, covariance_type="full", n_init=2, tol=1e-8)
    default_density = gj.log_prob(default.params, blobs)
    # the last static value of each key is quick_compile: one quick and one default program
    assert sorted(key[0][-1] for key in _fit_program._memory) == [False, True]
    assert sorted(key[0][-1] for key in density.evaluate._memory) == [False, True]
    np.testing.assert_array_equal(quick.n_iter, default.n_iter)
    for a, b in zip(jax.tree_util.tree_leaves(quick), jax.tree_util.tree_leaves(default)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(quick_density, default_density, rtol=1e-10)
