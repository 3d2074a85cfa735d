"""Silent wrong answers found by hostile use (issue 15): sample-weight scale, float64 host data
narrowed to float32, bad values that only the compiled program can see, and clear errors for an
int seed and for jax.grad through fit. Few shapes: one (80, 2) data set."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gmmjax as gj
from gmmjax import validation
from gmmjax.covariance import COVARIANCE_TYPES
from gmmjax.em import Status

KEY = jax.random.key(0)
RNG = np.random.default_rng(0)
X64 = np.r_[RNG.normal(0, 1, (40, 2)), RNG.normal(0, 0.5, (40, 2)) + [5, 1]]
X = X64.astype(np.float32)
NARROWED = "float64 input computed in float32"
HALF_STEP = 4.0 * (1 + 1e-6)     # half the float32 spacing at 1e8: means rounded once


@pytest.fixture
def narrowed(monkeypatch):
    """float64 input computed in float32 (x64 off): the one-time warning is expected here."""
    monkeypatch.setattr(validation, "_NARROWED_WARNED", set())
    with pytest.warns(UserWarning, match=NARROWED):
        yield


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_only_weight_ratios_matter(covariance_type):
    """Weights ×c fit like unit weights; ×2^k (exact rescaling) bit for bit."""
    ref = gj.fit(KEY, X, 2, covariance_type=covariance_type)
    assert ref.status == Status.CONVERGED
    same = gj.fit(KEY, X, 2, covariance_type=covariance_type,
                  sample_weight=np.full(80, 0.25, np.float32))
    for a, b in zip(jax.tree_util.tree_leaves(ref.params), jax.tree_util.tree_leaves(same.params)):
        np.testing.assert_array_equal(a, b)
    for c in (1e-8, 1e-12, 3e4):
        got = gj.fit(KEY, X, 2, covariance_type=covariance_type,
                     sample_weight=np.full(80, c, np.float32))
        assert got.status == Status.CONVERGED
        np.testing.assert_allclose(got.params.covariances, ref.params.covariances, atol=1e-4)
        np.testing.assert_allclose(got.params.means, ref.params.means, atol=1e-4)
        assert float(got.lower_bound) == pytest.approx(float(ref.lower_bound), abs=1e-4)


def test_weight_scale_float64_and_traced():
    w = RNG.uniform(0.5, 2.0, 80)
    with jax.enable_x64(True):
        ref = gj.fit(KEY, X64, 2, sample_weight=w)
        got = gj.fit(KEY, X64, 2, sample_weight=w * 1e-300)
        np.testing.assert_allclose(got.params.covariances, ref.params.covariances, rtol=1e-10)
    fit = jax.jit(lambda w: gj.fit(KEY, X, 2, sample_weight=w))     # weights unseen by the host
    ref, got = fit(jnp.asarray(w, jnp.float32)), fit(jnp.asarray(w * 1e-12, jnp.float32))
    np.testing.assert_allclose(got.params.covariances, ref.params.covariances, atol=1e-4)


def _bad_weights():
    neg, nan, zero = np.ones((3, 80), np.float32)
    neg[3], nan[7], zero[:] = -1.0, np.nan, 0.0
    return np.stack([neg, nan, zero])


def test_traced_invalid_weights_report_invalid_input():
    bad = _bad_weights()
    fit = jax.jit(lambda x, w: gj.fit(KEY, x, 2, sample_weight=w))
    for w in bad:
        result = fit(X, w)
        assert result.status == Status.INVALID_INPUT and not result.converged
        assert np.all(np.asarray(result.restart_status) == Status.INVALID_INPUT)
    batched = jax.vmap(lambda w: gj.fit(KEY, X, 2, sample_weight=w))(
        np.concatenate([bad, np.ones((1, 80), np.float32)]))
    np.testing.assert_array_equal(batched.status, [Status.INVALID_INPUT] * 3 + [Status.CONVERGED])
    x_nan = X.copy()
    x_nan[5, 1] = np.nan
    assert fit(x_nan, np.ones(80, np.float32)).status == Status.NONFINITE
    assert fit(X, np.ones(80, np.float32)).status == Status.CONVERGED


def test_float64_host_data_are_centred_before_float32(narrowed):
    """x64 off: float64 data offset by 1e8 fit as the same data without the offset."""
    ref = gj.fit(KEY, X64, 2, covariance_type="diag")
    far = gj.fit(KEY, X64 + 1e8, 2, covariance_type="diag")
    assert far.params.means.dtype == np.float32
    assert float(far.lower_bound) == pytest.approx(float(ref.lower_bound), abs=1e-5)
    np.testing.assert_allclose(far.params.covariances, ref.params.covariances, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(far.params.means, np.float64) - 1e8, ref.params.means,
                               atol=8)            # float32 spacing at 1e8
    init = ref.params.replace(means=np.asarray(ref.params.means, np.float64) + 1e8)
    warm = gj.fit(KEY, X64 + 1e8, 2, covariance_type="diag", init=init)
    assert float(warm.lower_bound) == pytest.approx(float(ref.lower_bound), abs=1e-5)


def test_int_seed_and_grad_through_fit_explain_themselves():
    with pytest.raises(TypeError, match=r"Pass jax.random.key\(seed\)"):
        gj.fit(0, X, 2)
    with pytest.raises(TypeError, match="not reverse-mode differentiable.*gmmjax.log_prob"):
        jax.grad(lambda x: gj.fit(KEY, x, 2).lower_bound)(X)


def test_init_params_with_extra_batch_axes_get_a_shape_message():
    params = gj.fit(KEY, X, 2, max_iter=2).params
    deep = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (2, 1) + a.shape), params)
    with pytest.raises(ValueError, match="one per restart"):
        gj.fit(KEY, X, 2, init=deep, n_init=2)
    mixed = params.replace(weights=jnp.broadcast_to(params.weights, (2, 2)))
    with pytest.raises(ValueError, match="one per restart"):
        gj.fit(KEY, X, 2, init=mixed, n_init=2)


SELECT = dict(n_components=(1, 2, 3), covariance_types=("diag",), tol=1e-10, max_iter=500)


def test_select_model_float64_in_float64_out(monkeypatch):
    """Like the estimators: float64 X is fitted in float64 (x64 scoped to the call, no warning),
    with the result of a GaussianMixture fit in float64; offset data give the same table."""
    monkeypatch.setattr(validation, "_NARROWED_WARNED", set())
    with warnings.catch_warnings():
        warnings.filterwarnings("error", f".*{NARROWED}")
        ref = gj.select_model(KEY, X64, **SELECT)
        far = gj.select_model(KEY, X64 + 1e8, return_estimator=False, **SELECT)
        est = gj.GaussianMixture(2, covariance_type="diag", tol=1e-10, max_iter=500,
                                 random_state=0).fit(X64)
    assert not jax.config.jax_enable_x64                        # scoped, not global
    assert ref.best_n_components == far.best_n_components == 2
    for a in (ref.params.means, ref.estimator.means_, ref.bic, ref.aic, ref.log_likelihood,
              far.params.means, ref.estimator.score_samples(X64)):
        assert a.dtype == np.float64
    assert {type(v) for row in ref.rows() for v in row.values()} == {str, int, float, bool}
    ours, theirs = np.argsort(ref.estimator.means_[:, 0]), np.argsort(est.means_[:, 0])
    np.testing.assert_allclose(ref.estimator.means_[ours], est.means_[theirs], atol=1e-8)
    np.testing.assert_allclose(ref.estimator.covariances_[ours], est.covariances_[theirs],
                               rtol=1e-7)
    assert ref.estimator.bic(X64) == pytest.approx(est.bic(X64), rel=1e-12)
    assert ref.bic[0, 1] == pytest.approx(est.bic(X64), rel=1e-10)
    np.testing.assert_allclose(far.bic, ref.bic, rtol=1e-9)
    np.testing.assert_allclose(far.params.means - 1e8, ref.params.means, atol=1e-6)


@pytest.mark.parametrize("c", [1e-12, 1e12])
def test_select_model_fits_depend_only_on_weight_ratios(c):
    """Every (type, K) cell fits as with unit weights; the criteria treat the weights as
    frequency weights (n = their total), as gmmjax.bic does."""
    kw = dict(SELECT, tol=1e-3, return_estimator=False)
    ref = gj.select_model(KEY, X, **kw)
    w = np.full(80, c, np.float32)
    got = gj.select_model(KEY, X, sample_weight=w, **kw)
    for cell, params in ref.all_params.items():
        np.testing.assert_allclose(got.all_params[cell].means, params.means, atol=1e-4)
        np.testing.assert_allclose(got.all_params[cell].covariances, params.covariances,
                                   rtol=1e-4)
    bic = [float(gj.bic(got.all_params[("diag", k)], X, sample_weight=w)) for k in (1, 2, 3)]
    np.testing.assert_allclose(got.bic[0], bic, rtol=1e-5)


def _stream(x, w=None):
    return gj.array_chunks(x, 30, w)


def test_fit_stream_centres_float64_host_data(narrowed):
    ref = gj.fit_stream(KEY, _stream(X64), 2, covariance_type="diag")
    far = gj.fit_stream(KEY, _stream(X64 + 1e8), 2, covariance_type="diag")
    assert far.params.means.dtype == np.float32
    assert float(far.lower_bound) == pytest.approx(float(ref.lower_bound), abs=1e-5)
    np.testing.assert_allclose(far.params.covariances, ref.params.covariances, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(far.params.means, np.float64),
                               np.asarray(ref.params.means, np.float64) + 1e8, atol=HALF_STEP)
    init = ref.params.replace(means=np.asarray(ref.params.means, np.float64) + 1e8)
    warm = gj.fit_stream(KEY, _stream(X64 + 1e8), 2, covariance_type="diag", init=init)
    assert float(warm.lower_bound) == pytest.approx(float(ref.lower_bound), abs=1e-5)


@pytest.mark.parametrize("c, dtype", [(1e-12, np.float32), (1e12, np.float32),
                                      (1e-300, np.float64)])
def test_fit_stream_depends_only_on_weight_ratios(c, dtype):
    w = np.random.default_rng(1).uniform(0.5, 2.0, 80)
    ref = gj.fit_stream(KEY, _stream(X, w.astype(dtype)), 2, covariance_type="diag")
    got = gj.fit_stream(KEY, _stream(X, (w * c).astype(dtype)), 2, covariance_type="diag")
    assert got.status == Status.CONVERGED
    np.testing.assert_allclose(got.params.means, ref.params.means, atol=1e-5)
    np.testing.assert_allclose(got.params.covariances, ref.params.covariances, rtol=1e-5)
    assert float(got.lower_bound) == pytest.approx(float(ref.lower_bound), abs=1e-5)


def test_fit_bayesian_centres_float64_host_data(narrowed):
    prior = X64.mean(0) + [0.5, -0.5]
    ref = gj.fit_bayesian(KEY, X64, 2, covariance_type="diag", mean_prior=prior)
    far = gj.fit_bayesian(KEY, X64 + 1e8, 2, covariance_type="diag", mean_prior=prior + 1e8)
    assert float(far.lower_bound) == pytest.approx(float(ref.lower_bound), rel=1e-6)
    np.testing.assert_allclose(far.params.covariances, ref.params.covariances, rtol=1e-5)
    for a, b in ((far.params.means, ref.params.means), (far.posterior.means, ref.posterior.means),
                 (far.priors.mean, ref.priors.mean)):
        assert a.dtype == np.float32
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64) + 1e8,
                                   atol=HALF_STEP)


def test_float64_computed_in_float32_warns_once(monkeypatch):
    """fit, fit_many, fit_stream and fit_bayesian keep JAX's dtype rule and say so once per
    function (at the user's line), for valid input only; float32 input or x64 on: silent. The
    fits reuse the programs of the tests above (fit_stream's K = 100 > N fails after the first
    pass: nothing compiles)."""
    monkeypatch.setattr(validation, "_NARROWED_WARNED", set())
    calls = {"fit": lambda x: gj.fit(KEY, x, 2),
             "fit_many": lambda x: gj.fit_many(KEY, [x, x[:50]], 2, covariance_type="diag"),
             "fit_bayesian": lambda x: gj.fit_bayesian(KEY, x, 2, covariance_type="diag"),
             "fit_stream": lambda x: gj.fit_stream(KEY, _stream(x), 100)}
    for name, call in calls.items():
        with pytest.warns(UserWarning, match=f"gmmjax.{name}: {NARROWED}") as record:
            for _ in range(2):
                try:
                    call(X64)
                except ValueError as e:         # fit_stream with K > N
                    assert name == "fit_stream" and "n_samples" in str(e)
        assert len(record) == 1 and record[0].filename == __file__
    monkeypatch.setattr(validation, "_NARROWED_WARNED", set())
    with warnings.catch_warnings():
        warnings.filterwarnings("error", f".*{NARROWED}")
        with pytest.raises(ValueError, match="NaN"):     # bad input: its error, no warning
            gj.fit(KEY, np.where(X64 > 4, np.nan, X64), 2)
        for x in (X, X64):
            with jax.enable_x64(x is X64):
                assert gj.fit(KEY, x, 2).params.means.dtype == x.dtype
                with pytest.raises(ValueError, match="n_samples"):
                    gj.fit_stream(KEY, _stream(x), 100)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("covariance_type, k", [("full", 3), ("full", 4), ("tied", 3),
                                                ("diag", 3), ("spherical", 4)])
def test_bayesian_mixture_on_constant_data_converges(covariance_type, k):
    """Constant data (a singular covariance prior) used to alternate between two bounds."""
    est = gj.BayesianGaussianMixture(n_components=k, covariance_type=covariance_type,
                                     max_iter=200, random_state=0).fit(np.ones((200, 3)))
    assert est.converged_ and est.n_iter_ < 200
    bounds = np.asarray(est.lower_bounds_)
    assert np.all(np.diff(bounds) > -1e-6 * np.abs(bounds[1:]))     # the bound does not fall
    np.testing.assert_allclose(est.predict_proba(np.ones((2, 3))).sum(1), 1.0)
