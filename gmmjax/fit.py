"""``fit``: validate on the host, then ONE compiled program: init -> vmapped restarts -> best."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from .compile_cache import cached_jit
from .covariance import get_covariance_model
from .em import FitResult, LoopState, Status, em_step, run_loop
from .init import initialize
from .params import MixtureParams
from .validation import (check_data, check_init_params, init_method_name, check_int, check_n_samples, check_nonnegative,
                         check_sample_weight)

# Rows·K·D per automatic chunk (~512 KB of float32 temporaries: they stay in L2). Measured on a
# 2-core CPU (ms per EM iteration, float32): N=100k D=2 K=8 full 44 (one chunk) -> 11 (8192 rows);
# D=16 K=16 full 115 (4096 rows) -> 103 (512); diag 49 -> 39 (1024); N=65k D=32 K=32 420 -> 322 (256).
AUTO_CHUNK_ELEMENTS = 1 << 17
MIN_CHUNK_ROWS = 256            # below this, per-chunk loop overhead wins over cache locality


def bucket_rows(n: int, chunk_size: int | None) -> int:
    """Padded row count: N rounded up to a multiple of max(8, 2^(bit_length(N)−6)) (≤ 1/32
    padding), then to a multiple of ``chunk_size``, so nearby N share one compiled program."""
    step = max(8, 1 << max(0, n.bit_length() - 6))
    rows = -(-n // step) * step
    if chunk_size is not None:
        rows = -(-rows // chunk_size) * chunk_size
    return rows


def auto_chunk_size(n: int, n_components: int, n_features: int) -> int | None:
    """Rows per chunk when the user gives none: about AUTO_CHUNK_ELEMENTS / (K·D) rows (≥
    MIN_CHUNK_ROWS), adjusted to a multiple of 256 that splits N's bucket evenly (little padding);
    None (one chunk) when the data are smaller than two such chunks."""
    target = max(MIN_CHUNK_ROWS, AUTO_CHUNK_ELEMENTS // max(1, n_components * n_features))
    if n <= 2 * target:
        return None
    rows = bucket_rows(n, None)
    n_chunks = -(-rows // target)
    return -(-rows // (n_chunks * 256)) * 256


def _is_row_sharded(x) -> bool:
    """A concrete jax.Array split along its rows over several devices (-> the shard_map path)."""
    sharding = getattr(x, "sharding", None)
    if sharding is None or isinstance(x, jax.core.Tracer) or len(sharding.device_set) < 2:
        return False
    from .distributed import is_row_sharded
    return is_row_sharded(x)


def _shift_params(params: MixtureParams, shift: jax.Array) -> MixtureParams:
    return params.replace(means=params.means + shift)


def _one_restart(key, x, w, init_params, tol, reg_covar, *, n_components, covariance_type, init,
                 max_iter, chunk_size, prev_bound=None):
    if init_params is None:
        params, ok = initialize(key, x, w, n_components, covariance_type, init, reg_covar,
                                chunk_size)
    else:
        params, ok = init_params, jnp.array(True)
    zero = jnp.zeros_like(x[0])

    def step(p):
        return em_step(p, x, w, reg_covar=reg_covar, chunk_size=chunk_size, shift=zero)

    loop: LoopState = run_loop(step, params, max_iter, tol, x.dtype, prev_bound)
    status = jnp.where(ok, loop.status, Status.ILL_DEFINED_COVARIANCE).astype(jnp.int32)
    return loop._replace(status=status)


def best_restart(lower_bounds: jax.Array, status: jax.Array) -> jax.Array:
    """Index of the best restart: highest final bound among non-failed runs, ties -> lowest index."""
    failed = (status == Status.ILL_DEFINED_COVARIANCE) | (status == Status.NONFINITE)
    return jnp.argmax(jnp.where(failed | jnp.isnan(lower_bounds), -jnp.inf, lower_bounds))


@functools.partial(cached_jit, static_argnames=("n_components", "covariance_type", "init", "n_init",
                                             "max_iter", "chunk_size"))
def _fit_program(key, x, w, init_params, tol, reg_covar, prev_bound=None, *, n_components,
                 covariance_type, init, n_init, max_iter, chunk_size):
    shift = jnp.sum(w[:, None] * x, axis=0) / jnp.sum(w)
    xs = x - shift
    run = functools.partial(_one_restart, x=xs, w=w, tol=tol, reg_covar=reg_covar,
                            n_components=n_components, covariance_type=covariance_type, init=init,
                            max_iter=max_iter, chunk_size=chunk_size, prev_bound=prev_bound)
    keys = jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(n_init))
    if init_params is None:
        loops = jax.vmap(lambda k: run(k, init_params=None))(keys)
    else:
        shifted = init_params.replace(means=init_params.means - shift)
        batched = shifted.weights.ndim == 2
        loops = jax.vmap(lambda k, p: run(k, init_params=p),
                         (0, 0 if batched else None))(keys, shifted)
    best = best_restart(loops.lower_bound, loops.status)
    pick = jax.tree_util.tree_map(lambda a: a[best], loops)
    return FitResult(_shift_params(pick.state, shift), pick.lower_bound, pick.history,
                     pick.n_iter, pick.status == Status.CONVERGED, pick.status,
                     loops.lower_bound, loops.status)


def fit(key: jax.Array, X, n_components: int, *, covariance_type: str = "full",
        init: str | MixtureParams = "kmeans", n_init: int = 1, max_iter: int = 100, tol=1e-3,
        reg_covar=1e-6, sample_weight=None, chunk_size: int | None = None,
        initial_lower_bound=None, mesh=None, data_axis: str | None = None,
        restart_axis: str | None = None, process_local: bool = False) -> FitResult:
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

    Returns a :class:`FitResult`. Failures inside the program are reported in ``status``
    (:class:`Status`), never raised. Works under ``jax.vmap`` and ``jax.jit`` (value checks on
    the data are then skipped; shape checks still run).
    """
    n_components = check_int(n_components, "n_components", 1)
    n_init = check_int(n_init, "n_init", 1)
    max_iter = check_int(max_iter, "max_iter", 0)
    check_nonnegative(tol, "tol")
    check_nonnegative(reg_covar, "reg_covar")
    get_covariance_model(covariance_type)
    if chunk_size is not None:
        chunk_size = check_int(chunk_size, "chunk_size", 1)
    init_name = init_method_name(init)
    if mesh is not None or process_local or _is_row_sharded(X):
        from .distributed import fit_sharded
        return fit_sharded(key, X, n_components, mesh=mesh, data_axis=data_axis,
                           restart_axis=restart_axis, process_local=process_local,
                           covariance_type=covariance_type, init_name=init_name, init=init,
                           n_init=n_init, max_iter=max_iter, tol=tol, reg_covar=reg_covar,
                           sample_weight=sample_weight, chunk_size=chunk_size,
                           initial_lower_bound=initial_lower_bound)
    x = check_data(X)
    n, d = x.shape
    w = check_sample_weight(sample_weight, n, x.dtype)
    check_n_samples(w, n_components)
    init_params = None
    if init_name == "params":
        check_init_params(init, covariance_type, n_components, d, n_init)
        init_params = init.astype(x.dtype)
    if chunk_size is None:
        chunk_size = auto_chunk_size(n, n_components, d)
    n_pad = bucket_rows(n, chunk_size)
    if n_pad != n:
        x = jnp.concatenate([x, jnp.zeros((n_pad - n, d), x.dtype)])
        w = jnp.concatenate([w, jnp.zeros((n_pad - n,), x.dtype)])
    prev_bound = (None if initial_lower_bound is None
                  else jnp.asarray(initial_lower_bound, x.dtype))
    return _fit_program(key, x, w, init_params, jnp.asarray(tol, x.dtype),
                        jnp.asarray(reg_covar, x.dtype), prev_bound, n_components=n_components,
                        covariance_type=covariance_type, init=init_name, n_init=n_init,
                        max_iter=max_iter, chunk_size=chunk_size)
