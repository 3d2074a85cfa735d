"""Host-side checks run before anything is compiled. Messages name the problem and the shape.

Value checks (NaN, negative weights) need concrete arrays; under ``jit``/``vmap`` tracing only the
shape checks run, since values are not known on the host.
"""

from __future__ import annotations

import numbers
import os
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from .covariance import get_covariance_model
from .em import FitResult, Status
from .params import MixtureParams
from .rows import LOCAL, Rows


def is_traced(*arrays) -> bool:
    return any(isinstance(a, jax.core.Tracer) for a in arrays)


HALF_FLOATS = (np.dtype(np.float16), np.dtype(jnp.bfloat16))   # computed in float32


def float_dtype(x) -> np.dtype:
    """The float dtype computations use for ``x``: its own float type (float16 and bfloat16 are
    upcast to float32, as LAPACK has no half precision), else the default float (float64 only
    when x64 is enabled)."""
    dtype = np.dtype(getattr(x, "dtype", np.float64))
    if dtype in HALF_FLOATS:
        dtype = np.dtype(np.float32)
    elif not np.issubdtype(dtype, np.floating):
        dtype = np.dtype(np.float64)
    return np.dtype(jax.dtypes.canonicalize_dtype(dtype))


def check_key(key) -> jax.Array:
    """A JAX PRNG key (typed, or a legacy raw uint32 (..., 2) key); an int seed is refused."""
    dtype = getattr(key, "dtype", None)
    if dtype is not None and (jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) or (
            dtype == np.uint32 and np.shape(key)[-1:] == (2,))):
        return key
    raise TypeError(f"key must be a JAX PRNG key; got {type(key).__name__} {key!r}. Pass "
                    "jax.random.key(seed).")


def check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def check_nonnegative(value, name: str):
    if is_traced(value):
        return value
    if not isinstance(value, numbers.Real) and np.ndim(value) != 0:
        raise ValueError(f"{name} must be a non-negative number; got {value!r}.")
    if not np.isfinite(float(value)) or float(value) < 0:
        raise ValueError(f"{name} must be a non-negative number; got {value!r}.")
    return value


def check_data(x, name: str = "X", min_samples: int = 1, host: bool = False) -> jax.Array:
    """X must be 2-D (n_samples, n_features), numeric, finite, with ≥ ``min_samples`` rows.
    ``host``: NumPy input comes back as a NumPy array of the computation dtype (the caller pads
    it on the host: no eager XLA program per shape), other input as a jax.Array."""
    if hasattr(x, "tocsr") or type(x).__module__.startswith("scipy.sparse"):
        raise TypeError(f"Sparse data was passed for {name}, but dense data is required; "
                        "convert it with .toarray().")
    if not is_traced(x):
        arr = np.asarray(x)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)
                                       or arr.dtype in (np.bool_, jnp.bfloat16)):
            raise ValueError(f"{name} must be numeric; got dtype {arr.dtype}.")
        if np.iscomplexobj(arr):
            raise ValueError(f"{name} must be real; complex data is not supported.")
    shape = np.shape(x)
    if len(shape) != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (n_samples, n_features); got an "
                         f"array of shape {tuple(shape)}. Reshape 1-D data with x.reshape(-1, 1).")
    if shape[1] < 1:
        raise ValueError(f"{name} has 0 features (shape {tuple(shape)}); at least 1 is required.")
    if shape[0] < min_samples:
        raise ValueError(f"{name} has {shape[0]} sample(s) (shape {tuple(shape)}); at least "
                         f"{min_samples} required.")
    dtype = float_dtype(x)
    # Concrete data (also closed over inside jit/grad) is checked on the host with NumPy: no
    # per-shape XLA compile of isfinite/all for a check.
    bad = not is_traced(x) and not bool(np.all(np.isfinite(arr)))
    kind = "NaN" if bad and bool(np.any(np.isnan(arr))) else "infinity"
    x = np.asarray(x, dtype) if host and isinstance(x, np.ndarray) else jnp.asarray(x, dtype)
    if bad:
        hint = (" gmmjax.fit, log_prob, predict(_proba), impute and GaussianMixture take "
                "missing='marginalize' for NaN entries; fit_stream, the sharded fit, fit_many, "
                "select_model and fit_bayesian: not supported with missing values yet."
                if kind == "NaN" else "")
        raise ValueError(f"{name} contains {kind} (shape {tuple(shape)}); remove or impute those "
                         "values first." + hint)
    return x


def check_sample_weight(sample_weight, n_samples: int, dtype, host: bool = False) -> jax.Array:
    """(N,) non-negative finite weights with a positive total; None means ones. ``host``:
    weights that are not traced (and the ones) come back as NumPy arrays (converted on the
    host: no eager XLA program per shape)."""
    on_host = host and not is_traced(sample_weight) and not isinstance(sample_weight, jax.Array)
    if sample_weight is None:
        return np.ones((n_samples,), dtype) if on_host else jnp.ones((n_samples,), dtype)
    if np.shape(sample_weight) != (n_samples,):
        raise ValueError(f"sample_weight must have shape ({n_samples},) to match X; got "
                         f"{tuple(np.shape(sample_weight))}.")
    w = np.asarray(sample_weight, dtype) if on_host else jnp.asarray(sample_weight, dtype)
    with jax.ensure_compile_time_eval():   # concrete weights closed over inside jit/grad
        _check_weight_values(w)
    return w


def unit_mean_weights(w: jax.Array, rows: Rows = LOCAL) -> jax.Array:
    """Inside a fit program: weights rescaled to mean 1 over the rows of positive weight (all
    devices' rows), so a fit depends only on their ratios; the absolute 10·eps floor on
    component weights then means the same at any scale (weights of 1e-12 or 1e-300 fit as ones
    do). Unit weights come back bit for bit (their sum is exact below 2^24 rows in float32)."""
    total, n_live = rows.sum((jnp.sum(w), jnp.sum((w > 0).astype(w.dtype))))
    return w * jnp.where(total > 0, n_live / total, 1.0).astype(w.dtype)


def input_status(result: FitResult, x: jax.Array, w: jax.Array, rows: Rows = LOCAL) -> FitResult:
    """Inside a fit program: values the host could not check (traced under jit/vmap) decide the
    status. Non-finite data -> NONFINITE; negative, NaN/inf or all-zero weights ->
    INVALID_INPUT (the estimators raise scikit-learn's error). Valid input: unchanged."""
    bad_x, bad_w, total = rows.sum((jnp.sum(~jnp.isfinite(x) & (w[:, None] != 0)),
                                    jnp.sum((w < 0) | ~jnp.isfinite(w)), jnp.sum(w)))
    code = jnp.where(bad_x > 0, Status.NONFINITE,
                     jnp.where((bad_w > 0) | ~(total > 0), Status.INVALID_INPUT, -1))

    def override(status):
        return jnp.where(code >= 0, code, status).astype(status.dtype)

    status = override(result.status)
    return result._replace(status=status, converged=status == Status.CONVERGED,
                           restart_status=override(result.restart_status))


GRAD_MESSAGE = ("gmmjax.fit is not reverse-mode differentiable (EM runs in a lax.while_loop). "
                "Differentiate the objective instead: gmmjax.log_prob, gmmjax.e_step, "
                "gmmjax.em_step / gmmjax.m_step (one step), gmmjax.sample (reparameterised) and "
                "the unconstrained parameterisation (gmmjax.unconstrained) are differentiable; "
                "wrap a fitted result in jax.lax.stop_gradient to use it as a constant.")


def as_operand(value, dtype):
    """``value`` as an array of ``dtype`` for a compiled program: a NumPy array when concrete
    (``jnp.asarray`` would run, and on first use compile, an eager conversion per call), else
    ``jnp.asarray`` (a tracer under the user's jit/vmap)."""
    if is_traced(value) or isinstance(value, jax.Array):
        return jnp.asarray(value, dtype)
    return np.asarray(value, dtype)


def without_reverse_mode(fn, *args):
    """``fn(*args)`` (args: pytrees of arrays), computed as is; reverse-mode differentiation
    (``jax.grad``/``vjp``) raises a TypeError naming the differentiable functions, instead of
    JAX's error from deep inside ``while_loop``. Concrete arguments (no tracer: nothing can be
    differentiated) call ``fn`` directly, without the custom_vjp's ~1.5 ms of Python per call."""
    if not is_traced(*jax.tree.leaves(args)):
        return fn(*args)

    @jax.custom_vjp
    def run(*a):
        return fn(*a)

    def backward(_, cotangent):
        raise TypeError(GRAD_MESSAGE)

    run.defvjp(lambda *a: (fn(*a), None), backward)
    return run(*args)


class HostCentring:
    """Concrete host data about to be narrowed (float64 or 64-bit integers computed in float32:
    x64 off, or ``dtype`` float32) are centred in float64 first, so an offset such as 1e8 (float32
    steps of 8 there) does not round the data away. ``data`` holds the centred rows; ``centre``
    moves further rows (e.g. later chunks of a stream) into the same frame, ``into_frame`` /
    ``restore`` move means into it and back (in float64 on the host, then rounded once). Other
    data (traced, jax arrays, already float32, or computed in float64) pass through unchanged."""

    def __init__(self, X, dtype=None):
        self.shift, self.data = None, X
        if is_traced(X) or isinstance(X, jax.Array) or hasattr(X, "tocsr"):
            return
        arr = np.asarray(X) if isinstance(X, (np.ndarray, list, tuple)) else None
        if (arr is None or arr.ndim != 2 or arr.size == 0
                or not self.narrows(arr.dtype, float_dtype(arr) if dtype is None else dtype)):
            return
        shift = arr.mean(axis=0, dtype=np.float64)
        if np.all(np.isfinite(shift)):
            self.shift, self.data = shift, arr - shift

    @staticmethod
    def narrows(dtype, compute_dtype) -> bool:
        """Whether host numbers of ``dtype`` lose precision computed in ``compute_dtype``
        (64-bit floats or integers in float32)."""
        dtype = np.dtype(dtype)
        return (dtype.kind in "fiu" and dtype.itemsize >= 8
                and np.dtype(compute_dtype) == np.float32)

    @classmethod
    def from_shift(cls, shift) -> "HostCentring":
        """A centring by a known float64 ``shift`` (D,) (e.g. a stream's mean, from a first
        pass), for :meth:`centre`, :meth:`params` and :meth:`restore`."""
        centring = cls(None)
        centring.shift = np.asarray(shift, np.float64)
        return centring

    def centre(self, x):
        """Rows ``x`` (host array) in the centred frame (x itself when nothing is shifted)."""
        return x if self.shift is None else np.asarray(x, np.float64) - self.shift

    def into_frame(self, means):
        """Means (..., D) in the centred frame, float64 on the host (traced: in their dtype;
        unchanged if no shift)."""
        if self.shift is None:
            return means
        if is_traced(means):
            return means - jnp.asarray(self.shift, means.dtype)
        return np.asarray(means, np.float64) - self.shift

    def to_data_frame(self, means):
        """Means of the centred frame shifted back: added in float64 on the host, rounded once
        to their dtype (traced means: added in their dtype)."""
        if self.shift is None:
            return means
        if is_traced(means):
            return means + jnp.asarray(self.shift, means.dtype)
        host = np.asarray(means)
        host = (host.astype(np.float64) + self.shift).astype(host.dtype)
        return host if isinstance(means, np.ndarray) else jnp.asarray(host)   # host: no compile

    def params(self, params: MixtureParams) -> MixtureParams:
        return params if self.shift is None else params.replace(
            means=self.into_frame(params.means))

    def restore(self, params: MixtureParams) -> MixtureParams:
        return params if self.shift is None else params.replace(
            means=self.to_data_frame(params.means))


NARROWED_MESSAGE = ("float64 input computed in float32: enable jax_enable_x64 for float64, or "
                    "pass float32 to silence this")
_NARROWED_WARNED: set = set()      # functions that have warned in this process
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def warn_if_narrowed(X, function: str, dtype=None) -> None:
    """JAX's dtype rule for functions returning params or arrays (``fit``, ``fit_many``,
    ``fit_stream``, ``fit_bayesian``): float64 host input is computed in float32 unless x64 is
    enabled (or in ``dtype`` when given). Say so once per function and process (a UserWarning at
    the user's call, the first frame outside gmmjax). The estimators and ``select_model`` scope
    x64 instead, so their float64 input never reaches here narrowed."""
    if function in _NARROWED_WARNED or is_traced(X):
        return
    raw = getattr(X, "dtype", None)
    if not isinstance(raw, np.dtype) or raw != np.float64:
        return
    if np.dtype(float_dtype(X) if dtype is None else dtype) != np.float32:
        return
    frame, level = sys._getframe(0), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(f"gmmjax.{function}: {NARROWED_MESSAGE}.", UserWarning, stacklevel=level)
    _NARROWED_WARNED.add(function)      # after warn: an error filter raises on every call


def _check_weight_values(w) -> None:
    if not is_traced(w):
        w = np.asarray(w)       # host checks: no XLA compile per shape
        if not bool(np.all(np.isfinite(w))):
            raise ValueError("sample_weight contains NaN or infinity.")
        if bool(np.any(w < 0)):
            raise ValueError(f"sample_weight must be non-negative; got a minimum of "
                             f"{float(np.min(w)):g}.")
        if not float(np.sum(w)) > 0:
            raise ValueError("sample_weight sums to zero; at least one row needs positive weight.")


def check_n_samples(w, n_components: int) -> None:
    """At least n_components rows with positive weight (when the weights are concrete)."""
    n = w.shape[0] if is_traced(w) else int(np.sum(np.asarray(w) > 0))
    if n < n_components:
        raise ValueError(f"Expected n_samples >= n_components but got n_components = "
                         f"{n_components}, n_samples = {n}")


def check_params(params, n_features: int | None = None) -> MixtureParams:
    """Shapes of a MixtureParams against its covariance type (and X's feature count)."""
    if not isinstance(params, MixtureParams):
        raise TypeError(f"Expected a gmmjax.MixtureParams; got {type(params).__name__}.")
    model = get_covariance_model(params.covariance_type)
    k, d = np.shape(params.means)[-2:] if np.ndim(params.means) >= 2 else (None, None)
    if k is None:
        raise ValueError(f"params.means must have shape (n_components, n_features); got "
                         f"{np.shape(params.means)}.")
    expected = {"weights": (k,), "precisions_cholesky": model.shape(k, d),
                "covariances": model.shape(k, d)}
    for field, shape in expected.items():
        got = tuple(np.shape(getattr(params, field)))
        if got[-len(shape):] != shape:
            raise ValueError(f"params.{field} must have shape {shape} for {k} components, {d} "
                             f"features and covariance_type={params.covariance_type!r}; got {got}.")
    if n_features is not None and d != n_features:
        raise ValueError(f"X has {n_features} features, but the mixture parameters have {d} "
                         f"(means shape {tuple(np.shape(params.means))}).")
    return params


PARAM_FIELDS = ("weights", "means", "covariances", "precisions_cholesky")


def check_param_values(params: MixtureParams) -> MixtureParams:
    """Values of concrete params (skipped when traced): real, finite numbers; weights
    non-negative with a positive sum; precision Cholesky factors with a positive diagonal."""
    if is_traced(*(getattr(params, f) for f in PARAM_FIELDS)):
        return params
    for field in PARAM_FIELDS:
        a = np.asarray(getattr(params, field))
        if a.dtype.kind not in "fiub" and a.dtype != jnp.bfloat16:
            raise ValueError(f"params.{field} must be real numbers; got dtype {a.dtype}.")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"params.{field} contains NaN or infinity.")
    weights = np.asarray(params.weights, np.float64)
    if np.any(weights < 0) or not np.sum(weights) > 0:
        raise ValueError(f"params.weights must be non-negative with a positive sum; got "
                         f"{weights}.")
    # on the host in NumPy (concrete params, also closed over in a user's jit): nothing compiled
    diagonal = get_covariance_model(params.covariance_type).variances(
        np.asarray(params.precisions_cholesky))
    if not bool(np.all(diagonal > 0)):
        raise ValueError("params.precisions_cholesky must have a positive diagonal (upper "
                         "Cholesky factors of positive-definite precisions).")
    return params


def check_init_params(init: MixtureParams, covariance_type: str, n_components: int,
                      n_features: int, n_init: int | None = None) -> MixtureParams:
    """Initial MixtureParams given to a fit: type, feature count, K and (optionally) one set per
    restart (a leading (n_init,) axis)."""
    if init.covariance_type != covariance_type:
        raise ValueError(f"init params have covariance_type {init.covariance_type!r} but "
                         f"covariance_type={covariance_type!r} was requested.")
    check_params(init, n_features)
    model = get_covariance_model(covariance_type)
    k, d = np.shape(init.means)[-2:]
    batches = {field: tuple(np.shape(getattr(init, field)))[:-len(shape)]
               for field, shape in (("weights", (k,)), ("means", (k, d)),
                                    ("covariances", model.shape(k, d)),
                                    ("precisions_cholesky", model.shape(k, d)))}
    if len(set(batches.values())) != 1 or len(batches["weights"]) > 1:
        raise ValueError(f"init params must be one set of parameters or one per restart (a "
                         f"leading (n_init,) axis on every field); got leading axes {batches}.")
    if np.shape(init.means)[-2] != n_components:
        raise ValueError(f"init params have {np.shape(init.means)[-2]} components; "
                         f"n_components={n_components}.")
    if n_init is not None and np.ndim(init.weights) == 2 and np.shape(init.weights)[0] != n_init:
        raise ValueError(f"init params carry {np.shape(init.weights)[0]} restarts; "
                         f"n_init={n_init}.")
    return init


def init_method_name(init, arrays: bool = False) -> str:
    """"params" for a MixtureParams init, "resp" for an array of initial responsibilities (only
    where ``arrays`` says the caller takes them), else the validated method name."""
    from .init import INIT_METHODS
    if isinstance(init, MixtureParams):
        return "params"
    if isinstance(init, str) and init in INIT_METHODS:
        return init
    if arrays and not isinstance(init, str) and hasattr(init, "shape"):
        return "resp"
    raise ValueError(f"Unknown init {init!r}; expected one of {list(INIT_METHODS)}"
                     + (", an (N, K) responsibility array" if arrays else "")
                     + " or a MixtureParams.")


def check_init_resp(resp, n_samples: int, n_components: int, n_init: int):
    """Initial responsibilities given to a fit: (N, K) for every restart or (n_init, N, K) one
    per restart; finite and non-negative (value checks skipped for tracers). Returned as is."""
    shape = tuple(np.shape(resp))
    if shape[-2:] != (n_samples, n_components) or len(shape) not in (2, 3) or (
            len(shape) == 3 and shape[0] != n_init):
        raise ValueError(f"init responsibilities must have shape ({n_samples}, {n_components}) "
                         f"or ({n_init}, {n_samples}, {n_components}); got {shape}.")
    if not is_traced(resp):
        values = np.asarray(resp)
        if not np.issubdtype(values.dtype, np.number) or not np.all(np.isfinite(values)
                                                                  & (values >= 0)):
            raise ValueError("init responsibilities must be finite and non-negative.")
    return resp


def check_em_options(n_components, n_init, max_iter, tol, reg_covar, covariance_type,
                     chunk_size) -> tuple[int, int, int, int | None]:
    """The options every EM fit shares (fit, fit_stream, fit_bayesian), checked on the host.
    Returns (n_components, n_init, max_iter, chunk_size) as Python ints (chunk_size may be None)."""
    n_components = check_int(n_components, "n_components", 1)
    n_init = check_int(n_init, "n_init", 1)
    max_iter = check_int(max_iter, "max_iter", 0)
    check_nonnegative(tol, "tol")
    check_nonnegative(reg_covar, "reg_covar")
    get_covariance_model(covariance_type)
    if chunk_size is not None:
        chunk_size = check_int(chunk_size, "chunk_size", 1)
    return n_components, n_init, max_iter, chunk_size
