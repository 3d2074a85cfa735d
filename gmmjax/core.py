"""The one EM core: restarts of (initialise -> EM loop) over (rows, component mask), best restart.

Every Gaussian-mixture fit runs this code: :func:`gmmjax.fit` (one device, K padded to a bucket),
the sharded fit (inside ``shard_map``, ``rows=Rows(data_axis)``), and ``select_model`` (all
(K, restart) pairs of one covariance type in one ``vmap``, each with its own live count).
Variants differ only in how they feed rows (:class:`gmmjax.rows.Rows`) and which components are
live (``n_live``); ``fit_stream`` and the Bayesian fit share the initialisation and the statistics
pass below it (:mod:`gmmjax.init`, :func:`gmmjax.em.em_step`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from .covariance import array_namespace, get_covariance_model
from . import missing
from .em import (FitResult, LoopState, Status, best_restart, params_from_stats, pick,
                 restart_score, run_em)
from .init import initial_stats
from .params import MixtureParams
from .validation import input_status, unit_mean_weights
from .rows import LOCAL, Rows, weighted_mean
from .stats import rows_minor_operand, shared_layout_statistics, sufficient_statistics


def run_restart(key, x, w, init_params, noise, n_live, tol, reg_covar, prev_bound, *,
                n_components: int, covariance_type: str, init: str, max_iter,
                chunk_size: int | None, rows: Rows = LOCAL, capacity: int | None = None,
                missing_buckets: tuple[int, ...] | None = None, type_code=None) -> LoopState:
    """One restart on shifted rows: ``init_params`` (None: initialise with ``init`` from ``key``)
    then EM to convergence. ``n_live`` (None: all K) counts the live leading components;
    ``max_iter`` may be traced when ``capacity`` (the bound history's length) is given.
    ``missing_buckets``: x has NaN entries (missing values); the statistics pass is then
    :func:`gmmjax.missing.sufficient_statistics` and the initialisation sees column-mean-filled
    rows. ``type_code`` (traced; ``covariance_type`` "full"): the covariance type the
    full-layout covariances are constrained to (one program for every type)."""
    mask = None if n_live is None else jnp.arange(n_components) < n_live
    zero = jnp.zeros_like(x[0])
    payload = None
    if init_params is None:
        x_init = x if missing_buckets is None else missing.fill_missing(x, w, rows)
        payload = initial_stats(key, x_init, w, n_components, covariance_type, init, chunk_size,
                                rows=rows, n_live=n_live, noise=noise)

    def m_step(payload):
        stats, centers = payload
        params, ok = params_from_stats(stats, centers, covariance_type, reg_covar, zero, mask,
                                       type_code=type_code)
        return params, stats.loglik / stats.weight, ok

    # rows-minor chunks, if the statistics pass reads them (built here: once per restart, not
    # once per EM iteration); the shared program's diagonal pass is the one that reads them
    x_chunks_t = None if missing_buckets is not None else rows_minor_operand(
        "diag" if type_code is not None else covariance_type, x, chunk_size)

    def e_step(p):
        if missing_buckets is not None:
            stats = missing.sufficient_statistics(p, x, w, zero, chunk_size, missing_buckets)
        elif type_code is not None:
            stats = shared_layout_statistics(p, x, w, zero, chunk_size, type_code, x_chunks_t)
        else:
            stats = sufficient_statistics(p, x, w, zero, chunk_size, x_chunks_t)
        return rows.sum(stats), p.means

    return run_em(m_step, e_step, payload, max_iter, tol, x.dtype, prev_bound, capacity,
                  start=init_params,
                  template=zero_params(covariance_type, n_components, x.shape[1], x.dtype))


def zero_params(covariance_type: str, n_components: int, n_features: int, dtype) -> MixtureParams:
    """MixtureParams of zeros with the shapes of a K-component fit: a loop's placeholder carry."""
    cov = jnp.zeros(get_covariance_model(covariance_type).shape(n_components, n_features), dtype)
    return MixtureParams(jnp.zeros((n_components,), dtype),
                         jnp.zeros((n_components, n_features), dtype), cov, cov, covariance_type)


def run_restarts(keys, x, w, init_params, noise, n_live, tol, reg_covar, prev_bound,
                 **static) -> LoopState:
    """:func:`run_restart` vmapped over ``keys`` (R,). ``init_params`` and ``n_live`` are
    per restart when they carry a leading (R,) axis; ``noise`` (if any) always does."""
    per_restart = (init_params is not None and init_params.weights.ndim == 2)
    axes = (0, 0 if per_restart else None, None if noise is None else 0,
            None if n_live is None or jnp.ndim(n_live) == 0 else 0)
    run = functools.partial(run_restart, tol=tol, reg_covar=reg_covar, prev_bound=prev_bound,
                            x=x, w=w, **static)
    return jax.vmap(lambda k, p, r, m: run(k, init_params=p, noise=r, n_live=m), axes)(
        keys, init_params, noise, n_live)


def pick_best(loops: LoopState, shift) -> FitResult:
    """The best restart (:func:`gmmjax.em.best_restart`) as a FitResult in the data's frame."""
    best = best_restart(loops.lower_bound, loops.status)
    pick = jax.tree_util.tree_map(lambda a: a[best], loops)
    params = pick.state.replace(means=pick.state.means + shift)
    return FitResult(params, pick.lower_bound, pick.history, pick.n_iter,
                     pick.status == Status.CONVERGED, pick.status, loops.lower_bound,
                     loops.status)


def _unit_weights_and_shift(x, w, rows: Rows, marginalize: bool):
    """Weights rescaled to mean 1 (only their ratios matter) and the frame's shift: the
    weighted mean of the rows (of their observed entries with missing values)."""
    w = unit_mean_weights(w, rows)
    shift = missing.observed_mean(x, w, rows) if marginalize else weighted_mean(x, w, rows)
    return w, shift


def _checked_input(result: FitResult, x, w, rows: Rows, marginalize: bool) -> FitResult:
    """:func:`input_status` of the fit's rows (NaN entries are missing values, not bad input,
    when marginalising)."""
    return input_status(result, jnp.where(jnp.isnan(x), 0.0, x) if marginalize else x, w, rows)


def _draws(init_params, init: str) -> bool:
    """Whether the restarts draw from their keys (not when the start is given: parameters, or
    responsibilities as init "resp"); a key no one draws from is not folded (no threefry code
    to trace, lower and compile)."""
    return init_params is None and init != "resp"


def fit_restarts(key, x, w, init_params, noise, n_live, tol, reg_covar, prev_bound, *,
                 restart_ids, gather=lambda loops: loops, rows: Rows = LOCAL,
                 input_checked: bool = False, **static) -> FitResult:
    """The body of every fit program: shift rows to their weighted mean, run restarts
    ``restart_ids`` (restart i uses ``fold_in(key, i)``, so it does not depend on n_init),
    ``gather`` them (the restarts other devices ran), and keep the best. ``input_checked``: the
    host has checked the data and weights (concrete input), so the program does not again
    (:func:`gmmjax.validation.input_status`: a dozen small kernels less to compile)."""
    marginalize = static.get("missing_buckets") is not None
    w, shift = _unit_weights_and_shift(x, w, rows, marginalize)
    if init_params is not None:
        init_params = init_params.replace(means=init_params.means - shift)
        if init_params.weights.ndim == 2:
            init_params = jax.tree_util.tree_map(lambda a: a[restart_ids], init_params)
    if _draws(init_params, static["init"]):
        keys = jax.vmap(jax.random.fold_in, (None, 0))(key, restart_ids)
    else:
        keys = jnp.broadcast_to(key, restart_ids.shape + key.shape)
    loops = run_restarts(keys, x - shift, w, init_params, noise, n_live, tol, reg_covar,
                         prev_bound, rows=rows, **static)
    result = pick_best(gather(loops), shift)
    return result if input_checked else _checked_input(result, x, w, rows, marginalize)


def fit_restarts_looped(key, x, w, init_params, n_live, tol, reg_covar, prev_bound, n_init,
                        max_iter, type_code=None, noise=None, *, restart_capacity: int,
                        iter_capacity: int, input_checked: bool = False,
                        **static) -> FitResult:
    """:func:`fit_restarts` with the restarts run one after another in a loop over a traced
    count ``n_init`` (and a traced ``max_iter``), keeping the best so far: one program for every
    n_init ≤ ``restart_capacity`` and max_iter ≤ ``iter_capacity``. On CPU this is faster than
    the vmap (no batched GEMMs, no lockstep to the slowest restart). restart_lower_bounds /
    restart_status have ``restart_capacity`` entries (NaN / −1 past n_init), lower_bounds
    ``iter_capacity``. ``noise`` (if any) carries a leading axis of at least n_init restarts."""
    marginalize = static.get("missing_buckets") is not None
    w, shift = _unit_weights_and_shift(x, w, LOCAL, marginalize)
    xs = x - shift
    per_restart = init_params is not None and init_params.weights.ndim == 2
    if init_params is not None:
        init_params = init_params.replace(means=init_params.means - shift)

    def run(i):
        p = (jax.tree_util.tree_map(lambda a: a[i], init_params) if per_restart
             else init_params)
        r = None if noise is None else jax.tree_util.tree_map(lambda a: a[i], noise)
        key_i = jax.random.fold_in(key, i) if _draws(init_params, static["init"]) else key
        return run_restart(key_i, xs, w, p, r, n_live, tol, reg_covar,
                           prev_bound, max_iter=max_iter, capacity=iter_capacity,
                           type_code=type_code, **static)

    # the restart is traced once, in the loop body (a second copy doubles the compile time);
    # the carry starts from a placeholder that restart 0 always replaces
    dtype = x.dtype
    empty = LoopState(zero_params(static["covariance_type"], static["n_components"], x.shape[1],
                                  dtype),
                      jnp.zeros((), dtype), jnp.full((iter_capacity,), jnp.nan, dtype),
                      jnp.int32(0), jnp.array(False), jnp.int32(0))
    bounds = jnp.full((restart_capacity,), jnp.nan, dtype)
    status = jnp.full((restart_capacity,), -1, jnp.int32)

    def body(i, carry):
        best, bounds, status = carry
        loop = run(i)
        better = (i == 0) | (restart_score(loop.lower_bound, loop.status)
                             > restart_score(best.lower_bound, best.status))  # ties: earlier
        best = pick(better, loop, best)
        return best, bounds.at[i].set(loop.lower_bound), status.at[i].set(loop.status)

    best, bounds, status = jax.lax.fori_loop(0, n_init, body, (empty, bounds, status))
    result = FitResult(best.state.replace(means=best.state.means + shift), best.lower_bound,
                       best.history, best.n_iter, best.status == Status.CONVERGED, best.status,
                       bounds, status)
    return result if input_checked else _checked_input(result, x, w, LOCAL, marginalize)


# --------------------------------------------------------------------------- padded components

def _per_component(params: MixtureParams) -> bool:
    """Whether the covariances carry one entry per component (all types but tied)."""
    model = get_covariance_model(params.covariance_type)
    k, d = params.means.shape[-2:]
    return model.shape(k, d) != model.shape(k + 1, d)


def live_components(params: MixtureParams, n_live: int) -> MixtureParams:
    """The first ``n_live`` components of padded params (host-side static slicing)."""
    if params.means.shape[0] == n_live:
        return params
    cut = (lambda a: a[:n_live]) if _per_component(params) else (lambda a: a)
    return MixtureParams(params.weights[:n_live], params.means[:n_live], cut(params.covariances),
                         cut(params.precisions_cholesky), params.covariance_type)


def pad_components(params: MixtureParams, n_components: int) -> MixtureParams:
    """Append masked components (weight 0, mean 0, unit covariance) up to ``n_components``;
    params may carry a leading restart axis. NumPy params stay NumPy (nothing compiled)."""
    axis = params.weights.ndim - 1
    extra = n_components - params.means.shape[axis]
    if extra == 0:
        return params
    xp = array_namespace(params.means)

    def grow(a, block):
        block = xp.broadcast_to(block.astype(a.dtype), a.shape[:axis] + block.shape)
        return xp.concatenate([a, block], axis=axis)

    d = params.means.shape[-1]
    model = get_covariance_model(params.covariance_type)
    unit = model.add_reg(xp.zeros(model.shape(extra, d)), 1.0)
    cut = (lambda a: grow(a, unit)) if _per_component(params) else (lambda a: a)
    return MixtureParams(grow(params.weights, xp.zeros((extra,))),
                         grow(params.means, xp.zeros((extra, d))), cut(params.covariances),
                         cut(params.precisions_cholesky), params.covariance_type)
