"""Every bad input is refused on the host with a message naming the problem and the shape."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gmmjax as gj
from conftest import initial_state

KEY = jax.random.key(0)
X = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)


def params(covariance_type="full"):
    w, m, p = initial_state(covariance_type)
    return gj.from_precisions(w, m, p, covariance_type).astype(np.float32)


@pytest.mark.parametrize("bad,match", [
    (X[:, 0], r"2-D array .* shape \(20,\)"),
    (X[None], r"2-D array .* shape \(1, 20, 3\)"),
    (np.zeros((5, 0), np.float32), r"0 features \(shape \(5, 0\)\)"),
    (np.where(np.arange(60).reshape(20, 3) == 7, np.nan, X), r"contains NaN \(shape \(20, 3\)\)"),
    (np.where(np.arange(60).reshape(20, 3) == 7, np.inf, X), r"contains infinity"),
    (X.astype(np.complex64), r"complex"),
    (np.array([["a", "b"], ["c", "d"]]), r"numeric"),
])
def test_bad_data(bad, match):
    with pytest.raises(ValueError, match=match):
        gj.fit(KEY, bad, 2)
    with pytest.raises(ValueError, match=match):
        gj.log_prob(params(), bad)


def test_fewer_samples_than_components():
    with pytest.raises(ValueError, match="n_components = 5, n_samples = 4"):
        gj.fit(KEY, X[:4], 5)
    w = np.zeros(20, np.float32)
    w[:3] = 1.0                                    # only 3 rows carry weight
    with pytest.raises(ValueError, match="n_components = 4, n_samples = 3"):
        gj.fit(KEY, X, 4, sample_weight=w)


@pytest.mark.parametrize("weights,match", [
    (-np.ones(20), "non-negative"),
    (np.zeros(20), "sums to zero"),
    (np.ones(19), r"shape \(20,\)"),
    (np.full(20, np.nan), "NaN"),
])
def test_bad_sample_weight(weights, match):
    with pytest.raises(ValueError, match=match):
        gj.fit(KEY, X, 2, sample_weight=weights)


def test_unknown_covariance_type_and_init():
    with pytest.raises(ValueError, match="Unknown covariance_type 'blob'"):
        gj.fit(KEY, X, 2, covariance_type="blob")
    with pytest.raises(ValueError, match="Unknown init 'kmedoids'"):
        gj.fit(KEY, X, 2, init="kmedoids")


@pytest.mark.parametrize("kwargs,match", [
    ({"n_components": 0}, "n_components must be an integer >= 1"),
    ({"n_components": 2.5}, "n_components must be an integer"),
    ({"n_init": 0}, "n_init must be an integer >= 1"),
    ({"max_iter": -1}, "max_iter must be an integer >= 0"),
    ({"tol": -1.0}, "tol must be a non-negative"),
    ({"reg_covar": -1e-6}, "reg_covar must be a non-negative"),
    ({"chunk_size": 0}, "chunk_size must be an integer >= 1"),
])
def test_bad_hyper_parameters(kwargs, match):
    kwargs = {"n_components": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        gj.fit(KEY, X, **kwargs)


def test_params_data_feature_mismatch():
    with pytest.raises(ValueError, match=r"X has 2 features, but the mixture parameters have 3"):
        gj.log_prob(params(), X[:, :2])
    with pytest.raises(ValueError, match=r"X has 2 features"):
        gj.fit(KEY, X[:, :2], 2, init=params())


def test_init_params_mismatch():
    with pytest.raises(ValueError, match="covariance_type 'diag' but covariance_type='full'"):
        gj.fit(KEY, X, 2, init=params("diag"))
    with pytest.raises(ValueError, match="init params have 2 components; n_components=3"):
        gj.fit(KEY, X, 3, init=params())
    bad = params().replace(weights=jnp.ones(3) / 3)
    with pytest.raises(ValueError, match=r"params.weights must have shape \(2,\)"):
        gj.log_prob(bad, X)
    with pytest.raises(TypeError, match="MixtureParams"):
        gj.log_prob({"weights": 1}, X)


def test_sample_needs_a_positive_count():
    with pytest.raises(ValueError, match="n_samples must be an integer >= 1"):
        gj.sample(KEY, params(), 0)


def test_shape_checks_still_run_under_tracing():
    with pytest.raises(ValueError, match="2-D array"):
        jax.jit(lambda x: gj.log_prob(params(), x))(X[:, 0])


@pytest.mark.parametrize("half", [np.float16, jnp.bfloat16])
def test_half_precision_data_are_upcast_to_float32(half):
    xh = jnp.asarray(X, half)
    ref = gj.fit(KEY, np.asarray(xh, np.float32), 2, max_iter=3)
    got = gj.fit(KEY, xh, 2, max_iter=3)
    assert got.params.means.dtype == np.float32
    np.testing.assert_array_equal(got.params.means, ref.params.means)
    np.testing.assert_array_equal(gj.log_prob(ref.params, xh),
                                  gj.log_prob(ref.params, np.asarray(xh, np.float32)))


def test_sparse_data_are_refused_as_in_sklearn():
    import scipy.sparse
    with pytest.raises(TypeError, match="Sparse data was passed for X, but dense data is required"):
        gj.fit(KEY, scipy.sparse.csr_matrix(X), 2)
