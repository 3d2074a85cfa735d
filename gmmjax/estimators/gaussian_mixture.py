"""``GaussianMixture``: scikit-learn's estimator as a thin facade over :func:`gmmjax.fit`."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.utils import check_array
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import validate_data

from ..covariance import COVARIANCE_TYPES, get_covariance_model
from ..compile_cache import cached_jit
from ..density import evaluate_rows
from ..fit import fit_chunk_size, fit_on_host
from ..rows import auto_chunk_size
from ..init import initialize
from ..params import MixtureParams, from_precisions
from ..missing import evaluate as evaluate_missing
from ..missing import fill_missing, fit_buckets
from ._base import (FLOAT32_HINT, ILL_DEFINED_MESSAGE, UNUSED_KEY, BaseMixtureEstimator,
                    initial_resp, pad_rows, random_key, x64_scope)

__all__ = ["GaussianMixture"]


# ---------------------------------------------------------------------- init-array validation
# Host-side checks with scikit-learn's messages (sklearn/mixture/_base.py, _gaussian_mixture.py).

def _check_shape(param: np.ndarray, shape: tuple, name: str) -> None:
    if param.shape != tuple(shape):
        raise ValueError(f"The parameter '{name}' should have the shape of {tuple(shape)}, but got "
                         f"{param.shape}")


def _check_weights(weights, n_components: int) -> np.ndarray:
    weights = check_array(weights, dtype=[np.float64, np.float32], ensure_2d=False)
    _check_shape(weights, (n_components,), "weights")
    if np.any(weights < 0.0) or np.any(weights > 1.0):
        # sklearn swaps the two labels in this message; gmmjax prints them the right way round.
        raise ValueError("The parameter 'weights' should be in the range [0, 1], but got max value "
                         f"{np.max(weights):.5f}, min value {np.min(weights):.5f}")
    atol = 1e-6 if weights.dtype == np.float32 else 1e-8
    if not np.allclose(np.abs(1.0 - np.sum(weights)), 0.0, atol=atol):
        raise ValueError("The parameter 'weights' should be normalized, but got sum(weights) = "
                         f"{np.sum(weights):.5f}")
    return weights


def _check_means(means, n_components: int, n_features: int) -> np.ndarray:
    means = check_array(means, dtype=[np.float64, np.float32], ensure_2d=False)
    _check_shape(means, (n_components, n_features), "means")
    return means


def _is_matrix_type(covariance_type: str) -> bool:
    """Whether the type stores (D, D) matrices (full, tied), read from the registry's shapes."""
    return get_covariance_model(covariance_type).shape(2, 3)[-2:] == (3, 3)


def _check_precisions(precisions, covariance_type: str, n_components: int,
                      n_features: int) -> np.ndarray:
    model = get_covariance_model(covariance_type)
    precisions = check_array(precisions, dtype=[np.float64, np.float32], ensure_2d=False,
                             allow_nd=True)
    name = f"{covariance_type} precision"
    _check_shape(precisions, model.shape(n_components, n_features), name)
    if _is_matrix_type(covariance_type):
        mats = precisions.reshape((-1, n_features, n_features))
        for mat in mats:
            if not (np.allclose(mat, mat.T) and np.all(np.linalg.eigvalsh(mat) > 0.0)):
                raise ValueError(f"'{name}' should be symmetric, positive-definite")
    elif np.any(precisions <= 0.0):
        raise ValueError(f"'{name}' should be positive")
    return precisions


# ---------------------------------------------------------------------- compiled helpers

@functools.partial(cached_jit, static_argnames=("n_components", "covariance_type", "chunk_size"))
def _initial_params(x, w, resp, reg_covar, *, n_components, covariance_type, chunk_size):
    """The parameters of the restarts' initial responsibilities ``resp`` (n_init, N, K) (what
    ``gmmjax.fit`` starts from), stacked on a leading axis, in the data frame.
    -> (MixtureParams, ok (n_init,))."""
    shift = jnp.sum(w[:, None] * x, axis=0) / jnp.sum(w)
    xs = x - shift
    params, ok = jax.vmap(lambda r: initialize(None, xs, w, n_components, covariance_type, "resp",
                                               reg_covar, chunk_size, noise=r))(resp)
    return params.replace(means=params.means + shift), ok


# ---------------------------------------------------------------------- the estimator

class GaussianMixture(BaseMixtureEstimator):
    """Gaussian mixture fitted by EM on the JAX engine; a drop-in for
    ``sklearn.mixture.GaussianMixture`` (same parameters, attributes, methods and errors).

    Parameters (scikit-learn's, same defaults and validation; [gmmjax] marks additions):

    * ``n_components`` (int, 1): number of mixture components K.
    * ``covariance_type`` ("full"): "full" (one (D, D) matrix per component), "tied" (one
      shared matrix), "diag" (a (D,) variance vector per component) or "spherical" (one variance
      per component).
    * ``tol`` (1e-3): EM stops when the change of the mean log-likelihood lower bound is < tol.
    * ``reg_covar`` (1e-6): added to the covariance diagonals (keeps them positive definite).
    * ``max_iter`` (100): EM iterations per restart.
    * ``n_init`` (1): restarts; the one with the highest lower bound is kept. [gmmjax] They run
      in one compiled program (a loop on CPU, a vmap on accelerators).
    * ``init_params`` ("kmeans"): "kmeans", "k-means++", "random" or "random_from_data": drawn
      on the host with scikit-learn's own functions (``KMeans``, ``kmeans_plusplus``, the
      RandomState's ``uniform`` / ``choice``), then turned into parameters on the device.
    * ``weights_init`` (K,), ``means_init`` (K, D), ``precisions_init`` (shape per covariance
      type): user-given initial parameters (None: drawn by ``init_params``).
    * ``random_state`` (None, int or RandomState): seeds the initialisation and ``sample``,
      consumed as scikit-learn consumes it: the same random_state gives scikit-learn's fit.
    * ``warm_start`` (False): start each ``fit`` from the previous solution (then ``n_init`` is
      ignored).
    * ``verbose`` (0), ``verbose_interval`` (10): progress printing. [gmmjax] Printed after the
      compiled run (see below).
    * ``chunk_size`` (None) [gmmjax]: rows per chunk of the E-step statistics, bounding memory at
      O(chunk_size·K·D); None picks a cache-sized chunk.
    * ``missing`` ("error") [gmmjax]: "error" — NaN is a ValueError, as in scikit-learn;
      "marginalize" — NaN entries are missing values, used by ``fit``, ``score_samples``,
      ``predict``, ``predict_proba``, ``score`` and :meth:`impute`.

    ``fit(X, y=None, sample_weight=None)``: [gmmjax] ``sample_weight`` (n_samples,) are frequency
    weights (integer weights ≡ repeated rows).

    Attributes: ``weights_``, ``means_``, ``covariances_``, ``precisions_``,
    ``precisions_cholesky_`` (upper-triangular U, precision = U Uᵀ), ``converged_``, ``n_iter_``,
    ``lower_bound_``, ``lower_bounds_``, ``n_features_in_``, ``feature_names_in_``, with sklearn's
    shapes per covariance type and X's dtype (float64 X is computed under a scoped x64). ``params_``
    is the :class:`gmmjax.MixtureParams`; :meth:`from_params` builds a fitted estimator from one.

    Deliberate differences from scikit-learn (1.9.1):

    * "k-means++" and "random_from_data" (point-mass starts) get weights normalised to sum to 1
      and, for "tied", the covariance ``reg_covar`` (sklearn's tied formula assumes rows of resp
      summing to 1 and starts from about XᵀX/K). Every other initialisation is scikit-learn's,
      draw for draw.
    * a restart whose covariance becomes ill-defined is dropped when another restart succeeds
      (sklearn aborts the fit); the error is raised when the best restart failed.
    * ``max_iter=0`` with ``n_init > 1`` keeps the first initialisation (sklearn keeps the last);
      with ``precisions_init`` it works (sklearn raises AttributeError).
    * ``weights_init``/``means_init``/``precisions_init`` are never rewritten by ``fit``.
    * the "[0, 1]" weights message prints max and min the right way round, and ``sample(0)``'s
      message shows n_samples (sklearn shows n_components).
    * with float64 init arrays and float32 X, attributes stay float32 (sklearn promotes some).
    * ``verbose`` output is printed after the compiled run; per-iteration lines are those of the
      best restart, and time lapses are for the whole program.
    """

    _parameter_constraints: dict = {
        **BaseMixtureEstimator._parameter_constraints,
        "covariance_type": [StrOptions(set(COVARIANCE_TYPES))],
        "weights_init": ["array-like", None],
        "means_init": ["array-like", None],
        "precisions_init": ["array-like", None],
        "missing": [StrOptions({"error", "marginalize"})],
    }

    def __init__(self, n_components=1, *, covariance_type="full", tol=1e-3, reg_covar=1e-6,
                 max_iter=100, n_init=1, init_params="kmeans", weights_init=None, means_init=None,
                 precisions_init=None, random_state=None, warm_start=False, verbose=0,
                 verbose_interval=10, chunk_size=None, missing="error"):
        super().__init__(n_components=n_components, tol=tol, reg_covar=reg_covar,
                         max_iter=max_iter, n_init=n_init, init_params=init_params,
                         random_state=random_state, warm_start=warm_start, verbose=verbose,
                         verbose_interval=verbose_interval, chunk_size=chunk_size)
        self.covariance_type = covariance_type
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.missing = missing

    # ------------------------------------------------------------------ hooks

    def _check_parameters(self, X):
        k, d = self.n_components, X.shape[1]
        self._weights_init = (None if self.weights_init is None
                              else _check_weights(self.weights_init, k))
        self._means_init = None if self.means_init is None else _check_means(self.means_init, k, d)
        self._precisions_init = (None if self.precisions_init is None else _check_precisions(
            self.precisions_init, self.covariance_type, k, d))

    def _partly_given(self, x, w, resp, chunk):
        """The restarts' initial params from ``resp`` (n_init, N, K) with the given pieces of
        weights_init / means_init / precisions_init substituted (scikit-learn's
        ``_initialize``), one set per restart on a leading axis. ``x``, ``w``: padded rows."""
        dtype = x.dtype
        params, ok = _initial_params(x, w, resp, jnp.asarray(self.reg_covar, dtype),
                                     n_components=self.n_components,
                                     covariance_type=self.covariance_type, chunk_size=chunk)
        if self._weights_init is not None:
            params = params.replace(weights=jnp.broadcast_to(
                jnp.asarray(self._weights_init, dtype), params.weights.shape))
        if self._means_init is not None:
            params = params.replace(means=jnp.broadcast_to(
                jnp.asarray(self._means_init, dtype), params.means.shape))
        if self._precisions_init is not None:
            given_p = from_precisions(params.weights[0], params.means[0],
                                      jnp.asarray(self._precisions_init, dtype),
                                      self.covariance_type)
            params = params.replace(
                covariances=jnp.broadcast_to(given_p.covariances, params.covariances.shape),
                precisions_cholesky=jnp.broadcast_to(given_p.precisions_cholesky,
                                                     params.precisions_cholesky.shape))
        elif not bool(jnp.all(ok)):
            raise ValueError(ILL_DEFINED_MESSAGE
                             + (FLOAT32_HINT if dtype == np.float32 else ""))
        return params

    def _fit_engine(self, random_state, X, sample_weight, *, init, n_init, max_iter,
                    prev_lower_bound):
        n, d = X.shape
        chunk = (self.chunk_size if self.chunk_size is not None
                 else fit_chunk_size(n, self.n_components, d))
        x, w = pad_rows(X, sample_weight, chunk)
        common = dict(covariance_type=self.covariance_type, max_iter=max_iter, tol=self.tol,
                      reg_covar=self.reg_covar, sample_weight=w, chunk_size=chunk,
                      missing=self.missing)
        if init is not None:
            return fit_on_host(UNUSED_KEY, x, self.n_components, init=init, n_init=1,
                               initial_lower_bound=prev_lower_bound, **common)
        given = (self._weights_init, self._means_init, self._precisions_init)
        if all(a is not None for a in given):
            # Fully specified: no draw (as scikit-learn), and every restart would be identical.
            full = from_precisions(*(jnp.asarray(a, x.dtype) for a in given),
                                   self.covariance_type)
            return fit_on_host(UNUSED_KEY, x, self.n_components, init=full, n_init=1,
                               **common)
        resp = initial_resp(X, sample_weight, self.n_components, self.init_params,
                            random_state, n_init)
        resp = np.pad(resp, [(0, 0), (0, x.shape[0] - n), (0, 0)])
        if any(a is not None for a in given):
            x_init = x if self.missing == "error" else fill_missing(x, w)  # as fit initialises
            start = self._partly_given(x_init, w, resp, chunk)
        else:
            start = resp
        return fit_on_host(UNUSED_KEY, x, self.n_components, init=start, n_init=n_init, **common)

    def _get_state(self):
        dtype = self._fitted_dtype()
        return MixtureParams(*(jnp.asarray(a, dtype) for a in (
            self.weights_, self.means_, self.covariances_, self.precisions_cholesky_)),
            self.covariance_type)

    def _set_state(self, state, dtype):
        self.weights_ = np.asarray(state.weights, dtype)
        self.means_ = np.asarray(state.means, dtype)
        self.covariances_ = np.asarray(state.covariances, dtype)
        self.precisions_cholesky_ = np.asarray(state.precisions_cholesky, dtype)
        chol = self.precisions_cholesky_      # precisions U Uᵀ (or U² elementwise) on the host
        self.precisions_ = (chol @ np.swapaxes(chol, -1, -2) if _is_matrix_type(self.covariance_type)
                            else chol * chol)

    def _log_resp_and_norm(self, x):
        if self.missing == "marginalize" and fit_buckets(x) is not None:
            chunk = (self.chunk_size if self.chunk_size is not None   # bounded memory, as fit
                     else auto_chunk_size(x.shape[0], self.n_components, x.shape[1]))
            return evaluate_missing(self._get_state().astype(x.dtype), x, (0, 1), chunk_size=chunk)
        params = MixtureParams(self.weights_, self.means_, self.covariances_,
                               self.precisions_cholesky_, self.covariance_type)
        return evaluate_rows(params, np.asarray(x), self.chunk_size)    # the shared program

    def _finite_check(self):
        return "allow-nan" if self.missing == "marginalize" else True

    def impute(self, X, random_state=None):
        """X with its NaN entries replaced by their conditional expectation under the fitted
        mixture (observed entries unchanged); with ``random_state`` (int or RandomState), drawn
        from the conditional instead (multiple imputation). See :func:`gmmjax.impute`."""
        from sklearn.utils.validation import check_is_fitted
        from ..density import impute
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan",
                          dtype=[np.float64, np.float32])
        dtype = np.result_type(X.dtype, self._fitted_dtype())
        key = None if random_state is None else random_key(random_state)
        with x64_scope(dtype):
            return np.asarray(impute(self._get_state().astype(dtype), X, key), dtype)

    # ------------------------------------------------------------------ gmmjax extensions

    @property
    def params_(self) -> MixtureParams:
        """The fitted :class:`gmmjax.MixtureParams` (numpy leaves in the fitted dtype)."""
        from sklearn.utils.validation import check_is_fitted
        check_is_fitted(self)
        return MixtureParams(self.weights_, self.means_, self.covariances_,
                             self.precisions_cholesky_, self.covariance_type)

    @classmethod
    def from_params(cls, params: MixtureParams, **kwargs) -> "GaussianMixture":
        """A fitted estimator holding ``params`` (e.g. from :func:`gmmjax.fit`).

        ``n_components`` and ``covariance_type`` come from ``params``; other constructor
        arguments go in ``kwargs``. ``converged_`` is False, ``n_iter_`` 0, ``lower_bound_`` −inf;
        with ``warm_start=True`` a later ``fit`` continues from ``params``.
        """
        from ..validation import check_params
        check_params(params)
        if np.ndim(params.weights) != 1:
            raise ValueError("from_params needs one set of parameters; got weights of shape "
                             f"{np.shape(params.weights)} (a batch?).")
        est = cls(n_components=int(np.shape(params.means)[0]),
                  covariance_type=params.covariance_type, **kwargs)
        dtype = np.result_type(np.asarray(params.means).dtype, np.float32)
        est._set_state(jax.device_get(params), dtype)
        est.n_features_in_ = int(np.shape(params.means)[1])
        est.converged_ = False
        est.n_iter_ = 0
        est.lower_bound_ = -np.inf
        est.lower_bounds_ = []
        return est

    def _n_parameters(self) -> int:
        k, d = self.means_.shape
        return int(get_covariance_model(self.covariance_type).n_parameters(k, d) + k * d + k - 1)

    def bic(self, X) -> float:
        """Bayesian information criterion on X (lower is better)."""
        n = np.shape(X)[0]
        return float(-2 * self.score(X) * n + self._n_parameters() * math.log(n))

    def aic(self, X) -> float:
        """Akaike information criterion on X (lower is better)."""
        n = np.shape(X)[0]
        return float(-2 * self.score(X) * n + 2 * self._n_parameters())
