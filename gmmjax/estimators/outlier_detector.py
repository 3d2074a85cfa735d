"""``GaussianMixtureOutlierDetector``: outlier and novelty detection with a Gaussian mixture
density, following scikit-learn's outlier-detector conventions (``EllipticEnvelope``,
``LocalOutlierFactor``).
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin, _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from ..outliers import contamination_threshold
from ._base import x64_scope
from .gaussian_mixture import GaussianMixture

__all__ = ["GaussianMixtureOutlierDetector"]

_MIXTURE_PARAMS = ("n_components", "covariance_type", "tol", "reg_covar", "max_iter", "n_init",
                   "init_params", "weights_init", "means_init", "precisions_init", "random_state",
                   "chunk_size")


def _labels(scores, offset) -> np.ndarray:
    """+1 where score − offset ≥ 0, else −1 (computed in numpy so it agrees with
    ``decision_function`` bit for bit)."""
    return np.where(np.asarray(scores) - offset >= 0, 1, -1).astype(np.int64)


def _novelty_only(method: str):
    def check(self):
        if not self.novelty:
            raise AttributeError(
                f"{method} is not available when novelty=False, use fit_predict if you want to "
                "predict on training data. Use novelty=True if you want to use "
                "GaussianMixtureOutlierDetector for novelty detection and predict on new unseen "
                "data.")
        return True
    return check


def _outlier_only(self):
    if self.novelty:
        raise AttributeError(
            "fit_predict is not available when novelty=True. Use novelty=False if you want to "
            "predict on the training set.")
    return True


class GaussianMixtureOutlierDetector(OutlierMixin, BaseEstimator):
    """Flag low-density rows under a Gaussian mixture fitted by EM (gmmjax's engine).

    Scores are log densities (``score_samples``, higher = more normal). ``offset_`` is the
    ``100·contamination`` percentile of the training scores (linear interpolation, as
    ``EllipticEnvelope``; without ties exactly ``ceil(contamination·(n−1))`` training rows fall
    below it) or, when ``threshold`` is given, that absolute log density.
    ``decision_function(X) = score_samples(X) − offset_``; ``predict`` gives +1 (inlier,
    decision ≥ 0) or −1 (outlier).

    Parameters: the mixture's (``n_components``, ``covariance_type``, ``tol``, ``reg_covar``,
    ``max_iter``, ``n_init``, ``init_params``, ``weights_init``, ``means_init``,
    ``precisions_init``, ``random_state``, ``chunk_size``: as :class:`gmmjax.GaussianMixture`),
    then

    contamination : float in (0, 0.5], default 0.1 — fraction of training rows flagged.
    threshold : float or None — an absolute log-density offset; overrides ``contamination``.
    novelty : bool, default False — False: outlier detection on the training set
        (``fit_predict``; ``predict``, ``decision_function`` and ``score_samples`` are not
        available, as in ``LocalOutlierFactor``). True: novelty detection on new data
        (``predict``, ``decision_function``, ``score_samples``; no ``fit_predict``).
    refit_on_inliers : bool, default False — fit, drop the training rows below the offset, fit
        again on the inliers (zero weights, same shapes: nothing recompiles), then recompute the
        offset on all training rows under the refitted mixture.

    Attributes: ``offset_``, ``mixture_`` (the fitted :class:`gmmjax.GaussianMixture`),
    ``training_scores_`` (log densities of the training rows under the final mixture),
    ``labels_`` (+1/−1 for the training rows), ``n_iter_``, ``converged_``,
    ``lower_bound_`` (of the final mixture fit), ``n_features_in_``, ``feature_names_in_``,
    ``params_`` (the :class:`gmmjax.MixtureParams`).
    """

    _parameter_constraints: dict = {
        **{name: GaussianMixture._parameter_constraints[name] for name in _MIXTURE_PARAMS},
        "contamination": [Interval(numbers.Real, 0.0, 0.5, closed="right")],
        "threshold": [None, Interval(numbers.Real, None, None, closed="neither")],
        "novelty": ["boolean"],
        "refit_on_inliers": ["boolean"],
    }

    def __init__(self, n_components=1, *, covariance_type="full", tol=1e-3, reg_covar=1e-6,
                 max_iter=100, n_init=1, init_params="kmeans", weights_init=None, means_init=None,
                 precisions_init=None, random_state=None, chunk_size=None, contamination=0.1,
                 threshold=None, novelty=False, refit_on_inliers=False):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.chunk_size = chunk_size
        self.contamination = contamination
        self.threshold = threshold
        self.novelty = novelty
        self.refit_on_inliers = refit_on_inliers

    def _offset(self, scores, sample_weight):
        if self.threshold is not None:
            return float(self.threshold)
        # np.percentile (linear), as EllipticEnvelope; weighted = percentile of repeated rows.
        with x64_scope(np.float64):
            w = None if sample_weight is None else np.asarray(sample_weight, np.float64)
            return float(contamination_threshold(np.asarray(scores, np.float64),
                                                 self.contamination, w))

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, sample_weight=None):
        """Fit the mixture (and, with ``refit_on_inliers``, refit it on the inliers) and set
        ``offset_``. ``sample_weight`` (N,) row weights go to the mixture's EM. Returns self."""
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=2)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=X.dtype,
                                                 ensure_non_negative=True)
        mixture = GaussianMixture(**{name: getattr(self, name) for name in _MIXTURE_PARAMS})
        mixture.fit(X, sample_weight=sample_weight)
        scores = mixture.score_samples(X)
        offset = self._offset(scores, sample_weight)
        if self.refit_on_inliers:
            keep = scores >= offset
            base = np.ones(X.shape[0], X.dtype) if sample_weight is None else sample_weight
            weights = np.where(keep, base, 0).astype(X.dtype)
            if np.count_nonzero(weights) < max(2, self.n_components):
                raise ValueError(
                    f"refit_on_inliers: only {np.count_nonzero(weights)} training rows are "
                    f"inliers, fewer than n_components={self.n_components}; lower the threshold "
                    "or the contamination.")
            mixture.fit(X, sample_weight=weights)
            scores = mixture.score_samples(X)
            offset = self._offset(scores, sample_weight)
        self.mixture_ = mixture
        self.n_iter_ = mixture.n_iter_
        self.converged_ = mixture.converged_
        self.lower_bound_ = mixture.lower_bound_
        self.training_scores_ = scores
        self.offset_ = offset
        self.labels_ = _labels(scores, offset)
        return self

    @available_if(_outlier_only)
    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit on X and label its rows: +1 inlier, −1 outlier (novelty=False only)."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def _scores(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return self.mixture_.score_samples(X)

    @available_if(_novelty_only("score_samples"))
    def score_samples(self, X):
        """Log density of each row under the mixture (higher = more normal). -> (N,)."""
        return self._scores(X)

    @available_if(_novelty_only("decision_function"))
    def decision_function(self, X):
        """``score_samples(X) − offset_``: negative for outliers. -> (N,)."""
        return self._scores(X) - self.offset_

    @available_if(_novelty_only("predict"))
    def predict(self, X):
        """+1 for inliers (decision ≥ 0), −1 for outliers. -> int64 (N,)."""
        return _labels(self._scores(X), self.offset_)

    @property
    def params_(self):
        """The fitted :class:`gmmjax.MixtureParams`."""
        check_is_fitted(self)
        return self.mixture_.params_
