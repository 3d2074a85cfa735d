"""Sufficient statistics of (weighted, padded) rows: the one hot kernel of EM.

Rows are processed in chunks with ``lax.scan`` so memory is O(chunk·K·D + K·D²), never N·K·D.
Rows with zero weight are padding: they contribute nothing and can never produce NaN.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from .covariance import (LOG_2PI, TYPE_CODES, UNROLLED_SCATTER_D, array_namespace,
                         centred_rows_minor,
                         get_covariance_model)
from .params import MixtureParams, from_full_layout


class SuffStats(NamedTuple):
    """Weighted statistics, centred on the components' current means (``centers``).

    nk (K,) Σ w r; sx (K, D) Σ w r (x − c); scatter: type-shaped Σ w r (x − c)(x − c)ᵀ;
    loglik: Σ w log p(x); weight: Σ w.
    """

    nk: jax.Array
    sx: jax.Array
    scatter: jax.Array
    loglik: jax.Array
    weight: jax.Array


def component_log_prob_rows_minor(params: MixtureParams, x: jax.Array, shift=None
                                  ) -> jax.Array:
    """(K, N) log N(x | μ_k, Σ_k), rows minor (the layout the distances are computed in).
    ``shift`` (D,) is subtracted from x and the means first."""
    model = get_covariance_model(params.covariance_type)
    means = params.means
    if shift is not None:
        x = x - shift
        means = means - shift
    n_features = x.shape[-1]
    return (-0.5 * (n_features * LOG_2PI + model.distances(x, means, params.precisions_cholesky))
            + model.log_det(params.precisions_cholesky, n_features)[:, None])


def component_log_prob(params: MixtureParams, x: jax.Array, shift=None) -> jax.Array:
    """(N, K) log N(x | μ_k, Σ_k). ``shift`` (D,) is subtracted from x and the means first."""
    return component_log_prob_rows_minor(params, x, shift).T


def weighted_log_prob(params: MixtureParams, x: jax.Array, shift=None) -> jax.Array:
    """(N, K) log π_k + log N(x | μ_k, Σ_k)."""
    return component_log_prob(params, x, shift) + jnp.log(params.weights)


def log_resp_and_norm(wlp: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Log responsibilities (N, K) and log-sum-exp per row (N,) from weighted log probs."""
    norm = logsumexp(wlp, axis=1)
    return wlp - norm[:, None], norm


@jax.custom_jvp
def weighted_log_resp_and_norm(component_lp: jax.Array, weights: jax.Array):
    """:func:`log_resp_and_norm` of ``component_lp + log(weights)`` (log N_k(x) (N, K), π (K,))
    with a derivative that stays finite at a weight of exactly 0: ∂ log p(x)/∂π_k = N_k(x)/p(x)
    (through log π_k = −inf, autodiff would form 0·∞ = NaN). Forward values are unchanged."""
    return log_resp_and_norm(component_lp + jnp.log(weights))


@weighted_log_resp_and_norm.defjvp
def _weighted_log_resp_and_norm_jvp(primals, tangents):
    component_lp, weights = primals
    d_lp, d_weights = tangents
    log_resp, norm = weighted_log_resp_and_norm(component_lp, weights)
    ratio = jnp.exp(component_lp - norm[:, None])          # N_k / p: finite where π_k = 0
    d_norm = jnp.sum(jnp.exp(log_resp) * d_lp + ratio * d_weights, axis=1)
    # log r_k = log π_k + ...: its own weight enters as dπ_k/π_k; for π_k = 0 (r_k = 0 exactly)
    # that term is left out (the rest of the derivative, and every other r_j's, stay exact)
    live = weights > 0
    inverse = jnp.where(live, 1.0 / jnp.where(live, weights, 1.0), 0.0)
    d_log_resp = d_lp + d_weights * inverse - d_norm[:, None]
    return (log_resp, norm), (d_log_resp, d_norm)


def mixture_log_resp_and_norm(params: MixtureParams, x: jax.Array, shift=None):
    """(log responsibilities (N, K), log density (N,)) of rows ``x`` under ``params`` (``shift``
    as in :func:`component_log_prob`); differentiable at zero weights
    (:func:`weighted_log_resp_and_norm`)."""
    return weighted_log_resp_and_norm(component_log_prob(params, x, shift), params.weights)


def weighted_log_prob_rows_minor(params: MixtureParams, x: jax.Array, shift=None) -> jax.Array:
    """(K, N) log π_k + log N(x | μ_k, Σ_k), rows minor."""
    return component_log_prob_rows_minor(params, x, shift) + jnp.log(params.weights)[:, None]


def weighted_resp_stats(resp_t: jax.Array, loglik: jax.Array, x: jax.Array, w: jax.Array,
                        centers: jax.Array, covariance_type: str) -> SuffStats:
    """Statistics of one chunk from its weighted responsibilities ``resp_t`` (K, C) (already
    times the row weights) and Σ w log p(x): every statistics pass ends here. ``x`` (C, D) and
    ``centers`` (K, D) share a frame."""
    model = get_covariance_model(covariance_type)
    nk = jnp.sum(resp_t, axis=1)
    return SuffStats(nk, first_moment(x, resp_t, centers, nk),
                     model.scatter_rows_minor(x, resp_t, centers), loglik, jnp.sum(w))


def first_moment(x: jax.Array, resp_t: jax.Array, centers: jax.Array, nk: jax.Array
                 ) -> jax.Array:
    """(K, D) Σ_n r (x − c) for rows ``x`` (C, D), responsibilities ``resp_t`` (K, C) and their
    sums ``nk`` (K,). One (K, C)·(C, D) GEMM, except for tiny D (≤ UNROLLED_SCATTER_D), where
    such GEMMs run far below memory speed on CPU (under vmap: 1,000 batched (2×400)·(400×2)
    products took ~1.6 ms); there each entry is a fused row reduction of r·(x − c)."""
    if x.shape[-1] <= UNROLLED_SCATTER_D:
        diff = centred_rows_minor(x, centers)                                # (K, D, C)
        return jnp.stack([jnp.sum(resp_t * diff[:, e], axis=-1) for e in range(x.shape[-1])],
                         axis=-1)
    return jnp.matmul(resp_t, x, precision=jax.lax.Precision.HIGHEST) - nk[:, None] * centers


def rows_minor_stats(wlp_t: jax.Array, x: jax.Array, w: jax.Array, centers: jax.Array,
                     covariance_type: str) -> tuple[SuffStats, jax.Array]:
    """Statistics of one chunk from its weighted log probs given rows minor, ``wlp_t`` (K, C)
    (any model: EM or variational), and its log responsibilities (K, C).

    Rows minor from the distances to the statistics: the log-sum-exp over components runs
    across row vectors and n_k sums along rows, with no transposes (a (C, K) layout reduces
    over a short minor axis instead). Zero-weight rows are inert."""
    # the log-sum-exp's exponentials are the unnormalised responsibilities: one exp per entry
    top = jax.lax.stop_gradient(jnp.max(wlp_t, axis=0))
    top = jnp.where(jnp.isfinite(top), top, 0.0)          # all −inf: norm −inf, as logsumexp
    scaled = jnp.exp(wlp_t - top[None])
    total = jnp.sum(scaled, axis=0)
    norm = jnp.log(total) + top
    log_resp_t = wlp_t - norm[None]
    live = w > 0
    resp_t = jnp.where(live[None], scaled / total[None], 0.0) * w[None]
    loglik = jnp.sum(jnp.where(live, norm * w, 0.0))
    return weighted_resp_stats(resp_t, loglik, x, w, centers, covariance_type), log_resp_t


def chunk_stats(params: MixtureParams, x: jax.Array, w: jax.Array, shift: jax.Array) -> SuffStats:
    """EM statistics of one chunk (x (C, D), w (C,)) under ``params`` (:func:`rows_minor_stats`)."""
    return rows_minor_stats(weighted_log_prob_rows_minor(params, x, shift), x - shift, w,
                            params.means - shift, params.covariance_type)[0]


def pad_rows_to(a, n_rows: int):
    """``a`` with zero rows appended up to ``n_rows`` rows; NumPy input is padded with NumPy (host
    arrays: no eager XLA program per shape), anything else with jax.numpy."""
    extra = n_rows - a.shape[0]
    if extra == 0:
        return a
    xp = array_namespace(a)
    return xp.concatenate([a, xp.zeros((extra,) + a.shape[1:], a.dtype)])


def pad_rows(x: jax.Array, w: jax.Array, multiple: int) -> tuple[jax.Array, jax.Array]:
    """Pad rows to a multiple of ``multiple`` with zero rows of zero weight."""
    n_rows = x.shape[0] + (-x.shape[0]) % multiple
    return pad_rows_to(x, n_rows), pad_rows_to(w, n_rows)


def transposed_chunks(x: jax.Array, chunk_size: int) -> jax.Array:
    """(n_chunks, D, chunk_size): rows ``x`` (N, D) padded with zero rows to whole chunks, each
    chunk transposed (rows minor). The operand of chunk kernels that read x rows minor (see
    :attr:`~gmmjax.covariance.CovarianceModel.rows_minor_chunks`); the EM core builds it once
    per restart, outside its loop."""
    xp = pad_rows(x, jnp.zeros(x.shape[:1], x.dtype), chunk_size)[0]
    return jnp.swapaxes(xp.reshape((-1, chunk_size) + x.shape[1:]), 1, 2)


def rows_minor_operand(covariance_type: str, x: jax.Array, chunk_size: int | None
                       ) -> jax.Array | None:
    """:func:`transposed_chunks` of x when it is processed in chunks and ``covariance_type``'s
    chunk kernels read it rows minor; else None (chunks are sliced from x as it is)."""
    if (chunk_size is None or chunk_size >= x.shape[0]
            or not get_covariance_model(covariance_type).rows_minor_chunks):
        return None
    return transposed_chunks(x, chunk_size)


def chunked_sum(fn: Callable, x: jax.Array, w: jax.Array, chunk_size: int | None, *rows,
                x_chunks_t: jax.Array | None = None):
    """Σ over row chunks of ``fn(x_chunk, w_chunk, *row_chunks)`` (a pytree of sums).

    ``rows`` are extra arrays with N leading rows (e.g. responsibilities) chunked alongside.
    With ``chunk_size`` None or ≥ N, a single call. ``x_chunks_t``: x as
    :func:`transposed_chunks`; the chunks are read from it and handed to ``fn`` as their
    transposes (C, D), which XLA folds into rows-minor kernels (no strided reads of x).
    """
    n = x.shape[0]
    if chunk_size is None or chunk_size >= n:
        return fn(x, w, *rows)
    rows = tuple(pad_rows(r, w, chunk_size)[0] for r in rows)
    x, w = pad_rows(x, w, chunk_size)
    n_chunks = x.shape[0] // chunk_size

    def split(a):
        return a.reshape((n_chunks, chunk_size) + a.shape[1:])

    if x_chunks_t is None:
        xs, rows_of = split(x), (lambda c: c)
    else:
        xs, rows_of = x_chunks_t, (lambda c: c.T)
    ws, rs = split(w), tuple(split(r) for r in rows)
    shapes = jax.eval_shape(fn, rows_of(xs[0]), ws[0], *(r[0] for r in rs))
    zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def body(acc, chunk):
        xc, wc, *rc = chunk
        return jax.tree_util.tree_map(jnp.add, acc, fn(rows_of(xc), wc, *rc)), None

    total, _ = jax.lax.scan(body, zeros, (xs, ws) + rs)
    return total


def chunked_map(fn: Callable, x: jax.Array, chunk_size: int | None) -> jax.Array:
    """Row-wise ``fn`` applied chunk by chunk (``lax.map``); output has N leading rows."""
    n = x.shape[0]
    if chunk_size is None or chunk_size >= n:
        return fn(x)
    xp, _ = pad_rows(x, jnp.zeros((n,), x.dtype), chunk_size)
    out = jax.lax.map(fn, xp.reshape((-1, chunk_size) + x.shape[1:]))
    return jax.tree_util.tree_map(lambda a: a.reshape((-1,) + a.shape[2:])[:n], out)


def sufficient_statistics(params: MixtureParams, x: jax.Array, w: jax.Array, shift: jax.Array,
                          chunk_size: int | None = None, x_chunks_t: jax.Array | None = None
                          ) -> SuffStats:
    """Statistics of all rows, accumulated over chunks. ``x_chunks_t``: the
    :func:`rows_minor_operand` of x for this type, if the caller built it (else built here)."""
    if x_chunks_t is None:
        x_chunks_t = rows_minor_operand(params.covariance_type, x, chunk_size)
    return chunked_sum(lambda xc, wc: chunk_stats(params, xc, wc, shift), x, w, chunk_size,
                       x_chunks_t=x_chunks_t)


def shared_layout_statistics(params: MixtureParams, x: jax.Array, w: jax.Array, shift: jax.Array,
                             chunk_size: int | None, type_code, x_chunks_t: jax.Array | None = None
                             ) -> SuffStats:
    """:func:`sufficient_statistics` of full-layout ``params`` whose covariance type is the
    traced ``type_code`` (one program for every type, see :func:`gmmjax.fit`): the diagonal
    types take the diagonal model's pass (K·D work per row instead of K·D²) and return its
    scatter on a diagonal, the matrix types the full pass (``lax.cond``: only one runs).
    ``x_chunks_t``: the diagonal pass's :func:`rows_minor_operand`, if built by the caller."""
    k, d = params.means.shape

    def diagonal_pass(p):
        stats = sufficient_statistics(from_full_layout(p, "diag"), x, w, shift, chunk_size,
                                      x_chunks_t)
        scatter = get_covariance_model("diag").to_full_layout(stats.scatter, k, d)
        return stats._replace(scatter=scatter)

    return jax.lax.cond(type_code >= TYPE_CODES["diag"], diagonal_pass,
                        lambda p: sufficient_statistics(p, x, w, shift, chunk_size), params)


def resp_statistics(x: jax.Array, w: jax.Array, resp: jax.Array, centers: jax.Array,
                    covariance_type: str, chunk_size: int | None = None) -> SuffStats:
    """Statistics for given responsibilities (N, K), centred on ``centers`` (K, D)."""

    def fn(xc, wc, rc):
        return weighted_resp_stats((rc * wc[:, None]).T, jnp.zeros((), x.dtype), xc, wc,
                                   centers, covariance_type)

    return chunked_sum(fn, x, w, chunk_size, resp)
