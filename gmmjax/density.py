"""Evaluating a fitted mixture: log density, responsibilities, hard labels, sampling.

Few programs: ONE compiled evaluation program returns (log responsibilities, log density) and
serves ``log_prob``, ``predict``, ``predict_proba``, ``predict_log_proba`` and the estimators'
``score_samples``/``predict``/``predict_proba``/``score``/``bic``; ONE sampling program serves
``sample``. With concrete inputs (not under the user's jit/vmap/grad), rows are padded to coarse
buckets (:func:`eval_rows`) and, for D ≤ ``FULL_LAYOUT_MAX_FEATURES``, the parameters of every
covariance type are given in the "full" layout, so repeated calls of any size and all four
covariance types share programs (each new program costs ~0.2-1 s to compile).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .compile_cache import cached_jit, quick_compile, quick_compile_options
from .covariance import get_covariance_model
from .core import pad_components
from .rows import auto_chunk_size
from . import missing as _missing
from .params import FULL_LAYOUT_MAX_FEATURES, MixtureParams, to_full_layout
from .stats import chunked_map, mixture_log_resp_and_norm
from .validation import check_data, check_int, check_param_values, check_params

EVAL_MIN_ROWS = 128     # smaller inputs share the 128-row program


def eval_rows(n: int, chunk_size: int | None = None) -> int:
    """Padded row count of an evaluation: N rounded up to 8 buckets per doubling (≤ 1/8
    padding, at least EVAL_MIN_ROWS), then to a multiple of ``chunk_size``."""
    n = max(n, EVAL_MIN_ROWS)
    step = 1 << max(0, n.bit_length() - 4)
    rows = -(-n // step) * step
    if chunk_size is not None:
        rows = -(-rows // chunk_size) * chunk_size
    return rows


def _traced(*trees) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(trees))


# Evaluations of up to this many rows·K·D run with K padded to EVAL_COMPONENTS (or the next
# power of two): one program serves a sweep over K. One evaluation of that size takes a few
# milliseconds (20k×6 at K=16: ~8 ms on a 2-core CPU) against ~0.4 s to compile a program per K.
EVAL_PAD_ELEMENTS = 1 << 21
EVAL_COMPONENTS = 16
QUICK_EVAL_ELEMENTS = 1 << 18


def eval_components(n_rows: int, n_components: int, n_features: int) -> int:
    """Components of the evaluation program for a concrete evaluation of ``n_rows`` rows:
    K padded to max(16, next power of two) when the padded problem is small, else K."""
    padded = max(EVAL_COMPONENTS, 1 << (n_components - 1).bit_length())
    return padded if eval_rows(n_rows) * padded * n_features <= EVAL_PAD_ELEMENTS else n_components


def quick_evaluation(n_rows: int, n_components: int, n_features: int) -> bool:
    """Whether a concrete evaluation of this (padded) size compiles with the quick options:
    one pass of at most QUICK_EVAL_ELEMENTS rows·K·D takes ~1 ms, its compile ~0.3 s."""
    return quick_compile(n_rows * n_components * n_features, QUICK_EVAL_ELEMENTS)


def evaluation_params(params: MixtureParams, dtype=None, n_rows: int | None = None
                      ) -> MixtureParams:
    """Concrete ``params`` as host numpy arrays in ``dtype``, in the "full" layout when D is at
    most FULL_LAYOUT_MAX_FEATURES (the same densities; one compiled program for every type).
    With ``n_rows`` (the padded rows to evaluate), K is also padded (:func:`eval_components`)
    with weight-0 components: their log responsibilities are −inf; callers keep the first K
    columns."""
    params = jax.device_get(params)
    dtype = np.dtype(dtype if dtype is not None else np.asarray(params.means).dtype)
    params = jax.tree_util.tree_map(lambda a: np.asarray(a, dtype), params)
    k, d = params.means.shape
    if d > FULL_LAYOUT_MAX_FEATURES:
        return params
    params = to_full_layout(params)
    return params if n_rows is None else pad_components(params, eval_components(n_rows, k, d))


@functools.partial(cached_jit, static_argnames=("chunk_size", "quick_compile"),
                   compiler_options=quick_compile_options)
def evaluate(params: MixtureParams, x: jax.Array, chunk_size: int | None = None,
             quick_compile: bool = False):
    """(log responsibilities (N, K), log density (N,)) of rows ``x``, chunked. The one
    evaluation program (use it under jit; on the host prefer :func:`evaluate_rows`).
    ``quick_compile``: built with the quick options (:func:`quick_evaluation`)."""
    shift = jnp.mean(params.means, axis=0)
    return chunked_map(lambda xc: mixture_log_resp_and_norm(params, xc, shift), x,
                       chunk_size)


def evaluate_rows(params: MixtureParams, x, chunk_size: int | None = None):
    """:func:`evaluate` of concrete rows through the shared program: rows padded to
    :func:`eval_rows`, parameters in :func:`evaluation_params` form (K padded too). -> the
    padded outputs (the first ``x.shape[0]`` rows and K columns are the answer; the caller
    slices, on the host if it can)."""
    x = np.asarray(x)
    n, d = x.shape
    if chunk_size is None:      # sized for the program's K: the K sharing a program share it
        chunk_size = auto_chunk_size(n, eval_components(n, params.n_components, d), d)
    rows = eval_rows(n, chunk_size)
    params = evaluation_params(params, x.dtype, rows)
    if rows != n:
        x = np.concatenate([x, np.zeros((rows - n, d), x.dtype)])
    return evaluate(params, x, chunk_size, quick_evaluation(rows, params.n_components, d))


def _auto_chunk(params: MixtureParams, x: jax.Array, chunk_size: int | None) -> int | None:
    """The user's chunk_size, else the cache-sized automatic one of :func:`gmmjax.fit` (measured
    7x faster than one pass at N=100k, D=K=16: the (N, K, D) temporaries stop spilling to RAM)."""
    if chunk_size is not None:
        return check_int(chunk_size, "chunk_size", 1)
    return auto_chunk_size(x.shape[0], params.n_components, params.n_features)


def _checked(params: MixtureParams, X, missing: str = "error") -> jax.Array:
    check_params(params)
    marginalize = _missing.check_missing(missing)
    # NumPy rows stay NumPy (host=True): the evaluation program takes them, nothing else compiles
    x = (_missing.check_data_missing(X, min_samples=1, every_column=False, host=True)
         if marginalize else check_data(X, min_samples=1, host=True))
    check_params(params, x.shape[1])
    return x.astype(jnp.result_type(x.dtype, params.means.dtype))


def _may_be_missing(x: jax.Array, missing: str) -> bool:
    """missing="marginalize" and x holds NaN (or is traced): the missing-value kernel is needed."""
    return missing == "marginalize" and _missing.fit_buckets(x) is not None


def _evaluated(params: MixtureParams, X, chunk_size: int | None, missing: str = "error"):
    """(log_resp, log density, traced). Concrete input: NumPy arrays of the real rows (the
    host slices and transforms them: no eager XLA op, so no compile per N); traced: jax."""
    x = _checked(params, X, missing)
    chunk = _auto_chunk(params, x, chunk_size)
    if _may_be_missing(x, missing):
        return (*_missing.evaluate(params, x, (0, 1), chunk_size=chunk), True)
    if _traced(params, x):
        return (*evaluate(params, x, chunk), True)
    n = x.shape[0]
    log_resp, norm = jax.device_get(evaluate_rows(   # automatic chunk: the padded K's
        params, np.asarray(x), None if chunk_size is None else chunk))
    return log_resp[:n, :params.n_components], norm[:n], False


def _out(a: np.ndarray, traced: bool) -> jax.Array:
    return a if traced else jax.device_put(
        a.astype(jax.dtypes.canonicalize_dtype(a.dtype), copy=False))


def log_prob(params: MixtureParams, X, *, chunk_size: int | None = None,
             missing: str = "error") -> jax.Array:
    """(N,) log density of each row (scikit-learn's ``score_samples``).

    ``missing="marginalize"``: NaN entries are missing; each row's density is the marginal
    density of its observed entries (0 for a row with none)."""
    _, norm, traced = _evaluated(params, X, chunk_size, missing)
    return _out(norm, traced)


def predict_log_proba(params: MixtureParams, X, *, chunk_size: int | None = None,
                      missing: str = "error") -> jax.Array:
    """(N, K) log responsibilities (``missing`` as in :func:`log_prob`)."""
    log_resp, _, traced = _evaluated(params, X, chunk_size, missing)
    return _out(log_resp, traced)


def predict_proba(params: MixtureParams, X, *, chunk_size: int | None = None,
                  missing: str = "error") -> jax.Array:
    """(N, K) responsibilities (``missing`` as in :func:`log_prob`)."""
    log_resp, _, traced = _evaluated(params, X, chunk_size, missing)
    return jnp.exp(log_resp) if traced else _out(np.exp(log_resp), traced)


def predict(params: MixtureParams, X, *, chunk_size: int | None = None,
            missing: str = "error") -> jax.Array:
    """(N,) most likely component (``missing`` as in :func:`log_prob`)."""
    log_resp, _, traced = _evaluated(params, X, chunk_size, missing)
    return jnp.argmax(log_resp, axis=1) if traced else _out(np.argmax(log_resp, axis=1), traced)


@cached_jit(static_argnames=("rows",))
def _sample(key, params, n_samples, rows):
    """``rows`` draws, of which the first ``n_samples`` (an operand) are real and sorted by
    label; the rest pad (so nearby sample sizes share a program)."""
    label_key, noise_key = jax.random.split(key)
    labels = jax.random.categorical(label_key, jnp.log(params.weights), shape=(rows,))
    labels = jnp.sort(jnp.where(jnp.arange(rows) < n_samples, labels, params.n_components))
    labels = jnp.minimum(labels, params.n_components - 1)
    z = jax.random.normal(noise_key, (rows, params.n_features), params.means.dtype)
    model = get_covariance_model(params.covariance_type)
    return params.means[labels] + model.noise_transform(z, labels, params.precisions_cholesky), labels


def sample_rows(key: jax.Array, params: MixtureParams, n_samples: int):
    """(X, labels) of :func:`sample` with concrete params padded to :func:`eval_rows` rows and
    in :func:`evaluation_params` form (one program for nearby sizes and every type); the first
    ``n_samples`` rows are the draws. Traced params draw exactly ``n_samples`` rows."""
    if _traced(key, params):
        return _sample(key, params, n_samples, rows=n_samples)
    return _sample(key, evaluation_params(params), np.int32(n_samples), rows=eval_rows(n_samples))


def sample(key: jax.Array, params: MixtureParams, n_samples: int) -> tuple[jax.Array, jax.Array]:
    """Draw ``n_samples`` rows. Returns (X (n, D), labels (n,)) grouped by component (ascending).

    Reparameterised: X is differentiable in the means and the precision Cholesky factors.
    Concrete params are checked (finite, weights >= 0, factors with a positive diagonal).
    """
    check_param_values(check_params(params))
    n = check_int(n_samples, "n_samples", 1)
    x, labels = sample_rows(key, params, n)
    if x.shape[0] == n:
        return x, labels
    x, labels = jax.device_get((x, labels))         # slice on the host: no compile per n
    return jax.device_put(x[:n]), jax.device_put(labels[:n])


def impute(params: MixtureParams, X, key: jax.Array | None = None, *,
           chunk_size: int | None = None) -> jax.Array:
    """X (N, D) with its NaN entries filled in under the mixture ``params``; observed entries are
    returned unchanged (bit for bit).

    Without ``key``: E[x_m | x_o] = Σ_k p(k | x_o) E_k[x_m | x_o] (posterior-weighted conditional
    means). With a PRNG ``key``: one draw per row of a component from p(k | x_o) and of x_m from
    that component's conditional (call with several keys for multiple imputation). A row with no
    observed entry gets the mixture mean (or a draw from the mixture). Works under jit."""
    x = _checked(params, X, "marginalize")
    return _missing.evaluate(params, x, 2, chunk_size=_auto_chunk(params, x, chunk_size), key=key)
