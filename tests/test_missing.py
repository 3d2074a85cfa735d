"""Missing values (issue 18): EM that marginalises NaN entries, imputation, bad inputs.

The reference is a float64 NumPy transcription of Ghahramani & Jordan's EM, row by row with
explicit Σ_oo solves (no precision tricks), written here independently of gmmjax.missing.
One small data set (N=60, D=4, K=3) is shared so few programs are compiled.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

import gmmjax as gj

N, D, K = 60, 4, 3
TYPES = ("full", "tied", "diag", "spherical")
EPS = 10 * np.finfo(np.float64).eps


# ---------------------------------------------------------------------- the NumPy reference

def _dense_covariances(cov, covariance_type):
    cov = np.asarray(cov, np.float64)
    return {"full": lambda: cov, "tied": lambda: np.broadcast_to(cov, (K, D, D)),
            "diag": lambda: np.stack([np.diag(c) for c in cov]),
            "spherical": lambda: np.stack([np.eye(D) * c for c in cov])}[covariance_type]()


def ref_e_step(X, weights, means, covs):
    """Per row and component: log π_k N(x_o | μ_o, Σ_oo), completed row, conditional covariance."""
    n = X.shape[0]
    lp = np.zeros((n, K))
    xhat = np.zeros((K, n, D))
    ccov = np.zeros((K, n, D, D))
    for i in range(n):
        o = ~np.isnan(X[i])
        m = ~o
        for k in range(K):
            s, mu = covs[k], means[k]
            s_oo = s[np.ix_(o, o)]
            diff = X[i, o] - mu[o]
            sol = np.linalg.solve(s_oo, diff) if o.any() else diff
            quad = diff @ sol
            logdet = np.linalg.slogdet(s_oo)[1] if o.any() else 0.0
            lp[i, k] = np.log(weights[k]) - 0.5 * (o.sum() * np.log(2 * np.pi) + logdet + quad)
            xhat[k, i] = X[i]
            xhat[k, i, m] = mu[m] + s[np.ix_(m, o)] @ sol
            s_mo = s[np.ix_(m, o)]
            cond = s[np.ix_(m, m)] - (s_mo @ np.linalg.solve(s_oo, s_mo.T) if o.any() else 0.0)
            ccov[k, i][np.ix_(m, m)] = cond
    norm = logsumexp(lp, axis=1)
    return np.exp(lp - norm[:, None]), norm, xhat, ccov


def ref_em_step(X, params, covariance_type, reg, w):
    """One EM step -> (weights, means, covariances, mean observed-data log-lik of ``params``)."""
    weights, means, cov = (np.asarray(a, np.float64) for a in params)
    resp, norm, xhat, ccov = ref_e_step(X, weights, means,
                                        _dense_covariances(cov, covariance_type))
    w = np.where(np.isnan(X).all(axis=1), 0.0, w)        # rows with nothing observed: no weight
    loglik = np.sum(w * norm) / np.sum(w)
    r = resp * w[:, None]
    nk = r.sum(0) + EPS
    mu = np.einsum("nk,knd->kd", r, xhat) / nk[:, None]
    scat = np.stack([(np.einsum("n,nd,ne->de", r[:, k], xhat[k] - mu[k], xhat[k] - mu[k])
                      + np.einsum("n,nde->de", r[:, k], ccov[k])) / nk[k] for k in range(K)])
    new = {"full": lambda: scat + reg * np.eye(D),
           "tied": lambda: np.einsum("k,kde->de", nk, scat) / nk.sum() + reg * np.eye(D),
           "diag": lambda: np.diagonal(scat, axis1=1, axis2=2) + reg,
           "spherical": lambda: np.diagonal(scat, axis1=1, axis2=2).mean(1) + reg}[
        covariance_type]()
    return (nk / nk.sum(), mu, new), loglik


def ref_impute(X, params, covariance_type):
    weights, means, cov = (np.asarray(a, np.float64) for a in params)
    resp, norm, xhat, _ = ref_e_step(X, weights, means, _dense_covariances(cov, covariance_type))
    return np.where(np.isnan(X), np.einsum("nk,knd->nd", resp, xhat), X), norm, resp


# ---------------------------------------------------------------------- data and shared fits

def _data(seed=0, frac=0.25):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0, 0, 0], [4, 4, 0, -2], [-3, 5, 3, 1]])
    mix = rng.normal(size=(D, D)) * 0.4 + np.eye(D)
    x = centres[rng.integers(0, K, N)] + rng.normal(size=(N, D)) @ mix
    x[rng.random((N, D)) < frac] = np.nan
    x[7] = np.nan                                            # a row with nothing observed
    return x


X = _data()


def _start(covariance_type):
    with jax.enable_x64(True):
        return gj.fit(jax.random.key(1), np.nan_to_num(X), K, covariance_type=covariance_type,
                      max_iter=1).params


@pytest.fixture(scope="module")
def starts():
    return {ct: _start(ct) for ct in TYPES}


def _fit(x, init, covariance_type, **kw):
    kw = {"max_iter": 30, "tol": 0.0, "missing": "marginalize", **kw}
    return gj.fit(jax.random.key(0), x, K, covariance_type=covariance_type, init=init, **kw)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_em_matches_numpy_reference(covariance_type, starts):
    """30 iterations from one start: parameters to 1e-8, observed-data log-lik to 1e-10; the
    bound never decreases."""
    start = starts[covariance_type]
    with jax.enable_x64(True):
        res = jax.device_get(_fit(jnp.asarray(X), start, covariance_type))
    params = (start.weights, start.means, start.covariances)
    bounds = []
    for _ in range(30):
        params, ll = ref_em_step(X, params, covariance_type, 1e-6, np.ones(N))
        bounds.append(ll)
    np.testing.assert_allclose(res.lower_bounds, bounds, rtol=0, atol=1e-10)
    for got, want in zip((res.params.weights, res.params.means, res.params.covariances), params):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-8)
    assert int(res.n_iter) == 30
    assert np.all(np.diff(res.lower_bounds) >= -1e-12)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_impute_and_density_match_reference(covariance_type, starts):
    p = starts[covariance_type]
    want, norm, resp = ref_impute(X, (p.weights, p.means, p.covariances), covariance_type)
    with jax.enable_x64(True):
        got = np.asarray(gj.impute(p, X))
        got_chunked = np.asarray(gj.impute(p, X, chunk_size=16))
        lp = np.asarray(gj.log_prob(p, X, missing="marginalize", chunk_size=16))
        pr = np.asarray(gj.predict_proba(p, X, missing="marginalize"))
        labels = np.asarray(gj.predict(p, X, missing="marginalize"))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    np.testing.assert_allclose(got_chunked, want, rtol=0, atol=1e-10)
    obs = ~np.isnan(X)
    assert np.array_equal(got[obs], X[obs])                  # observed entries bit for bit
    np.testing.assert_allclose(lp, norm, rtol=0, atol=1e-10)
    np.testing.assert_allclose(pr, resp, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(labels, np.argmax(resp, axis=1))
    # the row with nothing observed: density 1, responsibilities π, imputed as the mixture mean
    assert lp[7] == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(pr[7], p.weights, atol=1e-12)
    np.testing.assert_allclose(got[7], np.asarray(p.weights) @ np.asarray(p.means), atol=1e-12)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_impute_draws_follow_the_conditional(covariance_type, starts):
    """Draws for copies of one row: mean and covariance of the component's conditional (a
    one-component mixture, so the posterior is trivial)."""
    p = starts[covariance_type]
    one = gj.MixtureParams(jnp.ones(1), p.means[:1], p.covariances[:1], p.precisions_cholesky[:1],
                           covariance_type)
    row = np.array([0.5, np.nan, -0.3, np.nan])
    rows = np.tile(row, (4000, 1))
    with jax.enable_x64(True):
        draws = np.asarray(gj.impute(one, rows, key=jax.random.key(3)))
        again = np.asarray(gj.impute(one, rows, key=jax.random.key(3)))
    m, o = np.isnan(row), ~np.isnan(row)
    s = _dense_covariances(one.covariances, covariance_type)[0]
    mu = np.asarray(one.means[0])
    cmean = mu[m] + s[np.ix_(m, o)] @ np.linalg.solve(s[np.ix_(o, o)], row[o] - mu[o])
    ccov = s[np.ix_(m, m)] - s[np.ix_(m, o)] @ np.linalg.solve(s[np.ix_(o, o)], s[np.ix_(o, m)])
    assert np.array_equal(draws, again)
    assert np.array_equal(draws[:, o], rows[:, o])
    se = np.sqrt(np.diag(ccov) / len(rows))
    assert np.all(np.abs(draws[:, m].mean(0) - cmean) < 5 * se)
    np.testing.assert_allclose(np.cov(draws[:, m].T), ccov, atol=0.15 * np.max(np.diag(ccov)))


def test_no_missing_values_gives_todays_fit():
    """Complete data: the missing-value kernel (forced under jit, where values are unknown)
    equals the plain fit to 1e-12; concrete complete data take the plain program."""
    x = np.nan_to_num(X[np.isfinite(X).all(axis=1)])
    with jax.enable_x64(True):
        plain = gj.fit(jax.random.key(0), x, K, max_iter=10, tol=0.0)
        kernel = jax.jit(lambda a: gj.fit(jax.random.key(0), a, K, max_iter=10, tol=0.0,
                                          missing="marginalize"))(x)
        lp = jax.jit(lambda a: gj.log_prob(plain.params, a, missing="marginalize"))(x)
        same = gj.fit(jax.random.key(0), x, K, max_iter=10, tol=0.0, missing="marginalize")
        lp_plain = gj.log_prob(plain.params, x)
    for a, b in zip(jax.tree_util.tree_leaves(kernel), jax.tree_util.tree_leaves(plain)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    for a, b in zip(jax.tree_util.tree_leaves(same), jax.tree_util.tree_leaves(plain)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(lp, lp_plain, rtol=0, atol=1e-12)


def test_chunking_vmap_weights_and_empty_rows_agree(starts):
    """chunk_size, vmap over data sets, and dropping the empty row give the plain call's fit;
    a row with nothing observed has no influence (weight 0), and weights act as repeats."""
    start = starts["full"]
    with jax.enable_x64(True):
        whole = _fit(X, start, "full", max_iter=5)
        chunked = _fit(X, start, "full", max_iter=5, chunk_size=16)
        dropped = _fit(np.delete(X, 7, axis=0), start, "full", max_iter=5)
        batched = jax.vmap(lambda a: _fit(a, start, "full", max_iter=5))(jnp.stack([X, X[::-1]]))
        w = np.r_[np.full(10, 2.0), np.ones(N - 10)]
        weighted = _fit(X, start, "full", max_iter=5, sample_weight=w)
        repeated = _fit(np.concatenate([X[:10], X]), start, "full", max_iter=5)
    for other in (chunked, dropped, jax.tree_util.tree_map(lambda a: a[0], batched),
                  jax.tree_util.tree_map(lambda a: a[1], batched)):
        for a, b in zip(jax.tree_util.tree_leaves(other), jax.tree_util.tree_leaves(whole)):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)
    for a, b in zip(jax.tree_util.tree_leaves(weighted.params),
                    jax.tree_util.tree_leaves(repeated.params)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)
    assert np.all(np.isfinite(whole.params.covariances))


@pytest.mark.parametrize("init", ["kmeans", "random_from_data"])
def test_float32_every_init_and_restarts_finite(init):
    x32 = X.astype(np.float32)
    res = gj.fit(jax.random.key(0), x32, K, init=init, n_init=2, missing="marginalize")
    assert res.params.means.dtype == jnp.float32
    assert int(res.status) in (gj.Status.CONVERGED, gj.Status.MAX_ITER_REACHED)
    for leaf in jax.tree_util.tree_leaves(res.params):
        assert np.all(np.isfinite(leaf))
    imputed = gj.impute(res.params, x32)
    assert imputed.dtype == jnp.float32 and np.all(np.isfinite(imputed))


def test_bad_inputs():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="contains NaN"):
        gj.fit(key, X, K)                                    # default: NaN is an error
    with pytest.raises(ValueError, match="contains NaN"):
        gj.log_prob(_start("diag"), X)
    with pytest.raises(ValueError, match="missing must be one of"):
        gj.fit(key, X, K, missing="drop")
    bad = X.copy()
    bad[:, 2] = np.nan
    with pytest.raises(ValueError, match=r"no observed value in column\(s\) \[2\]"):
        gj.fit(key, bad, K, missing="marginalize")
    assert np.all(np.isfinite(gj.impute(_start("diag"), bad)))   # the params know column 2
    inf = X.copy()
    inf[0, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        gj.fit(key, inf, K, missing="marginalize")
    with pytest.raises(ValueError, match="infinity"):
        gj.impute(_start("diag"), inf)
    few = np.full((5, D), np.nan)
    few[:2] = 1.0
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        gj.fit(key, few, K, missing="marginalize")           # only 2 rows carry information
    with pytest.raises(ValueError, match="features"):
        gj.impute(_start("diag"), X[:, :3])


def test_unsupported_paths_say_so():
    key = jax.random.key(0)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    with pytest.raises(ValueError, match="not supported with missing values yet"):
        gj.fit(key, X, K, missing="marginalize", mesh=mesh, data_axis="data")


# ---------------------------------------------------------------------- estimators and CLI

def test_estimator_missing_option_and_impute():
    """GaussianMixture(missing=...) : NaN is sklearn's ValueError by default; with "marginalize"
    fit/score_samples/predict_proba follow the functional API and impute() fills NaN."""
    with pytest.raises(ValueError, match="NaN"):
        gj.GaussianMixture(K).fit(X)
    est = gj.GaussianMixture(K, covariance_type="diag", missing="marginalize", random_state=0,
                             max_iter=20).fit(X)
    p = est.params_
    with jax.enable_x64(True):
        np.testing.assert_allclose(est.score_samples(X), gj.log_prob(p, X, missing="marginalize"),
                                   rtol=0, atol=1e-10)
        np.testing.assert_allclose(est.predict_proba(X),
                                   gj.predict_proba(p, X, missing="marginalize"),
                                   rtol=0, atol=1e-10)
        np.testing.assert_allclose(est.impute(X), gj.impute(p, X), rtol=0, atol=1e-10)
    assert est.score(X) == pytest.approx(np.mean(est.score_samples(X)))
    np.testing.assert_array_equal(est.fit_predict(X), est.predict(X))
    drawn = est.impute(X, random_state=1)
    assert np.array_equal(drawn[~np.isnan(X)], X[~np.isnan(X)]) and np.all(np.isfinite(drawn))


def test_imputer_transformer_pipeline_clone():
    from sklearn.base import clone
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    imp = gj.GaussianMixtureImputer(K, covariance_type="diag", random_state=0, max_iter=20)
    out = imp.fit_transform(X)
    assert out.shape == X.shape and np.all(np.isfinite(out))
    assert np.array_equal(out[~np.isnan(X)], X[~np.isnan(X)])
    np.testing.assert_allclose(out, imp.mixture_.impute(X), rtol=0, atol=0)
    np.testing.assert_array_equal(imp.get_feature_names_out(), [f"x{i}" for i in range(D)])
    again = clone(imp).fit(X).transform(X)
    np.testing.assert_array_equal(again, out)
    y = np.nan_to_num(X[:, 0])
    pipe = make_pipeline(clone(imp), LinearRegression()).fit(X, y)
    assert np.all(np.isfinite(pipe.predict(X)))
    multi = gj.GaussianMixtureImputer(K, covariance_type="diag", sample_posterior=True,
                                      random_state=0, max_iter=20).fit(X)
    a, b = multi.transform(X), multi.transform(X)
    np.testing.assert_array_equal(a, b)                       # an int seed repeats its draws
    assert not np.array_equal(a, out)


def test_imputer_check_estimator():
    from sklearn.utils.estimator_checks import check_estimator
    check_estimator(gj.GaussianMixtureImputer(1, covariance_type="diag", max_iter=5))


def test_cli_missing(tmp_path, capsys):
    from gmmjax import cli
    cells = np.where(np.isnan(X[:40]), "", np.char.mod("%.6f", X[:40]))
    cells[::5, 1] = np.where(np.isnan(X[:40:5, 1]), "NA", cells[::5, 1])
    rows = [",".join(r) for r in cells]
    data = tmp_path / "holes.csv"
    data.write_text("a,b,c,d\n" + "\n".join(rows) + "\n")
    model = tmp_path / "m.npz"
    assert cli.main(["fit", str(data), "-k", "2", "--quiet"]) != 0   # holes are an error
    assert cli.main(["fit", str(data), "-k", "1-2", "--covariance-type", "diag",
                     "--missing", "marginalize", "--quiet", "--out", str(model)]) == 0
    assert cli.main(["score", str(model), str(data), "--missing", "marginalize"]) == 0
    out = capsys.readouterr().out
    params = cli.load_model(str(model))
    parsed = cli.load_data(str(data), missing=True)
    assert np.array_equal(np.isnan(parsed), np.isnan(X[:40]))      # "", NA -> missing
    want = float(np.mean(gj.log_prob(params, parsed.astype(np.float32), missing="marginalize")))
    got = float(out.split("mean log-likelihood:")[1].split()[0])
    assert got == pytest.approx(want, rel=1e-6)


def test_other_fits_say_missing_values_are_not_supported():
    key = jax.random.key(0)
    msg = "not supported with missing values yet"
    with pytest.raises(ValueError, match=msg):
        gj.fit_many(key, [X, X], K)
    with pytest.raises(ValueError, match=msg):
        gj.select_model(key, X, [1, 2])
    with pytest.raises(ValueError, match=msg):
        gj.fit_bayesian(key, X, K)
    with pytest.raises(ValueError, match=msg):
        gj.fit_stream(key, gj.array_chunks(X, 20), K)


def test_init_responsibilities_follow_their_rows():
    """fit sorts rows by their count of NaN entries inside the program; given initial
    responsibilities are reordered with them: permuting rows and resp alike changes nothing."""
    rng = np.random.default_rng(5)
    resp = rng.uniform(size=(2, len(X), 3))
    resp /= resp.sum(-1, keepdims=True)
    perm = rng.permutation(len(X))
    with jax.enable_x64(True):
        a = gj.fit(jax.random.key(0), X, 3, init=resp, n_init=2, missing="marginalize")
        b = gj.fit(jax.random.key(0), X[perm], 3, init=resp[:, perm], n_init=2,
                   missing="marginalize")
        np.testing.assert_allclose(a.restart_lower_bounds, b.restart_lower_bounds, rtol=1e-10)
        np.testing.assert_allclose(a.params.means, b.params.means, rtol=1e-8, atol=1e-10)
        shuffled = gj.fit(jax.random.key(0), X, 3, init=resp[:, perm], n_init=2,
                          missing="marginalize")
        assert not np.allclose(shuffled.restart_lower_bounds, a.restart_lower_bounds)


def test_host_rows_with_nan_compile_only_their_programs(caplog):
    """NumPy rows with NaN stay on the host (validation, the slot count, informative weights,
    padding) until a program takes them: a functional fit, impute and log_prob with missing
    entries, and the imputer estimator, compile their programs and no eager XLA op; the
    functional and estimator imputations agree."""
    import logging
    rng = np.random.default_rng(11)
    x = rng.normal(size=(611, 3)).astype(np.float32) + np.array([0.0, 3.0, -2.0], np.float32)
    x[rng.random(x.shape) < 0.15] = np.nan
    x[7] = np.nan                                      # a row with no observed entry
    key = jax.block_until_ready(jax.random.key(2))
    with caplog.at_level(logging.WARNING), jax.log_compiles(True):
        res = gj.fit(key, x, 2, covariance_type="diag", missing="marginalize", max_iter=15)
        filled = gj.impute(res.params, x)
        dens = gj.log_prob(res.params, x, missing="marginalize")
        est = gj.GaussianMixtureImputer(n_components=2, covariance_type="diag", max_iter=15,
                                        random_state=0)
        out = est.fit_transform(x)
    compiled = {r.getMessage().split()[1] for r in caplog.records
                if r.getMessage().startswith("Compiling ")}
    assert compiled <= {"jit(_fit_program)", "jit(_evaluate)"}, compiled
    filled, dens = np.asarray(filled), np.asarray(dens)
    observed = ~np.isnan(x)
    assert np.array_equal(filled[observed], x[observed]) and np.all(np.isfinite(filled))
    assert np.all(np.isfinite(dens)) and dens[7] == 0.0
    ref = np.asarray(gj.impute(est.mixture_.params_, x))
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
