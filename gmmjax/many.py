"""``fit_many``: many independent mixtures in one compiled program (``vmap`` over datasets)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .compile_cache import cached_jit
from .em import FitResult
from .fit import fit
from .rows import bucket_rows
from .validation import check_data, check_sample_weight, float_dtype, warn_if_narrowed

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
    X, W = jax.device_put((X, W))
    init = fit_kwargs.pop("init", "kmeans")
    if isinstance(init, str) or np.ndim(init.weights) == 1:
        return jax.vmap(lambda k, x, w: fit(k, x, n_components, sample_weight=w, init=init,
                                            **fit_kwargs))(keys, X, W)
    if np.shape(init.weights)[0] != X.shape[0]:
        raise ValueError(f"init params with a leading axis must have one entry per dataset "
                         f"({X.shape[0]}); got weights of shape {np.shape(init.weights)}.")
    return jax.vmap(lambda k, x, w, p: fit(k, x, n_components, sample_weight=w, init=p,
                                           **fit_kwargs))(keys, X, W, init)
