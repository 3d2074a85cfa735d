"""On-device initialisation: k-means (Lloyd seeded by k-means++), k-means++, random, random_from_data.

All functions take rows ``x`` (N, D) already shifted near the origin, non-negative row weights ``w``
(N,) where zero marks padding, and return a :class:`MixtureParams` in the same frame plus ``ok``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from .em import params_from_stats
from .stats import chunked_map, chunked_sum, resp_statistics

INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data")
HIGHEST = jax.lax.Precision.HIGHEST


def _sq_distances(x: jax.Array, centers: jax.Array) -> jax.Array:
    """(N, M) squared Euclidean distances via one GEMM, clamped at 0."""
    d = (jnp.sum(x * x, axis=1)[:, None] - 2 * jnp.matmul(x, centers.T, precision=HIGHEST)
         + jnp.sum(centers * centers, axis=1)[None])
    return jnp.maximum(d, 0.0)


def _draw(key: jax.Array, probs: jax.Array, shape=()) -> jax.Array:
    """Indices drawn with replacement proportionally to non-negative ``probs`` (N,)."""
    cum = jnp.cumsum(probs)
    u = jax.random.uniform(key, shape, probs.dtype) * cum[-1]
    return jnp.minimum(jnp.searchsorted(cum, u, side="right"), probs.shape[0] - 1)


def kmeans_plusplus(key: jax.Array, x: jax.Array, w: jax.Array, n_clusters: int) -> jax.Array:
    """Greedy k-means++ seeding (2 + ⌊ln K⌋ candidates per step, as sklearn). Returns row indices (K,)."""
    n_trials = 2 + int(math.log(n_clusters))
    key, first_key = jax.random.split(key)
    first = _draw(first_key, w)
    closest = _sq_distances(x, x[first][None])[:, 0]

    def add_center(i, carry):
        idx, closest = carry
        probs = w * closest
        probs = jnp.where(jnp.sum(probs) > 0, probs, w)   # all points coincide: fall back to w
        cand = _draw(jax.random.fold_in(key, i), probs, (n_trials,))
        new_closest = jnp.minimum(closest[:, None], _sq_distances(x, x[cand]))
        best = jnp.argmin(jnp.sum(w[:, None] * new_closest, axis=0))
        return idx.at[i].set(cand[best]), new_closest[:, best]

    idx = jnp.zeros((n_clusters,), jnp.int32).at[0].set(first)
    idx, _ = jax.lax.fori_loop(1, n_clusters, add_center, (idx, closest))
    return idx


def kmeans(key: jax.Array, x: jax.Array, w: jax.Array, n_clusters: int, *, max_iter: int = 300,
           tol=1e-4, chunk_size: int | None = None) -> tuple[jax.Array, jax.Array]:
    """Weighted Lloyd iterations from k-means++ seeds. Returns (centers (K, D), labels (N,)).

    Stops when the total squared centre shift is ≤ tol · mean feature variance (sklearn's rule)
    or after ``max_iter`` iterations. An empty cluster keeps its previous centre.
    """
    centers = x[kmeans_plusplus(key, x, w, n_clusters)]
    wsum = jnp.sum(w)
    mean = jnp.sum(w[:, None] * x, axis=0) / wsum
    tol_abs = tol * jnp.mean(jnp.sum(w[:, None] * (x - mean) ** 2, axis=0) / wsum)

    def assign(xc, c):
        return jnp.argmin(_sq_distances(xc, c), axis=1)

    def lloyd(carry):
        c, _, it = carry

        def sums(xc, wc):
            onehot = jax.nn.one_hot(assign(xc, c), n_clusters, dtype=x.dtype) * wc[:, None]
            return jnp.matmul(onehot.T, xc, precision=HIGHEST), jnp.sum(onehot, axis=0)

        total, counts = chunked_sum(sums, x, w, chunk_size)
        new = jnp.where(counts[:, None] > 0, total / jnp.maximum(counts, 1e-30)[:, None], c)
        return new, jnp.sum((new - c) ** 2), it + 1

    def cond(carry):
        _, shift, it = carry
        return (it < max_iter) & (shift > tol_abs)

    centers, _, _ = jax.lax.while_loop(cond, lloyd, (centers, jnp.array(jnp.inf, x.dtype), 0))
    labels = chunked_map(lambda xc: assign(xc, centers), x, chunk_size)
    return centers, labels


def _params_from_resp(x, w, resp, covariance_type, reg_covar, chunk_size):
    """Initial parameters from responsibilities (the M-step of sklearn's ``_initialize``)."""
    r = resp * w[:, None]
    nk = jnp.sum(r, axis=0)
    centers = jnp.matmul(r.T, x, precision=HIGHEST) / (nk + 10 * jnp.finfo(x.dtype).eps)[:, None]
    stats = resp_statistics(x, w, resp, centers, covariance_type, chunk_size)
    return params_from_stats(stats, centers, covariance_type, reg_covar, jnp.zeros_like(x[0]))


def initial_responsibilities(key: jax.Array, x: jax.Array, w: jax.Array, n_components: int,
                             method: str, chunk_size: int | None = None) -> jax.Array:
    """(N, K) initial responsibilities as sklearn builds them for each ``init_params`` method."""
    n = x.shape[0]
    if method == "kmeans":
        _, labels = kmeans(key, x, w, n_components, chunk_size=chunk_size)
        return jax.nn.one_hot(labels, n_components, dtype=x.dtype)
    if method == "random":
        resp = jax.random.uniform(key, (n, n_components), x.dtype)
        return resp / jnp.sum(resp, axis=1, keepdims=True)
    if method == "random_from_data":
        idx = jax.random.choice(key, n, (n_components,), replace=False, p=w / jnp.sum(w))
    elif method == "k-means++":
        idx = kmeans_plusplus(key, x, w, n_components)
    else:
        raise ValueError(f"Unknown init {method!r}; expected one of {list(INIT_METHODS)} "
                         "or a MixtureParams.")
    return jnp.zeros((n, n_components), x.dtype).at[idx, jnp.arange(n_components)].set(1.0)


def initialize(key: jax.Array, x: jax.Array, w: jax.Array, n_components: int, covariance_type: str,
               method: str = "kmeans", reg_covar=1e-6, chunk_size: int | None = None):
    """Initial MixtureParams for one restart. Returns (params, ok).

    For "random_from_data" and "k-means++" the components start as point masses on the chosen rows
    (covariance ``reg_covar``) as in sklearn; unlike sklearn the weights are normalised to sum to 1
    and the tied covariance is also ``reg_covar`` (sklearn's tied formula assumes full rows).
    """
    resp = initial_responsibilities(key, x, w, n_components, method, chunk_size)
    return _params_from_resp(x, w, resp, covariance_type, reg_covar, chunk_size)
