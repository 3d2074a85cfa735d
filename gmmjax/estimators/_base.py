"""Shared machinery of the scikit-learn facades: :class:`BaseMixtureEstimator`.

The estimators are thin: all numerics happen in the functional core (``gmmjax.fit`` and friends).
This base class owns everything that is the same for every mixture estimator:

* scikit-learn's parameter validation (``_parameter_constraints`` + ``_fit_context``, so bad
  hyper-parameters raise ``InvalidParameterError`` with sklearn's own messages, at fit time);
* ``validate_data`` (``n_features_in_``, ``feature_names_in_``, NaN/inf/sparse/1-D/3-D errors);
* ``random_state`` as scikit-learn uses it: one ``check_random_state`` per fit, consumed by the
  restarts' initialisations in order with scikit-learn's own functions (:func:`initial_resp`),
  so the same random_state starts the same fit as ``sklearn.mixture``;
* scoped x64: float64 X runs under ``with jax.enable_x64(True):`` and every result is converted to
  numpy of X's dtype inside the scope; float32 X stays float32. The global flag is never flipped;
* n_init / warm_start / ConvergenceWarning / verbose, status codes -> sklearn's errors;
* the final E-step of ``fit_predict`` and ``predict`` / ``predict_proba`` / ``score_samples`` /
  ``score`` / ``sample``.

Subclass hooks (override these; see each docstring):

``_check_parameters(X)``          validate estimator-specific parameters (init arrays, priors).
``_fit_engine(random_state, X, sample_weight, *, init, n_init, max_iter, prev_lower_bound)``
                                  run the compiled fit; return a FitResult-like object.
``_get_state()`` / ``_set_state(state, dtype)``
                                  fitted attributes <-> the engine's state pytree.
``_log_resp_and_norm(x)``         (log responsibilities (N, K), log-sum-exp (N,)) for jnp x.
``_sampling_params()``            the MixtureParams ``sample`` draws from.
``_fitted_dtype()``               dtype of the fitted parameters (default ``means_.dtype``).
"""

from __future__ import annotations

import contextlib
import functools
import numbers
import operator
import time
import warnings

import jax
import numpy as np
from sklearn.base import BaseEstimator, DensityMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from ..covariance import get_covariance_model
from ..density import eval_rows
from ..em import Status
from ..interpreter import collector_paused
from ..missing import fill_missing
from ..rows import bucket_rows, pad_to

__all__ = ["BaseMixtureEstimator", "ILL_DEFINED_MESSAGE", "UNUSED_KEY", "initial_resp", "pad_rows",
           "random_key", "x64_scope"]

ILL_DEFINED_MESSAGE = (
    "Fitting the mixture model failed because some components have ill-defined empirical "
    "covariance (for instance caused by singleton or collapsed samples). Try to decrease the "
    "number of components, increase reg_covar, or scale the input data.")
FLOAT32_HINT = (" The numerical accuracy can also be improved by passing float64 data instead of "
                "float32.")
NONFINITE_MESSAGE = (
    "Fitting the mixture model failed because the log-likelihood became non-finite (NaN or "
    "infinity). Try to decrease the number of components, increase reg_covar, or scale the input "
    "data.")
CONVERGENCE_MESSAGE = (
    "Best performing initialization did not converge. Try different init parameters, or increase "
    "max_iter, tol, or check for degenerate data.")

def x64_scope(dtype):
    """``jax.enable_x64(True)`` for float64 work, a no-op context otherwise (never global)."""
    if np.dtype(dtype) == np.float64:
        return jax.enable_x64(True)
    return contextlib.nullcontext()


def random_key(random_state) -> jax.Array:
    """A JAX PRNG key from sklearn's ``random_state`` (None, int or ``np.random.RandomState``).

    An int seeds the key directly (no state, so every fit with it is identical). None or a
    RandomState is consumed by exactly one 32-bit draw, so a deep copy of the estimator (which
    copies the RandomState) reproduces the fit, and successive fits with one instance differ.
    """
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        seed = int(random_state)
    else:
        seed = int(check_random_state(random_state).randint(0, 2**32, dtype=np.uint64))
    if jax.config.jax_default_prng_impl == "threefry2x32" and not jax.config.jax_enable_custom_prng:
        key = np.array([0, seed], np.uint32)   # == PRNGKey(uint32 seed), without an XLA compile
    else:  # pragma: no cover - another PRNG implementation configured by the user
        key = jax.random.PRNGKey(np.uint32(seed))
    return key


# The estimators initialise on the host (initial_resp); the fit programs' key is then unused.
UNUSED_KEY = np.zeros(2, np.uint32)


def initial_resp(X: np.ndarray, sample_weight, n_components: int, method: str, random_state,
                 n_init: int) -> np.ndarray:
    """scikit-learn's own initial responsibilities for ``n_init`` restarts -> (n_init, N, K) in
    X's dtype, drawn one restart after another from the RandomState ``random_state`` exactly as
    ``sklearn.mixture``'s ``_initialize_parameters`` draws them (KMeans with n_init=1,
    ``kmeans_plusplus``, ``uniform``, ``choice`` without replacement), so the same random_state
    starts the same fit. NaN entries (missing values) are replaced by their column's weighted
    observed mean first, as :func:`gmmjax.fit` does. ``sample_weight`` (a gmmjax extension)
    weighs the k-means objective, the k-means++ draws and random_from_data's draw."""
    with collector_paused():        # a large import, on first use (gmmjax.interpreter)
        from sklearn.cluster import KMeans, kmeans_plusplus
    n, k = X.shape[0], n_components
    if np.isnan(X).any():
        X = fill_missing(X, np.ones(n, X.dtype) if sample_weight is None else sample_weight)
    out = np.zeros((n_init, n, k), X.dtype)
    with one_blas_thread():
        for resp in out:
            if method == "kmeans":
                labels = KMeans(n_clusters=k, n_init=1, random_state=random_state).fit(
                    X, sample_weight=sample_weight).labels_
                resp[np.arange(n), labels] = 1
            elif method == "random":
                resp[:] = random_state.uniform(size=(n, k))
                resp /= resp.sum(axis=1)[:, None]
            elif method == "random_from_data":
                p = None if sample_weight is None else sample_weight / sample_weight.sum()
                resp[random_state.choice(n, size=k, replace=False, p=p), np.arange(k)] = 1
            else:   # "k-means++"
                _, idx = kmeans_plusplus(X, k, sample_weight=sample_weight,
                                         random_state=random_state)
                resp[idx, np.arange(k)] = 1
    return out


@functools.lru_cache(maxsize=1)
def _threadpools():
    from threadpoolctl import ThreadpoolController   # a scikit-learn dependency
    return ThreadpoolController()


def one_blas_thread():
    """Context: the BLAS libraries loaded in this process (NumPy's and SciPy's OpenBLAS) run one
    thread, restored after. For the host-side k-means of :func:`initial_resp`: its distances are
    small GEMMs, and a multi-threaded BLAS call leaves OpenBLAS's worker threads spinning for up
    to ~0.1 s afterwards, on the cores the compiled fit that follows needs (measured on 2 cores:
    20,000×6 full-covariance estimator fits, n_init=2, K=2..8, mean 46–52 → 34–35 ms, no fit
    over 100 ms instead of 2–7 in 42; the k-means itself 16–19 → 9–11 ms). One thread computes
    each GEMM entry in the same order, so the labels are scikit-learn's."""
    return _threadpools().limit(limits=1, user_api="blas")


MIN_ROWS = 128  # estimators pad small inputs to at least this many rows: one program for all


def padded_rows(n: int, chunk_size: int | None = None) -> int:
    """Row count the estimators pad to: fit's bucket (≤ 1/8 padding), at least MIN_ROWS."""
    return max(bucket_rows(n, chunk_size), bucket_rows(MIN_ROWS, chunk_size))


def pad_rows(x: np.ndarray, sample_weight=None, chunk_size: int | None = None):
    """Zero rows (with zero weight) up to :func:`padded_rows`, so the many small N that sklearn's
    checks and user code produce share compiled programs. -> (x, w) numpy; w has ones for the
    real rows when ``sample_weight`` is None."""
    n = x.shape[0]
    w = np.ones(n, x.dtype) if sample_weight is None else np.asarray(sample_weight, x.dtype)
    return pad_to(np.asarray(x), w, padded_rows(n, chunk_size))


class BaseMixtureEstimator(DensityMixin, BaseEstimator):
    """Base class of gmmjax's mixture estimators (sklearn's ``BaseMixture`` contract).

    Subclasses define ``__init__`` with their full explicit signature (sklearn's ``get_params``
    reads it), call ``super().__init__(...)`` with the shared parameters below, extend
    ``_parameter_constraints`` (``{**BaseMixtureEstimator._parameter_constraints, ...}``) and
    implement the hooks listed in the module docstring. Parameters are read at fit time and never
    rewritten by ``fit`` (validated copies go to private attributes).

    Shared parameters: n_components, tol, reg_covar, max_iter, n_init, init_params, random_state,
    warm_start, verbose, verbose_interval (as scikit-learn) and chunk_size (gmmjax: rows per chunk
    for the statistics; None = automatic).
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0.0, None, closed="left")],
        "reg_covar": [Interval(numbers.Real, 0.0, None, closed="left")],
        "max_iter": [Interval(numbers.Integral, 0, None, closed="left")],
        "n_init": [Interval(numbers.Integral, 1, None, closed="left")],
        "init_params": [StrOptions({"kmeans", "random", "random_from_data", "k-means++"})],
        "random_state": ["random_state"],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "verbose_interval": [Interval(numbers.Integral, 1, None, closed="left")],
        "chunk_size": [None, Interval(numbers.Integral, 1, None, closed="left")],
    }

    def __init__(self, n_components=1, *, tol=1e-3, reg_covar=1e-6, max_iter=100, n_init=1,
                 init_params="kmeans", random_state=None, warm_start=False, verbose=0,
                 verbose_interval=10, chunk_size=None):
        self.n_components = n_components
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.chunk_size = chunk_size

    # ------------------------------------------------------------------ hooks (override)

    def _check_parameters(self, X: np.ndarray) -> None:
        """Validate estimator-specific parameters against validated ``X`` (numpy, float32/64).

        Store validated copies in private attributes; never rewrite public parameters.
        """

    def _fit_engine(self, random_state, X: np.ndarray, sample_weight, *, init, n_init: int,
                    max_iter: int, prev_lower_bound):
        """Run the compiled fit (called inside the x64 scope of X's dtype).

        ``init`` is None for a fresh fit (initialise with ``n_init`` restarts drawn from the
        RandomState ``random_state``, as scikit-learn does: :func:`initial_resp`) or
        ``self._get_state()`` for a warm start (then ``n_init == 1`` and ``prev_lower_bound`` is
        the previous ``lower_bound_``, the bound the first iteration is compared with).
        ``sample_weight`` is None or an (N,) numpy array in X's dtype.

        Return an object with the fields of :class:`gmmjax.FitResult`: ``params`` (the state
        pytree given to ``_set_state``), ``lower_bound``, ``lower_bounds`` (max_iter,), ``n_iter``,
        ``status`` (:class:`gmmjax.Status`), ``restart_lower_bounds``, ``restart_status``.
        """
        raise NotImplementedError

    def _get_state(self):
        """The fitted state as the engine's pytree (used as ``init`` for a warm start)."""
        raise NotImplementedError

    def _set_state(self, state, dtype) -> None:
        """Set the fitted attributes from the engine's state (numpy leaves) in ``dtype``."""
        raise NotImplementedError

    def _log_resp_and_norm(self, x: jax.Array):
        """(log responsibilities (N, K), log-sum-exp of the weighted log probs (N,)) for a jnp
        array ``x`` in the compute dtype (called inside the x64 scope). ``predict`` is the argmax
        of the first, ``score_samples`` is the second."""
        raise NotImplementedError

    def _sampling_params(self):
        """The MixtureParams ``sample`` draws from (default: the point-estimate attributes)."""
        from ..params import MixtureParams
        return MixtureParams(self.weights_, self.means_, self.covariances_,
                             self.precisions_cholesky_, self.covariance_type)

    def _finite_check(self):
        """``ensure_all_finite`` for validate_data: True, or "allow-nan" where NaN means missing."""
        return True

    def _fitted_dtype(self) -> np.dtype:
        return np.dtype(self.means_.dtype)

    # ------------------------------------------------------------------ fitting

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, sample_weight=None):
        """Estimate the parameters with EM (``n_init`` restarts in one compiled program). Returns self.

        ``sample_weight`` (N,) non-negative row weights (a gmmjax extension). Unlike
        scikit-learn (whose ``fit`` calls ``fit_predict``), the final labelling E-step that
        ``fit_predict`` adds is skipped: its labels would be discarded.
        """
        self._fit(X, sample_weight)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then label X with a final E-step on the best parameters, so
        ``fit_predict(X) == fit(X).predict(X)`` for any max_iter, tol and n_init. -> int64 (N,)."""
        return self._labels(self._fit(X, sample_weight))

    def _fit(self, X, sample_weight) -> np.ndarray:
        """EM on X (validated here); sets the fitted attributes. -> the validated X."""
        do_init = not (self.warm_start and hasattr(self, "converged_"))
        if not do_init:
            n_features = self.n_features_in_
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=2,
                          ensure_all_finite=self._finite_check())
        if X.shape[0] < self.n_components:
            raise ValueError("Expected n_samples >= n_components but got n_components = "
                             f"{self.n_components}, n_samples = {X.shape[0]}")
        if not do_init and X.shape[1] != n_features:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is "
                             f"expecting {n_features} features as input (warm_start=True "
                             "continues the previous fit).")
        self._check_parameters(X)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=X.dtype,
                                                 ensure_non_negative=True)
        dtype = np.dtype(X.dtype)
        n_init = self.n_init if do_init else 1
        max_iter = int(self.max_iter)
        random_state = check_random_state(self.random_state)
        start = time.perf_counter()
        with x64_scope(dtype):
            init = None if do_init else self._get_state()
            prev = None if do_init else self.lower_bound_
            result = self._fit_engine(random_state, X, sample_weight, init=init, n_init=n_init,
                                      max_iter=max_iter, prev_lower_bound=prev)
            result = jax.device_get(result)
        elapsed = time.perf_counter() - start

        status = int(result.status)
        if self.verbose:
            self._print_verbose(result, prev, elapsed)
        if status == Status.ILL_DEFINED_COVARIANCE:
            raise ValueError(ILL_DEFINED_MESSAGE + (FLOAT32_HINT if dtype == np.float32 else ""))
        if status == Status.NONFINITE:
            raise ValueError(NONFINITE_MESSAGE + (FLOAT32_HINT if dtype == np.float32 else ""))
        if status == Status.INVALID_INPUT:   # sklearn's _check_sample_weight wording
            raise ValueError("Negative values in data passed to `sample_weight` (or NaN, "
                             "infinity, or a zero total).")
        converged = status == Status.CONVERGED
        if not converged and max_iter > 0:
            warnings.warn(CONVERGENCE_MESSAGE, ConvergenceWarning)

        self._set_state(result.params, dtype)
        n_iter = int(result.n_iter)
        self.converged_ = bool(converged)
        self.n_iter_ = n_iter
        history = np.asarray(result.lower_bounds)
        if max_iter == 0:
            self.lower_bound_ = -np.inf
        else:
            self.lower_bound_ = np.asarray(result.lower_bound)[()]
        self.lower_bounds_ = [history[i] for i in range(n_iter)]
        return X

    # ------------------------------------------------------------------ evaluation

    def _evaluate(self, X):
        """Validated predict-time X -> numpy (log_resp (N, K), log_norm (N,))."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, ensure_all_finite=self._finite_check())
        return self._evaluate_validated(X)

    def _evaluate_validated(self, X: np.ndarray):
        in_dtype = X.dtype if np.issubdtype(X.dtype, np.floating) else np.float64
        dtype = np.result_type(in_dtype, self._fitted_dtype())
        n = X.shape[0]
        with x64_scope(dtype):
            x = np.asarray(X, dtype)
            x = np.concatenate([x, np.zeros((eval_rows(n) - n, x.shape[1]), dtype)])
            log_resp, norm = self._log_resp_and_norm(x)
            k = len(self.weights_)      # the program's K may be padded (weight-0 columns)
            return (np.asarray(log_resp, dtype)[:n, :k], np.asarray(norm, dtype)[:n])

    def _labels(self, X: np.ndarray) -> np.ndarray:
        log_resp, _ = self._evaluate_validated(X)
        return np.argmax(log_resp, axis=1).astype(np.int64)

    def predict(self, X):
        """Most probable component of each row (ties -> lowest index). -> int64 (N,)."""
        log_resp, _ = self._evaluate(X)
        return np.argmax(log_resp, axis=1).astype(np.int64)

    def predict_proba(self, X):
        """Posterior probability of each component for each row. -> (N, K), rows sum to 1."""
        log_resp, _ = self._evaluate(X)
        return np.exp(log_resp)

    def score_samples(self, X):
        """Log of the mixture density at each row. -> (N,)."""
        return self._evaluate(X)[1]

    def score(self, X, y=None):
        """Mean log-likelihood of X (a Python float)."""
        return float(np.mean(self.score_samples(X)))

    def sample(self, n_samples=1):
        """Draw ``n_samples`` rows. -> (X (n, D) float64, y int64) grouped by component.

        Drawn on the host with NumPy exactly as scikit-learn draws them: a fresh
        ``check_random_state(random_state)`` per call (an int seed gives the same draws every
        call, a RandomState advances), the per-component counts from one multinomial draw,
        then each component's rows in order (``multivariate_normal`` for full and tied
        covariances, scaled standard normals for diag and spherical). The same fitted
        parameters give scikit-learn's samples; nothing is compiled.
        """
        check_is_fitted(self)
        try:
            n = operator.index(n_samples)
        except TypeError:
            raise ValueError(f"Invalid value for 'n_samples': {n_samples!r} . The sampling "
                             "requires an integer number of samples.") from None
        if n < 1:
            raise ValueError(f"Invalid value for 'n_samples': {n} . The sampling requires at "
                             "least one sample.")
        params = self._sampling_params()
        means = np.asarray(params.means, np.float64)
        k, d = means.shape
        shape = get_covariance_model(params.covariance_type).component_shape(d)
        cov = np.broadcast_to(np.asarray(params.covariances, np.float64), (k,) + shape)  # tied
        rng = check_random_state(self.random_state)
        counts = rng.multinomial(n, np.asarray(params.weights, np.float64))
        if len(shape) == 2:     # full, tied: (D, D) matrices
            rows = [rng.multivariate_normal(means[j], cov[j], c) for j, c in enumerate(counts)]
        else:                   # diag, spherical: independent features
            rows = [means[j] + rng.standard_normal((c, d)) * np.sqrt(cov[j])
                    for j, c in enumerate(counts)]
        return np.vstack(rows), np.repeat(np.arange(k, dtype=np.int64), counts)

    # ------------------------------------------------------------------ verbose

    def _print_verbose(self, result, prev_lower_bound, elapsed: float) -> None:
        """sklearn-style progress, printed after the compiled run: one block per restart, the
        per-iteration lines (every ``verbose_interval``) for the best restart, whose history is
        the one kept. Times are for the whole compiled program (restarts run simultaneously)."""
        bounds = np.atleast_1d(np.asarray(result.restart_lower_bounds))
        statuses = np.atleast_1d(np.asarray(result.restart_status))
        failed = (statuses == Status.ILL_DEFINED_COVARIANCE) | (statuses == Status.NONFINITE)
        best = int(np.argmax(np.where(failed | np.isnan(bounds), -np.inf, bounds)))
        history = np.asarray(result.lower_bounds)
        n_iter = int(result.n_iter)
        for i in range(bounds.shape[0]):
            print(f"Initialization {i}")
            if i == best:
                prev = -np.inf if prev_lower_bound is None else prev_lower_bound
                for it in range(1, n_iter + 1):
                    change = history[it - 1] - prev
                    prev = history[it - 1]
                    if it % self.verbose_interval == 0:
                        if self.verbose == 1:
                            print(f"  Iteration {it}")
                        else:
                            print(f"  Iteration {it}\t time lapse {elapsed / max(n_iter, 1):.5f}s"
                                  f"\t ll change {change:.5f}")
            msg = "converged" if statuses[i] == Status.CONVERGED else "did not converge"
            if self.verbose == 1:
                print(f"Initialization {msg}.")
            else:
                print(f"Initialization {msg}. time lapse {elapsed:.5f}s\t lower bound "
                      f"{bounds[i]:.5f}.")
