"""fit_sgd / sgd_step / MAP prior: the 1% target against EM, jit and vmap of one step, the prior
against scipy and its closed-form MAP, batches from iterators, bad inputs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.stats import dirichlet, invwishart, multivariate_normal

import gmmjax as gj

from _ordered import ordered_stream
from conftest import initial_state

OPT = optax.adam(0.03)         # one object: the compiled fit program is reused across tests
N_EPOCHS, BATCH = 60, 40


_from_precisions = jax.jit(gj.from_precisions, static_argnums=3)


def _params(covariance_type, dtype=np.float32):
    weights, means, precisions = (np.asarray(a, dtype) for a in initial_state(covariance_type))
    return _from_precisions(weights, means, precisions, covariance_type)


@pytest.mark.parametrize("covariance_type,dtype", [(c, np.float32) for c in gj.COVARIANCE_TYPES]
                         + [("full", np.float64)])
def test_within_one_percent_of_em(covariance_type, dtype, blobs):
    with jax.enable_x64(dtype == np.float64):
        x = jnp.asarray(blobs, dtype)
        key = jax.random.PRNGKey(0)
        # The same start for EM and SGD; spherical exercises the default k-means initialisation.
        init = "kmeans" if covariance_type == "spherical" else _params(covariance_type, dtype)
        em = gj.fit(key, x, 2, covariance_type=covariance_type, init=init)
        ll_em = float(jnp.mean(gj.log_prob(em.params, x)))
        res = gj.fit_sgd(key, x, 2, covariance_type=covariance_type, optimizer=OPT,
                         n_epochs=N_EPOCHS, batch_size=BATCH, init=init)
        assert res.params.means.dtype == dtype and res.losses.dtype == dtype
        assert res.params.covariance_type == covariance_type
        ll = float(jnp.mean(gj.log_prob(res.params, x)))
        assert ll == pytest.approx(float(res.log_likelihood), rel=1e-5)
        assert abs(ll - ll_em) <= 0.01 * abs(ll_em), (ll, ll_em)
        assert int(res.status) == gj.Status.MAX_ITER_REACHED and int(res.n_nonfinite) == 0
        assert int(res.n_steps) == N_EPOCHS * 3 and res.losses.shape == (N_EPOCHS,)
        # The last epochs' mean loss is the negative log-likelihood up to SGD noise.
        assert float(jnp.mean(res.losses[-5:])) == pytest.approx(-ll, rel=0.02)
        # Covariances are consistent with the precision Cholesky factors.
        again = gj.from_precisions_cholesky(res.params.weights, res.params.means,
                                            res.params.precisions_cholesky, covariance_type)
        np.testing.assert_allclose(res.params.covariances, again.covariances, rtol=1e-4)


@pytest.mark.parametrize("covariance_type", ["full", "spherical"])
def test_sgd_step_jit_and_vmap(covariance_type, blobs):
    x = jnp.asarray(blobs[:40], jnp.float32)
    state = gj.sgd_init(_params(covariance_type), OPT)
    step = functools.partial(gj.sgd_step, optimizer=OPT)
    jit_state, jit_loss = jax.jit(step)(state, x)
    # The loss is the batch's negative mean log-likelihood, and a small step lowers it.
    np.testing.assert_allclose(jit_loss, -jnp.mean(gj.log_prob(_params(covariance_type), x)),
                               rtol=1e-5)
    after = jax.jit(gj.sgd_objective)(jit_state.params, x)
    assert float(after) < float(jit_loss)
    assert int(jit_state.step) == 1
    # vmap: two independent fits (different data) in one call equal two separate steps.
    x2 = jnp.asarray(blobs[40:80], jnp.float32)
    states = jax.tree_util.tree_map(lambda a: jnp.stack([a, a]), state)
    many, losses = jax.jit(jax.vmap(step))(states, jnp.stack([x, x2]))
    other, other_loss = jax.jit(step)(state, x2)
    np.testing.assert_allclose(losses, [jit_loss, other_loss], rtol=1e-5)
    for a, b, c in zip(jax.tree_util.tree_leaves(many), jax.tree_util.tree_leaves(jit_state),
                       jax.tree_util.tree_leaves(other)):
        np.testing.assert_allclose(a[0], b, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(a[1], c, rtol=1e-4, atol=1e-6)


def test_objective_weights_and_padding(blobs):
    """Integer weights equal repeated rows; zero-weight (padding) rows are inert, even if inf."""
    u = gj.to_unconstrained(_params("full"))
    x = jnp.asarray(blobs[:30], jnp.float32)
    w = jnp.asarray(np.arange(30) % 3, jnp.float32)
    repeated = jnp.asarray(np.repeat(blobs[:30], np.arange(30) % 3, axis=0), jnp.float32)
    f = jax.jit(jax.value_and_grad(gj.sgd_objective))
    (a, ga), (b, gb) = f(u, x, w), f(u, repeated, None)
    np.testing.assert_allclose(a, b, rtol=1e-5)
    for p, q in zip(jax.tree_util.tree_leaves(ga), jax.tree_util.tree_leaves(gb)):
        np.testing.assert_allclose(p, q, rtol=1e-4, atol=1e-5)
    padded = x.at[0].set(jnp.inf)
    c, gc = f(u, padded, w)            # row 0 has weight 0
    assert np.isfinite(float(c)) and float(c) == pytest.approx(float(a), rel=1e-6)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(gc))


def test_nonfinite_step_is_skipped(blobs):
    state = gj.sgd_init(_params("full"), OPT)
    x = jnp.asarray(blobs[:40], jnp.float32).at[3, 0].set(jnp.nan)
    new, loss = jax.jit(functools.partial(gj.sgd_step, optimizer=OPT))(state, x)
    assert not np.isfinite(float(loss))
    assert int(new.n_nonfinite) == 1 and int(new.step) == 1
    for a, b in zip(jax.tree_util.tree_leaves(new.params), jax.tree_util.tree_leaves(state.params)):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------------
# MAP prior


def _dense_cov(cov, d):
    cov = np.asarray(cov)
    return cov * np.eye(d) if cov.ndim == 0 else (np.diag(cov) if cov.ndim == 1 else cov)


def _scipy_log_prior(params, prior):
    model = gj.get_covariance_model(params.covariance_type)
    k, d = params.means.shape
    covs = np.asarray(model.per_component(params.covariances, k))
    psi = np.asarray(prior.scale_cholesky) @ np.asarray(prior.scale_cholesky).T
    distinct = [covs[0]] if params.covariance_type == "tied" else list(covs)
    total = sum(invwishart(float(prior.dof), psi).logpdf(_dense_cov(c, d)) for c in distinct)
    total += sum(multivariate_normal(np.asarray(prior.mean), _dense_cov(c, d) / float(prior.kappa))
                 .logpdf(np.asarray(m)) for m, c in zip(params.means, covs))
    return total + dirichlet(np.full(k, float(prior.alpha))).logpdf(np.asarray(params.weights))


def test_log_prior_matches_scipy(covariance_type, x64, blobs):
    """Differences of log_prior between two parameter sets equal scipy's (constants cancel)."""
    prior = gj.weak_prior(blobs, 2, alpha=1.5, kappa=0.3, dof=5.0)
    p = _params(covariance_type, np.float64)
    q = jax.jit(lambda p: gj.from_unconstrained(jax.tree_util.tree_map(
        lambda a: a + 0.1 * jnp.cos(jnp.arange(a.size, dtype=a.dtype).reshape(a.shape)),
        gj.to_unconstrained(p))))(p)
    log_prior = jax.jit(gj.log_prior)
    ours = float(log_prior(p, prior)) - float(log_prior(q, prior))
    expected = _scipy_log_prior(p, prior) - _scipy_log_prior(q, prior)
    assert ours == pytest.approx(expected, rel=1e-10)


def test_map_objective_is_stationary_at_closed_form(covariance_type, x64, blobs):
    """One component: the MAP estimate is closed form (Fraley & Raftery, 2007); the gradient of
    the MAP objective vanishes there, and only there (it does not at the ML estimate)."""
    x = jnp.asarray(blobs)
    n, d = blobs.shape
    prior = gj.weak_prior(blobs, 1, kappa=0.5, dof=d + 2.0)
    m0 = np.asarray(prior.mean)
    psi = np.asarray(prior.scale_cholesky) @ np.asarray(prior.scale_cholesky).T
    xbar = blobs.mean(0)
    scatter = (blobs - xbar).T @ (blobs - xbar)
    kappa = float(prior.kappa)
    mu = (n * xbar + kappa * m0) / (n + kappa)
    cov = (psi + scatter + kappa * n / (kappa + n) * np.outer(xbar - m0, xbar - m0)) \
        / (n + float(prior.dof) + d + 2)
    reduce = {"full": cov[None], "tied": cov, "diag": np.diag(cov)[None],
              "spherical": np.array([np.trace(cov) / d])}[covariance_type]
    p_map = gj.from_covariances(np.ones(1), mu[None], reduce, covariance_type)
    grad = jax.jit(jax.grad(gj.sgd_objective))
    g = grad(gj.to_unconstrained(p_map), x, None, prior, n)
    assert max(float(jnp.max(jnp.abs(a))) for a in jax.tree_util.tree_leaves(g)) < 1e-10
    ml = {"full": (scatter / n)[None], "tied": scatter / n, "diag": np.diag(scatter / n)[None],
          "spherical": np.array([np.trace(scatter) / (n * d)])}[covariance_type]
    p_ml = gj.from_covariances(np.ones(1), xbar[None], ml, covariance_type)
    g_ml = grad(gj.to_unconstrained(p_ml), x, None, prior, n)
    assert max(float(jnp.max(jnp.abs(a))) for a in jax.tree_util.tree_leaves(g_ml)) > 1e-4


def test_fit_sgd_map(blobs):
    x = jnp.asarray(blobs, jnp.float32)
    key = jax.random.PRNGKey(0)
    init = _params("full")
    ll_em = float(jnp.mean(gj.log_prob(gj.fit(key, x, 2, init=init).params, x)))
    res = gj.fit_sgd(key, x, 2, optimizer=OPT, n_epochs=N_EPOCHS, batch_size=BATCH, prior="weak",
                     init=init)
    assert abs(float(res.log_likelihood) - ll_em) <= 0.01 * abs(ll_em)
    assert int(res.status) == gj.Status.MAX_ITER_REACHED


# ---------------------------------------------------------------------------------------------
# Batches from iterators


def test_iterator_sources(blobs):
    x = np.asarray(blobs, np.float32)
    key = jax.random.PRNGKey(0)
    init = _params("full")
    ll_em = float(jnp.mean(gj.log_prob(gj.fit(key, jnp.asarray(x), 2, init=init).params, x)))
    batches = [x[i::3] for i in range(3)]                 # 40 rows each, mixed clusters
    res = gj.fit_sgd(key, batches, 2, optimizer=OPT, n_epochs=N_EPOCHS, batch_size=BATCH,
                     init=init)
    ll = float(jnp.mean(gj.log_prob(res.params, x)))
    assert abs(ll - ll_em) <= 0.01 * abs(ll_em)
    assert int(res.n_steps) == 3 * N_EPOCHS and res.losses.shape == (N_EPOCHS,)
    assert np.isnan(float(res.log_likelihood))
    # A list and a callable returning fresh iterators are the same source.
    short = [gj.fit_sgd(key, src, 2, optimizer=OPT, n_epochs=2, batch_size=BATCH, init=init)
             for src in (batches, lambda: iter(batches))]
    np.testing.assert_allclose(short[0].params.means, short[1].params.means)
    np.testing.assert_allclose(short[0].losses, short[1].losses)
    # A one-shot generator of (x, weight) tuples, including a short, padded last batch and MAP.
    gen = ((b, np.ones(len(b), np.float32)) for b in batches + [x[:7]])
    res = gj.fit_sgd(key, gen, 2, optimizer=OPT, batch_size=BATCH, prior="weak", n_samples=127,
                     init=init)
    assert int(res.n_steps) == 4 and res.losses.shape == (1,)
    assert np.all(np.isfinite(np.asarray(res.params.means)))


def test_bad_inputs(blobs):
    x = np.asarray(blobs, np.float32)
    key = jax.random.PRNGKey(0)
    bad = [
        (dict(n_components=0), ValueError, "n_components"),
        (dict(batch_size=0), ValueError, "batch_size"),
        (dict(n_epochs=0), ValueError, "n_epochs"),
        (dict(covariance_type="banana"), ValueError, "covariance_type"),
        (dict(optimizer="adam"), TypeError, "optax"),
        (dict(prior="strong"), ValueError, "prior"),
        (dict(init="banana"), ValueError, "init"),
        (dict(init=_params("diag")), ValueError, "covariance_type"),
        (dict(reg_covar=-1.0), ValueError, "reg_covar"),
        (dict(sample_weight=np.ones(5)), ValueError, "sample_weight"),
        (dict(n_components=500), ValueError, "n_samples"),
    ]
    for kwargs, err, match in bad:
        kwargs = {"n_components": 2, **kwargs}
        with pytest.raises(err, match=match):
            gj.fit_sgd(key, x, optimizer=kwargs.pop("optimizer", OPT), **kwargs)
    x_nan = x.copy()
    x_nan[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        gj.fit_sgd(key, x_nan, 2)
    with pytest.raises(ValueError, match="2-D"):
        gj.fit_sgd(key, x[:, 0], 2)
    weights, means, precisions = initial_state("full")
    with pytest.raises(ValueError, match="features"):
        gj.fit_sgd(key, x, 2, init=gj.from_precisions(weights, means[:, :2],
                                                      precisions[:, :2, :2], "full"))
    with pytest.raises(ValueError, match="one-shot"):
        gj.fit_sgd(key, iter([x]), 2, n_epochs=2)
    with pytest.raises(ValueError, match="n_samples"):
        gj.fit_sgd(key, [x], 2, prior="weak")
    with pytest.raises(ValueError, match="sample_weight"):
        gj.fit_sgd(key, [x], 2, sample_weight=np.ones(120))
    with pytest.raises(ValueError, match="no batches"):
        gj.fit_sgd(key, [], 2)
    with pytest.raises(TypeError, match="iterable"):
        gj.fit_sgd(key, 3.0, 2)
    with pytest.raises(ValueError, match="n_samples"):
        gj.sgd_step(gj.sgd_init(_params("full"), OPT), x, optimizer=OPT,
                    prior=gj.weak_prior(x, 2))
    with pytest.raises(ValueError, match="alpha"):
        gj.fit_sgd(key, x, 2, prior=gj.weak_prior(x, 2, alpha=-1.0))
    with pytest.raises(ValueError, match="prior.mean"):
        gj.fit_sgd(key, x, 2, prior=gj.weak_prior(x[:, :2], 2))


ORDERED_OPT = optax.adam(0.05)


@pytest.mark.parametrize("covariance_type", gj.COVARIANCE_TYPES)
def test_ordered_batches_start_from_the_whole_stream(covariance_type):
    x, batches = ordered_stream()
    key = jax.random.PRNGKey(0)
    ll_em = float(jnp.mean(gj.log_prob(gj.fit(key, x, 2, covariance_type=covariance_type).params,
                                       x)))
    res = gj.fit_sgd(key, batches, 2, covariance_type=covariance_type, optimizer=ORDERED_OPT,
                     n_epochs=20, batch_size=50)
    ll = float(jnp.mean(gj.log_prob(res.params, x)))
    # From the first batch alone both components start in the first cluster and end ~1 nat lower.
    assert abs(ll - ll_em) <= 0.01 * abs(ll_em), (ll, ll_em)
    assert int(res.n_steps) == 200 and int(res.status) == gj.Status.MAX_ITER_REACHED


def test_one_shot_iterator_warm_up():
    x, batches = ordered_stream()
    key = jax.random.PRNGKey(0)
    kw = dict(optimizer=ORDERED_OPT, batch_size=50, covariance_type="diag")
    ll_em = float(jnp.mean(gj.log_prob(gj.fit(key, x, 2, covariance_type="diag").params, x)))
    # The first batch decides the start: one cluster only.
    first = gj.fit_sgd(key, batches(), 2, **kw)
    assert float(jnp.mean(gj.log_prob(first.params, x))) < ll_em - 1.0
    # A warm-up buffer of every batch starts where the reservoir pass of a callable does (all rows
    # fit in the sample, in order), and trains on the same batches.
    warm = gj.fit_sgd(key, batches(), 2, warmup_batches=10, **kw)
    again = gj.fit_sgd(key, batches, 2, n_epochs=1, **kw)
    np.testing.assert_allclose(warm.params.means, again.params.means, rtol=1e-6)
    assert int(warm.n_steps) == 10
    with pytest.raises(ValueError, match="warmup_batches"):
        gj.fit_sgd(key, batches(), 2, warmup_batches=0, **kw)


def test_host_paths_compile_only_the_sgd_programs(caplog):
    """Array data and host batches stay NumPy until the programs take them, the per-epoch loss
    is summed on the host and the final parameters come from one program: fit_sgd compiles its
    own programs and no eager XLA op (over batches it compiled 55 before)."""
    import logging
    rng = np.random.default_rng(41)
    x = (rng.normal(size=(600, 2)) + rng.integers(0, 2, 600)[:, None] * 4).astype(np.float32)
    key = jax.block_until_ready(jax.random.key(9))
    with caplog.at_level(logging.WARNING), jax.log_compiles(True):
        on_array = gj.fit_sgd(key, x, 2, covariance_type="diag")
        on_batches = gj.fit_sgd(key, lambda: iter([x[:250], x[250:500], x[500:]]), 2,
                                covariance_type="diag", batch_size=128, n_epochs=2)
    compiled = {r.getMessage().split()[1] for r in caplog.records
                if r.getMessage().startswith("Compiling ")}
    assert compiled <= {"jit(_fit_sgd_array)", "jit(_sgd_setup)", "jit(_frame_step)",
                        "jit(_final_params)", "jit(_seed_words)"}, compiled
    for res in (on_array, on_batches):
        assert all(isinstance(a, jax.Array) for a in jax.tree_util.tree_leaves(res.params))
        assert np.all(np.isfinite(np.asarray(res.params.means)))
    assert np.asarray(on_batches.losses).shape == (2,)
    assert np.all(np.isfinite(np.asarray(on_batches.losses)))
