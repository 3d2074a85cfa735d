"""``fit_many``: many independent mixtures in one compiled program (``vmap`` over datasets)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .em import FitResult
from .fit import bucket_rows, fit
from .validation import check_data, check_n_samples, check_sample_weight

__all__ = ["fit_many", "pad_datasets"]


def pad_datasets(datasets, sample_weights=None):
    """Stack ragged datasets into (B, N_max, D) with (B, N_max) weights; padding rows weigh 0.

    ``datasets``: a sequence of (n_b, D) arrays (or one (B, N, D) array). ``N_max`` is bucketed
    (like :func:`gmmjax.fit`) so nearby sizes share one compiled program. Values are checked on
    the host (the fits run under ``vmap``, where they cannot be).
    """
    if isinstance(datasets, (np.ndarray, jax.Array)):
        if np.ndim(datasets) != 3:
            raise ValueError(f"datasets as one array must have shape (B, n_samples, n_features); "
                             f"got {np.shape(datasets)}.")
        datasets = list(datasets)
    datasets = list(datasets)
    if not datasets:
        raise ValueError("datasets is empty; pass at least one (n_samples, n_features) array.")
    xs = [check_data(x, name=f"datasets[{b}]") for b, x in enumerate(datasets)]
    dims = {x.shape[1] for x in xs}
    if len(dims) != 1:
        raise ValueError(f"all datasets must have the same number of features; got "
                         f"{[x.shape[1] for x in xs]}.")
    dtype = jnp.result_type(*[x.dtype for x in xs])
    if sample_weights is None:
        sample_weights = [None] * len(xs)
    if len(sample_weights) != len(xs):
        raise ValueError(f"sample_weights has {len(sample_weights)} entries for {len(xs)} "
                         "datasets.")
    ws = [check_sample_weight(w, x.shape[0], dtype) for x, w in zip(xs, sample_weights)]
    n_max = bucket_rows(max(x.shape[0] for x in xs), None)
    d = dims.pop()
    X = jnp.stack([jnp.zeros((n_max, d), dtype).at[:x.shape[0]].set(x.astype(dtype)) for x in xs])
    W = jnp.stack([jnp.zeros((n_max,), dtype).at[:w.shape[0]].set(w) for w in ws])
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

    Returns a :class:`FitResult` whose arrays have a leading (B,) axis; the fit of dataset b is
    ``jax.tree_util.tree_map(lambda a: a[b], result)``.

    Example::

        res = gmmjax.fit_many(jax.random.key(0), [X1, X2, X3], 3, covariance_type="diag")
        res.params.means.shape   # (3, 3, D)
    """
    for bad in ("sample_weight", "mesh", "process_local"):
        if bad in fit_kwargs:
            raise TypeError(f"fit_many does not take {bad!r}" +
                            ("; pass sample_weights (one per dataset)." if bad == "sample_weight"
                             else "."))
    X, W = pad_datasets(datasets, sample_weights)
    for b in range(X.shape[0]):
        check_n_samples(W[b], n_components)
    keys = jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(X.shape[0]))
    init = fit_kwargs.pop("init", "kmeans")
    if isinstance(init, str) or np.ndim(init.weights) == 1:
        return jax.vmap(lambda k, x, w: fit(k, x, n_components, sample_weight=w, init=init,
                                            **fit_kwargs))(keys, X, W)
    if np.shape(init.weights)[0] != X.shape[0]:
        raise ValueError(f"init params with a leading axis must have one entry per dataset "
                         f"({X.shape[0]}); got weights of shape {np.shape(init.weights)}.")
    return jax.vmap(lambda k, x, w, p: fit(k, x, n_components, sample_weight=w, init=p,
                                           **fit_kwargs))(keys, X, W, init)
