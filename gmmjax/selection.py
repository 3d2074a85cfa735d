"""Information criteria (BIC, AIC), parameter counts, and ``select_model``: a sweep over the
number of components and covariance types compiled as one program per covariance type.

The sweep pads every candidate K to the largest one, K_max: components k ≥ K are *masked* (weight
exactly 0, so log π_k = −inf and they receive no responsibility; their means and covariances
stay at the initial point mass with covariance ``reg_covar``). All (K, restart) pairs of one
covariance type then share one shape and run as a single ``vmap`` of the EM ``while_loop``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .compile_cache import cached_jit
from .covariance import COVARIANCE_TYPES, get_covariance_model
from .density import log_prob
from .core import live_components, pick_best, run_restarts
from .em import Status, best_restart
from .init import INIT_METHODS
from .params import MixtureParams
from .rows import auto_chunk_size, bucket_rows, pad_to, weighted_mean
from .stats import chunked_sum, mixture_log_resp_and_norm
from .validation import (HALF_FLOATS, HostCentring, as_operand, check_data, check_int,
                         check_n_samples, check_nonnegative, check_sample_weight,
                         is_traced, unit_mean_weights)

CRITERIA = ("bic", "aic")


def n_parameters(params: MixtureParams) -> int:
    """Free parameters: covariances + K·D means + K−1 weights (sklearn's ``_n_parameters``)."""
    return _n_parameters(params.covariance_type, params.n_components, params.n_features)


def _n_parameters(covariance_type: str, k: int, d: int) -> int:
    return get_covariance_model(covariance_type).n_parameters(k, d) + k * d + k - 1


def _criterion(params, X, sample_weight, penalty) -> jnp.ndarray:
    """−2 Σ w log p(x) + ``penalty(n_parameters, n)`` (n: the weight total, or the row count).
    With concrete inputs the sums run in NumPy on the log densities (one compiled evaluation
    program and no eager XLA programs per shape: a first ``bic`` compiled five); traced (under
    jit, vmap or grad), in jax.numpy."""
    ll = log_prob(params, X)
    traced = is_traced(ll, sample_weight)          # ll is traced when params or X are
    xp = jnp if traced else np
    if not traced:
        ll = np.asarray(ll)
    if sample_weight is None:
        total, n = xp.sum(ll), ll.shape[0]
    else:
        w = xp.asarray(sample_weight, ll.dtype)
        total, n = xp.sum(w * ll), xp.sum(w)
    value = -2.0 * total + penalty(n_parameters(params), n, xp)
    return value if traced else jax.device_put(np.asarray(value, ll.dtype))   # no XLA op


def bic(params: MixtureParams, X, sample_weight=None) -> jnp.ndarray:
    """Bayesian information criterion −2 log L + p ln n (lower is better)."""
    return _criterion(params, X, sample_weight, lambda p, n, xp: p * xp.log(n))


def aic(params: MixtureParams, X, sample_weight=None) -> jnp.ndarray:
    """Akaike information criterion −2 log L + 2p (lower is better)."""
    return _criterion(params, X, sample_weight, lambda p, n, xp: 2.0 * p)


@functools.partial(cached_jit, static_argnames=("k_max", "n_init", "covariance_type", "init",
                                             "max_iter", "chunk_size"))
def _sweep_program(key, x, w, ks, tol, reg_covar, *, k_max, n_init, covariance_type, init,
                   max_iter, chunk_size):
    """All (K, restart) fits of one covariance type: the core's restarts, one vmap over
    len(ks)·n_init restarts padded to ``k_max`` components, K of them live.

    Restart i of K uses ``fold_in(fold_in(key, K), i)``. The fits see the weights rescaled to
    mean 1 (only their ratios matter, as in :func:`gmmjax.fit`); the total log-likelihood is
    weighted by ``w`` as given (frequency weights). Returns, per K, the best restart's padded
    params (original frame), lower bound, n_iter, status, and total log-likelihood.
    """
    w_fit = unit_mean_weights(w)
    shift = weighted_mean(x, w_fit)
    xs = x - shift
    n_k = ks.shape[0]
    flat_ks = jnp.repeat(ks, n_init)
    keys = jax.vmap(lambda k, i: jax.random.fold_in(jax.random.fold_in(key, k), i))(
        flat_ks, jnp.tile(jnp.arange(n_init), n_k))
    loops = run_restarts(keys, xs, w_fit, None, None, flat_ks, tol, reg_covar, None,
                         n_components=k_max, covariance_type=covariance_type, init=init,
                         max_iter=max_iter, chunk_size=chunk_size)
    loops = jax.tree_util.tree_map(lambda a: a.reshape((n_k, n_init) + a.shape[1:]), loops)
    best = jax.vmap(pick_best, (0, None))(loops, shift)

    def total_ll(loop):     # of the best restart, in the shifted frame
        i = best_restart(loop.lower_bound, loop.status)
        state = jax.tree_util.tree_map(lambda a: a[i], loop.state)
        return chunked_sum(lambda xc, wc: jnp.sum(jnp.where(
            wc > 0, wc * mixture_log_resp_and_norm(state, xc)[1], 0.0)), xs, w, chunk_size)

    return best.params, best.lower_bound, best.n_iter, best.status, jax.vmap(total_ll)(loops)


@dataclasses.dataclass(frozen=True)
class SelectionResult:
    """What :func:`select_model` returns. Tables have shape (len(covariance_types),
    len(n_components)); failed cells (every restart ill-defined) hold +inf criteria.

    criterion: "bic" or "aic"; table: that criterion; bic, aic: both; log_likelihood: total
    (weighted) log-likelihood of the fitted params; n_parameters; lower_bound, n_iter,
    converged, status: of the best restart per cell. best_covariance_type,
    best_n_components, params: the winner (lowest criterion, ties -> first in sweep order).
    all_params: {(covariance_type, K): MixtureParams} for every cell (NumPy arrays of the
    computation dtype). estimator: a fitted :class:`gmmjax.GaussianMixture` holding
    ``params`` (None if unavailable).
    """

    criterion: str
    covariance_types: tuple
    n_components: tuple
    table: np.ndarray
    bic: np.ndarray
    aic: np.ndarray
    log_likelihood: np.ndarray
    n_parameters: np.ndarray
    lower_bound: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    status: np.ndarray
    best_covariance_type: str
    best_n_components: int
    params: MixtureParams
    all_params: dict
    estimator: object = None

    def rows(self) -> list[dict]:
        """The table as one dict per (covariance_type, n_components), e.g. for pandas."""
        out = []
        for i, ct in enumerate(self.covariance_types):
            for j, k in enumerate(self.n_components):
                out.append({"covariance_type": ct, "n_components": k,
                            "bic": float(self.bic[i, j]), "aic": float(self.aic[i, j]),
                            "log_likelihood": float(self.log_likelihood[i, j]),
                            "n_parameters": int(self.n_parameters[i, j]),
                            "n_iter": int(self.n_iter[i, j]),
                            "converged": bool(self.converged[i, j])})
        return out


def estimator_dtype(X) -> np.dtype:
    """The estimators' dtype rule for X: float32 (and half floats, upcast) stay float32,
    everything else is computed in float64 (as scikit-learn's ``validate_data``)."""
    dtype = getattr(X, "dtype", None)
    if dtype is not None and (np.dtype(dtype) == np.float32 or np.dtype(dtype) in HALF_FLOATS):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _check_components(n_components) -> tuple[int, ...]:
    if isinstance(n_components, (int, np.integer)) and not isinstance(n_components, bool):
        n_components = (n_components,)
    try:
        ks = tuple(n_components)
    except TypeError:
        raise ValueError(f"n_components must be an iterable of integers >= 1 (e.g. range(1, 11)); "
                         f"got {n_components!r}.") from None
    if not ks:
        raise ValueError("n_components is empty; give at least one number of components, e.g. "
                         "range(1, 11).")
    ks = tuple(check_int(k, "each n_components value", 1) for k in ks)
    if len(set(ks)) != len(ks):
        raise ValueError(f"n_components contains duplicates: {list(ks)}.")
    return ks


def _check_covariance_types(covariance_types) -> tuple[str, ...]:
    if isinstance(covariance_types, str):
        covariance_types = (covariance_types,)
    types = tuple(covariance_types)
    if not types:
        raise ValueError(f"covariance_types is empty; give at least one of "
                         f"{list(COVARIANCE_TYPES)}.")
    for ct in types:
        get_covariance_model(ct)
    if len(set(types)) != len(types):
        raise ValueError(f"covariance_types contains duplicates: {list(types)}.")
    return types


def select_model(key: jax.Array, X, n_components: Sequence[int] = range(1, 11),
                 covariance_types: Sequence[str] = COVARIANCE_TYPES, criterion: str = "bic", *,
                 n_init: int = 1, init: str = "kmeans", max_iter: int = 100, tol=1e-3,
                 reg_covar=1e-6, sample_weight=None, chunk_size: int | None = None,
                 return_estimator: bool = True) -> SelectionResult:
    """Fit every (covariance type, K) and pick the lowest BIC or AIC.

    One compiled program per covariance type: all K (padded to max K with masked, zero-weight
    components) and all ``n_init`` restarts run as one ``vmap``; restart i of K uses
    ``fold_in(fold_in(key, K), i)`` and the best restart per K is chosen by final lower bound,
    as in :func:`gmmjax.fit`. The criteria use the fitted params' total log-likelihood, as
    sklearn's ``GaussianMixture.bic(X)`` / ``aic(X)``; n is the total sample weight
    (``sample_weight`` are frequency weights there; the fits depend only on their ratios).

    dtype: the estimators' rule (it returns one): float64 X (or any non-float32 X) is computed
    in float64 under ``jax.enable_x64(True)`` scoped to this call, float32 stays float32; the
    parameters come back as NumPy arrays of that dtype (outside the call, JAX would narrow
    float64 arrays to float32 at their first operation).

    Requires ``reg_covar > 0`` (the masked components sit at covariance ``reg_covar``).
    Memory: the vmapped batch holds len(n_components)·n_init restarts with max K components each;
    ``chunk_size`` (auto for large problems) bounds it.
    Returns a :class:`SelectionResult`.
    """
    ks = _check_components(n_components)
    types = _check_covariance_types(covariance_types)
    if criterion not in CRITERIA:
        raise ValueError(f"Unknown criterion {criterion!r}; expected one of {list(CRITERIA)}.")
    n_init = check_int(n_init, "n_init", 1)
    max_iter = check_int(max_iter, "max_iter", 0)
    check_nonnegative(tol, "tol")
    check_nonnegative(reg_covar, "reg_covar")
    if not float(reg_covar) > 0:
        raise ValueError("select_model needs reg_covar > 0: the padding (masked) components of "
                         "smaller K keep covariance reg_covar.")
    if init not in INIT_METHODS:
        raise ValueError(f"Unknown init {init!r}; expected one of {list(INIT_METHODS)}.")
    if chunk_size is not None:
        chunk_size = check_int(chunk_size, "chunk_size", 1)
    from .estimators._base import x64_scope
    with x64_scope(estimator_dtype(X)):   # float64 in -> float64 out, x64 only for this call
        centring = HostCentring(X)           # float64 host data: centred before float32
        x = check_data(centring.data, host=True)      # NumPy rows stay on the host
        n, d = x.shape
        w = check_sample_weight(sample_weight, n, x.dtype, host=isinstance(x, np.ndarray))
        k_max = max(ks)
        check_n_samples(w, k_max)
        batch = len(ks) * n_init
        if chunk_size is None:
            chunk_size = auto_chunk_size(n, k_max * batch, d)
        x, w = pad_to(x, w, bucket_rows(n, chunk_size))
        n_eff = float(np.sum(w))
        shape = (len(types), len(ks))
        table = {name: np.zeros(shape) for name in ("bic", "aic", "ll", "lb")}
        n_par = np.zeros(shape, np.int64)
        n_iter = np.zeros(shape, np.int64)
        status = np.zeros(shape, np.int64)
        all_params = {}
        for i, ct in enumerate(types):
            params, lb, it, st, ll = _sweep_program(
                key, x, w, as_operand(ks, np.int32), as_operand(tol, x.dtype),
                as_operand(reg_covar, x.dtype), k_max=k_max, n_init=n_init, covariance_type=ct,
                init=init, max_iter=max_iter, chunk_size=chunk_size)
            ll, lb, it, st = (np.asarray(a) for a in (ll, lb, it, st))
            host = jax.tree_util.tree_map(np.asarray, params)
            for j, k in enumerate(ks):
                p = _n_parameters(ct, k, d)
                failed = (st[j] in (Status.ILL_DEFINED_COVARIANCE, Status.NONFINITE)
                          or not np.isfinite(ll[j]))
                n_par[i, j], n_iter[i, j], status[i, j] = p, it[j], st[j]
                table["ll"][i, j], table["lb"][i, j] = ll[j], lb[j]
                table["bic"][i, j] = np.inf if failed else -2.0 * ll[j] + p * np.log(n_eff)
                table["aic"][i, j] = np.inf if failed else -2.0 * ll[j] + 2.0 * p
                all_params[(ct, k)] = jax.tree_util.tree_map(np.asarray, centring.restore(
                    live_components(jax.tree_util.tree_map(lambda a, j=j: a[j], host), k)))
        crit = table[criterion]
        if not np.isfinite(crit).any():
            raise RuntimeError("select_model: every fit failed (ill-defined covariances or "
                               "non-finite log-likelihood); try a larger reg_covar or "
                               "standardised data.")
        bi, bj = np.unravel_index(int(np.argmin(crit)), crit.shape)
        best_ct, best_k = types[bi], ks[bj]
        best = all_params[(best_ct, best_k)]
        result = SelectionResult(
            criterion=criterion, covariance_types=types, n_components=ks, table=crit,
            bic=table["bic"], aic=table["aic"], log_likelihood=table["ll"], n_parameters=n_par,
            lower_bound=table["lb"], n_iter=n_iter, converged=status == Status.CONVERGED,
            status=status, best_covariance_type=best_ct, best_n_components=best_k,
            params=best, all_params=all_params)
        if return_estimator:
            estimator = _fitted_estimator(result, n_init=n_init, init=init, max_iter=max_iter,
                                          tol=tol, reg_covar=reg_covar, n_features=d)
            result = dataclasses.replace(result, estimator=estimator)
        return result


def _fitted_estimator(result: SelectionResult, *, n_features, **settings):
    """A fitted :class:`gmmjax.GaussianMixture` holding the winner's params and fit record."""
    from .estimators.gaussian_mixture import GaussianMixture

    i = result.covariance_types.index(result.best_covariance_type)
    j = result.n_components.index(result.best_n_components)
    params = jax.tree_util.tree_map(np.asarray, result.params)
    est = GaussianMixture.from_params(params, n_init=settings["n_init"],
                                      init_params=settings["init"],
                                      max_iter=settings["max_iter"], tol=settings["tol"],
                                      reg_covar=settings["reg_covar"])
    est.converged_ = bool(result.converged[i, j])
    est.n_iter_ = int(result.n_iter[i, j])
    est.lower_bound_ = result.lower_bound[i, j]
    return est
