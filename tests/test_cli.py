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
    # the CLI centres in float64 before narrowing: equal up to float32 rounding
    np.testing.assert_allclose(params.means, np.asarray(sel.params.means), rtol=1e-6, atol=1e-5)
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


@pytest.fixture(scope="module")
def offset_files(tmp_path_factory):
    """Two clusters, saved as is and shifted by 1e8 (float32 steps of 8 there)."""
    d = tmp_path_factory.mktemp("offset")
    rng = np.random.default_rng(1)
    X = np.r_[rng.normal(0, 1, (80, 2)), rng.normal(0, 1, (80, 2)) + [6, 0]]
    np.save(d / "x.npy", X)
    np.save(d / "far.npy", X + 1e8)
    return d, X


def _best(out):
    line = next(ln for ln in out.splitlines() if ln.startswith("best by"))
    return line.split("n_components=")[1].split()[0], float(line.split("(BIC ")[1].rstrip(")"))


def test_offset_data_fit_like_centred_data(offset_files, capsys):
    """float32 fit of data offset by 1e8: same best K and BIC as without the offset, and the
    saved means keep the offset exactly (float64)."""
    d, X = offset_files
    code, out, err = run(capsys, "fit", d / "x.npy", "-k", "1-3", "-q", "--out", d / "m0.npz")
    assert code == 0, err
    code, far, err = run(capsys, "fit", d / "far.npy", "-k", "1-3", "-q", "--out", d / "m1.npz")
    assert code == 0, err
    (k0, bic0), (k1, bic1) = _best(out), _best(far)
    assert k0 == k1 == "2" and bic1 == pytest.approx(bic0, rel=1e-5)
    near, offset = gio.load(str(d / "m0.npz")), gio.load(str(d / "m1.npz"))
    assert np.asarray(offset.means).dtype == np.float64
    np.testing.assert_allclose(np.asarray(offset.means) - 1e8, near.means, atol=1e-4)
    for name in ("x", "far"):           # scoring the offset data under the offset model
        code, out, err = run(capsys, "score", d / f"m{int(name == 'far')}.npz", d / f"{name}.npy")
        assert code == 0, err
        scores = float(out.split("mean log-likelihood:")[1].split()[0])
        if name == "x":
            ref = scores
    assert scores == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("text, header, rows", [
    ("\ufeff1,2\n3,4\n", None, [[1, 2], [3, 4]]),             # Excel's CSV UTF-8 (a BOM)
    ("\ufeffa,b\n1,2\n", None, [[1, 2]]),
    ("a,b\n1,2\n3,4\n", None, [[1, 2], [3, 4]]),
    ("2020,2021\n1,2\n", True, [[1, 2]]),                      # a numeric header, said so
    ("2020,2021\n1,2\n", None, [[2020, 2021], [1, 2]]),
    ("1,2\n3,4\n", False, [[1, 2], [3, 4]]),
])
def test_csv_rows(tmp_path, text, header, rows):
    (tmp_path / "d.csv").write_text(text, encoding="utf-8")
    np.testing.assert_array_equal(cli.load_data(str(tmp_path / "d.csv"), header), rows)


@pytest.mark.parametrize("text, header, message", [
    ("1,x\n3,4\n", None, "non-numeric value 'x' on line 1; if it is a header row"),
    ("1,2\n3,x\n", None, "non-numeric value 'x' on line 2"),
    ("a,b\n1,2\n", False, "non-numeric value 'a' on line 1"),
])
def test_csv_bad_cell_in_any_row_is_an_error(tmp_path, text, header, message):
    (tmp_path / "d.csv").write_text(text)
    with pytest.raises(cli.CliError, match=message):
        cli.load_data(str(tmp_path / "d.csv"), header)


def test_misleading_messages(offset_files, capsys):
    d, X = offset_files
    np.save(d / "huge.npy", X * 1e38)
    code, _, err = run(capsys, "fit", d / "huge.npy", "-k", "1")
    assert code == 2 and "beyond what float32 computes safely" in err and "--float64" in err
    code, _, err = run(capsys, "fit", d / "x.npy", "-k", "1", "--reg-covar", "1e40")
    assert code == 2 and "exceeds the float32 range" in err
    (d / "dir.npz").mkdir(exist_ok=True)
    for argv in (["fit", d / "x.npy", "--out", d / "dir.npz"],
                 ["score", d / "m0.npz", d / "x.npy", "--out", d / "x.npy" / "s.npy"]):
        code, out, err = run(capsys, *argv)
        assert code == 2 and out == "" and "--out" in err   # before any work


def test_damaged_model_files(files, capsys, tmp_path):
    """A NaN weight or a truncated archive: one error line, never 'threshold nan' or a
    traceback."""
    d = files[0]
    with np.load(d / "sk.npz") as f:
        entries = {k: f[k] for k in f.files}
    entries["weights"] = np.array([np.nan, 1.0])
    np.savez(tmp_path / "nan.npz", **entries)
    raw = (d / "sk.npz").read_bytes()
    (tmp_path / "trunc.npz").write_bytes(raw[:len(raw) // 2])
    from gmmjax.estimators.kernel_density import KernelDensity
    gio.save(KernelDensity().fit(files[1]), str(tmp_path / "kde.npz"))
    for name, message in (("nan", "weights contains NaN"), ("trunc", "cannot read"),
                          ("kde", "holds a KernelDensity, not a Gaussian mixture")):
        code, out, err = run(capsys, "outliers", tmp_path / f"{name}.npz", d / "x.npy")
        assert code == 2 and out == "" and message in err and "Traceback" not in err
