"""Scale-out over devices and hosts: meshes, row sharding, and the ``shard_map``'d fit program.

Every reduction over rows is written out explicitly: each device works on its own rows
(``jax.shard_map``) and the per-device sums are combined with ``lax.psum`` over the data axis.
Nothing relies on automatic partitioning (on jax 0.10.2 it was measured to all-gather N-sized
arrays and to hang at N=100k on 8 CPU devices). Rows are padded with zero-weight rows so every
device holds the same number of rows; padding contributes nothing to any statistic.

The same code runs on one host with several devices and on several hosts after
``jax.distributed.initialize``. Multi-process rule: **every process makes the same gmmjax calls,
with the same arguments (key, n_components, options), in the same order**; only the data differ
(each process passes its own rows with ``process_local=True``, or all pass the same global
``jax.Array``). Results are replicated: every process gets the same parameters.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from .em import FitResult, LoopState, Status, params_from_stats, run_loop
from .params import MixtureParams
from .stats import chunked_map, chunked_sum, resp_statistics, sufficient_statistics
from .validation import check_int, float_dtype

HIGHEST = lax.Precision.HIGHEST


# --------------------------------------------------------------------------- meshes and data

def data_mesh(n_devices: int | None = None, *, data_axis: str = "data",
              restart_groups: int = 1, restart_axis: str = "restarts",
              devices=None) -> Mesh:
    """A mesh over all (or the first ``n_devices``) devices, process-major order.

    With ``restart_groups`` > 1 the mesh is 2-D, (restart_axis, data_axis): the ``n_init``
    restarts are split over ``restart_groups`` groups of devices and each group shards the rows.
    """
    devs = list(jax.devices() if devices is None else devices)
    if n_devices is not None:
        n_devices = check_int(n_devices, "n_devices", 1)
        if n_devices > len(devs):
            raise ValueError(f"n_devices={n_devices} but only {len(devs)} devices are available.")
        devs = devs[:n_devices]
    restart_groups = check_int(restart_groups, "restart_groups", 1)
    if len(devs) % restart_groups:
        raise ValueError(f"{len(devs)} devices cannot be split into restart_groups="
                         f"{restart_groups} equal groups.")
    if restart_groups == 1:
        return Mesh(np.array(devs), (data_axis,))
    return Mesh(np.array(devs).reshape(restart_groups, -1), (restart_axis, data_axis))


def row_sharding_of(x) -> tuple[Mesh, str] | None:
    """(mesh, data axis) if ``x`` is a concrete jax.Array sharded along its rows over > 1 device."""
    if not isinstance(x, jax.Array) or isinstance(x, jax.core.Tracer):
        return None
    sharding = getattr(x, "sharding", None)
    if not isinstance(sharding, NamedSharding) or sharding.is_fully_replicated:
        return None
    spec = tuple(sharding.spec) + (None,) * 2
    axis = spec[0]
    if axis is None or spec[1] is not None:
        return None
    if isinstance(axis, tuple):
        if len(axis) != 1:
            return None
        axis = axis[0]
    return sharding.mesh, axis


def is_row_sharded(x) -> bool:
    return row_sharding_of(x) is not None


def _axis_size(mesh: Mesh, axis: str) -> int:
    if axis not in mesh.axis_names:
        raise ValueError(f"mesh has axes {mesh.axis_names}; data_axis={axis!r} is not one of them.")
    return mesh.shape[axis]


def _rows_per_device(n: int, n_dev: int, chunk_size: int | None) -> int:
    from .fit import bucket_rows
    return max(1, bucket_rows(-(-n // n_dev), chunk_size))


def _process_row_counts(n_local: int, d: int) -> np.ndarray:
    """(n_processes, 2) array of every process's (rows, features)."""
    mine = np.array([n_local, d], np.int64)
    if jax.process_count() == 1:
        return mine[None]
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(mine)).reshape(-1, 2)


def shard_rows(X, mesh: Mesh, *, data_axis: str = "data", sample_weight=None,
               chunk_size: int | None = None, process_local: bool = False,
               rows_per_device: int | None = None):
    """Pad rows with zero-weight rows and shard them over ``mesh[data_axis]``.

    Returns ``(x, w, n_rows)``: global ``jax.Array`` s sharded along rows, each device holding the
    same number of rows (a multiple of ``chunk_size`` when given), and the number of real rows.

    ``process_local=True``: ``X`` (and ``sample_weight``) are this process's own rows; every
    process calls this together (their row counts are exchanged first, so they may differ).
    Otherwise ``X`` holds all rows (host data, or an already sharded global ``jax.Array``).
    """
    n_dev = _axis_size(mesh, data_axis)
    row_spec = NamedSharding(mesh, P(data_axis))
    if process_local:
        x = np.asarray(X)
        if x.ndim != 2:
            raise ValueError(f"X must be a 2-D array of shape (n_samples, n_features); got an "
                             f"array of shape {x.shape}.")
        dtype = float_dtype(x)
        counts = _process_row_counts(x.shape[0], x.shape[1])
        if np.any(counts[:, 1] != x.shape[1]):
            raise ValueError(f"processes disagree on the number of features: {counts[:, 1].tolist()}")
        n_proc = counts.shape[0]
        if n_dev % n_proc:
            raise ValueError(f"process_local=True needs the data axis ({n_dev} devices) to span "
                             f"all {n_proc} processes equally.")
        local_dev = n_dev // n_proc
        per_dev = rows_per_device or _rows_per_device(int(counts[:, 0].max()), local_dev,
                                                      chunk_size)
        local_rows = per_dev * local_dev
        w = (np.ones(x.shape[0], dtype) if sample_weight is None
             else np.asarray(sample_weight, dtype))
        if w.shape != (x.shape[0],):
            raise ValueError(f"sample_weight must have shape ({x.shape[0]},) to match X; got "
                             f"{w.shape}.")
        xp = np.zeros((local_rows, x.shape[1]), dtype)
        xp[:x.shape[0]] = x
        wp = np.zeros((local_rows,), dtype)
        wp[:x.shape[0]] = w
        gx = jax.make_array_from_process_local_data(row_spec, xp,
                                                    (local_rows * n_proc, x.shape[1]))
        gw = jax.make_array_from_process_local_data(row_spec, wp, (local_rows * n_proc,))
        return gx, gw, int(counts[:, 0].sum())
    n, d = np.shape(X)
    per_dev = rows_per_device or _rows_per_device(n, n_dev, chunk_size)
    n_pad = per_dev * n_dev
    dtype = float_dtype(X)
    if isinstance(X, jax.Array):
        w = (jnp.ones((n,), dtype) if sample_weight is None
             else jnp.asarray(sample_weight, dtype))
        pad = jax.jit(lambda a, b: (jnp.pad(a.astype(dtype), ((0, n_pad - n), (0, 0))),
                                    jnp.pad(b, (0, n_pad - n))),
                      out_shardings=(row_spec, row_spec))
        gx, gw = pad(X, w)
        return gx, gw, n
    x = np.asarray(X, dtype)
    w = np.ones((n,), dtype) if sample_weight is None else np.asarray(sample_weight, dtype)
    xp = np.zeros((n_pad, d), dtype)
    xp[:n] = x
    wp = np.zeros((n_pad,), dtype)
    wp[:n] = w
    return jax.device_put(xp, row_spec), jax.device_put(wp, row_spec), n


# --------------------------------------------------------------------------- collectives

def _psum(tree, axis):
    return jax.tree_util.tree_map(lambda a: lax.psum(a, axis), tree)


def sharded_sum(fn, x, w, axis: str, chunk_size: int | None, *rows):
    """Σ over all rows of all devices of ``fn(x_chunk, w_chunk, *row_chunks)``: a chunked local
    sum followed by one ``psum``. Call inside ``shard_map``."""
    return _psum(chunked_sum(fn, x, w, chunk_size, *rows), axis)


def _global_index(n_local: int, axis: str) -> jax.Array:
    return lax.axis_index(axis) * n_local + jnp.arange(n_local)


def _take_rows(x, idx, axis):
    """Rows ``x[idx]`` for global row indices ``idx`` (...,): the owner contributes, psum shares."""
    n_local = x.shape[0]
    local = idx - lax.axis_index(axis) * n_local
    mine = (local >= 0) & (local < n_local)
    rows = jnp.where(mine[..., None], x[jnp.clip(local, 0, n_local - 1)], 0)
    return lax.psum(rows, axis)


def _draw(key, probs, axis, shape=()):
    """Global row indices drawn proportionally to ``probs`` (like init._draw on all rows):
    the global cumulative sum is the local one plus the totals of the devices before."""
    cum = jnp.cumsum(probs)
    totals = lax.all_gather(cum[-1], axis)
    offset = (jnp.cumsum(totals) - totals)[lax.axis_index(axis)]
    u = jax.random.uniform(key, shape, probs.dtype) * jnp.sum(totals)
    count = lax.psum(jnp.sum((cum + offset) <= u[..., None], axis=-1), axis)
    n_global = probs.shape[0] * lax.psum(1, axis)
    return jnp.minimum(count, n_global - 1).astype(jnp.int32)


def _sq_distances(x, centers):
    from .init import _sq_distances as sq
    return sq(x, centers)


# --------------------------------------------------------------------------- sharded init

def kmeans_plusplus_sharded(key, x, w, n_clusters: int, axis: str):
    """k-means++ seeding over rows sharded on ``axis`` (same draws as ``init.kmeans_plusplus``).
    Returns (global row indices (K,), centres (K, D))."""
    n_trials = 2 + int(math.log(n_clusters))
    key, first_key = jax.random.split(key)
    first = _draw(first_key, w, axis)
    c0 = _take_rows(x, first, axis)
    closest = _sq_distances(x, c0[None])[:, 0]

    def add_center(i, carry):
        idx, centers, closest = carry
        probs = w * closest
        probs = jnp.where(lax.psum(jnp.sum(probs), axis) > 0, probs, w)
        cand = _draw(jax.random.fold_in(key, i), probs, axis, (n_trials,))
        cx = _take_rows(x, cand, axis)
        new_closest = jnp.minimum(closest[:, None], _sq_distances(x, cx))
        best = jnp.argmin(lax.psum(jnp.sum(w[:, None] * new_closest, axis=0), axis))
        return idx.at[i].set(cand[best]), centers.at[i].set(cx[best]), new_closest[:, best]

    idx = jnp.zeros((n_clusters,), jnp.int32).at[0].set(first)
    centers = jnp.zeros((n_clusters, x.shape[1]), x.dtype).at[0].set(c0)
    idx, centers, _ = lax.fori_loop(1, n_clusters, add_center, (idx, centers, closest))
    return idx, centers


def kmeans_sharded(key, x, w, n_clusters: int, axis: str, *, max_iter: int = 300, tol=1e-4,
                   chunk_size: int | None = None):
    """Weighted Lloyd iterations over sharded rows (``init.kmeans`` with psums).
    Returns (centres (K, D), local labels (n_local,))."""
    _, centers = kmeans_plusplus_sharded(key, x, w, n_clusters, axis)
    wsum = lax.psum(jnp.sum(w), axis)
    mean = lax.psum(jnp.sum(w[:, None] * x, axis=0), axis) / wsum
    var = lax.psum(jnp.sum(w[:, None] * (x - mean) ** 2, axis=0), axis) / wsum
    tol_abs = tol * jnp.mean(var)

    def assign(xc, c):
        return jnp.argmin(_sq_distances(xc, c), axis=1)

    def lloyd(carry):
        c, _, it = carry

        def sums(xc, wc):
            onehot = jax.nn.one_hot(assign(xc, c), n_clusters, dtype=x.dtype) * wc[:, None]
            return jnp.matmul(onehot.T, xc, precision=HIGHEST), jnp.sum(onehot, axis=0)

        total, counts = sharded_sum(sums, x, w, axis, chunk_size)
        new = jnp.where(counts[:, None] > 0, total / jnp.maximum(counts, 1e-30)[:, None], c)
        return new, jnp.sum((new - c) ** 2), it + 1

    def cond(carry):
        _, shift, it = carry
        return (it < max_iter) & (shift > tol_abs)

    centers, _, _ = lax.while_loop(cond, lloyd, (centers, jnp.array(jnp.inf, x.dtype), 0))
    return centers, chunked_map(lambda xc: assign(xc, centers), x, chunk_size)


def _params_from_resp_sharded(x, w, resp, covariance_type, reg_covar, chunk_size, axis):
    r = resp * w[:, None]
    nk = lax.psum(jnp.sum(r, axis=0), axis)
    centers = (lax.psum(jnp.matmul(r.T, x, precision=HIGHEST), axis)
               / (nk + 10 * jnp.finfo(x.dtype).eps)[:, None])
    stats = _psum(resp_statistics(x, w, resp, centers, covariance_type, chunk_size), axis)
    return params_from_stats(stats, centers, covariance_type, reg_covar, jnp.zeros_like(x[0]))


def initialize_sharded(key, x, w, rand, n_components: int, covariance_type: str, method: str,
                       reg_covar, chunk_size, axis):
    """``init.initialize`` over sharded rows. ``rand`` holds this shard's rows of the random
    array ("random": uniform (n, K); "random_from_data": Gumbel (n,)), drawn on the global
    shape outside so the draws equal the single-device ones."""
    n_local = x.shape[0]
    k = n_components
    if method == "kmeans":
        _, labels = kmeans_sharded(key, x, w, k, axis, chunk_size=chunk_size)
        resp = jax.nn.one_hot(labels, k, dtype=x.dtype)
    elif method == "random":
        resp = rand / jnp.sum(rand, axis=1, keepdims=True)
    else:
        if method == "k-means++":
            idx, _ = kmeans_plusplus_sharded(key, x, w, k, axis)
        elif method == "random_from_data":
            # jax.random.choice(replace=False, p=w/Σw): Gumbel top-k, merged across devices.
            g = rand + jnp.log(w / lax.psum(jnp.sum(w), axis))
            k_local = min(k, n_local)
            vals, loc = lax.top_k(g, k_local)
            all_vals = lax.all_gather(vals, axis, tiled=True)
            all_idx = lax.all_gather(loc + lax.axis_index(axis) * n_local, axis, tiled=True)
            idx = all_idx[lax.top_k(all_vals, k)[1]]
        else:
            raise ValueError(f"Unknown init {method!r}.")
        gidx = _global_index(n_local, axis)
        resp = (gidx[:, None] == idx[None, :]).astype(x.dtype)
    return _params_from_resp_sharded(x, w, resp, covariance_type, reg_covar, chunk_size, axis)


def sharded_em_step(params: MixtureParams, x, w, reg_covar, chunk_size, axis):
    """``em.em_step`` (shift 0) on sharded rows: local statistics, one psum, replicated M-step."""
    zero = jnp.zeros_like(x[0])
    stats = _psum(sufficient_statistics(params, x, w, zero, chunk_size), axis)
    new, ok = params_from_stats(stats, params.means, params.covariance_type, reg_covar, zero)
    return new, stats.loglik / stats.weight, ok


def statistics(params: MixtureParams, x, w, *, mesh: Mesh, data_axis: str = "data",
               shift=None, chunk_size: int | None = None):
    """Sufficient statistics of rows sharded over ``mesh[data_axis]`` (shard_map + psum),
    replicated on every device. A building block for custom distributed loops."""
    if shift is None:
        shift = jnp.zeros((x.shape[1],), x.dtype)

    def body(p, xl, wl, s):
        return _psum(sufficient_statistics(p, xl, wl, s, chunk_size), data_axis)

    fn = jax.shard_map(body, mesh=mesh, in_specs=(P(), P(data_axis), P(data_axis), P()),
                       out_specs=P(), check_vma=False)
    return jax.jit(fn)(params, x, w, shift)


# --------------------------------------------------------------------------- the program

def _restart_ids(n_init, restart_axis):
    if restart_axis is None:
        return jnp.arange(n_init)
    per = n_init // lax.psum(1, restart_axis)
    return lax.axis_index(restart_axis) * per + jnp.arange(per)


@functools.partial(jax.jit, static_argnames=(
    "mesh", "data_axis", "restart_axis", "n_components", "covariance_type", "init", "n_init",
    "max_iter", "chunk_size"))
def _sharded_program(key, x, w, init_params, tol, reg_covar, prev_bound, *, mesh, data_axis,
                     restart_axis, n_components, covariance_type, init, n_init, max_iter,
                     chunk_size):
    dtype = x.dtype
    rows = P(restart_axis, data_axis)
    rand = None
    if init == "random":
        rand = jax.vmap(lambda k: jax.random.uniform(k, (x.shape[0], n_components), dtype))(
            jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(n_init)))
    elif init == "random_from_data":
        rand = jax.vmap(lambda k: jax.random.gumbel(k, (x.shape[0],), dtype))(
            jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(n_init)))
    if rand is not None:
        rand = lax.with_sharding_constraint(rand, NamedSharding(mesh, rows))

    def body(key, x, w, init_params, rand, tol, reg_covar, prev_bound):
        shift = (lax.psum(jnp.sum(w[:, None] * x, axis=0), data_axis)
                 / lax.psum(jnp.sum(w), data_axis))
        xs = x - shift
        ids = _restart_ids(n_init, restart_axis)
        keys = jax.vmap(jax.random.fold_in, (None, 0))(key, ids)

        def one(k, p0, r):
            if p0 is None:
                params, ok = initialize_sharded(k, xs, w, r, n_components, covariance_type,
                                                init, reg_covar, chunk_size, data_axis)
            else:
                params, ok = p0.replace(means=p0.means - shift), jnp.array(True)
            loop: LoopState = run_loop(
                lambda p: sharded_em_step(p, xs, w, reg_covar, chunk_size, data_axis), params,
                max_iter, tol, dtype, prev_bound)
            status = jnp.where(ok, loop.status, Status.ILL_DEFINED_COVARIANCE).astype(jnp.int32)
            return loop._replace(status=status)

        if init_params is not None and init_params.weights.ndim == 2:
            p0 = jax.tree_util.tree_map(lambda a: a[ids], init_params)
            loops = jax.vmap(lambda k, p: one(k, p, None))(keys, p0)
        elif init_params is not None:
            loops = jax.vmap(lambda k: one(k, init_params, None))(keys)
        elif rand is not None:
            loops = jax.vmap(lambda k, r: one(k, None, r))(keys, rand)
        else:
            loops = jax.vmap(lambda k: one(k, None, None))(keys)
        if restart_axis is not None:
            loops = jax.tree_util.tree_map(
                lambda a: lax.all_gather(a, restart_axis, tiled=True), loops)
        from .fit import best_restart
        best = best_restart(loops.lower_bound, loops.status)
        pick = jax.tree_util.tree_map(lambda a: a[best], loops)
        params = pick.state.replace(means=pick.state.means + shift)
        return FitResult(params, pick.lower_bound, pick.history, pick.n_iter,
                         pick.status == Status.CONVERGED, pick.status, loops.lower_bound,
                         loops.status)

    rand_spec = P(restart_axis, data_axis) if rand is not None else P()
    fn = jax.shard_map(body, mesh=mesh,
                       in_specs=(P(), P(data_axis), P(data_axis), P(), rand_spec, P(), P(), P()),
                       out_specs=P(), check_vma=False)
    return fn(key, x, w, init_params, rand, tol, reg_covar, prev_bound)


def _check_finite_global(x, w):
    ok = jax.jit(lambda a, b: (jnp.all(jnp.isfinite(a)), jnp.all(jnp.isfinite(b)),
                               jnp.all(b >= 0), jnp.sum(b > 0)))(x, w)
    fin_x, fin_w, nonneg, n_pos = (np.asarray(v) for v in ok)
    if not fin_x:
        raise ValueError(f"X contains NaN or infinity (shape {tuple(x.shape)}); remove or impute "
                         "those values first.")
    if not fin_w:
        raise ValueError("sample_weight contains NaN or infinity.")
    if not nonneg:
        raise ValueError("sample_weight must be non-negative.")
    return int(n_pos)


def fit_sharded(key, X, n_components: int, *, mesh: Mesh | None, data_axis: str | None,
                restart_axis: str | None, process_local: bool, covariance_type: str,
                init_name: str, init, n_init: int, max_iter: int, tol, reg_covar,
                sample_weight, chunk_size, initial_lower_bound=None) -> FitResult:
    """The ``mesh=`` / sharded-input / ``process_local=`` path of :func:`gmmjax.fit`."""
    from .fit import auto_chunk_size
    from .validation import check_data, check_init_params

    if isinstance(X, jax.core.Tracer) or isinstance(sample_weight, jax.core.Tracer):
        raise ValueError("fit with mesh= / process_local= / sharded X is a host-level call: it "
                         "cannot run under jax.jit or jax.vmap (it pads and shards the rows).")
    found = row_sharding_of(X)
    if mesh is None:
        if found is not None:
            mesh, axis = found
            data_axis = data_axis or axis
        else:
            mesh = data_mesh(data_axis=data_axis or "data")
    data_axis = data_axis or ("data" if "data" in mesh.axis_names else mesh.axis_names[-1])
    n_dev = _axis_size(mesh, data_axis)
    if restart_axis is not None:
        n_groups = _axis_size(mesh, restart_axis)
        if n_init % n_groups:
            raise ValueError(f"n_init={n_init} must be a multiple of the {n_groups} devices on "
                             f"mesh axis {restart_axis!r}.")
    if process_local or not isinstance(X, jax.Array):
        check_data(X)   # host data: shape, dtype and finiteness checks here
    shape = np.shape(X)
    if len(shape) != 2:
        check_data(X)
    n_rows, d = shape
    if process_local:
        n_rows = int(_process_row_counts(shape[0], d)[:, 0].sum())
    if chunk_size is None:
        chunk_size = auto_chunk_size(-(-n_rows // n_dev), n_components, d)
    x, w, _ = shard_rows(X, mesh, data_axis=data_axis, sample_weight=sample_weight,
                         chunk_size=chunk_size, process_local=process_local)
    n_pos = _check_finite_global(x, w)
    if n_pos == 0:
        raise ValueError("sample_weight sums to zero; at least one row needs positive weight.")
    if n_pos < n_components:
        raise ValueError(f"Expected n_samples >= n_components but got n_components = "
                         f"{n_components}, n_samples = {n_pos}")
    init_params = None
    if init_name == "params":
        check_init_params(init, covariance_type, n_components, d, n_init)
        init_params = jax.tree_util.tree_map(lambda a: np.asarray(a, x.dtype), init)
    dtype = x.dtype
    prev = None if initial_lower_bound is None else np.asarray(initial_lower_bound, dtype)
    return _sharded_program(key, x, w, init_params, np.asarray(tol, dtype),
                            np.asarray(reg_covar, dtype), prev, mesh=mesh, data_axis=data_axis,
                            restart_axis=restart_axis, n_components=n_components,
                            covariance_type=covariance_type, init=init_name, n_init=n_init,
                            max_iter=max_iter, chunk_size=chunk_size)
