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


def from_covariances(weights, means, covariances, covariance_type: str = "full") -> MixtureParams:
    """Build params from covariances; the precision Cholesky is computed (NaN-free if not PD)."""
    model = get_covariance_model(covariance_type)
    covariances = jnp.asarray(covariances)
    prec_chol, _ = model.precision_cholesky(covariances)
    return MixtureParams(jnp.asarray(weights), jnp.asarray(means), covariances, prec_chol,
                         covariance_type)


def from_precisions(weights, means, precisions, covariance_type: str = "full") -> MixtureParams:
    """Build params from precisions (inverse covariances), as sklearn's ``precisions_init``."""
    model = get_covariance_model(covariance_type)
    prec_chol = model.precision_cholesky_from_precisions(jnp.asarray(precisions))
    return from_precisions_cholesky(weights, means, prec_chol, covariance_type)


def from_precisions_cholesky(weights, means, precisions_cholesky,
                             covariance_type: str = "full") -> MixtureParams:
    model = get_covariance_model(covariance_type)
    prec_chol = jnp.asarray(precisions_cholesky)
    cov = model.covariance_from_precision_cholesky(prec_chol)
    return MixtureParams(jnp.asarray(weights), jnp.asarray(means), cov, prec_chol, covariance_type)
