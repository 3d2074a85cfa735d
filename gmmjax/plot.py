"""Plots of Gaussian mixtures with matplotlib (an optional dependency, imported lazily).

``import gmmjax.plot`` always works; the first drawing call imports matplotlib and raises an
ImportError that says how to install it when it is missing.

Every function takes a *model*: a :class:`gmmjax.MixtureParams`, a fitted gmmjax estimator
(anything with ``params_``, e.g. :class:`gmmjax.GaussianMixture`,
:class:`gmmjax.GaussianMixtureOutlierDetector`), or any fitted object with scikit-learn's
``weights_``, ``means_``, ``covariances_`` and ``covariance_type`` (``sklearn.mixture``,
:class:`gmmjax.BayesianGaussianMixture`). Density plots also accept anything with
``score_samples`` (e.g. :class:`gmmjax.KernelDensity`) or a callable ``f(points) -> log density``.

* :func:`plot_ellipses` — one ellipse per component (all four covariance types), for two chosen
  features of D-dimensional data (the marginal covariance of those features).
* :func:`plot_density` — log-density contours on a 2-D grid (the marginal for D > 2).
* :func:`plot_surface` — the density as a 3-D surface.
* :func:`plot_density_1d` — 1-D density with the weighted components.
* :func:`plot_criterion` — BIC/AIC (or any criterion) against the number of components, one
  curve per covariance type, the winner marked (takes a :class:`gmmjax.SelectionResult`).
* :func:`covariance_matrices`, :func:`marginal` — the helpers behind them.
"""

from __future__ import annotations

import numpy as np

__all__ = ["covariance_matrices", "marginal", "plot_criterion", "plot_density", "plot_density_1d",
           "plot_ellipses", "plot_surface", "to_params"]


def _plt():
    """matplotlib.pyplot, or an ImportError that says what to install."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - exercised only without matplotlib
        raise ImportError(
            "gmmjax.plot needs matplotlib, an optional dependency: pip install matplotlib "
            "(or pip install 'gmmjax[notebooks]').") from e
    return plt


def _axes(ax, projection=None):
    plt = _plt()
    if ax is not None:
        return ax
    if projection is None:
        return plt.gca()
    fig = plt.figure()
    return fig.add_subplot(projection=projection)


# ------------------------------------------------------------------------------ models

def to_params(model):
    """A host (numpy) :class:`gmmjax.MixtureParams` from any supported model (see module doc)."""
    import jax

    from .params import MixtureParams, from_covariances

    if isinstance(model, MixtureParams):
        params = model
    elif hasattr(model, "params_"):
        params = model.params_
    elif all(hasattr(model, a) for a in ("weights_", "means_", "covariances_", "covariance_type")):
        from .estimators._base import x64_scope
        dtype = np.result_type(np.asarray(model.means_).dtype, np.float32)
        with x64_scope(dtype):
            params = from_covariances(np.asarray(model.weights_, dtype),
                                      np.asarray(model.means_, dtype),
                                      np.asarray(model.covariances_, dtype),
                                      model.covariance_type)
    else:
        raise TypeError(f"Expected gmmjax.MixtureParams or a fitted mixture estimator (with "
                        f"params_ or weights_/means_/covariances_); got {type(model).__name__}.")
    params = jax.device_get(params)
    if np.ndim(params.weights) != 1:
        raise ValueError(f"Expected one mixture; got weights of shape {np.shape(params.weights)} "
                         "(a batch of fits? index it first, e.g. tree_map(lambda a: a[0], p)).")
    return params


def covariance_matrices(model) -> np.ndarray:
    """(K, D, D) covariance matrix of every component, whatever the covariance type.

    Read through the covariance registry's sampling transform: with M the rows of
    ``noise_transform(I, k, U)`` (a square root of Σ_k), Σ_k = Mᵀ M.
    """
    import jax.numpy as jnp

    from .covariance import get_covariance_model
    from .estimators._base import x64_scope

    params = to_params(model)
    k, d = np.shape(params.means)
    dtype = np.result_type(np.asarray(params.means).dtype, np.float32)
    cov_model = get_covariance_model(params.covariance_type)
    with x64_scope(dtype):
        eye = jnp.eye(d, dtype=dtype)
        chol = jnp.asarray(params.precisions_cholesky, dtype)
        out = []
        for c in range(k):
            m = cov_model.noise_transform(eye, jnp.full((d,), c, jnp.int32), chol)
            out.append(np.asarray(m.T @ m))
    out = np.stack(out)
    return 0.5 * (out + np.swapaxes(out, -1, -2))


def marginal(model, dims):
    """The mixture of the features ``dims`` (a full-covariance :class:`MixtureParams`)."""
    from .estimators._base import x64_scope
    from .params import from_covariances

    params = to_params(model)
    d = np.shape(params.means)[1]
    dims = _check_dims(dims, d)
    cov = covariance_matrices(params)[:, dims][:, :, dims]
    dtype = cov.dtype
    with x64_scope(dtype):
        import jax
        return jax.device_get(from_covariances(np.asarray(params.weights, dtype),
                                               np.asarray(params.means, dtype)[:, dims], cov,
                                               "full"))


def _check_dims(dims, d):
    dims = [int(i) for i in np.atleast_1d(dims)]
    for i in dims:
        if not -d <= i < d:
            raise ValueError(f"dims {dims} out of range for {d} features.")
    dims = [i % d for i in dims]
    if len(set(dims)) != len(dims):
        raise ValueError(f"dims must be distinct; got {dims}.")
    return dims


def _is_mixture(model) -> bool:
    from .params import MixtureParams
    return isinstance(model, MixtureParams) or hasattr(model, "params_") or hasattr(
        model, "covariances_")


def _log_density_fn(model, dims=None):
    """A function points (M, len(dims)) -> log density (M,) numpy, and the model's D or None."""
    from .params import MixtureParams

    if callable(model) and not hasattr(model, "score_samples") \
            and not isinstance(model, MixtureParams):
        return (lambda pts: np.asarray(model(pts), np.float64)), None
    if not _is_mixture(model) and hasattr(model, "score_samples"):
        d = getattr(model, "n_features_in_", None)
        if dims is not None and d is not None and list(dims) != list(range(d)):
            raise ValueError("Marginal densities need a mixture model; for an estimator with only "
                             "score_samples, plot all of its features (dims=None).")
        return (lambda pts: np.asarray(model.score_samples(pts), np.float64)), d
    params = to_params(model)
    d = np.shape(params.means)[1]
    if dims is not None and list(dims) != list(range(d)):
        params = marginal(params, dims)

    from .density import log_prob
    from .estimators._base import x64_scope
    dtype = np.result_type(np.asarray(params.means).dtype, np.float32)

    def fn(pts):
        with x64_scope(dtype):
            return np.asarray(log_prob(params, np.asarray(pts, dtype)), np.float64)
    return fn, d


def _grid(xlim, ylim, X, resolution, margin=0.15):
    if xlim is None or ylim is None:
        if X is None:
            raise ValueError("Give xlim and ylim, or X to take the plot range from.")
        X = np.asarray(X)
        lo, hi = X.min(axis=0), X.max(axis=0)
        pad = margin * np.where(hi > lo, hi - lo, 1.0)
        xlim = xlim if xlim is not None else (lo[0] - pad[0], hi[0] + pad[0])
        ylim = ylim if ylim is not None else (lo[1] - pad[1], hi[1] + pad[1])
    resolution = int(resolution)
    if resolution < 2:
        raise ValueError(f"resolution must be an integer >= 2; got {resolution}.")
    gx = np.linspace(xlim[0], xlim[1], resolution)
    gy = np.linspace(ylim[0], ylim[1], resolution)
    xx, yy = np.meshgrid(gx, gy)
    return xx, yy, np.column_stack([xx.ravel(), yy.ravel()])


def _data_2d(X, dims):
    if X is None:
        return None
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features); got shape {X.shape}.")
    return X[:, dims]


# ------------------------------------------------------------------------------ plots

def plot_ellipses(model, ax=None, *, dims=(0, 1), n_std=(1.0, 2.0), colors=None, alpha=0.25,
                  alpha_by_weight=False, means=True, label=True, **kwargs):
    """Draw each component as ellipses at ``n_std`` standard deviations (of features ``dims``).

    ``colors``: a list (cycled) or one colour; default the axes' colour cycle. With
    ``alpha_by_weight`` the opacity scales with the component weight (useful for Bayesian
    mixtures whose unused components have weight ≈ 0). Extra ``kwargs`` go to
    ``matplotlib.patches.Ellipse``. Returns the axes.
    """
    plt = _plt()
    from matplotlib.patches import Ellipse

    params = to_params(model)
    d = np.shape(params.means)[1]
    if d < 2:
        raise ValueError("Ellipses need at least 2 features; for 1-D data use plot_density_1d.")
    dims = _check_dims(dims, d)
    if len(dims) != 2:
        raise ValueError(f"dims must name exactly 2 features; got {dims}.")
    ax = _axes(ax)
    cov = covariance_matrices(params)[:, dims][:, :, dims]
    mu = np.asarray(params.means)[:, dims]
    weights = np.asarray(params.weights, np.float64)
    if colors is None:
        colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    elif isinstance(colors, str):
        colors = [colors]
    n_std = np.atleast_1d(np.asarray(n_std, np.float64))
    if np.any(~np.isfinite(n_std)) or np.any(n_std <= 0):
        raise ValueError(f"n_std must be positive; got {n_std.tolist()}.")
    wmax = max(float(weights.max()), 1e-300)
    for k in range(len(weights)):
        vals, vecs = np.linalg.eigh(cov[k])
        vals = np.clip(vals, 0.0, None)
        angle = np.degrees(np.arctan2(vecs[1, -1], vecs[0, -1]))
        color = colors[k % len(colors)]
        a = alpha * (weights[k] / wmax if alpha_by_weight else 1.0)
        for j, s in enumerate(np.sort(n_std)[::-1]):
            ax.add_patch(Ellipse(mu[k], 2 * s * np.sqrt(vals[-1]), 2 * s * np.sqrt(vals[0]),
                                 angle=angle, facecolor=color, edgecolor=color,
                                 alpha=a, lw=1.0, **kwargs))
        if means:
            ax.plot(*mu[k], marker="x", color="k", ms=6, mew=1.5,
                    alpha=max(a / alpha, 0.2) if alpha_by_weight and alpha > 0 else 1.0)
            if label:
                ax.annotate(f"{k}: w={weights[k]:.2f}", mu[k], textcoords="offset points",
                            xytext=(5, 5), fontsize=8)
    ax.update_datalim(np.concatenate([mu - 2.5 * np.sqrt(cov.diagonal(axis1=1, axis2=2)),
                                      mu + 2.5 * np.sqrt(cov.diagonal(axis1=1, axis2=2))]))
    ax.autoscale_view()
    return ax


def plot_density(model, ax=None, *, X=None, dims=(0, 1), xlim=None, ylim=None, resolution=120,
                 levels=12, log=True, filled=True, cmap="viridis", colorbar=False,
                 scatter_kw=None, **kwargs):
    """Contours of the (log) density on a ``resolution``² grid over features ``dims``.

    ``X`` (optional) is scattered on top and sets the range when ``xlim``/``ylim`` are None.
    For D > 2 a mixture is plotted as its marginal over ``dims``. ``log=False`` contours the
    density itself. Extra ``kwargs`` go to ``contourf``/``contour``. Returns the axes.
    """
    plt = _plt()
    dims = list(dims)
    fn, d = _log_density_fn(model, dims)
    if d is not None:
        dims = _check_dims(dims, d)
        if len(dims) != 2:
            raise ValueError(f"plot_density draws 2 features; got dims {dims} (use "
                             "plot_density_1d for one).")
    x2 = _data_2d(X, dims)
    xx, yy, pts = _grid(xlim, ylim, x2, resolution)
    z = fn(pts).reshape(xx.shape)
    if not log:
        z = np.exp(z)
    else:
        finite = np.isfinite(z)
        if finite.any():   # keep contour levels sensible where the density underflows
            z = np.where(finite, z, z[finite].min())
    ax = _axes(ax)
    draw = ax.contourf if filled else ax.contour
    cs = draw(xx, yy, z, levels=levels, cmap=cmap, **kwargs)
    if colorbar:
        plt.colorbar(cs, ax=ax, label="log density" if log else "density")
    if x2 is not None:
        kw = {"s": 6, "c": "k", "alpha": 0.5}
        kw.update(scatter_kw or {})
        ax.scatter(x2[:, 0], x2[:, 1], **kw)
    return ax


def plot_surface(model, ax=None, *, X=None, dims=(0, 1), xlim=None, ylim=None, resolution=60,
                 cmap="viridis", **kwargs):
    """The density (not log) as a 3-D surface over features ``dims``. Returns the 3-D axes."""
    _plt()
    dims = list(dims)
    fn, d = _log_density_fn(model, dims)
    if d is not None:
        dims = _check_dims(dims, d)
    x2 = _data_2d(X, dims)
    xx, yy, pts = _grid(xlim, ylim, x2, resolution)
    z = np.exp(fn(pts)).reshape(xx.shape)
    ax = _axes(ax, projection="3d")
    if not hasattr(ax, "plot_surface"):
        raise ValueError("plot_surface needs 3-D axes: fig.add_subplot(projection='3d').")
    kw = {"cmap": cmap, "linewidth": 0, "antialiased": True}
    kw.update(kwargs)
    ax.plot_surface(xx, yy, z, **kw)
    ax.set_zlabel("density")
    return ax


def plot_density_1d(model, ax=None, *, X=None, xlim=None, resolution=400, components=True,
                    bins=40, log=False, label="mixture", **kwargs):
    """A 1-D density (mixture, KDE or callable) over ``xlim``; for a 1-D mixture also each
    weighted component; ``X`` as a density-normalised histogram. Returns the axes."""
    _plt()
    fn, d = _log_density_fn(model)
    if d is not None and d != 1:
        raise ValueError(f"plot_density_1d needs a 1-D model; this one has {d} features "
                         "(use plot_density, or marginal(model, [i])).")
    x1 = None if X is None else np.asarray(X, np.float64).reshape(-1)
    if xlim is None:
        if x1 is None:
            raise ValueError("Give xlim, or X to take the plot range from.")
        lo, hi = x1.min(), x1.max()
        pad = 0.1 * (hi - lo if hi > lo else 1.0)
        xlim = (lo - pad, hi + pad)
    grid = np.linspace(xlim[0], xlim[1], int(resolution))
    ax = _axes(ax)
    if x1 is not None and bins:
        ax.hist(x1, bins=bins, density=True, alpha=0.3, color="gray", label="data")
    z = fn(grid[:, None])
    ax.plot(grid, z if log else np.exp(z), label=label, **kwargs)
    if components and d == 1 and _is_mixture(model):
        params = to_params(model)
        var = covariance_matrices(params)[:, 0, 0]
        mu = np.asarray(params.means, np.float64)[:, 0]
        w = np.asarray(params.weights, np.float64)
        for k in range(len(w)):
            pdf = w[k] * np.exp(-0.5 * (grid - mu[k]) ** 2 / var[k]) / np.sqrt(2 * np.pi * var[k])
            ax.plot(grid, np.log(pdf) if log else pdf, ls="--", lw=1, alpha=0.8,
                    label=f"component {k}")
    ax.set_ylabel("log density" if log else "density")
    return ax


def plot_criterion(result, ax=None, *, criterion=None, n_components=None, mark_best=True,
                   **kwargs):
    """Criterion (BIC/AIC) against the number of components, one curve per covariance type.

    ``result``: a :class:`gmmjax.SelectionResult` (``criterion`` picks "bic", "aic" or both as
    a list; default the result's own), or a mapping ``{label: values}`` with ``n_components``
    giving the x values. The lowest value of each curve gets a circle and the winner of each
    criterion (over covariance types) a star. Returns the axes.
    """
    _plt()
    curves = {}
    if hasattr(result, "covariance_types") and hasattr(result, "n_components"):
        ks = np.asarray(result.n_components)
        names = criterion if criterion is not None else result.criterion
        names = [names] if isinstance(names, str) else list(names)
        for name in names:
            if name not in ("bic", "aic"):
                raise ValueError(f"Unknown criterion {name!r}; expected 'bic' or 'aic'.")
            table = np.asarray(getattr(result, name))
            for i, ct in enumerate(result.covariance_types):
                curves[f"{ct} {name.upper()}" if len(names) > 1 else ct] = (table[i], name)
        ylabel = " / ".join(n.upper() for n in names)
    elif isinstance(result, dict):
        if n_components is None:
            raise ValueError("Give n_components (the x values) with a mapping of curves.")
        ks = np.asarray(n_components)
        for lab, vals in result.items():
            vals = np.asarray(vals, np.float64)
            if vals.shape != ks.shape:
                raise ValueError(f"curve {lab!r} has {vals.shape} values for {ks.shape} "
                                 "n_components.")
            curves[str(lab)] = (vals, None)
        ylabel = criterion.upper() if isinstance(criterion, str) else "criterion"
    else:
        raise TypeError("plot_criterion takes a gmmjax.SelectionResult or a dict of curves; got "
                        f"{type(result).__name__}.")
    ax = _axes(ax)
    best = {}   # per criterion (one group for a mapping): (K, value, label)
    for lab, (vals, group) in curves.items():
        vals = np.asarray(vals, np.float64)
        line, = ax.plot(ks, np.where(np.isfinite(vals), vals, np.nan), marker="o", ms=3,
                        label=lab, **kwargs)
        if mark_best and np.isfinite(vals).any():
            j = int(np.nanargmin(np.where(np.isfinite(vals), vals, np.nan)))
            ax.plot(ks[j], vals[j], marker="o", ms=9, mfc="none", color=line.get_color())
            if vals[j] < best.get(group, (None, np.inf))[1]:
                best[group] = (ks[j], vals[j], lab)
    for k, v, lab in best.values():
        ax.plot(k, v, marker="*", ms=16, color="gold", mec="k", zorder=5,
                label=f"best: {lab}, K={k}")
    ax.set_xlabel("number of components K")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return ax
