"""fit_online / online_step (stepwise EM): exact batch EM at ρ = 1, the 1% target, drift tracking
with a constant schedule, jit/vmap of a step, bad inputs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gmmjax as gj

from _ordered import ordered_stream
from conftest import initial_state


_from_precisions = jax.jit(gj.from_precisions, static_argnums=3)
SCHEDULE = gj.stepwise_schedule()
STEP = jax.jit(functools.partial(gj.online_step, step_size=SCHEDULE))
_init = jax.jit(gj.online_init)


def _params(covariance_type, dtype=np.float32):
    weights, means, precisions = (np.asarray(a, dtype) for a in initial_state(covariance_type))
    return _from_precisions(weights, means, precisions, covariance_type)


@functools.partial(jax.jit, static_argnames=("covariance_type",))
def _one_full_step(p, x, covariance_type):
    state = gj.online_init(p, x)
    state, ll = gj.online_step(state, x, step_size=1.0, reg_covar=1e-6)
    em, ll_em, _ = gj.em_step(p, x, reg_covar=1e-6)
    return state.params, ll, em, ll_em


def test_unit_step_on_all_data_is_batch_em(covariance_type, x64, blobs):
    p = _params(covariance_type, np.float64)
    x = jnp.asarray(blobs + np.array([50.0, -30.0, 10.0]))    # offset data: no cancellation
    online, ll, em, ll_em = _one_full_step(p.replace(means=p.means + jnp.array([50.0, -30.0, 10.0])),
                                           x, covariance_type)
    np.testing.assert_allclose(ll, ll_em, rtol=1e-12)
    for field in ("weights", "means", "covariances", "precisions_cholesky"):
        np.testing.assert_allclose(getattr(online, field), getattr(em, field), rtol=1e-9,
                                   atol=1e-12, err_msg=field)


@pytest.mark.parametrize("covariance_type", ["full", "spherical"])
def test_within_one_percent_of_em(covariance_type, blobs):
    x = jnp.asarray(blobs, jnp.float32)
    key = jax.random.PRNGKey(0)
    # The same start as EM (and tests/test_sgd.py); spherical uses the default k-means init.
    init = "kmeans" if covariance_type == "spherical" else _params(covariance_type)
    em = gj.fit(key, x, 2, covariance_type=covariance_type, init=init)
    ll_em = float(jnp.mean(gj.log_prob(em.params, x)))
    res = gj.fit_online(key, x, 2, covariance_type=covariance_type, n_epochs=10, batch_size=40,
                        init=init)
    ll = float(jnp.mean(gj.log_prob(res.params, x)))
    assert ll == pytest.approx(float(res.log_likelihood), rel=1e-5)
    assert abs(ll - ll_em) <= 0.01 * abs(ll_em)
    assert int(res.status) == gj.Status.MAX_ITER_REACHED and int(res.n_failed) == 0
    assert int(res.n_steps) == 30 and res.batch_log_likelihoods.shape == (30,)
    np.testing.assert_allclose(jnp.sum(res.params.weights), 1.0, rtol=1e-5)


def _drifting_stream(seed, n_batches=40, size=32):
    """Two clusters that jump by +6 along the first axis half way through the stream."""
    rng = np.random.default_rng(seed)
    for t in range(n_batches):
        offset = 0.0 if t < n_batches // 2 else 6.0
        labels = rng.integers(0, 2, size)
        centres = np.array([[0.0, 0.0], [0.0, 5.0]])[labels] + np.array([offset, 0.0])
        yield (centres + 0.5 * rng.normal(size=(size, 2))).astype(np.float32)


def test_constant_schedule_tracks_drift():
    key = jax.random.PRNGKey(1)
    init = gj.from_covariances(np.array([0.5, 0.5]), np.array([[0.5, -0.5], [-0.5, 4.5]]),
                               np.ones((2, 2)), "diag").astype(jnp.float32)
    tracked = gj.fit_online(key, _drifting_stream(0), 2, covariance_type="diag", init=init,
                            step_size=optax.constant_schedule(0.3), batch_size=32)
    averaged = gj.fit_online(key, _drifting_stream(0), 2, covariance_type="diag", init=init,
                             step_size=lambda t: 1.0 / (t + 1.0), batch_size=32)
    assert int(tracked.n_steps) == 40 and tracked.batch_log_likelihoods.shape == (40,)
    # The forgetting fit sits on the new cluster positions; the running average sits between.
    means = np.sort(np.asarray(tracked.params.means)[:, 1])
    np.testing.assert_allclose(np.asarray(tracked.params.means)[:, 0], 6.0, atol=0.4)
    np.testing.assert_allclose(means, [0.0, 5.0], atol=0.4)
    assert np.all(np.abs(np.asarray(averaged.params.means)[:, 0] - 3.0) < 1.5)
    # Prequential score recovers after the jump for the tracking fit.
    lls = np.asarray(tracked.batch_log_likelihoods)
    assert lls[20] < lls[19] - 1.0 and lls[-1] > lls[20] + 1.0


def test_online_step_jit_and_vmap(blobs):
    x = jnp.asarray(blobs[:40], jnp.float32)
    x2 = jnp.asarray(blobs[40:80], jnp.float32)
    p = _params("full")
    step = STEP
    s1, s2 = _init(p, x), _init(p, x2)
    a, la = step(s1, x2)
    b, lb = step(s2, x)
    both, lls = jax.jit(jax.vmap(functools.partial(gj.online_step, step_size=SCHEDULE)))(
        jax.tree_util.tree_map(lambda u, v: jnp.stack([u, v]), s1, s2), jnp.stack([x2, x]))
    np.testing.assert_allclose(lls, [la, lb], rtol=1e-5)
    for u, v, w in zip(jax.tree_util.tree_leaves(both), jax.tree_util.tree_leaves(a),
                       jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(u[0], v, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(u[1], w, rtol=1e-4, atol=1e-6)
    assert int(a.step) == 1 and int(a.n_failed) == 0
    # ρ = 0 keeps the statistics, hence the parameters (up to the M-step of the same statistics).
    same, _ = jax.jit(functools.partial(gj.online_step, step_size=0.0))(a, x)
    np.testing.assert_allclose(same.params.means, a.params.means, rtol=1e-5, atol=1e-6)


def _manual(init, first, batches, n_epochs):
    state, lls = _init(init, jnp.asarray(first)), []
    for _ in range(n_epochs):
        for b in batches:
            state, ll = STEP(state, jnp.asarray(b))
            lls.append(ll)
    return state, np.asarray(lls)


def test_fit_online_equals_manual_loop(blobs):
    """fit_online = online_init on the data (array) or the reservoir sample of the batches (here
    all of them, in order), then one online_step per batch; padding a short last batch changes
    nothing."""
    x = np.asarray(blobs, np.float32)
    key = jax.random.PRNGKey(0)
    init = _params("full")
    arr = gj.fit_online(key, x, 2, n_epochs=2, batch_size=40, init=init, shuffle=False)
    state, lls = _manual(init, x, [x[:40], x[40:80], x[80:]], 2)
    np.testing.assert_allclose(arr.params.means, state.params.means, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(arr.batch_log_likelihoods, lls, rtol=1e-5)
    batches = [x[:40], x[40:80], x[80:110]]                  # the last one is padded to 40 rows
    it = gj.fit_online(key, batches, 2, n_epochs=2, batch_size=40, init=init)
    state, lls = _manual(init, np.concatenate(batches), batches, 2)
    np.testing.assert_allclose(it.params.means, state.params.means, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(it.batch_log_likelihoods, lls, rtol=1e-5)
    assert np.isnan(float(it.log_likelihood)) and int(it.n_steps) == 6


def test_bad_inputs(blobs):
    x = np.asarray(blobs, np.float32)
    key = jax.random.PRNGKey(0)
    for step_size in (0.0, 1.5, "fast", True):
        with pytest.raises(ValueError, match="step_size"):
            gj.fit_online(key, x, 2, step_size=step_size)
    with pytest.raises(ValueError, match="kappa"):
        gj.stepwise_schedule(kappa=1.5)
    with pytest.raises(ValueError, match="t0"):
        gj.stepwise_schedule(t0=0.5)
    with pytest.raises(ValueError, match="n_components"):
        gj.fit_online(key, x, 0)
    with pytest.raises(ValueError, match="covariance_type"):
        gj.fit_online(key, x, 2, covariance_type="banana")
    with pytest.raises(ValueError, match="one-shot"):
        gj.fit_online(key, iter([x]), 2, n_epochs=3)
    with pytest.raises(ValueError, match="features"):
        gj.fit_online(key, [x[:40], x[:40, :2]], 2, batch_size=40, init=_params("full"))
    with pytest.raises(ValueError, match="init"):
        gj.fit_online(key, x, 2, init=_params("tied"))
    with pytest.raises(ValueError, match="sample_weight"):
        gj.fit_online(key, [x], 2, sample_weight=np.ones(120))


@pytest.mark.parametrize("covariance_type", gj.COVARIANCE_TYPES)
def test_ordered_batches_need_a_schedule_that_does_not_forget(covariance_type):
    x, batches = ordered_stream()
    key = jax.random.PRNGKey(0)
    ll_em = float(jnp.mean(gj.log_prob(gj.fit(key, x, 2, covariance_type=covariance_type).params,
                                       x)))
    kw = dict(covariance_type=covariance_type, batch_size=50, n_epochs=2)
    # Started from a sample of the whole stream, ρ_t = 1/(t + 2) averages every batch: EM's fit.
    even = gj.fit_online(key, batches, 2, step_size=gj.stepwise_schedule(kappa=1.0), **kw)
    ll = float(jnp.mean(gj.log_prob(even.params, x)))
    assert abs(ll - ll_em) <= 1e-3 * abs(ll_em), (ll, ll_em)
    assert int(even.status) == gj.Status.MAX_ITER_REACHED and int(even.n_steps) == 20
    # The default schedule forgets: it ends fitted to the last batches (the second cluster).
    forget = gj.fit_online(key, batches, 2, **kw)
    assert float(jnp.mean(gj.log_prob(forget.params, x))) < ll_em - 0.05


def test_host_batches_compile_only_the_online_programs(caplog):
    """NumPy batches stay on the host (checks, weights, padding, the reservoir sample) and the
    result's scalars and losses are assembled on the host: fit_online over batches compiles its
    setup, step and seed programs and no eager XLA op; the losses are one per batch, finite."""
    import logging
    rng = np.random.default_rng(21)
    batches = [rng.normal(size=(n, 2)).astype(np.float32) + 3 * (i % 2)
               for i, n in enumerate([300, 300, 211])]
    key = jax.block_until_ready(jax.random.key(6))
    with caplog.at_level(logging.WARNING), jax.log_compiles(True):
        res = gj.fit_online(key, lambda: iter(batches), 2, covariance_type="diag",
                            batch_size=128)
    compiled = {r.getMessage().split()[1] for r in caplog.records
                if r.getMessage().startswith("Compiling ")}
    assert compiled <= {"jit(_online_setup)", "jit(_online_step_jit)", "jit(_seed_words)"}, \
        compiled
    losses = np.asarray(res.batch_log_likelihoods)
    assert losses.shape == (3,) and np.all(np.isfinite(losses))
    assert isinstance(res.status, jax.Array) and int(res.status) == int(gj.Status.MAX_ITER_REACHED)
