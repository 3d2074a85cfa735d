"""Where the rows live: the one seam between the core and its variants, plus row shapes.

The core (initialisation, statistics pass, restarts) is written once over the rows one device
holds. Everything it does *across* rows goes through a :class:`Rows`: on one device a plain sum
(``Rows()``), inside ``jax.shard_map`` a ``psum`` over the data axis (``Rows("data")``). A
variant differs only in how it feeds rows and which ``Rows`` it passes.

Also here, below ``fit.py`` and ``distributed.py``: row bucketing, automatic chunk sizes and
the padding of per-row init arrays.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .stats import chunked_sum, pad_rows_to

# Rows·K·D per automatic chunk (~512 KB of float32 temporaries: they stay in L2). Measured on a
# 2-core CPU (ms per EM iteration, float32): N=100k D=2 K=8 full 44 (one chunk) -> 11 (8192 rows);
# D=16 K=16 full 115 (4096 rows) -> 103 (512); diag 49 -> 39 (1024); N=65k D=32 K=32 420 -> 322 (256).
# Each row also carries ~16 elements of its own (x, weight, log density, K-sized
# responsibility temporaries...), which dominate when K·D is small: N=20k D=2 K=4 full, 10
# restarts of 10 iterations, 232 ms in one 20,480-row chunk, 150 ms in chunks of 10,240, 106 ms
# in chunks of 4,096-5,120 (2^17 / (K·D + 16) = 5,461).
AUTO_CHUNK_ELEMENTS = 1 << 17
ROW_ELEMENTS = 16
MIN_CHUNK_ROWS = 256            # below this, per-chunk loop overhead wins over cache locality


class Rows(NamedTuple):
    """Reductions over all rows. ``axis`` None: this device holds every row; else the name of
    the data axis of the enclosing ``shard_map`` (each device holds an equal block of rows)."""

    axis: str | None = None

    def sum(self, tree):
        """Σ over devices of per-device sums (identity on one device)."""
        if self.axis is None:
            return tree
        return jax.tree_util.tree_map(lambda a: lax.psum(a, self.axis), tree)

    def chunked_sum(self, fn, x, w, chunk_size, *rows):
        """:func:`gmmjax.stats.chunked_sum` over this device's rows, then :meth:`sum`."""
        return self.sum(chunked_sum(fn, x, w, chunk_size, *rows))

    def offset(self, n_local: int):
        """Global index of this device's first row (devices hold consecutive blocks)."""
        return 0 if self.axis is None else lax.axis_index(self.axis) * n_local

    def before(self, value):
        """Σ of ``value`` over the devices before this one (0 on one device)."""
        if self.axis is None:
            return jnp.zeros_like(value)
        every = lax.all_gather(value, self.axis)
        return (jnp.cumsum(every, axis=0) - every)[lax.axis_index(self.axis)]

    def gather(self, a):
        """``a`` of every device, concatenated along axis 0 (itself on one device)."""
        return a if self.axis is None else lax.all_gather(a, self.axis, tiled=True)


LOCAL = Rows()


def bucket_rows(n: int, chunk_size: int | None) -> int:
    """Padded row count: N rounded up to a multiple of max(8, 2^(bit_length(N)−6)) (≤ 1/32
    padding), then to a multiple of ``chunk_size``, so nearby N share one compiled program.
    A count already a multiple of ``chunk_size`` is kept: rows padded once (the estimators pad
    before calling fit) are not padded again."""
    if chunk_size is not None and n > 0 and n % chunk_size == 0:
        return n
    step = max(8, 1 << max(0, n.bit_length() - 6))
    rows = -(-n // step) * step
    if chunk_size is not None:
        rows = -(-rows // chunk_size) * chunk_size
    return rows


def auto_chunk_size(n: int, n_components: int, n_features: int) -> int | None:
    """Rows per chunk when the user gives none: about AUTO_CHUNK_ELEMENTS / (K·D + ROW_ELEMENTS)
    rows (≥ MIN_CHUNK_ROWS), adjusted to a multiple of 256 that splits N's bucket evenly (little
    padding); None (one chunk) when the data are smaller than two such chunks (small fits: a
    chunk loop costs compile time, ~1 s for the 1-D sweep's program, and saves little)."""
    target = max(MIN_CHUNK_ROWS, AUTO_CHUNK_ELEMENTS // (n_components * n_features + ROW_ELEMENTS))
    if n <= 2 * target:
        return None
    rows = bucket_rows(n, None)
    n_chunks = -(-rows // target)
    return -(-rows // (n_chunks * 256)) * 256


def pad_to(x: jax.Array, w: jax.Array, n_rows: int) -> tuple[jax.Array, jax.Array]:
    """Append zero rows of zero weight up to ``n_rows`` rows (NumPy arrays stay NumPy:
    :func:`gmmjax.stats.pad_rows_to`)."""
    return pad_rows_to(x, n_rows), pad_rows_to(w, n_rows)


def pad_resp(resp, n_init: int, n_restarts: int, n_rows: int, n_components: int, dtype):
    """Initial responsibilities (N, K) or (n_init, N, K) as a fit program takes them: one per
    restart slot (slots past ``n_init``, which a restart loop never reaches, are zero), zero
    rows for padding rows, zero columns for masked components. NumPy on the host for concrete
    input (one allocation, nothing compiled), jax.numpy when traced."""
    if isinstance(resp, jax.core.Tracer):
        resp = jnp.asarray(resp).astype(dtype)
        resp = jnp.broadcast_to(resp, (n_init,) + resp.shape[-2:])
        n, k = resp.shape[1:]
        return jnp.pad(resp, [(0, n_restarts - n_init), (0, n_rows - n), (0, n_components - k)])
    resp = np.asarray(resp)
    n, k = resp.shape[-2:]
    out = np.zeros((n_restarts, n_rows, n_components), dtype)
    out[:n_init, :n, :k] = resp
    return out


def weighted_mean(x: jax.Array, w: jax.Array, rows: Rows = LOCAL) -> jax.Array:
    """(D,) Σ w x / Σ w over all rows: the numerical centre every fit works around."""
    return rows.sum(jnp.sum(w[:, None] * x, axis=0)) / rows.sum(jnp.sum(w))
