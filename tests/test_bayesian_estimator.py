"""gmmjax.BayesianGaussianMixture: sklearn's estimator checks, deterministic agreement with
sklearn (continuing from the same state), attributes, errors, and the two-moons pruning check."""

import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_moons
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.mixture import BayesianGaussianMixture as SkBGM
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

from gmmjax import BayesianGaussianMixture

K = 3
STATE_ATTRS = ("weight_concentration_", "mean_precision_", "means_", "degrees_of_freedom_",
               "covariances_", "precisions_cholesky_")
FITTED_ATTRS = STATE_ATTRS + (
    "weights_", "precisions_", "weight_concentration_prior_", "mean_precision_prior_",
    "mean_prior_", "degrees_of_freedom_prior_", "covariance_prior_")


@parametrize_with_checks([BayesianGaussianMixture(n_init=2, max_iter=5)])
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


def quiet_fit(est, X, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, **kw)


def started_from_sklearn(X, covariance_type, weight_type, **kw):
    """(sklearn BGM after 5 iterations from 'random' init, a gmmjax estimator holding the same
    fitted state, both with warm_start=True so the next fit continues from it)."""
    params = dict(n_components=K, covariance_type=covariance_type,
                  weight_concentration_prior_type=weight_type, warm_start=True, **kw)
    sk = quiet_fit(SkBGM(init_params="random", random_state=0, max_iter=5, **params), X)
    ours = BayesianGaussianMixture(max_iter=40, **params)
    for name in STATE_ATTRS + ("converged_", "lower_bound_", "n_features_in_"):
        setattr(ours, name, getattr(sk, name))
    sk.set_params(max_iter=40)
    return sk, ours


def assert_same_fit(ours, sk, tol=1e-8):
    assert ours.n_iter_ == sk.n_iter_ and ours.converged_ == sk.converged_
    for name in FITTED_ATTRS:
        mine, theirs = getattr(ours, name), getattr(sk, name)
        assert type(mine) is type(theirs) or np.isscalar(mine) and np.isscalar(theirs), name
        if isinstance(theirs, tuple):
            assert isinstance(mine, tuple) and len(mine) == 2
            mine, theirs = np.stack(mine), np.stack(theirs)
        assert np.shape(mine) == np.shape(theirs), name
        if isinstance(theirs, np.ndarray):
            assert mine.dtype == theirs.dtype, name
        np.testing.assert_allclose(mine, theirs, rtol=tol, atol=tol, err_msg=name)
    # sklearn's tied bound is a (1,) array (documented difference: ours is a scalar)
    np.testing.assert_allclose(ours.lower_bound_, np.squeeze(sk.lower_bound_), rtol=tol)
    np.testing.assert_allclose(ours.lower_bounds_, np.squeeze(np.array(sk.lower_bounds_)),
                               rtol=tol)


@pytest.mark.parametrize("covariance_type,weight_type", [
    ("full", "dirichlet_process"), ("tied", "dirichlet_distribution"),
    ("diag", "dirichlet_process"), ("spherical", "dirichlet_distribution")])
def test_continues_exactly_like_sklearn(blobs, covariance_type, weight_type):
    sk, ours = started_from_sklearn(blobs, covariance_type, weight_type, tol=1e-6)
    quiet_fit(sk, blobs)
    quiet_fit(ours, blobs)
    assert_same_fit(ours, sk)
    np.testing.assert_allclose(ours.score_samples(blobs), sk.score_samples(blobs), rtol=1e-8)
    np.testing.assert_allclose(ours.predict_proba(blobs), sk.predict_proba(blobs), atol=1e-8)
    np.testing.assert_array_equal(ours.predict(blobs), sk.predict(blobs))
    assert ours.score(blobs) == pytest.approx(sk.score(blobs), rel=1e-10)


def test_user_priors_and_float32_input(blobs):
    priors = dict(weight_concentration_prior=0.05, mean_precision_prior=0.3,
                  mean_prior=np.array([1.0, -0.5, 0.2], np.float32), degrees_of_freedom_prior=4.5,
                  covariance_prior=np.array([0.5, 2.0, 1.0], np.float32))
    X = blobs.astype(np.float32)
    sk, ours = started_from_sklearn(X, "diag", "dirichlet_process", tol=1e-6, **priors)
    quiet_fit(sk, X)
    quiet_fit(ours, X)
    # float32 X: parameters in float64 as sklearn; mean_prior_/covariance_prior_ as given
    assert_same_fit(ours, sk, tol=1e-6)
    assert ours.means_.dtype == np.float64 and ours.mean_prior_.dtype == np.float32


def test_integer_sample_weights_equal_repeated_rows(blobs):
    reps = np.arange(len(blobs)) % 3
    _, weighted = started_from_sklearn(blobs, "full", "dirichlet_process", tol=0.0)
    _, repeated = started_from_sklearn(blobs, "full", "dirichlet_process", tol=0.0)
    quiet_fit(weighted, blobs, sample_weight=reps.astype(float))
    quiet_fit(repeated, np.repeat(blobs, reps, axis=0))
    for name in STATE_ATTRS + ("mean_prior_", "covariance_prior_"):
        np.testing.assert_allclose(np.stack(getattr(weighted, name)) if name.startswith("weight_c")
                                   else getattr(weighted, name),
                                   np.stack(getattr(repeated, name)) if name.startswith("weight_c")
                                   else getattr(repeated, name), rtol=1e-9, atol=1e-10,
                                   err_msg=name)


def test_fresh_fit_methods_and_warm_start(blobs):
    # Two well separated clusters, K=3, a small concentration: the third component is switched
    # off (default k-means init, restarts vmapped).
    X = blobs + np.r_[np.zeros((50, 3)), np.full((70, 3), 4.0)]
    est = BayesianGaussianMixture(n_components=K, n_init=2, max_iter=40, random_state=0,
                                  weight_concentration_prior=1e-3)
    labels = est.fit_predict(X)
    assert labels.dtype == np.int64 and labels.shape == (len(X),)
    assert len(set(labels[:50])) == 1 and len(set(labels[50:])) == 1 and labels[0] != labels[-1]
    assert np.sum(est.weights_ > 0.01) == 2
    blobs = X
    np.testing.assert_array_equal(labels, est.predict(blobs))
    assert isinstance(est.weight_concentration_, tuple)
    np.testing.assert_allclose(est.weights_.sum(), 1.0)
    assert est.converged_ and len(est.lower_bounds_) == est.n_iter_
    assert np.all(np.diff(est.lower_bounds_) >= -1e-9 * np.abs(est.lower_bounds_[1:]))
    assert isinstance(est.score(blobs), float)
    # same seed -> same fit; clone / pickle keep behaviour
    again = clone(est).fit(blobs)
    np.testing.assert_allclose(again.means_, est.means_)
    restored = pickle.loads(pickle.dumps(est))
    np.testing.assert_allclose(restored.score_samples(blobs), est.score_samples(blobs))
    Xs, ys = est.sample(500)
    assert Xs.shape == (500, 3) and Xs.dtype == np.float64 and ys.dtype == np.int64
    assert np.all(np.diff(ys) >= 0)
    ref = SkBGM(n_components=K, random_state=0)     # scikit-learn's draws from the same state
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        setattr(ref, name, getattr(est, name))
    ref_X, ref_y = ref.sample(500)
    np.testing.assert_array_equal(Xs, ref_X)
    np.testing.assert_array_equal(ys, ref_y)
    # posterior_ round-trips; a warm start at the optimum converges at iteration 1
    assert est.posterior_.means.shape == (K, 3)
    est.set_params(warm_start=True, tol=1e3)
    est.fit(blobs)
    assert est.n_iter_ == 1 and est.converged_


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_same_random_state_same_fit_as_sklearn(blobs, covariance_type):
    """The same random_state draws scikit-learn's own initialisations (every method, restarts
    in order from one RandomState), so a fresh fit is scikit-learn's fit. (Tied point-mass
    inits differ on purpose, as in GaussianMixture: their tied scatter is 0, not XᵀX-based.)"""
    point_mass = ("k-means++", "random_from_data")
    for init in ("kmeans", "random") + (() if covariance_type == "tied" else point_mass):
        params = dict(n_components=K, covariance_type=covariance_type, init_params=init,
                      n_init=2, tol=1e-6, random_state=3)
        assert_same_fit(quiet_fit(BayesianGaussianMixture(**params), blobs),
                        quiet_fit(SkBGM(**params), blobs))


def test_two_moons_prunes_like_sklearn():
    X, _ = make_moons(1000, noise=0.05, random_state=0)
    ours = quiet_fit(BayesianGaussianMixture(n_components=10, n_init=10, random_state=0), X)
    with threadpool_limits(1):
        sk = quiet_fit(SkBGM(n_components=10, n_init=10, random_state=0), X)
    active_ours = int(np.sum(ours.weights_ > 0.01))
    active_sk = int(np.sum(sk.weights_ > 0.01))
    assert abs(active_ours - active_sk) <= 2, (active_ours, active_sk)
    assert ours.score(X) == pytest.approx(sk.score(X), abs=0.05)


# ------------------------------------------------------------------------------ errors

def test_constructor_is_keyword_only():
    with pytest.raises(TypeError):
        BayesianGaussianMixture(3)


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(degrees_of_freedom_prior=1.0), ValueError,
     r"The parameter 'degrees_of_freedom_prior' should be greater than 2, but got 1.000."),
    (dict(mean_prior=[0.0, 1.0]), ValueError,
     r"The parameter 'means' should have the shape of \(3,\), but got \(2,\)"),
    (dict(mean_prior=[0.0, np.nan, 1.0]), ValueError, "Input contains NaN"),
    (dict(covariance_prior=np.eye(2)), ValueError,
     r"The parameter 'full covariance_prior' should have the shape of \(3, 3\), but got \(2, 2\)"),
    (dict(covariance_type="tied", covariance_prior=-np.eye(3)), ValueError,
     "'tied precision' should be symmetric, positive-definite"),
    (dict(covariance_type="diag", covariance_prior=[1.0, -1.0, 1.0]), ValueError,
     "'diag precision' should be positive"),
    (dict(covariance_prior=0), InvalidParameterError, "'covariance_prior' parameter"),
    (dict(weight_concentration_prior=0.0), InvalidParameterError,
     "'weight_concentration_prior' parameter"),
    (dict(mean_precision_prior=-1), InvalidParameterError, "'mean_precision_prior' parameter"),
    (dict(weight_concentration_prior_type="dirichlet"), InvalidParameterError,
     "'weight_concentration_prior_type' parameter"),
    (dict(covariance_type="bad"), InvalidParameterError, "'covariance_type' parameter"),
    (dict(n_components=200), ValueError, "Expected n_samples >= n_components"),
])
def test_bad_parameters_raise_like_sklearn(blobs, kwargs, error, message):
    with pytest.raises(error, match=message):
        SkBGM(**kwargs).fit(blobs)
    with pytest.raises(error, match=message):
        BayesianGaussianMixture(**kwargs).fit(blobs)


def test_not_fitted_and_bad_n_samples(blobs):
    est = BayesianGaussianMixture(n_components=K)
    with pytest.raises(NotFittedError):
        est.predict(blobs)
    with pytest.raises(NotFittedError):
        _ = est.posterior_
    _, fitted = started_from_sklearn(blobs, "full", "dirichlet_process")
    with pytest.raises(ValueError, match="Invalid value for 'n_samples'"):
        fitted.sample(0)
    with pytest.raises(ValueError, match="X has 2 features"):
        fitted.score_samples(blobs[:, :2])
