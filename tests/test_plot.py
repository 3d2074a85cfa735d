"""gmmjax.plot: covariance matrices of every type, ellipse geometry, marginal densities, criterion
curves, 1-D densities, and every bad input. Headless (Agg)."""

import sys
import types

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib", reason="gmmjax.plot needs matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Ellipse  # noqa: E402
from scipy.stats import multivariate_normal, norm  # noqa: E402
from sklearn.mixture import GaussianMixture as SkGM  # noqa: E402

import gmmjax as gj  # noqa: E402
import gmmjax.plot as gp  # noqa: E402

TYPES = ("full", "tied", "diag", "spherical")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def data3d():
    rng = np.random.default_rng(0)
    a = rng.multivariate_normal([0, 0, 0], [[1, .5, .2], [.5, 1, .1], [.2, .1, .5]], 80)
    b = rng.multivariate_normal([4, 2, -1], [[.5, -.2, 0], [-.2, .8, .3], [0, .3, .6]], 70)
    return np.vstack([a, b])


@pytest.fixture(scope="module")
def sk_models(data3d):
    return {ct: SkGM(2, covariance_type=ct, random_state=0).fit(data3d) for ct in TYPES}


def _dense(sk):
    """sklearn's covariances_ expanded to (K, D, D)."""
    k, d = sk.means_.shape
    c = sk.covariances_
    return {"full": lambda: c, "tied": lambda: np.broadcast_to(c, (k, d, d)),
            "diag": lambda: np.stack([np.diag(v) for v in c]),
            "spherical": lambda: np.stack([np.eye(d) * v for v in c])}[sk.covariance_type]()


@pytest.mark.parametrize("ct", TYPES)
def test_covariance_matrices_match_sklearn(sk_models, ct):
    sk = sk_models[ct]
    np.testing.assert_allclose(gp.covariance_matrices(sk), _dense(sk), rtol=1e-9, atol=1e-12)
    # the same through MixtureParams and through a gmmjax estimator (params_)
    params = gp.to_params(sk)
    est = gj.GaussianMixture.from_params(params)
    np.testing.assert_allclose(gp.covariance_matrices(est), _dense(sk), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("ct", TYPES)
def test_ellipses_geometry(sk_models, ct):
    sk = sk_models[ct]
    fig, ax = plt.subplots()
    gp.plot_ellipses(sk, ax=ax, dims=(0, 2), n_std=(1.0, 2.0))
    ells = [p for p in ax.patches if isinstance(p, Ellipse)]
    assert len(ells) == 2 * 2
    cov = _dense(sk)[:, [0, 2]][:, :, [0, 2]]
    for k in range(2):
        lam = np.linalg.eigvalsh(cov[k])
        # drawn largest n_std first, per component
        big, small = ells[2 * k], ells[2 * k + 1]
        np.testing.assert_allclose(big.center, sk.means_[k, [0, 2]])
        np.testing.assert_allclose([big.width, big.height], 4 * np.sqrt(lam[::-1]), rtol=1e-8)
        np.testing.assert_allclose([small.width, small.height], 2 * np.sqrt(lam[::-1]), rtol=1e-8)
        # the ellipse's long axis is the top eigenvector
        vec = np.linalg.eigh(cov[k])[1][:, -1]
        ang = np.radians(big.angle)
        assert abs(abs(np.dot(vec, [np.cos(ang), np.sin(ang)])) - 1) < 1e-8


def test_alpha_by_weight(sk_models):
    sk = sk_models["full"]
    ax = gp.plot_ellipses(sk, n_std=1.0, alpha=0.5, alpha_by_weight=True)
    alphas = [p.get_alpha() for p in ax.patches]
    w = sk.weights_
    np.testing.assert_allclose(alphas, 0.5 * w / w.max())


@pytest.mark.parametrize("ct", ("full", "diag"))
def test_marginal_density_matches_scipy(sk_models, data3d, ct):
    sk = sk_models[ct]
    dims = [2, 0]
    m = gp.marginal(sk, dims)
    pts = data3d[:20][:, dims]
    cov = _dense(sk)[:, dims][:, :, dims]
    want = np.log(sum(sk.weights_[k] * multivariate_normal(sk.means_[k, dims], cov[k]).pdf(pts)
                      for k in range(2)))
    fn, d = gp._log_density_fn(sk, dims)
    assert d == 3
    np.testing.assert_allclose(fn(pts), want, rtol=1e-8)
    np.testing.assert_allclose(np.asarray(gj.log_prob(m.astype(np.float32), pts.astype(np.float32))), want,
                               rtol=1e-4)


def test_full_density_matches_score_samples(sk_models, data3d):
    sk = sk_models["tied"]
    fn, _ = gp._log_density_fn(sk, [0, 1, 2])
    np.testing.assert_allclose(fn(data3d[:10]), sk.score_samples(data3d[:10]), rtol=1e-8)


def test_plot_density_contours_and_surface(sk_models, data3d):
    sk = sk_models["full"]
    fig, ax = plt.subplots()
    out = gp.plot_density(sk, ax=ax, X=data3d, dims=(0, 1), resolution=30, levels=5,
                          colorbar=True)
    assert out is ax and ax.collections     # contour set + scatter
    lo, hi = data3d[:, :2].min(0), data3d[:, :2].max(0)
    assert ax.get_xlim()[0] <= lo[0] and ax.get_xlim()[1] >= hi[0]
    ax3 = gp.plot_surface(sk, X=data3d, resolution=10)
    assert ax3.name == "3d"
    # a callable and a density estimator with score_samples
    gp.plot_density(lambda p: -0.5 * np.sum(p ** 2, 1), xlim=(-1, 1), ylim=(-1, 1),
                    resolution=8, filled=False, log=False)
    kde = gj.KernelDensity(bandwidth=0.5).fit(data3d[:, :2])
    gp.plot_density(kde, X=data3d[:, :2], resolution=8)


def test_plot_density_1d_components():
    rng = np.random.default_rng(1)
    x = np.r_[rng.normal(-2, .5, 60), rng.normal(2, 1, 60)][:, None]
    sk = SkGM(2, random_state=0).fit(x)
    ax = gp.plot_density_1d(sk, X=x, bins=10)
    assert len(ax.lines) == 3          # mixture + 2 components
    grid, total = ax.lines[0].get_data()
    want = sum(sk.weights_[k] * norm(sk.means_[k, 0], np.sqrt(sk.covariances_[k, 0, 0])).pdf(grid)
               for k in range(2))
    np.testing.assert_allclose(total, want, rtol=1e-8)
    np.testing.assert_allclose(ax.lines[1].get_data()[1] + ax.lines[2].get_data()[1], want,
                               rtol=1e-8)
    plt.figure()
    ax = gp.plot_density_1d(sk, xlim=(-4, 4), components=False, log=True)
    assert len(ax.lines) == 1


def _fake_selection():
    bic = np.array([[10.0, 5.0, 7.0], [9.0, 6.0, 4.0]])
    aic = bic - 3.0
    return types.SimpleNamespace(covariance_types=("full", "diag"), n_components=(1, 2, 3),
                                 criterion="bic", bic=bic, aic=aic)


def test_plot_criterion_marks_best():
    sel = _fake_selection()
    ax = gp.plot_criterion(sel)
    stars = [ln for ln in ax.lines if ln.get_marker() == "*"]
    assert len(stars) == 1
    assert (stars[0].get_xdata()[0], stars[0].get_ydata()[0]) == (3, 4.0)
    assert "diag" in stars[0].get_label()
    plt.figure()
    ax = gp.plot_criterion(sel, criterion=["bic", "aic"])
    stars = [ln for ln in ax.lines if ln.get_marker() == "*"]
    assert sorted(s.get_ydata()[0] for s in stars) == [1.0, 4.0]   # one winner per criterion
    # a mapping of curves with inf (a failed fit) skipped
    plt.figure()
    ax = gp.plot_criterion({"a": [3.0, np.inf, 1.0]}, n_components=[1, 2, 3], criterion="bic")
    stars = [ln for ln in ax.lines if ln.get_marker() == "*"]
    assert stars[0].get_xdata()[0] == 3


def test_bad_inputs(sk_models):
    sk = sk_models["full"]
    with pytest.raises(ValueError, match="out of range"):
        gp.plot_ellipses(sk, dims=(0, 5))
    with pytest.raises(ValueError, match="distinct"):
        gp.plot_ellipses(sk, dims=(1, 1))
    with pytest.raises(ValueError, match="exactly 2"):
        gp.plot_ellipses(sk, dims=(0, 1, 2))
    with pytest.raises(ValueError, match="n_std must be positive"):
        gp.plot_ellipses(sk, n_std=-1)
    with pytest.raises(TypeError, match="MixtureParams"):
        gp.plot_ellipses(object())
    with pytest.raises(ValueError, match="xlim and ylim"):
        gp.plot_density(sk)
    with pytest.raises(ValueError, match="resolution"):
        gp.plot_density(sk, xlim=(0, 1), ylim=(0, 1), resolution=1)
    with pytest.raises(ValueError, match="2 features"):
        gp.plot_density(sk, xlim=(0, 1), ylim=(0, 1), dims=(0,))
    with pytest.raises(ValueError, match="1-D model"):
        gp.plot_density_1d(sk, xlim=(0, 1))
    with pytest.raises(ValueError, match="xlim"):
        gp.plot_density_1d(lambda p: p[:, 0])
    with pytest.raises(ValueError, match="n_components"):
        gp.plot_criterion({"a": [1, 2]})
    with pytest.raises(ValueError, match="values for"):
        gp.plot_criterion({"a": [1, 2]}, n_components=[1, 2, 3])
    with pytest.raises(ValueError, match="Unknown criterion"):
        gp.plot_criterion(_fake_selection(), criterion="hqic")
    with pytest.raises(TypeError, match="SelectionResult"):
        gp.plot_criterion([1, 2, 3])
    x1 = np.random.default_rng(0).normal(size=(30, 1))
    with pytest.raises(ValueError, match="at least 2 features"):
        gp.plot_ellipses(SkGM(1).fit(x1))
    batch = gj.from_covariances(np.ones((2, 1)), np.zeros((2, 1, 2)), np.ones((2, 1, 2)), "diag")
    with pytest.raises(ValueError, match="one mixture"):
        gp.covariance_matrices(batch)
    kde = gj.KernelDensity().fit(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="Marginal densities need a mixture"):
        gp.plot_density(kde, xlim=(0, 1), ylim=(0, 1))


def test_missing_matplotlib_says_what_to_install(monkeypatch, sk_models):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        gp.plot_ellipses(sk_models["full"])
