"""Invalid parameter values are refused (concrete) or made visible as NaN (traced), never hidden:
from_covariances / from_precisions / from_precisions_cholesky, and sample."""

import jax
import numpy as np
import pytest

import gmmjax as gj
from gmmjax.covariance import COVARIANCE_TYPES

KEY = jax.random.key(0)
W, M = np.array([0.4, 0.6]), np.array([[0.0, 0.0], [3.0, 1.0]])
GOOD = {"full": np.array([[[1.0, 0.3], [0.3, 2.0]], np.eye(2)]),
        "tied": np.array([[1.0, 0.3], [0.3, 2.0]]),
        "diag": np.array([[1.0, 2.0], [0.5, 1.0]]), "spherical": np.array([1.0, 2.0])}


def bad_matrices(covariance_type):
    """An indefinite / negative and a NaN covariance (or precision) of this type."""
    good = GOOD[covariance_type]
    if covariance_type in ("full", "tied"):
        indefinite = good.copy()
        indefinite[..., 0, 1] = indefinite[..., 1, 0] = 5.0
        return [indefinite, -good, np.where(good == 1.0, np.nan, good)]
    return [-good, np.where(good == 1.0, np.nan, good)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_invalid_matrices_are_refused(covariance_type, dtype):
    with jax.enable_x64(dtype == np.float64):
        for bad in bad_matrices(covariance_type):
            bad = bad.astype(dtype)
            with pytest.raises(ValueError, match="ill-defined"):
                gj.from_covariances(W, M, bad, covariance_type)
            with pytest.raises(ValueError, match="ill-defined"):
                gj.from_precisions(W, M, bad, covariance_type)
        good = gj.from_covariances(W, M, GOOD[covariance_type].astype(dtype), covariance_type)
        with pytest.raises(ValueError, match="ill-defined"):   # a negated factor
            gj.from_precisions_cholesky(W, M, -good.precisions_cholesky, covariance_type)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_invalid_matrices_under_jit_are_nan_not_identity(covariance_type):
    bad = bad_matrices(covariance_type)[0].astype(np.float32)
    x = np.zeros((3, 2), np.float32)

    @jax.jit
    def density(cov):
        return gj.log_prob(gj.from_covariances(W, M, cov, covariance_type), x)

    assert np.all(np.isnan(density(bad)))
    assert np.all(np.isfinite(density(GOOD[covariance_type].astype(np.float32))))


def test_asymmetric_matrix_is_refused():
    with pytest.raises(ValueError, match="symmetric"):
        gj.from_covariances(W, M, np.array([[1.0, 0.5], [0.0, 1.0]]), "tied")


@pytest.mark.parametrize("change, match", [
    (dict(weights=np.array([-0.2, 1.2])), "non-negative"),
    (dict(weights=np.array([np.nan, 1.0])), "weights contains NaN"),
    (dict(means=np.array([[np.inf, 0.0], [0.0, 0.0]])), "means contains NaN or infinity"),
])
def test_sample_checks_concrete_params(change, match):
    params = gj.from_covariances(W, M, GOOD["diag"], "diag").replace(**change)
    with pytest.raises(ValueError, match=match):
        gj.sample(KEY, params, 5)
