"""Model selection: bic/aic, the masked padded-K sweep of ``select_model`` (exactness of
masking, agreement with a loop of scikit-learn fits on the issue's examples), its result object
and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.mixture import GaussianMixture as SkGaussianMixture

import gmmjax
from gmmjax import select_model
from gmmjax.core import live_components
from gmmjax.init import initial_responsibilities
from gmmjax.selection import _sweep_program

from conftest import initial_precisions


def _three_gaussians():
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(0, 2, 2000), rng.normal(5, 5, 2000),
                           rng.normal(3, 0.5, 600)])[:, None]


BLOBS, _ = make_blobs(n_samples=300, centers=[[0, 0], [6, 1], [2, 7]],
                      cluster_std=[1.0, 0.7, 1.3], random_state=3)


def _sklearn_table(X, ks, types, criterion="bic", n_init=2):
    return np.array([[getattr(SkGaussianMixture(k, covariance_type=ct, n_init=n_init,
                                                random_state=0).fit(X), criterion)(X)
                      for k in ks] for ct in types])


@pytest.fixture(scope="module")
def blob_sweep():
    with jax.enable_x64(True):
        return select_model(jax.random.key(0), BLOBS, range(1, 6), ("full", "diag"), n_init=2)


def test_masked_em_step_equals_unpadded_step(x64, covariance_type, blobs):
    """A zero-weight padding component changes nothing: one EM step of 2 live + 1 masked
    components equals one EM step of the 2 components alone."""
    rng = np.random.default_rng(1)
    means = rng.normal(size=(3, 3)) + blobs.mean(0)
    prec = initial_precisions(covariance_type, 3)
    padded = gmmjax.from_precisions(np.array([0.4, 0.6, 0.0]), means, prec, covariance_type)
    live = live_components(padded, 2)
    live = live.replace(weights=jnp.array([0.4, 0.6]))
    mask = jnp.array([True, True, False])
    step = jax.jit(gmmjax.em_step)
    new_p, ll_p, ok_p = step(padded, blobs, mask=mask)
    new_l, ll_l, ok_l = step(live, blobs)
    assert float(new_p.weights[2]) == 0.0
    new_p = live_components(new_p, 2)
    assert bool(ok_p) and bool(ok_l)
    assert float(ll_p) == pytest.approx(float(ll_l), rel=1e-13)
    for a, b in zip(jax.tree_util.tree_leaves(new_p), jax.tree_util.tree_leaves(new_l)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("method", ["kmeans", "k-means++", "random", "random_from_data"])
def test_masked_initial_responsibilities(x64, blobs, method):
    """Every init method puts no responsibility on masked columns, and the live columns are
    exactly those of the unpadded K = 2 init with the same key; rows still sum to 1."""
    x = jnp.asarray(blobs - blobs.mean(0))
    w = jnp.ones(x.shape[0])
    init = jax.jit(initial_responsibilities, static_argnums=(3, 4))
    resp = np.asarray(init(jax.random.key(2), x, w, 4, method, n_live=2))
    assert resp.shape == (120, 4)
    np.testing.assert_array_equal(resp[:, 2:], 0.0)
    np.testing.assert_array_equal(resp[:, :2], init(jax.random.key(2), x, w, 2, method))
    if method in ("kmeans", "random"):
        np.testing.assert_allclose(resp.sum(1), 1.0, rtol=1e-12)
        assert np.all(resp[:, :2].sum(0) > 0)
    else:   # point masses on two distinct rows
        assert resp.sum() == 2 and len(set(np.argmax(resp[:, :2], axis=0))) == 2
    if method == "kmeans":   # k-means on the two live centres separates the two blobs
        labels = resp.argmax(1)
        assert len(set(labels[:50])) == 1 and len(set(labels[50:])) == 1
        assert labels[0] != labels[-1]


def test_three_gaussians_same_k_as_sklearn(x64):
    X = _three_gaussians()
    ks = range(1, 7)
    res = select_model(jax.random.key(0), X, ks, ("full",), n_init=2)
    ref = _sklearn_table(X, ks, ("full",))
    assert res.best_n_components == list(ks)[int(np.argmin(ref[0]))]
    # K = 1 has a unique optimum: the padded (K_max = 6) program reproduces it exactly
    assert res.bic[0, 0] == pytest.approx(ref[0, 0], rel=1e-10)
    assert res.best_n_components > 1


def test_blobs_same_choice_as_sklearn(blob_sweep):
    ref = _sklearn_table(BLOBS, range(1, 6), ("full", "diag"))
    i, j = np.unravel_index(np.argmin(ref), ref.shape)
    assert (blob_sweep.best_covariance_type, blob_sweep.best_n_components) == (
        ("full", "diag")[i], j + 1)
    assert blob_sweep.best_n_components == 3
    # every cell with a unique optimum (K = 1) and the well-separated K = 3 agree with sklearn
    np.testing.assert_allclose(blob_sweep.bic[:, 0], ref[:, 0], rtol=1e-10)
    np.testing.assert_allclose(blob_sweep.bic[:, 2], ref[:, 2], rtol=1e-6)


def test_result_contents(blob_sweep):
    res = blob_sweep
    assert res.table.shape == (2, 5) and res.criterion == "bic"
    np.testing.assert_array_equal(res.table, res.bic)
    # the table is consistent with the functional criteria on every cell's params
    with jax.enable_x64(True):
        assert set(res.all_params) == {(ct, k) for ct in ("full", "diag") for k in range(1, 6)}
        for (ct, k), params in res.all_params.items():
            assert params.n_components == k and params.covariance_type == ct
            if k not in (1, 3):
                continue                                 # (each K is a new compiled shape)
            np.testing.assert_allclose(float(gmmjax.bic(params, BLOBS)),
                                       res.bic[res.covariance_types.index(ct), k - 1], rtol=1e-10)
            np.testing.assert_allclose(float(gmmjax.aic(params, BLOBS)),
                                       res.aic[res.covariance_types.index(ct), k - 1], rtol=1e-10)
            assert gmmjax.n_parameters(params) == res.n_parameters[
                res.covariance_types.index(ct), k - 1]
            np.testing.assert_allclose(float(jnp.sum(params.weights)), 1.0, rtol=1e-12)
    assert res.params.n_components == res.best_n_components
    rows = res.rows()
    assert len(rows) == 10 and {"covariance_type", "n_components", "bic", "aic"} <= set(rows[0])


def test_fitted_estimator(blob_sweep):
    est = blob_sweep.estimator
    assert isinstance(est, gmmjax.GaussianMixture)
    assert est.n_components == blob_sweep.best_n_components
    assert est.covariance_type == blob_sweep.best_covariance_type
    with jax.enable_x64(True):
        expected = np.asarray(gmmjax.log_prob(blob_sweep.params, BLOBS))
    np.testing.assert_allclose(est.score_samples(BLOBS), expected, rtol=1e-10)
    assert est.bic(BLOBS) == pytest.approx(blob_sweep.bic.min(), rel=1e-10)


def test_aic_and_no_recompile(x64, blob_sweep):
    before = _sweep_program._cache_size()
    res = select_model(jax.random.key(0), BLOBS, range(1, 6), ("full", "diag"), "aic", n_init=2,
                       return_estimator=False)
    assert _sweep_program._cache_size() == before       # same shapes: nothing recompiles
    np.testing.assert_allclose(res.aic, blob_sweep.aic, rtol=1e-12)
    assert res.table is res.aic and res.estimator is None
    i, j = np.unravel_index(np.argmin(res.aic), res.aic.shape)
    assert (res.best_covariance_type, res.best_n_components) == (("full", "diag")[i], j + 1)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_components=[]), "empty"),
    (dict(n_components=range(1, 1)), "empty"),
    (dict(n_components=[0, 1]), "n_components"),
    (dict(n_components=[1, 1]), "duplicates"),
    (dict(n_components="abc"), "n_components"),
    (dict(n_components=[500]), "n_samples"),
    (dict(criterion="likelihood"), "criterion"),
    (dict(covariance_types=("full", "banded")), "covariance_type"),
    (dict(covariance_types=()), "empty"),
    (dict(reg_covar=0.0), "reg_covar"),
    (dict(n_init=0), "n_init"),
    (dict(init="best"), "init"),
])
def test_bad_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        select_model(jax.random.key(0), BLOBS, **kwargs)
    with pytest.raises(ValueError, match="2-D"):
        select_model(jax.random.key(0), BLOBS[:, 0])


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_bic_aic_host_sums_match_traced_and_numpy(dtype, rtol, caplog):
    """Concrete inputs: bic/aic sum the log densities in NumPy (no eager XLA program per
    shape; only the evaluation program compiles); under jit the same values in jax.numpy; both
    equal −2 Σ w log p + penalty computed from scikit-learn's score_samples."""
    import logging
    with jax.enable_x64(dtype == np.float64):
        x = BLOBS.astype(dtype)
        params = gmmjax.fit(jax.random.key(1), x, 3, covariance_type="diag", max_iter=20).params
        w = np.random.default_rng(3).uniform(0.5, 2.0, x.shape[0]).astype(dtype)
        sk = SkGaussianMixture(3, covariance_type="diag")
        sk.weights_, sk.means_ = np.asarray(params.weights, float), np.asarray(params.means, float)
        sk.covariances_ = np.asarray(params.covariances, float)
        sk.precisions_cholesky_ = 1 / np.sqrt(sk.covariances_)
        ll = sk.score_samples(x.astype(float))
        p = gmmjax.n_parameters(params)
        want = {"bic": -2 * ll.sum() + p * np.log(x.shape[0]), "aic": -2 * ll.sum() + 2 * p,
                "bic_w": -2 * (w * ll).sum() + p * np.log(w.sum())}
        new_rows = x[:217]                                   # a row count not seen before
        with caplog.at_level(logging.WARNING), jax.log_compiles(True):
            got = {"bic": gmmjax.bic(params, x), "aic": gmmjax.aic(params, x),
                   "bic_w": gmmjax.bic(params, x, w)}
            gmmjax.bic(params, new_rows)
        compiled = [r.getMessage().split()[1] for r in caplog.records
                    if r.getMessage().startswith("Compiling ")]
        assert set(compiled) <= {"jit(evaluate)"}, compiled     # the result: device_put
        traced = {"bic": jax.jit(gmmjax.bic)(params, x), "aic": jax.jit(gmmjax.aic)(params, x),
                  "bic_w": jax.jit(gmmjax.bic)(params, x, w)}
    for name, value in want.items():
        assert isinstance(got[name], jax.Array) and got[name].dtype == dtype
        np.testing.assert_allclose(float(got[name]), value, rtol=rtol, err_msg=name)
        np.testing.assert_allclose(float(traced[name]), value, rtol=rtol, err_msg=name)
