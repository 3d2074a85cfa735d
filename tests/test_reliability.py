"""Silent wrong answers found by hostile use (issue 15): sample-weight scale, float64 host data
narrowed to float32, bad values that only the compiled program can see, and clear errors for an
int seed and for jax.grad through fit. Few shapes: one (80, 2) data set."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gmmjax as gj
from gmmjax.covariance import COVARIANCE_TYPES
from gmmjax.em import Status

KEY = jax.random.key(0)
RNG = np.random.default_rng(0)
X64 = np.r_[RNG.normal(0, 1, (40, 2)), RNG.normal(0, 0.5, (40, 2)) + [5, 1]]
X = X64.astype(np.float32)


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


def test_float64_host_data_are_centred_before_float32():
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


def test_select_model_centres_float64_host_data():
    kw = dict(n_components=(1, 2, 3), covariance_types=("diag",), return_estimator=False)
    ref = gj.select_model(KEY, X64, **kw)
    far = gj.select_model(KEY, X64 + 1e8, **kw)
    assert far.best_n_components == ref.best_n_components == 2
    np.testing.assert_allclose(far.bic, ref.bic, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(far.params.means, np.float64) - 1e8, ref.params.means,
                               atol=8)


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
