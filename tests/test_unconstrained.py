"""to_unconstrained / from_unconstrained: round trips, validity of any real input, jit/vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

import gmmjax as gj
from gmmjax.covariance import COVARIANCE_TYPES

from conftest import initial_state

TOL = {np.float32: 2e-6, np.float64: 1e-13}
_from = jax.jit(gj.from_unconstrained)


_from_precisions = jax.jit(gj.from_precisions, static_argnums=3)


def _params(covariance_type, dtype):
    weights, means, precisions = (np.asarray(a, dtype) for a in initial_state(covariance_type))
    return _from_precisions(weights, means, precisions, covariance_type)


def _random_u(covariance_type, dtype, seed=0, n_components=2, n_features=3):
    """Arbitrary real coordinates (not derived from valid params)."""
    rng = np.random.default_rng(seed)
    template = jax.eval_shape(gj.to_unconstrained, _params(covariance_type, np.float32))
    leaves, treedef = jax.tree_util.tree_flatten(template)
    leaves = [jnp.asarray(rng.normal(scale=0.7, size=np.shape(a)), dtype) for a in leaves]
    return jax.tree_util.tree_unflatten(treedef, leaves)


@jax.jit
def _round_trips(p, u):
    return (gj.from_unconstrained(gj.to_unconstrained(p)),
            gj.to_unconstrained(gj.from_unconstrained(u)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trips(covariance_type, dtype):
    """params -> u -> params, and arbitrary u -> params -> u, for every type and dtype."""
    with jax.enable_x64(dtype == np.float64):
        p = _params(covariance_type, dtype)
        u = _random_u(covariance_type, dtype)
        q, v = _round_trips(p, u)
        assert q.covariance_type == covariance_type
        for field in ("weights", "means", "precisions_cholesky", "covariances"):
            a, b = getattr(p, field), getattr(q, field)
            assert b.dtype == dtype and b.shape == a.shape, field
            np.testing.assert_allclose(b, a, rtol=TOL[dtype], atol=TOL[dtype], err_msg=field)
        # Logits are defined up to an additive constant (softmax); compare centred.
        np.testing.assert_allclose(v.logits - v.logits.mean(), u.logits - u.logits.mean(),
                                   rtol=0, atol=10 * TOL[dtype])
        for field in ("means", "log_diag", "off_diag"):
            a, b = getattr(u, field), getattr(v, field)
            if a is None:
                assert b is None
            else:
                np.testing.assert_allclose(b, a, rtol=0, atol=10 * TOL[dtype], err_msg=field)


def test_any_real_values_give_a_valid_mixture(covariance_type, x64, blobs):
    u = _random_u(covariance_type, np.float64, seed=1)
    p = _from(u)
    assert np.all(p.weights > 0) and np.isclose(float(p.weights.sum()), 1.0)
    prec_chol = np.asarray(p.precisions_cholesky)
    cov = np.asarray(gj.get_covariance_model(covariance_type).per_component(p.covariances, 2))
    if u.off_diag is not None:   # full / tied: upper-triangular with a positive diagonal
        np.testing.assert_array_equal(prec_chol, np.triu(prec_chol))
        assert np.all(np.diagonal(prec_chol, axis1=-2, axis2=-1) > 0)
    else:
        assert np.all(prec_chol > 0)
    # The density equals scipy's mixture of the recomputed covariances.
    dense = [np.diag(c) if c.ndim == 1 else (c * np.eye(3) if c.ndim == 0 else c) for c in cov]
    expected = np.log(sum(w * multivariate_normal(m, c).pdf(blobs)
                          for w, m, c in zip(np.asarray(p.weights), np.asarray(p.means), dense)))
    np.testing.assert_allclose(gj.log_prob(p, blobs), expected, rtol=1e-10)


def test_coordinates_are_free(covariance_type):
    """No redundant coordinates: sizes add up to n_parameters + 1 (the softmax gauge)."""
    p = _params(covariance_type, np.float32)
    u = jax.eval_shape(gj.to_unconstrained, p)
    size = sum(np.prod(a.shape, dtype=int) for a in jax.tree_util.tree_leaves(u))
    assert size == gj.n_parameters(p) + 1
    assert (u.off_diag is None) == (covariance_type in ("diag", "spherical"))


def test_jit_and_vmap(covariance_type):
    batch = jax.tree_util.tree_map(lambda *a: jnp.stack(a), _random_u(covariance_type, np.float32, 2),
                                   _random_u(covariance_type, np.float32, 3))
    many = jax.jit(jax.vmap(gj.from_unconstrained))(batch)
    for i in range(2):
        one = _from(jax.tree_util.tree_map(lambda a: a[i], batch))
        for a, b in zip(jax.tree_util.tree_leaves(many), jax.tree_util.tree_leaves(one)):
            np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6)


def test_bad_inputs():
    p = _params("full", np.float32)
    with pytest.raises(TypeError, match="MixtureParams"):
        gj.to_unconstrained(gj.to_unconstrained(p))
    with pytest.raises(TypeError, match="UnconstrainedParams"):
        gj.from_unconstrained(p)
    with pytest.raises(ValueError, match="covariance_type"):
        gj.to_unconstrained(p.replace(covariance_type="banana"))
    with pytest.raises(ValueError, match="covariance_type"):
        gj.from_unconstrained(gj.to_unconstrained(p).replace(covariance_type="banana"))


def test_covariance_types_covered():
    assert set(COVARIANCE_TYPES) == {"full", "tied", "diag", "spherical"}
