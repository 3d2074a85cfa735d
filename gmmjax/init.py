"""On-device initialisation: k-means (Lloyd seeded by k-means++), k-means++, random, random_from_data.

Written once for every fit. All functions take rows ``x`` (N, D) already shifted near the origin
and non-negative row weights ``w`` (N,) where zero marks padding, and return a
:class:`MixtureParams` in the same frame plus ``ok``. Two keywords make the same code serve every
variant:

- ``rows``: how sums over rows are taken (:class:`gmmjax.rows.Rows`): on one device, or inside
  ``shard_map`` with ``psum`` over the data axis (``x`` is then this device's block of rows).
- ``n_live``: with K components of which only the first ``n_live`` (a traced count) are live,
  the live ones get exactly what a fit with ``n_live`` components and the same key gets (same
  draws, same number of k-means++ trials); the others get no responsibility.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from .em import params_from_stats
from .rows import LOCAL, Rows
from .stats import SuffStats, chunked_map, resp_statistics

INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data")
HIGHEST = lax.Precision.HIGHEST


def _sq_distances(x: jax.Array, centers: jax.Array) -> jax.Array:
    """(N, M) squared Euclidean distances via one GEMM, clamped at 0."""
    d = (jnp.sum(x * x, axis=1)[:, None] - 2 * jnp.matmul(x, centers.T, precision=HIGHEST)
         + jnp.sum(centers * centers, axis=1)[None])
    return jnp.maximum(d, 0.0)


def _live_mask(n_components: int, n_live) -> jax.Array | None:
    return None if n_live is None else jnp.arange(n_components) < n_live


def _draw(key: jax.Array, probs: jax.Array, rows: Rows, shape=()) -> jax.Array:
    """Global row indices drawn with replacement proportionally to non-negative ``probs``
    (this device's rows): the global cumulative sum is the local one plus the earlier devices'."""
    cum = jnp.cumsum(probs)
    u = jax.random.uniform(key, shape, probs.dtype) * rows.sum(cum[-1])
    count = rows.sum(jnp.searchsorted(cum + rows.before(cum[-1]), u, side="right"))
    return jnp.minimum(count, rows.sum(probs.shape[0]) - 1).astype(jnp.int32)


def _take(x: jax.Array, idx: jax.Array, rows: Rows) -> jax.Array:
    """Rows ``x[idx]`` for global row indices ``idx`` (...,): the owner contributes, the sum shares."""
    n_local = x.shape[0]
    local = idx - rows.offset(n_local)
    mine = (local >= 0) & (local < n_local)
    return rows.sum(jnp.where(mine[..., None], x[jnp.clip(local, 0, n_local - 1)], 0))


def _n_trials(n_clusters: int) -> int:
    return 2 + int(math.log(n_clusters))


def kmeans_plusplus(key: jax.Array, x: jax.Array, w: jax.Array, n_clusters: int, *,
                    rows: Rows = LOCAL, n_live=None) -> jax.Array:
    """Greedy k-means++ seeding (2 + ⌊ln K⌋ candidates per step, as sklearn). Returns global
    row indices (K,). With ``n_live``, only the first ``n_live`` are seeded (the rest are 0),
    with ``n_live``'s number of trials."""
    n_trials = _n_trials(n_clusters)
    valid = None
    if n_live is not None:    # the trial count of the live K, from a table (exact, no float log)
        live_trials = jnp.asarray([_n_trials(k) for k in range(1, n_clusters + 1)])
        valid = jnp.arange(n_trials) < live_trials[jnp.clip(n_live, 1, n_clusters) - 1]
    key, first_key = jax.random.split(key)
    first = _draw(first_key, w, rows)
    closest = _sq_distances(x, _take(x, first, rows)[None])[:, 0]

    def add_center(i, carry):
        idx, closest = carry
        probs = w * closest
        probs = jnp.where(rows.sum(jnp.sum(probs)) > 0, probs, w)   # all points coincide
        cand = _draw(jax.random.fold_in(key, i), probs, rows, (n_trials,))
        new_closest = jnp.minimum(closest[:, None], _sq_distances(x, _take(x, cand, rows)))
        potential = rows.sum(jnp.sum(w[:, None] * new_closest, axis=0))
        if valid is not None:
            potential = jnp.where(valid, potential, jnp.inf)
        best = jnp.argmin(potential)
        return idx.at[i].set(cand[best]), new_closest[:, best]

    idx = jnp.zeros((n_clusters,), jnp.int32).at[0].set(first)
    upper = n_clusters if n_live is None else n_live
    idx, _ = lax.fori_loop(1, upper, add_center, (idx, closest))
    return idx


def kmeans(key: jax.Array, x: jax.Array, w: jax.Array, n_clusters: int, *, max_iter: int = 300,
           tol=1e-4, chunk_size: int | None = None, rows: Rows = LOCAL,
           n_live=None) -> tuple[jax.Array, jax.Array]:
    """Weighted Lloyd iterations from k-means++ seeds. Returns (centers (K, D), labels (N,)).

    Stops when the total squared centre shift is ≤ tol · mean feature variance (sklearn's rule)
    or after ``max_iter`` iterations. An empty cluster keeps its previous centre. With
    ``n_live`` only the first ``n_live`` centres take rows.
    """
    mask = _live_mask(n_clusters, n_live)
    centers = _take(x, kmeans_plusplus(key, x, w, n_clusters, rows=rows, n_live=n_live), rows)
    wsum = rows.sum(jnp.sum(w))
    mean = rows.sum(jnp.sum(w[:, None] * x, axis=0)) / wsum
    tol_abs = tol * jnp.mean(rows.sum(jnp.sum(w[:, None] * (x - mean) ** 2, axis=0)) / wsum)

    def assign(xc, c):
        d = _sq_distances(xc, c)
        return jnp.argmin(d if mask is None else jnp.where(mask[None], d, jnp.inf), axis=1)

    def lloyd(carry):
        c, _, it = carry

        def sums(xc, wc):
            onehot = jax.nn.one_hot(assign(xc, c), n_clusters, dtype=x.dtype) * wc[:, None]
            return jnp.matmul(onehot.T, xc, precision=HIGHEST), jnp.sum(onehot, axis=0)

        total, counts = rows.chunked_sum(sums, x, w, chunk_size)
        new = jnp.where(counts[:, None] > 0, total / jnp.maximum(counts, 1e-30)[:, None], c)
        return new, jnp.sum((new - c) ** 2), it + 1     # masked centres never move

    def cond(carry):
        _, shift, it = carry
        return (it < max_iter) & (shift > tol_abs)

    centers, _, _ = lax.while_loop(cond, lloyd, (centers, jnp.array(jnp.inf, x.dtype), 0))
    labels = chunked_map(lambda xc: assign(xc, centers), x, chunk_size)
    return centers, labels


def _uniform_resp(key, n: int, n_components: int, n_live, dtype) -> jax.Array:
    """(N, K) uniform draws; with ``n_live`` the first n_live columns hold exactly the draws of
    an (N, n_live) array (threefry draws depend on the flat index only), the rest 0."""
    if n_live is None:
        return jax.random.uniform(key, (n, n_components), dtype)
    flat = jax.random.uniform(key, (n * n_components,), dtype)
    cols = jnp.arange(n_components)
    live = cols < n_live
    idx = jnp.arange(n)[:, None] * n_live + jnp.where(live, cols, 0)[None]
    return jnp.where(live[None], flat[idx], 0.0)


def initial_responsibilities(key: jax.Array, x: jax.Array, w: jax.Array, n_components: int,
                             method: str, chunk_size: int | None = None, *, rows: Rows = LOCAL,
                             n_live=None, noise=None) -> jax.Array:
    """(N, K) initial responsibilities as sklearn builds them for each ``init_params`` method.

    ``noise``: this device's rows of the method's random array ("random": uniform (N, K);
    "random_from_data": Gumbel (N,)) when drawn outside on the global row count (the sharded
    fit); by default drawn here from ``key``. Method "resp": ``noise`` is the (N, K)
    responsibilities themselves (given by the caller, e.g. scikit-learn's own initialisation).
    """
    n, k = x.shape[0], n_components
    mask = _live_mask(k, n_live)
    if method == "resp":                  # given: (N, K) responsibilities, passed as ``noise``
        return noise
    if method == "kmeans":
        _, labels = kmeans(key, x, w, k, chunk_size=chunk_size, rows=rows, n_live=n_live)
        return jax.nn.one_hot(labels, k, dtype=x.dtype)
    if method == "random":
        resp = _uniform_resp(key, n, k, n_live, x.dtype) if noise is None else noise
        return resp / jnp.sum(resp, axis=1, keepdims=True)
    if method == "random_from_data":
        # jax.random.choice(replace=False, p=w/Σw): Gumbel top-k, merged across devices
        if noise is None:
            noise = jax.random.gumbel(key, (n,), x.dtype)
        g = noise + jnp.log(w / rows.sum(jnp.sum(w)))
        vals, local = lax.top_k(g, min(k, n))
        idx = rows.gather(local + rows.offset(n))[lax.top_k(rows.gather(vals), k)[1]]
    elif method == "k-means++":
        idx = kmeans_plusplus(key, x, w, k, rows=rows, n_live=n_live)
    else:
        raise ValueError(f"Unknown init {method!r}; expected one of {list(INIT_METHODS)} "
                         "or a MixtureParams.")
    hot = (rows.offset(n) + jnp.arange(n))[:, None] == idx[None, :]
    if mask is not None:
        hot = hot & mask[None]
    return hot.astype(x.dtype)


def resp_stats(x: jax.Array, w: jax.Array, resp: jax.Array, covariance_type: str,
               chunk_size: int | None = None, rows: Rows = LOCAL
               ) -> tuple[SuffStats, jax.Array]:
    """Statistics of given responsibilities (N, K), centred on their weighted means, and those
    means (K, D): the statistics pass of every initialisation (EM and variational)."""
    r = resp * w[:, None]
    nk = rows.sum(jnp.sum(r, axis=0))
    centers = (rows.sum(jnp.matmul(r.T, x, precision=HIGHEST))
               / (nk + 10 * jnp.finfo(x.dtype).eps)[:, None])
    return rows.sum(resp_statistics(x, w, resp, centers, covariance_type, chunk_size)), centers


def initial_stats(key: jax.Array, x: jax.Array, w: jax.Array, n_components: int,
                  covariance_type: str, method: str = "kmeans", chunk_size: int | None = None, *,
                  rows: Rows = LOCAL, n_live=None, noise=None) -> tuple[SuffStats, jax.Array]:
    """The statistics of one restart's initial responsibilities and their centres (K, D): what
    the initialisation's M-step (:func:`initialize`, or pass 0 of :func:`gmmjax.em.run_em`)
    turns into parameters."""
    resp = initial_responsibilities(key, x, w, n_components, method, chunk_size, rows=rows,
                                    n_live=n_live, noise=noise)
    return resp_stats(x, w, resp, covariance_type, chunk_size, rows)


def initialize(key: jax.Array, x: jax.Array, w: jax.Array, n_components: int, covariance_type: str,
               method: str = "kmeans", reg_covar=1e-6, chunk_size: int | None = None, *,
               rows: Rows = LOCAL, n_live=None, noise=None, type_code=None):
    """Initial MixtureParams for one restart (sklearn's ``_initialize``). Returns (params, ok).

    For "random_from_data" and "k-means++" the components start as point masses on the chosen rows
    (covariance ``reg_covar``) as in sklearn; unlike sklearn the weights are normalised to sum to 1
    and the tied covariance is also ``reg_covar`` (sklearn's tied formula assumes full rows).
    ``rows``, ``n_live``, ``noise``: see the module docstring and :func:`initial_responsibilities`;
    ``type_code``: see :func:`gmmjax.em.params_from_stats`.
    """
    stats, centers = initial_stats(key, x, w, n_components, covariance_type, method, chunk_size,
                                   rows=rows, n_live=n_live, noise=noise)
    return params_from_stats(stats, centers, covariance_type, reg_covar, jnp.zeros_like(x[0]),
                             _live_mask(n_components, n_live), type_code=type_code)
