"""Gaussian KDE: functional ``kde_log_prob`` / ``kde_sample`` and the ``KernelDensity`` estimator,
against ``sklearn.neighbors.KernelDensity`` (exact: atol = rtol = 0)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.neighbors import KernelDensity as SkKernelDensity
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

import gmmjax
from gmmjax import KernelDensity, kde_bandwidth, kde_log_prob, kde_sample
from gmmjax.kde import _kde_program

RNG = np.random.default_rng(42)
TRAIN = RNG.normal(size=(150, 2)) * np.array([1.0, 0.5]) + np.array([3.0, -1.0])
QUERY = RNG.normal(size=(40, 2)) * 1.5 + np.array([3.0, -1.0])
WEIGHTS = RNG.uniform(0.2, 2.0, size=150)


@pytest.mark.parametrize("bandwidth", [0.4, "scott", "silverman"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("chunks", [(None, None), (16, 32)])
def test_log_prob_matches_sklearn(x64, bandwidth, weighted, chunks):
    w = WEIGHTS if weighted else None
    ref = SkKernelDensity(bandwidth=bandwidth).fit(TRAIN, sample_weight=w).score_samples(QUERY)
    got = kde_log_prob(TRAIN, QUERY, bandwidth, sample_weight=w, query_chunk=chunks[0],
                       train_chunk=chunks[1])
    assert got.dtype == jnp.float64 and got.shape == (40,)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=0, atol=1e-6)


def test_bandwidth_rules_match_sklearn():
    for rule in ("scott", "silverman"):
        sk = SkKernelDensity(bandwidth=rule).fit(TRAIN)
        assert kde_bandwidth(*TRAIN.shape, rule) == pytest.approx(sk.bandwidth_, rel=1e-14)
    assert kde_bandwidth(10, 2, 0.3) == 0.3


def test_float32_path_and_zero_weight_rows():
    x32, q32 = TRAIN.astype(np.float32), QUERY.astype(np.float32)
    got = kde_log_prob(x32, q32, 0.4)
    assert got.dtype == jnp.float32
    ref = SkKernelDensity(bandwidth=0.4).fit(TRAIN).score_samples(QUERY)
    np.testing.assert_allclose(np.asarray(got), ref, atol=2e-4)
    # zero weight == row removed
    w = np.ones(150, np.float32)
    w[100:] = 0
    np.testing.assert_allclose(np.asarray(kde_log_prob(x32, q32, 0.4, sample_weight=w)),
                               np.asarray(kde_log_prob(x32[:100], q32, 0.4)), atol=1e-5)


def test_far_queries_stay_finite(x64):
    far = np.array([[60.0, 60.0]])
    got = float(kde_log_prob(TRAIN, far, 0.4)[0])
    # the log density is the log-sum-exp of the kernels, finite even where every kernel underflows
    d2 = np.sum((TRAIN - far) ** 2, axis=1)
    expected = np.logaddexp.reduce(-d2 / (2 * 0.16)) - np.log(150) - np.log(2 * np.pi * 0.16)
    assert np.isfinite(got) and got == pytest.approx(expected, rel=1e-10)


def test_memory_bounded_for_1e6_queries_by_1e5_points():
    """Compile (not run) the program for 1e6 queries × 1e5 training points: its temporaries
    are those of one query_chunk × train_chunk block, not of the 1e11-element kernel matrix."""
    q = jax.ShapeDtypeStruct((1_000_448, 3), jnp.float32)      # padded to a multiple of 1024
    t = jax.ShapeDtypeStruct((102_400, 3), jnp.float32)        # padded to a multiple of 4096
    w = jax.ShapeDtypeStruct((102_400,), jnp.float32)
    h = jax.ShapeDtypeStruct((), jnp.float32)
    compiled = _kde_program.lower(q, t, w, h, query_chunk=1024, train_chunk=4096).compile()
    mem = compiled.memory_analysis()
    if mem is None:
        pytest.skip("memory_analysis unavailable on this backend")
    assert mem.temp_size_in_bytes < 256 * 2**20    # ≪ 4e11 bytes for the full matrix


def test_sample_statistics(x64):
    draws = np.asarray(kde_sample(jax.random.key(0), TRAIN, 0.3, 4000))
    assert draws.shape == (4000, 2) and draws.dtype == np.float64
    np.testing.assert_allclose(draws.mean(0), TRAIN.mean(0), atol=0.06)
    # all weight on one row: draws are N(x0, h² I)
    w = np.zeros(150)
    w[7] = 1.0
    one = np.asarray(kde_sample(jax.random.key(1), TRAIN, 0.3, 4000, sample_weight=w))
    np.testing.assert_allclose(one.mean(0), TRAIN[7], atol=0.03)
    np.testing.assert_allclose(one.std(0), [0.3, 0.3], rtol=0.06)


def test_estimator_matches_sklearn():
    for bandwidth in (0.4, "silverman"):
        ours = KernelDensity(bandwidth=bandwidth).fit(TRAIN, sample_weight=WEIGHTS)
        ref = SkKernelDensity(bandwidth=bandwidth).fit(TRAIN, sample_weight=WEIGHTS)
        assert ours.bandwidth_ == pytest.approx(ref.bandwidth_, rel=1e-14)
        got = ours.score_samples(QUERY)
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, ref.score_samples(QUERY), atol=1e-6)
        assert ours.score(QUERY) == pytest.approx(ref.score(QUERY), abs=1e-5)
    assert gmmjax.KernelDensity is KernelDensity


def test_estimator_sample_reproducible():
    kde = KernelDensity(bandwidth=0.3, random_state=0).fit(TRAIN)
    a, b = kde.sample(5), kde.sample(5)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (5, 2) and a.dtype == np.float64
    assert not np.array_equal(kde.sample(5, random_state=1), a)


@pytest.mark.parametrize("bad", [0.0, -1.0, "auto", None])
def test_bad_bandwidth(bad):
    with pytest.raises(InvalidParameterError):
        KernelDensity(bandwidth=bad).fit(TRAIN)
    with pytest.raises(ValueError, match="bandwidth"):
        kde_log_prob(TRAIN, QUERY, bad)


def test_bad_inputs():
    with pytest.raises(InvalidParameterError):
        KernelDensity(kernel="tophat").fit(TRAIN)
    with pytest.raises(InvalidParameterError):
        KernelDensity(metric="manhattan").fit(TRAIN)
    with pytest.raises(ValueError, match="features"):
        kde_log_prob(TRAIN, QUERY[:, :1], 0.5)
    with pytest.raises(ValueError, match="features"):
        KernelDensity().fit(TRAIN).score_samples(QUERY[:, :1])
    with pytest.raises(ValueError, match="non-negative|negative"):
        kde_log_prob(TRAIN, QUERY, 0.5, sample_weight=-WEIGHTS)
    with pytest.raises(ValueError):
        KernelDensity().fit(TRAIN, sample_weight=-WEIGHTS)
    with pytest.raises(ValueError, match="non-zero|sums to zero"):
        KernelDensity().fit(TRAIN, sample_weight=np.zeros(150))
    with pytest.raises(ValueError, match="query_chunk"):
        kde_log_prob(TRAIN, QUERY, 0.5, query_chunk=0)
    with pytest.raises(ValueError, match="n_samples"):
        KernelDensity().fit(TRAIN).sample(-1)
    with pytest.raises(ValueError, match="n_samples"):
        kde_sample(jax.random.key(0), TRAIN, 0.5, 0)
    with pytest.raises(ValueError, match="NaN"):
        kde_log_prob(TRAIN, np.full((2, 2), np.nan), 0.5)


@parametrize_with_checks([KernelDensity()])
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_estimator_sample_zero_is_empty():
    """scikit-learn returns an empty (0, D) array."""
    ref = SkKernelDensity().fit(TRAIN).sample(0)
    got = KernelDensity().fit(TRAIN).sample(0)
    assert got.shape == ref.shape == (0, 2) and got.dtype == ref.dtype


@pytest.mark.parametrize("scale", [1e20, 1e-20])
def test_float32_extreme_scales_stay_finite(scale):
    """Data and bandwidth scaled together: float32 scores shift by −D·log(scale), never NaN."""
    train, query = TRAIN.astype(np.float32), QUERY.astype(np.float32)
    ref = KernelDensity(bandwidth=0.4).fit(train).score_samples(query)
    got = KernelDensity(bandwidth=0.4 * scale).fit(train * np.float32(scale)).score_samples(
        query * np.float32(scale))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref - 2 * np.log(scale), rtol=1e-5)


def test_float32_too_many_bandwidths_away_is_refused():
    with pytest.raises(ValueError, match="bandwidths from the training mean"):
        kde_log_prob(TRAIN.astype(np.float32), QUERY.astype(np.float32) * 1e25, 1e-10)


@pytest.mark.parametrize("weighted", [False, True])
def test_first_calls_compile_only_their_program(weighted, caplog):
    """NumPy training points, queries and weights stay on the host (padding, the span check)
    until the program takes them: new shapes compile the KDE program and no eager XLA op; the
    results equal scikit-learn's and a traced call (under jit) gives the same values."""
    import logging
    rng = np.random.default_rng(int(weighted))
    train = rng.normal(size=(173 + int(weighted), 3)).astype(np.float32)
    query = rng.normal(size=(59, 3)).astype(np.float32)
    w = rng.uniform(0.2, 2.0, size=len(train)).astype(np.float32) if weighted else None
    key = jax.block_until_ready(jax.random.key(0))       # (the caller's own key: not counted)
    with caplog.at_level(logging.WARNING), jax.log_compiles(True):
        got = kde_log_prob(train, query, 0.7, sample_weight=w)
        draws = kde_sample(key, train, 0.7, 11, sample_weight=w)
        est = KernelDensity(bandwidth=0.7).fit(train, sample_weight=w)
        scores = est.score_samples(query)
        est.sample(5, random_state=0)
    compiled = {r.getMessage().split()[1] for r in caplog.records
                if r.getMessage().startswith("Compiling ")}
    assert compiled <= {"jit(_kde_program)", "jit(_kde_sample)", "jit(_threefry_seed)",
                        "jit(_threefry_split)", "jit(random_bits)", "jit(_uniform)",
                        "jit(_normal)"}, compiled
    assert isinstance(got, jax.Array) and got.shape == (59,) and draws.shape == (11, 3)
    ref = SkKernelDensity(bandwidth=0.7).fit(train.astype(np.float64), sample_weight=w)
    np.testing.assert_allclose(np.asarray(got), ref.score_samples(query.astype(np.float64)),
                               rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(scores, np.asarray(got), rtol=1e-6)
    traced = jax.jit(lambda t, q: kde_log_prob(t, q, 0.7, sample_weight=w))(train, query)
    np.testing.assert_allclose(np.asarray(traced), np.asarray(got), rtol=1e-6)
