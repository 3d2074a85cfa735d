"""Gaussian kernel density estimation, computed on the device in chunks.

``kde_log_prob`` evaluates log p(x) = log Σ_i w_i N(x | x_i, h² I) − log Σ_i w_i (sklearn's
``KernelDensity(kernel="gaussian").score_samples``) with a running log-sum-exp over blocks of
(query chunk × training chunk): memory is O(query_chunk · train_chunk), whatever the numbers of
queries and training points (e.g. 1e6 queries × 1e5 training points).
"""

from __future__ import annotations

import functools
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from .compile_cache import cached_jit
from .rows import pad_to
from .stats import pad_rows_to
from .validation import check_data, check_int, check_sample_weight, is_traced

HIGHEST = jax.lax.Precision.HIGHEST
BANDWIDTH_RULES = ("scott", "silverman")
DEFAULT_QUERY_CHUNK = 1024
DEFAULT_TRAIN_CHUNK = 4096


def kde_bandwidth(n_samples: int, n_features: int, bandwidth="scott") -> float:
    """Resolve ``bandwidth``: a positive float is returned as is; "scott" is n^(−1/(d+4)) and
    "silverman" (n (d+2) / 4)^(−1/(d+4)), as scikit-learn computes them (from the row count, not
    scaled by the data's spread: standardise the data first if its scale is far from 1)."""
    if isinstance(bandwidth, str):
        if bandwidth == "scott":
            return float(n_samples ** (-1.0 / (n_features + 4)))
        if bandwidth == "silverman":
            return float((n_samples * (n_features + 2) / 4.0) ** (-1.0 / (n_features + 4)))
        raise ValueError(f"Unknown bandwidth rule {bandwidth!r}; expected a positive float or one "
                         f"of {list(BANDWIDTH_RULES)}.")
    if is_traced(bandwidth):
        return bandwidth
    numeric = isinstance(bandwidth, numbers.Real) or (
        np.ndim(bandwidth) == 0 and np.issubdtype(getattr(bandwidth, "dtype", np.object_),
                                                  np.number))
    if isinstance(bandwidth, bool) or not numeric:
        raise ValueError(f"bandwidth must be a positive float or one of {list(BANDWIDTH_RULES)}; "
                         f"got {bandwidth!r}.")
    value = float(bandwidth)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"bandwidth must be a positive finite number; got {bandwidth!r}.")
    return value


def _bucket(n: int) -> int:
    """Round n up so that nearby sizes share one compiled program (≤ 1/8 padding)."""
    step = 1 << max(0, n.bit_length() - 4)
    return -(-n // step) * step


def _chunking(n: int, chunk: int | None, default: int) -> tuple[int, int]:
    """(chunk, padded rows): one bucketed chunk if n fits, else a multiple of ``chunk``."""
    chunk = default if chunk is None else chunk
    if n <= chunk:
        size = _bucket(n)
        return size, size
    return chunk, -(-n // chunk) * chunk


def log_sum_kernels(queries: jax.Array, train: jax.Array, log_w: jax.Array, bandwidth,
                    query_chunk: int, train_chunk: int) -> jax.Array:
    """(Q,) log Σ_i exp(log_w_i − |q − x_i|² / (2h²)), chunked; a pure, jit-able function.

    ``queries`` rows must be a multiple of ``query_chunk`` and ``train`` rows of ``train_chunk``;
    padded training rows carry ``log_w = −inf``. Squared distances come from one GEMM per block
    (HIGHEST precision); centre both sets on the training mean first to avoid cancellation.
    """
    inv = 0.5 / (bandwidth * bandwidth)
    n_train_chunks = train.shape[0] // train_chunk
    t_blocks = train.reshape(n_train_chunks, train_chunk, train.shape[1])
    w_blocks = log_w.reshape(n_train_chunks, train_chunk)
    t_norms = jnp.sum(t_blocks * t_blocks, axis=-1)

    def one_query_chunk(q):
        q_norm = jnp.sum(q * q, axis=-1)

        def body(carry, block):
            m, s = carry
            t, tn, lw = block
            sq = q_norm[:, None] + tn[None] - 2.0 * jnp.matmul(q, t.T, precision=HIGHEST)
            v = lw[None] - inv * jnp.maximum(sq, 0.0)
            new_m = jnp.maximum(m, jnp.max(v, axis=1))
            safe = jnp.where(jnp.isfinite(new_m), new_m, 0.0)
            s = s * jnp.exp(m - safe) + jnp.sum(jnp.exp(v - safe[:, None]), axis=1)
            return (new_m, s), None

        init = (jnp.full(q.shape[:1], -jnp.inf, q.dtype), jnp.zeros(q.shape[:1], q.dtype))
        (m, s), _ = jax.lax.scan(body, init, (t_blocks, t_norms, w_blocks))
        return jnp.log(s) + jnp.where(jnp.isfinite(m), m, 0.0)

    q_blocks = queries.reshape(-1, query_chunk, queries.shape[1])
    return jax.lax.map(one_query_chunk, q_blocks).reshape(-1)


@functools.partial(cached_jit, static_argnames=("query_chunk", "train_chunk"))
def _kde_program(queries, train, w, bandwidth, *, query_chunk, train_chunk):
    """(Q,) log densities; ``w`` (M,) weights, 0 on padded training rows."""
    h = jnp.asarray(bandwidth, train.dtype)
    d = train.shape[1]
    total = jnp.sum(w)
    log_norm = jnp.log(total) + d * jnp.log(h) + 0.5 * d * math.log(2 * math.pi)
    center = jnp.sum(w[:, None] * train, axis=0) / total
    log_w = jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1.0)), -jnp.inf)
    # In bandwidth units (centred, then divided by h): h² is never formed, so h of 1e-19 or data
    # of 1e19 stay finite in float32.
    out = log_sum_kernels((queries - center) / h, (train - center) / h, log_w, 1.0,
                          query_chunk, train_chunk)
    return out - log_norm


def _check_span(train, x, w, h) -> None:
    """Concrete data whose distance to the (weighted) training mean, in bandwidths, cannot be
    squared in its dtype would give NaN: refuse it with a clear message instead. Checked on the
    host in float64 (nothing compiled); skipped for traced values."""
    if is_traced(train, x, w, h):
        return
    host_w = np.asarray(w, np.float64)
    train64 = np.asarray(train, np.float64)
    center = np.sum(host_w[:, None] * train64, axis=0) / np.sum(host_w)   # (no BLAS call)
    limit = float(np.sqrt(np.finfo(train.dtype).max)) / 1e2
    for name, points in (("train", train64), ("X", np.asarray(x, np.float64))):
        span = float(np.max(np.abs(points - center))) / float(h)
        if not span <= limit:
            raise ValueError(f"{name} lies up to {span:.3g} bandwidths from the training mean, "
                             f"too far to compute in {train.dtype} (limit {limit:.0e}); use "
                             "float64 data or a larger bandwidth.")


def kde_log_prob(train, X, bandwidth=1.0, *, sample_weight=None, query_chunk: int | None = None,
                 train_chunk: int | None = None) -> jax.Array:
    """(N,) log density of rows ``X`` under the Gaussian KDE of ``train`` (sklearn's
    ``KernelDensity(kernel="gaussian", bandwidth=h).score_samples``, exact: no tree tolerance).

    Args:
      train: (M, D) training points. X: (N, D) queries.
      bandwidth: positive float, "scott" or "silverman" (see :func:`kde_bandwidth`).
      sample_weight: (M,) non-negative weights of the training points (None: ones).
      query_chunk, train_chunk: block sizes (defaults 1024 × 4096): peak memory is
        O(query_chunk · train_chunk) elements, independent of N and M.
    """
    train = check_data(train, "train", host=True)     # NumPy stays on the host until the
    x = check_data(X, host=True)                       # program takes it (one compile per shape)
    if x.shape[1] != train.shape[1]:
        raise ValueError(f"X has {x.shape[1]} features, but the KDE was built on "
                         f"{train.shape[1]} features (train shape {tuple(train.shape)}).")
    dtype = np.result_type(x.dtype, train.dtype)
    x, train = x.astype(dtype), train.astype(dtype)
    h = kde_bandwidth(train.shape[0], train.shape[1], bandwidth)
    w = check_sample_weight(sample_weight, train.shape[0], dtype, host=True)
    for name, value in (("query_chunk", query_chunk), ("train_chunk", train_chunk)):
        if value is not None:
            check_int(value, name, 1)
    n, m = x.shape[0], train.shape[0]
    qc, n_pad = _chunking(n, query_chunk, DEFAULT_QUERY_CHUNK)
    tc, m_pad = _chunking(m, train_chunk, DEFAULT_TRAIN_CHUNK)
    _check_span(train, x, w, h)
    out = _kde_program(pad_rows_to(x, n_pad), *pad_to(train, w, m_pad), h,
                       query_chunk=qc, train_chunk=tc)
    if is_traced(out):
        return out[:n]
    return jax.device_put(jax.device_get(out)[:n])     # sliced on the host: no compile per n


@functools.partial(cached_jit, static_argnames=("n_samples",))
def _kde_sample(key, train, w, bandwidth, n_samples):
    pick_key, noise_key = jax.random.split(key)
    cum = jnp.cumsum(w)
    u = jax.random.uniform(pick_key, (n_samples,), train.dtype) * cum[-1]
    idx = jnp.minimum(jnp.searchsorted(cum, u, side="right"), train.shape[0] - 1)
    noise = jax.random.normal(noise_key, (n_samples, train.shape[1]), train.dtype)
    return train[idx] + bandwidth * noise


def kde_sample(key: jax.Array, train, bandwidth=1.0, n_samples: int = 1, *,
               sample_weight=None) -> jax.Array:
    """(n_samples, D) draws from the Gaussian KDE: a training row (∝ its weight) plus h·N(0, I)."""
    train = check_data(train, "train", host=True)
    h = kde_bandwidth(train.shape[0], train.shape[1], bandwidth)
    w = check_sample_weight(sample_weight, train.shape[0], train.dtype, host=True)
    n_samples = check_int(n_samples, "n_samples", 1)
    h = h if is_traced(h) else np.asarray(h, train.dtype)
    return _kde_sample(key, train, w, h, n_samples)
