"""Gradients of the functional API against central finite differences (float64), every type.

log_prob in the parameters and in the inputs (the score function, also against its closed form),
predict_proba in both, sample reparameterised in the means and the precision Cholesky factors,
log_prob through from_unconstrained, and jit/vmap of the gradients.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gmmjax as gj

from conftest import initial_state

EPS = 1e-6
RTOL = 1e-6


@functools.lru_cache(maxsize=None)
def _params_np(covariance_type):
    weights, means, precisions = initial_state(covariance_type)
    with jax.enable_x64(True):
        p = jax.jit(gj.from_precisions, static_argnums=3)(weights, means, precisions,
                                                           covariance_type)
        return jax.tree_util.tree_map(np.asarray, p)


def _params(covariance_type):
    return jax.tree_util.tree_map(jnp.asarray, _params_np(covariance_type))


def _direction(tree, seed):
    """A random direction (numpy) with the structure of ``tree`` (zero on the unused covariances)."""
    rng = np.random.default_rng(seed)
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    out = [rng.normal(size=np.shape(a)) for a in leaves]
    tree_dir = jax.tree_util.tree_unflatten(treedef, out)
    if isinstance(tree_dir, gj.MixtureParams):
        tree_dir = tree_dir.replace(covariances=np.zeros(np.shape(tree_dir.covariances)))
    return tree_dir


def _shift(tree, direction, eps):
    return jax.tree_util.tree_map(lambda a, v: np.asarray(a) + eps * v, tree, direction)


def _dot(a, b):
    return sum(float(np.vdot(np.asarray(x), np.asarray(y)))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def _check_directional(f, grads, args, argnum, seed):
    """<grad, v> equals (f(a + εv) − f(a − εv)) / 2ε for argument ``argnum``."""
    v = _direction(args[argnum], seed)
    plus = list(args)
    minus = list(args)
    plus[argnum] = _shift(args[argnum], v, EPS)
    minus[argnum] = _shift(args[argnum], v, -EPS)
    fd = (float(f(*plus)) - float(f(*minus))) / (2 * EPS)
    analytic = _dot(grads[argnum], v)
    assert analytic == pytest.approx(fd, rel=RTOL, abs=1e-8), (argnum, analytic, fd)


def _dense_precisions(params):
    model = gj.get_covariance_model(params.covariance_type)
    prec = np.asarray(model.per_component(params.precisions, params.n_components))
    d = params.n_features
    if prec.ndim == 1:
        return prec[:, None, None] * np.eye(d)
    if prec.ndim == 2:
        return np.stack([np.diag(p) for p in prec])
    return prec


def test_log_prob_gradients(covariance_type, x64, blobs):
    p = _params(covariance_type)
    x = jnp.asarray(blobs)
    c = jnp.asarray(np.random.default_rng(0).uniform(0.5, 1.5, size=x.shape[0]))

    @jax.jit
    def f(p, x):
        return jnp.sum(c * gj.log_prob(p, x))

    grads = jax.jit(jax.grad(f, argnums=(0, 1)))(p, x)
    _check_directional(f, grads, (p, x), 0, seed=1)
    _check_directional(f, grads, (p, x), 1, seed=2)
    # Every parameter actually matters (a zero gradient would pass a sloppy FD check).
    for field in ("weights", "means", "precisions_cholesky"):
        assert float(jnp.max(jnp.abs(getattr(grads[0], field)))) > 1e-3, field


def test_score_function_closed_form(covariance_type, x64, blobs):
    """∇ₓ log p(x) = Σ_k p(k|x) Λ_k (μ_k − x)."""
    p = _params(covariance_type)
    x = jnp.asarray(blobs)
    score = jax.jit(jax.grad(lambda x: jnp.sum(gj.log_prob(p, x))))(x)
    resp = np.asarray(gj.predict_proba(p, x))
    prec = _dense_precisions(p)
    diff = np.asarray(p.means)[None] - blobs[:, None]                     # (N, K, D)
    expected = np.einsum("nk,kde,nke->nd", resp, prec, diff)
    np.testing.assert_allclose(score, expected, rtol=1e-10, atol=1e-12)
    # One row at a time through vmap (per-sample scores) gives the same.
    per_row = jax.jit(jax.vmap(jax.grad(lambda r: gj.log_prob(p, r[None])[0])))(x)
    np.testing.assert_allclose(per_row, expected, rtol=1e-10, atol=1e-12)


def test_predict_proba_gradients(covariance_type, x64, blobs):
    p = _params(covariance_type)
    x = jnp.asarray(blobs)
    c = jnp.asarray(np.random.default_rng(3).normal(size=(x.shape[0], p.n_components)))

    @jax.jit
    def f(p, x):
        return jnp.sum(c * gj.predict_proba(p, x))

    grads = jax.jit(jax.grad(f, argnums=(0, 1)))(p, x)
    _check_directional(f, grads, (p, x), 0, seed=4)
    _check_directional(f, grads, (p, x), 1, seed=5)


def test_sample_is_reparameterised(covariance_type, x64):
    p = _params(covariance_type)
    key = jax.random.PRNGKey(0)
    c = jnp.asarray(np.random.default_rng(6).normal(size=(64, p.n_features)))

    @jax.jit
    def f(p):
        return jnp.sum(c * gj.sample(key, p, 64)[0])

    grads = jax.jit(jax.grad(f))(p)
    # Perturb means and precision Cholesky factors only (labels stay fixed).
    v = _direction(p, seed=7)
    v = v.replace(weights=np.zeros_like(v.weights))
    fd = (float(f(_shift(p, v, EPS))) - float(f(_shift(p, v, -EPS)))) / (2 * EPS)
    assert _dot(grads, v) == pytest.approx(fd, rel=RTOL)
    assert float(jnp.max(jnp.abs(grads.precisions_cholesky))) > 1e-3
    # d sample / d mean_k is the number of draws from component k, for each feature.
    labels = gj.sample(key, p, 64)[1]
    expected = np.stack([np.asarray(c)[np.asarray(labels) == k].sum(0)
                         for k in range(p.n_components)])
    np.testing.assert_allclose(grads.means, expected, rtol=1e-12)


def test_log_prob_through_unconstrained(covariance_type, x64, blobs):
    u = gj.to_unconstrained(_params(covariance_type))
    x = jnp.asarray(blobs)

    @jax.jit
    def f(u):
        return jnp.mean(gj.log_prob(gj.from_unconstrained(u), x))

    grads = jax.jit(jax.grad(f))(u)
    _check_directional(f, (grads,), (u,), 0, seed=8)


def test_jit_vmap_of_grad(covariance_type, x64, blobs):
    x = jnp.asarray(blobs[:20])
    grad_fn = jax.jit(jax.grad(lambda p, x: jnp.sum(gj.log_prob(p, x))))
    batch = jax.tree_util.tree_map(lambda a: np.stack([a, 1.1 * a]), _params_np(covariance_type))
    many = jax.jit(jax.vmap(grad_fn, in_axes=(0, None)))(batch, x)
    for i in range(2):
        one = grad_fn(jax.tree_util.tree_map(lambda a: jnp.asarray(a[i]), batch), x)
        for a, b in zip(jax.tree_util.tree_leaves(many), jax.tree_util.tree_leaves(one)):
            np.testing.assert_allclose(a[i], b, rtol=1e-10, atol=1e-12)


def test_joint_training_example_runs(tmp_path):
    """examples/joint_training.py (flow + mixture trained jointly) with a tiny setting."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "joint_training.py"
    spec = importlib.util.spec_from_file_location("joint_training", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "joint.png"
    summary = module.main(steps=20, out=str(out), verbose=False)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.isfinite(summary["final_loss"]) and np.isfinite(summary["initial_loss"])
    assert 0.5 <= summary["cluster_accuracy"] <= 1.0
