"""E-step, M-step, one EM step, and the generic ``lax.while_loop`` driver with status codes."""

from __future__ import annotations

import enum
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from .covariance import (TYPE_CODES, array_namespace, constrained_covariances,
                         get_covariance_model)
from .params import MixtureParams
from .rows import LOCAL, Rows, weighted_mean
from .stats import (SuffStats, chunked_map, mixture_log_resp_and_norm, resp_statistics,
                    sufficient_statistics)


class Status(enum.IntEnum):
    """Outcome of a fit, returned as data from inside jit (``FitResult.status``)."""

    CONVERGED = 0                 # |Δ lower bound| < tol
    MAX_ITER_REACHED = 1          # ran max_iter iterations without converging (a warning, not an error)
    ILL_DEFINED_COVARIANCE = 2    # a covariance lost positive definiteness (collapsed component)
    NONFINITE = 3                 # the log-likelihood became NaN or inf
    INVALID_INPUT = 4             # traced sample weights were negative, NaN/inf or all zero


class FitResult(NamedTuple):
    """What :func:`gmmjax.fit` returns (a pytree, so ``vmap(fit)`` stacks it).

    params: best restart's MixtureParams; lower_bound: its final mean log-likelihood (sklearn's
    ``lower_bound_``); lower_bounds (max_iter,): its per-iteration history, NaN past n_iter;
    n_iter, converged, status: of that restart; restart_lower_bounds / restart_status (n_init,):
    every restart's final bound and status.
    """

    params: MixtureParams
    lower_bound: jax.Array
    lower_bounds: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    status: jax.Array
    restart_lower_bounds: jax.Array
    restart_status: jax.Array


def _eps(dtype) -> jax.Array:
    return 10 * jnp.finfo(dtype).eps


def _unit_where_masked(model, cov: jax.Array, mask: jax.Array, n_features: int) -> jax.Array:
    """Masked components get the unit covariance (positive definite whatever ``reg_covar``);
    a covariance shared by all components (tied) has no per-component entry to mask."""
    k = mask.shape[0]
    if model.shape(k, n_features) == model.shape(k + 1, n_features):
        return cov
    unit = model.add_reg(jnp.zeros_like(cov), 1.0)
    return jnp.where(mask.reshape((k,) + (1,) * (cov.ndim - 1)), cov, unit)


def params_from_stats(stats: SuffStats, centers: jax.Array, covariance_type: str, reg_covar,
                      shift: jax.Array, mask: jax.Array | None = None, lone_weight=2.0,
                      type_code=None) -> tuple[MixtureParams, jax.Array]:
    """The M-step: parameters from statistics centred on ``centers`` (shifted frame). -> (params, ok).

    nk is floored with 10·eps as sklearn does, so an empty component keeps its centre and gets
    covariance ``reg_covar``. ``mask`` (K,) bool marks live components: the others get weight
    exactly 0 and the unit covariance, so the live ones are those of a K_live-component fit.
    A component collapsed onto identical rows (a variance at the rounding floor) is ill-defined
    when it holds at least ``lone_weight`` of weight (statistics per unit weight pass 0: always);
    a lone sample instead gets the floor as its variance. ``type_code`` (traced, with
    ``covariance_type`` "full"): the covariance type the full-layout covariances are constrained
    to (:func:`gmmjax.covariance.constrained_covariances`).
    """
    model = get_covariance_model(covariance_type)
    nk = stats.nk + _eps(stats.nk.dtype)
    delta = stats.sx / nk[:, None]
    # Σ r (x−μ)(x−μ)ᵀ with μ = c + sx/ñ equals scatter − (2/ñ − n/ñ²)·sx sxᵀ.
    coef = (2.0 - stats.nk / nk) / nk
    centred = stats.scatter - model.outer(stats.sx, coef)
    if type_code is None:
        cov = model.add_reg(model.from_scatter(centred, nk), reg_covar)
        pooled_nk = model.pool(stats.nk) * (stats.nk.size // model.pool(stats.nk).size)
    else:
        cov = model.add_reg(constrained_covariances(centred, nk, type_code), reg_covar)
        pooled_nk = jnp.where(type_code == TYPE_CODES["tied"], jnp.sum(stats.nk), stats.nk)
    means = centers + delta
    # A component collapsed onto identical rows has variance ~ (10·eps·|x|/n)², pure rounding
    # (from the nk floor), and may or may not come out exactly 0. Call any variance at that
    # level collapsed so the outcome does not hinge on rounding. Collapsed onto several rows it
    # is ill-defined (sklearn: "ill-defined"); a lone sample is not an error in sklearn's
    # diag/spherical M-step (its E[x²] − μ² keeps 10·eps·μ²/ñ > 0), so it gets the floor.
    eps = jnp.finfo(cov.dtype).eps
    floor = 100 * eps * eps * jnp.max(means * means)
    # weight behind each covariance: nk, or all of it for a pooled (tied) one
    lone = pooled_nk < lone_weight
    collapsed = jnp.any((model.variances(cov) <= floor).reshape(lone.shape + (-1,)), axis=-1)
    fix = (collapsed & lone).reshape(lone.shape + (1,) * (cov.ndim - lone.ndim))
    cov = jnp.where(fix, model.add_reg(jnp.zeros_like(cov), floor), cov)
    weights = nk
    if mask is not None:
        cov = _unit_where_masked(model, cov, mask, centers.shape[-1])
        weights = jnp.where(mask, nk, 0.0)
    prec_chol, ok = model.precision_cholesky(cov)
    ok = ok & ~jnp.any(collapsed & ~lone)
    params = MixtureParams(weights / jnp.sum(weights), means + shift, cov, prec_chol,
                           covariance_type)
    return params, ok


# The three public steps are jitted: called on concrete arrays they compile one program per
# shape (op by op they were 34-76 eager XLA compiles on a first call); inside a user's jit,
# vmap or grad they are traced as before.
@jax.jit
def e_step(params: MixtureParams, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """sklearn's E-step: (mean log-likelihood, log responsibilities (N, K))."""
    log_resp, norm = mixture_log_resp_and_norm(params, x, shift=params.means.mean(0))
    return jnp.mean(norm), log_resp


@functools.partial(jax.jit, static_argnames=("covariance_type",))
def m_step(x: jax.Array, resp: jax.Array, covariance_type: str = "full", reg_covar=1e-6,
           sample_weight: jax.Array | None = None) -> tuple[MixtureParams, jax.Array]:
    """sklearn's M-step from responsibilities (N, K) (not logs). Returns (params, ok)."""
    w = jnp.ones(x.shape[0], x.dtype) if sample_weight is None else sample_weight
    shift = jnp.sum(w[:, None] * x, axis=0) / jnp.sum(w)
    xs = x - shift
    r = resp * w[:, None]
    centers = (r.T @ xs) / (jnp.sum(r, axis=0) + _eps(x.dtype))[:, None]
    stats = resp_statistics(xs, w, resp, centers, covariance_type)
    return params_from_stats(stats, centers, covariance_type, reg_covar, shift)


def update_from_stats(stats: SuffStats, params: MixtureParams, reg_covar, shift: jax.Array,
                      mask: jax.Array | None = None, type_code=None):
    """The M-step after a statistics pass under ``params``: (new params, mean log-likelihood of
    ``params``, ok), the ``step`` contract of :func:`run_loop`."""
    new, ok = params_from_stats(stats, params.means - shift, params.covariance_type, reg_covar,
                                shift, mask, type_code=type_code)
    return new, stats.loglik / stats.weight, ok


@functools.partial(jax.jit, static_argnames=("chunk_size", "rows"))
def em_step(params: MixtureParams, x: jax.Array, sample_weight: jax.Array | None = None, *,
            reg_covar=1e-6, chunk_size: int | None = None, shift: jax.Array | None = None,
            mask: jax.Array | None = None, rows: Rows = LOCAL, type_code=None):
    """One E+M step. Returns (new params, mean log-likelihood of ``params``, ok).

    The log-likelihood is that of the *input* params (sklearn's lower bound convention).
    ``shift`` (D,) is a numerical centre for the statistics (default: the weighted data mean).
    ``mask`` (K,) marks live components, ``type_code`` constrains full-layout covariances (see
    :func:`params_from_stats`); ``rows`` says how the statistics are summed over rows (one
    device, or ``psum`` inside ``shard_map``).
    """
    w = jnp.ones(x.shape[0], x.dtype) if sample_weight is None else jnp.asarray(sample_weight,
                                                                                 x.dtype)
    if shift is None:
        shift = weighted_mean(x, w, rows)
    stats = rows.sum(sufficient_statistics(params, x, w, shift, chunk_size))
    return update_from_stats(stats, params, reg_covar, shift, mask, type_code)


class LoopState(NamedTuple):
    """Carry of :func:`run_loop`: the model state plus bookkeeping."""

    state: object
    lower_bound: jax.Array
    history: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    status: jax.Array


def run_loop(step: Callable, state, max_iter, tol, dtype, lower_bound=None,
             capacity: int | None = None) -> LoopState:
    """Generic EM driver: ``step(state) -> (new_state, lower_bound, ok)`` in one while_loop.

    Stops when |Δ lower bound| < tol (strict, like sklearn: tol=0 never converges), after
    ``max_iter`` steps, or when ``ok`` is False (the state is then left at its last valid value
    and the status says ILL_DEFINED_COVARIANCE) or the bound is not finite (NONFINITE).
    ``lower_bound`` (default −inf) is the "previous" bound the first step is compared with: a warm
    start passes the last fit's final bound, so it can converge at iteration 1 (sklearn's rule).
    ``capacity``: length of the bound history when ``max_iter`` is traced (history past
    ``max_iter`` stays NaN); default ``max_iter``.
    """
    start = -jnp.inf if lower_bound is None else lower_bound
    size = max_iter if capacity is None else capacity
    init = LoopState(state, jnp.asarray(start, dtype), jnp.full((size,), jnp.nan, dtype),
                     jnp.array(0, jnp.int32), jnp.array(False),
                     jnp.array(Status.MAX_ITER_REACHED, jnp.int32))

    if size == 0:
        return init

    def cond(c: LoopState):
        running = c.status == Status.MAX_ITER_REACHED
        return (c.n_iter < max_iter) & ~c.converged & running

    def body(c: LoopState):
        return advance(c, *step(c.state), tol)

    return jax.lax.while_loop(cond, body, init)


class _Pass(NamedTuple):
    """Carry of :func:`run_em`: the bookkeeping, the last E-step's payload, and flags."""

    loop: LoopState
    payload: object
    init_ok: jax.Array
    started: jax.Array
    running: jax.Array


def run_em(m_step: Callable, e_step: Callable, payload, max_iter, tol, dtype, lower_bound=None,
           capacity: int | None = None, start=None, template=None) -> LoopState:
    """EM as alternating M- and E-steps in one while_loop with ONE traced copy of each.

    ``m_step(payload) -> (state, bound, ok)`` turns an E-step's payload (or the initial
    ``payload``, e.g. an initialisation's statistics) into a state; ``e_step(state) -> payload``.
    ``start``: a given initial state instead of ``m_step(payload)`` at pass 0 (``payload`` may
    then be None). ``template``: any state of the right shapes (zeros will do) when ``start`` is
    None, so the M-step is traced only inside the loop. Each pass runs the M-step, then the
    E-step while the fit goes on; the last
    pass is an M-step alone. Bookkeeping and stopping rules are :func:`run_loop`'s (via
    :func:`advance`), and a failed first M-step is ILL_DEFINED_COVARIANCE as in :func:`run_from`.
    """
    start_bound = -jnp.inf if lower_bound is None else lower_bound
    size = max_iter if capacity is None else capacity
    if payload is None:
        payload = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype),
                                         jax.eval_shape(e_step, start))
    state0 = start if start is not None else template
    loop0 = LoopState(state0, jnp.asarray(start_bound, dtype), jnp.full((size,), jnp.nan, dtype),
                      jnp.array(0, jnp.int32), jnp.array(False),
                      jnp.array(Status.MAX_ITER_REACHED, jnp.int32))

    def body(c: _Pass) -> _Pass:
        first = ~c.started
        new, bound, ok = m_step(c.payload)
        if start is not None:
            new = jax.tree_util.tree_map(lambda a, b: jnp.where(first, a, b), start, new)
            ok = first | ok
        stepped = advance(c.loop, new, bound, ok, tol)
        loop = jax.tree_util.tree_map(lambda a, b: jnp.where(first, a, b),
                                      c.loop._replace(state=new), stepped)
        running = (loop.n_iter < max_iter) & ~loop.converged & (
            loop.status == Status.MAX_ITER_REACHED)
        payload = jax.lax.cond(running, e_step, lambda _: c.payload, loop.state)
        return _Pass(loop, payload, jnp.where(first, ok, c.init_ok), jnp.array(True), running)

    out = jax.lax.while_loop(lambda c: ~c.started | c.running, body,
                             _Pass(loop0, payload, jnp.array(True), jnp.array(False),
                                   jnp.array(True)))
    status = jnp.where(out.init_ok, out.loop.status, Status.ILL_DEFINED_COVARIANCE)
    return out.loop._replace(status=status.astype(jnp.int32))


def pick(flag, a, b):
    """``a`` if the traced bool ``flag`` else ``b`` (pytrees of the same structure) as a
    ``lax.cond`` whose branches only forward buffers, where a select per leaf would be a kernel
    each to compile (~15 ms apiece on CPU). Used where the pytree is wide and outside the EM
    loop's body (inside it, XLA fuses the selects with their neighbours: measured more kernels
    with a cond). Under vmap it becomes those selects."""
    return jax.lax.cond(flag, lambda a, b: a, lambda a, b: b, a, b)


def advance(c: LoopState, new_state, bound, ok, tol) -> LoopState:
    """One iteration's bookkeeping: keep ``new_state`` if it is valid, record ``bound`` and the
    status (converged when |Δ bound| < tol). The body of :func:`run_loop`."""
    dtype = c.lower_bound.dtype
    finite = jnp.isfinite(bound)
    good = ok & finite
    status = jnp.where(good, Status.MAX_ITER_REACHED,
                       jnp.where(finite, Status.ILL_DEFINED_COVARIANCE, Status.NONFINITE))
    converged = good & (jnp.abs(bound - c.lower_bound) < tol)
    status = jnp.where(converged, Status.CONVERGED, status).astype(jnp.int32)
    state = jax.tree_util.tree_map(lambda a, b: jnp.where(good, a, b), new_state, c.state)
    return LoopState(state, jnp.where(finite, bound, c.lower_bound).astype(dtype),
                     c.history.at[c.n_iter].set(bound.astype(dtype)), c.n_iter + 1,
                     converged, status)


def run_from(state, ok, step: Callable, max_iter, tol, dtype, lower_bound=None,
             capacity: int | None = None) -> LoopState:
    """:func:`run_loop` from an initial state whose construction reported ``ok``: a failed
    initialisation is ILL_DEFINED_COVARIANCE whatever the loop did."""
    loop = run_loop(step, state, max_iter, tol, dtype, lower_bound, capacity)
    return loop._replace(status=jnp.where(ok, loop.status,
                                          Status.ILL_DEFINED_COVARIANCE).astype(jnp.int32))


def restart_score(lower_bound: jax.Array, status: jax.Array) -> jax.Array:
    """What restarts are ranked by: the final bound, −inf for failed runs (NumPy for host
    arrays: nothing to compile)."""
    xp = array_namespace(lower_bound)
    failed = (status == Status.ILL_DEFINED_COVARIANCE) | (status == Status.NONFINITE)
    return xp.where(failed | xp.isnan(lower_bound), -xp.inf, lower_bound)


def best_restart(lower_bounds: jax.Array, status: jax.Array) -> jax.Array:
    """Index of the best restart: highest final bound among non-failed runs, ties -> lowest index."""
    return array_namespace(lower_bounds).argmax(restart_score(lower_bounds, status))


def score_rows(params: MixtureParams, x: jax.Array, chunk_size: int | None = None) -> jax.Array:
    """(N,) log density per row, chunked."""
    shift = params.means.mean(0)
    return chunked_map(lambda xc: mixture_log_resp_and_norm(params, xc, shift)[1], x,
                       chunk_size)
