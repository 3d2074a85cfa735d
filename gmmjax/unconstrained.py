"""An unconstrained parameterisation of :class:`MixtureParams`, for gradient-based training.

Every real value of an :class:`UnconstrainedParams` maps to a valid mixture:

- ``logits`` (K,): weights = softmax(logits) (``to_unconstrained`` gives log weights);
- ``means`` (K, D): unchanged;
- ``log_diag``: log of the diagonal of the precision Cholesky factor U (full (K, D), tied (D,),
  diag (K, D), spherical (K,));
- ``off_diag``: the strictly-upper entries of U (U is upper-triangular with precision = U Uᵀ, the
  scikit-learn convention), packed row by row as ``jnp.triu_indices(D, 1)`` orders them: full
  (K, D(D−1)/2), tied (D(D−1)/2,), ``None`` for diag and spherical.

``from_unconstrained(to_unconstrained(p))`` reproduces ``p`` up to floating-point rounding (a few
ulps: exp∘log and softmax∘log are not bit-exact), for every covariance type. The type-specific
part lives in the covariance registry (``unconstrain_precision_cholesky`` /
``constrain_precision_cholesky``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from .covariance import get_covariance_model
from .params import MixtureParams, from_precisions_cholesky


@dataclasses.dataclass(frozen=True)
class UnconstrainedParams:
    """Unconstrained mixture parameters (a pytree; ``covariance_type`` is static metadata)."""

    logits: jax.Array
    means: jax.Array
    log_diag: jax.Array
    off_diag: jax.Array | None
    covariance_type: str = "full"

    def replace(self, **changes) -> "UnconstrainedParams":
        return dataclasses.replace(self, **changes)


jax.tree_util.register_dataclass(
    UnconstrainedParams,
    data_fields=["logits", "means", "log_diag", "off_diag"],
    meta_fields=["covariance_type"],
)


def to_unconstrained(params: MixtureParams) -> UnconstrainedParams:
    """Unconstrained coordinates of ``params`` (log weights, means, log-diagonal and strictly-upper
    part of the precision Cholesky factor). Pure: works under jit, vmap and grad."""
    if not isinstance(params, MixtureParams):
        raise TypeError(f"Expected a gmmjax.MixtureParams; got {type(params).__name__}.")
    model = get_covariance_model(params.covariance_type)
    log_diag, off_diag = model.unconstrain_precision_cholesky(params.precisions_cholesky)
    return UnconstrainedParams(jnp.log(params.weights), params.means, log_diag, off_diag,
                               params.covariance_type)


def from_unconstrained(u: UnconstrainedParams) -> MixtureParams:
    """The :class:`MixtureParams` of unconstrained coordinates ``u`` (weights by softmax, U with a
    positive diagonal by exp). Differentiable; the covariances are recomputed from U."""
    if not isinstance(u, UnconstrainedParams):
        raise TypeError(f"Expected a gmmjax.UnconstrainedParams; got {type(u).__name__}.")
    model = get_covariance_model(u.covariance_type)
    prec_chol = model.constrain_precision_cholesky(u.log_diag, u.off_diag)
    return from_precisions_cholesky(jax.nn.softmax(u.logits, axis=-1), u.means, prec_chol,
                                    u.covariance_type)
