"""Variational Bayesian Gaussian mixtures (sklearn's ``BayesianGaussianMixture``) on the EM engine.

The model (Bishop §10.2; Blei & Jordan 2006 for the truncated Dirichlet process): weights with a
Dirichlet-process (stick-breaking) or Dirichlet-distribution prior of concentration γ, and for each
component a Gaussian-Wishart prior N(μ | m₀, (β₀Λ)⁻¹) W(Λ | Ψ₀⁻¹, ν₀). The variational posterior has
the same form and is held in :class:`BayesianParams`. One variational iteration is

  E-step: r ∝ exp(E[ln π_k] + E[ln N(x | μ_k, Λ_k⁻¹)]), accumulated rows minor by ``rows_minor_stats``;
  M-step: the conjugate updates from (nk, x̄k, Sk), exactly as scikit-learn's ``_m_step``;
  bound : sklearn's ELBO (constants dropped, a total over samples, not a mean),

driven by the same ``gmmjax.em.run_loop`` as EM (|Δ bound| < tol, strict). Everything is computed in
a frame shifted by the weighted data mean (the bound and the updates are shift-invariant), so offset
data do not cancel. ``sample_weight`` acts as frequency weights (a row of weight 2 counts twice).

Functions here accept and return arrays of X's dtype; float64 needs x64 enabled by the caller.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import digamma, gammaln

from .compile_cache import cached_jit
from .covariance import array_namespace, get_covariance_model
from .em import Status, best_restart, run_from
from .init import INIT_METHODS, initial_responsibilities, resp_stats
from .params import MixtureParams
from .rows import auto_chunk_size, bucket_rows, pad_resp, pad_to
from .stats import (SuffStats, chunked_map, chunked_sum, component_log_prob_rows_minor,
                    log_resp_and_norm, rows_minor_operand, rows_minor_stats)
from .validation import (HostCentring, as_operand, check_data, check_em_options,
                         check_init_resp, check_n_samples, check_sample_weight, is_traced,
                         warn_if_narrowed)

HIGHEST = jax.lax.Precision.HIGHEST
LOG_2 = math.log(2.0)


def betaln(a, b):
    """ln B(a, b) from ``gammaln``. ``jax.scipy.special.betaln`` (jax 0.10.2) is off by up to
    ~1e-6 absolute for moderate arguments (e.g. 1.7e-7 at (10, 0.33) vs scipy), which would show in
    the bound; this form agrees with scipy to ~1e-13 relative over the range a ≥ 1 used here."""
    g = gammaln(jnp.stack(jnp.broadcast_arrays(a, b, a + b)))   # one call site: less to compile
    return g[0] + g[1] - g[2]


# --------------------------------------------------------------------------------------------
# Weight priors: one small object per type (no if/elif on the name elsewhere).
# --------------------------------------------------------------------------------------------

class DirichletProcess:
    """Truncated stick-breaking prior; the posterior concentration is (2, K): rows a and b."""

    name = "dirichlet_process"

    def update(self, nk, prior):
        # a_k = 1 + n_k, b_k = γ + Σ_{j>k} n_j (sklearn's reversed cumulative sum, same order).
        tail = jnp.cumsum(nk[::-1])[::-1]
        tail = jnp.concatenate([tail[1:], jnp.zeros((1,), nk.dtype)])
        return jnp.stack([1.0 + nk, prior + tail])

    def expected_log_weights(self, conc):
        a, b = conc[0], conc[1]
        dig_a, dig_b, dsum = digamma(jnp.stack([a, b, a + b]))     # one call site
        stick = jnp.cumsum(dig_b - dsum)
        return dig_a - dsum + jnp.concatenate([jnp.zeros((1,), a.dtype), stick[:-1]])

    def log_norm(self, conc):
        """ln of the normaliser of q(π), as it enters sklearn's bound: −Σ ln B(a_k, b_k)."""
        return -jnp.sum(betaln(conc[0], conc[1]))

    def weights(self, conc):
        xp = array_namespace(conc)
        a, b = conc[0], conc[1]
        frac = b / (a + b)
        w = a / (a + b) * xp.concatenate([xp.ones((1,), a.dtype), xp.cumprod(frac[:-1])])
        return w / xp.sum(w)


class DirichletDistribution:
    """Finite symmetric Dirichlet prior; the posterior concentration is α (K,)."""

    name = "dirichlet_distribution"

    def update(self, nk, prior):
        return prior + nk

    def expected_log_weights(self, conc):
        return digamma(conc) - digamma(jnp.sum(conc))

    def log_norm(self, conc):
        return gammaln(jnp.sum(conc)) - jnp.sum(gammaln(conc))

    def weights(self, conc):
        return conc / array_namespace(conc).sum(conc)


WEIGHT_PRIORS = {p.name: p for p in (DirichletProcess(), DirichletDistribution())}
WEIGHT_CONCENTRATION_PRIOR_TYPES = tuple(WEIGHT_PRIORS)


def get_weight_prior(name: str):
    try:
        return WEIGHT_PRIORS[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown weight_concentration_prior_type {name!r}; expected one of "
                         f"{list(WEIGHT_CONCENTRATION_PRIOR_TYPES)}.") from None


# --------------------------------------------------------------------------------------------
# Pytrees
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class BayesianParams:
    """The variational posterior (a pytree; the two type names are static metadata).

    weight_concentration: (2, K) rows (a, b) for "dirichlet_process", (K,) α for
    "dirichlet_distribution"; mean_precision β (K,); means m (K, D); degrees_of_freedom ν (K,)
    (a scalar for tied); covariances = (ν W)⁻¹ = E[Λ]⁻¹ and precisions_cholesky of ν W, shaped as
    in :class:`MixtureParams`. These are sklearn's fitted attributes of the same names.
    """

    weight_concentration: jax.Array
    mean_precision: jax.Array
    means: jax.Array
    degrees_of_freedom: jax.Array
    covariances: jax.Array
    precisions_cholesky: jax.Array
    covariance_type: str = "full"
    weight_concentration_prior_type: str = "dirichlet_process"

    @property
    def weights(self) -> jax.Array:
        """Point estimate of the weights (sklearn's ``weights_``), from the concentration."""
        return get_weight_prior(self.weight_concentration_prior_type).weights(
            self.weight_concentration)

    @property
    def precisions(self) -> jax.Array:
        return get_covariance_model(self.covariance_type).precisions(self.precisions_cholesky)

    def mixture(self) -> MixtureParams:
        """Point estimates as a MixtureParams (weights_, means_, covariances_, ...)."""
        return MixtureParams(self.weights, self.means, self.covariances, self.precisions_cholesky,
                             self.covariance_type)

    def replace(self, **changes) -> "BayesianParams":
        return dataclasses.replace(self, **changes)

    def astype(self, dtype) -> "BayesianParams":
        return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), self)


jax.tree_util.register_dataclass(
    BayesianParams,
    data_fields=["weight_concentration", "mean_precision", "means", "degrees_of_freedom",
                 "covariances", "precisions_cholesky"],
    meta_fields=["covariance_type", "weight_concentration_prior_type"],
)


class BayesianPriors(NamedTuple):
    """Prior parameters (sklearn's ``*_prior_`` attributes): γ, β₀, m₀ (D,), ν₀, and the
    covariance prior Ψ₀ shaped like one covariance ((D, D), (D,) or ())."""

    weight_concentration: jax.Array
    mean_precision: jax.Array
    mean: jax.Array
    degrees_of_freedom: jax.Array
    covariance: jax.Array


class BayesianFitResult(NamedTuple):
    """What :func:`fit_bayesian` returns (a pytree; ``vmap`` stacks it).

    params: point estimates as MixtureParams; posterior: the variational BayesianParams; priors:
    the priors used (defaults filled in); lower_bound: the best restart's final ELBO (a total over
    samples, sklearn's ``lower_bound_``); lower_bounds (max_iter,): its history, NaN past n_iter;
    n_iter, converged, status; restart_lower_bounds / restart_status (n_init,).
    """

    params: MixtureParams
    posterior: BayesianParams
    priors: BayesianPriors
    lower_bound: jax.Array
    lower_bounds: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    status: jax.Array
    restart_lower_bounds: jax.Array
    restart_status: jax.Array


# --------------------------------------------------------------------------------------------
# Priors
# --------------------------------------------------------------------------------------------

def default_priors(x: jax.Array, w: jax.Array, n_components: int, covariance_type: str, *,
                   weight_concentration=None, mean_precision=None, mean=None,
                   degrees_of_freedom=None, covariance=None, reg_covar=0.0) -> BayesianPriors:
    """Fill unset priors with sklearn's defaults, from weighted rows (traceable).

    γ = 1/K, β₀ = 1, m₀ = weighted mean, ν₀ = D, Ψ₀ = the unbiased (ddof=1, frequency-weighted)
    data covariance reduced to the type: full/tied (D, D), diag the variances, spherical their mean.
    A singular default Ψ₀ (constant data or a constant feature) gets ``reg_covar`` added: with
    Ψ₀ = 0 an empty component's covariance is Ψ₀ + ~0 ≈ 1e-22, so it captures every row at the
    next step and the fit alternates between two states forever (scikit-learn escapes only
    because its empty components drift to the origin of the coordinates).
    """
    model = get_covariance_model(covariance_type)
    dtype = x.dtype
    d = x.shape[1]
    wsum = jnp.sum(w)
    data_mean = jnp.matmul(w, x, precision=HIGHEST) / wsum
    if covariance is None:
        scatter = model.scatter(x, w[:, None], data_mean[None])
        denom = jnp.where(wsum > 1, wsum - 1, wsum)
        covariance = jnp.reshape(scatter, model.component_shape(d)) / denom
        _, definite = model.precision_cholesky(covariance)
        covariance = jnp.where(definite, covariance, model.add_reg(covariance, reg_covar))

    def value(v, default):
        return jnp.asarray(default if v is None else v, dtype)

    return BayesianPriors(value(weight_concentration, 1.0 / n_components),
                          value(mean_precision, 1.0), value(mean, data_mean),
                          value(degrees_of_freedom, float(d)), jnp.asarray(covariance, dtype))


# --------------------------------------------------------------------------------------------
# Variational M-step, E-step and bound
# --------------------------------------------------------------------------------------------

def _gaussian_stats(stats: SuffStats, centers: jax.Array, covariance_type: str, reg_covar):
    """sklearn's ``_estimate_gaussian_parameters``: (nk (eps-floored), x̄k (K, D), Sk + reg)."""
    model = get_covariance_model(covariance_type)
    nk = stats.nk + 10 * jnp.finfo(stats.nk.dtype).eps
    delta = stats.sx / nk[:, None]
    coef = (2.0 - stats.nk / nk) / nk                     # exact re-centring, as in em.py
    centred = stats.scatter - model.outer(stats.sx, coef)
    sk = model.add_reg(model.from_scatter(centred, nk), reg_covar)
    return nk, centers + delta, sk


def posterior_from_stats(stats: SuffStats, centers: jax.Array, priors: BayesianPriors,
                         covariance_type: str, weight_concentration_prior_type: str, reg_covar):
    """The variational M-step from statistics centred on ``centers``. Returns (posterior, ok)."""
    model = get_covariance_model(covariance_type)
    nk, xk, sk = _gaussian_stats(stats, centers, covariance_type, reg_covar)
    conc = get_weight_prior(weight_concentration_prior_type).update(
        nk, priors.weight_concentration)
    beta = priors.mean_precision + nk
    means = (priors.mean_precision * priors.mean + nk[:, None] * xk) / beta[:, None]
    n_eff = model.pool(nk)                                 # nk, or mean(nk) for tied
    dof = priors.degrees_of_freedom + n_eff
    diff = xk - priors.mean
    wishart = (priors.covariance + model.scale(sk, n_eff)
               + model.pool_outer(diff, nk * priors.mean_precision / beta))
    cov = model.scale(wishart, 1.0 / dof)
    prec_chol, ok = model.precision_cholesky(cov)
    return BayesianParams(conc, beta, means, dof, cov, prec_chol, covariance_type,
                          weight_concentration_prior_type), ok


def _log_lambda_terms(dof, n_features: int, fn):
    """Σ_{i<D} fn(½(ν − i)) for ν of any shape."""
    i = jnp.arange(n_features, dtype=jnp.result_type(dof))
    return jnp.sum(fn(0.5 * (dof[..., None] - i)), axis=-1)


def weighted_log_prob_rows_minor(post: BayesianParams, x: jax.Array, shift=None) -> jax.Array:
    """(K, N) E[ln π_k] + E[ln N(x | μ_k, Λ_k⁻¹)] (sklearn's variational weighted log prob),
    rows minor."""
    d = x.shape[-1]
    dof = jnp.asarray(post.degrees_of_freedom)
    gauss = MixtureParams(post.mean_precision, post.means, post.covariances,      # weights unused
                          post.precisions_cholesky, post.covariance_type)
    log_lambda = d * LOG_2 + _log_lambda_terms(dof, d, digamma)
    log_weights = get_weight_prior(post.weight_concentration_prior_type).expected_log_weights(
        post.weight_concentration)
    per_component = (-0.5 * d * jnp.log(dof) + 0.5 * (log_lambda - d / post.mean_precision)
                     + log_weights)
    return (component_log_prob_rows_minor(gauss, x, shift)
            + jnp.broadcast_to(per_component, log_weights.shape)[:, None])


def weighted_log_prob(post: BayesianParams, x: jax.Array, shift=None) -> jax.Array:
    """(N, K) E[ln π_k] + E[ln N(x | μ_k, Λ_k⁻¹)] (sklearn's variational weighted log prob)."""
    return weighted_log_prob_rows_minor(post, x, shift).T


def elbo(post: BayesianParams, neg_entropy: jax.Array) -> jax.Array:
    """sklearn's lower bound from the posterior and Σ w r ln r (of the E-step before it)."""
    model = get_covariance_model(post.covariance_type)
    d = post.means.shape[-1]
    k = post.means.shape[-2]
    dof = jnp.asarray(post.degrees_of_freedom)
    log_det = model.log_det(post.precisions_cholesky, d) - 0.5 * d * jnp.log(dof)
    log_wishart_norm = -(dof * log_det + dof * d * 0.5 * LOG_2
                         + _log_lambda_terms(dof, d, gammaln))
    log_wishart = jnp.sum(jnp.broadcast_to(log_wishart_norm, (k,)))   # tied: K × one norm
    log_norm_weight = get_weight_prior(post.weight_concentration_prior_type).log_norm(
        post.weight_concentration)
    return (-neg_entropy - log_wishart - log_norm_weight
            - 0.5 * d * jnp.sum(jnp.log(post.mean_precision)))


def variational_step(post: BayesianParams, x: jax.Array, w: jax.Array, priors: BayesianPriors,
                     reg_covar, chunk_size: int | None = None):
    """One variational E+M step on rows already in the posterior's frame.

    Returns (new posterior, lower bound, ok) — the ``step`` contract of ``run_loop``.
    """
    def chunk(xc, wc):     # rows minor (stats.rows_minor_stats)
        stats, log_resp_t = rows_minor_stats(weighted_log_prob_rows_minor(post, xc), xc, wc,
                                             post.means, post.covariance_type)
        rlogr = jnp.where(jnp.isfinite(log_resp_t), jnp.exp(log_resp_t) * log_resp_t, 0.0)
        return stats, jnp.sum(jnp.where(wc > 0, wc * jnp.sum(rlogr, axis=0), 0.0))

    stats, neg_entropy = chunked_sum(chunk, x, w, chunk_size, x_chunks_t=rows_minor_operand(
        post.covariance_type, x, chunk_size))
    new, ok = posterior_from_stats(stats, post.means, priors, post.covariance_type,
                                   post.weight_concentration_prior_type, reg_covar)
    return new, elbo(new, neg_entropy), ok


def posterior_from_resp(x, w, resp, priors, covariance_type, weight_concentration_prior_type,
                        reg_covar, chunk_size=None):
    """Initial posterior from responsibilities (N, K) (sklearn's ``_initialize``)."""
    stats, centers = resp_stats(x, w, resp, covariance_type, chunk_size)
    return posterior_from_stats(stats, centers, priors, covariance_type,
                                weight_concentration_prior_type, reg_covar)


def _shift_posterior(post: BayesianParams, shift) -> BayesianParams:
    return post.replace(means=post.means + shift)


# --------------------------------------------------------------------------------------------
# The compiled program and fit_bayesian
# --------------------------------------------------------------------------------------------

def _one_restart(key, init_value, x, w, priors, tol, reg_covar, prev_bound, *, n_components,
                 covariance_type, weight_type, init, max_iter, chunk_size):
    if init == "posterior":
        post, ok = init_value, jnp.array(True)
    else:
        if init == "resp":
            resp = init_value
        else:
            resp = initial_responsibilities(key, x, w, n_components, init, chunk_size)
        post, ok = posterior_from_resp(x, w, resp, priors, covariance_type, weight_type,
                                       reg_covar, chunk_size)

    def step(p):
        return variational_step(p, x, w, priors, reg_covar, chunk_size)

    return run_from(post, ok, step, max_iter, tol, x.dtype, prev_bound)


@functools.partial(cached_jit, static_argnames=("n_components", "covariance_type", "weight_type",
                                             "init", "n_init", "max_iter", "chunk_size"))
def _bayesian_program(key, x, w, init_value, prior_args, tol, reg_covar, prev_bound, *,
                      n_components, covariance_type, weight_type, init, n_init, max_iter,
                      chunk_size):
    shift = jnp.matmul(w, x, precision=HIGHEST) / jnp.sum(w)
    xs = x - shift
    # Each prior arrives as (value, given): one compiled program serves default and user priors.
    defaults = default_priors(xs, w, n_components, covariance_type, reg_covar=reg_covar)
    given_values = prior_args._replace(mean=(prior_args.mean[0] - shift, prior_args.mean[1]))
    priors = BayesianPriors(*(jnp.where(given, value, default) for (value, given), default
                              in zip(given_values, defaults)))
    run = functools.partial(_one_restart, x=xs, w=w, priors=priors, tol=tol, reg_covar=reg_covar,
                            prev_bound=prev_bound, n_components=n_components,
                            covariance_type=covariance_type, weight_type=weight_type, init=init,
                            max_iter=max_iter, chunk_size=chunk_size)
    keys = jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(n_init))
    if init == "posterior":
        init_value = _shift_posterior(init_value, -shift)
        batched = init_value.means.ndim == 3
    elif init == "resp":
        batched = init_value.ndim == 3
    else:
        batched = False
    loops = jax.vmap(run, (0, 0 if batched else None))(keys, init_value)
    best = best_restart(loops.lower_bound, loops.status)
    pick = jax.tree_util.tree_map(lambda a: a[best], loops)
    post = _shift_posterior(pick.state, shift)
    return BayesianFitResult(post.mixture(), post, priors._replace(mean=priors.mean + shift),
                             pick.lower_bound, pick.history, pick.n_iter,
                             pick.status == Status.CONVERGED, pick.status, loops.lower_bound,
                             loops.status)


def _check_positive(value, name):
    if value is None or is_traced(value):
        return value
    if np.ndim(value) != 0 or not np.isfinite(float(value)) or not float(value) > 0:
        raise ValueError(f"{name} must be a positive number; got {value!r}.")
    return value


def check_priors(n_features: int, covariance_type: str, *, weight_concentration_prior=None,
                 mean_precision_prior=None, mean_prior=None, degrees_of_freedom_prior=None,
                 covariance_prior=None) -> None:
    """Host-side prior checks with sklearn's messages (shapes; positivity where values are known)."""
    model = get_covariance_model(covariance_type)
    _check_positive(weight_concentration_prior, "weight_concentration_prior")
    _check_positive(mean_precision_prior, "mean_precision_prior")
    if mean_prior is not None and np.shape(mean_prior) != (n_features,):
        raise ValueError(f"The parameter 'means' should have the shape of {(n_features,)}, but "
                         f"got {tuple(np.shape(mean_prior))}")
    if mean_prior is not None and not is_traced(mean_prior) and not np.all(
            np.isfinite(np.asarray(mean_prior, float))):
        raise ValueError("Input contains NaN or infinity (mean_prior).")
    dof = degrees_of_freedom_prior
    if dof is not None and not is_traced(dof):
        _check_positive(dof, "degrees_of_freedom_prior")
        if not float(dof) > n_features - 1.0:
            raise ValueError("The parameter 'degrees_of_freedom_prior' should be greater than "
                             "%d, but got %.3f." % (n_features - 1, float(dof)))
    if covariance_prior is None:
        return
    shape = model.component_shape(n_features)
    got = tuple(np.shape(covariance_prior))
    if got != shape and not (shape == () and np.size(covariance_prior) == 1):
        raise ValueError(f"The parameter '{covariance_type} covariance_prior' should have the "
                         f"shape of {shape}, but got {got}")
    if is_traced(covariance_prior):
        return
    cov = np.asarray(covariance_prior, dtype=float)
    if not np.all(np.isfinite(cov)):
        raise ValueError("Input contains NaN or infinity (covariance_prior).")
    if len(shape) == 2:
        if not (np.allclose(cov, cov.T) and np.all(np.linalg.eigvalsh(cov) > 0.0)):
            raise ValueError(f"'{covariance_type} precision' should be symmetric, "
                             "positive-definite")
    elif np.any(cov <= 0.0):
        raise ValueError(f"'{covariance_type} precision' should be positive")


def fit_bayesian(key: jax.Array, X, n_components: int, *, covariance_type: str = "full",
                 weight_concentration_prior_type: str = "dirichlet_process",
                 weight_concentration_prior=None, mean_precision_prior=None, mean_prior=None,
                 degrees_of_freedom_prior=None, covariance_prior=None,
                 init="kmeans", n_init: int = 1, max_iter: int = 100, tol=1e-3, reg_covar=1e-6,
                 sample_weight=None, chunk_size: int | None = None,
                 initial_lower_bound=None) -> BayesianFitResult:
    """Fit a variational Bayesian Gaussian mixture (sklearn's ``BayesianGaussianMixture``).

    One compiled program: priors, init, ``n_init`` vmapped restarts, variational EM in the shared
    ``lax.while_loop`` driver, best restart by final lower bound (ties -> lowest index).

    Args:
      key: PRNG key; restart i uses ``fold_in(key, i)``.
      X: (N, D) data. JAX's dtype rule: float32 in -> float32 out; float64 -> float64 with x64
        enabled, else computed in float32 (one UserWarning per process), centred in float64 on
        the host first so that offset data keep their precision.
      n_components: K, the truncation level; unneeded components get weights near 0.
      covariance_type: "full", "tied", "diag" or "spherical".
      weight_concentration_prior_type: "dirichlet_process" or "dirichlet_distribution".
      weight_concentration_prior (γ, default 1/K), mean_precision_prior (β₀, default 1),
      mean_prior (m₀ (D,), default the data mean), degrees_of_freedom_prior (ν₀ > D−1, default D),
      covariance_prior (Ψ₀: (D, D) full/tied, (D,) diag, scalar spherical; default the data
        covariance): as sklearn. Arrays may be traced (then only shapes are checked).
      init: an init method ("kmeans", "k-means++", "random", "random_from_data"), an (N, K) array
        of initial responsibilities (or (n_init, N, K)), or a :class:`BayesianParams` posterior
        to continue from (a warm start; optionally with a leading n_init axis).
      n_init, max_iter, tol, reg_covar: as sklearn; ``tol`` is absolute on the total ELBO.
      sample_weight: (N,) frequency weights (a row of weight 2 counts as two rows; so unlike
        :func:`gmmjax.fit`, their scale matters: it sets the data's weight against the priors);
        zero-weight rows are padding.
      chunk_size: rows per chunk of the E-step statistics (None: automatic).
      initial_lower_bound: the bound the first iteration is compared with (a warm start passes
        the previous fit's final bound, so it can converge at iteration 1 as in sklearn).

    Returns a :class:`BayesianFitResult`; failures are reported in ``status``, never raised.
    """
    n_components, n_init, max_iter, chunk_size = check_em_options(
        n_components, n_init, max_iter, tol, reg_covar, covariance_type, chunk_size)
    get_weight_prior(weight_concentration_prior_type)
    centring = HostCentring(X)           # float64 host data: centred before float32
    x = check_data(centring.data, host=True)          # NumPy rows stay on the host
    n, d = x.shape
    w = check_sample_weight(sample_weight, n, x.dtype, host=isinstance(x, np.ndarray))
    check_n_samples(w, n_components)
    check_priors(d, covariance_type, weight_concentration_prior=weight_concentration_prior,
                 mean_precision_prior=mean_precision_prior, mean_prior=mean_prior,
                 degrees_of_freedom_prior=degrees_of_freedom_prior,
                 covariance_prior=covariance_prior)
    warn_if_narrowed(X, "fit_bayesian")      # valid input, computed in float32

    if chunk_size is None:
        chunk_size = auto_chunk_size(n, n_components, d)
    n_pad = bucket_rows(n, chunk_size)

    if isinstance(init, BayesianParams):
        init_name = "posterior"
        if (init.covariance_type != covariance_type
                or init.weight_concentration_prior_type != weight_concentration_prior_type):
            raise ValueError(
                f"init posterior is ({init.covariance_type!r}, "
                f"{init.weight_concentration_prior_type!r}) but ({covariance_type!r}, "
                f"{weight_concentration_prior_type!r}) was requested.")
        if np.shape(init.means)[-2:] != (n_components, d):
            raise ValueError(f"init posterior means have shape {np.shape(init.means)}; expected "
                             f"(..., {n_components}, {d}).")
        if np.ndim(init.means) == 3 and np.shape(init.means)[0] != n_init:
            raise ValueError(f"init posterior carries {np.shape(init.means)[0]} restarts; "
                             f"n_init={n_init}.")
        init_value = init.replace(means=centring.into_frame(init.means)).astype(x.dtype)
    elif isinstance(init, str):
        if init not in INIT_METHODS:
            raise ValueError(f"Unknown init {init!r}; expected one of {list(INIT_METHODS)}, an "
                             "(N, K) responsibility array or a BayesianParams.")
        init_name, init_value = init, None
    else:
        init_name = "resp"
        check_init_resp(init, n, n_components, n_init)
        init_value = pad_resp(init, n_init, n_init, n_pad, n_components, x.dtype)

    x, w = pad_to(x, w, n_pad)

    def given(v, shape=()):     # NumPy unless traced: no eager XLA program per prior
        if v is None:
            return np.zeros(shape, x.dtype), np.array(False)
        xp = jnp if is_traced(v) else np
        return xp.reshape(xp.asarray(v, x.dtype), shape), np.array(True)

    prior_args = BayesianPriors(
        given(weight_concentration_prior), given(mean_precision_prior),
        given(None if mean_prior is None else centring.into_frame(mean_prior), (d,)),
        given(degrees_of_freedom_prior),
        given(covariance_prior, get_covariance_model(covariance_type).component_shape(d)))
    prev_bound = (None if initial_lower_bound is None
                  else as_operand(initial_lower_bound, x.dtype))
    result = _bayesian_program(key, x, w, init_value, prior_args, as_operand(tol, x.dtype),
                               as_operand(reg_covar, x.dtype), prev_bound,
                               n_components=n_components, covariance_type=covariance_type,
                               weight_type=weight_concentration_prior_type, init=init_name,
                               n_init=n_init, max_iter=max_iter, chunk_size=chunk_size)
    if centring.shift is None:
        return result
    back = centring.to_data_frame
    return result._replace(params=centring.restore(result.params),
                           posterior=result.posterior.replace(means=back(result.posterior.means)),
                           priors=result.priors._replace(mean=back(result.priors.mean)))


# --------------------------------------------------------------------------------------------
# Evaluating a posterior (what the estimator's predict / score_samples use)
# --------------------------------------------------------------------------------------------

def _log_resp_norm(post: BayesianParams, x: jax.Array):
    return log_resp_and_norm(weighted_log_prob(post, x, shift=jnp.mean(post.means, axis=0)))


@functools.partial(cached_jit, static_argnames=("chunk_size",))
def evaluate(post: BayesianParams, x: jax.Array, chunk_size: int | None = None):
    """(log responsibilities (N, K), log-sum-exp (N,)) for rows x, chunked. One program serves
    ``log_prob``, ``predict*`` and the estimator's methods."""
    return chunked_map(lambda xc: _log_resp_norm(post, xc), x, chunk_size)


def _checked(post: BayesianParams, X) -> jax.Array:
    x = check_data(X, min_samples=1)
    d = post.means.shape[-1]
    if x.shape[1] != d:
        raise ValueError(f"X has {x.shape[1]} features, but the posterior has {d} "
                         f"(means shape {tuple(post.means.shape)}).")
    return x.astype(jnp.result_type(x.dtype, post.means.dtype))


def log_prob(post: BayesianParams, X, *, chunk_size: int | None = None) -> jax.Array:
    """(N,) logsumexp_k(E[ln π_k] + E[ln N(x|μ_k,Λ_k)]): sklearn's BGM ``score_samples`` (the
    variational quantity, not the posterior-predictive density)."""
    return evaluate(post, _checked(post, X), chunk_size)[1]


def predict_log_proba(post: BayesianParams, X, *, chunk_size: int | None = None) -> jax.Array:
    """(N, K) log responsibilities under the variational posterior."""
    return evaluate(post, _checked(post, X), chunk_size)[0]


def predict_proba(post: BayesianParams, X, *, chunk_size: int | None = None) -> jax.Array:
    return jnp.exp(predict_log_proba(post, X, chunk_size=chunk_size))


def predict(post: BayesianParams, X, *, chunk_size: int | None = None) -> jax.Array:
    return jnp.argmax(predict_log_proba(post, X, chunk_size=chunk_size), axis=1)
