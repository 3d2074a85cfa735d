"""gmmjax.GaussianMixture: the sklearn API contract, every error path, and the gmmjax extensions.

Side-by-side numerical comparisons with sklearn live in test_estimator_conformance.py. Shapes here
(N ≤ 128 rows -> one padded bucket, D=2, K=2) are shared with that module to reuse compiles.
"""

import copy
import pickle
import re
import sys

import jax
import numpy as np
import pytest
import scipy.sparse
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.mixture import GaussianMixture as SKGaussianMixture
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError

import gmmjax as gj
from gmmjax import GaussianMixture
from gmmjax.estimators._base import initial_resp, random_key

fit_module = sys.modules["gmmjax.fit"]
K, D = 2, 2


@pytest.fixture(scope="module")
def X():
    rng = np.random.RandomState(0)
    a = rng.randn(60, D) @ np.array([[1.0, 0.3], [0.0, 0.7]]) + [-3.0, 1.0]
    b = rng.randn(60, D) * [0.5, 1.5] + [3.0, -2.0]
    return np.vstack([a, b])


def init(covariance_type="full"):
    prec = {"full": np.array([np.eye(D), 2 * np.eye(D)]), "tied": np.eye(D) * 0.5,
            "diag": np.array([[1.0, 0.5], [2.0, 1.0]]), "spherical": np.array([0.5, 1.0])}
    return dict(weights_init=np.array([0.4, 0.6]), means_init=np.array([[-1.0, 0.0], [1.0, 0.0]]),
                precisions_init=prec[covariance_type])


@pytest.fixture(scope="module")
def fitted(X):
    return GaussianMixture(K, **init()).fit(X)


# ---------------------------------------------------------------------- parameters


def test_parameters_and_defaults_match_sklearn():
    ours, ref = GaussianMixture().get_params(), SKGaussianMixture().get_params()
    assert set(ours) == set(ref) | {"chunk_size", "missing"}
    for name, value in ref.items():
        assert ours[name] == value, name
    assert ours["chunk_size"] is None
    # n_components is the only positional parameter
    assert GaussianMixture(3).n_components == 3
    with pytest.raises(TypeError):
        GaussianMixture(3, "diag")


def test_fit_never_rewrites_parameters_and_reads_them_at_fit_time(X):
    weights = [0.4, 0.6]
    gm = GaussianMixture(K, weights_init=weights, means_init=init()["means_init"],
                         precisions_init=init()["precisions_init"])
    gm.fit(X)
    assert gm.weights_init is weights                          # sklearn replaces it by an array
    gm.covariance_type = "diag"                                # set as an attribute, read at fit
    gm.precisions_init = init("diag")["precisions_init"]
    gm.fit(X)
    assert gm.covariances_.shape == (K, D)
    assert clone(gm).get_params()["covariance_type"] == "diag"


def test_pickle_and_clone(fitted, X):
    back = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(back.predict_proba(X), fitted.predict_proba(X))
    np.testing.assert_array_equal(back.means_, fitted.means_)
    c = clone(fitted)
    assert not hasattr(c, "means_") and c.get_params()["n_components"] == K


def test_feature_names_in(X, monkeypatch):
    # No dataframe library is installed: stand in for one at sklearn's single extraction point.
    import sklearn.utils.validation as validation
    names = np.array(["a", "b"], dtype=object)
    monkeypatch.setattr(validation, "_get_feature_names",
                        lambda data: names if isinstance(data, np.ndarray) else None)
    gm = GaussianMixture(K, **init()).fit(X)
    np.testing.assert_array_equal(gm.feature_names_in_, names)
    gm.predict(X)                                    # same names at predict: accepted
    monkeypatch.setattr(validation, "_get_feature_names", lambda data: None)
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        gm.predict(X)
    assert not hasattr(GaussianMixture(K, **init()).fit(X), "feature_names_in_")


# ---------------------------------------------------------------------- errors


HYPER_ERRORS = [
    ("n_components", 0, "The 'n_components' parameter of GaussianMixture must be an int in the "
                        "range [1, inf). Got 0 instead."),
    ("covariance_type", "bad", "The 'covariance_type' parameter of GaussianMixture must be a str "
                               "among"),
    ("tol", -1, "The 'tol' parameter of GaussianMixture must be a float in the range [0.0, inf). "
                "Got -1 instead."),
    ("reg_covar", -1e-3, "The 'reg_covar' parameter of GaussianMixture must be a float in the "
                         "range [0.0, inf)"),
    ("max_iter", -1, "The 'max_iter' parameter of GaussianMixture must be an int in the range "
                     "[0, inf)"),
    ("n_init", 0, "The 'n_init' parameter of GaussianMixture must be an int in the range [1, inf)"),
    ("init_params", "bad", "The 'init_params' parameter of GaussianMixture must be a str among"),
    ("warm_start", "yes", "The 'warm_start' parameter of GaussianMixture must be an instance of "
                          "'bool' or an instance of 'numpy.bool'. Got 'yes' instead."),
    ("random_state", "x", "The 'random_state' parameter of GaussianMixture must be an int in the "
                          "range [0, 4294967295]"),
    ("verbose_interval", 0, "The 'verbose_interval' parameter of GaussianMixture must be an int"),
    ("chunk_size", 0, "The 'chunk_size' parameter of GaussianMixture must be None or an int"),
]


@pytest.mark.parametrize("name, value, message", HYPER_ERRORS)
def test_bad_hyper_parameters(X, name, value, message):
    gm = GaussianMixture(**{"n_components": K, name: value})   # accepted at construction
    with pytest.raises(InvalidParameterError, match=re.escape(message)):
        gm.fit(X)


BAD_X = [
    (lambda X: X[:1], "Found array with 1 sample(s) (shape=(1, 2)) while a minimum of 2 is "
                      "required by GaussianMixture."),
    (lambda X: X[:0], "Found array with 0 sample(s) (shape=(0, 2)) while a minimum of 2 is "
                      "required by GaussianMixture."),
    (lambda X: X[:, :0], "Found array with 0 feature(s) (shape=(120, 0)) while a minimum of 1 is "
                         "required by GaussianMixture."),
    (lambda X: X[:, 0], "Expected 2D array, got 1D array instead"),
    (lambda X: X[:, :, None], "Found array with dim 3, while dim <= 2 is required by "
                              "GaussianMixture."),
    (lambda X: np.where(np.arange(120)[:, None] == 3, np.nan, X), "Input X contains NaN."),
    (lambda X: np.where(np.arange(120)[:, None] == 3, np.inf, X), "Input X contains infinity"),
    (lambda X: X + 1j, "Complex data not supported"),
    (lambda X: np.full(X.shape, "a"), "could not convert string to float"),
]


@pytest.mark.parametrize("make, message", BAD_X)
def test_bad_X_in_fit(X, make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        GaussianMixture(K).fit(make(X))


@pytest.mark.parametrize("make, message", [BAD_X[3], BAD_X[4], BAD_X[5], BAD_X[6]])
@pytest.mark.parametrize("method", ["predict", "predict_proba", "score_samples", "score"])
def test_bad_X_at_predict(fitted, X, make, message, method):
    with pytest.raises(ValueError, match=re.escape(message)):
        getattr(fitted, method)(make(X))


def test_sparse_X_is_a_type_error(X):
    with pytest.raises(TypeError, match="Sparse data was passed for X, but dense data is "
                                        "required"):
        GaussianMixture(K).fit(scipy.sparse.csr_matrix(X))


def test_too_few_samples_for_components(X):
    with pytest.raises(ValueError, match=re.escape(
            "Expected n_samples >= n_components but got n_components = 50, n_samples = 40")):
        GaussianMixture(50).fit(X[:40])


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score_samples", "score", "bic",
                                    "aic"])
def test_not_fitted(X, method):
    msg = ("This GaussianMixture instance is not fitted yet. Call 'fit' with appropriate "
           "arguments before using this estimator.")
    with pytest.raises(NotFittedError, match=re.escape(msg)):
        getattr(GaussianMixture(), method)(X)
    with pytest.raises(NotFittedError):
        GaussianMixture().sample(3)
    with pytest.raises(NotFittedError):
        GaussianMixture().params_


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score_samples", "score"])
def test_wrong_n_features(fitted, X, method):
    with pytest.raises(ValueError, match=re.escape(
            "X has 3 features, but GaussianMixture is expecting 2 features as input.")):
        getattr(fitted, method)(np.hstack([X, X[:, :1]]))


def test_warm_start_with_other_n_features(X):
    gm = GaussianMixture(K, warm_start=True, **init()).fit(X)
    with pytest.raises(ValueError, match="X has 3 features, but GaussianMixture is expecting 2"):
        gm.fit(np.hstack([X, X[:, :1]]))


@pytest.mark.parametrize("n", [0, -1])
def test_sample_needs_a_positive_count(fitted, n):
    with pytest.raises(ValueError, match=re.escape(f"Invalid value for 'n_samples': {n} . The "
                                                   "sampling requires at least one sample.")):
        fitted.sample(n)


@pytest.mark.parametrize("dtype, covariance_type", [(np.float64, "full"),
                                                    (np.float32, "diag")])
def test_ill_defined_covariance(dtype, covariance_type):
    # two distinct points, one component on each, no regularisation: zero covariance
    X = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0]]), 60, axis=0).astype(dtype)
    kw = dict(init(covariance_type), means_init=np.array([[0.0, 0.0], [1.0, 1.0]]))
    msg = ("Fitting the mixture model failed because some components have ill-defined empirical "
           "covariance (for instance caused by singleton or collapsed samples). Try to decrease "
           "the number of components, increase reg_covar, or scale the input data.")
    if dtype == np.float32:
        msg += (" The numerical accuracy can also be improved by passing float64 data instead of "
                "float32.")
    gm = GaussianMixture(K, covariance_type=covariance_type, reg_covar=0.0, **kw)
    with pytest.raises(ValueError, match=re.escape(msg) + "$"):
        gm.fit(X)
    # sklearn agrees that this fit is ill-defined
    with pytest.raises(ValueError, match="ill-defined empirical covariance"):
        SKGaussianMixture(K, covariance_type=covariance_type, reg_covar=0.0, **kw).fit(X)
    # and regularisation fixes it
    gm.set_params(reg_covar=1e-6).fit(X)
    np.testing.assert_allclose(np.sort(gm.means_[:, 0]), [0.0, 1.0], atol=1e-6)


INIT_ERRORS = [
    (dict(weights_init=[[0.5], [0.5]]), "The parameter 'weights' should have the shape of (2,), "
                                        "but got (2, 1)"),
    (dict(weights_init=[1.2, -0.2]), "The parameter 'weights' should be in the range [0, 1], but "
                                     "got max value 1.20000, min value -0.20000"),
    (dict(weights_init=[0.5, 0.6]), "The parameter 'weights' should be normalized, but got "
                                    "sum(weights) = 1.10000"),
    (dict(weights_init=[0.5, 0.5 + 1e-7]), "should be normalized"),
    (dict(weights_init=[np.nan, 0.5]), "Input contains NaN"),
    (dict(means_init=np.zeros((3, 2))), "The parameter 'means' should have the shape of (2, 2), "
                                        "but got (3, 2)"),
    (dict(means_init=np.zeros(2)), "The parameter 'means' should have the shape of (2, 2), but "
                                   "got (2,)"),
    (dict(means_init=[[0.0, np.nan], [1.0, 1.0]]), "Input contains NaN"),
    (dict(precisions_init=np.eye(2)), "The parameter 'full precision' should have the shape of "
                                      "(2, 2, 2), but got (2, 2)"),
    (dict(precisions_init=[[[1.0, 0.5], [0.0, 1.0]]] * 2), "'full precision' should be "
                                                           "symmetric, positive-definite"),
    (dict(precisions_init=[[[1.0, 2.0], [2.0, 1.0]]] * 2), "'full precision' should be "
                                                           "symmetric, positive-definite"),
    (dict(precisions_init=[[[1.0, np.nan], [0.0, 1.0]]] * 2), "Input contains NaN"),
    (dict(covariance_type="tied", precisions_init=-np.eye(2)), "'tied precision' should be "
                                                               "symmetric, positive-definite"),
    (dict(covariance_type="tied", precisions_init=np.eye(3)), "The parameter 'tied precision' "
                                                              "should have the shape of (2, 2)"),
    (dict(covariance_type="diag", precisions_init=[[1.0, 0.0], [1.0, 1.0]]),
     "'diag precision' should be positive"),
    (dict(covariance_type="diag", precisions_init=[1.0, 1.0]), "The parameter 'diag precision' "
                                                               "should have the shape of (2, 2)"),
    (dict(covariance_type="spherical", precisions_init=[1.0, -1.0]),
     "'spherical precision' should be positive"),
    (dict(covariance_type="spherical", precisions_init=[1.0, 1.0, 1.0]),
     "The parameter 'spherical precision' should have the shape of (2,), but got (3,)"),
]


@pytest.mark.parametrize("kwargs, message", INIT_ERRORS)
def test_bad_init_arrays(X, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        GaussianMixture(K, **kwargs).fit(X)
    with pytest.raises(ValueError):       # sklearn rejects the same input
        SKGaussianMixture(K, **kwargs).fit(X)


def test_bad_sample_weight(X):
    with pytest.raises(ValueError, match="sample_weight"):
        GaussianMixture(K).fit(X, sample_weight=np.ones(5))
    with pytest.raises(ValueError, match="[Nn]egative"):
        GaussianMixture(K).fit(X, sample_weight=-np.ones(len(X)))


# ---------------------------------------------------------------------- gmmjax extensions


def test_sample_weight_equals_repeated_rows(X):
    w = np.random.RandomState(2).randint(0, 3, len(X))
    weighted = GaussianMixture(K, **init()).fit(X, sample_weight=w)
    repeated = GaussianMixture(K, **init()).fit(np.repeat(X, w, axis=0))
    for name in ["weights_", "means_", "covariances_"]:
        np.testing.assert_allclose(getattr(weighted, name), getattr(repeated, name), rtol=1e-10,
                                   atol=1e-10)
    np.testing.assert_allclose(weighted.lower_bound_, repeated.lower_bound_, rtol=1e-10)
    assert weighted.n_iter_ == repeated.n_iter_


def test_chunk_size_gives_the_same_fit(X, fitted):
    chunked = GaussianMixture(K, chunk_size=32, **init()).fit(X)
    for name in ["weights_", "means_", "covariances_", "precisions_cholesky_"]:
        np.testing.assert_allclose(getattr(chunked, name), getattr(fitted, name), rtol=1e-10,
                                   atol=1e-12)
    np.testing.assert_allclose(chunked.score_samples(X), fitted.score_samples(X), rtol=1e-12)


def test_params_and_from_params(X, fitted):
    params = fitted.params_
    assert isinstance(params, gj.MixtureParams) and params.covariance_type == "full"
    np.testing.assert_array_equal(params.means, fitted.means_)
    back = GaussianMixture.from_params(params)
    np.testing.assert_allclose(back.score_samples(X), fitted.score_samples(X), rtol=1e-12)
    assert back.n_components == K and back.n_features_in_ == D and back.converged_ is False
    # from the functional API (float32: x64 off), back to the functional API
    res = gj.fit(random_key(0), X.astype(np.float32), K, covariance_type="diag")
    est = GaussianMixture.from_params(res.params, random_state=0)
    assert est.covariance_type == "diag" and est.means_.dtype == np.float32
    np.testing.assert_array_equal(est.predict(X.astype(np.float32)),
                                  np.asarray(gj.predict(res.params, X.astype(np.float32))))
    with pytest.raises(ValueError, match="one set of parameters"):
        GaussianMixture.from_params(jax.tree_util.tree_map(lambda a: a[None], res.params))


def test_estimator_is_the_functional_fit_from_sklearns_init(X):
    """The estimator draws scikit-learn's initial responsibilities from random_state and runs
    gmmjax.fit from them on the padded rows (a facade, not a second implementation)."""
    gm = GaussianMixture(K, random_state=4, tol=1e-6, init_params="random", n_init=2).fit(X)
    w = np.r_[np.ones(len(X)), np.zeros(8)]
    resp = initial_resp(X, None, K, "random", np.random.RandomState(4), 2)
    with jax.enable_x64(True):
        res = gj.fit(jax.random.key(123), np.vstack([X, np.zeros((8, D))]), K, n_init=2,
                     init=np.pad(resp, [(0, 0), (0, 8), (0, 0)]), tol=1e-6, sample_weight=w)
        np.testing.assert_allclose(gm.means_, np.asarray(res.params.means), rtol=1e-12)
        assert gm.n_iter_ == int(res.n_iter)


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++"])
def test_initial_kmeans_runs_on_one_blas_thread(X, monkeypatch, init_params):
    """The host k-means of the initialisation runs with one BLAS thread (no OpenBLAS workers
    left spinning beside the compiled fit), draws scikit-learn's own labels all the same, and
    leaves the user's thread settings as they were."""
    import sklearn.cluster
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads():
        return {lib["filepath"]: lib["num_threads"] for lib in threadpool_info()
                if lib["user_api"] == "blas"}

    seen = []
    for name in ("KMeans", "kmeans_plusplus"):
        real = getattr(sklearn.cluster, name)

        def spy(*args, _real=real, **kwargs):
            seen.append(blas_threads())
            return _real(*args, **kwargs)
        monkeypatch.setattr(sklearn.cluster, name, spy)
    with threadpool_limits(2, user_api="blas"):
        before = blas_threads()
        resp = initial_resp(X, None, K, init_params, np.random.RandomState(5), 2)
        assert blas_threads() == before
    assert len(seen) == 2 and all(set(s.values()) == {1} for s in seen), seen
    monkeypatch.undo()
    rs = np.random.RandomState(5)        # scikit-learn's own draws, BLAS threads as they were
    for r in resp:
        if init_params == "kmeans":
            labels = sklearn.cluster.KMeans(n_clusters=K, n_init=1, random_state=rs).fit(X).labels_
            np.testing.assert_array_equal(r.argmax(axis=1), labels)
        else:
            _, idx = sklearn.cluster.kmeans_plusplus(X, K, random_state=rs)
            np.testing.assert_array_equal(r[idx, np.arange(K)], 1)
            assert r.sum() == K


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random", "random_from_data"])
def test_same_random_state_same_fit_as_sklearn(covariance_type, init_params):
    """A user who changes the import gets scikit-learn's answers: the same random_state draws the
    same initialisations (scikit-learn's own functions, in its order: an int or a RandomState
    consumed across n_init restarts), and EM then agrees to rounding (float64)."""
    if covariance_type == "tied" and init_params in ("k-means++", "random_from_data"):
        pytest.skip("deliberate difference: point-mass inits get the tied covariance reg_covar "
                    "(scikit-learn's tied formula assumes rows of resp summing to 1)")
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(size=(150, 2)), rng.normal(size=(100, 2)) * 0.5 + 4,
                        rng.normal(size=(50, 2)) * 0.3 - 3])
    n_init = 1 if covariance_type == "tied" else 3   # tied: restarts tie up to permutation
    for random_state in (7, np.random.RandomState(7)):
        kw = dict(covariance_type=covariance_type, init_params=init_params, n_init=n_init,
                  tol=1e-6)
        ours = GaussianMixture(3, random_state=copy.deepcopy(random_state), **kw).fit(x)
        ref = SKGaussianMixture(3, random_state=copy.deepcopy(random_state), **kw).fit(x)
        assert ours.n_iter_ == ref.n_iter_
        for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
            np.testing.assert_allclose(getattr(ours, name), getattr(ref, name), rtol=1e-9,
                                       atol=1e-11, err_msg=name)
        np.testing.assert_allclose(ours.lower_bound_, ref.lower_bound_, rtol=1e-12)
        # a RandomState goes on from where fit left it, in both: the same samples after
        if not isinstance(random_state, int):
            np.testing.assert_allclose(ours.sample(5)[0], ref.sample(5)[0], rtol=1e-9)


def test_refit_same_shape_compiles_nothing(X, fitted):
    # another test in this worker may have dropped the programs held in memory
    # (compile_cache.clear_memory): hold this shape's program again first
    GaussianMixture(K, **init()).fit(X)
    before = fit_module._fit_program._cache_size()
    GaussianMixture(K, **init()).fit(X[::-1] + 0.1)
    GaussianMixture(K, **init()).fit(X[:100])           # same padded bucket
    assert fit_module._fit_program._cache_size() == before


def test_pipeline_and_grid_search(X):
    pipe = make_pipeline(StandardScaler(), GaussianMixture(K, random_state=0, n_init=3,
                                                           tol=1e-6, init_params="random"))
    labels = pipe.fit(X).predict(X)
    assert np.bincount(labels).tolist() == [60, 60]
    search = GridSearchCV(GaussianMixture(random_state=0, n_init=3, tol=1e-6,
                                          init_params="random"),
                          {"n_components": [1, 2]}, cv=KFold(2, shuffle=True, random_state=0))
    search.fit(X)
    assert search.best_params_ == {"n_components": 2}
    assert search.best_estimator_.means_.shape == (2, D)


def test_fit_skips_the_labelling_e_step_that_fit_predict_runs(X, monkeypatch):
    """``fit`` does not run fit_predict's final E-step (its labels would be discarded: one
    evaluation program and one pass over the rows less); ``fit_predict`` still labels with
    it, equal to ``fit(X).predict(X)``."""
    calls = []
    original = GaussianMixture._labels

    def counting(self, data):
        calls.append(data.shape)
        return original(self, data)

    monkeypatch.setattr(GaussianMixture, "_labels", counting)
    gm = GaussianMixture(3, random_state=0).fit(X)
    assert calls == []
    labels = GaussianMixture(3, random_state=0).fit_predict(X)
    assert calls == [X.shape]
    np.testing.assert_array_equal(labels, gm.predict(X))
