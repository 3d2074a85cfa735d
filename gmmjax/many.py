"""``fit_many``: many independent mixtures in one compiled program (``vmap`` over datasets)."""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np

from .compile_cache import cached_jit
from .em import FitResult
from .fit import fit
from .rows import bucket_rows
from .validation import (as_operand, check_data, check_em_options, check_sample_weight,
                         float_dtype, init_method_name, warn_if_narrowed)

__all__ = ["fit_many", "pad_datasets"]


def pad_datasets(datasets, sample_weights=None):
    """Stack ragged datasets into (B, N_max, D) with (B, N_max) weights; padding rows weigh 0.

    ``datasets``: a sequence of (n_b, D) arrays (or one (B, N, D) array). ``N_max`` is bucketed
    (like :func:`gmmjax.fit`) so nearby sizes share one compiled program. Values are checked on
    the host (the fits run under ``vmap``, where they cannot be).

    Anything computed on a padded ``X[b]`` must take the weights ``W[b]`` too: ``gmmjax.bic(p,
    X[b])`` without them counts the padding rows as data (a wrong log-likelihood and n); use
    ``gmmjax.bic(p, X[b], sample_weight=W[b])``, or score the unpadded ``datasets[b]``.
    """
    return jax.device_put(_padded_on_host(datasets, sample_weights))   # no XLA op to compile


# fit's options that shape the program (static) and those it takes as operands (traced)
_STATIC_OPTIONS = ("covariance_type", "n_init", "max_iter", "chunk_size", "missing")
_OPERAND_OPTIONS = ("tol", "reg_covar", "initial_lower_bound")
_FIT_DEFAULTS = {name: inspect.signature(fit).parameters[name].default
                 for name in _STATIC_OPTIONS + _OPERAND_OPTIONS}


@functools.partial(cached_jit, static_argnames=("n_components", "init_method", "init_axis")
                   + _STATIC_OPTIONS)
def _many_program(keys, X, W, init, operands, *, n_components, init_method, init_axis,
                  covariance_type, n_init, max_iter, chunk_size, missing):
    """``vmap`` of :func:`gmmjax.fit` over datasets (keys (B,), X (B, N, D), W (B, N)) as one
    program, cached on disk like the single fit's: ``init`` MixtureParams (shared,
    ``init_axis`` None, or per dataset, 0) or None for ``init_method``; ``operands`` the traced
    options (tol, reg_covar, initial_lower_bound)."""
    def one(key, x, w, params):
        return fit(key, x, n_components, sample_weight=w,
                   init=init_method if params is None else params,
                   covariance_type=covariance_type, n_init=n_init, max_iter=max_iter,
                   chunk_size=chunk_size, missing=missing, **operands)
    return jax.vmap(one, in_axes=(0, 0, 0, init_axis))(keys, X, W, init)


@cached_jit
def _dataset_keys(key, indices):
    """(B,) keys ``fold_in(key, b)`` (one small program per B, cached on disk)."""
    return jax.vmap(jax.random.fold_in, (None, 0))(key, indices)


def _padded_on_host(datasets, sample_weights=None):
    """:func:`pad_datasets` as NumPy arrays (X (B, N_max, D), W (B, N_max))."""
    if isinstance(datasets, (np.ndarray, jax.Array)):
        if np.ndim(datasets) != 3:
            raise ValueError(f"datasets as one array must have shape (B, n_samples, n_features); "
                             f"got {np.shape(datasets)}.")
        datasets = list(datasets)
    datasets = list(datasets)
    if not datasets:
        raise ValueError("datasets is empty; pass at least one (n_samples, n_features) array.")
    arrays = [x if isinstance(x, jax.core.Tracer) else np.asarray(x) for x in datasets]
    if any(isinstance(x, jax.core.Tracer) for x in arrays):
        arrays = [check_data(x, name=f"datasets[{b}]") for b, x in enumerate(arrays)]
    for b, x in enumerate(arrays):                 # shape/dtype errors, cheaply, on the host
        if np.ndim(x) != 2 or np.shape(x)[1] < 1 or not np.issubdtype(np.asarray(x).dtype,
                                                                        np.number):
            check_data(x, name=f"datasets[{b}]")
    dims = {x.shape[1] for x in arrays}
    if len(dims) != 1:
        raise ValueError(f"all datasets must have the same number of features; got "
                         f"{[x.shape[1] for x in arrays]}.")
    dtype = np.dtype(jnp.result_type(*[float_dtype(x) for x in arrays]))
    if sample_weights is None:
        sample_weights = [None] * len(arrays)
    if len(sample_weights) != len(arrays):
        raise ValueError(f"sample_weights has {len(sample_weights)} entries for {len(arrays)} "
                         "datasets.")
    n_max = bucket_rows(max(x.shape[0] for x in arrays), None)
    d = dims.pop()
    # One host buffer and one transfer (per-dataset device updates cost ~ms each at B = 1000).
    X = np.zeros((len(arrays), n_max, d), dtype)
    W = np.zeros((len(arrays), n_max), dtype)
    for b, (x, w) in enumerate(zip(arrays, sample_weights)):
        X[b, :x.shape[0]] = x
        if w is None:
            W[b, :x.shape[0]] = 1.0
        elif np.shape(w) != (x.shape[0],):
            check_sample_weight(w, x.shape[0], dtype)          # raises the shape message
        else:
            W[b, :x.shape[0]] = w
    for b in np.flatnonzero(~np.isfinite(X).all(axis=(1, 2))):
        check_data(arrays[b], name=f"datasets[{b}]")                     # raises the message
    bad_w = ~np.isfinite(W).all(axis=1) | (W < 0).any(axis=1) | ~(W.sum(axis=1) > 0)
    for b in np.flatnonzero(bad_w):
        check_sample_weight(W[b, :arrays[b].shape[0]], arrays[b].shape[0], dtype)
    return X, W


def fit_many(key: jax.Array, datasets, n_components: int, *, sample_weights=None,
             **fit_kwargs) -> FitResult:
    """Fit one mixture per dataset, all in one ``jax.vmap`` ped :func:`gmmjax.fit` program.

    Ragged datasets are padded to a common row count with zero-weight rows (which change
    nothing), so ``fit_many(key, datasets, K)`` equals
    ``[gmmjax.fit(jax.random.fold_in(key, b), datasets[b], K) for b in range(B)]``.

    Args:
      key: PRNG key; dataset b uses ``jax.random.fold_in(key, b)``.
      datasets: sequence of (n_b, D) arrays with the same D (or one (B, N, D) array).
      n_components: K, shared by all fits.
      sample_weights: optional sequence of (n_b,) weights (None entries mean ones).
      **fit_kwargs: any keyword of :func:`gmmjax.fit` (covariance_type, init, n_init, max_iter,
        tol, reg_covar, chunk_size). ``init`` as MixtureParams is shared, or carries a leading (B,) axis (then
        (B, n_init, ...) for per-restart inits).

    dtype: JAX's rule, as :func:`gmmjax.fit` (float64 datasets give float64 results with x64
    enabled; with x64 off they are computed in float32, with one UserWarning per process).

    Returns a :class:`FitResult` whose arrays have a leading (B,) axis; the fit of dataset b is
    ``jax.tree_util.tree_map(lambda a: a[b], result)``. Criteria and scores of fit b belong to
    the unpadded ``datasets[b]`` (``gmmjax.bic(params_b, datasets[b])``); on the padded arrays
    of :func:`pad_datasets` pass their weights (``sample_weight=W[b]``), or the padding rows
    count as data and the BIC is wrong.

    Example::

        res = gmmjax.fit_many(jax.random.key(0), [X1, X2, X3], 3, covariance_type="diag")
        res.params.means.shape   # (3, 3, D)
    """
    for bad in ("sample_weight", "mesh", "process_local"):
        if bad in fit_kwargs:
            raise TypeError(f"fit_many does not take {bad!r}" +
                            ("; pass sample_weights (one per dataset)." if bad == "sample_weight"
                             else "."))
    if not isinstance(datasets, (np.ndarray, jax.Array)):
        datasets = list(datasets)
    X, W = _padded_on_host(datasets, sample_weights)
    counts = np.sum(W > 0, axis=1)
    if counts.min() < n_components:
        b = int(np.argmin(counts))
        raise ValueError(f"Expected n_samples >= n_components but got n_components = "
                         f"{n_components}, n_samples = {int(counts[b])} (datasets[{b}])")
    for x in datasets[:1] if isinstance(datasets, (np.ndarray, jax.Array)) else datasets:
        warn_if_narrowed(x, "fit_many")      # valid input, computed in float32
    keys = _dataset_keys(key, np.arange(X.shape[0], dtype=np.uint32))
    init = fit_kwargs.pop("init", "kmeans")
    unknown = set(fit_kwargs) - set(_STATIC_OPTIONS) - set(_OPERAND_OPTIONS)
    if unknown:
        raise TypeError(f"fit_many got unexpected keyword arguments {sorted(unknown)}.")
    options = {**_FIT_DEFAULTS, **fit_kwargs}
    # the host checks fit makes on concrete options (inside the program they are traced)
    _, options["n_init"], options["max_iter"], options["chunk_size"] = check_em_options(
        n_components, options["n_init"], options["max_iter"], options["tol"],
        options["reg_covar"], options["covariance_type"], options["chunk_size"])
    init_method = init_method_name(init)
    init_axis = None
    if init_method == "params":
        init_axis = None if np.ndim(init.weights) == 1 else 0
        if init_axis == 0 and np.shape(init.weights)[0] != X.shape[0]:
            raise ValueError(f"init params with a leading axis must have one entry per dataset "
                             f"({X.shape[0]}); got weights of shape {np.shape(init.weights)}.")
    operands = {name: None if options[name] is None else as_operand(options[name], X.dtype)
                for name in _OPERAND_OPTIONS}
    return _many_program(keys, X, W, init if init_method == "params" else None, operands,
                         n_components=n_components,
                         init_method=None if init_method == "params" else init_method,
                         init_axis=init_axis,
                         **{name: options[name] for name in _STATIC_OPTIONS})
