"""Write the example notebooks with nbformat and execute them with nbclient (outputs kept).

    python notebooks/build_notebooks.py              # write + execute all, print timings
    python notebooks/build_notebooks.py 02 04        # only notebooks whose name contains 02 / 04
    python notebooks/build_notebooks.py --no-execute # write without outputs

The notebooks run on small data so each executes in seconds on 2 CPU cores; CI re-executes them
(tests/test_notebooks.py). The kernel is ``python3`` from the running interpreter's environment.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
KERNEL = {"name": "python3", "display_name": "Python 3", "language": "python"}
TIMEOUT_S = 300

SETUP = """\
import time
import numpy as np
import jax
import matplotlib.pyplot as plt
import gmmjax as gj
import gmmjax.plot as gplot

plt.rcParams.update({"figure.dpi": 80, "figure.figsize": (5.5, 4)})"""


def md(text):
    return new_markdown_cell(text.strip())


def code(text):
    return new_code_cell(text.strip())


# ------------------------------------------------------------------------------------------- 01

NB01 = [
    md("""
# 1. Anomaly detection with a Gaussian density

The classic recipe: fit a Gaussian to normal behaviour, flag a point whose density is below a
threshold ε. First one Gaussian on a 2-D blob (say latency and throughput of servers), then a
mixture of two Gaussians for two "factories" whose machines behave differently."""),
    code(SETUP),
    md("## One Gaussian\n\n300 normal observations; `gj.fit` with one component is the maximum "
       "likelihood Gaussian (mean and covariance of the data)."),
    code("""
rng = np.random.default_rng(0)
cov = np.array([[1.0, 0.6], [0.6, 0.8]])
X = rng.multivariate_normal([14.0, 15.0], cov, size=300).astype(np.float32)

res = gj.fit(jax.random.key(0), X, 1)
print("mean", np.asarray(res.params.means[0]), "\\ncovariance\\n", np.asarray(res.params.covariances[0]))
print("sample covariance\\n", np.cov(X.T, bias=True))"""),
    md("""
The threshold ε: here the density below which 1 % of the training points fall
(`gj.contamination_threshold` is `np.percentile` of the log densities). A new point far from the
blob has a density many orders of magnitude below ε."""),
    code("""
log_p = gj.log_prob(res.params, X)
log_eps = gj.contamination_threshold(log_p, 0.01)
x_new = np.array([[18.5, 12.0], [14.5, 15.2]], np.float32)
log_p_new = gj.log_prob(res.params, x_new)
for x, lp in zip(x_new, np.asarray(log_p_new)):
    print(f"x={x}: p(x)={np.exp(lp):.3g}  ε={np.exp(log_eps):.3g}  ->",
          "ANOMALY" if lp < log_eps else "normal")

ax = gplot.plot_density(res.params, X=np.vstack([X, x_new]), levels=15)
gplot.plot_density(res.params, ax=ax, xlim=ax.get_xlim(), ylim=ax.get_ylim(), filled=False,
                   levels=[float(log_eps)], cmap=None, colors="red")
flag = np.asarray(log_p_new < log_eps)
ax.scatter(*x_new[flag].T, s=120, facecolors="none", edgecolors="red", lw=2, label="flagged")
ax.scatter(*x_new[~flag].T, s=60, marker="s", color="white", edgecolors="k", label="normal")
ax.set(title="one Gaussian; red: p(x) = ε", xlabel="latency", ylabel="throughput")
ax.legend(loc="lower left");"""),
    md("""
## Two factories: a mixture of two Gaussians

Machines from two factories produce two clusters. One Gaussian would put its mass between them;
a two-component mixture models both. The mixture density as a 3-D surface and as contours; a
point between the clusters is flagged although it is close to the overall mean."""),
    code("""
A = rng.multivariate_normal([0.0, 0.0], [[1.0, 0.5], [0.5, 1.0]], size=200)
B = rng.multivariate_normal([6.0, 3.0], [[0.6, -0.3], [-0.3, 0.8]], size=150)
X2 = np.vstack([A, B]).astype(np.float32)
res2 = gj.fit(jax.random.key(1), X2, 2, n_init=4)
p = res2.params
print("weights", np.round(np.asarray(p.weights), 3))
print("means\\n", np.round(np.asarray(p.means), 2))

log_eps2 = gj.contamination_threshold(gj.log_prob(p, X2), 0.01)
x_test = np.array([[3.2, 0.6], [5.5, 3.2]], np.float32)
lp_test = np.asarray(gj.log_prob(p, x_test))
for x, lp in zip(x_test, lp_test):
    print(f"x={x}: log p={lp:.2f}, log ε={float(log_eps2):.2f} ->", "ANOMALY" if lp < log_eps2 else "normal")"""),
    code("""
fig = plt.figure(figsize=(11, 4.5))
ax3 = fig.add_subplot(1, 2, 1, projection="3d")
gplot.plot_surface(p, ax=ax3, X=X2, resolution=50)
ax3.set_title("mixture density")
ax = fig.add_subplot(1, 2, 2)
gplot.plot_density(p, ax=ax, X=X2, levels=15)
gplot.plot_ellipses(p, ax=ax, n_std=2, alpha=0.15, colors=["w"])
flag = lp_test < float(log_eps2)
ax.scatter(*x_test[flag].T, s=150, facecolors="none", edgecolors="red", lw=2, label="flagged")
ax.scatter(*x_test[~flag].T, s=60, marker="s", color="white", edgecolors="k", label="normal")
ax.set_title("log density, 2σ ellipses")
ax.legend(loc="lower right");"""),
    md("""
The same recipe as a scikit-learn style estimator is `gj.GaussianMixtureOutlierDetector`:

```python
det = gj.GaussianMixtureOutlierDetector(2, contamination=0.01, novelty=True).fit(X2)
det.predict(x_test)      # +1 normal, -1 anomaly; det.offset_ is log ε
```

Notebook 4 uses it on 1-D data."""),
]

# ------------------------------------------------------------------------------------------- 02

NB02 = [
    md("""
# 2. Clustering two moons with a Gaussian mixture

`gj.GaussianMixture` is a drop-in for `sklearn.mixture.GaussianMixture`. On two moons: the fitted
weights, means and covariances, hard and soft clustering, sampling new points, density-based
anomalies, BIC/AIC, and a Bayesian mixture that switches off the components it does not need."""),
    code(SETUP + "\nfrom sklearn.datasets import make_moons"),
    code("""
X, y = make_moons(300, noise=0.06, random_state=0)
gm = gj.GaussianMixture(3, n_init=10, random_state=0).fit(X)
print("converged:", gm.converged_, "in", gm.n_iter_, "iterations")
print("weights:", gm.weights_.round(3))
print("means:\\n", gm.means_.round(3))
print("covariances:\\n", gm.covariances_.round(3))"""),
    md("""
## Hard vs soft clustering

`predict` assigns each point to its most likely component; `predict_proba` gives the
responsibilities. Points between components have a maximum probability well below 1."""),
    code("""
labels = gm.predict(X)
proba = gm.predict_proba(X)
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
axes[0].scatter(*X.T, c=labels, s=10, cmap="tab10", vmax=9)
gplot.plot_ellipses(gm, ax=axes[0], alpha=0.15)
axes[0].set_title("hard: predict")
sc = axes[1].scatter(*X.T, c=proba.max(axis=1), s=10, cmap="viridis")
plt.colorbar(sc, ax=axes[1], label="max responsibility")
axes[1].set_title("soft: predict_proba")
print("points with max responsibility < 0.9:", int((proba.max(axis=1) < 0.9).sum()))"""),
    md("## Sampling new points from the fitted mixture"),
    code("""
X_new, comp = gm.sample(300)
fig, ax = plt.subplots()
ax.scatter(*X.T, s=8, color="gray", alpha=0.5, label="data")
ax.scatter(*X_new.T, s=8, c=comp, cmap="tab10", vmax=9, label="samples")
ax.set_title("300 samples (colour = component)")
ax.legend();"""),
    md("""
## Anomalies: the 4 % lowest densities

`score_samples` is the log density; points below its 4th percentile are flagged."""),
    code("""
densities = gm.score_samples(X)
threshold = np.percentile(densities, 4)
anomalies = X[densities < threshold]
ax = gplot.plot_density(gm, X=X, levels=15)
ax.scatter(*anomalies.T, s=60, facecolors="none", edgecolors="red", label=f"{len(anomalies)} anomalies")
ax.legend()
ax.set_title("log density, 4th-percentile anomalies");"""),
    md("""
## How many components? BIC and AIC

`gm.bic(X)` / `gm.aic(X)` score one model. `gj.select_model` fits every K of a sweep in one
compiled program (smaller K padded with masked components) and returns the table."""),
    code("""
print(f"K=3: BIC={gm.bic(X):.1f}  AIC={gm.aic(X):.1f}")
sel = gj.select_model(jax.random.key(0), X, range(1, 11), ("full",))
for row in sel.rows():
    print(f"K={row['n_components']:2d}  BIC={row['bic']:8.1f}  AIC={row['aic']:8.1f}")
ax = gplot.plot_criterion(sel, criterion=["bic", "aic"])
ax.set_title("BIC / AIC on two moons");"""),
    md("""
Both criteria prefer many more than 2 or 3 components because moons are not Gaussian: many
small Gaussians follow the curves better. (For clustering, two moons need a non-Gaussian model; for *density
estimation* the mixture with more components is the better model.)

## Bayesian Gaussian mixture: unused components switched off

`gj.BayesianGaussianMixture(n_components=10)` puts a Dirichlet-process prior on the weights;
components that do not help get weights near 0."""),
    code("""
bgm = gj.BayesianGaussianMixture(n_components=10, max_iter=300, random_state=0,
                                 weight_concentration_prior=0.01).fit(X)
print("weights:", bgm.weights_.round(3))
print("components with weight > 1 %:", int((bgm.weights_ > 0.01).sum()))
ax = gplot.plot_ellipses(bgm, alpha=0.35, alpha_by_weight=True, label=False)
ax.scatter(*X.T, s=6, color="k", alpha=0.4)
ax.set_title("Bayesian mixture, opacity ∝ weight");"""),
]

# ------------------------------------------------------------------------------------------- 03

NB03 = [
    md("""
# 3. Covariance types and model selection

The four covariance types of a Gaussian mixture, drawn on the same data:

* `full`: each component has its own covariance matrix,
* `tied`: all components share one covariance matrix,
* `diag`: each component has its own axis-aligned (diagonal) covariance,
* `spherical`: each component has its own single variance.

Then BIC and AIC over K for every type, and `gj.select_model` picking the winner."""),
    code(SETUP),
    code("""
rng = np.random.default_rng(3)
X = np.vstack([
    rng.multivariate_normal([0, 0], [[2.0, 1.2], [1.2, 1.0]], 160),
    rng.multivariate_normal([5, 4], [[0.4, 0.0], [0.0, 1.5]], 120),
    rng.multivariate_normal([6, -2], [[0.5, -0.3], [-0.3, 0.4]], 120),
]).astype(np.float32)
print(X.shape)"""),
    md("""
One call fits every (covariance type, K) pair: one compiled program per covariance type, with
all K and restarts in one `vmap`."""),
    code("""
t0 = time.perf_counter()
sel = gj.select_model(jax.random.key(0), X, range(1, 7), gj.COVARIANCE_TYPES, "bic")
print(f"{len(gj.COVARIANCE_TYPES) * 6} EM runs in {time.perf_counter() - t0:.1f} s (compile included)")
print("best:", sel.best_covariance_type, "K =", sel.best_n_components)"""),
    md("## The four covariance types at K = 3"),
    code("""
fig, axes = plt.subplots(2, 2, figsize=(10, 8), sharex=True, sharey=True)
for ax, ct in zip(axes.ravel(), gj.COVARIANCE_TYPES):
    params = sel.all_params[(ct, 3)]
    ax.scatter(*X.T, s=5, color="k", alpha=0.4)
    gplot.plot_ellipses(params, ax=ax)
    i = sel.covariance_types.index(ct)
    ax.set_title(f"{ct}: BIC {sel.bic[i, 2]:.0f}, {int(sel.n_parameters[i, 2])} parameters")
fig.tight_layout()"""),
    md("## BIC and AIC against K"),
    code("""
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
gplot.plot_criterion(sel, ax=axes[0], criterion="bic")
gplot.plot_criterion(sel, ax=axes[1], criterion="aic")
axes[0].set_title("BIC"); axes[1].set_title("AIC");"""),
    code("""
print(f"{'type':>9} {'K':>2} {'BIC':>9} {'AIC':>9} {'params':>6}")
for r in sel.rows():
    if r["n_components"] in (2, 3, 4):
        print(f"{r['covariance_type']:>9} {r['n_components']:>2} {r['bic']:9.1f} {r['aic']:9.1f} {r['n_parameters']:6d}")"""),
    md("""
The winner comes back as a fitted `GaussianMixture` (`sel.estimator`), ready to `predict`,
`score_samples` or `sample`."""),
    code("""
best = sel.estimator
ax = gplot.plot_density(best, X=X, levels=15)
gplot.plot_ellipses(best, ax=ax, colors=["w"], alpha=0.2)
ax.set_title(f"selected: {best.covariance_type}, K={best.n_components}")
print("cluster sizes:", np.bincount(best.predict(X)))"""),
]

# ------------------------------------------------------------------------------------------- 04

NB04 = [
    md("""
# 4. A 1-D density: model selection, outliers, and GMM vs KDE

Data from three Gaussians in one dimension. AIC/BIC choose the number of components; injected
outliers are found by their log-likelihood (with the misses and false alarms counted); the
mixture is compared with a Gaussian kernel density estimate."""),
    code(SETUP + "\nfrom scipy.stats import norm"),
    code("""
rng = np.random.default_rng(4)
true_w, true_mu, true_sd = np.array([0.3, 0.5, 0.2]), np.array([-3.0, 1.0, 5.0]), np.array([0.8, 1.2, 0.5])

def true_density(x):
    return (true_w * norm.pdf(x[:, None], true_mu, true_sd)).sum(axis=1)

def draw(n):
    comp = rng.choice(3, size=n, p=true_w)
    return rng.normal(true_mu[comp], true_sd[comp])[:, None]

X = draw(500)
X_test = draw(500)
print(X.shape)"""),
    md("## AIC and BIC against K"),
    code("""
sel = gj.select_model(jax.random.key(0), X, range(1, 7), ("full",))
ax = gplot.plot_criterion(sel, criterion=["bic", "aic"])
ax.set_title("1-D three Gaussians")
print("BIC picks K =", sel.best_n_components)
print("AIC picks K =", int(np.asarray(sel.n_components)[np.argmin(sel.aic[0])]))"""),
    code("""
gm = sel.estimator
grid = np.linspace(-7, 8, 400)
ax = gplot.plot_density_1d(gm, X=X, xlim=(-7, 8))
ax.plot(grid, true_density(grid), "k:", lw=2, label="true density")
ax.legend(fontsize=8)
print("fitted weights", gm.weights_.round(3), "means", gm.means_.ravel().round(2))"""),
    md("""
## Injected outliers, found by log-likelihood

Twenty points drawn uniformly over [−15, 15] are added. A fresh mixture is fitted on the
contaminated data and the rows below the 4 % log-likelihood percentile are flagged. Outliers that
land inside the bulk of the data cannot be told apart from it (misses); a few genuine points in
the tails are flagged (false alarms)."""),
    code("""
n_out = 20
outliers = rng.uniform(-15, 15, size=(n_out, 1))
X_all = np.vstack([X, outliers])
is_out = np.r_[np.zeros(len(X), bool), np.ones(n_out, bool)]

det = gj.GaussianMixtureOutlierDetector(3, contamination=0.04, random_state=0, n_init=3)
flag = det.fit_predict(X_all) == -1
scores = det.training_scores_
tp, fn, fp = int((flag & is_out).sum()), int((~flag & is_out).sum()), int((flag & ~is_out).sum())
print(f"flagged {flag.sum()}: {tp} true outliers found, {fn} missed, {fp} false alarms")
print("missed outliers at x =", np.sort(X_all[~flag & is_out, 0]).round(2))"""),
    code("""
fig, ax = plt.subplots(figsize=(9, 3.5))
ax.scatter(X_all[~is_out, 0], scores[~is_out], s=6, color="gray", label="data")
ax.scatter(X_all[is_out & flag, 0], scores[is_out & flag], s=40, color="red", label="outlier, found")
ax.scatter(X_all[is_out & ~flag, 0], scores[is_out & ~flag], s=40, marker="x", color="orange", label="outlier, missed")
ax.scatter(X_all[~is_out & flag, 0], scores[~is_out & flag], s=40, facecolors="none", edgecolors="blue", label="false alarm")
ax.axhline(det.offset_, color="k", ls="--", lw=1, label="threshold (4th percentile)")
ax.set(xlabel="x", ylabel="log-likelihood")
ax.legend(fontsize=7, loc="lower center");"""),
    md("""
## GMM vs KDE

A Gaussian KDE puts a small Gaussian on every training point (`gj.KernelDensity`, evaluated on
the device in chunks). With a well-chosen bandwidth it is close to the truth too, but it needs all
500 points at prediction time where the mixture needs 8 numbers. Held-out log-likelihood
compares them."""),
    code("""
bw = 1.06 * X.std() * len(X) ** (-1 / 5)     # Silverman's rule of thumb, scaled by the spread
kde = gj.KernelDensity(bandwidth=bw).fit(X)
kde_narrow = gj.KernelDensity(bandwidth=bw / 5).fit(X)
for name, model in [("GMM (K=%d)" % gm.n_components, gm), (f"KDE h={bw:.2f}", kde), (f"KDE h={bw / 5:.2f}", kde_narrow)]:
    print(f"{name:>12}: held-out mean log-likelihood {model.score_samples(X_test).mean():.4f}")
print(f"{'truth':>12}: {np.log(true_density(X_test[:, 0])).mean():.4f}")

ax = gplot.plot_density_1d(gm, X=X, xlim=(-7, 8), components=False, label="GMM")
gplot.plot_density_1d(kde, ax=ax, xlim=(-7, 8), label=f"KDE h={bw:.2f}")
gplot.plot_density_1d(kde_narrow, ax=ax, xlim=(-7, 8), label=f"KDE h={bw / 5:.2f}", lw=0.8)
ax.plot(grid, true_density(grid), "k:", lw=2, label="true")
ax.legend(fontsize=8);"""),
]

# ------------------------------------------------------------------------------------------- 05

NB05 = [
    md("""
# 5. Scale and speed

What JAX adds: restarts as one `vmap`, a thousand independent fits in one compiled program,
data sharded across devices, and the benchmark suite's plots. Small sizes here so the notebook
runs in seconds on a laptop CPU; the same code runs on a GPU unchanged. The timings printed
below are those of the machine that last executed the notebook (for the committed copy, a busy
shared 2-core CPU): read them as orders of magnitude, and see the benchmark suite for measured
comparisons."""),
    code("""
import jax
jax.config.update("jax_num_cpu_devices", 4)   # 4 CPU devices for the sharded fit; before JAX starts
""" + SETUP + """
print(jax.devices())"""),
    md("""
## Restarts in one `vmap`

`n_init` restarts run side by side in one program; the best lower bound wins. The first call
includes compilation; a second call with the same shapes compiles nothing."""),
    code("""
rng = np.random.default_rng(5)
centers = rng.normal(scale=4.0, size=(6, 2))
X = (centers[rng.integers(0, 6, 2000)] + rng.normal(size=(2000, 2))).astype(np.float32)

def timed(f):
    t0 = time.perf_counter(); out = jax.block_until_ready(f()); return out, time.perf_counter() - t0

fit16 = lambda: gj.fit(jax.random.key(0), X, 6, n_init=16, init="random_from_data")
res, t_first = timed(fit16)
res, t_second = timed(fit16)
print(f"16 restarts: first call {t_first:.2f} s (with compile), second {t_second * 1e3:.0f} ms")
bounds = np.asarray(res.restart_lower_bounds)
print("per-restart mean log-likelihood:", np.sort(bounds).round(3))
plt.hist(bounds, bins=12); plt.axvline(float(res.lower_bound), color="r", label="picked")
plt.xlabel("final lower bound"); plt.ylabel("restarts"); plt.legend();"""),
    md("""
## 1000 independent fits at once

`gj.fit` is a pure function, so `jax.vmap` turns it into a batch of fits: one compiled program
for a thousand mixtures. `gj.pad_datasets` stacks ragged datasets, padding with zero-weight rows
(`gj.fit_many(key, datasets, K)` does the padding and the `vmap` in one call). Here, 1000 small 2-D datasets of two clusters whose
separation varies; each fit recovers its own separation."""),
    code("""
B, n = 1000, 64
sep = rng.uniform(1.0, 6.0, B)
lab = rng.integers(0, 2, (B, n))
data = (rng.normal(size=(B, n, 2)) + lab[..., None] * np.stack([sep, np.zeros(B)], 1)[:, None]).astype(np.float32)

X_b, W_b = gj.pad_datasets(data)    # (B, N, D) + weights; ragged datasets get zero-weight rows
keys = jax.random.split(jax.random.key(1), B)
fit_all = jax.jit(jax.vmap(lambda k, x, w: gj.fit(k, x, 2, covariance_type="diag",
                                                  init="k-means++", sample_weight=w)))
many, t_first = timed(lambda: fit_all(keys, X_b, W_b))
many, t_second = timed(lambda: fit_all(keys, X_b, W_b))
print(f"{B} fits: first call {t_first:.2f} s, second {t_second:.2f} s "
      f"({t_second / B * 1e6:.0f} µs per fit)")
means = np.asarray(many.params.means)
est_sep = np.abs(means[:, 0, 0] - means[:, 1, 0])
print("converged:", int(np.asarray(many.converged).sum()), "of", B)"""),
    code("""
from sklearn.mixture import GaussianMixture as SkGM
t0 = time.perf_counter()
for b in range(50):
    SkGM(2, covariance_type="diag", random_state=b).fit(data[b])
t_sk = (time.perf_counter() - t0) / 50
print(f"scikit-learn, one fit at a time: {t_sk * 1e3:.1f} ms per fit -> ~{t_sk * B:.1f} s for {B}")

plt.scatter(sep, est_sep, s=4, alpha=0.5)
plt.plot([1, 6], [1, 6], "k--", lw=1)
plt.xlabel("true separation"); plt.ylabel("fitted |μ₁ − μ₂|"); plt.title(f"{B} fits in one program");"""),
    md("""
## A sharded fit

The 16-restart fit from above again, with `mesh=`: the rows are split over the 4 devices, every
device computes the statistics of its own rows and one `psum` combines them. The result is the same fit as on one device (up to float
rounding in the order of the sums)."""),
    code("""
mesh = gj.distributed.data_mesh(4)
res_sharded = gj.fit(jax.random.key(0), X, 6, n_init=16, init="random_from_data", mesh=mesh)
print("mesh:", dict(mesh.shape))
print("n_iter sharded / single device:", int(res_sharded.n_iter), int(res.n_iter))
print("max |Δ mean| between the sharded and the single-device fit above:",
      float(np.abs(np.asarray(res_sharded.params.means) - np.asarray(res.params.means)).max()))
ax = gplot.plot_ellipses(res_sharded.params, label=False)
ax.scatter(*X.T, s=2, color="k", alpha=0.3); ax.set_title("fit sharded over 4 devices");"""),
    md("""
## Benchmarks

The benchmark suite (`python -m benchmarks --quick`, or `gmmjax bench --quick`) compares gmmjax
with scikit-learn on identical work and writes JSON and PNG plots to `benchmarks/results/`. The
notebook shows the plots found there; it does not run the suite."""),
    code("""
from pathlib import Path
from IPython.display import Image, display

results = next((p for p in (Path("../benchmarks/results"), Path("benchmarks/results")) if p.is_dir()), None)
pngs = sorted(results.glob("*.png")) if results else []
if not pngs:
    print("No benchmark plots yet: run `python -m benchmarks --quick` from the repository root.")
for png in pngs[-4:]:
    print(png.name)
    display(Image(filename=str(png), width=640))"""),
]


# ------------------------------------------------------------------------------------------- 06

NB06 = [
    md("""
# 6. Missing values: fit on a table with holes, then fill them in

Real tables have holes. `gj.fit(..., missing="marginalize")` runs EM on each row's observed
entries (the missing ones are integrated out; Ghahramani & Jordan 1994), for every covariance
type. `gj.impute` then fills each hole with its conditional expectation under the mixture, and
`gj.GaussianMixtureImputer` packages both as a scikit-learn transformer. Below: a 6-feature table
from three correlated clusters with 25% of its entries removed at random, imputed three ways and
scored by RMSE on the removed entries."""),
    code(SETUP),
    code("""
rng = np.random.default_rng(0)
d, k, n = 6, 3, 3000
centres = rng.normal(scale=3.0, size=(k, d))
mixing = [rng.normal(size=(d, d)) * 0.6 for _ in range(k)]
labels = rng.integers(0, k, n)
full = np.stack([centres[c] + rng.normal(size=d) @ mixing[c] for c in labels]).astype(np.float32)
holes = full.copy()
mask = rng.random(full.shape) < 0.25
holes[mask] = np.nan
print(f"{mask.mean():.0%} of entries missing; {np.isnan(holes).any(axis=1).mean():.0%} of rows "
      "have at least one hole; scikit-learn's GaussianMixture would reject this table")"""),
    md("## Fit with holes and impute\n\nThe fit sees only observed entries; its lower bound is the "
       "observed-data log-likelihood, which EM never decreases."),
    code("""
res = gj.fit(jax.random.key(0), holes, k, missing="marginalize", max_iter=200)
print("converged:", bool(res.converged), " iterations:", int(res.n_iter),
      " observed-data log-lik per row:", float(res.lower_bound))
bounds = np.asarray(res.lower_bounds)[: int(res.n_iter)]
print("monotone:", bool(np.all(np.diff(bounds) >= -1e-6)))
filled = np.asarray(gj.impute(res.params, holes))
assert np.array_equal(filled[~mask], holes[~mask])       # observed entries untouched"""),
    md("## RMSE on the removed entries\n\nColumn means, scikit-learn's `IterativeImputer` "
       "(chained regressions) and the mixture imputer, on the same table."),
    code("""
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.impute import IterativeImputer, SimpleImputer

def rmse(x):
    return float(np.sqrt(np.mean((x[mask] - full[mask]) ** 2)))

import warnings
with warnings.catch_warnings():   # IterativeImputer: "early stopping criterion not reached"
    warnings.simplefilter("ignore")
    iterative = IterativeImputer(max_iter=20, random_state=0).fit_transform(holes)
scores = {
    "column means": rmse(SimpleImputer().fit_transform(holes)),
    "IterativeImputer": rmse(iterative),
    "GaussianMixtureImputer": rmse(gj.GaussianMixtureImputer(k, random_state=0)
                                   .fit_transform(holes)),
}
for name, value in scores.items():
    print(f"{name:>24}: RMSE {value:.3f}")
plt.barh(list(scores), list(scores.values()))
plt.xlabel("RMSE on the removed entries (lower is better)")
plt.tight_layout()"""),
    md("""
The mixture knows which cluster a row belongs to from its observed entries and uses that
cluster's correlations, so it beats a single linear model per column (IterativeImputer) on
clustered data.

## Multiple imputation

With a key, `gj.impute` draws each hole from its conditional distribution instead of using the
mean: repeat with different keys and analyse each completed table to carry the imputation
uncertainty into the results."""),
    code("""
draws = np.stack([np.asarray(gj.impute(res.params, holes, key=jax.random.key(i)))
                  for i in range(20)])
spread = draws.std(axis=0)[mask]
print(f"mean spread of a drawn hole across 20 imputations: {spread.mean():.3f}; "
      f"RMSE of their average: {rmse(draws.mean(axis=0)):.3f}")"""),
]

NOTEBOOKS = {
    "01_anomaly_detection": NB01,
    "02_clustering_moons": NB02,
    "03_covariance_types_and_model_selection": NB03,
    "04_density_1d_outliers_kde": NB04,
    "05_scale_and_speed": NB05,
    "06_missing_values": NB06,
}


def build(name: str) -> nbformat.NotebookNode:
    nb = new_notebook(cells=NOTEBOOKS[name])
    nb.metadata["kernelspec"] = KERNEL
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def execute(nb: nbformat.NotebookNode, timeout: int = TIMEOUT_S) -> nbformat.NotebookNode:
    from nbclient import NotebookClient
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(HERE)}})
    client.execute()
    return nb


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("only", nargs="*", help="substrings of notebook names")
    ap.add_argument("--no-execute", action="store_true")
    args = ap.parse_args(argv)
    names = [n for n in NOTEBOOKS if not args.only or any(o in n for o in args.only)]
    total = 0.0
    for name in names:
        nb = build(name)
        if not args.no_execute:
            t0 = time.perf_counter()
            execute(nb)
            dt = time.perf_counter() - t0
            total += dt
            print(f"{name}: executed in {dt:.1f} s", file=sys.stderr)
        nbformat.validate(nb)
        nbformat.write(nb, HERE / f"{name}.ipynb")
    if not args.no_execute:
        print(f"total {total:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
