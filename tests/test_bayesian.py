"""gmmjax.bayesian / fit_bayesian: agreement with sklearn's BayesianGaussianMixture, ELBO
monotonicity, weights, chunking, vmap, warm start and prior validation.

Shapes are shared (N=120, D=3, K=3, max_iter=MAX_ITER) so most tests reuse compiled programs.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import BayesianGaussianMixture

import gmmjax as gj
import gmmjax.bayesian as gb

KEY = jax.random.key(0)
K = 3
MAX_ITER = 40
WEIGHT_TYPES = gb.WEIGHT_CONCENTRATION_PRIOR_TYPES


@pytest.fixture(params=WEIGHT_TYPES)
def weight_type(request):
    return request.param


def random_resp(n, seed=1):
    """sklearn's init_params='random' responsibilities for RandomState(seed)."""
    resp = np.random.RandomState(seed).uniform(size=(n, K))
    return resp / resp.sum(1)[:, None]


def sklearn_bgm(X, covariance_type, weight_type, seed=1, **kw):
    kw = {"max_iter": MAX_ITER, **kw}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return BayesianGaussianMixture(
            n_components=K, covariance_type=covariance_type,
            weight_concentration_prior_type=weight_type, init_params="random",
            random_state=seed, **kw).fit(X)


def our_fit(X, covariance_type, weight_type, seed=1, **kw):
    kw = {"max_iter": MAX_ITER, **kw}
    return gj.fit_bayesian(KEY, X, K, covariance_type=covariance_type,
                           weight_concentration_prior_type=weight_type,
                           init=random_resp(len(X), seed).astype(X.dtype), **kw)


def concentration(sk):
    wc = sk.weight_concentration_
    return np.stack(wc) if isinstance(wc, tuple) else wc


def assert_matches_sklearn(res, sk, X, tol):
    post = res.posterior
    assert int(res.n_iter) == sk.n_iter_
    assert bool(res.converged) == sk.converged_
    pairs = [(post.weight_concentration, concentration(sk)),
             (post.mean_precision, sk.mean_precision_), (post.means, sk.means_),
             (post.degrees_of_freedom, sk.degrees_of_freedom_),
             (post.covariances, sk.covariances_),
             (post.precisions_cholesky, sk.precisions_cholesky_),
             (post.precisions, sk.precisions_), (res.params.weights, sk.weights_),
             (res.params.means, sk.means_), (res.priors.mean, sk.mean_prior_),
             (res.priors.covariance, sk.covariance_prior_),
             (res.priors.degrees_of_freedom, sk.degrees_of_freedom_prior_),
             (res.priors.weight_concentration, sk.weight_concentration_prior_),
             (res.priors.mean_precision, sk.mean_precision_prior_)]
    for mine, theirs in pairs:
        np.testing.assert_allclose(mine, theirs, rtol=tol, atol=tol)
    # sklearn's tied bound is a (1,) array; its bound is a total over samples (~ -700 here).
    lbs = np.array([np.squeeze(v) for v in sk.lower_bounds_])
    np.testing.assert_allclose(res.lower_bounds[:sk.n_iter_], lbs, rtol=tol, atol=tol)
    np.testing.assert_allclose(res.lower_bound, np.squeeze(sk.lower_bound_), rtol=tol, atol=tol)
    np.testing.assert_allclose(gb.log_prob(post, X), sk.score_samples(X), rtol=tol, atol=tol)
    np.testing.assert_allclose(gb.predict_proba(post, X), sk.predict_proba(X), rtol=tol, atol=tol)


def test_matches_sklearn_float64(blobs, covariance_type, weight_type, x64):
    sk = sklearn_bgm(blobs, covariance_type, weight_type, tol=1e-6)
    res = our_fit(blobs, covariance_type, weight_type, tol=1e-6)
    assert res.posterior.means.dtype == jnp.float64
    assert_matches_sklearn(res, sk, blobs, 1e-8)
    np.testing.assert_array_equal(gb.predict(res.posterior, blobs), sk.predict(blobs))


def test_lower_bound_is_monotone(blobs, covariance_type, weight_type, x64):
    # Same compiled program as above (tol is traced): tol=0 runs all MAX_ITER iterations.
    res = our_fit(blobs, covariance_type, weight_type, seed=3, tol=0.0)
    hist = np.asarray(res.lower_bounds)
    assert int(res.n_iter) == MAX_ITER and int(res.status) == gj.Status.MAX_ITER_REACHED
    assert np.all(np.isfinite(hist))
    assert np.all(np.diff(hist) >= -1e-9 * np.abs(hist[1:]))
    assert hist[-1] > hist[0]


def test_float32_follows_float64(blobs):
    # float32 in -> float32 out; a fixed number of iterations (tol=0) tracks sklearn's float64.
    covariance_type = "full"
    X = blobs.astype(np.float32)
    sk = sklearn_bgm(blobs, covariance_type, "dirichlet_process", tol=0.0)
    res = our_fit(X, covariance_type, "dirichlet_process", tol=0.0)
    assert res.posterior.means.dtype == jnp.float32 and res.lower_bound.dtype == jnp.float32
    np.testing.assert_allclose(res.params.weights, sk.weights_, atol=2e-4)
    np.testing.assert_allclose(res.posterior.means, sk.means_, rtol=1e-3, atol=2e-3)
    np.testing.assert_allclose(res.posterior.covariances, sk.covariances_, rtol=1e-3, atol=2e-3)
    np.testing.assert_allclose(res.lower_bound, np.squeeze(sk.lower_bound_), rtol=1e-4)


def test_user_priors_match_sklearn(blobs, weight_type, x64):
    priors = dict(weight_concentration_prior=0.05, mean_precision_prior=0.3,
                  mean_prior=[1.0, -0.5, 0.2], degrees_of_freedom_prior=4.5,
                  covariance_prior=np.array([[2.0, 0.3, 0.0], [0.3, 1.0, 0.1], [0.0, 0.1, 0.7]]))
    sk = sklearn_bgm(blobs, "full", weight_type, tol=1e-6, **priors)
    res = our_fit(blobs, "full", weight_type, tol=1e-6, **priors)
    assert_matches_sklearn(res, sk, blobs, 1e-8)


@pytest.mark.parametrize("covariance_type,cov_prior", [("diag", [0.5, 2.0, 1.0]),
                                                       ("spherical", 0.7)])
def test_user_covariance_prior_other_types(blobs, covariance_type, cov_prior, x64):
    sk = sklearn_bgm(blobs, covariance_type, "dirichlet_process", tol=1e-6,
                     covariance_prior=cov_prior)
    res = our_fit(blobs, covariance_type, "dirichlet_process", tol=1e-6,
                  covariance_prior=cov_prior)
    assert_matches_sklearn(res, sk, blobs, 1e-8)


def test_offset_data_is_shift_invariant(blobs, x64):
    base = our_fit(blobs, "full", "dirichlet_process", tol=1e-6)
    moved = our_fit(blobs + 1e5, "full", "dirichlet_process", tol=1e-6)
    assert int(moved.n_iter) == int(base.n_iter)
    np.testing.assert_allclose(moved.posterior.means - 1e5, base.posterior.means, atol=1e-7)
    np.testing.assert_allclose(moved.posterior.covariances, base.posterior.covariances,
                               rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(moved.lower_bound, base.lower_bound, rtol=1e-9)


def test_integer_weights_equal_repeated_rows(blobs, x64):
    reps = np.arange(len(blobs)) % 3                  # 0, 1, 2: dropped, once, twice
    resp = random_resp(len(blobs))
    weighted = gj.fit_bayesian(KEY, blobs, K, init=resp, sample_weight=reps.astype(float),
                               max_iter=MAX_ITER, tol=0.0)
    repeated = gj.fit_bayesian(KEY, np.repeat(blobs, reps, axis=0), K,
                               init=np.repeat(resp, reps, axis=0), max_iter=MAX_ITER, tol=0.0)
    np.testing.assert_allclose(weighted.lower_bounds, repeated.lower_bounds, rtol=1e-10)
    for a, b in zip(jax.tree_util.tree_leaves(weighted.posterior),
                    jax.tree_util.tree_leaves(repeated.posterior)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(weighted.priors.covariance, repeated.priors.covariance, rtol=1e-12)


def test_chunked_equals_unchunked(blobs, x64):
    # 120 rows in chunks of 32 (the last one padded with zero-weight rows).
    whole = our_fit(blobs, "tied", "dirichlet_process", tol=0.0)
    chunked = our_fit(blobs, "tied", "dirichlet_process", tol=0.0, chunk_size=32)
    np.testing.assert_allclose(chunked.lower_bounds, whole.lower_bounds, rtol=1e-12)
    for a, b in zip(jax.tree_util.tree_leaves(chunked.posterior),
                    jax.tree_util.tree_leaves(whole.posterior)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_vmap_over_datasets_equals_single_fits(blobs):
    X = blobs.astype(np.float32)
    data = np.stack([X, X[::-1] * 1.5, X + 2.0])
    keys = jax.random.split(KEY, 3)
    # tol=0: a fixed number of iterations, so float32 rounding differences between the batched
    # and unbatched programs cannot move the stopping iteration.
    batched = jax.vmap(lambda k, x: gj.fit_bayesian(k, x, K, init="random", n_init=2,
                                                    max_iter=MAX_ITER, tol=0.0))(keys, data)
    assert batched.posterior.means.shape == (3, K, 3)
    assert batched.restart_lower_bounds.shape == (3, 2)
    for i in range(3):
        single = gj.fit_bayesian(keys[i], data[i], K, init="random", n_init=2, max_iter=MAX_ITER,
                                 tol=0.0)
        assert int(batched.n_iter[i]) == int(single.n_iter) == MAX_ITER
        np.testing.assert_allclose(batched.lower_bound[i], single.lower_bound, rtol=1e-5)
        np.testing.assert_allclose(batched.posterior.means[i], single.posterior.means,
                                   atol=1e-4)


def test_restarts_pick_the_best_bound(blobs):
    res = gj.fit_bayesian(KEY, blobs.astype(np.float32), K, init="random", n_init=2,
                          max_iter=MAX_ITER)
    bounds = np.asarray(res.restart_lower_bounds)
    assert float(res.lower_bound) == bounds.max()
    assert bool(res.converged) == (int(res.status) == gj.Status.CONVERGED)
    np.testing.assert_allclose(np.sum(res.params.weights), 1.0, rtol=1e-6)


def test_warm_start_matches_sklearn(blobs, x64):
    # sklearn: two fits with warm_start and max_iter=MAX_ITER; gmmjax: continue from the posterior
    # with the previous bound, in the same compiled loop.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = BayesianGaussianMixture(n_components=K, init_params="random", random_state=1,
                                     warm_start=True, max_iter=MAX_ITER, tol=1e-9)
        sk.fit(blobs)
        sk.fit(blobs)
    first = our_fit(blobs, "full", "dirichlet_process", tol=1e-9)
    second = gj.fit_bayesian(KEY, blobs, K, init=first.posterior, max_iter=MAX_ITER, tol=1e-9,
                             initial_lower_bound=first.lower_bound)
    assert int(second.n_iter) == sk.n_iter_
    np.testing.assert_allclose(second.posterior.means, sk.means_, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(second.lower_bound, sk.lower_bound_, rtol=1e-10)
    # At a fixed point, a warm start converges at iteration 1 (sklearn's rule).
    again = gj.fit_bayesian(KEY, blobs, K, init=second.posterior, max_iter=MAX_ITER, tol=1e3,
                            initial_lower_bound=second.lower_bound)
    assert int(again.n_iter) == 1 and bool(again.converged)


def test_max_iter_zero_returns_initial_posterior(blobs, x64):
    sk = sklearn_bgm(blobs, "diag", "dirichlet_distribution", max_iter=0)
    res = our_fit(blobs, "diag", "dirichlet_distribution", max_iter=0)
    assert int(res.n_iter) == 0 and float(res.lower_bound) == -np.inf
    np.testing.assert_allclose(res.posterior.means, sk.means_, rtol=1e-10)
    np.testing.assert_allclose(res.posterior.weight_concentration, sk.weight_concentration_,
                               rtol=1e-10)


def test_jit_with_traced_priors_and_ill_defined_status(blobs):
    X = blobs.astype(np.float32)

    @jax.jit
    def run(gamma, cov):
        return gj.fit_bayesian(KEY, X, K, init="random", n_init=2, max_iter=MAX_ITER,
                               weight_concentration_prior=gamma, covariance_prior=cov)

    cov = np.cov(X.T).astype(np.float32)
    eager = gj.fit_bayesian(KEY, X, K, init="random", n_init=2, max_iter=MAX_ITER,
                            weight_concentration_prior=0.5, covariance_prior=cov)
    traced = run(jnp.float32(0.5), cov)
    np.testing.assert_allclose(traced.lower_bound, eager.lower_bound, rtol=1e-5)
    # A traced covariance prior skips the host check; a negative-definite one makes the Wishart
    # scale non-PD, which comes back as a status (the estimator turns it into sklearn's error).
    bad = run(jnp.float32(0.5), -100.0 * np.eye(3, dtype=np.float32))
    assert int(bad.status) == gj.Status.ILL_DEFINED_COVARIANCE and not bool(bad.converged)
    assert np.all(np.asarray(bad.restart_status) == gj.Status.ILL_DEFINED_COVARIANCE)


# ------------------------------------------------------------------------------ bad inputs

@pytest.mark.parametrize("kwargs,message", [
    (dict(degrees_of_freedom_prior=1.0), "should be greater than 2, but got 1.000"),
    (dict(degrees_of_freedom_prior=2.0), "should be greater than 2, but got 2.000"),
    (dict(mean_prior=[0.0, 1.0]), r"'means' should have the shape of \(3,\), but got \(2,\)"),
    (dict(covariance_prior=np.eye(2)),
     r"'full covariance_prior' should have the shape of \(3, 3\), but got \(2, 2\)"),
    (dict(covariance_prior=-np.eye(3)), "'full precision' should be symmetric, positive-definite"),
    (dict(covariance_prior=np.triu(np.ones((3, 3)))), "symmetric, positive-definite"),
    (dict(covariance_type="diag", covariance_prior=[1.0, 0.0, 1.0]),
     "'diag precision' should be positive"),
    (dict(covariance_type="diag", covariance_prior=np.ones((3, 3))),
     r"'diag covariance_prior' should have the shape of \(3,\)"),
    (dict(covariance_type="spherical", covariance_prior=[1.0, 2.0, 3.0]),
     "'spherical covariance_prior' should have the shape of"),
    (dict(covariance_type="spherical", covariance_prior=-1.0),
     "'spherical precision' should be positive"),
    (dict(weight_concentration_prior=0.0), "weight_concentration_prior must be a positive"),
    (dict(mean_precision_prior=-1.0), "mean_precision_prior must be a positive"),
    (dict(weight_concentration_prior_type="dirichlet"), "Unknown weight_concentration_prior_type"),
    (dict(covariance_type="bad"), "Unknown covariance_type"),
    (dict(init="bad"), "Unknown init"),
    (dict(init=np.ones((120, 2))), r"init responsibilities must have shape \(120, 3\)"),
    (dict(init=-np.ones((120, 3))), "finite and non-negative"),
    (dict(mean_prior=[0.0, np.nan, 1.0]), "NaN"),
    (dict(n_init=0), "n_init must be an integer >= 1"),
    (dict(tol=-1.0), "tol must be a non-negative"),
])
def test_bad_arguments_raise(blobs, kwargs, message):
    with pytest.raises(ValueError, match=message):
        gj.fit_bayesian(KEY, blobs.astype(np.float32), K, **kwargs)


def test_bad_warm_start_posterior_raises(blobs):
    res = gj.fit_bayesian(KEY, blobs.astype(np.float32), K, init="random", n_init=2,
                          max_iter=MAX_ITER)
    with pytest.raises(ValueError, match="init posterior is"):
        gj.fit_bayesian(KEY, blobs.astype(np.float32), K, init=res.posterior,
                        covariance_type="diag")
    with pytest.raises(ValueError, match="init posterior means have shape"):
        gj.fit_bayesian(KEY, blobs[:, :2].astype(np.float32), K, init=res.posterior)
    with pytest.raises(ValueError, match="X has 2 features, but the posterior has 3"):
        gb.log_prob(res.posterior, blobs[:, :2])


def test_too_few_samples_raises(blobs):
    with pytest.raises(ValueError, match="Expected n_samples >= n_components"):
        gj.fit_bayesian(KEY, blobs[:2].astype(np.float32), K)


def test_benchmark_case_does_identical_work(monkeypatch):
    # The benchmark plugin's claim: gmmjax and sklearn start from the same responsibilities and
    # run the same iterations, so their bounds agree (float32 vs sklearn's float64).
    from benchmarks import Settings, harness, run_case
    from benchmarks import cases_bayesian

    settings = Settings(repeats=1, min_time=0.0, memory=False, xla_memory=None,
                        matmul_gflops=10.0, platform="cpu")
    monkeypatch.setattr(harness, "SETTINGS", settings)
    case = cases_bayesian.bayes_case(120, 3, K, "full", "dirichlet_process", MAX_ITER)
    rec = run_case(case, settings)
    jx, sk = rec["impls"]["gmmjax"], rec["impls"]["sklearn"]
    assert jx["status"] == "ok" and sk["status"] == "ok", rec
    assert jx["metrics"]["n_iter_run"] == sk["metrics"]["n_iter_run"] == MAX_ITER
    assert rec["loglik_rel_diff"] < 1e-4
