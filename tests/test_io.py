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
    with pytest.raises(TypeError, match="GaussianMixture or a gmmjax.MixtureParams"):
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
