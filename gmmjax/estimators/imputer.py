"""``GaussianMixtureImputer``: a scikit-learn transformer that fills NaN entries with a Gaussian
mixture fitted to the observed entries (EM that marginalises the missing ones)."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin, _fit_context
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ..covariance import COVARIANCE_TYPES
from ._base import BaseMixtureEstimator
from .gaussian_mixture import GaussianMixture

__all__ = ["GaussianMixtureImputer"]


class GaussianMixtureImputer(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Impute missing values (NaN) with a Gaussian mixture fitted by EM on the observed entries.

    ``fit`` fits :class:`gmmjax.GaussianMixture` with ``missing="marginalize"`` (kept as
    ``mixture_``); ``transform`` replaces each NaN by E[x_m | x_o] under the mixture
    (posterior-weighted conditional means), or with ``sample_posterior=True`` by a draw from the
    conditional (multiple imputation: vary ``random_state``). Observed entries are returned
    unchanged. Columns must have at least one observed entry at fit time. A row with nothing
    observed gets the mixture mean.

    Parameters: ``n_components``, ``covariance_type``, ``tol``, ``reg_covar``, ``max_iter``,
    ``n_init``, ``init_params``, ``random_state``, ``chunk_size`` as in
    :class:`gmmjax.GaussianMixture`; ``sample_posterior`` (bool). Attributes: ``mixture_``,
    ``n_iter_`` (EM iterations), ``n_features_in_``, ``feature_names_in_``.
    """

    _parameter_constraints: dict = {
        **{name: BaseMixtureEstimator._parameter_constraints[name] for name in (
            "n_components", "tol", "reg_covar", "max_iter", "n_init", "init_params",
            "random_state", "chunk_size")},
        "covariance_type": [StrOptions(set(COVARIANCE_TYPES))],
        "sample_posterior": ["boolean"],
    }

    def __init__(self, n_components=1, *, covariance_type="full", tol=1e-3, reg_covar=1e-6,
                 max_iter=100, n_init=1, init_params="kmeans", sample_posterior=False,
                 random_state=None, chunk_size=None):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.sample_posterior = sample_posterior
        self.random_state = random_state
        self.chunk_size = chunk_size

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, sample_weight=None):
        """Fit the mixture to the observed entries of X (N, D). Returns self."""
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_all_finite="allow-nan",
                          ensure_min_samples=2)
        self.mixture_ = GaussianMixture(
            self.n_components, covariance_type=self.covariance_type, tol=self.tol,
            reg_covar=self.reg_covar, max_iter=self.max_iter, n_init=self.n_init,
            init_params=self.init_params, random_state=self.random_state,
            chunk_size=self.chunk_size, missing="marginalize").fit(X, sample_weight=sample_weight)
        self.n_iter_ = self.mixture_.n_iter_
        return self

    def transform(self, X):
        """X with NaN entries imputed, in X's float dtype. -> (N, D)."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_all_finite="allow-nan",
                          reset=False)
        seed = self.random_state if self.sample_posterior else None
        if self.sample_posterior and seed is None:
            seed = np.random.mtrand._rand   # fresh draws each call, like sklearn's None
        return self.mixture_.impute(X, random_state=seed).astype(X.dtype, copy=False)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags
