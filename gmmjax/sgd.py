"""Gradient fitting with optax: mini-batch maximum likelihood, optionally MAP with a conjugate prior.

The optimiser works on :class:`~gmmjax.unconstrained.UnconstrainedParams`, so every step yields a
valid mixture. Two levels:

- kernels ``sgd_init(params, optimizer)`` / ``sgd_step(state, x, w, optimizer=...)`` (blackjax style,
  pure, jit- and vmap-able: drive your own loop, or train a mixture inside a larger model);
- ``fit_sgd(key, data, n_components, ...)``: initialise (k-means by default, like :func:`gmmjax.fit`)
  and train over an array (ONE compiled program: shuffled epochs in ``lax.scan``) or an iterator of
  host batches (one compiled step, reused).

``fit_sgd`` trains in a standardised frame (data shifted by their mean and divided by one global
scale), so the optimiser's learning rate is in units of the data's spread whatever the data's units;
the returned parameters are in the original frame.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .compile_cache import cached_jit, repeated_caller
from .covariance import array_namespace, get_covariance_model
from .em import Status
from .init import INIT_METHODS, initialize
from .params import MixtureParams, from_precisions_cholesky
from .stats import log_resp_and_norm, pad_rows, weighted_log_prob
from .unconstrained import UnconstrainedParams, from_unconstrained, to_unconstrained
from .validation import (check_data, check_int, check_n_samples, check_nonnegative, check_params,
                         check_sample_weight)

DEFAULT_LEARNING_RATE = 0.03


# --------------------------------------------------------------------------------------------------
# Prior


class ConjugatePrior(NamedTuple):
    """Conjugate prior for MAP training (Fraley & Raftery, 2007):

    weights ~ Dirichlet(alpha) (alpha = 1: flat); Σ_k ~ inverse-Wishart(Ψ, dof) with
    Ψ = scale_cholesky · scale_choleskyᵀ (one Σ for "tied"; for diag/spherical the prior density
    is evaluated at the diagonal/isotropic Σ); μ_k | Σ_k ~ N(mean, Σ_k / kappa).
    """

    alpha: jax.Array
    mean: jax.Array
    kappa: jax.Array
    dof: jax.Array
    scale_cholesky: jax.Array


def weak_prior(X, n_components: int, sample_weight=None, *, alpha=1.0, kappa=0.01,
               dof=None) -> ConjugatePrior:
    """The weak default prior of Fraley & Raftery (2007): mean = data mean, kappa = 0.01,
    dof = D + 2, Ψ = data covariance / K^(2/D), flat Dirichlet (alpha = 1) on the weights.

    It only keeps components from collapsing; with a few hundred rows per component its effect
    on the fit is negligible.
    """
    x = check_data(X)
    n_components = check_int(n_components, "n_components", 1)
    w = check_sample_weight(sample_weight, x.shape[0], x.dtype)
    return _weak_prior(x, w, n_components, alpha, kappa, dof)


def _weak_prior(x, w, n_components, alpha=1.0, kappa=0.01, dof=None) -> ConjugatePrior:
    n, d = x.shape
    wsum = jnp.sum(w)
    mean = jnp.sum(w[:, None] * x, axis=0) / wsum
    xc = x - mean
    cov = jnp.matmul((w[:, None] * xc).T, xc, precision=jax.lax.Precision.HIGHEST) / wsum
    jitter = 1e-6 * jnp.maximum(jnp.trace(cov) / d, jnp.finfo(x.dtype).tiny)
    psi = (cov + jitter * jnp.eye(d, dtype=x.dtype)) / n_components ** (2.0 / d)
    dof = d + 2.0 if dof is None else dof
    dt = x.dtype
    return ConjugatePrior(jnp.asarray(alpha, dt), mean, jnp.asarray(kappa, dt), jnp.asarray(dof, dt),
                          jnp.linalg.cholesky(psi))


def log_prior(params: MixtureParams, prior: ConjugatePrior) -> jax.Array:
    """log p(π, μ, Σ) under a :class:`ConjugatePrior`, up to an additive constant (a density in
    (π, μ, Σ), so MAP modes agree with the closed-form MAP-EM updates). Differentiable."""
    model = get_covariance_model(params.covariance_type)
    u = params.precisions_cholesky
    k, d = params.means.shape[-2:]
    half_logdet_prec = model.log_det(u, d)            # (K,), or (1,) for tied: ½ log|Σ⁻¹|
    n_prec = half_logdet_prec.shape[0]
    # tr(Ψ Λ) = Σ_j l_jᵀ Λ l_j for the columns l_j of Ψ's Cholesky factor: a Mahalanobis sum.
    trace = jnp.sum(model.mahalanobis(prior.scale_cholesky.T,
                                      jnp.zeros((n_prec, d), u.dtype), u))
    inv_wishart = (prior.dof + d + 1) * jnp.sum(half_logdet_prec) - 0.5 * trace
    maha_mean = model.mahalanobis(prior.mean[None], params.means, u)[0]   # (K,)
    normal = jnp.sum(jnp.broadcast_to(half_logdet_prec, (k,)) - 0.5 * prior.kappa * maha_mean)
    dirichlet = (prior.alpha - 1) * jnp.sum(jnp.log(params.weights))
    return inv_wishart + normal + dirichlet


def _prior_in_frame(prior: ConjugatePrior, shift, scale) -> ConjugatePrior:
    """The prior on parameters of standardised data (x − shift) / scale (same MAP, up to frame)."""
    return prior._replace(mean=(prior.mean - shift) / scale,
                          scale_cholesky=prior.scale_cholesky / scale)


# --------------------------------------------------------------------------------------------------
# Objective and kernels


def mean_log_likelihood(params: MixtureParams, x: jax.Array, w: jax.Array | None = None):
    """Weighted mean log density Σ w log p(x) / Σ w (no host-side checks; rows with w = 0 are
    inert padding). Differentiable in params and x."""
    shift = jax.lax.stop_gradient(jnp.mean(params.means, axis=0))
    if w is None:
        return jnp.mean(log_resp_and_norm(weighted_log_prob(params, x, shift))[1])
    live = w > 0
    x = jnp.where(live[:, None], x, 0.0)     # padding rows can hold anything, even inf
    norm = log_resp_and_norm(weighted_log_prob(params, x, shift))[1]
    return jnp.sum(jnp.where(live, w * norm, 0.0)) / jnp.sum(w)


def sgd_objective(u: UnconstrainedParams, x: jax.Array, w: jax.Array | None = None,
                  prior: ConjugatePrior | None = None, n_samples=None) -> jax.Array:
    """Mini-batch loss: −(weighted mean log-likelihood of the batch) − log prior / n_samples.

    Its expectation over batches is −(1/N)·(log-likelihood + log prior) of the whole data set.
    """
    params = from_unconstrained(u)
    loss = -mean_log_likelihood(params, x, w)
    if prior is not None:
        loss = loss - log_prior(params, prior) / n_samples
    return loss


class SGDState(NamedTuple):
    """Carry of :func:`sgd_step`: unconstrained params, optax state, step count, and how many
    steps were skipped because the loss or the update was not finite."""

    params: UnconstrainedParams
    opt_state: Any
    step: jax.Array
    n_nonfinite: jax.Array


def sgd_init(params: MixtureParams | UnconstrainedParams,
             optimizer: optax.GradientTransformation) -> SGDState:
    """Initial :class:`SGDState` from (constrained or unconstrained) parameters."""
    u = to_unconstrained(params) if isinstance(params, MixtureParams) else params
    return SGDState(u, optimizer.init(u), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def sgd_step(state: SGDState, x: jax.Array, w: jax.Array | None = None, *,
             optimizer: optax.GradientTransformation, prior: ConjugatePrior | None = None,
             n_samples=None) -> tuple[SGDState, jax.Array]:
    """One optimiser step on the batch ``x`` (B, D) with optional row weights ``w`` (B,) (zero =
    padding). Returns (new state, loss before the step). Pure: jit it with the optimizer closed
    over or static; vmap it over independent states and batches.

    A step whose loss, gradient or update is not finite is skipped (state unchanged except
    ``step`` and ``n_nonfinite``), so NaN never enters the parameters.
    """
    if prior is not None and n_samples is None:
        raise ValueError("MAP training (a prior) needs n_samples, the size of the whole data set, "
                         "to weigh the prior against the batch.")
    loss, grads = jax.value_and_grad(sgd_objective)(state.params, x, w, prior, n_samples)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    new = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(loss)
    for leaf in jax.tree_util.tree_leaves(new):
        finite = finite & jnp.all(jnp.isfinite(leaf))

    def keep(a, b):
        return jnp.where(finite, a, b)

    params = jax.tree_util.tree_map(keep, new, state.params)
    opt_state = jax.tree_util.tree_map(keep, opt_state, state.opt_state)
    return SGDState(params, opt_state, state.step + 1,
                    state.n_nonfinite + (~finite).astype(jnp.int32)), loss


# --------------------------------------------------------------------------------------------------
# Frames and batches (shared with gmmjax.online)


def data_frame(x: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(shift (D,), scale ()) standardising x: weighted mean, root mean feature variance."""
    wsum = jnp.sum(w)
    shift = jnp.sum(w[:, None] * x, axis=0) / wsum
    var = jnp.sum(w[:, None] * (x - shift) ** 2) / (wsum * x.shape[1])
    scale = jnp.where(var > 0, jnp.sqrt(var), 1.0).astype(x.dtype)
    return shift, scale


def params_to_frame(params: MixtureParams, shift, scale) -> MixtureParams:
    """Parameters for data (x − shift) / scale (any covariance type: U scales by a scalar)."""
    return from_precisions_cholesky(params.weights, (params.means - shift) / scale,
                                    params.precisions_cholesky * scale, params.covariance_type)


@cached_jit
def _final_params(u, frame):
    """The trained unconstrained params as MixtureParams in the data's frame (one program)."""
    return params_from_frame(from_unconstrained(u), *frame)


def params_from_frame(params: MixtureParams, shift, scale) -> MixtureParams:
    return from_precisions_cholesky(params.weights, params.means * scale + shift,
                                    params.precisions_cholesky / scale, params.covariance_type)


def epoch_batches(key, x: jax.Array, w: jax.Array, batch_size: int, shuffle: bool):
    """(n_batches, B, D) and (n_batches, B): the rows in a random order (if ``shuffle``), cut into
    batches of ``batch_size``; the last batch padded with zero-weight rows."""
    n, d = x.shape
    if shuffle:
        perm = jax.random.permutation(key, n)
        x, w = x[perm], w[perm]
    n_batches = -(-n // batch_size)
    extra = n_batches * batch_size - n
    x = jnp.concatenate([x, jnp.zeros((extra, d), x.dtype)])
    w = jnp.concatenate([w, jnp.zeros((extra,), w.dtype)])
    return x.reshape(n_batches, batch_size, d), w.reshape(n_batches, batch_size)


def batch_source(data, n_epochs: int | None) -> tuple[Callable[[], Any], int, bool]:
    """For non-array ``data``: (a function returning the iterable of one epoch, n_epochs,
    one_shot).

    ``data`` may be a callable returning a fresh iterable per epoch, a re-iterable collection
    (a list of arrays), or a one-shot iterator (then only one epoch is possible).
    """
    if callable(data):
        return data, 1 if n_epochs is None else n_epochs, False
    try:
        one_shot = iter(data) is data
    except TypeError:
        raise TypeError(f"data must be an array of shape (n_samples, n_features), an iterable of "
                        f"such batches, or a callable returning one; got {type(data).__name__}."
                        ) from None
    n_epochs = 1 if n_epochs is None else n_epochs
    if one_shot and n_epochs > 1:
        raise ValueError(f"data is a one-shot iterator, which can be consumed once, but n_epochs="
                         f"{n_epochs}; pass a callable returning a fresh iterator per epoch, or a "
                         "list of batches.")
    return (lambda: data), n_epochs, one_shot


def start_batches(key, data, n_epochs: int | None, sample_size: int | None,
                  warmup_batches: int, init, covariance_type: str, n_components: int):
    """Where training over host batches starts.

    -> (epochs, n_epochs, x, w to initialise from (device arrays), init_name, init_params).

    ``epochs()`` returns the next epoch's iterable of checked (x, w) batches. Data that can be
    iterated again get one extra pass that draws a reservoir sample of ``sample_size`` rows from
    the whole stream (:func:`gmmjax.fit_stream`'s), so ordered batches (by time, file or class)
    do not start every component inside the first batch's clusters. A one-shot iterator (or
    ``sample_size=None``) initialises from its first ``warmup_batches`` batches, which are then
    trained on first as usual.
    """
    epoch_iterable, n_epochs, one_shot = batch_source(data, n_epochs)
    if sample_size is not None and not one_shot:
        from .streaming import _Scan, _seed_from_key
        scan = _Scan(sample_size, _seed_from_key(key))
        for batch in epoch_iterable():
            scan.add(*(np.asarray(a) for a in split_batch(batch)))
        if scan.d is None:
            raise ValueError("data yielded no batches; a callable must return a fresh iterable "
                             "of batches on every call.")
        m = min(sample_size, scan.n)
        epochs, sample = (lambda: map(split_batch, epoch_iterable())), (scan.sx[:m], scan.sw[:m])
    else:
        first = iter(epoch_iterable())
        head = [split_batch(b) for b in itertools.islice(first, warmup_batches)]
        if not head:
            raise ValueError("data yielded no batches.")
        if len({b[0].shape[1] for b in head}) > 1:
            raise ValueError("the warm-up batches disagree on the number of features.")
        sample = (np.concatenate([b[0] for b in head]), np.concatenate([b[1] for b in head]))
        pending = [itertools.chain(head, map(split_batch, first))]

        def epochs():
            return pending.pop() if pending else map(split_batch, epoch_iterable())

    x0, w0 = jax.device_put((np.asarray(sample[0]), np.asarray(sample[1])))
    return (epochs, n_epochs, x0, w0) + _check_start(x0, w0, n_components, init, covariance_type)


def is_array_data(data) -> bool:
    """An (N, D) array (numpy, JAX, or a list of rows) rather than a source of batches."""
    if hasattr(data, "shape") and hasattr(data, "dtype"):
        return True
    return isinstance(data, (list, tuple)) and len(data) > 0 and np.ndim(data[0]) <= 1


def check_training_options(n_components, batch_size, n_epochs, sample_size, warmup_batches,
                           covariance_type: str, reg_covar):
    """fit_sgd's and fit_online's shared options, checked on the host -> (n_components,
    batch_size, n_epochs or None, sample_size or None, warmup_batches) as ints."""
    get_covariance_model(covariance_type)
    check_nonnegative(reg_covar, "reg_covar")
    return (check_int(n_components, "n_components", 1), check_int(batch_size, "batch_size", 1),
            None if n_epochs is None else check_int(n_epochs, "n_epochs", 1),
            None if sample_size is None else check_int(sample_size, "sample_size", 1),
            check_int(warmup_batches, "warmup_batches", 1))


def check_array_data(data, sample_weight, n_components: int, init, covariance_type: str):
    """An in-memory (N, D) data set for fit_sgd / fit_online, checked on the host.

    -> (x (N, D), w (N,), init_name, init_params in x's dtype or None).
    """
    x = check_data(data, host=True)          # NumPy stays NumPy until the program takes it
    w = check_sample_weight(sample_weight, x.shape[0], x.dtype, host=isinstance(x, np.ndarray))
    return (x, w) + _check_start(x, w, n_components, init, covariance_type)


def _check_start(x, w, n_components: int, init, covariance_type: str):
    """Enough weighted rows, and the init -> (init_name, init_params in x's dtype or None)."""
    check_n_samples(w, n_components)
    init_name, init_params = check_init(init, covariance_type, n_components, x.shape[1])
    if init_params is not None:
        init_params = init_params.astype(x.dtype)
    return init_name, init_params


def split_batch(batch, name="batch"):
    """A host batch: an (B, D) array or a tuple (x, sample_weight). Checked on the host."""
    if isinstance(batch, tuple) and len(batch) == 2:
        xb, wb = batch
    else:
        xb, wb = batch, None
    xb = check_data(xb, name, host=True)     # NumPy batches stay NumPy (nothing compiled)
    return xb, check_sample_weight(wb, xb.shape[0], xb.dtype, host=isinstance(xb, np.ndarray))


def pad_batch(x, w, rows: int):
    """Pad a batch with zero-weight rows to a multiple of ``rows`` (few distinct shapes); NumPy
    batches are padded on the host."""
    return pad_rows(x, w, rows)


def check_init(init, covariance_type: str, n_components: int, n_features: int):
    """-> (init_name, init_params or None)."""
    if isinstance(init, MixtureParams):
        if init.covariance_type != covariance_type:
            raise ValueError(f"init params have covariance_type {init.covariance_type!r} but "
                             f"covariance_type={covariance_type!r} was requested.")
        check_params(init, n_features)
        if np.ndim(init.weights) != 1 or np.shape(init.means)[0] != n_components:
            raise ValueError(f"init params must hold one mixture of {n_components} components; "
                             f"got means of shape {tuple(np.shape(init.means))}.")
        return "params", init
    if isinstance(init, str) and init in INIT_METHODS:
        return init, None
    raise ValueError(f"Unknown init {init!r}; expected one of {list(INIT_METHODS)} or a "
                     "MixtureParams.")


def initial_params(key, xs, w, init_name, init_params, n_components, covariance_type, reg_covar):
    """Initial params in the frame of ``xs`` (already standardised/shifted) -> (params, ok)."""
    if init_params is not None:
        return init_params, jnp.array(True)
    return initialize(key, xs, w, n_components, covariance_type, init_name, reg_covar)


# --------------------------------------------------------------------------------------------------
# fit_sgd


class SGDResult(NamedTuple):
    """What :func:`fit_sgd` returns.

    params: fitted MixtureParams (original frame); log_likelihood: their weighted mean
    log-likelihood on the data (array data; NaN for iterators); losses (n_epochs,): mean objective
    per epoch (mean negative log-likelihood of the batches, minus log prior / N under MAP, up to a
    constant); n_steps; n_nonfinite: steps skipped for a non-finite loss or update; status
    (:class:`Status`): MAX_ITER_REACHED when all epochs ran (SGD has no convergence test),
    NONFINITE if any step was skipped, ILL_DEFINED_COVARIANCE if the initialisation failed;
    state: the final :class:`SGDState` (standardised frame ``frame`` = (shift, scale)), to resume.
    """

    params: MixtureParams
    log_likelihood: jax.Array
    losses: jax.Array
    n_steps: jax.Array
    n_nonfinite: jax.Array
    status: jax.Array
    state: SGDState
    frame: tuple


@functools.lru_cache(maxsize=8)
def _default_optimizer(learning_rate: float) -> optax.GradientTransformation:
    return optax.adam(learning_rate)


class DefaultAdam(NamedTuple):
    """The default optimizer, ``optax.adam(learning_rate)``, named by plain values: as a static
    argument it keys gmmjax's on-disk program cache (an optax transformation, a tuple of
    closures, cannot), so a later process loads fit_sgd's programs instead of compiling."""

    learning_rate: float


def _optimizer(optimizer) -> optax.GradientTransformation:
    """The transformation a program runs: the user's, or the default one ``DefaultAdam`` names."""
    return _default_optimizer(optimizer.learning_rate) if isinstance(optimizer, DefaultAdam) \
        else optimizer


def _status(ok, n_nonfinite):
    xp = array_namespace(n_nonfinite)
    return xp.where(~ok, Status.ILL_DEFINED_COVARIANCE,
                    xp.where(n_nonfinite > 0, Status.NONFINITE, Status.MAX_ITER_REACHED)
                    ).astype(np.int32)


@functools.partial(cached_jit, static_argnames=("optimizer", "n_components", "covariance_type",
                                                "init_name", "n_epochs", "batch_size", "shuffle",
                                                "use_prior"))
def _fit_sgd_array(key, x, w, init_params, prior, reg_covar, *, optimizer, n_components,
                   covariance_type, init_name, n_epochs, batch_size, shuffle, use_prior):
    optimizer = _optimizer(optimizer)
    shift, scale = data_frame(x, w)
    xs = (x - shift) / scale
    init_key, shuffle_key = jax.random.split(key)
    if init_params is not None:
        init_params = params_to_frame(init_params, shift, scale)
    params, ok = initial_params(init_key, xs, w, init_name, init_params, n_components,
                                covariance_type, reg_covar)
    if use_prior:
        prior = _weak_prior(xs, w, n_components) if prior is None else \
            _prior_in_frame(prior, shift, scale)
    else:
        prior = None
    n_samples = jnp.sum(w)
    state = sgd_init(params, optimizer)
    offset = x.shape[1] * jnp.log(scale)

    def epoch(state, epoch_key):
        xb, wb = epoch_batches(epoch_key, xs, w, batch_size, shuffle)

        def body(s, batch):
            s, loss = sgd_step(s, batch[0], batch[1], optimizer=optimizer, prior=prior,
                               n_samples=n_samples)
            return s, loss

        state, losses = jax.lax.scan(body, state, (xb, wb))
        bw = jnp.sum(wb, axis=1)
        return state, jnp.sum(losses * bw) / jnp.sum(bw) + offset

    keys = jax.random.split(shuffle_key, n_epochs)
    state, losses = jax.lax.scan(epoch, state, keys)
    final = from_unconstrained(state.params)
    loglik = mean_log_likelihood(final, xs, w) - offset
    return SGDResult(params_from_frame(final, shift, scale), loglik, losses, state.step,
                     state.n_nonfinite, _status(ok, state.n_nonfinite), state, (shift, scale))


@functools.partial(cached_jit, static_argnames=("n_components", "covariance_type", "init_name",
                                                "use_prior", "optimizer"))
def _sgd_setup(key, x, w, init_params, prior, reg_covar, *, optimizer, n_components,
               covariance_type, init_name, use_prior):
    optimizer = _optimizer(optimizer)
    shift, scale = data_frame(x, w)
    xs = (x - shift) / scale
    if init_params is not None:
        init_params = params_to_frame(init_params, shift, scale)
    params, ok = initial_params(key, xs, w, init_name, init_params, n_components, covariance_type,
                                reg_covar)
    if use_prior:
        prior = _weak_prior(xs, w, n_components) if prior is None else \
            _prior_in_frame(prior, shift, scale)
    else:
        prior = None
    return sgd_init(params, optimizer), ok, prior, (shift, scale)


# per batch, through compile_cache.repeated_caller (see online._online_step_jit)
@functools.partial(cached_jit, static_argnames=("optimizer",))
def _frame_step(state, x, w, frame, prior, n_samples, *, optimizer):
    optimizer = _optimizer(optimizer)
    shift, scale = frame
    state, loss = sgd_step(state, (x - shift) / scale, w, optimizer=optimizer, prior=prior,
                           n_samples=n_samples)
    return state, loss + x.shape[1] * jnp.log(scale), jnp.sum(w)


def fit_sgd(key: jax.Array, data, n_components: int, *, covariance_type: str = "full",
            optimizer: optax.GradientTransformation | None = None, n_epochs: int | None = None,
            batch_size: int = 256, init: str | MixtureParams = "kmeans", prior=None,
            n_samples: int | None = None, reg_covar=1e-6, sample_weight=None,
            shuffle: bool = True, sample_size: int | None = 16384,
            warmup_batches: int = 1) -> SGDResult:
    """Fit a Gaussian mixture by mini-batch gradient descent on the negative log-likelihood.

    Args:
      key: PRNG key (initialisation and shuffling).
      data: an (N, D) array; or an iterable of host batches ((B, D) arrays or (x, sample_weight)
        tuples); or a callable returning a fresh such iterable per epoch. A one-shot iterator
        allows one epoch. Batches are padded with zero-weight rows to a multiple of
        ``batch_size`` rows (or of the first batch's size if that is larger), so the step compiles
        once for equal-sized batches. What initialises the model and fixes the standardising
        frame: for a callable or a list, a reservoir sample of ``sample_size`` rows from one
        extra pass over all batches; for a one-shot iterator (or ``sample_size=None``), the
        first ``warmup_batches`` batches only. Gradient steps rarely move a component across
        empty space, so with batches ordered by time, file or class a start from the first
        batch alone leaves every component in that batch's clusters: raise ``warmup_batches``
        until the warm-up holds every cluster, or pass a callable.
      n_components: K.
      covariance_type: "full", "tied", "diag" or "spherical".
      optimizer: an optax GradientTransformation on the unconstrained parameters (default
        ``optax.adam(0.03)``; rates are in units of the data's standardised scale). Pass the same
        object again to reuse the compiled program.
      n_epochs: passes over the data (default 100 for arrays, 1 for batches).
      batch_size: rows per step for array data (the last batch is padded with zero weights).
      init: "kmeans" (default), "k-means++", "random", "random_from_data", or a MixtureParams.
      prior: None (maximum likelihood), "weak" (MAP with :func:`weak_prior` of the data, or of the
        first batch) or a :class:`ConjugatePrior` in the data's frame.
      n_samples: size of the whole data set, to weigh the prior against a batch; required for
        MAP with batches (known for arrays).
      reg_covar: added to the diagonal of the covariances at initialisation (as in EM).
      sample_weight: (N,) row weights, for array data.
      shuffle: reshuffle the rows each epoch (array data).
      sample_size: rows of the reservoir sample that initialises a batch source that can be
        iterated again (None: use the warm-up batches instead).
      warmup_batches: batches of a one-shot iterator buffered to initialise from.

    Returns an :class:`SGDResult`.
    """
    n_components, batch_size, n_epochs, sample_size, warmup_batches = check_training_options(
        n_components, batch_size, n_epochs, sample_size, warmup_batches, covariance_type,
        reg_covar)
    if optimizer is None:
        optimizer = DefaultAdam(float(DEFAULT_LEARNING_RATE))
    elif not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise TypeError(f"optimizer must be an optax.GradientTransformation (e.g. "
                        f"optax.adam(1e-2)); got {type(optimizer).__name__}.")
    if not (prior is None or isinstance(prior, ConjugatePrior)
            or (isinstance(prior, str) and prior == "weak")):
        raise ValueError(f"prior must be None, 'weak' or a gmmjax.ConjugatePrior; got {prior!r}.")
    use_prior = prior is not None
    user_prior = prior if isinstance(prior, ConjugatePrior) else None
    if n_samples is not None:
        n_samples = check_int(n_samples, "n_samples", 1)

    if is_array_data(data):
        x, w, init_name, init_params = check_array_data(data, sample_weight, n_components, init,
                                                        covariance_type)
        n, d = x.shape
        if user_prior is not None:
            user_prior = _check_prior(user_prior, d, x.dtype)
        return _fit_sgd_array(key, x, w, init_params, user_prior, np.asarray(reg_covar, x.dtype),
                              optimizer=optimizer, n_components=n_components,
                              covariance_type=covariance_type, init_name=init_name,
                              n_epochs=100 if n_epochs is None else n_epochs,
                              batch_size=min(batch_size, n), shuffle=bool(shuffle),
                              use_prior=use_prior)

    if sample_weight is not None:
        raise ValueError("sample_weight applies to array data; with batches, yield (x, weight) "
                         "tuples instead.")
    if use_prior and n_samples is None:
        raise ValueError("MAP training over batches (prior set) needs n_samples, the size of "
                         "the whole data set, to weigh the prior against each batch.")
    epochs, n_epochs, x0, w0, init_name, init_params = start_batches(
        key, data, n_epochs, sample_size, warmup_batches, init, covariance_type, n_components)
    d, dtype = x0.shape[1], x0.dtype
    if user_prior is not None:
        user_prior = _check_prior(user_prior, d, dtype)
    state, ok, prior_f, frame = _sgd_setup(
        key, x0, w0, init_params, user_prior, np.asarray(reg_covar, dtype), optimizer=optimizer,
        n_components=n_components, covariance_type=covariance_type, init_name=init_name,
        use_prior=use_prior)
    n_total = None if n_samples is None else np.asarray(n_samples, dtype)
    rows = None
    losses = []
    step = repeated_caller(_frame_step, optimizer=optimizer)
    for epoch in range(n_epochs):
        per_batch = []          # (loss, weight) of each batch, summed on the host per epoch
        for xb, wb in epochs():
            if xb.shape[1] != d:
                raise ValueError(f"batch has {xb.shape[1]} features; the first batch had {d}.")
            rows = max(batch_size, xb.shape[0]) if rows is None else rows
            xb, wb = pad_batch(xb.astype(dtype), wb.astype(dtype), rows)
            state, loss, bw = step(state, xb, wb, frame, prior_f, n_total)
            per_batch.append((loss, bw))
        if not per_batch:
            raise ValueError(f"data yielded no batches in epoch {epoch}; a callable must return "
                             "a fresh iterable of batches on every call.")
        loss_b, weight_b = np.asarray(jax.device_get(per_batch), np.float64).T
        losses.append(np.sum(loss_b * weight_b) / np.sum(weight_b))
    final = _final_params(state.params, frame)
    ok, n_nonfinite = jax.device_get((ok, state.n_nonfinite))
    nan, losses, status = jax.device_put((np.asarray(np.nan, dtype), np.asarray(losses, dtype),
                                          _status(ok, n_nonfinite)))
    return SGDResult(final, nan, losses, state.step, state.n_nonfinite, status, state, frame)


def _check_prior(prior: ConjugatePrior, d: int, dtype) -> ConjugatePrior:
    if np.shape(prior.mean) != (d,) or np.shape(prior.scale_cholesky) != (d, d):
        raise ValueError(f"prior.mean must have shape ({d},) and prior.scale_cholesky ({d}, {d}); "
                         f"got {np.shape(prior.mean)} and {np.shape(prior.scale_cholesky)}.")
    for name in ("alpha", "kappa", "dof"):
        value = getattr(prior, name)
        if np.ndim(value) != 0 or not np.isfinite(float(value)) or not float(value) > 0:
            raise ValueError(f"prior.{name} must be a positive scalar; got {value!r}.")
    return ConjugatePrior(*(jnp.asarray(a, dtype) for a in prior))
