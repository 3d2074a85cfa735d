"""Missing values (NaN entries, missing at random): observed-data densities, EM statistics with
conditional expectations, and imputation (Ghahramani & Jordan 1994).

For a row with observed entries o and missing entries m, component k contributes the marginal
density N(x_o | μ_o, Σ_oo). With the precision P = Σ⁻¹ that is computed from the missing block
only (usually small): the conditional of x_m given x_o has precision P_mm and mean
μ_m − P_mm⁻¹ P_mo (x_o − μ_o), and

    log det Σ_oo = log det Σ + log det P_mm,     (x_o−μ_o)ᵀ Σ_oo⁻¹ (x_o−μ_o) = êᵀ P ê,

where ê is the residual x − μ with its missing entries replaced by their conditional means
(the "completed" residual). The EM statistics are today's (:class:`gmmjax.stats.SuffStats`,
centred on the current means) computed from the completed rows, plus each row's conditional
covariance P_mm⁻¹ added to the scatter, so the M-step (:func:`gmmjax.em.params_from_stats`) and
the loop are shared with plain EM.

Everything happens per row inside the compiled program (masks over D, no host-side grouping by
missingness pattern). Each row's missing features are gathered into Q "slots" (Q ≥ the row's
number of missing entries; unused slots are inert), and P_mm is inverted by Q sweeps. Rows are
sorted by their number of missing entries so that each chunk picks the smallest Q of
:func:`slot_buckets` that fits it (``lax.switch``): most chunks of typical data need Q ≤ 4.
Diagonal and spherical covariances need no conditioning (x_m is independent of x_o).

A row with every entry missing carries no information: it gets weight 0 in a fit, its log
density is 0 (the empty observation has probability 1), its responsibilities are the weights π,
and its imputation is the mixture mean Σ π_k μ_k.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .compile_cache import cached_jit
from .covariance import LOG_2PI, array_namespace, centred_rows_minor, get_covariance_model
from .params import MixtureParams
from .rows import LOCAL, Rows
from .stats import SuffStats, chunked_map, chunked_sum, log_resp_and_norm
from .validation import check_data, is_traced

MISSING_OPTIONS = ("error", "marginalize")
HIGHEST = jax.lax.Precision.HIGHEST
UNROLLED_PIVOTS = 4     # larger slot counts sweep in a loop
UNSUPPORTED = "{what} is not supported with missing values yet (missing='marginalize')."


# ---------------------------------------------------------------------- host-side checks

def check_missing(missing) -> bool:
    """True for "marginalize", False for "error"; anything else is a ValueError."""
    if isinstance(missing, str) and missing in MISSING_OPTIONS:
        return missing == "marginalize"
    raise ValueError(f"missing must be one of {list(MISSING_OPTIONS)}; got {missing!r}.")


def check_data_missing(X, name: str = "X", min_samples: int = 1,
                       every_column: bool = True, host: bool = False) -> jax.Array:
    """Like :func:`gmmjax.validation.check_data`, but NaN entries are allowed (they are missing).

    Infinity stays an error. With ``every_column`` (fitting), so is a column with no observed
    entry: nothing can be learned about that feature. ``host``: NumPy input comes back as NumPy
    (as check_data's ``host``)."""
    if is_traced(X):
        return check_data(X, name, min_samples)
    arr = np.asarray(X)
    floating = np.issubdtype(arr.dtype, np.floating)
    nan = np.isnan(arr) if floating else np.zeros(np.shape(arr), bool)
    x = check_data(np.where(nan, 0, arr).astype(arr.dtype) if floating else X, name, min_samples,
                   host=host and isinstance(X, np.ndarray))
    if nan.any():
        empty = np.flatnonzero(nan.all(axis=0))
        if every_column and empty.size:
            raise ValueError(f"{name} has no observed value in column(s) {empty.tolist()} (shape "
                             f"{arr.shape}); drop those columns or fill them first.")
        x = arr.astype(x.dtype) if isinstance(x, np.ndarray) else jnp.asarray(arr, x.dtype)
    return x


def max_missing(x) -> int | None:
    """Largest number of NaN entries in a row of concrete ``x`` (None when traced)."""
    if is_traced(x) or x.shape[0] == 0:
        return None if is_traced(x) else 0
    xp = np if isinstance(x, np.ndarray) else jnp    # host rows: no eager XLA op per shape
    return int(xp.max(xp.sum(xp.isnan(x), axis=1)))


def slot_buckets(n_features: int, most_missing: int | None = None) -> tuple[int, ...]:
    """Slot counts Q a chunk may use: 0, 1, 2, 3, 4, 6, 8, 12, ... (2^j and 3·2^j, capped at D)
    up to the first that holds ``most_missing`` entries (all of them up to D when unknown, e.g.
    traced data). The sweep costs ~Q³ per row and component, so the 3·2^j steps keep the
    padding of a chunk's slots under a third."""
    top = n_features if most_missing is None else min(n_features, most_missing)
    buckets, power = [0], 1
    while buckets[-1] < top:
        for q in (power, 3 * power // 2):
            if buckets[-1] < q and buckets[-1] < top:
                buckets.append(min(q, n_features))
        power *= 2
    return tuple(buckets)


# ---------------------------------------------------------------------- per-row conditioning

class Conditioned(NamedTuple):
    """One chunk of C rows conditioned on each of K components. Rows are the minor axis so the
    per-row work vectorises over them.

    log_prob (K, C): log N(x_o | μ_k,o, Σ_k,oo); resid (K, D, C): completed residual ê (missing
    entries at their conditional means, minus μ_k); cond: what the scatter needs of the
    conditional covariances (path-specific)."""

    log_prob: jax.Array
    resid: jax.Array
    cond: tuple


def _sweep(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Sweep every pivot of symmetric positive definite ``a`` (Q, Q, ...) augmented by the
    column ``b`` (Q, ...) (Goodnight's sweep; the batch axes are minor, so every step is one
    vectorised pass). Returns (A⁻¹, A⁻¹ b, log det A).

    Each pivot j updates the block by a rank-one term and rewrites row and column j (slices,
    no masks over the block): the sweep of [[A, b], [bᵀ, ·]] on all of A's pivots is
    [[−A⁻¹, A⁻¹b], [·, ·]]. Up to ``UNROLLED_PIVOTS`` pivots are unrolled, more run in a loop
    (one body to compile whatever Q is)."""
    def pivot(j, carry):
        a, b, logdet = carry
        inv_d = 1.0 / a[j, j]
        row = a[j] * inv_d                                     # (Q, ...) = column j / d
        b_j = b[j]
        a = (a - a[:, j][:, None] * row[None, :]).at[j].set(row).at[:, j].set(row)
        a = a.at[j, j].set(-inv_d)
        b = (b - row * b_j).at[j].set(b_j * inv_d)
        return a, b, logdet - jnp.log(inv_d)

    carry = (a, b, jnp.zeros(a.shape[2:], a.dtype))
    if a.shape[0] <= UNROLLED_PIVOTS:
        for j in range(a.shape[0]):
            carry = pivot(j, carry)
    else:       # one loop body instead of Q copies: compile time stays flat in Q
        carry = jax.lax.fori_loop(0, a.shape[0], pivot, carry)
    a, b, logdet = carry
    return -a, b, logdet


def _missing_slots(miss: jax.Array, n_slots: int):
    """Each row's missing features in Q slots, ascending: one-hot (Q, D, C) (zero for unused
    slots) and the feature index of each slot (Q, C). ``miss`` is (D, C)."""
    rank = jnp.cumsum(miss, axis=0) - 1
    onehot = miss[None] & (rank[None] == jnp.arange(n_slots)[:, None, None])
    idx = jnp.sum(onehot * jnp.arange(miss.shape[0])[None, :, None], axis=1)
    return onehot, idx


class _MatrixPath:
    """Full and tied covariances: condition on the observed block through P_mm (Q slots)."""

    @staticmethod
    def condition(params: MixtureParams, x, obs, means, n_slots: int) -> Conditioned:
        model = get_covariance_model(params.covariance_type)
        k, d = means.shape
        u = model.per_component(params.precisions_cholesky, k)                # (K, D, D)
        obs_t = obs.T                                                        # (D, C)
        e = jnp.where(obs_t[None], centred_rows_minor(x, means), 0.0)        # (K, D, C)
        log_det = model.log_det(params.precisions_cholesky, d)[:, None]       # (K, 1)
        resid, half_logdet_pmm, cond = e, 0.0, None
        if n_slots:
            onehot, idx = _missing_slots(~obs_t, n_slots)                    # (Q, D, C), (Q, C)
            oh = onehot.astype(x.dtype)
            valid = jnp.any(onehot, axis=1)                                  # (Q, C)
            prec = model.precisions(u)                                       # (K, D, D)
            # The conditioning runs with components as the minor axis, (Q, Q, C, K): no
            # transposes of Q²-sized blocks before the sweep or the scatter's segment sum.
            # P_mo e_o: e is 0 at missing entries, so it is (P e) at the missing features.
            pe = jnp.einsum("kde,kec->dck", prec, e, precision=HIGHEST)      # (D, C, K)
            b = jnp.take_along_axis(pe, jnp.broadcast_to(idx[:, :, None], idx.shape + (k,)),
                                    axis=0)                                  # (Q, C, K)
            b = jnp.where(valid[:, :, None], b, 0.0)
            both = valid[:, None] & valid[None, :]                           # (Q, Q, C)
            pairs = idx[:, None] * d + idx[None, :]                          # (Q, Q, C)
            p_mm = jnp.take(prec.reshape(k, d * d).T, pairs, axis=0)         # (Q, Q, C, K)
            p_mm = jnp.where(both[..., None], p_mm,
                             jnp.eye(n_slots, dtype=x.dtype)[:, :, None, None])
            inv, solved, logdet_pmm = _sweep(p_mm, b)                        # P_mm⁻¹, P_mm⁻¹ b
            fill = -jnp.moveaxis(solved, 2, 0)                               # x̂_m − μ_m (K, Q, C)
            logdet_pmm = logdet_pmm.T                                        # (K, C)
            resid = e
            for q in range(n_slots):   # unrolled: XLA:CPU reduces a small leading axis slowly
                resid = resid + oh[q][None] * fill[:, q][:, None]
            half_logdet_pmm = 0.5 * logdet_pmm
            cond = (idx, both, inv)                                          # P_mm⁻¹ (Q, Q, C, K)
        y = jnp.einsum("kde,kdc->kec", u, resid, precision=HIGHEST)
        maha = jnp.sum(y * y, axis=1)
        n_obs = jnp.sum(obs, axis=1).astype(x.dtype)
        log_prob = -0.5 * (n_obs * LOG_2PI + maha) + log_det - half_logdet_pmm
        return Conditioned(log_prob, resid, cond)

    @staticmethod
    def scatter(cond: Conditioned, resp: jax.Array, params: MixtureParams) -> jax.Array:
        """(K, D, D) Σ_n r_nk (ê êᵀ + conditional covariance embedded at m×m); resp (K, C)."""
        out = jnp.einsum("kdc,kec->kde", resp[:, None] * cond.resid, cond.resid,
                         precision=HIGHEST)
        if cond.cond is not None:   # Σ_n r_nk P_mm⁻¹ added at the (m, m) entries: a segment sum
            idx, both, inv = cond.cond
            k, d = out.shape[:2]
            bins = jnp.where(both, idx[:, None] * d + idx[None, :], d * d).reshape(-1)
            vals = (inv * resp.T[None, None]).reshape(-1, k)                 # (Q·Q·C, K)
            add = jax.ops.segment_sum(vals, bins, d * d + 1)[:d * d]
            out = out + add.T.reshape(k, d, d)
        return out

    @staticmethod
    def draw(normals, params, cond: Conditioned, labels) -> jax.Array:
        """(C, D) completed residuals under component ``labels`` (C,) with the missing entries
        drawn from their conditional N(fill, P_mm⁻¹), from standard ``normals`` (C, D)."""
        fill = jnp.take_along_axis(cond.resid, labels[None, None], axis=0)[0].T
        if cond.cond is None:
            return fill
        idx, both, inv = cond.cond
        inv = jnp.take_along_axis(inv, labels[None, None, :, None], axis=3)[..., 0]  # (Q, Q, C)
        chol = jnp.linalg.cholesky(jnp.moveaxis(inv, 2, 0))                         # (C, Q, Q)
        noise = jnp.einsum("cqr,cr->cq", chol, normals[:, :inv.shape[0]], precision=HIGHEST)
        valid = jnp.diagonal(both, axis1=0, axis2=1)                                # (C, Q)
        onehot = jax.nn.one_hot(idx.T, fill.shape[-1], dtype=fill.dtype) * valid[..., None]
        return fill + jnp.einsum("cqd,cq->cd", onehot, noise, precision=HIGHEST)


class _DiagonalPath:
    """Diagonal and spherical covariances: x_m is independent of x_o, so its conditional mean is
    μ_m and its conditional variance σ²_m; the marginal density drops the missing factors."""

    @staticmethod
    def _precisions(params: MixtureParams, k: int, d: int) -> jax.Array:
        p = get_covariance_model(params.covariance_type).precisions(params.precisions_cholesky)
        return jnp.broadcast_to(p.reshape(k, -1), (k, d))                    # (K, D)

    @staticmethod
    def condition(params: MixtureParams, x, obs, means, n_slots: int) -> Conditioned:
        k, d = means.shape
        p = _DiagonalPath._precisions(params, k, d)
        obs_t = obs.T.astype(x.dtype)
        e = jnp.where(obs.T[None], centred_rows_minor(x, means), 0.0)        # (K, D, C)
        maha = jnp.sum(e * e * p[:, :, None], axis=1)
        half_logdet = 0.5 * jnp.matmul(jnp.log(p), obs_t, precision=HIGHEST)
        n_obs = jnp.sum(obs_t, axis=0)
        return Conditioned(-0.5 * (n_obs * LOG_2PI + maha) + half_logdet, e, (obs,))

    @staticmethod
    def scatter(cond: Conditioned, resp: jax.Array, params: MixtureParams) -> jax.Array:
        """(K, D) Σ_n r_nk (ê² + σ²_k on missing entries)."""
        k, d = cond.resid.shape[:2]
        (obs,) = cond.cond
        var = 1.0 / _DiagonalPath._precisions(params, k, d)
        missing_mass = jnp.matmul(resp, (~obs).astype(resp.dtype), precision=HIGHEST)
        return jnp.sum(resp[:, None] * cond.resid * cond.resid, axis=2) + missing_mass * var

    @staticmethod
    def draw(normals, params, cond: Conditioned, labels) -> jax.Array:
        k, d = cond.resid.shape[:2]
        (obs,) = cond.cond
        sd = jax.lax.rsqrt(_DiagonalPath._precisions(params, k, d))[labels]  # (C, D)
        fill = jnp.take_along_axis(cond.resid, labels[None, None], axis=0)[0].T
        return fill + jnp.where(obs, 0.0, sd * normals)


def _path(covariance_type: str):
    """The matrix path for types whose covariances are (D, D) matrices, else the diagonal one."""
    model = get_covariance_model(covariance_type)
    return _MatrixPath if len(model.component_shape(2)) == 2 else _DiagonalPath


def condition(params: MixtureParams, x: jax.Array, shift: jax.Array, n_slots: int) -> Conditioned:
    """Condition rows ``x`` (C, D) with NaN entries on every component, in the frame ``x − shift``.

    ``n_slots`` (static) must be ≥ the largest number of NaN entries in a row."""
    obs = ~jnp.isnan(x)
    xs = jnp.where(obs, x - shift, 0.0)
    return _path(params.covariance_type).condition(params, xs, obs, params.means - shift, n_slots)


def _switch_slots(fn, x: jax.Array, buckets: tuple[int, ...]):
    """``fn(n_slots)`` for the smallest bucket that holds every row of ``x`` (``lax.switch``)."""
    if len(buckets) == 1:
        return fn(buckets[0])
    most = jnp.max(jnp.sum(jnp.isnan(x), axis=1))
    branch = jnp.searchsorted(jnp.asarray(buckets), most, side="left")
    return jax.lax.switch(jnp.minimum(branch, len(buckets) - 1),
                          [functools.partial(fn, q) for q in buckets])


# ---------------------------------------------------------------------- EM statistics

def chunk_stats(params: MixtureParams, x: jax.Array, w: jax.Array, shift: jax.Array,
                buckets: tuple[int, ...]) -> SuffStats:
    """EM statistics of one chunk with NaN entries, in :class:`SuffStats`' layout (centred on the
    current means in the frame ``x − shift``): completed rows and conditional covariances. Rows
    with zero weight or no observed entry contribute nothing."""
    model = get_covariance_model(params.covariance_type)
    path = _path(params.covariance_type)
    live = (w > 0) & jnp.any(~jnp.isnan(x), axis=1)
    w = jnp.where(live, w, 0.0)

    def stats(n_slots):
        cond = condition(params, x, shift, n_slots)
        log_resp, norm = log_resp_and_norm(cond.log_prob.T + jnp.log(params.weights))
        resp = (jnp.where(live[:, None], jnp.exp(log_resp), 0.0) * w[:, None]).T   # (K, C)
        nk = jnp.sum(resp, axis=1)
        sx = jnp.einsum("kc,kdc->kd", resp, cond.resid, precision=HIGHEST)
        scatter = model.reduce_component_scatter(path.scatter(cond, resp, params))
        return SuffStats(nk, sx, scatter, jnp.sum(jnp.where(live, norm * w, 0.0)), jnp.sum(w))

    return _switch_slots(stats, x, buckets)


def sufficient_statistics(params: MixtureParams, x: jax.Array, w: jax.Array, shift: jax.Array,
                          chunk_size: int | None, buckets: tuple[int, ...]) -> SuffStats:
    """:func:`chunk_stats` accumulated over chunks of rows (sort rows with
    :func:`sort_by_missing` first so that chunks need few slots)."""
    return chunked_sum(lambda xc, wc: chunk_stats(params, xc, wc, shift, buckets), x, w,
                       chunk_size)


def sort_by_missing(x: jax.Array, *rows: jax.Array):
    """Rows ordered by their number of NaN entries (stable): (x, *rows, order)."""
    order = jnp.argsort(jnp.sum(jnp.isnan(x), axis=1), stable=True)
    return (x[order],) + tuple(r[order] for r in rows) + (order,)


def observed_mean(x: jax.Array, w: jax.Array, rows: Rows = LOCAL) -> jax.Array:
    """(D,) weighted mean of each column's observed (non-NaN) entries (over all ``rows``).
    NumPy in, NumPy out (on the host, nothing compiled)."""
    xp = array_namespace(x)
    obs = ~xp.isnan(x)
    wo = xp.where(obs, w[:, None], 0.0)
    total = rows.sum(xp.sum(xp.where(obs, wo * x, 0.0), axis=0))
    return (total / xp.maximum(rows.sum(xp.sum(wo, axis=0)), xp.finfo(x.dtype).tiny)
            ).astype(x.dtype)


def fill_missing(x: jax.Array, w: jax.Array, rows: Rows = LOCAL) -> jax.Array:
    """NaN entries replaced by the weighted mean of their column's observed entries (a fit's
    initialisation — k-means and the other methods — runs on these rows). NumPy in, NumPy
    out."""
    xp = array_namespace(x)
    return xp.where(xp.isnan(x), observed_mean(x, w, rows), x)


def fit_buckets(x: jax.Array) -> tuple[int, ...] | None:
    """The slot buckets a fit of ``x`` compiles, or None when concrete ``x`` has no NaN (then
    the fit is exactly the plain one)."""
    most = max_missing(x)
    return None if most == 0 else slot_buckets(x.shape[1], most)


def informative_weight(x: jax.Array, w: jax.Array) -> jax.Array:
    """Weights with rows that have no observed entry set to 0 (they carry no information)."""
    xp = array_namespace(x)
    return xp.where(xp.all(xp.isnan(x), axis=1), 0.0, w).astype(w.dtype)


# ---------------------------------------------------------------------- evaluation

def _rows(params: MixtureParams, x: jax.Array, buckets: tuple[int, ...], draws=None):
    """(log_resp (C, K), log_norm (C,), imputed rows (C, D)) of one chunk. Imputed: NaN entries
    at the posterior-weighted conditional means, or, with ``draws`` (normals (C, D), Gumbels
    (C, K)), drawn from the conditional of a component drawn from the posterior."""
    shift = jnp.mean(params.means, axis=0)
    centres = params.means - shift
    path = _path(params.covariance_type)

    def one(n_slots):
        cond = condition(params, x, shift, n_slots)
        log_resp, norm = log_resp_and_norm(cond.log_prob.T + jnp.log(params.weights))
        # a row with nothing observed has density 1: log 0 exactly, not log Σπ's rounding
        norm = jnp.where(jnp.all(jnp.isnan(x), axis=1), 0.0, norm)
        if draws is None:
            completed = jnp.sum(jnp.exp(log_resp).T[:, None] * (cond.resid + centres[:, :, None]),
                                axis=0).T
        else:
            normals, gumbels = draws
            labels = jnp.argmax(log_resp + gumbels, axis=1)
            completed = path.draw(normals, params, cond, labels) + centres[labels]
        return log_resp, norm, jnp.where(jnp.isnan(x), completed + shift, x)

    return _switch_slots(one, x, buckets)


@functools.partial(cached_jit, static_argnames=("chunk_size", "buckets", "part"))
def _evaluate(params, x, key, *, chunk_size, buckets, part):
    xs, order = sort_by_missing(x)
    n, d = x.shape
    rows = xs
    if key is not None:
        normal_key, gumbel_key = jax.random.split(key)
        rows = jnp.concatenate([xs, jax.random.normal(normal_key, (n, d), x.dtype),
                                jax.random.gumbel(gumbel_key, (n, params.n_components), x.dtype)],
                               axis=1)

    def fn(rc):
        draws = None if key is None else (rc[:, d:2 * d], rc[:, 2 * d:])
        out = _rows(params, rc[:, :d], buckets, draws)
        return tuple(out[p] for p in part) if isinstance(part, tuple) else out[part]

    out = chunked_map(fn, rows, chunk_size)
    return jax.tree_util.tree_map(lambda a: jnp.zeros_like(a).at[order].set(a), out)


def evaluate(params: MixtureParams, x: jax.Array, part: int, *, chunk_size=None, key=None):
    """Per-row results for validated ``x`` with NaN entries (missing), in its original order:
    part 0 log responsibilities (N, K), 1 log density (N,), 2 imputed rows (N, D); a tuple of
    parts gives a tuple."""
    buckets = slot_buckets(x.shape[1], max_missing(x))
    return _evaluate(params, x, key, chunk_size=chunk_size, buckets=buckets, part=part)

