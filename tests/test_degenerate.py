"""Degenerate data never gives a silent NaN: the status code says what failed."""

import jax
import numpy as np
import pytest

import gmmjax as gj

KEY = jax.random.key(0)
RNG = np.random.default_rng(1)
BASE = RNG.normal(size=(60, 2)).astype(np.float32)


def finite(res):
    leaves = jax.tree_util.tree_leaves(res.params) + [res.lower_bound]
    return all(bool(np.all(np.isfinite(np.asarray(leaf)))) for leaf in leaves)


def test_duplicated_points_with_reg_covar_fit_cleanly(covariance_type):
    X = np.repeat(BASE[:3], 20, axis=0)                       # 3 distinct points, 60 rows
    res = gj.fit(KEY, X, 3, covariance_type=covariance_type, reg_covar=1e-3)
    assert finite(res)
    assert int(res.status) in (gj.Status.CONVERGED, gj.Status.MAX_ITER_REACHED)


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical"])
def test_collapsed_component_without_reg_covar_is_reported(covariance_type):
    # (tied pools the rounding noise of three point masses into a tiny but positive-definite
    # matrix, so like sklearn it does not fail there; the constant-feature test covers tied.)
    X = np.repeat(BASE[:3], 20, axis=0)                       # components collapse onto points
    res = gj.fit(KEY, X, 3, covariance_type=covariance_type, reg_covar=0.0)
    assert int(res.status) == gj.Status.ILL_DEFINED_COVARIANCE
    assert not bool(res.converged)
    assert finite(res)                                        # last valid params, no NaN


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_constant_feature(covariance_type):
    X = BASE.copy()
    X[:, 1] = 3.0
    ok = gj.fit(KEY, X, 2, covariance_type=covariance_type, reg_covar=1e-6)
    assert finite(ok) and int(ok.status) != gj.Status.ILL_DEFINED_COVARIANCE
    np.testing.assert_allclose(ok.params.means[:, 1], 3.0, rtol=1e-6)
    bad = gj.fit(KEY, X, 2, covariance_type=covariance_type, reg_covar=0.0)
    assert int(bad.status) == gj.Status.ILL_DEFINED_COVARIANCE and finite(bad)


def test_float32_data_offset_by_a_million(covariance_type):
    X = np.concatenate([BASE, BASE + 6.0]).astype(np.float64)
    ref = gj.fit(KEY, X.astype(np.float32), 2, covariance_type=covariance_type)
    off = gj.fit(KEY, (X + 1e6).astype(np.float32), 2, covariance_type=covariance_type)
    assert finite(off) and int(off.status) == gj.Status.CONVERGED
    # float32 stores 1e6 + x to 0.0625: the fit is as good as the data allow
    assert float(off.lower_bound) == pytest.approx(float(ref.lower_bound), abs=0.02)
    np.testing.assert_allclose(np.sort(np.asarray(off.params.means)[:, 0]) - 1e6,
                               np.sort(np.asarray(ref.params.means)[:, 0]), atol=0.1)


def test_far_outlier_gives_finite_density():
    res = gj.fit(KEY, BASE, 2)
    lp = gj.log_prob(res.params, np.array([[1e4, -1e4]], np.float32))
    assert np.isfinite(np.asarray(lp)).all()
