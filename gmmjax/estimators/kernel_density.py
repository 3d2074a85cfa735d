"""``KernelDensity``: scikit-learn's Gaussian kernel density estimator on the JAX engine."""

from __future__ import annotations

import numbers
import operator

import jax
import numpy as np
from sklearn.base import BaseEstimator, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from ..kde import kde_bandwidth, kde_log_prob, kde_sample
from ._base import random_key, x64_scope

__all__ = ["KernelDensity"]


class KernelDensity(BaseEstimator):
    """Gaussian kernel density estimation; a drop-in for ``sklearn.neighbors.KernelDensity`` with
    ``kernel="gaussian"`` and the Euclidean metric.

    ``score_samples`` is computed exactly (no tree, no tolerance) on the device, in blocks of
    ``query_chunk × train_chunk`` (defaults 1024 × 4096) with a running log-sum-exp, so memory
    stays bounded for any number of queries and training points.

    Parameters: ``bandwidth`` (a positive float, "scott" or "silverman", computed as sklearn does
    from the row count), ``kernel`` (only "gaussian"), ``metric`` (only "euclidean");
    ``algorithm``, ``atol``, ``rtol``, ``breadth_first``, ``leaf_size`` and ``metric_params`` are
    accepted for compatibility and ignored (the sum is exact, so any tolerance is met).
    gmmjax extensions: ``query_chunk``, ``train_chunk`` (block sizes) and ``random_state`` (used
    by ``sample`` when it is given none).

    Attributes: ``bandwidth_``, ``n_features_in_``, ``feature_names_in_``, ``X_fit_`` (the
    training data, float32 or float64), ``sample_weight_`` (None or (N,)).

    Differences: ``sample`` draws with JAX (a key from ``random_state``), not numpy's stream;
    float32 training data and queries are evaluated in float32 (sklearn always uses float64).
    """

    _parameter_constraints: dict = {
        "bandwidth": [Interval(numbers.Real, 0, None, closed="neither"),
                      StrOptions({"scott", "silverman"})],
        "algorithm": [StrOptions({"auto", "kd_tree", "ball_tree"})],
        "kernel": [StrOptions({"gaussian"})],
        "metric": [StrOptions({"euclidean"})],
        "atol": [Interval(numbers.Real, 0, None, closed="left")],
        "rtol": [Interval(numbers.Real, 0, None, closed="left")],
        "breadth_first": ["boolean"],
        "leaf_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "metric_params": [None, dict],
        "query_chunk": [None, Interval(numbers.Integral, 1, None, closed="left")],
        "train_chunk": [None, Interval(numbers.Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(self, *, bandwidth=1.0, algorithm="auto", kernel="gaussian", metric="euclidean",
                 atol=0, rtol=0, breadth_first=True, leaf_size=40, metric_params=None,
                 query_chunk=None, train_chunk=None, random_state=None):
        self.bandwidth = bandwidth
        self.algorithm = algorithm
        self.kernel = kernel
        self.metric = metric
        self.atol = atol
        self.rtol = rtol
        self.breadth_first = breadth_first
        self.leaf_size = leaf_size
        self.metric_params = metric_params
        self.query_chunk = query_chunk
        self.train_chunk = train_chunk
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, sample_weight=None):
        """Store the training data (and weights) and resolve the bandwidth. Returns self."""
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=X.dtype,
                                                 ensure_non_negative=True)
            if not np.sum(sample_weight) > 0:
                raise ValueError("sample_weight sums to zero; at least one training point needs "
                                 "positive weight.")
        self.bandwidth_ = kde_bandwidth(X.shape[0], X.shape[1], self.bandwidth)
        self.X_fit_ = X
        self.sample_weight_ = sample_weight
        return self

    def score_samples(self, X):
        """Log density at each row of X (normalised by the total weight). -> (N,)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        dtype = np.result_type(X.dtype, self.X_fit_.dtype)
        with x64_scope(dtype):
            out = kde_log_prob(np.asarray(self.X_fit_, dtype), np.asarray(X, dtype),
                               self.bandwidth_, sample_weight=self.sample_weight_,
                               query_chunk=self.query_chunk, train_chunk=self.train_chunk)
            return np.asarray(out, dtype)

    def score(self, X, y=None):
        """Total log-likelihood of X (sklearn's convention: a sum, not a mean)."""
        return float(np.sum(self.score_samples(X)))

    def sample(self, n_samples=1, random_state=None):
        """Draw ``n_samples`` rows: a training point (∝ weight) plus bandwidth · N(0, I).

        ``random_state`` (None: the estimator's) seeds a JAX key. -> (n_samples, D) float64.
        """
        check_is_fitted(self)
        try:
            n = operator.index(n_samples)
        except TypeError:
            raise ValueError(f"n_samples must be an integer >= 0; got {n_samples!r}.") from None
        if n < 0:
            raise ValueError(f"n_samples must be an integer >= 0; got {n}.")
        if n == 0:                                # as scikit-learn: an empty (0, D) array
            return np.empty((0, self.X_fit_.shape[1]), np.float64)
        state = self.random_state if random_state is None else random_state
        dtype = self.X_fit_.dtype
        with x64_scope(dtype):
            out = kde_sample(random_key(state), np.asarray(self.X_fit_), self.bandwidth_, n,
                             sample_weight=self.sample_weight_)
            return np.asarray(jax.device_get(out), np.float64)
