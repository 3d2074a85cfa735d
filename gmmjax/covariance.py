"""The four covariance types, one small object each, and the registry that names them.

Every piece of type-specific arithmetic lives here; the rest of the package asks the registry
(``get_covariance_model(name)``) and never branches on the covariance type itself.

Notation: K components, D features, N rows. ``U`` is the precision Cholesky factor in sklearn's
convention: upper-triangular with precision = U Uᵀ (full/tied), or its diagonal (diag: (K, D)),
or a scalar per component (spherical: (K,)).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

HIGHEST = jax.lax.Precision.HIGHEST


# Constant matrices are NumPy literals in the programs: jnp.eye / jnp.diagonal would each add
# small iota/compare/gather kernels, and on CPU every kernel costs ~15 ms of compile time.


def eye(d: int, dtype) -> np.ndarray:
    """The (d, d) identity as a NumPy constant (a literal inside a traced program)."""
    return np.eye(d, dtype=dtype)


def diagonal(a):
    """(..., D) diagonal of (..., D, D) ``a``: a masked sum (one fused kernel, no gather)."""
    xp = array_namespace(a)
    return xp.sum(xp.where(np.eye(a.shape[-1], dtype=bool), a, 0), axis=-1).astype(a.dtype)


def _eye_like(a: jax.Array) -> jax.Array:
    return jnp.broadcast_to(eye(a.shape[-1], a.dtype), a.shape)


def _lower_cholesky(a: jax.Array) -> jax.Array:
    """Lower Cholesky factor of symmetric ``a`` (NaN where not positive definite). Reads the
    lower triangle only, as LAPACK (and scikit-learn's scipy call) does: our covariances are
    symmetrised where they are built, so jnp.linalg.cholesky's (a + aᵀ)/2 would change
    nothing but add a kernel."""
    return jax.lax.linalg.cholesky(a, symmetrize_input=False)


def _upper_cholesky_of_inverse(cov: jax.Array) -> tuple[jax.Array, jax.Array]:
    """U = L⁻ᵀ with Σ = L Lᵀ, so U Uᵀ = Σ⁻¹. Works batched over leading axes. Returns (U, ok)."""
    lower = _lower_cholesky(cov)
    ok = jnp.all(jnp.isfinite(lower))
    lower = jnp.where(ok, lower, _eye_like(cov))
    u = jnp.swapaxes(solve_triangular(lower, _eye_like(cov), lower=True), -1, -2)
    return u, ok


def _cholesky_from_precision(prec: jax.Array) -> jax.Array:
    """Upper U with prec = U Uᵀ: U = J chol(J P J) J, J the exchange matrix (sklearn #26415)."""
    flipped = jnp.flip(prec, axis=(-2, -1))
    return jnp.flip(_lower_cholesky(flipped), axis=(-2, -1))


def array_namespace(a):
    """numpy for host arrays (nothing to compile), jax.numpy otherwise."""
    return np if isinstance(a, np.ndarray) else jnp


def _inverse_of_upper(u: jax.Array) -> jax.Array:
    return solve_triangular(u, _eye_like(u), lower=False)


SMALL_D = 8   # below this, building the operand as (K, D, N) (rows minor) vectorises better


def centred_rows_minor(x: jax.Array, centers: jax.Array) -> jax.Array:
    """(K, D, N) x − c_k for rows ``x`` (N, D) and centres (K, D), rows minor: the centred operand
    of the tiny-D kernels and the diagonal models (no cancellation on offset data)."""
    return x.T[None] - centers[:, :, None]


def _root_weighted_centred(x: jax.Array, resp_t: jax.Array, centers: jax.Array) -> jax.Array:
    """a = √r·(x − c) per component, (K, D, N), so Σ_n r (x − c)(x − c)ᵀ = a aᵀ batched over K
    (``resp_t``: the responsibilities as (K, N)).

    Both factors are centred, so nothing cancels. One operand (a SYRK-shaped product) moves half
    the memory of r(x − c) times (x − c): measured ~25% less CPU time per scatter at D = 16, 32.
    Built as (K, N, D) for larger D, where that vectorises better. Not differentiable at r = 0.
    """
    root = jnp.sqrt(resp_t)
    if x.shape[-1] < SMALL_D:
        return root[:, None, :] * centred_rows_minor(x, centers)
    return jnp.swapaxes(root[:, :, None] * (x[None] - centers[:, None]), 1, 2)


# Up to this many features the full scatter is D(D+1)/2 fused row reductions of r·(x−c)_m·(x−c)_o
# instead of K batched D×D GEMMs: such tiny GEMMs run at ~0.5 GFLOP/s on CPU (a library call per
# component, and per fit under vmap: 1,000 fits of 400×2 K=2, 7.0 → 2.4 ms per scatter; one fit
# N=100k K=8 D=2, 4.6 → 1.7 ms), while at D = 3 the GEMM is already the faster one (K=16 N=2,048).
UNROLLED_SCATTER_D = 2
# Likewise the full distances ‖(x − μ_k) U_k‖² at D ≤ 2 as elementwise products of the centred
# rows (no batched (N, D)·(D, D) GEMMs): 1,000 vmapped fits 400×2 K=2 (10 iterations)
# 97–134 → 49–70 ms (fresh processes, four alternations); one fit N=100k D=2 K=8 −8–10%,
# n_init=10 N=20k −10%, the moons estimator fit −7%; a 1-D K=3 estimator fit +3–8% (~0.5 ms).
UNROLLED_DISTANCES_D = 2


def _unrolled_scatter(x: jax.Array, resp_t: jax.Array, centers: jax.Array) -> jax.Array:
    """Σ_n r (x − c)(x − c)ᵀ per component, (K, D, D), entry by entry (for tiny D): each unique
    entry one reduction along rows of r·(x_m − c_m)·(x_o − c_o) (centred: nothing cancels)."""
    diff = centred_rows_minor(x, centers)
    d = diff.shape[1]
    entry = {(m, o): jnp.sum(resp_t * diff[:, m] * diff[:, o], axis=-1)
             for m in range(d) for o in range(m, d)}
    return jnp.stack([jnp.stack([entry[min(m, o), max(m, o)] for o in range(d)], axis=-1)
                      for m in range(d)], axis=1)


class CovarianceModel:
    """Interface: the arithmetic one covariance type needs. Subclasses hold no state."""

    name: str
    # whether the statistics pass hands this type's chunk kernels rows already transposed
    # (:func:`gmmjax.stats.transposed_chunks`): they read x rows minor
    rows_minor_chunks: bool = False

    def shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        raise NotImplementedError

    def n_parameters(self, n_components: int, n_features: int) -> int:
        """Free parameters of the covariances alone."""
        raise NotImplementedError

    def log_det(self, prec_chol: jax.Array, n_features: int) -> jax.Array:
        """(K,) sum of log diag(U) = ½ log det(precision). ``n_features`` is for spherical."""
        raise NotImplementedError

    def mahalanobis(self, x: jax.Array, means: jax.Array, prec_chol: jax.Array) -> jax.Array:
        """(N, K) squared Mahalanobis distances of rows x (N, D) to means (K, D)."""
        return self.distances(x, means, prec_chol).T

    def distances(self, x: jax.Array, means: jax.Array, prec_chol: jax.Array) -> jax.Array:
        """:meth:`mahalanobis` as (K, N), rows minor (the layout they are computed in)."""
        raise NotImplementedError

    def scatter(self, x: jax.Array, resp: jax.Array, centers: jax.Array) -> jax.Array:
        """Σ_n resp[n,k] (x_n − c_k)(x_n − c_k)ᵀ reduced to this type's statistic.

        full: (K, D, D); tied: (D, D), summed over k; diag: (K, D); spherical: (K,), mean over D.
        ``resp`` (N, K) already includes the sample weights.
        """
        return self.scatter_rows_minor(x, resp.T, centers)

    def scatter_rows_minor(self, x: jax.Array, resp_t: jax.Array, centers: jax.Array
                           ) -> jax.Array:
        """:meth:`scatter` of responsibilities given as (K, N)."""
        raise NotImplementedError

    def reduce_component_scatter(self, scatter: jax.Array) -> jax.Array:
        """A per-component scatter ((K, D, D) for matrix types, (K, D) for diagonal ones) reduced
        like :meth:`scatter` (used where rows differ per component, e.g. completed missing values)."""
        return scatter

    def outer(self, a: jax.Array, coef: jax.Array) -> jax.Array:
        """Σ-shaped coef_k a_k a_kᵀ for a (K, D), reduced like :meth:`scatter`."""
        raise NotImplementedError

    def from_scatter(self, scatter: jax.Array, nk: jax.Array) -> jax.Array:
        """Covariances (without reg) from a centred scatter and nk (K,) (eps-floored)."""
        raise NotImplementedError

    def add_reg(self, cov: jax.Array, reg_covar) -> jax.Array:
        raise NotImplementedError

    def variances(self, cov: jax.Array) -> jax.Array:
        """The per-feature variances (diagonal) held in covariances of this type."""
        raise NotImplementedError

    def precision_cholesky(self, cov: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(U, ok): ok is False when a covariance is not positive definite (ill-defined)."""
        raise NotImplementedError

    def covariance_from_precision_cholesky(self, prec_chol: jax.Array) -> jax.Array:
        raise NotImplementedError

    def precisions(self, prec_chol: jax.Array) -> jax.Array:
        raise NotImplementedError

    def precision_cholesky_from_precisions(self, precisions: jax.Array) -> jax.Array:
        raise NotImplementedError

    def noise_transform(self, z: jax.Array, labels: jax.Array, prec_chol: jax.Array) -> jax.Array:
        """Map standard normal z (n, D) to N(0, Σ_label) draws, differentiable in U."""
        raise NotImplementedError

    def per_component(self, cov_or_chol: jax.Array, n_components: int) -> jax.Array:
        """Broadcast a tied quantity to (K, ...); identity for the other types."""
        return cov_or_chol

    def to_full_layout(self, a, n_components: int, n_features: int):
        """Covariances or precision factors of this type as (..., K, D, D) matrices (NumPy in ->
        NumPy out, so the host path compiles nothing)."""
        raise NotImplementedError

    def from_full_layout(self, a):
        """Inverse of :meth:`to_full_layout` for matrices that hold this type's structure."""
        raise NotImplementedError

    # Variational (Bayesian) pieces, used by gmmjax.bayesian.
    def component_shape(self, n_features: int) -> tuple[int, ...]:
        """Shape of one covariance (e.g. a covariance prior): (D, D), (D,) or ()."""
        raise NotImplementedError

    def pool(self, values: jax.Array) -> jax.Array:
        """Per-component values (K,) as one covariance sees them: themselves, or their mean (tied)."""
        return values

    def scale(self, stat: jax.Array, s: jax.Array) -> jax.Array:
        """Type-shaped ``stat`` times ``s`` as returned by :meth:`pool`."""
        raise NotImplementedError

    def pool_outer(self, a: jax.Array, coef: jax.Array) -> jax.Array:
        """:meth:`outer` pooled like :meth:`pool`: per component, or the mean over k (tied)."""
        return self.outer(a, coef)

    # Unconstrained coordinates of U, used by gmmjax.unconstrained.
    def unconstrain_precision_cholesky(self, prec_chol: jax.Array):
        """(log_diag, off_diag): log of U's diagonal and U's strictly-upper entries (None if U is
        diagonal); any real values map back to a valid U."""
        raise NotImplementedError

    def constrain_precision_cholesky(self, log_diag: jax.Array, off_diag) -> jax.Array:
        """Inverse of :meth:`unconstrain_precision_cholesky`."""
        raise NotImplementedError


class Full(CovarianceModel):
    name = "full"

    def shape(self, n_components, n_features):
        return (n_components, n_features, n_features)

    def n_parameters(self, n_components, n_features):
        return n_components * n_features * (n_features + 1) // 2

    def log_det(self, prec_chol, n_features):
        return jnp.sum(jnp.log(diagonal(prec_chol)), axis=-1)

    def distances(self, x, means, prec_chol):
        # One (K·D, D) x (D, N) GEMM for all components, minus the (K, D) means term; rows are
        # the minor axis so the square-and-sum over D vectorises even for tiny D.
        if x.shape[-1] <= UNROLLED_DISTANCES_D:      # centred rows times U, entry by entry
            diff = centred_rows_minor(x, means)
            y = sum(diff[:, e, None, :] * prec_chol[:, e, :, None] for e in range(x.shape[-1]))
            return jnp.sum(y * y, axis=1)
        y = jnp.einsum("ne,ked->kdn", x, prec_chol, precision=HIGHEST)
        y = y - jnp.einsum("ke,ked->kd", means, prec_chol, precision=HIGHEST)[:, :, None]
        return jnp.sum(y * y, axis=1)

    def scatter_rows_minor(self, x, resp_t, centers):
        # Σ_n r (x−c)(x−c)ᵀ as a batched GEMM over components on centred rows (no cancellation).
        if x.shape[-1] <= UNROLLED_SCATTER_D:
            return _unrolled_scatter(x, resp_t, centers)
        a = _root_weighted_centred(x, resp_t, centers)
        return jnp.einsum("kmn,kon->kmo", a, a, precision=HIGHEST)

    def outer(self, a, coef):
        return coef[:, None, None] * a[:, :, None] * a[:, None, :]

    def from_scatter(self, scatter, nk):
        cov = scatter / nk[:, None, None]
        return 0.5 * (cov + jnp.swapaxes(cov, -1, -2))

    def add_reg(self, cov, reg_covar):
        return cov + reg_covar * eye(cov.shape[-1], cov.dtype)

    def variances(self, cov):
        return diagonal(cov)

    def precision_cholesky(self, cov):
        return _upper_cholesky_of_inverse(cov)

    def to_full_layout(self, a, n_components, n_features):
        return a

    def from_full_layout(self, a):
        return a

    def covariance_from_precision_cholesky(self, prec_chol):
        inv = _inverse_of_upper(prec_chol)
        return jnp.einsum("...ji,...jk->...ik", inv, inv, precision=HIGHEST)

    def precisions(self, prec_chol):
        return jnp.einsum("...ij,...kj->...ik", prec_chol, prec_chol, precision=HIGHEST)

    def precision_cholesky_from_precisions(self, precisions):
        return _cholesky_from_precision(precisions)

    def noise_transform(self, z, labels, prec_chol):
        # x − μ = U⁻ᵀ z has covariance U⁻ᵀ U⁻¹ = (U Uᵀ)⁻¹.
        inv_t = jnp.swapaxes(_inverse_of_upper(prec_chol), -1, -2)
        return jnp.einsum("nde,ne->nd", inv_t[labels], z, precision=HIGHEST)

    def component_shape(self, n_features):
        return (n_features, n_features)

    def scale(self, stat, s):
        return jnp.asarray(s)[..., None, None] * stat

    def unconstrain_precision_cholesky(self, prec_chol):
        rows, cols = jnp.triu_indices(prec_chol.shape[-1], 1)
        return (jnp.log(jnp.diagonal(prec_chol, axis1=-2, axis2=-1)),
                prec_chol[..., rows, cols])

    def constrain_precision_cholesky(self, log_diag, off_diag):
        d = log_diag.shape[-1]
        rows, cols = jnp.triu_indices(d, 1)
        diag = jnp.arange(d)
        u = jnp.zeros(log_diag.shape + (d,), log_diag.dtype).at[..., rows, cols].set(off_diag)
        return u.at[..., diag, diag].set(jnp.exp(log_diag))


class Tied(Full):
    name = "tied"

    def shape(self, n_components, n_features):
        return (n_features, n_features)

    def n_parameters(self, n_components, n_features):
        return n_features * (n_features + 1) // 2

    def log_det(self, prec_chol, n_features):
        return jnp.sum(jnp.log(diagonal(prec_chol)))[None]

    def distances(self, x, means, prec_chol):
        y = jnp.matmul(prec_chol.T, x.T, precision=HIGHEST)                  # (D, N)
        m = jnp.matmul(means, prec_chol, precision=HIGHEST)                  # (K, D)
        diff = y[None] - m[:, :, None]
        return jnp.sum(diff * diff, axis=1)

    def scatter_rows_minor(self, x, resp_t, centers):
        if x.shape[-1] <= UNROLLED_SCATTER_D:
            return jnp.sum(_unrolled_scatter(x, resp_t, centers), axis=0)
        a = _root_weighted_centred(x, resp_t, centers)
        return jnp.einsum("kmn,kon->mo", a, a, precision=HIGHEST)

    def reduce_component_scatter(self, scatter):
        return jnp.sum(scatter, axis=0)

    def outer(self, a, coef):
        return jnp.einsum("k,kd,ke->de", coef, a, a, precision=HIGHEST)

    def from_scatter(self, scatter, nk):
        cov = scatter / jnp.sum(nk)
        return 0.5 * (cov + cov.T)

    def noise_transform(self, z, labels, prec_chol):
        inv_t = _inverse_of_upper(prec_chol).T
        return jnp.matmul(z, inv_t.T, precision=HIGHEST)

    def per_component(self, cov_or_chol, n_components):
        return jnp.broadcast_to(cov_or_chol, (n_components,) + cov_or_chol.shape)

    def to_full_layout(self, a, n_components, n_features):
        xp = array_namespace(a)
        return xp.broadcast_to(a[..., None, :, :], a.shape[:-2] + (n_components,) + a.shape[-2:])

    def from_full_layout(self, a):
        return a[..., 0, :, :]

    def pool(self, values):
        return jnp.mean(values)

    def pool_outer(self, a, coef):
        return self.outer(a, coef) / a.shape[0]


def _squared_offsets(x: jax.Array, centers: jax.Array) -> jax.Array:
    """(K, D, N) (x_n − c_k)² per feature, rows minor: the diagonal models' E- and M-step
    operand."""
    diff = centred_rows_minor(x, centers)
    return diff * diff


class Diag(CovarianceModel):
    name = "diag"

    def shape(self, n_components, n_features):
        return (n_components, n_features)

    def n_parameters(self, n_components, n_features):
        return n_components * n_features

    def log_det(self, prec_chol, n_features):
        return jnp.sum(jnp.log(prec_chol), axis=-1)

    # Distances and scatter both contract the squared offsets (K, D, N) from the same centres (the
    # E-step's means are the statistics' centres), so XLA computes them once per chunk; each
    # contraction is a batched matrix-vector product (dot_general), ~30% faster on CPU than a
    # reduction over the middle or minor axis of the (K, D, N) products. Sums of squares: no
    # cancellation on offset float32 data.
    # the (K, D, C) squared offsets read every feature of a chunk along its rows: from a
    # (C, D) chunk that is a strided read XLA does not vectorise (diag N=100k D=K=16: one EM
    # iteration ~12 → ~8 ms with chunks transposed once per restart)
    rows_minor_chunks = True

    def distances(self, x, means, prec_chol):
        return jnp.einsum("kdn,kd->kn", _squared_offsets(x, means),
                          self.precision_weights(prec_chol, x.shape[-1]), precision=HIGHEST)

    def precision_weights(self, prec_chol, n_features):
        """(K, D) the precision of each component along each feature (spherical: repeated)."""
        p = self.precisions(prec_chol)
        return jnp.broadcast_to(p.reshape(p.shape[0], -1), (p.shape[0], n_features))

    def scatter_rows_minor(self, x, resp_t, centers):
        return jnp.einsum("kdn,kn->kd", _squared_offsets(x, centers), resp_t, precision=HIGHEST)

    def outer(self, a, coef):
        return coef[:, None] * a * a

    def from_scatter(self, scatter, nk):
        return scatter / nk[:, None]

    def add_reg(self, cov, reg_covar):
        return cov + reg_covar

    def variances(self, cov):
        return cov

    def precision_cholesky(self, cov):
        ok = jnp.all(cov > 0)
        return jax.lax.rsqrt(jnp.where(cov > 0, cov, 1.0)), ok

    def covariance_from_precision_cholesky(self, prec_chol):
        return 1.0 / (prec_chol * prec_chol)

    def precisions(self, prec_chol):
        return prec_chol * prec_chol

    def precision_cholesky_from_precisions(self, precisions):
        return jnp.sqrt(precisions)

    def noise_transform(self, z, labels, prec_chol):
        return z / prec_chol[labels]

    def to_full_layout(self, a, n_components, n_features):
        return a[..., :, None] * eye(n_features, a.dtype)

    def from_full_layout(self, a):
        return diagonal(a)

    def component_shape(self, n_features):
        return (n_features,)

    def scale(self, stat, s):
        return jnp.asarray(s)[..., None] * stat

    def unconstrain_precision_cholesky(self, prec_chol):
        return jnp.log(prec_chol), None

    def constrain_precision_cholesky(self, log_diag, off_diag):
        return jnp.exp(log_diag)


class Spherical(Diag):
    name = "spherical"

    def shape(self, n_components, n_features):
        return (n_components,)

    def n_parameters(self, n_components, n_features):
        return n_components

    def log_det(self, prec_chol, n_features):
        return n_features * jnp.log(prec_chol)

    def scatter_rows_minor(self, x, resp_t, centers):
        return jnp.mean(super().scatter_rows_minor(x, resp_t, centers), axis=-1)

    def reduce_component_scatter(self, scatter):
        return jnp.mean(scatter, axis=-1)

    def outer(self, a, coef):
        return coef * jnp.mean(a * a, axis=-1)

    def from_scatter(self, scatter, nk):
        return scatter / nk

    def noise_transform(self, z, labels, prec_chol):
        return z / prec_chol[labels][:, None]

    def to_full_layout(self, a, n_components, n_features):
        return a[..., None, None] * array_namespace(a).eye(n_features, dtype=a.dtype)

    def from_full_layout(self, a):
        return a[..., 0, 0]

    def component_shape(self, n_features):
        return ()

    def scale(self, stat, s):
        return s * stat


# ---------------------------------------------------------------------- every type as "full"
# Small problems run every covariance type in the full layout with the type as an OPERAND (one
# compiled program for all four; see gmmjax.fit): the M-step then constrains the full covariance.

TYPE_CODES = {"full": 0, "tied": 1, "diag": 2, "spherical": 3}


def constrained_covariances(centred: jax.Array, nk: jax.Array, type_code) -> jax.Array:
    """(K, D, D) covariances (without reg) of the type ``type_code`` (traced, see TYPE_CODES)
    from a full centred scatter (K, D, D) and eps-floored nk (K,): full Σ_k = S_k/n_k; tied
    Σ_j S_j / Σ_j n_j for every k; diag the diagonal of S_k/n_k; spherical its mean times I.
    The same arithmetic as each type's own M-step, in the full layout."""
    d = centred.shape[-1]
    identity = eye(d, centred.dtype)
    full = centred / nk[:, None, None]
    tied = jnp.broadcast_to(jnp.sum(centred, axis=0) / jnp.sum(nk), full.shape)
    variances = diagonal(full)                                               # (K, D)
    diag = variances[:, :, None] * identity
    spherical = jnp.mean(variances, axis=-1)[:, None, None] * identity
    cov = jnp.select([type_code == 0, type_code == 1, type_code == 2], [full, tied, diag],
                     spherical)
    return 0.5 * (cov + jnp.swapaxes(cov, -1, -2))


COVARIANCE_MODELS: dict[str, CovarianceModel] = {
    model.name: model for model in (Full(), Tied(), Diag(), Spherical())
}
COVARIANCE_TYPES = tuple(COVARIANCE_MODELS)
LOG_2PI = math.log(2 * math.pi)


def get_covariance_model(covariance_type: str) -> CovarianceModel:
    """The registry: the object for ``covariance_type`` or a ValueError that lists the valid ones."""
    try:
        return COVARIANCE_MODELS[covariance_type]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown covariance_type {covariance_type!r}; expected one of {list(COVARIANCE_TYPES)}."
        ) from None
