"""Host-side checks run before anything is compiled. Messages name the problem and the shape.

Value checks (NaN, negative weights) need concrete arrays; under ``jit``/``vmap`` tracing only the
shape checks run, since values are not known on the host.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np

from .covariance import get_covariance_model
from .params import MixtureParams


def is_traced(*arrays) -> bool:
    return any(isinstance(a, jax.core.Tracer) for a in arrays)


def float_dtype(x) -> np.dtype:
    """The float dtype computations use for ``x``: its own float type, else the default float
    (float64 only when x64 is enabled)."""
    dtype = np.dtype(getattr(x, "dtype", np.float64))
    if not np.issubdtype(dtype, np.floating):
        dtype = np.dtype(np.float64)
    return np.dtype(jax.dtypes.canonicalize_dtype(dtype))


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


def check_data(x, name: str = "X", min_samples: int = 1) -> jax.Array:
    """X must be 2-D (n_samples, n_features), numeric, finite, with ≥ ``min_samples`` rows."""
    if not is_traced(x):
        arr = np.asarray(x)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)
                                       or arr.dtype == np.bool_):
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
    x = jnp.asarray(x, dtype)
    # ensure_compile_time_eval: concrete data closed over inside jit/grad is still checked eagerly.
    with jax.ensure_compile_time_eval():
        bad = not is_traced(x) and not bool(jnp.all(jnp.isfinite(x)))
        kind = "NaN" if bad and bool(jnp.any(jnp.isnan(x))) else "infinity"
    if bad:
        hint = (" gmmjax.fit, log_prob, predict(_proba), impute and GaussianMixture take "
                "missing='marginalize' for NaN entries; fit_stream, the sharded fit, fit_many, "
                "select_model and fit_bayesian: not supported with missing values yet."
                if kind == "NaN" else "")
        raise ValueError(f"{name} contains {kind} (shape {tuple(shape)}); remove or impute those "
                         "values first." + hint)
    return x


def check_sample_weight(sample_weight, n_samples: int, dtype) -> jax.Array:
    """(N,) non-negative finite weights with a positive total; None means ones."""
    if sample_weight is None:
        return jnp.ones((n_samples,), dtype)
    if np.shape(sample_weight) != (n_samples,):
        raise ValueError(f"sample_weight must have shape ({n_samples},) to match X; got "
                         f"{tuple(np.shape(sample_weight))}.")
    w = jnp.asarray(sample_weight, dtype)
    with jax.ensure_compile_time_eval():   # concrete weights closed over inside jit/grad
        _check_weight_values(w)
    return w


def _check_weight_values(w) -> None:
    if not is_traced(w):
        if not bool(jnp.all(jnp.isfinite(w))):
            raise ValueError("sample_weight contains NaN or infinity.")
        if bool(jnp.any(w < 0)):
            raise ValueError(f"sample_weight must be non-negative; got a minimum of "
                             f"{float(jnp.min(w)):g}.")
        if not float(jnp.sum(w)) > 0:
            raise ValueError("sample_weight sums to zero; at least one row needs positive weight.")


def check_n_samples(w, n_components: int) -> None:
    """At least n_components rows with positive weight (when the weights are concrete)."""
    n = w.shape[0] if is_traced(w) else int(jnp.sum(w > 0))
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


def check_init_params(init: MixtureParams, covariance_type: str, n_components: int,
                      n_features: int, n_init: int | None = None) -> MixtureParams:
    """Initial MixtureParams given to a fit: type, feature count, K and (optionally) one set per
    restart (a leading (n_init,) axis)."""
    if init.covariance_type != covariance_type:
        raise ValueError(f"init params have covariance_type {init.covariance_type!r} but "
                         f"covariance_type={covariance_type!r} was requested.")
    check_params(init, n_features)
    if np.shape(init.means)[-2] != n_components:
        raise ValueError(f"init params have {np.shape(init.means)[-2]} components; "
                         f"n_components={n_components}.")
    if n_init is not None and np.ndim(init.weights) == 2 and np.shape(init.weights)[0] != n_init:
        raise ValueError(f"init params carry {np.shape(init.weights)[0]} restarts; "
                         f"n_init={n_init}.")
    return init


def init_method_name(init) -> str:
    """"params" for a MixtureParams init, else the validated method name from INIT_METHODS."""
    from .init import INIT_METHODS
    if isinstance(init, MixtureParams):
        return "params"
    if isinstance(init, str) and init in INIT_METHODS:
        return init
    raise ValueError(f"Unknown init {init!r}; expected one of {list(INIT_METHODS)} or a "
                     "MixtureParams.")


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
