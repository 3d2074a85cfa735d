"""Anomaly and novelty detection with a density: thresholds, masks, and the refit-on-inliers recipe.

Conventions follow scikit-learn's outlier detectors (``EllipticEnvelope``, ``LocalOutlierFactor``):
scores are log densities (higher = more normal); the offset is the ``100·contamination``-th
percentile of the training scores (linear interpolation, as ``np.percentile``); a row is an
inlier when ``score − offset >= 0`` and gets label +1, otherwise −1. Without ties exactly
``ceil(contamination · (n − 1))`` training rows fall strictly below the offset.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .covariance import array_namespace
from .density import log_prob
from .em import FitResult
from .fit import fit
from .validation import check_data, is_traced


def check_contamination(contamination) -> float:
    """contamination must be a real in (0, 0.5] (sklearn's rule for EllipticEnvelope/LOF)."""
    if is_traced(contamination):
        return contamination
    if isinstance(contamination, bool) or not isinstance(contamination, numbers.Real):
        raise ValueError(f"contamination must be a float in (0, 0.5]; got {contamination!r}.")
    value = float(contamination)
    if not 0.0 < value <= 0.5:
        raise ValueError(f"contamination must be in (0, 0.5]; got {contamination!r}.")
    return value


def contamination_threshold(scores, contamination, sample_weight=None) -> jax.Array:
    """The offset: the ``100·contamination`` percentile of ``scores`` (linear interpolation).

    Without weights this is ``np.percentile(scores, 100·contamination)``: rows scoring strictly
    below it are outliers, ``ceil(contamination·(n−1))`` of them when the scores have no ties.
    With ``sample_weight`` (N,) the percentile is that of the data with each row repeated
    ``w`` times (exact for integer weights; zero-weight rows are ignored), so weighting and
    repeating rows give the same offset. Works under jit (contamination may then be traced).
    """
    contamination = check_contamination(contamination)
    # NumPy scores are ranked in NumPy (nothing to compile), anything else in jax.numpy
    scores = scores if isinstance(scores, np.ndarray) else jnp.asarray(scores)
    xp = array_namespace(scores)
    if scores.ndim != 1 or scores.shape[0] < 1:
        raise ValueError(f"scores must be a non-empty 1-D array; got shape {scores.shape}.")
    if sample_weight is None:
        return xp.percentile(scores, 100.0 * contamination).astype(scores.dtype)
    w = xp.asarray(sample_weight, scores.dtype)
    if w.shape != scores.shape:
        raise ValueError(f"sample_weight must have shape {scores.shape} to match scores; got "
                         f"{w.shape}.")
    return _weighted_percentile(scores, w, contamination)


def _weighted_percentile(scores, w, fraction):
    xp = array_namespace(scores)
    order = xp.argsort(scores)
    s, cw = scores[order], xp.cumsum(w[order])
    pos = xp.clip(fraction * (cw[-1] - 1.0), 0.0, None)
    lo = xp.floor(pos)

    def at(t):   # the sorted value occupying position t of the repeated data
        return s[xp.minimum(xp.searchsorted(cw, t, side="right"), s.shape[0] - 1)]

    v_lo = at(lo)
    v_hi = at(xp.minimum(lo + 1.0, xp.maximum(cw[-1] - 1.0, 0.0)))
    return (v_lo + (pos - lo) * (v_hi - v_lo)).astype(scores.dtype)


def decision_function(scores, offset) -> jax.Array:
    """``scores − offset``: negative for outliers, ≥ 0 for inliers (NumPy for NumPy scores)."""
    return (scores if isinstance(scores, np.ndarray) else jnp.asarray(scores)) - offset


def outlier_mask(scores, offset) -> jax.Array:
    """Boolean (N,): True where the score is strictly below the offset (an outlier)."""
    return decision_function(scores, offset) < 0


def inlier_labels(scores, offset) -> jax.Array:
    """(N,) int: +1 for inliers (score ≥ offset), −1 for outliers (sklearn's ``predict``)."""
    mask = outlier_mask(scores, offset)
    return array_namespace(mask).where(mask, -1, 1).astype(np.int32)


class OutlierFit(NamedTuple):
    """What :func:`fit_outlier_detector` returns; unpacks as ``fit_result, offset, scores``.

    Attributes:
      fit_result: the :class:`gmmjax.FitResult` of the (re)fitted mixture.
      offset: () the log-density threshold; rows scoring strictly below it are outliers.
      scores: (N,) the training rows' log densities under ``fit_result.params``.
    """

    fit_result: FitResult
    offset: jax.Array
    scores: jax.Array

    @property
    def params(self):
        """The fitted :class:`gmmjax.MixtureParams` (``fit_result.params``)."""
        return self.fit_result.params

    @property
    def labels(self) -> jax.Array:
        """(N,) +1 for inlier training rows, −1 for outliers (:func:`inlier_labels`)."""
        return inlier_labels(self.scores, self.offset)


def fit_outlier_detector(key: jax.Array, X, n_components: int, *, contamination=0.1,
                         threshold=None, refit_on_inliers: bool = False,
                         **fit_kwargs) -> OutlierFit:
    """Fit a mixture and its outlier offset. Returns an :class:`OutlierFit`
    ``(fit_result, offset, scores)``: the FitResult, the log-density offset and the (N,)
    training scores (it also unpacks as a 3-tuple).

    ``threshold`` (an absolute log density) replaces the contamination percentile when given.
    With ``refit_on_inliers`` the recipe is: fit, drop the rows below the offset, fit again on the
    inliers (same key and settings), then recompute the offset on all of ``X`` under the refitted
    model, so the contamination fraction still refers to the full training set.
    ``fit_kwargs`` go to :func:`gmmjax.fit` (covariance_type, n_init, sample_weight, ...).
    """
    x = check_data(X, host=True)      # NumPy rows stay on the host (see fit)
    if threshold is None:
        contamination = check_contamination(contamination)
    else:
        threshold = _check_threshold(threshold)
    sample_weight = fit_kwargs.pop("sample_weight", None)
    result = fit(key, x, n_components, sample_weight=sample_weight, **fit_kwargs)
    scores, offset = _scores_and_offset(result, x, contamination, threshold, sample_weight)
    if refit_on_inliers:
        xp = array_namespace(scores)
        keep = ~outlier_mask(scores, offset)
        base = (xp.ones(x.shape[0], x.dtype) if sample_weight is None
                else xp.asarray(sample_weight, x.dtype))
        result = fit(key, x, n_components, sample_weight=xp.where(keep, base, 0.0).astype(x.dtype),
                     **fit_kwargs)
        scores, offset = _scores_and_offset(result, x, contamination, threshold, sample_weight)
    if isinstance(scores, np.ndarray):
        scores, offset = jax.device_put((scores, offset))
    return OutlierFit(result, offset, scores)


def _scores_and_offset(result, x, contamination, threshold, sample_weight):
    """The training scores and the offset; on the host (NumPy) unless anything is traced."""
    scores = log_prob(result.params, x)
    if not is_traced(scores, sample_weight, contamination):
        scores = np.asarray(scores)
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight)
    return scores, _offset(scores, contamination, threshold, sample_weight)


def _offset(scores, contamination, threshold, sample_weight=None):
    if threshold is not None:
        return array_namespace(scores).asarray(threshold, scores.dtype)
    return contamination_threshold(scores, contamination, sample_weight)


def _check_threshold(threshold) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) \
            or not np.isfinite(float(threshold)):
        raise ValueError(f"threshold must be a finite log-density value (a float) or None; got "
                         f"{threshold!r}.")
    return float(threshold)
