"""The ``gmmjax`` command: fit/score/outliers against scikit-learn and numpy, and every user
mistake as one stderr line with exit status 2. Most cases call ``gmmjax.cli.main`` in-process
(no JAX start-up per case); two subprocesses check the real command end to end."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SkGM

import gmmjax as gj
from gmmjax import cli
from gmmjax import io as gio


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (70, 2)), rng.normal(0, .3, (50, 2)) + [5, 5]]
    np.save(d / "x.npy", X)
    np.savetxt(d / "x.csv", X, delimiter=",", header="a,b", comments="")
    np.save(d / "x3.npy", rng.normal(size=(10, 3)))
    (d / "bad.csv").write_text("1,2\n3,abc\n")
    (d / "ragged.csv").write_text("1,2\n3\n")
    (d / "model.txt").write_text("hello")
    (d / "x.npz").write_text("not really")
    np.savez(d / "other.npz", a=np.zeros(3))
    sk = SkGM(2, covariance_type="diag", random_state=0).fit(X)
    params = gj.from_covariances(sk.weights_, sk.means_, sk.covariances_, "diag")
    import jax
    with jax.enable_x64(True):
        params = gj.from_covariances(sk.weights_, sk.means_, sk.covariances_, "diag")
        cli.save_model(str(d / "sk.npz"), jax.device_get(params))
    return d, X, sk


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_score_matches_sklearn(files, capsys):
    d, X, sk = files
    code, out, err = run(capsys, "score", d / "sk.npz", d / "x.csv", "--float64",
                         "--out", d / "s.npy")
    assert code == 0, err
    np.testing.assert_allclose(np.load(d / "s.npy"), sk.score_samples(X), rtol=1e-10)
    mean = float(out.split("mean log-likelihood:")[1].split()[0])
    assert mean == pytest.approx(sk.score(X), rel=1e-7)
    code, out, _ = run(capsys, "score", d / "sk.npz", d / "x.npy", "--per-sample")
    per = np.array([float(v) for v in out.strip().splitlines()[3:]])
    np.testing.assert_allclose(per, sk.score_samples(X), rtol=1e-4)   # float32 default


def test_score_accepts_a_saved_estimator(files, capsys):
    d, X, sk = files
    import jax
    with jax.enable_x64(True):
        est = gj.GaussianMixture.from_params(cli.load_model(str(d / "sk.npz")))
    gio.save(est, str(d / "est.npz"))
    code, out, err = run(capsys, "score", d / "est.npz", d / "x.npy", "--float64")
    assert code == 0, err
    assert float(out.split("mean log-likelihood:")[1].split()[0]) == pytest.approx(sk.score(X),
                                                                                 rel=1e-7)


def test_outliers_match_percentile(files, capsys):
    d, X, sk = files
    code, out, err = run(capsys, "outliers", d / "sk.npz", d / "x.npy", "--contamination",
                         "0.05", "--float64", "--out", d / "lab.csv")
    assert code == 0, err
    s = sk.score_samples(X)
    want = np.where(s < np.percentile(s, 5), -1, 1)
    got = np.loadtxt(d / "lab.csv", skiprows=1)
    np.testing.assert_array_equal(got, want)
    assert out.startswith(f"{(want == -1).sum()} of {len(X)} rows flagged")
    listed = [int(line.split()[0]) for line in out.splitlines()[2:] if line.split()[0].isdigit()]
    assert listed == list(np.argsort(s)[:(want == -1).sum()])
    code, out, _ = run(capsys, "outliers", d / "sk.npz", d / "x.npy", "--threshold", "-4",
                       "--float64", "--out", d / "lab.npy")
    np.testing.assert_array_equal(np.load(d / "lab.npy"), np.where(s < -4, -1, 1))


def test_fit_table_and_model_agree_with_select_model(files, capsys):
    d, X, _ = files
    code, out, err = run(capsys, "fit", d / "x.csv", "-k", "1-3", "--covariance-type", "full",
                         "--criterion", "aic", "--out", d / "m.npz")
    assert code == 0, err
    sel = gj.select_model(__import__("jax").random.key(0), X.astype(np.float32), (1, 2, 3),
                          ("full",), "aic", return_estimator=False)
    assert f"n_components={sel.best_n_components}" in out
    rows = [ln.split() for ln in out.splitlines() if ln.strip().startswith("full")]
    np.testing.assert_allclose([float(r[3]) for r in rows], sel.aic[0], rtol=1e-5)
    assert sum("<- best" in ln for ln in out.splitlines()) == 1
    assert "1/1 full" in err                          # progress on stderr
    params = gio.load(str(d / "m.npz"))          # the project's .npz format
    assert isinstance(params, gj.MixtureParams)
    np.testing.assert_allclose(params.means, np.asarray(sel.params.means), rtol=1e-6)
    code, out, err = run(capsys, "fit", d / "x.csv", "-k", "1-3", "-q", "--out", d / "m2.npz")
    assert code == 0 and err == ""                   # --quiet: no progress


@pytest.mark.parametrize("argv, message", [
    (["fit", "{d}/missing.csv"], "data file not found"),
    (["fit", "{d}/bad.csv", "-k", "1"], "non-numeric value 'abc' on line 2"),
    (["fit", "{d}/ragged.csv", "-k", "1"], "line 2 has 1 columns, expected 2"),
    (["fit", "{d}/model.txt"], "no numeric rows"),
    (["fit", "{d}/x.json"], "data file not found"),
    (["fit", "{d}/x.npz"], "unsupported file type"),
    (["fit", "{d}/x.npy", "-k", "5-2"], "empty range"),
    (["fit", "{d}/x.npy", "-k", "0-3"], ">= 1"),
    (["fit", "{d}/x.npy", "-k", "one"], "expected a number of components"),
    (["fit", "{d}/x.npy", "-k", "200"], "too few for K=200"),
    (["fit", "{d}/x.npy", "--covariance-type", "full,banana"], "unknown type banana"),
    (["fit", "{d}/x.npy", "--criterion", "hqic"], "invalid choice"),
    (["fit", "{d}/x.npy", "--reg-covar", "0"], "--reg-covar must be > 0"),
    (["fit", "{d}/x.npy", "--n-init", "0"], "--n-init must be >= 1"),
    (["fit", "{d}/x.npy", "--init", "magic"], "--init magic"),
    (["fit", "{d}/x.npy", "--out", "{d}/m.pkl"], "must end in .npz"),
    (["fit", "{d}/x.npy", "--out", "{d}/nodir/m.npz"], "does not exist"),
    (["fit", "{d}/x.npy", "--bogus"], "unrecognized arguments"),
    (["score", "{d}/sk.npz", "{d}/x3.npy"], "DATA has 3 column(s) but the model was fitted on 2"),
    (["score", "{d}/missing.npz", "{d}/x.npy"], "model file not found"),
    (["score", "{d}/x.npy", "{d}/x.npy"], "not a gmmjax model file"),
    (["score", "{d}/model.txt", "{d}/x.npy"], "not a gmmjax model file"),
    (["score", "{d}/other.npz", "{d}/x.npy"], "'__format__' is missing"),
    (["score", "{d}/x.csv", "{d}/x.npy"], "not an .npz archive"),
    (["outliers", "{d}/sk.npz", "{d}/x.npy", "--contamination", "0.9"], "(0, 0.5]"),
    (["outliers", "{d}/sk.npz", "{d}/x.npy", "--contamination", "0.1", "--threshold", "1"],
     "not allowed with"),
    (["frobnicate"], "invalid choice"),
])
def test_user_mistakes(files, capsys, argv, message):
    d = files[0]
    code, out, err = run(capsys, *[a.format(d=d) for a in argv])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gmmjax: error: "), err
    assert message in lines[0]
    assert "Traceback" not in err


def test_no_command_prints_help(capsys):
    code, out, err = run(capsys)
    assert code == 2 and "usage: gmmjax" in err


def test_parse_components():
    assert cli.parse_components("1-3,6,2") == [1, 2, 3, 6]
    assert cli.parse_components("4") == [4]


def _command():
    exe = Path(sys.executable).with_name("gmmjax")
    if exe.exists():
        return [str(exe)]                        # the installed console script
    found = shutil.which("gmmjax")
    return [found] if found else [sys.executable, "-m", "gmmjax.cli"]


def test_console_script_end_to_end(files):
    """One real process: fit writes a model that score then reads (second process)."""
    d, X, _ = files
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    p = subprocess.run(_command() + ["fit", str(d / "x.npy"), "-k", "1-2", "--covariance-type",
                                     "diag", "--out", str(d / "e2e.npz")],
                       capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr
    assert "wrote" in p.stdout and "[" in p.stderr
    p = subprocess.run(_command() + ["score", str(d / "e2e.npz"), str(d / "x3.npy")],
                       capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        "gmmjax: error: DATA has 3 column(s) but the model was fitted on 2 feature(s)"]


def test_bench_delegates_to_the_benchmarks_package(capfd):
    root = Path(cli.__file__).resolve().parent.parent
    if not (root / "benchmarks" / "__main__.py").exists():
        pytest.skip("no benchmarks/ folder next to the package")
    code = cli.main(["bench", "--quick", "--help"])   # the suite's own help; runs nothing
    out, _ = capfd.readouterr()
    assert code == 0
    assert "usage: python -m benchmarks" in out and "--quick" in out
