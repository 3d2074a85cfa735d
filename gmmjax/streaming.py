"""``fit_stream``: exact EM over data that do not fit in memory, streamed in host chunks.

Each EM iteration is one pass over ``chunks()`` (a fresh iterator per pass). Every chunk is padded
to one fixed shape with zero-weight rows (so the statistics kernel compiles once), transferred to
the device by a background thread one chunk ahead of the computation, and its sufficient
statistics are accumulated on the device. The M-step is the in-memory one, so the result equals
:func:`gmmjax.fit` on the concatenated data (up to floating-point summation order).
"""

from __future__ import annotations

import functools
import queue
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np

from .compile_cache import cached_jit
from .covariance import get_covariance_model
from .em import FitResult, LoopState, Status, advance, best_restart, update_from_stats
from .init import initialize
from .params import MixtureParams
from .rows import auto_chunk_size, bucket_rows
from .stats import sufficient_statistics
from .validation import (HostCentring, check_em_options, check_init_params, check_int,
                         float_dtype, init_method_name, warn_if_narrowed)

__all__ = ["fit_stream", "array_chunks"]


# --------------------------------------------------------------------------- chunk sources

def array_chunks(X, chunk_size: int, sample_weight=None):
    """``chunks`` callable for :func:`fit_stream` over an array or ``np.memmap``.

    For a memmap, pages already consumed are released after each chunk (``madvise``), so the
    resident memory stays about one chunk, not the whole file.
    """
    chunk_size = check_int(chunk_size, "chunk_size", 1)
    n = np.shape(X)[0]

    def release(start, stop):
        mm = getattr(X, "_mmap", None)
        if mm is None or not hasattr(mm, "madvise"):
            return
        import mmap
        row_bytes = X.strides[0]
        base = getattr(X, "offset", 0)
        page = mmap.PAGESIZE
        lo = (base + start * row_bytes) // page * page
        hi = (base + stop * row_bytes) // page * page
        if hi > lo:
            try:
                mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
            except (OSError, ValueError):
                pass

    def chunks():
        for start in range(0, n, chunk_size):
            stop = min(n, start + chunk_size)
            x = np.array(X[start:stop])
            release(start, stop)
            if sample_weight is None:
                yield x
            else:
                yield x, np.asarray(sample_weight[start:stop])

    return chunks


# --------------------------------------------------------------------------- host helpers

class _End:
    pass


class _Failure:
    def __init__(self, exc):
        self.exc = exc


class _Prefetcher:
    """Iterates ``source`` in a background thread, ``convert`` ing (and transferring) items up
    to ``depth`` ahead of the consumer."""

    def __init__(self, source, convert, depth: int):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(source, convert), daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, source, convert):
        try:
            for item in source:
                for piece in convert(item):
                    if not self._put(piece):
                        return
            self._put(_End())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            self._put(_Failure(exc))

    def __iter__(self):
        try:
            while True:
                item = self._queue.get()
                if isinstance(item, _End):
                    return
                if isinstance(item, _Failure):
                    raise item.exc
                yield item
        finally:
            self._stop.set()
            self._thread.join(timeout=5)


def _as_pair(item, dtype, centring: HostCentring | None = None, weight_scale=None):
    """(x, w) of one chunk as ``dtype``; x moved by ``centring`` and w multiplied by
    ``weight_scale`` in float64 on the host first (when given); without a scale w stays float64
    (the first pass sums it)."""
    if isinstance(item, tuple):
        if len(item) != 2:
            raise ValueError(f"a chunk must be an array X or a pair (X, sample_weight); got a "
                             f"tuple of {len(item)} items.")
        x, w = item
    else:
        x, w = item, None
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"each chunk must be a 2-D array (rows, n_features); got shape {x.shape}.")
    if x.dtype == object or not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"chunks must be numeric; got dtype {x.dtype}.")
    if centring is not None:
        x = centring.centre(x)
    x = x.astype(dtype, copy=False)
    if w is None:
        w = np.ones((x.shape[0],), np.float64)
    else:
        w = np.asarray(w, np.float64)
        if w.shape != (x.shape[0],):
            raise ValueError(f"chunk sample_weight must have shape ({x.shape[0]},); got {w.shape}.")
    if weight_scale is not None:
        w = (w * weight_scale).astype(dtype)
    return x, w


def _pieces(x, w, rows):
    """Split into pieces of at most ``rows`` rows, each padded to exactly ``rows`` (zero weight)."""
    for start in range(0, max(1, x.shape[0]), rows):
        xs, ws = x[start:start + rows], w[start:start + rows]
        if xs.shape[0] == 0:
            return
        if xs.shape[0] < rows:
            xs = np.concatenate([xs, np.zeros((rows - xs.shape[0], x.shape[1]), x.dtype)])
            ws = np.concatenate([ws, np.zeros((rows - ws.shape[0],), w.dtype)])
        yield xs, ws


@cached_jit
def _seed_words(key):
    """The key folded with a constant, as raw words (one small program, cached on disk)."""
    k = jax.random.fold_in(key, 0x5EED)
    return jax.random.key_data(k) if jnp.issubdtype(k.dtype, jax.dtypes.prng_key) else k


def _seed_from_key(key) -> np.random.Generator:
    return np.random.default_rng(np.asarray(_seed_words(key), np.uint32).ravel().tolist())


def _allgather(arr: np.ndarray) -> np.ndarray:
    """(n_processes, ...) stack of every process's ``arr`` (identity on one process)."""
    if jax.process_count() == 1:
        return np.asarray(arr)[None]
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(np.asarray(arr))).reshape(
        (jax.process_count(),) + np.shape(arr))


class _Scan:
    """First pass: row count, weighted sum, count of positive weights, largest chunk, and a
    reservoir sample of rows (its weights in ``weight_dtype``, default the rows' dtype)."""

    def __init__(self, sample_size: int, rng: np.random.Generator, weight_dtype=None):
        self.weight_dtype = weight_dtype
        self.n = 0
        self.n_positive = 0
        self.n_chunks = 0
        self.max_rows = 0
        self.wsum = 0.0
        self.xsum = None
        self.sample_size = sample_size
        self.rng = rng
        self.sx = None
        self.sw = None
        self.d = None

    def add(self, x, w):
        if self.d is None:
            self.d = x.shape[1]
            self.xsum = np.zeros(self.d)
            self.sx = np.zeros((self.sample_size, self.d), x.dtype)
            self.sw = np.zeros((self.sample_size,), self.weight_dtype or x.dtype)
        elif x.shape[1] != self.d:
            raise ValueError(f"chunks disagree on the number of features: {self.d} then "
                             f"{x.shape[1]}.")
        if not (np.all(np.isfinite(x))):
            raise ValueError(f"a chunk contains NaN or infinity (rows {self.n}.."
                             f"{self.n + x.shape[0]}); remove or impute those values first (fit_stream: "
                             "not supported with missing values yet).")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError("sample_weight must be finite and non-negative.")
        m = x.shape[0]
        self.n_chunks += 1
        self.max_rows = max(self.max_rows, m)
        self.wsum += float(np.sum(w, dtype=np.float64))
        self.n_positive += int(np.count_nonzero(w > 0))
        self.xsum += np.sum(w[:, None].astype(np.float64) * x, axis=0)
        # Algorithm R, vectorised: row t (global) replaces slot j ~ U{0..t} when j < size.
        t = self.n + np.arange(m)
        fill = t < self.sample_size
        self.sx[t[fill]] = x[fill]
        self.sw[t[fill]] = w[fill]
        rest = ~fill
        if np.any(rest):
            j = self.rng.integers(0, t[rest] + 1)
            keep = j < self.sample_size
            self.sx[j[keep]] = x[rest][keep]
            self.sw[j[keep]] = w[rest][keep]
        self.n += m


# --------------------------------------------------------------------------- device programs

@functools.partial(cached_jit, static_argnames=("n_components", "covariance_type", "init",
                                             "n_init", "chunk_size"))
def _init_program(key, x, w, shift, reg_covar, *, n_components, covariance_type, init, n_init,
                  chunk_size):
    keys = jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(n_init))
    params, ok = jax.vmap(lambda k: initialize(k, x - shift, w, n_components, covariance_type,
                                               init, reg_covar, chunk_size))(keys)
    return params.replace(means=params.means + shift), ok


def _restart_stats(params, x, w, shift, inner):
    """Statistics of one chunk for each restart: a static loop over the (few) restarts, each with
    the unbatched kernel (vmapping it over parameters batches the GEMMs: measured ~4x slower)."""
    n_init = params.weights.shape[0]
    per = [sufficient_statistics(jax.tree_util.tree_map(lambda a, r=r: a[r], params), x, w,
                                 shift, inner) for r in range(n_init)]
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *per)


def _stats_fn(inner):
    def fn(acc, params, x, w, shift):
        return jax.tree_util.tree_map(jnp.add, acc, _restart_stats(params, x, w, shift, inner))
    return fn


@functools.partial(cached_jit, static_argnames=("inner",))
def _accumulate(acc, params, x, w, shift, *, inner):
    """acc + statistics of one fixed-shape chunk, for each restart (vmapped). Compiles once."""
    return _stats_fn(inner)(acc, params, x, w, shift)


@functools.lru_cache(maxsize=8)
def _sharded_accumulate(mesh, data_axis, inner):
    from jax.sharding import PartitionSpec as P

    def body(acc, params, x, w, shift):
        stats = _restart_stats(params, x, w, shift, inner)
        stats = jax.tree_util.tree_map(lambda a: jax.lax.psum(a, data_axis), stats)
        return jax.tree_util.tree_map(jnp.add, acc, stats)

    fn = jax.shard_map(body, mesh=mesh, in_specs=(P(), P(), P(data_axis), P(data_axis), P()),
                       out_specs=P(), check_vma=False)
    return jax.jit(fn)


@cached_jit
def _em_update(acc, params, lower_bound, history, n_iter, status, tol, reg_covar, shift):
    """M-step of every restart plus ``run_loop``'s bookkeeping, for restarts still running."""
    def one(stats, p, lb, hist, it, st):
        running = st == Status.MAX_ITER_REACHED
        before = LoopState(p, lb, hist, it, st == Status.CONVERGED, st)
        after = advance(before, *update_from_stats(stats, p, reg_covar, shift), tol)
        after = jax.tree_util.tree_map(lambda a, b: jnp.where(running, a, b), after, before)
        return after.state, after.lower_bound, after.history, after.n_iter, after.status

    return jax.vmap(one)(acc, params, lower_bound, history, n_iter, status)


def _zero_stats(params, d, dtype, covariance_type):
    k = params.means.shape[-2]
    r = params.weights.shape[0]
    shape = get_covariance_model(covariance_type).shape(k, d)
    from .stats import SuffStats
    z = lambda *s: np.zeros((r,) + s, dtype)  # noqa: E731  (host zeros: nothing to compile)
    return SuffStats(z(k), z(k, d), z(*shape), z(), z())


# --------------------------------------------------------------------------- public API

def fit_stream(key: jax.Array, chunks, n_components: int, *, covariance_type: str = "full",
               init: str | MixtureParams = "kmeans", n_init: int = 1, max_iter: int = 100,
               tol=1e-3, reg_covar=1e-6, chunk_size: int | None = None,
               sample_size: int = 16384, prefetch: int = 1, dtype=None, verbose: bool = False,
               mesh=None, data_axis: str = "data") -> FitResult:
    """Exact EM over data streamed from the host in chunks (larger than device or host memory).

    Args:
      key: PRNG key (initialisation and the reservoir sample).
      chunks: a callable; ``chunks()`` returns a *fresh* iterator over the data for each pass,
        yielding arrays (m, D) or pairs (X, sample_weight). Chunks may be ragged. See
        :func:`array_chunks` for arrays and ``np.memmap`` s.
      n_components, covariance_type, n_init, max_iter, tol, reg_covar: as :func:`gmmjax.fit`.
      init: a MixtureParams (optionally with a leading (n_init,) axis) or an init method of
        :func:`gmmjax.fit`, run on a reservoir sample of ``sample_size`` rows drawn in a first
        pass (when all rows fit in the sample it is the data itself, in order, so the fit equals
        :func:`gmmjax.fit` on the concatenated data).
      chunk_size: rows per device chunk (default: the largest chunk of the first pass). Every
        chunk is padded to this shape with zero-weight rows: one compiled program.
      prefetch: chunks read and transferred ahead of the computation by a background thread.
      dtype: float dtype on the device (default: that of the first chunk, canonicalised: JAX's
        rule, float64 chunks are computed in float32 unless x64 is enabled, with one
        UserWarning per process). 64-bit host chunks computed in float32 are centred on the
        stream's mean in float64 on the host first (the means come back in the data's frame).
      verbose: print the lower bound, time and throughput of each pass.
      mesh, data_axis: shard each chunk over ``mesh[data_axis]`` (shard_map + psum). With several
        processes (after ``jax.distributed.initialize``) each process streams its own rows;
        every process makes the same call, and the number of chunks is agreed first.

    Only the ratios of the chunks' sample weights matter (rescaled to mean 1 on the host).
    Returns a :class:`FitResult`, as :func:`gmmjax.fit`. One pass per EM iteration plus one
    first pass (statistics for the data shift, the chunk shape and the init sample).
    """
    n_components, n_init, max_iter, chunk_size = check_em_options(
        n_components, n_init, max_iter, tol, reg_covar, covariance_type, chunk_size)
    sample_size = check_int(sample_size, "sample_size", 1)
    prefetch = check_int(prefetch, "prefetch", 0)
    if not callable(chunks):
        raise TypeError("chunks must be a callable returning a fresh iterator of chunks for each "
                        "pass (e.g. lambda: iter(list_of_arrays)); got "
                        f"{type(chunks).__name__}.")
    init_name = init_method_name(init)
    n_proc = jax.process_count()
    n_local_dev = 1
    if mesh is not None:
        from jax.sharding import NamedSharding
        from jax.sharding import PartitionSpec as P
        if data_axis not in mesh.axis_names:
            raise ValueError(f"mesh has axes {mesh.axis_names}; data_axis={data_axis!r} is not "
                             "one of them.")
        n_local_dev = max(1, mesh.shape[data_axis] // n_proc)
        rep = NamedSharding(mesh, P())
        rows_sharding = NamedSharding(mesh, P(data_axis))

        def replicate(tree):
            # every process holds the same values: no cross-process check (NaN != NaN there)
            def one(a):
                a = np.asarray(a)
                return jax.make_array_from_callback(a.shape, rep, lambda idx: a[idx])
            return jax.tree_util.tree_map(one, tree)
    else:
        replicate = jax.device_put      # host values to the device once (no XLA op to compile)

    # ---- first pass: shape, totals, reservoir sample
    t0 = time.perf_counter()
    first = chunks()
    scan = _Scan(sample_size, _seed_from_key(key), weight_dtype=np.float64)
    out_dtype = None if dtype is None else np.dtype(jax.dtypes.canonicalize_dtype(dtype))
    scan_dtype, narrowed_by_default, raw = None, False, None
    for item in first:
        if scan_dtype is None:
            probe = item[0] if isinstance(item, tuple) else item
            raw = np.asarray(probe[:0]) if hasattr(probe, "dtype") else np.asarray(probe)
            if out_dtype is None:
                out_dtype = float_dtype(raw)
                narrowed_by_default = HostCentring.narrows(raw.dtype, out_dtype)
            # 64-bit host numbers computed in float32: this pass keeps them in float64, the
            # EM passes centre every chunk on the stream's mean in float64 before narrowing it
            scan_dtype = (np.dtype(np.float64) if HostCentring.narrows(raw.dtype, out_dtype)
                          else out_dtype)
        x, w = _as_pair(item, scan_dtype)
        if chunk_size is not None and x.shape[0] > chunk_size:
            scan.max_rows = max(scan.max_rows, chunk_size)
            for xs, ws in _pieces(x, w, chunk_size):
                scan.add(xs, ws)
        else:
            scan.add(x, w)
    if scan.d is None and n_proc == 1:
        raise ValueError("chunks() yielded no data.")
    narrowed = scan_dtype is not None and scan_dtype != out_dtype
    info = _allgather(np.array([scan.n, scan.n_chunks, scan.max_rows,
                                -1 if scan.d is None else scan.d, narrowed], np.int64))
    dims = {int(v) for v in info[:, 3] if v >= 0}
    if len(dims) != 1:
        raise ValueError(f"processes disagree on the number of features: {sorted(dims)}")
    d = dims.pop()
    if out_dtype is None:
        out_dtype = np.dtype(jax.dtypes.canonicalize_dtype(np.float64))
    if scan.d is None:   # this process has no rows
        scan.d = d
        scan.xsum = np.zeros(d)
        scan.sx = np.zeros((sample_size, d), out_dtype)
        scan.sw = np.zeros((sample_size,), np.float64)
    totals = _allgather(np.concatenate([[scan.wsum, scan.n_positive], scan.xsum]))
    wsum = float(totals[:, 0].sum())
    if not wsum > 0:
        raise ValueError("sample_weight sums to zero; at least one row needs positive weight.")
    # only the weights' ratios matter: mean 1 over the positive ones (validation.unit_mean_weights
    # over the whole stream), applied in float64 on the host before the weights are narrowed
    weight_scale = float(totals[:, 1].sum()) / wsum
    if narrowed_by_default:
        warn_if_narrowed(raw, "fit_stream")      # valid chunks, computed in float32
    mean = totals[:, 2:].sum(0) / wsum
    centring = HostCentring.from_shift(mean) if info[:, 4].any() else None
    rows = int(chunk_size or info[:, 2].max())
    rows = -(-rows // n_local_dev) * n_local_dev
    inner = auto_chunk_size(rows // n_local_dev, n_components, d)
    if inner is not None:
        rows = -(-rows // (inner * n_local_dev)) * inner * n_local_dev
    n_pieces = int(info[:, 1].max())   # every process feeds this many chunks per pass
    shift_np = (np.zeros(d) if centring is not None else mean).astype(out_dtype)

    # sample for the init (all processes' reservoirs, so every process initialises identically)
    m = min(sample_size, scan.n)
    sx = np.concatenate(list(_allgather(np.where(np.arange(sample_size)[:, None] < m, scan.sx,
                                                 0).astype(np.float64))))
    sw = np.concatenate(list(_allgather(np.where(np.arange(sample_size) < m, scan.sw, 0))))
    live = sw > 0
    sw = (sw * weight_scale).astype(out_dtype)
    sx = (sx if centring is None else centring.centre(sx)).astype(out_dtype)
    if int(np.sum(live)) < n_components and init_name != "params":
        raise ValueError(f"Expected n_samples >= n_components but got n_components = "
                         f"{n_components}, n_samples = {int(np.sum(live))}")
    if init_name == "params":
        check_init_params(init, covariance_type, n_components, d)
        if centring is not None:
            init = centring.params(init)
        p = jax.tree_util.tree_map(lambda a: np.asarray(a, out_dtype), init)
        if np.ndim(p.weights) == 1:
            p = jax.tree_util.tree_map(lambda a: np.broadcast_to(a, (n_init,) + a.shape), p)
        elif np.shape(p.weights)[0] != n_init:
            raise ValueError(f"init params carry {np.shape(p.weights)[0]} restarts; "
                             f"n_init={n_init}.")
        params, init_ok = p, np.ones((n_init,), bool)
    else:
        keep = np.flatnonzero(live) if n_proc > 1 else np.arange(m)
        sx, sw = sx[keep], sw[keep]
        n_s = bucket_rows(sx.shape[0], None)
        sx = np.concatenate([sx, np.zeros((n_s - sx.shape[0], d), out_dtype)])
        sw = np.concatenate([sw, np.zeros((n_s - sw.shape[0],), out_dtype)])
        with jax.default_device(jax.local_devices()[0]):
            params, init_ok = _init_program(
                key, sx, sw, shift_np, np.asarray(reg_covar, out_dtype), n_components=n_components,
                covariance_type=covariance_type, init=init_name, n_init=n_init,
                chunk_size=auto_chunk_size(n_s, n_components, d))
        params, init_ok = jax.device_get((params, init_ok))
    if verbose:
        print(f"fit_stream: first pass {scan.n} rows, {scan.n_chunks} chunks "
              f"({time.perf_counter() - t0:.2f}s); device chunks of {rows} rows",
              file=sys.stdout, flush=True)

    # ---- EM passes (the carries start on the host: no eager XLA op to compile)
    shift = replicate(shift_np)
    params = replicate(jax.tree_util.tree_map(np.asarray, params))
    lower_bound = replicate(np.full((n_init,), -np.inf, out_dtype))
    history = replicate(np.full((n_init, max_iter), np.nan, out_dtype))
    n_iter = replicate(np.zeros((n_init,), np.int32))
    status = replicate(np.where(np.asarray(init_ok), Status.MAX_ITER_REACHED,
                                Status.ILL_DEFINED_COVARIANCE).astype(np.int32))
    tol_a = replicate(np.asarray(tol, out_dtype))
    reg_a = replicate(np.asarray(reg_covar, out_dtype))

    if mesh is None:
        def put(x, w):
            return jax.device_put(x), jax.device_put(w)
        accumulate = functools.partial(_accumulate, inner=inner)
    else:
        gshape = rows * n_proc

        def put(x, w):
            return (jax.make_array_from_process_local_data(rows_sharding, x, (gshape, d)),
                    jax.make_array_from_process_local_data(rows_sharding, w, (gshape,)))
        accumulate = _sharded_accumulate(mesh, data_axis, inner)

    def convert(item):
        x, w = _as_pair(item, out_dtype, centring, weight_scale)
        for xs, ws in _pieces(x, w, rows):
            yield put(xs, ws)

    def padded_source():
        count = 0
        for item in chunks():
            for piece in convert(item):
                count += 1
                yield piece
        if n_proc > 1:
            empty = (np.zeros((rows, d), out_dtype), np.zeros((rows,), out_dtype))
            for _ in range(n_pieces - count):
                yield put(*empty)

    for it in range(max_iter):
        if not bool(np.any(np.asarray(status) == Status.MAX_ITER_REACHED)):
            break
        t1 = time.perf_counter()
        acc = replicate(_zero_stats(params, d, out_dtype, covariance_type))
        source = padded_source() if prefetch == 0 else _Prefetcher(padded_source(), lambda p: [p],
                                                                  prefetch)
        pending = None
        for xd, wd in source:
            acc = accumulate(acc, params, xd, wd, shift)
            # dispatch is asynchronous: wait for the step before, so at most two chunks are in
            # flight on the device besides the prefetched one (bounded memory)
            if pending is not None:
                jax.block_until_ready(pending)
            pending = acc
        params, lower_bound, history, n_iter, status = _em_update(
            acc, params, lower_bound, history, n_iter, status, tol_a, reg_a, shift)
        if verbose:
            lb = np.asarray(history)[:, it]
            dt = time.perf_counter() - t1
            print(f"fit_stream: pass {it + 1}: lower bound {np.array2string(lb, precision=6)} "
                  f"({dt:.2f}s, {scan.n / max(dt, 1e-9):.3g} rows/s)", flush=True)

    # the best restart picked on the host, the result moved to the device once (fit's rule)
    lbs, sts = np.asarray(lower_bound), np.asarray(status)
    best = int(best_restart(lbs, sts))
    p, lb, hist, nit, st = jax.tree_util.tree_map(
        lambda a: np.asarray(a)[best], (params, lower_bound, history, n_iter, status))
    if centring is not None:
        p = centring.restore(p)
    return jax.device_put(FitResult(p, lb, hist, nit, st == Status.CONVERGED, st, lbs, sts))
