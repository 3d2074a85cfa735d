"""Side-by-side scenarios: gmmjax.GaussianMixture vs sklearn.mixture.GaussianMixture.

Deterministic inits (weights_init + means_init + precisions_init): every attribute and method agrees
to 1e-10 in float64 and 1e-4 in float32. Random inits on well-separated data: the same optimum.
Shapes are shared across tests (N=120 -> one padded bucket, D=2, K=2) to keep compiles few.
"""

import copy
import re
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SKGaussianMixture

from gmmjax import GaussianMixture

COV_TYPES = ["full", "tied", "diag", "spherical"]
K, D, N = 2, 2, 120


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.RandomState(0)
    a = rng.randn(N // 2, D) @ np.array([[1.0, 0.3], [0.0, 0.7]]) + [-3.0, 1.0]
    b = rng.randn(N // 2, D) * [0.5, 1.5] + [3.0, -2.0]
    return np.vstack([a, b])


def deterministic_init(covariance_type):
    prec = {"full": np.array([np.eye(D), 2 * np.eye(D)]), "tied": np.eye(D) * 0.5,
            "diag": np.array([[1.0, 0.5], [2.0, 1.0]]), "spherical": np.array([0.5, 1.0])}
    return dict(weights_init=np.array([0.4, 0.6]), means_init=np.array([[-1.0, 0.0], [1.0, 0.0]]),
                precisions_init=prec[covariance_type])


def tolerances(dtype):
    return dict(rtol=1e-10, atol=1e-10) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-4)


ATTRS = ["weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_deterministic_init_matches_sklearn(blobs, covariance_type, dtype):
    X = blobs.astype(dtype)
    kw = dict(n_components=K, covariance_type=covariance_type,
              **deterministic_init(covariance_type))
    ours = GaussianMixture(**kw).fit(X)
    ref = SKGaussianMixture(**kw).fit(X)
    tol = tolerances(dtype)
    for name in ATTRS:
        got, want = getattr(ours, name), getattr(ref, name)
        assert got.shape == want.shape, name
        assert got.dtype == dtype, name    # (sklearn promotes with float64 init arrays)
        np.testing.assert_allclose(got, want, err_msg=name, **tol)
    assert ours.n_iter_ == ref.n_iter_
    assert ours.converged_ is True and ref.converged_
    assert type(ours.lower_bound_) is np.dtype(dtype).type
    np.testing.assert_allclose(ours.lower_bound_, ref.lower_bound_, **tol)
    assert isinstance(ours.lower_bounds_, list) and len(ours.lower_bounds_) == ours.n_iter_
    np.testing.assert_allclose(ours.lower_bounds_, ref.lower_bounds_, **tol)
    # upper-triangular precision Cholesky with precision = U Uᵀ
    if covariance_type in ("full", "tied"):
        U = ours.precisions_cholesky_
        np.testing.assert_array_equal(U, np.triu(U))
    # methods on the fitted model, on new rows
    Xt = (blobs[::7] * 1.1).astype(dtype)
    np.testing.assert_array_equal(ours.predict(Xt), ref.predict(Xt))
    assert ours.predict(Xt).dtype == np.int64
    np.testing.assert_allclose(ours.predict_proba(Xt), ref.predict_proba(Xt), **tol)
    np.testing.assert_allclose(ours.score_samples(Xt), ref.score_samples(Xt), **tol)
    assert ours.score_samples(Xt).dtype == dtype
    assert isinstance(ours.score(Xt), float)
    np.testing.assert_allclose(ours.score(Xt), ref.score(Xt), **tol)
    rtol = tol["rtol"]
    np.testing.assert_allclose(ours.bic(Xt), ref.bic(Xt), rtol=rtol)
    np.testing.assert_allclose(ours.aic(Xt), ref.aic(Xt), rtol=rtol)
    assert ours._n_parameters() == ref._n_parameters()
    np.testing.assert_array_equal(ours.fit_predict(X), ref.fit_predict(X))


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_sample_grouped_and_distributed(blobs, covariance_type):
    gm = GaussianMixture(K, covariance_type=covariance_type, random_state=0,
                         **deterministic_init(covariance_type)).fit(blobs)
    Xs, ys = gm.sample(4000)
    np.testing.assert_array_equal(gm.sample(4000)[0], Xs)   # int random_state: same draws
    ref_X, ref_y = SKGaussianMixture(K, covariance_type=covariance_type, random_state=0,
                                     **deterministic_init(covariance_type)).fit(blobs).sample(10)
    assert Xs.shape == (4000, D) and Xs.dtype == ref_X.dtype == np.float64
    assert ys.dtype == ref_y.dtype == np.int64
    assert np.all(np.diff(ys) >= 0)                       # grouped by component, ascending
    counts = np.bincount(ys, minlength=K)
    np.testing.assert_allclose(counts / 4000, gm.weights_, atol=0.03)
    cov = gm.covariances_
    for k in range(K):
        rows = Xs[ys == k]
        full_cov = {"full": lambda: cov[k], "tied": lambda: cov,
                    "diag": lambda: np.diag(cov[k]), "spherical": lambda: cov[k] * np.eye(D)}
        c = full_cov[covariance_type]()
        se = np.sqrt(np.diag(c) / len(rows))
        assert np.all(np.abs(rows.mean(0) - gm.means_[k]) < 5 * se)
        np.testing.assert_allclose(np.cov(rows.T), c, rtol=0.15, atol=0.05)


@pytest.mark.parametrize("random_state", [0, "instance"])
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_sample_equals_sklearn_for_the_same_parameters(blobs, covariance_type, random_state):
    """sample() follows scikit-learn's NumPy procedure: with our fitted attributes copied into a
    scikit-learn estimator and the same random_state, both draw the same rows and labels (a
    RandomState instance advances identically over successive calls)."""
    state = (lambda: np.random.RandomState(3)) if random_state == "instance" else (lambda: 0)
    ours = GaussianMixture(K, covariance_type=covariance_type, random_state=state(),
                           **deterministic_init(covariance_type)).fit(blobs)
    ref = SKGaussianMixture(K, covariance_type=covariance_type, random_state=state())
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_"):
        setattr(ref, name, getattr(ours, name))
    ours.random_state = state()
    for n in (1, 7, 301):
        x, y = ours.sample(n)
        x_ref, y_ref = ref.sample(n)
        np.testing.assert_array_equal(x, x_ref)
        np.testing.assert_array_equal(y, y_ref)
        assert x.dtype == x_ref.dtype and y.dtype == y_ref.dtype


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random", "random_from_data"])
def test_random_inits_reach_sklearn_optimum(blobs, init_params):
    # tol=1e-6: a uniform-random start sits near a saddle that a loose tol stops at (both libs)
    kw = dict(init_params=init_params, n_init=3, random_state=1, tol=1e-6)
    ours = GaussianMixture(K, **kw).fit(blobs)
    ref = SKGaussianMixture(K, **kw).fit(blobs)
    o, r = np.argsort(ours.means_[:, 0]), np.argsort(ref.means_[:, 0])
    np.testing.assert_allclose(ours.means_[o], ref.means_[r], atol=1e-3)
    np.testing.assert_allclose(ours.weights_[o], ref.weights_[r], atol=1e-3)
    np.testing.assert_allclose(ours.covariances_[o], ref.covariances_[r], atol=1e-2)
    np.testing.assert_allclose(ours.score(blobs), ref.score(blobs), atol=1e-4)
    np.testing.assert_array_equal(ours.predict(blobs)[ref.predict(blobs) == r[0]], o[0])


def test_partial_inits_match_sklearn_optimum(blobs):
    # weights and means given, covariances from the k-means init: same optimum as sklearn
    kw = dict(weights_init=[0.5, 0.5], means_init=[[-3.0, 1.0], [3.0, -2.0]], tol=1e-8)
    ours = GaussianMixture(K, random_state=0, **kw).fit(blobs)
    ref = SKGaussianMixture(K, random_state=0, **kw).fit(blobs)
    np.testing.assert_allclose(ours.means_, ref.means_, atol=1e-6)
    np.testing.assert_allclose(ours.covariances_, ref.covariances_, atol=1e-6)
    # precisions only
    kw = dict(precisions_init=np.array([np.eye(D), np.eye(D)]), tol=1e-8)
    ours = GaussianMixture(K, random_state=0, **kw).fit(blobs)
    ref = SKGaussianMixture(K, random_state=0, **kw).fit(blobs)
    o, r = np.argsort(ours.means_[:, 0]), np.argsort(ref.means_[:, 0])
    np.testing.assert_allclose(ours.means_[o], ref.means_[r], atol=1e-6)
    # the given pieces are used: max_iter=0 returns them
    zero = GaussianMixture(K, max_iter=0, means_init=[[-3.0, 1.0], [3.0, -2.0]]).fit(blobs)
    np.testing.assert_array_equal(zero.means_, [[-3.0, 1.0], [3.0, -2.0]])


def test_warm_start_continues_exactly(blobs):
    init = deterministic_init("full")
    kw = dict(n_components=K, tol=0.0, **init)
    # fit(max_iter=1) twice == fit(max_iter=2) (sklearn's), and equals sklearn's warm start
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warm = GaussianMixture(max_iter=1, warm_start=True, **kw)
        warm.fit(blobs)
        warm.fit(blobs)
        cold = SKGaussianMixture(max_iter=2, **kw).fit(blobs)
        ref = SKGaussianMixture(max_iter=1, warm_start=True, **kw)
        ref.fit(blobs)
        ref.fit(blobs)
    for name in ATTRS:
        np.testing.assert_allclose(getattr(warm, name), getattr(cold, name), rtol=1e-10,
                                   atol=1e-10)
        np.testing.assert_allclose(getattr(warm, name), getattr(ref, name), rtol=1e-10,
                                   atol=1e-10)
    assert warm.n_iter_ == ref.n_iter_ == 1
    np.testing.assert_allclose(warm.lower_bounds_, ref.lower_bounds_, rtol=1e-10)
    np.testing.assert_allclose(warm.lower_bound_, cold.lower_bound_, rtol=1e-10)


def test_warm_start_can_converge_at_first_iteration(blobs):
    kw = dict(n_components=K, warm_start=True, **deterministic_init("full"))
    ours = GaussianMixture(**kw).fit(blobs)
    ref = SKGaussianMixture(**kw).fit(blobs)
    assert ours.converged_
    # (max_iter=1 reuses the compiled warm-start program of the test above)
    ours.set_params(max_iter=1).fit(blobs)
    ref.set_params(max_iter=1).fit(blobs)
    # the previous lower_bound_ is the starting "prev": converged after one iteration
    assert ours.n_iter_ == ref.n_iter_ == 1
    assert ours.converged_ and ref.converged_
    assert len(ours.lower_bounds_) == 1
    np.testing.assert_allclose(ours.lower_bound_, ref.lower_bound_, rtol=1e-10)
    # warm_start=False refits from scratch: same as a fresh estimator
    ours.set_params(warm_start=False, max_iter=100).fit(blobs)
    assert ours.n_iter_ == GaussianMixture(**{**kw, "warm_start": False}).fit(blobs).n_iter_ > 1


def test_fit_predict_equals_fit_then_predict(blobs):
    # sklearn's test_gaussian_mixture_fit_predict: max_iter small, n_init > 1, unconverged
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for seed in range(3):
            g = GaussianMixture(K, n_init=3, random_state=seed, tol=0.0)
            labels = g.fit_predict(blobs)
            np.testing.assert_array_equal(labels, g.predict(blobs))


def test_max_iter_zero_returns_initialisation(blobs):
    init = deterministic_init("full")
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # no ConvergenceWarning for max_iter=0
        ours = GaussianMixture(K, max_iter=0, **init).fit(blobs)
    assert ours.lower_bound_ == -np.inf and ours.lower_bounds_ == []
    assert ours.n_iter_ == 0 and ours.converged_ is False
    np.testing.assert_allclose(ours.weights_, init["weights_init"])
    np.testing.assert_allclose(ours.means_, init["means_init"])
    np.testing.assert_allclose(ours.precisions_, init["precisions_init"])


def test_convergence_warning_text(blobs):
    msg = ("Best performing initialization did not converge. Try different init parameters, or "
           "increase max_iter, tol, or check for degenerate data.")
    with pytest.warns(ConvergenceWarning, match=re.escape(msg)):
        GaussianMixture(K, max_iter=1, tol=0.0, **deterministic_init("full")).fit(blobs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        GaussianMixture(K, **deterministic_init("full")).fit(blobs)


def test_random_state_reproducibility(blobs):
    kw = dict(n_components=K, init_params="random", tol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = GaussianMixture(random_state=3, **kw).fit(blobs)
        b = GaussianMixture(random_state=3, **kw).fit(blobs)
        np.testing.assert_array_equal(a.means_, b.means_)
        # a RandomState instance: a deep copy reproduces; the same instance advances
        est = GaussianMixture(random_state=np.random.RandomState(7), **kw)
        twin = copy.deepcopy(est)
        first = est.fit(blobs).means_.copy()
        np.testing.assert_array_equal(twin.fit(blobs).means_, first)
        assert not np.allclose(est.fit(blobs).means_, first)
        # None draws from numpy's global stream: seeding it reproduces
        np.random.seed(11)
        c = GaussianMixture(**kw).fit(blobs).means_
        np.random.seed(11)
        np.testing.assert_array_equal(GaussianMixture(**kw).fit(blobs).means_, c)


def test_first_restart_of_n_init_equals_single_init(blobs, capsys):
    kw = dict(n_components=K, init_params="random", tol=1e-6, random_state=5, verbose=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        single = GaussianMixture(n_init=1, **kw).fit(blobs)
        capsys.readouterr()
        multi = GaussianMixture(n_init=3, **kw).fit(blobs)
    out = capsys.readouterr().out
    bounds = [float(b) for b in re.findall(r"lower bound (-?[\d.]+)\.", out)]
    assert len(bounds) == 3
    assert bounds[0] == pytest.approx(single.lower_bound_, abs=1e-5)
    assert multi.lower_bound_ == pytest.approx(max(bounds), abs=1e-5)
    assert multi.lower_bound_ >= single.lower_bound_ - 1e-12


def test_verbose_output_like_sklearn(blobs, capsys):
    kw = dict(n_components=K, tol=1e-12, verbose_interval=5,
              **deterministic_init("full"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for verbose in (1, 2):
            SKGaussianMixture(verbose=verbose, **kw).fit(blobs)
            ref = capsys.readouterr().out.splitlines()
            GaussianMixture(verbose=verbose, **kw).fit(blobs)
            ours = capsys.readouterr().out.splitlines()
            assert len(ours) == len(ref)
            for a, b in zip(ours, ref):
                # same lines up to the timings
                pattern = re.sub(r"time lapse [\d.]+s", "time lapse XXs", b)
                assert re.sub(r"time lapse [\d.]+s", "time lapse XXs", a) == pattern


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_follows_X_and_x64_stays_off(blobs, dtype):
    import jax
    before = jax.config.jax_enable_x64
    gm = GaussianMixture(K, covariance_type="spherical",
                         **deterministic_init("spherical")).fit(blobs.astype(dtype))
    assert jax.config.jax_enable_x64 == before
    for name in ATTRS:
        assert getattr(gm, name).dtype == dtype
    assert type(gm.lower_bound_) is np.dtype(dtype).type
    # float32 model on float64 X: results promote to float64 (as sklearn)
    assert gm.predict_proba(blobs).dtype == np.float64
    assert gm.score_samples(blobs.astype(np.float32)).dtype == dtype
    # integer X is converted to float64 in fit
    gm_int = GaussianMixture(K, covariance_type="spherical",
                             **deterministic_init("spherical")).fit(np.round(blobs).astype(int))
    assert gm_int.means_.dtype == np.float64
