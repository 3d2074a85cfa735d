"""``fit``: validate on the host, then ONE compiled program: init -> vmapped restarts -> best."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from . import missing as _missing
from .core import fit_restarts
from .em import FitResult, best_restart  # noqa: F401  (best_restart: re-exported)
from .params import MixtureParams
from .rows import auto_chunk_size, bucket_rows, pad_to  # noqa: F401  (re-exported)
from .validation import (check_data, check_em_options, check_init_params, check_n_samples,
                         check_sample_weight, init_method_name)


def _is_row_sharded(x) -> bool:
    """A concrete jax.Array split along its rows over several devices (-> the shard_map path)."""
    sharding = getattr(x, "sharding", None)
    if sharding is None or isinstance(x, jax.core.Tracer) or len(sharding.device_set) < 2:
        return False
    from .distributed import is_row_sharded
    return is_row_sharded(x)


@functools.partial(jax.jit, static_argnames=("n_components", "covariance_type", "init", "n_init",
                                             "max_iter", "chunk_size", "missing_buckets"))
def _fit_program(key, x, w, init_params, tol, reg_covar, prev_bound=None, *, n_components,
                 covariance_type, init, n_init, max_iter, chunk_size, missing_buckets=None):
    if missing_buckets is not None:   # rows with NaN: sorted by their count (few slots per chunk)
        x, w, _ = _missing.sort_by_missing(x, w)
    return fit_restarts(key, x, w, init_params, None, None, tol, reg_covar, prev_bound,
                        restart_ids=jnp.arange(n_init), n_components=n_components,
                        covariance_type=covariance_type, init=init, max_iter=max_iter,
                        chunk_size=chunk_size, missing_buckets=missing_buckets)


def fit(key: jax.Array, X, n_components: int, *, covariance_type: str = "full",
        init: str | MixtureParams = "kmeans", n_init: int = 1, max_iter: int = 100, tol=1e-3,
        reg_covar=1e-6, sample_weight=None, chunk_size: int | None = None,
        initial_lower_bound=None, mesh=None, data_axis: str | None = None,
        restart_axis: str | None = None, process_local: bool = False,
        missing: str = "error") -> FitResult:
    """Fit a Gaussian mixture by EM. One compiled program: init, ``n_init`` vmapped restarts, EM in
    a ``lax.while_loop``, best restart by final lower bound (ties -> lowest index).

    Args:
      key: PRNG key; restart i uses ``fold_in(key, i)`` (so restart 0 does not depend on n_init).
      X: (N, D) data. float32 in -> float32 out; float64 (with x64 enabled) -> float64.
      n_components: K.
      covariance_type: "full", "tied", "diag" or "spherical".
      init: "kmeans" (Lloyd seeded by k-means++), "k-means++", "random", "random_from_data", or a
        MixtureParams (optionally with a leading (n_init,) axis: one per restart).
      n_init, max_iter, tol, reg_covar: as scikit-learn (stop when |Δ mean log-lik| < tol).
      sample_weight: (N,) non-negative weights; zero-weight rows are padding.
      chunk_size: rows per chunk for the statistics (memory O(chunk·K·D + K·D²)); None picks one
        automatically for large problems.
      initial_lower_bound: the bound the first iteration is compared with (default −inf). A warm
        start passes the previous fit's final bound so it can converge at iteration 1 (sklearn).
      mesh, data_axis, restart_axis, process_local: scale-out (see :mod:`gmmjax.distributed`).
        With a ``jax.sharding.Mesh`` (or X a ``jax.Array`` sharded along its rows), statistics
        are computed per device with ``shard_map`` and combined with ``psum`` over ``data_axis``;
        ``restart_axis`` (a second mesh axis) splits the ``n_init`` restarts. After
        ``jax.distributed.initialize``, ``process_local=True`` means X holds this process's rows.
        Every process must make the same calls in the same order. Parameters come back replicated.
      missing: "error" (default: NaN in X is a ValueError) or "marginalize": NaN entries are
        missing at random; EM uses each row's observed entries (see :mod:`gmmjax.missing`). The
        initialisation runs on rows with NaN replaced by their column's observed mean. Rows with
        no observed entry get weight 0. Not available with ``mesh``/sharded X yet.

    Returns a :class:`FitResult`. Failures inside the program are reported in ``status``
    (:class:`Status`), never raised. Works under ``jax.vmap`` and ``jax.jit`` (value checks on
    the data are then skipped; shape checks still run).
    """
    n_components, n_init, max_iter, chunk_size = check_em_options(
        n_components, n_init, max_iter, tol, reg_covar, covariance_type, chunk_size)
    init_name = init_method_name(init)
    marginalize = _missing.check_missing(missing)
    if mesh is not None or process_local or _is_row_sharded(X):
        if marginalize:
            raise ValueError(_missing.UNSUPPORTED.format(what="The sharded fit (mesh=...)"))
        from .distributed import fit_sharded
        return fit_sharded(key, X, n_components, mesh=mesh, data_axis=data_axis,
                           restart_axis=restart_axis, process_local=process_local,
                           covariance_type=covariance_type, init_name=init_name, init=init,
                           n_init=n_init, max_iter=max_iter, tol=tol, reg_covar=reg_covar,
                           sample_weight=sample_weight, chunk_size=chunk_size,
                           initial_lower_bound=initial_lower_bound)
    x = _missing.check_data_missing(X) if marginalize else check_data(X)
    n, d = x.shape
    w = check_sample_weight(sample_weight, n, x.dtype)
    buckets = _missing.fit_buckets(x) if marginalize else None
    check_n_samples(w if buckets is None else _missing.informative_weight(x, w), n_components)
    init_params = None
    if init_name == "params":
        check_init_params(init, covariance_type, n_components, d, n_init)
        init_params = init.astype(x.dtype)
    if chunk_size is None:
        chunk_size = auto_chunk_size(n, n_components, d)
    x, w = pad_to(x, w, bucket_rows(n, chunk_size))
    prev_bound = (None if initial_lower_bound is None
                  else jnp.asarray(initial_lower_bound, x.dtype))
    return _fit_program(key, x, w, init_params, jnp.asarray(tol, x.dtype),
                        jnp.asarray(reg_covar, x.dtype), prev_bound, n_components=n_components,
                        covariance_type=covariance_type, init=init_name, n_init=n_init,
                        max_iter=max_iter, chunk_size=chunk_size, missing_buckets=buckets)
