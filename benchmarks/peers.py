"""Data, shared initial parameters, and the implementations compared: gmmjax, scikit-learn, peers.

Identical work: every implementation gets the same float32 data, the same initial weights, means
and precisions (``Init``), ``tol=0`` and the same ``max_iter``, so each runs exactly ``n_iter`` EM
iterations from the same start. scikit-learn receives them as ``weights_init`` / ``means_init`` /
``precisions_init`` (with all three given it skips its own initialisation); gmmjax as
``init=MixtureParams`` built with :func:`gmmjax.from_precisions` from the same arrays.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np

import gmmjax

from .harness import Run, Skip

REG_COVAR = 1e-6


# ----------------------------------------------------------------------------- data and init

def make_data(n: int, d: int, k: int, seed: int = 0, dtype=np.float32) -> np.ndarray:
    """n rows from a mixture of k well-separated Gaussians with random (full) covariances."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(k, d))
    mix = rng.normal(size=(k, d, d)) / np.sqrt(d) * 0.6 + np.eye(d)
    labels = rng.integers(0, k, size=n)
    x = np.empty((n, d), dtype)
    step = 1 << 18
    for s in range(0, n, step):
        lab = labels[s:s + step]
        z = rng.standard_normal((lab.size, d))
        x[s:s + step] = centres[lab] + np.einsum("nd,nde->ne", z, mix[lab])
    return x


@dataclasses.dataclass
class Init:
    """Initial parameters in scikit-learn's form (float32): weights (K,), means (K, D),
    precisions shaped per covariance type (full (K,D,D), tied (D,D), diag (K,D), spherical (K,))."""

    weights: np.ndarray
    means: np.ndarray
    precisions: np.ndarray
    covariances: np.ndarray
    covariance_type: str

    def mixture_params(self) -> gmmjax.MixtureParams:
        return gmmjax.from_precisions(jnp.asarray(self.weights), jnp.asarray(self.means),
                                      jnp.asarray(self.precisions), self.covariance_type)


def make_init(x: np.ndarray, k: int, covariance_type: str, seed: int = 1,
              sample: int = 200_000) -> Init:
    """A reasonable shared start: K random rows as centres, each row of a subsample assigned to
    its nearest centre, and weights / means / covariances of those groups (+ reg_covar)."""
    rng = np.random.default_rng(seed)
    n, d = x.shape
    sub = x[rng.choice(n, size=min(n, sample), replace=False)].astype(np.float64)
    centres = sub[rng.choice(sub.shape[0], size=k, replace=False)]
    dist = (np.sum(sub ** 2, 1)[:, None] - 2 * sub @ centres.T + np.sum(centres ** 2, 1)[None])
    labels = np.argmin(dist, axis=1)
    counts = np.bincount(labels, minlength=k).astype(np.float64) + 1.0
    weights = counts / counts.sum()
    means = np.empty((k, d))
    covs = np.empty((k, d, d))
    for j in range(k):
        pts = sub[labels == j]
        if pts.shape[0] < 2:
            pts = np.vstack([pts, centres[j][None] + rng.normal(size=(2, d))])
        means[j] = pts.mean(0)
        diff = pts - means[j]
        covs[j] = diff.T @ diff / pts.shape[0] + 1e-3 * np.eye(d)
    if covariance_type == "full":
        cov = covs
        prec = np.linalg.inv(cov)
    elif covariance_type == "tied":
        cov = np.einsum("k,kij->ij", weights, covs)
        prec = np.linalg.inv(cov)
    elif covariance_type == "diag":
        cov = np.einsum("kii->ki", covs)
        prec = 1.0 / cov
    elif covariance_type == "spherical":
        cov = np.einsum("kii->k", covs) / d
        prec = 1.0 / cov
    else:
        raise ValueError(covariance_type)
    if prec.ndim >= 2 and covariance_type in ("full", "tied"):
        prec = 0.5 * (prec + np.swapaxes(prec, -1, -2))
    f = np.float32
    return Init(weights.astype(f), means.astype(f), prec.astype(f), cov.astype(f),
                covariance_type)


def stack_inits(inits: list[Init]) -> gmmjax.MixtureParams:
    """A MixtureParams with a leading axis (one per restart or per independent fit)."""
    ps = [i.mixture_params() for i in inits]
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *ps)


# ----------------------------------------------------------------------------- gmmjax

def gmmjax_fit(x, k: int, init: Init | gmmjax.MixtureParams, n_iter: int, covariance_type: str,
               n_init: int = 1, chunk_size=None) -> Run:
    """``gmmjax.fit`` on device-resident data (placed once, untimed), exactly ``n_iter`` steps."""
    xd = jnp.asarray(x)
    params = init.mixture_params() if isinstance(init, Init) else init
    key = jax.random.key(0)
    kwargs = dict(covariance_type=covariance_type, init=params, n_init=n_init, max_iter=n_iter,
                  tol=0.0, reg_covar=REG_COVAR, chunk_size=chunk_size)

    def fn():
        return gmmjax.fit(key, xd, k, **kwargs)

    def memory_analysis():
        f = jax.jit(lambda kk, xx, pp: gmmjax.fit(kk, xx, k, **{**kwargs, "init": pp}))
        return _xla_memory(f.lower(key, xd, params).compile())

    return Run(fn, result=lambda r: {"loglik": r.lower_bound, "n_iter_run": r.n_iter},
               jax=True, memory_analysis=memory_analysis)


def _xla_memory(compiled) -> dict:
    m = compiled.memory_analysis()
    if m is None:
        return {}
    out = {f: int(getattr(m, f)) for f in ("argument_size_in_bytes", "output_size_in_bytes",
                                          "temp_size_in_bytes", "alias_size_in_bytes")
           if hasattr(m, f)}
    out["peak_estimate_mb"] = (out.get("argument_size_in_bytes", 0)
                               + out.get("output_size_in_bytes", 0)
                               + out.get("temp_size_in_bytes", 0)
                               - out.get("alias_size_in_bytes", 0)) / 2 ** 20
    return out


# ----------------------------------------------------------------------------- scikit-learn

def _sk_model(k, init: Init, n_iter, covariance_type, **extra):
    from sklearn.mixture import GaussianMixture
    return GaussianMixture(k, covariance_type=covariance_type, tol=0.0, reg_covar=REG_COVAR,
                           max_iter=n_iter, weights_init=init.weights, means_init=init.means,
                           precisions_init=init.precisions, **extra)


def sklearn_fit(x: np.ndarray, k: int, init: Init, n_iter: int, covariance_type: str) -> Run:
    """``sklearn.mixture.GaussianMixture.fit``: n_iter EM steps (+ its final E-step for labels)."""

    def fn():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _sk_model(k, init, n_iter, covariance_type).fit(x)

    return Run(fn, result=lambda g: {"loglik": g.lower_bound_, "n_iter_run": g.n_iter_},
               jax=False, numpy_memory=True)


def sklearn_restarts(x: np.ndarray, k: int, inits: list[Init], n_iter: int,
                     covariance_type: str) -> Run:
    """n_init restarts from given per-restart inits: one sklearn fit per init, best bound kept
    (sklearn's own ``n_init`` would reuse a single ``*_init`` for every restart)."""

    def fn():
        best = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for init in inits:
                g = _sk_model(k, init, n_iter, covariance_type).fit(x)
                if best is None or g.lower_bound_ > best.lower_bound_:
                    best = g
        return best

    return Run(fn, result=lambda g: {"loglik": g.lower_bound_}, jax=False, numpy_memory=True,
               note="sklearn n_init: a loop of fits, one per restart init, best kept "
                    "(sklearn's n_init cannot take per-restart initial parameters)")


# ----------------------------------------------------------------------------- peers

def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def gmmx_fit(x, k: int, init: Init, n_iter: int, covariance_type: str,
             max_elements: float = 3e8) -> Run:
    """gmmx's ``EMFitter`` (pure JAX, full and diag only) from the same initial parameters."""
    if not have("gmmx"):
        raise Skip("gmmx not installed (pip install gmmx)")
    if covariance_type not in ("full", "diag"):
        raise Skip(f"gmmx has no {covariance_type!r} covariance")
    n, d = x.shape
    if n * k * d > max_elements:
        raise Skip(f"gmmx materialises N·K·D temporaries ({n * k * d * 4 / 2 ** 30:.1f} GiB): "
                   "skipped")
    from gmmx import EMFitter, GaussianMixtureModelJax
    gmm = GaussianMixtureModelJax.from_squeezed(
        means=jnp.asarray(init.means), covariances=jnp.asarray(init.covariances),
        weights=jnp.asarray(init.weights), covariance_type=covariance_type)
    fitter = EMFitter(max_iter=n_iter, tol=0.0, reg_covar=REG_COVAR)
    xd = jnp.asarray(x)

    def memory_analysis():
        return _xla_memory(type(fitter).fit.lower(fitter, xd, gmm).compile())

    return Run(lambda: fitter.fit(xd, gmm),
               result=lambda r: {"loglik": r.log_likelihood, "n_iter_run": r.n_iter}, jax=True,
               memory_analysis=memory_analysis)


def sklearn_torch_fit(x: np.ndarray, k: int, init: Init, n_iter: int,
                      covariance_type: str) -> Run:
    """scikit-learn's array-API path with PyTorch tensors (on CUDA when available)."""
    if not have("torch"):
        raise Skip("torch not installed: no sklearn array-API (torch) column")
    if os.environ.get("SCIPY_ARRAY_API") != "1":
        raise Skip("sklearn array API needs SCIPY_ARRAY_API=1 set before scipy is imported")
    import sklearn
    import torch
    device = "cuda" if torch.cuda.is_available() else "cpu"
    t = lambda a: torch.asarray(a, device=device)  # noqa: E731
    xt = t(x)
    tinit = Init(t(init.weights), t(init.means), t(init.precisions), t(init.covariances),
                 init.covariance_type)

    def fn():
        with sklearn.config_context(array_api_dispatch=True), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = _sk_model(k, tinit, n_iter, covariance_type, init_params="random").fit(xt)
        if device == "cuda":
            torch.cuda.synchronize()
        return g

    return Run(fn, result=lambda g: {"loglik": float(g.lower_bound_)}, jax=False,
               note=f"sklearn array API on torch ({device}, torch {torch.__version__})")
