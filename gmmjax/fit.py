"""``fit``: validate on the host, pad rows and K to buckets, then ONE compiled program: init ->
restarts -> best; the live components are sliced off on the host."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from . import missing as _missing
from .compile_cache import cached_jit, quick_compile, quick_compile_options
from .core import fit_restarts, fit_restarts_looped, live_components, pad_components
from .em import FitResult
from .covariance import TYPE_CODES
from .params import FULL_LAYOUT_MAX_FEATURES, MixtureParams, from_full_layout, to_full_layout
from .rows import auto_chunk_size, bucket_rows, pad_resp, pad_to
from .validation import (HostCentring, check_data, check_em_options, check_init_params,
                         check_init_resp, check_key, check_n_samples, check_sample_weight,
                         as_operand, init_method_name, is_traced, warn_if_narrowed,
                         without_reverse_mode)


def _is_row_sharded(x) -> bool:
    """A concrete jax.Array split along its rows over several devices (-> the shard_map path)."""
    sharding = getattr(x, "sharding", None)
    if sharding is None or isinstance(x, jax.core.Tracer) or len(sharding.device_set) < 2:
        return False
    from .distributed import is_row_sharded
    return is_row_sharded(x)


# Padded components cost run time in proportion; below this many rows·K·D (padded) an EM
# iteration takes a few milliseconds (2-core CPU, 20k×6 K=8: diag 1.2 ms, full 3.7 ms), so a
# whole fit costs less than compiling its program (~1.5-3 s): K is padded to a bucket and, for
# D ≤ 8, every covariance type runs in the full layout's program (the type an operand).
K_BUCKET_ELEMENTS = 1 << 20
# Below this many rows·16·D a whole fit with 16 components costs well under a compile (~1.6 ns
# per row·component·feature and iteration on a 2-core CPU: < 70 ms for 300 iterations), so every
# K ≤ 16 runs in the one 16-component program.
TINY_ELEMENTS = 1 << 17
TINY_COMPONENTS = 16
# Programs of at most this many rows·K·D (padded) compile with the quick options (CPU): a
# 2-core CPU runs such an EM iteration in ~0.2-0.4 ms, and the options save 0.3-0.7 s of compile.
QUICK_COMPILE_ELEMENTS = 1 << 17


def component_bucket(n_rows: int, n_components: int, n_features: int, batched: bool = False
                     ) -> tuple[int, bool]:
    """(components the compiled program holds, whether it masks by a live count) for a
    K-component fit: for tiny problems max(16, bucket) (not ``batched``: under vmap the work is
    multiplied by a batch size unknown here); when the padded problem is small, K rounded up to
    the next of 1, 2, 4, 6, 8, 12, 16, 24, ... (2^j, and 3·2^j for j ≥ 1: a bucket is less than
    1.5 K; with no bucket 3, K = 3 runs with 4 components, one program fewer in every sweep that
    crosses it); else K exactly and no mask."""
    power = 1 << (n_components - 1).bit_length()
    padded = 3 * power // 4 if power >= 8 and 3 * power // 4 >= n_components else power
    tiny = max(padded, TINY_COMPONENTS)
    if not batched and n_rows * tiny * n_features <= TINY_ELEMENTS:
        return tiny, True
    if n_rows * padded * n_features <= K_BUCKET_ELEMENTS:
        return padded, True
    return n_components, False


def fit_chunk_size(n_rows: int, n_components: int, n_features: int, batched: bool = False
                   ) -> int | None:
    """The automatic chunk of a K-component fit: sized for the program's K
    (:func:`component_bucket`), so every K that shares a program shares its chunk (and rows)."""
    k_pad, _ = component_bucket(bucket_rows(n_rows, None), n_components, n_features, batched)
    return auto_chunk_size(n_rows, k_pad, n_features)


def restarts_in_a_loop() -> bool:
    """The backend rule: on CPU restarts run one after another in a loop over a traced count
    (measured several times faster than the vmap there, and n_init / max_iter become operands);
    on accelerators (wide devices) they run side by side in a vmap."""
    return jax.default_backend() == "cpu"


def _capacity(n: int, floor: int) -> int:
    """Static size for a traced count n: a power of two ≥ n, at least ``floor``."""
    return max(floor, 1 << max(0, n - 1).bit_length())


RESTART_CAPACITY, ITER_CAPACITY = 16, 128     # n_init ≤ 16 and max_iter ≤ 128: one program


@functools.partial(cached_jit, static_argnames=("n_components", "covariance_type", "init", "n_init",
                                                "max_iter", "chunk_size", "missing_buckets",
                                                "input_checked", "quick_compile"),
                   compiler_options=quick_compile_options)
def _fit_program(key, x, w, init_params, tol, reg_covar, prev_bound=None, n_live=None,
                 counts=None, type_code=None, init_resp=None, *, n_components, covariance_type,
                 init, n_init, max_iter, chunk_size, missing_buckets=None, input_checked=False,
                 quick_compile=False):
    """The fit program. ``counts`` None: ``n_init`` vmapped restarts. ``counts`` = (n_init,
    max_iter) traced: restarts in a loop, the static n_init / max_iter being capacities.
    ``type_code`` (traced, covariance_type "full"): the covariance type, as an operand.
    ``init_resp`` (n_init, N, K): given initial responsibilities (init "resp").
    ``missing_buckets``: rows with NaN entries. ``input_checked``: concrete data and weights
    the host has checked (the program skips its own check). ``quick_compile``: built with
    :data:`~gmmjax.compile_cache.QUICK_COMPILE_OPTIONS` (the same arithmetic)."""
    if missing_buckets is not None:   # rows with NaN: sorted by their count (few slots per chunk)
        x, w, order = _missing.sort_by_missing(x, w)
        if init_resp is not None:
            init_resp = init_resp[:, order]
    static = dict(n_components=n_components, covariance_type=covariance_type, init=init,
                  chunk_size=chunk_size, missing_buckets=missing_buckets,
                  input_checked=input_checked)
    if counts is not None:
        return fit_restarts_looped(key, x, w, init_params, n_live, tol, reg_covar, prev_bound,
                                   *counts, type_code, init_resp, restart_capacity=n_init,
                                   iter_capacity=max_iter, **static)
    return fit_restarts(key, x, w, init_params, init_resp, n_live, tol, reg_covar, prev_bound,
                        restart_ids=jnp.arange(n_init), max_iter=max_iter,
                        type_code=type_code, **static)


def fit(key: jax.Array, X, n_components: int, *, covariance_type: str = "full",
        init: str | MixtureParams = "kmeans", n_init: int = 1, max_iter: int = 100, tol=1e-3,
        reg_covar=1e-6, sample_weight=None, chunk_size: int | None = None,
        initial_lower_bound=None, mesh=None, data_axis: str | None = None,
        restart_axis: str | None = None, process_local: bool = False,
        missing: str = "error") -> FitResult:
    """Fit a Gaussian mixture by EM. One compiled program: init, ``n_init`` restarts (a loop over
    a traced count on CPU, a vmap on accelerators), EM in a ``lax.while_loop``, best restart by
    final lower bound (ties -> lowest index).

    Args:
      key: PRNG key; restart i uses ``fold_in(key, i)`` (so restart 0 does not depend on n_init).
      X: (N, D) data. JAX's dtype rule: float32 in -> float32 out; float64 -> float64 with x64
        enabled, else computed in float32 (one UserWarning per process).
      n_components: K.
      covariance_type: "full", "tied", "diag" or "spherical".
      init: "kmeans" (Lloyd seeded by k-means++), "k-means++", "random", "random_from_data", a
        MixtureParams (optionally with a leading (n_init,) axis: one per restart), or an (N, K)
        array of initial responsibilities (or (n_init, N, K): one per restart), which the first
        M-step turns into parameters as scikit-learn's ``_initialize(X, resp)`` does (the
        estimators pass scikit-learn's own initialisation this way).
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

    Small problems (rows·K·D ≤ ``K_BUCKET_ELEMENTS`` after padding K) run in the program of K
    rounded up to a bucket (:func:`component_bucket`), the extra components masked (weight 0)
    and sliced off here: the result equals the unpadded fit with the same key, and K = 9..12
    share one compile.

    Returns a :class:`FitResult`. Failures inside the program are reported in ``status``
    (:class:`Status`), never raised. Works under ``jax.vmap`` and ``jax.jit`` (host value checks
    are then skipped; shape checks still run, and the program reports invalid weights as
    ``Status.INVALID_INPUT`` and non-finite data as ``Status.NONFINITE``). Only the ratios of
    ``sample_weight`` matter. Float64 host data computed in float32 are centred in float64
    first. Not differentiable: ``jax.grad`` raises a TypeError naming the differentiable
    functions (``log_prob``, ``e_step``, ``em_step``, ``m_step``, ``sample``).
    """
    res = fit_on_host(**locals())      # (the arguments, by name)
    on_host = any(isinstance(a, np.ndarray) for a in jax.tree_util.tree_leaves(res))
    return jax.device_put(res) if on_host else res


def fit_on_host(key: jax.Array, X, n_components: int, *, covariance_type: str = "full",
                init: str | MixtureParams = "kmeans", n_init: int = 1, max_iter: int = 100,
                tol=1e-3, reg_covar=1e-6, sample_weight=None, chunk_size: int | None = None,
                initial_lower_bound=None, mesh=None, data_axis: str | None = None,
                restart_axis: str | None = None, process_local: bool = False,
                missing: str = "error") -> FitResult:
    """:func:`fit`, with a single-device concrete result left on the host (NumPy leaves): the
    estimators' path, which reads every field on the host anyway (no device round trip)."""
    n_components, n_init, max_iter, chunk_size = check_em_options(
        n_components, n_init, max_iter, tol, reg_covar, covariance_type, chunk_size)
    init_name = init_method_name(init, arrays=True)
    marginalize = _missing.check_missing(missing)
    if mesh is not None or process_local or _is_row_sharded(X):
        if marginalize:
            raise ValueError(_missing.UNSUPPORTED.format(what="The sharded fit (mesh=...)"))
        if init_name == "resp":
            raise ValueError("init responsibilities are taken by the single-device fit only; "
                             "the sharded fit (mesh=...) takes an init method or MixtureParams.")
        from .distributed import fit_sharded
        warn_if_narrowed(X, "fit")
        return fit_sharded(key, X, n_components, mesh=mesh, data_axis=data_axis,
                           restart_axis=restart_axis, process_local=process_local,
                           covariance_type=covariance_type, init_name=init_name, init=init,
                           n_init=n_init, max_iter=max_iter, tol=tol, reg_covar=reg_covar,
                           sample_weight=sample_weight, chunk_size=chunk_size,
                           initial_lower_bound=initial_lower_bound)
    centring = HostCentring(X)           # float64 host data: centred before float32
    # NumPy rows stay on the host until the program takes them (padded with NumPy: no eager
    # XLA programs for a new data shape)
    x = (_missing.check_data_missing(centring.data, host=True) if marginalize
         else check_data(centring.data, host=True))
    n, d = x.shape
    w = check_sample_weight(sample_weight, n, x.dtype, host=isinstance(x, np.ndarray))
    buckets = _missing.fit_buckets(x) if marginalize else None
    check_n_samples(w if buckets is None else _missing.informative_weight(x, w), n_components)
    warn_if_narrowed(X, "fit")           # valid input, computed in float32
    # under the user's vmap/jit (fit_many, a vmap over keys, ...): any traced operand
    traced_input = is_traced(*jax.tree_util.tree_leaves(
        (x, w, key, tol, reg_covar, initial_lower_bound,
         init if init_name in ("params", "resp") else None)))
    k_pad, masked = component_bucket(bucket_rows(n, None), n_components, d, traced_input)
    # small eager problems: every covariance type in the full layout, the type an operand (one
    # program); not under vmap/jit (the user's program is compiled anyway, and D² work per row
    # would be multiplied by the batch), nor with missing values (diagonal types need no
    # conditioning there)
    shared = (masked and d <= FULL_LAYOUT_MAX_FEATURES and buckets is None
              and not traced_input)
    program_type = "full" if shared else covariance_type
    init_params = None
    if init_name == "params":
        check_init_params(init, covariance_type, n_components, d, n_init)
        init_params = pad_components(centring.params(init).astype(x.dtype), k_pad)
        if shared:
            init_params = to_full_layout(init_params)
    if chunk_size is None:
        chunk_size = fit_chunk_size(n, n_components, d, traced_input)
    n_rows = bucket_rows(n, chunk_size)
    x, w = pad_to(x, w, n_rows)
    prev_bound = (None if initial_lower_bound is None
                  else as_operand(initial_lower_bound, x.dtype))
    n_live = np.int32(n_components) if masked else None
    type_code = np.int32(TYPE_CODES[covariance_type]) if shared else None
    counts, n_cap, iter_cap = None, n_init, max_iter
    if restarts_in_a_loop():
        counts = (np.int32(n_init), np.int32(max_iter))
        n_cap, iter_cap = _capacity(n_init, RESTART_CAPACITY), _capacity(max_iter, ITER_CAPACITY)
        if init_params is not None and init_params.weights.ndim == 2:
            init_params = jax.tree_util.tree_map(lambda a: jnp.concatenate(
                [a, jnp.broadcast_to(a[-1:], (n_cap - n_init,) + a.shape[1:])]), init_params)
    init_resp = None
    if init_name == "resp":
        check_init_resp(init, n, n_components, n_init)
        # one slot per restart up to a power of two (a restart loop never reaches past n_init):
        # not the loop's capacity of 16, whose (16, N, K) copy would cost memory at large N
        slots = n_cap if counts is None else _capacity(n_init, 1)
        init_resp = pad_resp(init, n_init, slots, n_rows, k_pad, x.dtype)
    program = functools.partial(_fit_program, n_components=k_pad, covariance_type=program_type,
                                init=init_name, n_init=n_cap, max_iter=iter_cap,
                                chunk_size=chunk_size, missing_buckets=buckets,
                                input_checked=not is_traced(x, w),
                                quick_compile=not traced_input and quick_compile(
                                    n_rows * k_pad * d, QUICK_COMPILE_ELEMENTS))
    res = without_reverse_mode(program, check_key(key), x, w, init_params,
                               as_operand(tol, x.dtype), as_operand(reg_covar, x.dtype),
                               prev_bound, n_live, counts, type_code, init_resp)
    traced = is_traced(*jax.tree_util.tree_leaves(res))
    if not traced:      # slice and reshape on the host: nothing to compile per K or n_init
        res = jax.device_get(res)

    def first(a, n):       # a capacity-sized output cut to its first n entries
        return a if a.shape[0] == n else a[:n]

    params = res.params
    if shared:
        params = from_full_layout(params, covariance_type)
    res = res._replace(params=centring.restore(live_components(params, n_components)),
                       lower_bounds=first(res.lower_bounds, max_iter),
                       restart_lower_bounds=first(res.restart_lower_bounds, n_init),
                       restart_status=first(res.restart_status, n_init))
    return res
