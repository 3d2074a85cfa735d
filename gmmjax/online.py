"""Online (stepwise) EM (Cappé & Moulines, 2009) with an optax schedule as its step size.

The state keeps running averages of the normalised sufficient statistics,

    s_t = (1 − ρ_t) s_{t−1} + ρ_t ŝ(batch_t; θ_{t−1}),    θ_t = M-step(s_t),

where ŝ are the E-step statistics of one batch per unit weight and ρ_t = step_size(t) comes from an
optax schedule (any callable count -> value in (0, 1]). A decaying schedule with exponent in
(0.5, 1] converges to a local maximum of the likelihood; a constant one forgets the past
exponentially and tracks non-stationary streams. ρ_t = 1 with the whole data set as the batch is
exactly batch EM (:func:`gmmjax.em_step`).

Statistics are centred on fixed per-component centres (the initial means, in a frame shifted by
``shift``) so that running averages stay linear and float32 does not cancel.
"""

from __future__ import annotations

import functools
import numbers
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .compile_cache import cached_jit, repeated_caller
from .covariance import array_namespace
from .em import Status, params_from_stats
from .params import MixtureParams
from .sgd import (check_array_data, check_training_options, epoch_batches, initial_params,
                  is_array_data, pad_batch, start_batches)
from .stats import SuffStats, rows_minor_stats, weighted_log_prob_rows_minor


class StepwiseSchedule(NamedTuple):
    """ρ_t = (t + t0)^(−kappa) as a callable schedule. A tuple of plain numbers, so schedules
    with equal values share compiled programs, in this process and in gmmjax's on-disk cache."""

    t0: float
    kappa: float

    def __call__(self, count):
        return (count + self.t0) ** (-self.kappa)


def stepwise_schedule(t0: float = 2.0, kappa: float = 0.6) -> StepwiseSchedule:
    """ρ_t = (t + t0)^(−kappa), the classic stepwise-EM step size (an optax-style schedule).
    Use kappa in (0.5, 1] for convergence; ``optax.constant_schedule(c)`` to track drift."""
    if not (isinstance(kappa, numbers.Real) and 0 < kappa <= 1):
        raise ValueError(f"kappa must be in (0, 1]; got {kappa!r}.")
    if not (isinstance(t0, numbers.Real) and t0 >= 1):
        raise ValueError(f"t0 must be >= 1 (so that the step size is <= 1); got {t0!r}.")
    return StepwiseSchedule(float(t0), float(kappa))


class OnlineState(NamedTuple):
    """Carry of :func:`online_step`.

    params: current MixtureParams; stats: running SuffStats per unit weight, centred on
    ``centers`` in the frame shifted by ``shift``; step: number of updates so far; n_failed:
    updates rejected because the M-step gave a non-positive-definite covariance or a non-finite
    value (the state then keeps its previous params and statistics).
    """

    params: MixtureParams
    stats: SuffStats
    centers: jax.Array
    shift: jax.Array
    step: jax.Array
    n_failed: jax.Array


def _batch_stats(params, x, w, centers, shift):
    """E-step statistics of one batch per unit weight, centred on fixed ``centers``."""
    xs = x - shift
    frame = params.replace(means=params.means - shift)
    st, _ = rows_minor_stats(weighted_log_prob_rows_minor(frame, xs), xs, w, centers,
                             params.covariance_type)
    return jax.tree_util.tree_map(lambda a: a / st.weight, st)


def online_init(params: MixtureParams, x: jax.Array, w: jax.Array | None = None) -> OnlineState:
    """Initial state: ``params`` and their E-step statistics on the batch ``x`` (B, D)."""
    w = jnp.ones(x.shape[0], x.dtype) if w is None else jnp.asarray(w, x.dtype)
    shift = jnp.sum(w[:, None] * x, axis=0) / jnp.sum(w)
    centers = params.means - shift
    stats = _batch_stats(params, x, w, centers, shift)
    zero = jnp.zeros((), jnp.int32)
    return OnlineState(params, stats, centers, shift, zero, zero)


def online_step(state: OnlineState, x: jax.Array, w: jax.Array | None = None, *,
                step_size: Callable | float = 0.1, reg_covar=1e-6) -> tuple[OnlineState, jax.Array]:
    """One stepwise-EM update on the batch ``x`` (B, D) (``w``: row weights, 0 = padding).

    ``step_size``: an optax schedule (count -> ρ) evaluated at ``state.step``, or a number; ρ is
    clipped to [0, 1]. Returns (new state, mean log-likelihood of the batch under the params
    before the update: a prequential score). Pure: jit and vmap it.
    """
    w = jnp.ones(x.shape[0], x.dtype) if w is None else jnp.asarray(w, x.dtype)
    rho = step_size(state.step) if callable(step_size) else step_size
    rho = jnp.clip(jnp.asarray(rho, x.dtype), 0.0, 1.0)
    batch = _batch_stats(state.params, x, w, state.centers, state.shift)
    stats = jax.tree_util.tree_map(lambda s, b: (1 - rho) * s + rho * b, state.stats, batch)
    params, ok = params_from_stats(stats, state.centers, state.params.covariance_type, reg_covar,
                                   state.shift, lone_weight=0.0)
    for leaf in jax.tree_util.tree_leaves(params):
        ok = ok & jnp.all(jnp.isfinite(leaf))

    def keep(a, b):
        return jnp.where(ok, a, b)

    new = OnlineState(jax.tree_util.tree_map(keep, params, state.params),
                      jax.tree_util.tree_map(keep, stats, state.stats), state.centers,
                      state.shift, state.step + 1, state.n_failed + (~ok).astype(jnp.int32))
    return new, batch.loglik


class OnlineResult(NamedTuple):
    """What :func:`fit_online` returns.

    params: final MixtureParams; log_likelihood: their weighted mean log-likelihood on the data
    (array data; NaN for batches); batch_log_likelihoods (n_steps,): each batch's mean
    log-likelihood under the params before its update (prequential); n_steps; n_failed: rejected
    updates; status (:class:`Status`): MAX_ITER_REACHED when all batches were used,
    ILL_DEFINED_COVARIANCE if the initialisation or an update failed; state: the final
    :class:`OnlineState` (to continue with :func:`online_step`).
    """

    params: MixtureParams
    log_likelihood: jax.Array
    batch_log_likelihoods: jax.Array
    n_steps: jax.Array
    n_failed: jax.Array
    status: jax.Array
    state: OnlineState


def _status(ok, n_failed):
    xp = array_namespace(n_failed)
    bad = (~ok) | (n_failed > 0)
    return xp.where(bad, Status.ILL_DEFINED_COVARIANCE, Status.MAX_ITER_REACHED).astype(np.int32)


def _setup(key, x, w, init_params, reg_covar, n_components, covariance_type, init_name):
    shift = jnp.sum(w[:, None] * x, axis=0) / jnp.sum(w)
    if init_params is not None:
        init_params = init_params.replace(means=init_params.means - shift)
    params, ok = initial_params(key, x - shift, w, init_name, init_params, n_components,
                                covariance_type, reg_covar)
    return params.replace(means=params.means + shift), ok


@functools.partial(cached_jit, static_argnames=("step_size", "n_components", "covariance_type",
                                             "init_name", "n_epochs", "batch_size", "shuffle"))
def _fit_online_array(key, x, w, init_params, reg_covar, *, step_size, n_components,
                      covariance_type, init_name, n_epochs, batch_size, shuffle):
    init_key, shuffle_key = jax.random.split(key)
    params, ok = _setup(init_key, x, w, init_params, reg_covar, n_components, covariance_type,
                        init_name)
    state = online_init(params, x, w)

    def epoch(state, epoch_key):
        xb, wb = epoch_batches(epoch_key, x, w, batch_size, shuffle)
        return jax.lax.scan(
            lambda s, b: online_step(s, b[0], b[1], step_size=step_size, reg_covar=reg_covar),
            state, (xb, wb))

    state, lls = jax.lax.scan(epoch, state, jax.random.split(shuffle_key, n_epochs))
    shift = jnp.mean(state.params.means, axis=0)
    norm = jax.nn.logsumexp(weighted_log_prob_rows_minor(state.params, x, shift), axis=0)
    loglik = jnp.sum(jnp.where(w > 0, w * norm, 0.0)) / jnp.sum(w)
    return OnlineResult(state.params, loglik, lls.reshape(-1), state.step, state.n_failed,
                        _status(ok, state.n_failed), state)


@functools.partial(cached_jit, static_argnames=("n_components", "covariance_type", "init_name"))
def _online_setup(key, x, w, init_params, reg_covar, *, n_components, covariance_type, init_name):
    params, ok = _setup(key, x, w, init_params, reg_covar, n_components, covariance_type,
                        init_name)
    return online_init(params, x, w), ok


# the per-batch step: called through compile_cache.repeated_caller (the program directly after
# the first batch; cached_jit's lookup on every batch cost 20-38% of a 400-batch stream)
@functools.partial(cached_jit, static_argnames=("step_size",))
def _online_step_jit(state, x, w, reg_covar, *, step_size):
    return online_step(state, x, w, step_size=step_size, reg_covar=reg_covar)


def _check_step_size(step_size):
    if callable(step_size):
        return step_size
    if isinstance(step_size, numbers.Real) and not isinstance(step_size, bool) \
            and 0 < step_size <= 1:
        return float(step_size)
    raise ValueError(f"step_size must be an optax schedule (a callable count -> value in (0, 1]) "
                     f"or a number in (0, 1]; got {step_size!r}.")


def fit_online(key: jax.Array, data, n_components: int, *, covariance_type: str = "full",
               step_size: Callable | float | None = None, n_epochs: int | None = None,
               batch_size: int = 256, init="kmeans", reg_covar=1e-6, sample_weight=None,
               shuffle: bool = True, sample_size: int | None = 16384,
               warmup_batches: int = 1) -> OnlineResult:
    """Fit a Gaussian mixture by online (stepwise) EM over mini-batches.

    Args:
      key: PRNG key (initialisation and shuffling).
      data: an (N, D) array (cut into shuffled batches each epoch; one compiled program), or an
        iterable of host batches ((B, D) arrays or (x, sample_weight) tuples), or a callable
        returning a fresh iterable per epoch (a one-shot iterator allows one epoch). Batches are
        padded with zero-weight rows to a multiple of ``batch_size`` rows (or of the first
        batch's size if that is larger). The model is initialised as in :func:`gmmjax.fit_sgd`:
        from a reservoir sample of the whole stream (one extra pass) when it can be iterated
        again, else from the first ``warmup_batches`` batches.
      step_size: an optax schedule count -> ρ in (0, 1] (default :func:`stepwise_schedule`:
        (t + 2)^−0.6), or a constant. Pass the same schedule object again to reuse the compiled
        program.
      n_epochs: passes over the data (default 10 for arrays, 1 for batches).
      batch_size, init, reg_covar, sample_weight, shuffle, sample_size, warmup_batches: as
        :func:`gmmjax.fit_sgd`.

    Stepwise EM follows the most recent batches: each step moves the statistics a fraction ρ_t
    towards the current batch's, so a forgetting step size (the default (t + 2)^−0.6, or a
    constant) tracks drift but, on stationary data stored in order (by time, file or class),
    ends fitted to the last batches' clusters even from a good start. For such data pass
    ``step_size=stepwise_schedule(kappa=1.0)`` (ρ_t = 1/(t + 2): every batch and the initial
    sample weigh the same, so the statistics are the running average over the whole stream)
    and several epochs; array data are shuffled and need neither.

    Returns an :class:`OnlineResult`.
    """
    n_components, batch_size, n_epochs, sample_size, warmup_batches = check_training_options(
        n_components, batch_size, n_epochs, sample_size, warmup_batches, covariance_type,
        reg_covar)
    step_size = _default_schedule() if step_size is None else _check_step_size(step_size)

    if is_array_data(data):
        x, w, init_name, init_params = check_array_data(data, sample_weight, n_components, init,
                                                        covariance_type)
        n = x.shape[0]
        return _fit_online_array(key, x, w, init_params, np.asarray(reg_covar, x.dtype),
                                 step_size=step_size, n_components=n_components,
                                 covariance_type=covariance_type, init_name=init_name,
                                 n_epochs=10 if n_epochs is None else n_epochs,
                                 batch_size=min(batch_size, n), shuffle=bool(shuffle))

    if sample_weight is not None:
        raise ValueError("sample_weight applies to array data; with batches, yield (x, weight) "
                         "tuples instead.")
    epochs, n_epochs, x0, w0, init_name, init_params = start_batches(
        key, data, n_epochs, sample_size, warmup_batches, init, covariance_type, n_components)
    d, dtype = x0.shape[1], x0.dtype
    reg = np.asarray(reg_covar, dtype)      # host scalars and results: no eager XLA op
    state, ok = _online_setup(key, x0, w0, init_params, reg, n_components=n_components,
                              covariance_type=covariance_type, init_name=init_name)
    rows = None
    lls = []
    step = repeated_caller(_online_step_jit, step_size=step_size)
    for epoch in range(n_epochs):
        count = 0
        for xb, wb in epochs():
            if xb.shape[1] != d:
                raise ValueError(f"batch has {xb.shape[1]} features; the first batch had {d}.")
            rows = max(batch_size, xb.shape[0]) if rows is None else rows
            xb, wb = pad_batch(xb.astype(dtype), wb.astype(dtype), rows)
            state, ll = step(state, xb, wb, reg)
            lls.append(ll)
            count += 1
        if count == 0:
            raise ValueError(f"data yielded no batches in epoch {epoch}; a callable must return "
                             "a fresh iterable of batches on every call.")
    ok, n_failed, lls = jax.device_get((ok, state.n_failed, lls))
    nan, lls, status = jax.device_put((np.asarray(np.nan, dtype), np.asarray(lls, dtype),
                                       _status(ok, n_failed)))
    return OnlineResult(state.params, nan, lls, state.step, state.n_failed, status, state)


@functools.lru_cache(maxsize=1)
def _default_schedule():
    return stepwise_schedule()
