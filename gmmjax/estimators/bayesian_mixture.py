"""``BayesianGaussianMixture``: scikit-learn's variational estimator as a facade over
:func:`gmmjax.fit_bayesian`."""

from __future__ import annotations

import functools
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.utils import check_array
from sklearn.utils._param_validation import Interval, StrOptions

from ..bayesian import (WEIGHT_CONCENTRATION_PRIOR_TYPES, BayesianParams, BayesianPriors,
                        check_priors, evaluate, fit_bayesian)
from ..covariance import COVARIANCE_TYPES, get_covariance_model
from ..rows import auto_chunk_size
from ._base import UNUSED_KEY, BaseMixtureEstimator, initial_resp, pad_rows

__all__ = ["BayesianGaussianMixture"]

_F64 = np.dtype(np.float64)


class _State(NamedTuple):
    posterior: BayesianParams
    priors: BayesianPriors


class BayesianGaussianMixture(BaseMixtureEstimator):
    """Variational Bayesian Gaussian mixture on the JAX engine; a drop-in for
    ``sklearn.mixture.BayesianGaussianMixture`` (same keyword-only parameters, attributes,
    methods and errors). Unneeded components are switched off (weights near 0).

    Parameters are scikit-learn's; after them the gmmjax extension ``chunk_size`` (rows per chunk
    of the E-step statistics; None = automatic). ``fit`` also accepts ``sample_weight``
    (frequency weights; they also weight the default mean and covariance priors).

    Attributes as sklearn: ``weights_``, ``means_``, ``covariances_``, ``precisions_``,
    ``precisions_cholesky_``, ``weight_concentration_prior_``, ``weight_concentration_`` (a tuple
    ``(a, b)`` for the Dirichlet process, ``(K,)`` for the Dirichlet distribution),
    ``mean_precision_prior_``, ``mean_precision_``, ``mean_prior_``, ``degrees_of_freedom_prior_``,
    ``degrees_of_freedom_``, ``covariance_prior_``, ``converged_``, ``n_iter_``, ``lower_bound_``
    (the total ELBO, not a mean), ``lower_bounds_``, ``n_features_in_``. ``posterior_`` is the
    :class:`gmmjax.BayesianParams`.

    As sklearn, the fit runs in float64 whatever X's dtype (under a scoped x64): the bound is a
    total over samples and float32 would blur the absolute ``tol``. ``mean_prior_`` keeps X's
    dtype, as do diag/spherical ``covariance_prior_``.

    Deliberate differences from scikit-learn (1.9.1):

    * initialisations are scikit-learn's own, drawn from ``random_state`` as it draws them, so a
      fresh fit is scikit-learn's; "tied" with the point-mass starts ("k-means++",
      "random_from_data") differs on purpose, as in GaussianMixture.
    * with ``covariance_type='tied'``, ``lower_bound_`` and the ``lower_bounds_`` entries are
      scalars (sklearn: arrays of shape (1,), an artefact of its code).
    * a scalar ``covariance_prior`` with full/tied raises the shape ``ValueError`` (sklearn: a
      ``TypeError`` from numpy); an array ``covariance_prior`` with spherical must hold one value
      (sklearn accepts any array unchecked and then broadcasts or fails).
    """

    _parameter_constraints: dict = {
        **BaseMixtureEstimator._parameter_constraints,
        "covariance_type": [StrOptions(set(COVARIANCE_TYPES))],
        "weight_concentration_prior_type": [StrOptions(set(WEIGHT_CONCENTRATION_PRIOR_TYPES))],
        "weight_concentration_prior": [None, Interval(numbers.Real, 0.0, None, closed="neither")],
        "mean_precision_prior": [None, Interval(numbers.Real, 0.0, None, closed="neither")],
        "mean_prior": [None, "array-like"],
        "degrees_of_freedom_prior": [None, Interval(numbers.Real, 0.0, None, closed="neither")],
        "covariance_prior": [None, "array-like",
                             Interval(numbers.Real, 0.0, None, closed="neither")],
    }

    def __init__(self, *, n_components=1, covariance_type="full", tol=1e-3, reg_covar=1e-6,
                 max_iter=100, n_init=1, init_params="kmeans",
                 weight_concentration_prior_type="dirichlet_process",
                 weight_concentration_prior=None, mean_precision_prior=None, mean_prior=None,
                 degrees_of_freedom_prior=None, covariance_prior=None, random_state=None,
                 warm_start=False, verbose=0, verbose_interval=10, chunk_size=None):
        super().__init__(n_components=n_components, tol=tol, reg_covar=reg_covar,
                         max_iter=max_iter, n_init=n_init, init_params=init_params,
                         random_state=random_state, warm_start=warm_start, verbose=verbose,
                         verbose_interval=verbose_interval, chunk_size=chunk_size)
        self.covariance_type = covariance_type
        self.weight_concentration_prior_type = weight_concentration_prior_type
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_precision_prior = mean_precision_prior
        self.mean_prior = mean_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior

    # ------------------------------------------------------------------ hooks

    def _check_parameters(self, X):
        d = X.shape[1]
        mean_prior = None
        if self.mean_prior is not None:
            mean_prior = check_array(self.mean_prior, dtype=[np.float64, np.float32],
                                     ensure_2d=False)
        cov_prior = None
        if self.covariance_prior is not None:
            if self.covariance_type == "spherical" and np.ndim(self.covariance_prior) == 0:
                cov_prior = np.asarray(self.covariance_prior, dtype=np.float64)
            else:
                cov_prior = check_array(self.covariance_prior, dtype=[np.float64, np.float32],
                                        ensure_2d=False)
        check_priors(d, self.covariance_type,
                     weight_concentration_prior=self.weight_concentration_prior,
                     mean_precision_prior=self.mean_precision_prior, mean_prior=mean_prior,
                     degrees_of_freedom_prior=self.degrees_of_freedom_prior,
                     covariance_prior=cov_prior)
        self._mean_prior, self._covariance_prior = mean_prior, cov_prior
        self.weight_concentration_prior_ = (1.0 / self.n_components
                                            if self.weight_concentration_prior is None
                                            else self.weight_concentration_prior)
        self.mean_precision_prior_ = (1.0 if self.mean_precision_prior is None
                                      else self.mean_precision_prior)
        self.degrees_of_freedom_prior_ = (d if self.degrees_of_freedom_prior is None
                                          else self.degrees_of_freedom_prior)
        self._x_dtype = np.dtype(X.dtype)

    def _fit_engine(self, random_state, X, sample_weight, *, init, n_init, max_iter,
                    prev_lower_bound):
        n, d = X.shape
        chunk = (self.chunk_size if self.chunk_size is not None
                 else auto_chunk_size(n, self.n_components, d))
        # Zero-weight padding rows (to >= 128 rows): many small N share one compiled program.
        x, w = pad_rows(np.asarray(X, _F64), sample_weight, chunk)
        if init is None:      # scikit-learn's own initialisation, drawn from random_state
            resp = initial_resp(X, sample_weight, self.n_components, self.init_params,
                                random_state, n_init)
            start = np.pad(resp.astype(_F64), [(0, 0), (0, x.shape[0] - n), (0, 0)])
        else:
            start = init.posterior
        with jax.enable_x64(True):
            result = fit_bayesian(
                UNUSED_KEY, jax.device_put(x), self.n_components,
                covariance_type=self.covariance_type,
                weight_concentration_prior_type=self.weight_concentration_prior_type,
                weight_concentration_prior=self.weight_concentration_prior,
                mean_precision_prior=self.mean_precision_prior, mean_prior=self._mean_prior,
                degrees_of_freedom_prior=self.degrees_of_freedom_prior,
                covariance_prior=self._covariance_prior,
                init=start, n_init=n_init,
                max_iter=max_iter, tol=self.tol, reg_covar=self.reg_covar, sample_weight=w,
                chunk_size=chunk,
                initial_lower_bound=None if prev_lower_bound is None else float(
                    np.squeeze(prev_lower_bound)))
            result = jax.device_get(result)
        return result._replace(params=_State(result.posterior, result.priors))

    def _get_state(self):
        conc = self.weight_concentration_
        if isinstance(conc, tuple):
            conc = np.stack(conc)
        post = BayesianParams(conc, self.mean_precision_, self.means_, self.degrees_of_freedom_,
                              self.covariances_, self.precisions_cholesky_, self.covariance_type,
                              self.weight_concentration_prior_type)
        return _State(jax.tree_util.tree_map(lambda a: np.asarray(a, _F64), post), None)

    def _set_state(self, state, dtype):
        post, priors = state
        as64 = functools.partial(np.asarray, dtype=_F64)
        conc = as64(post.weight_concentration)
        self.weight_concentration_ = (conc[0], conc[1]) if conc.ndim == 2 else conc
        self.mean_precision_ = as64(post.mean_precision)
        self.means_ = as64(post.means)
        dof = as64(post.degrees_of_freedom)
        self.degrees_of_freedom_ = dof[()] if dof.ndim == 0 else dof
        self.covariances_ = as64(post.covariances)
        self.precisions_cholesky_ = as64(post.precisions_cholesky)
        # on the host (NumPy): no eager XLA op per fit (warm-start loops call fit many times)
        self.weights_ = as64(post.replace(weight_concentration=conc).weights)
        chol = self.precisions_cholesky_
        matrices = len(get_covariance_model(self.covariance_type).component_shape(2)) == 2
        self.precisions_ = chol @ np.swapaxes(chol, -1, -2) if matrices else chol * chol
        if priors is not None:
            x_dtype = getattr(self, "_x_dtype", _F64)
            self.mean_prior_ = (np.asarray(priors.mean, x_dtype) if self._mean_prior is None
                                else self._mean_prior)
            if self._covariance_prior is not None:
                self.covariance_prior_ = self._covariance_prior
            elif len(get_covariance_model(self.covariance_type).component_shape(2)) == 2:
                self.covariance_prior_ = as64(priors.covariance)          # np.cov: float64
            else:
                cov = np.asarray(priors.covariance, x_dtype)              # np.var keeps dtype
                self.covariance_prior_ = cov[()] if cov.ndim == 0 else cov

    def _log_resp_and_norm(self, x):
        post = self._get_state().posterior
        return evaluate(jax.tree_util.tree_map(lambda a: jnp.asarray(a, x.dtype), post), x,
                        self.chunk_size)

    def _fitted_dtype(self):
        return _F64

    # ------------------------------------------------------------------ gmmjax extensions

    @property
    def posterior_(self) -> BayesianParams:
        """The fitted variational posterior as a :class:`gmmjax.BayesianParams` (numpy leaves)."""
        from sklearn.utils.validation import check_is_fitted
        check_is_fitted(self)
        return self._get_state().posterior
