"""fit_stream: exact streamed EM equals the in-memory fit; one compile for all chunks."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

import gmmjax as gj
from gmmjax import streaming
from gmmjax.streaming import array_chunks, fit_stream

N, D, K = 201, 2, 3


def _data(dtype=np.float32):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(90, D)) + 4, rng.normal(size=(71, D)) - 3,
                        0.5 * rng.normal(size=(40, D))]).astype(dtype)
    w = rng.uniform(0.2, 2.0, size=N).astype(dtype)
    return x, w


def _close(a, b, rtol):
    assert abs(float(a.lower_bound) - float(b.lower_bound)) <= rtol * abs(float(b.lower_bound))
    assert int(a.n_iter) == int(b.n_iter) and int(a.status) == int(b.status)
    np.testing.assert_allclose(np.asarray(a.params.means), np.asarray(b.params.means),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(a.params.covariances),
                               np.asarray(b.params.covariances), rtol=1e-3, atol=1e-4)


@pytest.fixture(scope="module")
def memmap_file(tmp_path_factory):
    x, _ = _data()
    path = tmp_path_factory.mktemp("stream") / "x.f32"
    x.tofile(path)
    return path


def test_memmap_ragged_last_chunk_equals_fit_with_one_compile(memmap_file):
    x, _ = _data()
    mm = np.memmap(memmap_file, dtype=np.float32, mode="r", shape=(N, D))
    key = jax.random.key(0)
    streaming._accumulate.clear_cache()
    res = fit_stream(key, array_chunks(mm, 64), K)      # 201 = 3 x 64 + 9: last chunk padded
    assert streaming._accumulate._cache_size() == 1
    ref = gj.fit(key, x, K)
    _close(res, ref, 1e-5)
    assert res.params.means.dtype == jnp.float32


@pytest.mark.parametrize("n_init", [1, 3])
def test_first_call_compiles_only_its_own_programs(memmap_file, n_init, caplog):
    """The host glue (carries, zero statistics, scalars, the best restart, the result) stays in
    NumPy and moves with device_put: a first call compiles fit_stream's programs and no eager
    XLA op (each of which was a ~10-40 ms compile on CPU); the result equals fit's and is on
    the device, as fit's is."""
    import logging
    x, _ = _data()
    mm = np.memmap(memmap_file, dtype=np.float32, mode="r", shape=(N, D))
    key = jax.random.key(5)
    jax.block_until_ready(key)
    for program in (streaming._seed_words, streaming._init_program, streaming._accumulate,
                    streaming._em_update):
        program.clear_cache()
    with caplog.at_level(logging.WARNING), jax.log_compiles(True):
        res = fit_stream(key, array_chunks(mm, 67), K, n_init=n_init)
    compiled = {r.getMessage().split()[1] for r in caplog.records
                if r.getMessage().startswith("Compiling ")}
    assert compiled <= {"jit(_seed_words)", "jit(_init_program)", "jit(_accumulate)",
                        "jit(_em_update)"}, compiled
    assert all(isinstance(a, jax.Array) for a in jax.tree_util.tree_leaves(res))
    assert res.restart_lower_bounds.shape == (n_init,)
    assert float(res.lower_bound) == float(np.max(np.asarray(res.restart_lower_bounds)))
    assert res.converged.dtype == bool and res.status.dtype == jnp.int32
    if n_init == 1:
        _close(res, gj.fit(key, x, K), 1e-5)


def test_given_params_weighted_ragged_generator_restarts_and_prefetch():
    x, w = _data()
    key = jax.random.key(1)
    p0 = gj.from_covariances(jnp.array([0.3, 0.3, 0.4], jnp.float32),
                             jnp.array([[3.0, 3.0], [-2.0, -2.0], [0.0, 1.0]], jnp.float32),
                             jnp.ones((K, D), jnp.float32), "diag")
    stack = jax.tree_util.tree_map(lambda a: jnp.stack([a, a * 1.0001]), p0)
    sizes = [50, 13, 77, 61]   # ragged chunks; every one padded to the largest (77)
    bounds = np.cumsum([0] + sizes)

    def chunks():
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            yield x[lo:hi], w[lo:hi]

    ref = gj.fit(key, x, K, covariance_type="diag", init=stack, n_init=2, sample_weight=w,
                 tol=1e-6)
    for prefetch in (0, 2):
        res = fit_stream(key, chunks, K, covariance_type="diag", init=stack, n_init=2, tol=1e-6,
                         prefetch=prefetch)
        _close(res, ref, 1e-5)
        np.testing.assert_allclose(np.asarray(res.restart_lower_bounds),
                                   np.asarray(ref.restart_lower_bounds), rtol=1e-5)


def test_reservoir_init_when_data_exceed_the_sample(capsys):
    x, _ = _data()
    key = jax.random.key(2)
    res = fit_stream(key, array_chunks(x, 64), K, sample_size=100, tol=1e-6, verbose=True)
    ref = gj.fit(key, x, K, tol=1e-6)
    # a different (sampled) start, the same well-separated optimum
    assert abs(float(res.lower_bound) - float(ref.lower_bound)) < 1e-3
    out = capsys.readouterr().out
    assert "first pass 201 rows" in out and "pass 1: lower bound" in out


def test_float64_stream_equals_fit():
    with jax.enable_x64(True):
        x, _ = _data(np.float64)
        key = jax.random.key(3)
        res = fit_stream(key, array_chunks(x, 100), K, covariance_type="spherical",
                         init="k-means++", tol=1e-8)
        ref = gj.fit(key, x, K, covariance_type="spherical", init="k-means++", tol=1e-8)
        assert res.params.means.dtype == jnp.float64
        _close(res, ref, 1e-7)   # float64: far tighter than float32 (summation order only)


def test_bad_inputs():
    x, _ = _data()
    key = jax.random.key(0)
    with pytest.raises(TypeError, match="callable"):
        fit_stream(key, [x], K)
    with pytest.raises(ValueError, match="no data"):
        fit_stream(key, lambda: iter([]), K)
    with pytest.raises(ValueError, match="features"):
        fit_stream(key, lambda: iter([x, x[:, :1]]), K)
    with pytest.raises(ValueError, match="2-D"):
        fit_stream(key, lambda: iter([x[:, 0]]), K)
    with pytest.raises(ValueError, match="NaN"):
        fit_stream(key, lambda: iter([np.where(x > 3, np.nan, x)]), K)
    with pytest.raises(ValueError, match="non-negative"):
        fit_stream(key, lambda: iter([(x, -np.ones(N))]), K)
    with pytest.raises(ValueError, match="shape"):
        fit_stream(key, lambda: iter([(x, np.ones(N - 1))]), K)
    with pytest.raises(ValueError, match="sums to zero"):
        fit_stream(key, lambda: iter([(x, np.zeros(N))]), K)
    with pytest.raises(ValueError, match="n_components"):
        fit_stream(key, lambda: iter([x[:2]]), K)
    with pytest.raises(ValueError, match="Unknown init"):
        fit_stream(key, lambda: iter([x]), K, init="bogus")
    with pytest.raises(ValueError, match="n_components"):
        fit_stream(key, lambda: iter([x]), 0)
    with pytest.raises(ValueError, match="chunk_size"):
        array_chunks(x, 0)


def test_errors_from_the_iterator_propagate():
    x, _ = _data()

    def chunks():
        yield x
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        fit_stream(jax.random.key(0), chunks, K)
