"""The ``MixtureParams`` pytree and conversions between covariances and precision Cholesky factors."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from .covariance import get_covariance_model


@dataclasses.dataclass(frozen=True)
class MixtureParams:
    """Parameters of a Gaussian mixture (a pytree; ``covariance_type`` is static metadata).

    weights (K,), means (K, D), covariances and precisions_cholesky in the covariance type's
    shape: full (K, D, D), tied (D, D), diag (K, D), spherical (K,). ``precisions_cholesky`` is
    upper-triangular U with precision = U Uᵀ, as in scikit-learn. No validation here: the
    constructor also runs under ``vmap`` and ``jit``; :func:`gmmjax.validation` checks on the host.
    """

    weights: jax.Array
    means: jax.Array
    covariances: jax.Array
    precisions_cholesky: jax.Array
    covariance_type: str = "full"

    @property
    def n_components(self) -> int:
        return self.means.shape[-2]

    @property
    def n_features(self) -> int:
        return self.means.shape[-1]

    @property
    def precisions(self) -> jax.Array:
        return get_covariance_model(self.covariance_type).precisions(self.precisions_cholesky)

    def replace(self, **changes) -> "MixtureParams":
        return dataclasses.replace(self, **changes)

    def astype(self, dtype) -> "MixtureParams":
        return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), self)


jax.tree_util.register_dataclass(
    MixtureParams,
    data_fields=["weights", "means", "covariances", "precisions_cholesky"],
    meta_fields=["covariance_type"],
)


# Up to this many features every covariance type can be held in the "full" layout: one compiled
# program serves all four types (K·D² instead of K·D flops per row: immaterial for small D).
FULL_LAYOUT_MAX_FEATURES = 8


def to_full_layout(params: MixtureParams) -> MixtureParams:
    """The same mixture with covariances and factors as (..., K, D, D) matrices and
    covariance_type "full" (NumPy leaves stay NumPy: nothing is compiled on the host path)."""
    model = get_covariance_model(params.covariance_type)
    k, d = params.means.shape[-2:]
    return MixtureParams(params.weights, params.means,
                         model.to_full_layout(params.covariances, k, d),
                         model.to_full_layout(params.precisions_cholesky, k, d), "full")


def from_full_layout(params: MixtureParams, covariance_type: str) -> MixtureParams:
    """Inverse of :func:`to_full_layout`: full-layout matrices that hold ``covariance_type``'s
    structure (as a constrained fit produces them) in that type's own layout."""
    model = get_covariance_model(covariance_type)
    return MixtureParams(params.weights, params.means,
                         model.from_full_layout(params.covariances),
                         model.from_full_layout(params.precisions_cholesky), covariance_type)


def _valid_factor(prec_chol: jax.Array, ok, covariance_type: str, source: str) -> jax.Array:
    """``prec_chol`` when ``ok`` and its diagonal is finite and positive. Concrete input: else a
    ValueError; traced input (values unknown): else a NaN factor, so every density computed from
    it is NaN rather than a silently substituted identity."""
    model = get_covariance_model(covariance_type)
    diagonal = model.variances(prec_chol)     # U's diagonal (diag/spherical: U itself)
    ok = ok & jnp.all(jnp.isfinite(prec_chol)) & jnp.all(diagonal > 0)
    if isinstance(ok, jax.core.Tracer):
        return jnp.where(ok, prec_chol, jnp.nan)
    if not bool(ok):
        raise ValueError(f"The {source} ({covariance_type}) are ill-defined: each must be finite "
                         f"and {'symmetric ' if model.component_shape(2) == (2, 2) else ''}"
                         "positive-definite (positive variances); got an indefinite, negative or "
                         "non-finite one.")
    return prec_chol


def _check_symmetric(matrices, covariance_type: str, source: str) -> None:
    """Full/tied matrices given concretely must be symmetric (Cholesky reads one triangle)."""
    model = get_covariance_model(covariance_type)
    if (len(model.component_shape(1)) == 2 and not isinstance(matrices, jax.core.Tracer)
            and matrices.ndim >= 2):
        m = jnp.asarray(matrices)
        if not bool(jnp.allclose(m, jnp.swapaxes(m, -1, -2), equal_nan=True)):
            raise ValueError(f"The {source} ({covariance_type}) must be symmetric.")


def from_covariances(weights, means, covariances, covariance_type: str = "full") -> MixtureParams:
    """Build params from covariances; the precision Cholesky factors are computed.

    An indefinite, negative or non-finite covariance raises a ValueError ("ill-defined") for
    concrete input; under ``jit``/``vmap`` its factor is NaN (densities then come out NaN).
    """
    model = get_covariance_model(covariance_type)
    covariances = jnp.asarray(covariances)
    _check_symmetric(covariances, covariance_type, "covariances")
    prec_chol, ok = model.precision_cholesky(covariances)
    prec_chol = _valid_factor(prec_chol, ok, covariance_type, "covariances")
    return MixtureParams(jnp.asarray(weights), jnp.asarray(means), covariances, prec_chol,
                         covariance_type)


def from_precisions(weights, means, precisions, covariance_type: str = "full") -> MixtureParams:
    """Build params from precisions (inverse covariances), as sklearn's ``precisions_init``.
    Invalid precisions: as :func:`from_covariances` (ValueError, or NaN factors when traced)."""
    model = get_covariance_model(covariance_type)
    precisions = jnp.asarray(precisions)
    _check_symmetric(precisions, covariance_type, "precisions")
    prec_chol = model.precision_cholesky_from_precisions(precisions)
    prec_chol = _valid_factor(prec_chol, True, covariance_type, "precisions")
    return from_precisions_cholesky(weights, means, prec_chol, covariance_type)


def from_precisions_cholesky(weights, means, precisions_cholesky,
                             covariance_type: str = "full") -> MixtureParams:
    """Build params from upper-triangular precision Cholesky factors (positive diagonal;
    otherwise as :func:`from_covariances`)."""
    model = get_covariance_model(covariance_type)
    prec_chol = _valid_factor(jnp.asarray(precisions_cholesky), True, covariance_type,
                              "precision Cholesky factors")
    cov = model.covariance_from_precision_cholesky(prec_chol)
    return MixtureParams(jnp.asarray(weights), jnp.asarray(means), cov, prec_chol, covariance_type)
