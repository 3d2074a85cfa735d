"""Log densities of every covariance type against scipy, and the precision conversions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

import gmmjax as gj
from gmmjax.covariance import COVARIANCE_TYPES, get_covariance_model
from conftest import initial_state


def dense_covariances(params):
    k, d = params.means.shape
    cov = np.asarray(params.covariances)
    return {"full": lambda: cov, "tied": lambda: np.broadcast_to(cov, (k, d, d)),
            "diag": lambda: np.stack([np.diag(c) for c in cov]),
            "spherical": lambda: np.stack([c * np.eye(d) for c in cov])}[params.covariance_type]()


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-10), (np.float32, 2e-5)])
def test_log_prob_matches_scipy(blobs, covariance_type, dtype, rtol):
    with jax.enable_x64(dtype == np.float64):
        weights, means, prec = initial_state(covariance_type)
        params = gj.from_precisions(weights, means, prec, covariance_type).astype(dtype)
        got = np.asarray(gj.log_prob(params, blobs.astype(dtype)))
        assert got.dtype == dtype
        cov = dense_covariances(params)
        dens = sum(w * multivariate_normal(m, c).pdf(blobs)
                   for w, m, c in zip(weights, means, cov.astype(np.float64)))
        np.testing.assert_allclose(got, np.log(dens), rtol=rtol)


def test_precision_round_trip(x64, covariance_type):
    model = get_covariance_model(covariance_type)
    _, _, prec = initial_state(covariance_type)
    chol = model.precision_cholesky_from_precisions(jnp.asarray(prec))
    np.testing.assert_allclose(model.precisions(chol), prec, atol=1e-12)
    cov = model.covariance_from_precision_cholesky(chol)
    chol2, ok = model.precision_cholesky(cov)
    assert bool(ok)
    np.testing.assert_allclose(chol2, chol, atol=1e-12)
    if covariance_type in ("full", "tied"):
        assert np.allclose(np.tril(np.asarray(chol), -1), 0)      # upper-triangular like sklearn


def test_not_positive_definite_is_reported(covariance_type):
    model = get_covariance_model(covariance_type)
    bad = {"full": -np.eye(2)[None], "tied": -np.eye(2), "diag": -np.ones((1, 2)),
           "spherical": -np.ones(1)}[covariance_type]
    chol, ok = model.precision_cholesky(jnp.asarray(bad, jnp.float32))
    assert not bool(ok)
    assert bool(jnp.all(jnp.isfinite(chol)))


def test_unknown_covariance_type():
    with pytest.raises(ValueError, match="Unknown covariance_type 'banana'"):
        get_covariance_model("banana")


def test_n_parameters_like_sklearn():
    # sklearn: K=2, D=5 -> spherical 13, diag 21, tied 26, full 41
    expected = {"spherical": 13, "diag": 21, "tied": 26, "full": 41}
    for ct in COVARIANCE_TYPES:
        model = get_covariance_model(ct)
        k, d = 2, 5
        params = gj.MixtureParams(jnp.ones(k) / k, jnp.zeros((k, d)), jnp.ones(model.shape(k, d)),
                                  jnp.ones(model.shape(k, d)), ct)
        assert gj.n_parameters(params) == expected[ct]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_diagonal_and_eye_helpers_match_numpy(dtype):
    """The programs' masked-sum diagonal and NumPy-literal identity (fewer kernels to compile)
    equal NumPy's, batched, on host and device arrays, with inf/NaN off the diagonal ignored."""
    from gmmjax.covariance import diagonal, eye
    a = np.random.default_rng(0).normal(size=(3, 4, 5, 5)).astype(dtype)
    a[0, 1, 2, 3], a[1, 0, 4, 0], a[2, 2, 1, 1] = np.inf, np.nan, -np.inf
    with jax.enable_x64(dtype == np.float64):
        for arr in (a, jnp.asarray(a), jax.jit(lambda v: v)(a)):
            got = diagonal(arr)
            assert got.dtype == dtype and got.shape == (3, 4, 5)
            np.testing.assert_array_equal(np.asarray(got), np.diagonal(a, axis1=-2, axis2=-1))
        np.testing.assert_array_equal(np.asarray(jax.jit(diagonal)(a)),
                                      np.diagonal(a, axis1=-2, axis2=-1))
        assert eye(5, dtype).dtype == dtype
        np.testing.assert_array_equal(eye(5, dtype), np.eye(5))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_scatter_matches_numpy_on_offset_data(covariance_type, d, dtype, rtol):
    """Every type's scatter Σ_n r (x−c)(x−c)ᵀ (full/tied at D ≤ 2: entry-by-entry row
    reductions; larger D: batched GEMMs) against float64 NumPy, on data far from the origin
    (centred products: float32 loses nothing to cancellation), plain and under vmap."""
    rng = np.random.default_rng(d)
    k, n = 3, 500
    x = 1e4 + rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, d)
    centers = x[:k] + rng.standard_normal((k, d))
    resp = rng.dirichlet(np.ones(k), n).T                          # (K, N)
    x, centers, resp = (a.astype(dtype).astype(np.float64) for a in (x, centers, resp))
    diff = x[None] - centers[:, None]                              # (K, N, D), exact inputs
    full = np.einsum("kn,knm,kno->kmo", resp, diff, diff)
    expected = {"full": full, "tied": full.sum(0),
                "diag": np.einsum("kmm->km", full), "spherical": np.einsum("kmm->k", full) / d}
    model = get_covariance_model(covariance_type)
    with jax.enable_x64(dtype == np.float64):
        args = [jnp.asarray(a, dtype) for a in (x, resp, centers)]
        got = np.asarray(model.scatter_rows_minor(*args))
        batched = np.asarray(jax.vmap(model.scatter_rows_minor)(*(a[None] for a in args)))[0]
    want = expected[covariance_type]
    scale = np.max(np.abs(want))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(batched, want, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_first_moment_matches_numpy_on_offset_data(d, dtype, rtol):
    """The statistics' Σ_n r (x − c) against float64 NumPy, plain and under vmap. D ≤ 2: row
    reductions of centred rows, exact on data far from the origin; larger D: a GEMM minus n_k c,
    accurate in the frame the fits use (rows shifted to their weighted mean)."""
    from gmmjax.covariance import UNROLLED_SCATTER_D
    from gmmjax.stats import first_moment
    rng = np.random.default_rng(20 + d)
    k, n = 3, 400
    offset = 1e3 if d <= UNROLLED_SCATTER_D else 0.0
    x = offset + rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, d)
    centers = x[:k] + rng.standard_normal((k, d))
    resp = rng.dirichlet(np.ones(k), n).T                          # (K, N)
    x, centers, resp = (a.astype(dtype).astype(np.float64) for a in (x, centers, resp))
    want = np.einsum("kn,knd->kd", resp, x[None] - centers[:, None])
    with jax.enable_x64(dtype == np.float64):
        args = [jnp.asarray(a, dtype) for a in (x, resp, centers)]
        nk = jnp.sum(args[1], axis=1)
        got = np.asarray(first_moment(*args, nk))
        batched = np.asarray(jax.vmap(first_moment)(*(a[None] for a in args + [nk])))[0]
    scale = np.max(np.abs(resp.sum(1)[:, None] * x.std(0)))
    assert got.shape == (k, d) and got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(batched, want, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
@pytest.mark.parametrize("d", [1, 5])
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_rows_minor_chunks_match_numpy(covariance_type, d, dtype, rtol):
    """The diagonal models' statistics pass reads transposed chunks (stats.transposed_chunks):
    chunked (N not a multiple of the chunk, zero-weight rows), with the operand built by the
    caller or inside, and the shared-layout diagonal pass, all equal a float64 NumPy pass."""
    from gmmjax.params import from_covariances, to_full_layout
    from gmmjax.stats import (rows_minor_operand, shared_layout_statistics,
                              sufficient_statistics, transposed_chunks)
    from gmmjax.covariance import TYPE_CODES
    rng = np.random.default_rng(30 + d)
    n, k, chunk = 333, 4, 64
    x = rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, d)
    w = rng.uniform(0.5, 2.0, n) * (rng.random(n) > 0.1)
    means = x[:k] + 0.1
    var = rng.uniform(0.5, 2.0, (k, d) if covariance_type == "diag" else (k,))
    weights = np.full(k, 1.0 / k)
    x, w, means, var = (a.astype(dtype).astype(np.float64) for a in (x, w, means, var))
    full_var = var if covariance_type == "diag" else var[:, None] * np.ones(d)
    diff = x[None] - means[:, None]                                          # (K, N, D)
    wlp = (np.log(weights)[:, None] - 0.5 * (d * np.log(2 * np.pi) + np.log(full_var).sum(1))[
        :, None] - 0.5 * np.einsum("knd,kd->kn", diff ** 2, 1 / full_var))
    top = wlp.max(0)
    norm = top + np.log(np.exp(wlp - top).sum(0))
    resp = np.exp(wlp - norm) * w                                             # (K, N)
    scatter = np.einsum("kn,knd->kd", resp, diff ** 2)
    want = {"nk": resp.sum(1), "sx": np.einsum("kn,knd->kd", resp, diff),
            "scatter": scatter if covariance_type == "diag" else scatter.mean(1),
            "loglik": np.sum(w * norm), "weight": w.sum()}
    with jax.enable_x64(dtype == np.float64):
        xj, wj = jnp.asarray(x, dtype), jnp.asarray(w, dtype)
        params = from_covariances(jnp.asarray(weights, dtype),
                                  jnp.asarray(means, dtype),
                                  jnp.asarray(var, dtype), covariance_type)
        zero = jnp.zeros(d, dtype)
        operand = rows_minor_operand(covariance_type, xj, chunk)
        assert operand.shape == (6, d, chunk)
        np.testing.assert_array_equal(np.asarray(operand)[1], x[chunk:2 * chunk].T.astype(dtype))
        assert rows_minor_operand(covariance_type, xj, None) is None
        assert rows_minor_operand("full", xj, chunk) is None
        passes = {"inside": sufficient_statistics(params, xj, wj, zero, chunk),
                  "given": sufficient_statistics(params, xj, wj, zero, chunk,
                                                 transposed_chunks(xj, chunk)),
                  "whole": sufficient_statistics(params, xj, wj, zero, None)}
        shared = jax.jit(lambda p: shared_layout_statistics(
            p, xj, wj, zero, chunk, TYPE_CODES[covariance_type]))(to_full_layout(params))
    for name, got in passes.items():
        for field, value in want.items():
            got_value = np.asarray(getattr(got, field))
            assert got_value.dtype == dtype
            np.testing.assert_allclose(got_value, value, rtol=rtol, atol=rtol * np.max(
                np.abs(value)), err_msg=f"{name} {field}")
    np.testing.assert_allclose(np.diagonal(np.asarray(shared.scatter), axis1=1, axis2=2),
                               scatter, rtol=rtol, atol=rtol * np.max(scatter))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-11), (np.float32, 1e-4)])
def test_distances_match_numpy(covariance_type, d, dtype, rtol):
    """Squared Mahalanobis distances (K, N) of every type (full at D ≤ 2: elementwise on centred
    rows; otherwise GEMMs) against float64 NumPy, plain and under vmap."""
    rng = np.random.default_rng(10 + d)
    k, n = 4, 300
    x = 5.0 + rng.standard_normal((n, d)) * 2.0
    means = x[:k] + rng.standard_normal((k, d))
    a = rng.standard_normal((k, d, d))
    cov = np.einsum("kij,klj->kil", a, a) + d * np.eye(d)
    params = gj.from_covariances(np.full(k, 1.0 / k), means, cov, "full")
    params = params.astype(np.float64)
    if covariance_type != "full":          # the type's own parameters from the same covariances
        model_cov = {"tied": cov.mean(0), "diag": np.einsum("kii->ki", cov),
                     "spherical": np.einsum("kii->k", cov) / d}[covariance_type]
        params = gj.from_covariances(np.full(k, 1.0 / k), means, model_cov, covariance_type)
    chol = np.asarray(params.precisions_cholesky, np.float64)
    diff = x[None] - means[:, None]                                        # (K, N, D)
    if covariance_type == "full":
        want = np.sum(np.einsum("kne,ked->knd", diff, chol) ** 2, axis=-1)
    elif covariance_type == "tied":
        want = np.sum(np.einsum("kne,ed->knd", diff, chol) ** 2, axis=-1)
    elif covariance_type == "diag":
        want = np.sum((diff * chol[:, None, :]) ** 2, axis=-1)
    else:
        want = np.sum(diff ** 2, axis=-1) * chol[:, None] ** 2
    model = get_covariance_model(covariance_type)
    with jax.enable_x64(dtype == np.float64):
        args = [jnp.asarray(v, dtype) for v in (x, means, chol)]
        got = np.asarray(model.distances(*args))
        batched = np.asarray(jax.vmap(model.distances)(*(v[None] for v in args)))[0]
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(batched, want, rtol=rtol, atol=rtol)
