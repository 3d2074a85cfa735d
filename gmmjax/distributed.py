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

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from .core import fit_restarts
from .em import FitResult
from .params import MixtureParams
from .rows import Rows, auto_chunk_size, bucket_rows
from .stats import sufficient_statistics
from .validation import check_data, check_init_params, check_int, float_dtype


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


def statistics(params: MixtureParams, x, w, *, mesh: Mesh, data_axis: str = "data",
               shift=None, chunk_size: int | None = None):
    """Sufficient statistics of rows sharded over ``mesh[data_axis]`` (shard_map + psum),
    replicated on every device. A building block for custom distributed loops."""
    if shift is None:
        shift = jnp.zeros((x.shape[1],), x.dtype)

    def body(p, xl, wl, s):
        return Rows(data_axis).sum(sufficient_statistics(p, xl, wl, s, chunk_size))

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
        if restart_axis is None:
            gather = (lambda loops: loops)
        else:
            gather = functools.partial(jax.tree_util.tree_map,
                                       lambda a: lax.all_gather(a, restart_axis, tiled=True))
        return fit_restarts(key, x, w, init_params, rand, None, tol, reg_covar, prev_bound,
                            restart_ids=_restart_ids(n_init, restart_axis), gather=gather,
                            rows=Rows(data_axis), n_components=n_components,
                            covariance_type=covariance_type, init=init, max_iter=max_iter,
                            chunk_size=chunk_size)

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
