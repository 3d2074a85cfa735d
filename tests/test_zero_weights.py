"""Derivatives at a mixture weight of exactly 0 (issue 15, item 11): ∂ log p(x)/∂π_k = N_k(x)/p(x)
is finite there, and so are the other parameters' gradients. References: scipy's Gaussian
densities and central finite differences. One (6, 3) data set, K = 2 (weights [0, 1])."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

import gmmjax as gj

from conftest import initial_state

WEIGHTS = np.array([0.0, 1.0])
_, MEANS, _ = initial_state("full")
X = MEANS[0] + np.linspace(-0.2, 1.2, 6)[:, None] * (MEANS[1] - MEANS[0]) + 0.1


def _params(covariance_type, dtype):
    _, means, precisions = initial_state(covariance_type)
    p = gj.from_precisions(WEIGHTS, means, precisions, covariance_type)
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), p)


def _densities(params):
    """(N, K) N_k(x) from scipy, with each component's dense covariance."""
    model = gj.get_covariance_model(params.covariance_type)
    k, d = params.means.shape
    prec = np.asarray(model.per_component(params.precisions, k), np.float64)
    prec = (prec[:, None, None] * np.eye(d) if prec.ndim == 1 else
            np.stack([np.diag(p) for p in prec]) if prec.ndim == 2 else prec)
    return np.stack([multivariate_normal(np.asarray(params.means[j], np.float64),
                                         np.linalg.inv(prec[j])).pdf(X) for j in range(k)], 1)


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    with jax.enable_x64(request.param == np.float64):
        yield request.param


def test_log_prob_gradient_at_a_zero_weight(covariance_type, dtype):
    p = _params(covariance_type, dtype)
    x = jnp.asarray(X, dtype)

    def total(weights):
        return jnp.sum(gj.log_prob(p.replace(weights=weights), x))

    dens = _densities(p)
    expected = (dens / (dens @ WEIGHTS)[:, None]).sum(0)          # Σ_n N_k(x_n) / p(x_n)
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    eager = jax.grad(total)(p.weights)
    np.testing.assert_allclose(eager, expected, rtol=rtol)
    np.testing.assert_allclose(jax.jit(jax.grad(total))(p.weights), eager, rtol=rtol)
    # e_step's mean log-likelihood and the other component's log responsibility (−N_0/p per row)
    mean_ll = jax.grad(lambda w: gj.e_step(p.replace(weights=w), x)[0])(p.weights)
    np.testing.assert_allclose(mean_ll, expected / len(X), rtol=rtol)
    log_r1 = jax.grad(lambda w: jnp.sum(gj.predict_log_proba(p.replace(weights=w), x)[:, 1]))(
        p.weights)
    assert float(log_r1[0]) == pytest.approx(-expected[0], rel=rtol)
    # vmapped over a batch of weight vectors (one with the zero, one without) = one at a time
    batch = jnp.asarray([WEIGHTS, [0.4, 0.6]], dtype)
    np.testing.assert_allclose(jax.vmap(jax.grad(total))(batch)[0], eager, rtol=rtol)
    if dtype == np.float64:
        # the weight moved off 0: central differences agree with the gradient there
        h, eps = 1e-3, 1e-7
        moved = p.weights.at[0].set(h)
        fd = (total(moved.at[0].add(eps)) - total(moved.at[0].add(-eps))) / (2 * eps)
        assert float(jax.grad(total)(moved)[0]) == pytest.approx(float(fd), rel=1e-6)
        assert float(jax.grad(total)(moved)[0]) == pytest.approx(
            float((dens[:, 0] / (dens @ [h, 1.0])).sum()), rel=1e-10)


def test_other_gradients_with_a_zero_weight(covariance_type, x64):
    """Means and precision factors: finite, and equal to central differences (the zero-weight
    component's own parameters do not move log p: gradient exactly 0)."""
    p = _params(covariance_type, np.float64)
    x = jnp.asarray(X)

    def total(means, chol):
        return jnp.sum(gj.log_prob(p.replace(means=means, precisions_cholesky=chol), x))

    g_means, g_chol = jax.jit(jax.grad(total, argnums=(0, 1)))(p.means, p.precisions_cholesky)
    assert np.all(np.isfinite(g_means)) and np.all(np.isfinite(g_chol))
    np.testing.assert_allclose(g_means[0], 0.0, atol=1e-12)
    rng = np.random.default_rng(0)
    v_means, v_chol = (rng.normal(size=np.shape(a)) for a in (p.means, p.precisions_cholesky))
    eps = 1e-6
    fd = (total(p.means + eps * v_means, p.precisions_cholesky + eps * v_chol)
          - total(p.means - eps * v_means, p.precisions_cholesky - eps * v_chol)) / (2 * eps)
    analytic = np.vdot(g_means, v_means) + np.vdot(g_chol, v_chol)
    assert float(analytic) == pytest.approx(float(fd), rel=1e-6)
