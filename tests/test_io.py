"""gmmjax.io: .npz round trips of GaussianMixture and MixtureParams, without pickle."""

import io

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

import gmmjax as gj
from gmmjax import GaussianMixture
from gmmjax.io import load, save

COV_TYPES = ["full", "tied", "diag", "spherical"]


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    return np.vstack([rng.randn(60, 2) + [-3.0, 1.0], rng.randn(60, 2) * 0.7 + [3.0, -2.0]])


def _init(covariance_type):
    prec = {"full": np.array([np.eye(2), 2 * np.eye(2)]), "tied": np.eye(2) * 0.5,
            "diag": np.array([[1.0, 0.5], [2.0, 1.0]]), "spherical": np.array([0.5, 1.0])}
    return dict(weights_init=np.array([0.4, 0.6]), means_init=np.array([[-1.0, 0.0], [1.0, 0.0]]),
                precisions_init=prec[covariance_type])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_estimator_round_trip(tmp_path, data, covariance_type, dtype):
    X = data.astype(dtype)
    gm = GaussianMixture(2, covariance_type=covariance_type, random_state=3, tol=1e-4,
                         **_init(covariance_type)).fit(X)
    path = tmp_path / "model.npz"
    save(gm, path)
    back = load(path)
    assert type(back) is GaussianMixture
    for name in ["weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"]:
        got, want = getattr(back, name), getattr(gm, name)
        assert got.dtype == want.dtype == dtype
        np.testing.assert_array_equal(got, want)
    assert back.converged_ == gm.converged_ and back.n_iter_ == gm.n_iter_
    assert back.lower_bound_ == gm.lower_bound_ and type(back.lower_bound_) is type(gm.lower_bound_)
    np.testing.assert_array_equal(back.lower_bounds_, gm.lower_bounds_)
    assert back.n_features_in_ == 2
    params, ref = back.get_params(), gm.get_params()
    assert params.keys() == ref.keys()
    for key, value in ref.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(params[key], value)
        else:
            assert params[key] == value, key
    np.testing.assert_array_equal(back.predict(X), gm.predict(X))
    np.testing.assert_array_equal(back.score_samples(X), gm.score_samples(X))


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_params_round_trip_file_object(covariance_type):
    rng = np.random.RandomState(1)
    prec = {"full": np.array([np.eye(2), [[2.0, 0.3], [0.3, 1.0]]]), "tied": np.eye(2),
            "diag": rng.uniform(0.5, 2, (2, 2)), "spherical": np.array([0.5, 2.0])}
    params = gj.from_precisions(np.array([0.3, 0.7]), rng.randn(2, 2), prec[covariance_type],
                                covariance_type)
    buf = io.BytesIO()
    save(params, buf)
    buf.seek(0)
    back = load(buf)
    assert isinstance(back, gj.MixtureParams) and back.covariance_type == covariance_type
    for field in ("weights", "means", "covariances", "precisions_cholesky"):
        np.testing.assert_array_equal(getattr(back, field), np.asarray(getattr(params, field)))


def test_loaded_file_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, __format__=np.array("gmmjax.mixture"), __version__=np.array(1),
             kind=np.array([object()], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        load(path)


def test_bad_files_and_objects(tmp_path, data):
    with pytest.raises(NotFittedError):
        save(GaussianMixture(), tmp_path / "a.npz")
    with pytest.raises(TypeError, match="MixtureParams or a fitted gmmjax GaussianMixture"):
        save({"weights": 1}, tmp_path / "a.npz")
    np.savez(tmp_path / "other.npz", x=np.ones(3))
    with pytest.raises(ValueError, match="Not a gmmjax mixture file"):
        load(tmp_path / "other.npz")
    np.savez(tmp_path / "wrong.npz", __format__=np.array("something"), __version__=np.array(1))
    with pytest.raises(ValueError, match="format 'something'"):
        load(tmp_path / "wrong.npz")
    np.savez(tmp_path / "newer.npz", __format__=np.array("gmmjax.mixture"),
             __version__=np.array(99))
    with pytest.raises(ValueError, match="newer"):
        load(tmp_path / "newer.npz")


def test_random_state_instance_is_saved_as_none(tmp_path, data):
    gm = GaussianMixture(2, random_state=np.random.RandomState(0), **_init("full")).fit(data)
    with pytest.warns(UserWarning, match="RandomState"):
        save(gm, tmp_path / "m.npz")
    back = load(tmp_path / "m.npz")
    assert back.random_state is None
    np.testing.assert_array_equal(back.means_, gm.means_)


def test_loaded_model_warm_starts(tmp_path, data):
    gm = GaussianMixture(2, **_init("full")).fit(data)
    save(gm, tmp_path / "m.npz")
    back = load(tmp_path / "m.npz")
    back.set_params(warm_start=True, max_iter=1).fit(data)
    # continuing from a converged fit converges at once (previous lower bound is the start)
    assert back.n_iter_ == 1 and back.converged_


def _estimators():
    from gmmjax.estimators.kernel_density import KernelDensity
    from gmmjax.estimators.outlier_detector import GaussianMixtureOutlierDetector
    return [(gj.BayesianGaussianMixture(n_components=2, max_iter=20), np.float64),
            (gj.BayesianGaussianMixture(n_components=2, covariance_type="tied", max_iter=20,
                                        weight_concentration_prior_type="dirichlet_distribution"),
             np.float32),
            (GaussianMixtureOutlierDetector(2, covariance_type="diag", novelty=True), np.float64),
            (KernelDensity(bandwidth=0.5), np.float32)]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("index", range(4))
def test_other_estimators_round_trip(tmp_path, data, index):
    est, dtype = _estimators()[index]
    X = data.astype(dtype)
    weights = np.linspace(0.5, 1.5, len(X))
    est.fit(X, sample_weight=weights) if index == 3 else est.fit(X)
    save(est, tmp_path / "m.npz")
    back = load(tmp_path / "m.npz")
    assert type(back) is type(est) and back.get_params().keys() == est.get_params().keys()
    for name, value in vars(est).items():
        if name.endswith("_") and not name.startswith("_") and not hasattr(value, "fit"):
            got = getattr(back, name)
            assert type(got) is type(value), name
            np.testing.assert_array_equal(np.asarray(got, dtype=np.asarray(value).dtype),
                                          np.asarray(value), err_msg=name)
    np.testing.assert_array_equal(back.score_samples(X), est.score_samples(X))


def _damage(tmp_path, source, **changes):
    with np.load(source) as f:
        entries = {k: f[k] for k in f.files}
    for key, value in changes.items():
        if value is None:
            del entries[key]
        else:
            entries[key] = value
    path = tmp_path / "damaged.npz"
    np.savez(path, **entries)
    return path


@pytest.fixture(scope="module")
def saved(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("saved")
    gm = GaussianMixture(2, **_init("full")).fit(data)
    save(gm, d / "gm.npz")
    save(gm.params_, d / "params.npz")
    return d, gm


@pytest.mark.parametrize("field, change, match", [
    ("weights", lambda a: np.where(np.arange(2) == 0, np.nan, a), "weights contains NaN"),
    ("weights", lambda a: np.where(np.arange(2) == 0, np.inf, a), "weights contains NaN"),
    ("weights", lambda a: -a, "weights must be non-negative"),
    ("precisions_cholesky", lambda a: -a, "positive diagonal"),
    ("means", lambda a: a + 1j, "must be real numbers"),
    ("means", lambda a: a.astype(str), "must be real numbers"),
    ("n_iter_", lambda a: np.array([1, 2, 3]), "'n_iter_' must be a single int"),
    ("kind", lambda a: np.array("Something"), "Unknown object kind"),
    ("extra", lambda a: np.ones(2), "unknown entry 'extra'"),
])
@pytest.mark.parametrize("which", ["gm", "params"])
def test_load_checks_values(tmp_path, saved, field, change, match, which):
    d, gm = saved
    if which == "params" and field == "n_iter_":
        pytest.skip("a MixtureParams file has no n_iter_")
    with np.load(d / f"{which}.npz") as f:
        old = f[field] if field in f.files else None
    with pytest.raises(ValueError, match=match):
        load(_damage(tmp_path, d / f"{which}.npz", **{field: change(old)}))


def test_load_checks_nested_and_kde_values(tmp_path, data):
    from gmmjax.estimators.kernel_density import KernelDensity
    from gmmjax.estimators.outlier_detector import GaussianMixtureOutlierDetector
    det = GaussianMixtureOutlierDetector(2, **_init("full")).fit(data)
    save(det, tmp_path / "det.npz")
    with np.load(tmp_path / "det.npz") as f:
        prec = f["mixture_.fitted__precisions_cholesky_"]
    with pytest.raises(ValueError, match="positive diagonal"):
        load(_damage(tmp_path, tmp_path / "det.npz",
                     **{"mixture_.fitted__precisions_cholesky_": -prec}))
    with pytest.raises(ValueError, match="offset_ contains NaN"):
        load(_damage(tmp_path, tmp_path / "det.npz", **{"fitted": np.array(
            str(np.load(tmp_path / "det.npz")["fitted"]).replace(
                f'"offset_": ["scalar", {det.offset_!r}]', '"offset_": ["scalar", NaN]'))}))
    kde = KernelDensity().fit(data, sample_weight=np.ones(len(data)))
    save(kde, tmp_path / "kde.npz")
    with pytest.raises(ValueError, match="sample_weight must be non-negative"):
        load(_damage(tmp_path, tmp_path / "kde.npz", fitted__sample_weight_=-np.ones(len(data))))


def test_unreadable_files_give_one_value_error(tmp_path, saved):
    d, _ = saved
    raw = (d / "gm.npz").read_bytes()
    (tmp_path / "trunc.npz").write_bytes(raw[:len(raw) // 2])
    (tmp_path / "empty.npz").write_bytes(b"")
    np.save(tmp_path / "array.npy", np.ones(3))
    for name, match in (("trunc.npz", "cannot read"), ("empty.npz", "Not a gmmjax mixture"),
                        ("array.npy", "single array")):
        with pytest.raises(ValueError, match=match):
            load(tmp_path / name)
