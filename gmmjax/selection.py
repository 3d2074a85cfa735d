"""Information criteria (BIC, AIC) and parameter counts."""

from __future__ import annotations

import jax.numpy as jnp

from .covariance import get_covariance_model
from .density import log_prob
from .params import MixtureParams


def n_parameters(params: MixtureParams) -> int:
    """Free parameters: covariances + K·D means + K−1 weights (sklearn's ``_n_parameters``)."""
    k, d = params.n_components, params.n_features
    return get_covariance_model(params.covariance_type).n_parameters(k, d) + k * d + k - 1


def _total_log_likelihood(params, X, sample_weight):
    ll = log_prob(params, X)
    if sample_weight is None:
        return jnp.sum(ll), ll.shape[0]
    w = jnp.asarray(sample_weight, ll.dtype)
    return jnp.sum(w * ll), jnp.sum(w)


def bic(params: MixtureParams, X, sample_weight=None) -> jnp.ndarray:
    """Bayesian information criterion −2 log L + p ln n (lower is better)."""
    total, n = _total_log_likelihood(params, X, sample_weight)
    return -2.0 * total + n_parameters(params) * jnp.log(n)


def aic(params: MixtureParams, X, sample_weight=None) -> jnp.ndarray:
    """Akaike information criterion −2 log L + 2p (lower is better)."""
    total, _ = _total_log_likelihood(params, X, sample_weight)
    return -2.0 * total + 2.0 * n_parameters(params)
