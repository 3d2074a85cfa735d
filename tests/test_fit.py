"""fit(): agreement with scikit-learn, EM invariants, vmap/chunking/recompilation behaviour."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

import gmmjax as gj
from gmmjax.fit import _fit_program
from conftest import initial_state

KEY = jax.random.key(0)


def sklearn_fit(X, covariance_type, **kw):
    weights, means, prec = initial_state(covariance_type)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GaussianMixture(2, covariance_type=covariance_type, weights_init=weights,
                               means_init=means, precisions_init=prec, **kw).fit(X)


def gmmjax_fit(X, covariance_type, dtype, **kw):
    weights, means, prec = initial_state(covariance_type)
    init = gj.from_precisions(weights, means, prec, covariance_type).astype(dtype)
    return gj.fit(KEY, X.astype(dtype), 2, covariance_type=covariance_type, init=init, **kw)


# float64 stops by sklearn's rule at the same iteration; in float32 the |Δ| < tol test would sit
# on rounding noise, so it runs a fixed number of iterations (tol=0) and compares parameters.
@pytest.mark.parametrize("dtype,tol,em_tol", [(np.float64, 1e-10, 1e-6), (np.float32, 1e-4, 0.0)])
def test_deterministic_fit_matches_sklearn(blobs, covariance_type, dtype, tol, em_tol):
    sk = sklearn_fit(blobs.astype(dtype), covariance_type, tol=em_tol, max_iter=30)
    with jax.enable_x64(dtype == np.float64):
        res = gmmjax_fit(blobs, covariance_type, dtype, tol=em_tol, max_iter=30)
        p = res.params
        assert p.means.dtype == dtype
        assert int(res.n_iter) == sk.n_iter_
        assert bool(res.converged) == sk.converged_
        for mine, theirs in [(p.weights, sk.weights_), (p.means, sk.means_),
                             (p.covariances, sk.covariances_),
                             (p.precisions_cholesky, sk.precisions_cholesky_),
                             (p.precisions, sk.precisions_)]:
            np.testing.assert_allclose(mine, theirs, rtol=tol, atol=tol)
        np.testing.assert_allclose(res.lower_bounds[:sk.n_iter_], sk.lower_bounds_, rtol=tol,
                                   atol=tol)
        assert np.all(np.isnan(np.asarray(res.lower_bounds[sk.n_iter_:])))
        np.testing.assert_allclose(gj.log_prob(p, blobs.astype(dtype)),
                                   sk.score_samples(blobs.astype(dtype)), rtol=tol, atol=tol)


def test_log_likelihood_is_monotone(blobs, covariance_type):
    res = gj.fit(KEY, blobs.astype(np.float32), 3, covariance_type=covariance_type,
                 init="random", tol=0.0, max_iter=30)
    hist = np.asarray(res.lower_bounds)
    assert int(res.status) == gj.Status.MAX_ITER_REACHED and not bool(res.converged)
    assert np.all(np.isfinite(hist)) and hist.shape == (30,)
    assert np.all(np.diff(hist) >= -1e-5 * np.abs(hist[1:]))


def test_vmapped_restarts_equal_a_loop_over_the_same_keys(blobs):
    X = blobs.astype(np.float32)
    res = gj.fit(KEY, X, 2, init="random_from_data", n_init=3, max_iter=20)
    singles = []
    for i in range(3):
        init = gj.init.initialize(jax.random.fold_in(KEY, i), jnp.asarray(X) - X.mean(0),
                                  jnp.ones(len(X)), 2, "full", "random_from_data")[0]
        init = init.replace(means=init.means + X.mean(0))
        singles.append(gj.fit(KEY, X, 2, init=init, max_iter=20))
    lbs = np.array([float(s.lower_bound) for s in singles])
    np.testing.assert_allclose(res.restart_lower_bounds, lbs, rtol=1e-5)
    best = int(np.argmax(lbs))
    assert float(res.lower_bound) == pytest.approx(lbs[best], rel=1e-5)
    np.testing.assert_allclose(res.params.means, singles[best].params.means, atol=1e-4)


def test_first_restart_does_not_depend_on_n_init(blobs):
    X = blobs.astype(np.float32)
    one = gj.fit(KEY, X, 2, init="random", n_init=1, max_iter=10)
    three = gj.fit(KEY, X, 2, init="random", n_init=3, max_iter=10)
    assert float(three.restart_lower_bounds[0]) == pytest.approx(float(one.lower_bound), rel=1e-6)


def test_vmap_of_fit_equals_single_fits(blobs):
    X = blobs.astype(np.float32)
    data = np.stack([X, X[::-1] * 1.5, X + 2.0])
    keys = jax.random.split(KEY, 3)
    batched = jax.vmap(lambda k, x: gj.fit(k, x, 2, max_iter=15))(keys, data)
    for i in range(3):
        single = gj.fit(keys[i], data[i], 2, max_iter=15)
        assert int(batched.n_iter[i]) == int(single.n_iter)
        np.testing.assert_allclose(batched.lower_bound[i], single.lower_bound, rtol=1e-5)
        np.testing.assert_allclose(batched.params.means[i], single.params.means, atol=1e-4)


def test_vmap_with_sample_weights_as_padding(blobs):
    X = blobs.astype(np.float32)
    w = np.ones((2, len(X)), np.float32)
    w[1, 100:] = 0.0                                  # second fit only sees the first 100 rows
    keys = jnp.stack([KEY, KEY])
    batched = jax.vmap(lambda k, x, sw: gj.fit(k, x, 2, sample_weight=sw, max_iter=15))(
        keys, np.stack([X, X]), w)
    single = gj.fit(KEY, X[:100], 2, max_iter=15)
    np.testing.assert_allclose(batched.lower_bound[1], single.lower_bound, rtol=1e-5)


def test_chunked_equals_unchunked(blobs, covariance_type):
    X = blobs.astype(np.float32)
    whole = gmmjax_fit(X, covariance_type, np.float32, max_iter=10, tol=0.0)
    chunked = gmmjax_fit(X, covariance_type, np.float32, max_iter=10, tol=0.0, chunk_size=32)
    np.testing.assert_allclose(chunked.lower_bounds, whole.lower_bounds, rtol=1e-5)
    np.testing.assert_allclose(chunked.params.covariances, whole.params.covariances, rtol=1e-4,
                               atol=1e-6)


def test_same_bucket_does_not_recompile(blobs):
    X = blobs.astype(np.float32)
    gj.fit(KEY, X[:115], 2, max_iter=5)
    before = _fit_program._cache_size()
    res = gj.fit(KEY, X[:118], 2, max_iter=5)       # 115 and 118 pad to the same bucket
    gj.fit(jax.random.key(3), X[:118], 2, max_iter=5, tol=1e-2, reg_covar=1e-4)
    assert _fit_program._cache_size() == before
    assert np.isfinite(float(res.lower_bound))


def test_integer_weights_equal_repeated_rows(blobs, covariance_type):
    X = blobs.astype(np.float32)[:60]
    reps = np.arange(60) % 3
    weighted = gmmjax_fit(X, covariance_type, np.float32, sample_weight=reps.astype(np.float32),
                          max_iter=10, tol=0.0)
    repeated = gmmjax_fit(np.repeat(X, reps, axis=0), covariance_type, np.float32, max_iter=10,
                          tol=0.0)
    np.testing.assert_allclose(weighted.lower_bounds, repeated.lower_bounds, rtol=1e-5)
    np.testing.assert_allclose(weighted.params.means, repeated.params.means, atol=1e-4)


@pytest.mark.parametrize("init,covariance_type", [
    ("kmeans", "full"), ("k-means++", "tied"), ("random", "diag"), ("random_from_data", "spherical"),
    ("kmeans", "spherical"), ("k-means++", "full"), ("random_from_data", "diag")])
def test_every_init_reaches_the_separated_optimum(blobs, init, covariance_type):
    X = (blobs + np.r_[np.zeros((50, 3)), np.full((70, 3), 4.0)]).astype(np.float32)
    res = gj.fit(KEY, X, 2, covariance_type=covariance_type, init=init, n_init=2)
    assert int(res.status) == gj.Status.CONVERGED
    labels = np.asarray(gj.predict(res.params, X))
    # the two clusters (first 50 rows vs the other 70) are recovered
    assert len(set(labels[:50])) == 1 and len(set(labels[50:])) == 1 and labels[0] != labels[-1]


def test_float64_end_to_end(blobs, x64):
    res = gj.fit(KEY, blobs, 2, max_iter=5)
    leaves = jax.tree_util.tree_leaves(res.params) + [res.lower_bound, res.lower_bounds]
    assert all(leaf.dtype == jnp.float64 for leaf in leaves)


def test_max_iter_zero_returns_the_initialisation(blobs):
    weights, means, prec = initial_state("full")
    init = gj.from_precisions(weights, means, prec, "full").astype(np.float32)
    res = gj.fit(KEY, blobs.astype(np.float32), 2, init=init, max_iter=0)
    assert int(res.n_iter) == 0 and res.lower_bounds.shape == (0,)
    assert float(res.lower_bound) == -np.inf
    np.testing.assert_allclose(res.params.means, means, rtol=1e-6)


def test_em_step_matches_fit_iteration(blobs, x64):
    weights, means, prec = initial_state("diag")
    init = gj.from_precisions(weights, means, prec, "diag")
    new, ll, ok = gj.em_step(init, blobs)
    res = gj.fit(KEY, blobs, 2, covariance_type="diag", init=init, max_iter=1)
    assert bool(ok)
    np.testing.assert_allclose(ll, res.lower_bounds[0], rtol=1e-12)
    np.testing.assert_allclose(new.covariances, res.params.covariances, rtol=1e-10)
    ll_e, log_resp = gj.e_step(init, blobs)
    m_params, ok = gj.m_step(blobs, jnp.exp(log_resp), "diag")
    np.testing.assert_allclose(ll_e, ll, rtol=1e-12)
    np.testing.assert_allclose(m_params.means, new.means, rtol=1e-10)


@pytest.mark.parametrize("covariance_type", ["full", "spherical"])
def test_public_steps_compile_one_program_each(covariance_type, caplog):
    """e_step, m_step and em_step on concrete (NumPy) arrays compile one program each (op by op
    they were dozens of eager compiles) and give the values of their unjitted bodies; they
    still compose with grad."""
    import logging
    rng = np.random.default_rng(5)
    x = (rng.normal(size=(389, 3)) + rng.integers(0, 2, 389)[:, None] * 4).astype(np.float32)
    p = gj.fit(KEY, x, 2, covariance_type=covariance_type, max_iter=3).params
    jax.block_until_ready(p)
    with caplog.at_level(logging.WARNING), jax.log_compiles(True):
        ll, log_resp = gj.e_step(p, x)
        m_params, ok_m = gj.m_step(x, np.exp(np.asarray(log_resp)), covariance_type)
        new, ll2, ok = gj.em_step(p, x, reg_covar=1e-6)
    compiled = {r.getMessage().split()[1] for r in caplog.records
                if r.getMessage().startswith("Compiling ")}
    assert compiled <= {"jit(e_step)", "jit(m_step)", "jit(em_step)"}, compiled
    with jax.disable_jit():
        ll_ref, log_resp_ref = gj.e_step(p, x)
        new_ref, _, _ = gj.em_step(p, x, reg_covar=1e-6)
    np.testing.assert_allclose(float(ll), float(ll_ref), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(log_resp), np.asarray(log_resp_ref), rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(np.asarray(new.means), np.asarray(new_ref.means), rtol=1e-4,
                               atol=1e-4)
    assert bool(ok) and bool(ok_m) and float(ll2) == pytest.approx(float(ll), rel=1e-5)
    np.testing.assert_allclose(np.asarray(m_params.means), np.asarray(new.means), rtol=1e-3,
                               atol=1e-3)
    grad = jax.grad(lambda m: gj.e_step(p.replace(means=m), x)[0])(p.means)
    assert grad.shape == p.means.shape and bool(jnp.all(jnp.isfinite(grad)))


def test_predict_proba_and_sample(blobs):
    res = gj.fit(KEY, blobs.astype(np.float32), 2)
    proba = np.asarray(gj.predict_proba(res.params, blobs.astype(np.float32)))
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(proba.argmax(1), gj.predict(res.params, blobs.astype(np.float32)))
    X, labels = gj.sample(jax.random.key(1), res.params, 4000)
    assert X.shape == (4000, 3) and np.all(np.diff(np.asarray(labels)) >= 0)   # grouped
    counts = np.bincount(np.asarray(labels), minlength=2) / 4000
    np.testing.assert_allclose(counts, res.params.weights, atol=0.03)
    for k in range(2):
        np.testing.assert_allclose(np.asarray(X)[np.asarray(labels) == k].mean(0),
                                   res.params.means[k], atol=0.15)


def test_bic_aic_match_sklearn(blobs, covariance_type):
    sk = sklearn_fit(blobs, covariance_type, max_iter=20)
    with jax.enable_x64(True):
        params = gj.from_precisions_cholesky(sk.weights_, sk.means_, sk.precisions_cholesky_,
                                             covariance_type)
        np.testing.assert_allclose(gj.bic(params, blobs), sk.bic(blobs), rtol=1e-10)
        np.testing.assert_allclose(gj.aic(params, blobs), sk.aic(blobs), rtol=1e-10)


@pytest.mark.parametrize("method", ["kmeans", "random", "k-means++", "random_from_data"])
def test_init_responsibilities_start_the_same_fit_as_the_method(blobs, method):
    """init=(n_init, N, K) responsibilities: the fit that the init method's own responsibilities
    start, to the bit (float64; the looped CPU restarts and, under a vmap over keys, the vmapped
    ones); one (N, K) array is used for every restart."""
    with jax.enable_x64(True):
        x = jnp.asarray(blobs)
        xs, w = x - x.mean(0), jnp.ones(len(blobs))
        resp = np.stack([np.asarray(gj.init.initial_responsibilities(
            jax.random.fold_in(KEY, i), xs, w, 2, method)) for i in range(3)])
        for cov in ("full", "diag"):
            by_method = gj.fit(KEY, blobs, 2, covariance_type=cov, init=method, n_init=3)
            by_resp = gj.fit(jax.random.key(99), blobs, 2, covariance_type=cov, init=resp,
                             n_init=3)
            np.testing.assert_array_equal(by_resp.restart_lower_bounds,
                                          by_method.restart_lower_bounds)
            np.testing.assert_array_equal(by_resp.params.means, by_method.params.means)
        once = gj.fit(KEY, blobs, 2, init=resp[1], n_init=2)
        np.testing.assert_array_equal(once.restart_lower_bounds[0], once.restart_lower_bounds[1])
        vmapped = jax.vmap(lambda k: gj.fit(k, blobs, 2, init=resp, n_init=3))(
            jnp.stack([KEY, KEY]))
        np.testing.assert_allclose(vmapped.restart_lower_bounds[0],
                                   gj.fit(KEY, blobs, 2, init=resp, n_init=3).restart_lower_bounds,
                                   rtol=1e-12)


def test_init_responsibilities_bad_input(blobs):
    n = len(blobs)
    good = np.full((n, 2), 0.5)
    for bad, match in [(good[:-1], r"shape \(120, 2\)"), (np.full((n, 3), 0.5), "shape"),
                       (np.stack([good] * 2), r"\(3, 120, 2\)"),
                       (np.where(np.eye(n, 2) > 0, -1.0, 0.5), "non-negative"),
                       (np.where(np.eye(n, 2) > 0, np.nan, 0.5), "finite")]:
        with pytest.raises(ValueError, match=match):
            gj.fit(KEY, blobs, 2, init=bad, n_init=3)
    with pytest.raises(ValueError, match="Unknown init"):
        gj.fit(KEY, blobs, 2, init=[[0.5, 0.5]] * n)     # a list is not an array init
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    with pytest.raises(ValueError, match="single-device fit"):
        gj.fit(KEY, blobs, 2, init=good, mesh=mesh)


@pytest.mark.parametrize("weighted", [False, True])
def test_host_rows_compile_only_the_fit_program(weighted, caplog):
    """NumPy rows (and weights) stay on the host until the fit program takes them: a new data
    shape compiles that program and no eager XLA op (padding, ones, dtype conversion)."""
    import logging
    rng = np.random.default_rng(7)
    x = rng.normal(size=(1237, 2)) + 1e3                       # float64, narrowed to float32
    w = rng.uniform(0.5, 2.0, 1237) if weighted else None
    with caplog.at_level(logging.WARNING), jax.log_compiles(True), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)            # float64 computed in float32
        res = gj.fit(KEY, x, 3, sample_weight=w, n_init=2, max_iter=20)
    compiled = [r.getMessage().split()[1] for r in caplog.records
                if r.getMessage().startswith("Compiling ")]
    assert set(compiled) <= {"jit(_fit_program)"}, compiled
    ref = gj.fit(KEY, jnp.asarray(x, jnp.float32), 3, n_init=2, max_iter=20,
                 sample_weight=None if w is None else jnp.asarray(w, jnp.float32))
    np.testing.assert_allclose(np.asarray(res.params.means), np.asarray(ref.params.means),
                               rtol=1e-4)


def test_sample_of_fitted_params_compiles_only_its_program(caplog):
    """The value checks of concrete params (finite, weights, positive Cholesky diagonal) run
    in NumPy on the host: sampling a fit's params compiles the sampling program only."""
    import logging
    x = np.random.default_rng(9).normal(size=(733, 3)).astype(np.float32)
    res = gj.fit(KEY, x, 3, covariance_type="tied", max_iter=5)
    jax.block_until_ready(res)
    with caplog.at_level(logging.WARNING), jax.log_compiles(True):
        draws, labels = gj.sample(KEY, res.params, 257)
    compiled = {r.getMessage().split()[1] for r in caplog.records
                if r.getMessage().startswith("Compiling ")}
    assert compiled <= {"jit(_sample)"}, compiled
    assert draws.shape == (257, 3) and labels.shape == (257,)
    assert np.all(np.diff(np.asarray(labels)) >= 0)
    bad = res.params.replace(precisions_cholesky=-res.params.precisions_cholesky)
    with pytest.raises(ValueError, match="positive diagonal"):
        gj.sample(KEY, bad, 5)


@pytest.mark.parametrize("call, program", [
    (lambda x: gj.select_model(KEY, x, range(1, 3), ("diag",), n_init=1, max_iter=5,
                               return_estimator=False), "jit(_sweep_program)"),
    (lambda x: gj.fit_bayesian(KEY, x, 3, max_iter=5, mean_prior=np.zeros(2),
                               weight_concentration_prior=0.5), "jit(_bayesian_program)")])
def test_host_rows_of_the_other_fits_compile_only_their_program(call, program, caplog):
    """select_model and fit_bayesian keep NumPy rows, weights and priors on the host too."""
    import logging
    x = np.random.default_rng(8).normal(size=(1139, 2)).astype(np.float32)
    with caplog.at_level(logging.WARNING), jax.log_compiles(True):
        call(x)
    compiled = [r.getMessage().split()[1] for r in caplog.records
                if r.getMessage().startswith("Compiling ")]
    assert set(compiled) <= {program}, compiled
