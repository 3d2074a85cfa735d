"""fit_many: ragged datasets padded with zero weights and vmapped equal the single fits."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

import gmmjax as gj
from gmmjax.many import fit_many, pad_datasets

K = 3
SIZES = (201, 205, 203)    # ragged, but one padding bucket (208 rows): single fits share a compile


def _datasets(dtype):
    rng = np.random.default_rng(5)
    out = []
    for b, n in enumerate(SIZES):
        centres = np.array([[4.0, 4.0], [-3.0, -3.0], [0.0, 0.5 * b]])
        labels = rng.integers(0, 3, size=n)
        out.append((centres[labels] + rng.normal(size=(n, 2)) * (0.5 + 0.2 * b)).astype(dtype))
    return out


@pytest.mark.parametrize("covariance_type,dtype", [("full", np.float32),
                                                   ("diag", np.float64)])
def test_fit_many_equals_single_fits(covariance_type, dtype):
    with jax.enable_x64(dtype == np.float64):
        data = _datasets(dtype)
        weights = [None, np.linspace(0.5, 2.0, SIZES[1]).astype(dtype), None]
        key = jax.random.key(7)
        res = fit_many(key, data, K, sample_weights=weights, covariance_type=covariance_type)
        assert res.params.means.shape == (3, K, 2)
        assert res.params.means.dtype == dtype
        rtol = 1e-5 if dtype == np.float32 else 1e-7
        for b, x in enumerate(data):
            one = gj.fit(jax.random.fold_in(key, b), x, K, sample_weight=weights[b],
                         covariance_type=covariance_type)
            assert abs(float(res.lower_bound[b]) - float(one.lower_bound)) <= rtol * abs(
                float(one.lower_bound))
            assert int(res.n_iter[b]) == int(one.n_iter)
            np.testing.assert_allclose(np.asarray(res.params.means[b]),
                                       np.asarray(one.params.means), rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(np.asarray(res.params.covariances[b]),
                                       np.asarray(one.params.covariances), rtol=1e-3,
                                       atol=1e-4)


def test_fit_many_with_per_dataset_init_params():
    data = _datasets(np.float32)
    key = jax.random.key(8)
    starts = [gj.from_covariances(np.array([0.3, 0.3, 0.4], np.float32),
                                  np.array([[3.0, 3.0], [-2.0, -2.0], [0.0, b]], np.float32),
                                  np.stack([np.eye(2, dtype=np.float32)] * K))
              for b in range(len(data))]
    init = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *starts)
    res = fit_many(key, data, K, init=init, max_iter=4)
    for b, x in enumerate(data):
        one = gj.fit(jax.random.fold_in(key, b), x, K, init=starts[b], max_iter=4)
        assert abs(float(res.lower_bound[b]) - float(one.lower_bound)) <= 1e-5 * abs(
            float(one.lower_bound))


def test_padding_rows_have_zero_weight():
    data = _datasets(np.float32)
    X, W = pad_datasets(data)
    assert X.shape[0] == 3 and X.shape[1] >= max(SIZES)
    for b, n in enumerate(SIZES):
        assert float(jnp.sum(W[b, n:])) == 0 and bool(jnp.all(W[b, :n] == 1))
        np.testing.assert_array_equal(np.asarray(X[b, :n]), data[b])


def test_bad_inputs():
    data = _datasets(np.float32)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="same number of features"):
        fit_many(key, [data[0], data[1][:, :1]], K)
    with pytest.raises(ValueError, match="empty"):
        fit_many(key, [], K)
    with pytest.raises(ValueError, match="NaN"):
        fit_many(key, [data[0], np.full((5, 2), np.nan)], K)
    with pytest.raises(ValueError, match="tol must be a non-negative"):
        fit_many(key, data, K, tol=-1.0)                      # checked on the host
    with pytest.raises(TypeError, match="unexpected keyword"):
        fit_many(key, data, K, max_iters=3)
    with pytest.raises(ValueError, match="sample_weights has"):
        fit_many(key, data, K, sample_weights=[None])
    with pytest.raises(ValueError, match="non-negative"):
        fit_many(key, data[:1], K, sample_weights=[-np.ones(SIZES[0])])
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        fit_many(key, [data[0], data[1][:2]], K)
    with pytest.raises(TypeError, match="sample_weights"):
        fit_many(key, data, K, sample_weight=None)
    with pytest.raises(ValueError, match=r"\(B, n_samples, n_features\)"):
        fit_many(key, np.zeros((4, 3)), K)


def test_host_padding_and_keys_compile_nothing_eager(caplog):
    """Ragged NumPy datasets are padded and counted on the host and the per-dataset keys are one
    small cached program: a first fit_many compiles that and its one program (the vmapped fit,
    results included: no eager slices); values equal the looped fits."""
    import logging
    rng = np.random.default_rng(31)
    data = [rng.normal(size=(n, 2)).astype(np.float32) + 2 for n in (97, 130, 64)]
    key = jax.block_until_ready(jax.random.key(8))
    with caplog.at_level(logging.WARNING), jax.log_compiles(True):
        res = fit_many(key, data, 2, covariance_type="diag", max_iter=10)
    compiled = {r.getMessage().split()[1] for r in caplog.records
                if r.getMessage().startswith("Compiling ")}
    assert compiled <= {"jit(_dataset_keys)", "jit(_many_program)"}, compiled
    for b, x in enumerate(data):
        one = gj.fit(jax.random.fold_in(key, b), x, 2, covariance_type="diag", max_iter=10)
        np.testing.assert_allclose(np.asarray(res.params.means[b]), np.asarray(one.params.means),
                                   rtol=1e-4, atol=1e-5)


def test_program_is_cached_on_disk_and_options_are_operands(tmp_path):
    """fit_many is one cached program: stored on its first call, loaded (not recompiled) once
    memory is cleared, with equal results; tol and reg_covar are operands (a new value
    reuses the program and changes the result as a separate fit with that value)."""
    from gmmjax import compile_cache
    rng = np.random.default_rng(5)
    data = [rng.normal(size=(n, 2)).astype(np.float32) for n in (80, 100)]
    key = jax.random.key(4)
    compile_cache.configure(tmp_path / "cache", enabled=True)
    try:
        n = len(compile_cache.events())
        first = fit_many(key, data, 2, covariance_type="diag", max_iter=5, tol=0.0)
        kinds = {(e.function.rsplit(".", 1)[-1], e.kind) for e in compile_cache.events()[n:]}
        assert ("_many_program", "compile") in kinds, kinds
        compile_cache.clear_memory()
        n = len(compile_cache.events())
        again = fit_many(key, data, 2, covariance_type="diag", max_iter=5, tol=0.0)
        kinds = {(e.function.rsplit(".", 1)[-1], e.kind) for e in compile_cache.events()[n:]}
        assert ("_many_program", "load") in kinds and not any(k == "compile" for _, k in kinds)
        np.testing.assert_array_equal(np.asarray(again.params.means),
                                      np.asarray(first.params.means))
        n = len(compile_cache.events())
        other = fit_many(key, data, 2, covariance_type="diag", max_iter=5, tol=0.0,
                         reg_covar=0.5)
        assert compile_cache.events()[n:] == []          # same program, new operand value
    finally:
        compile_cache.configure()
    one = gj.fit(jax.random.fold_in(key, 1), data[1], 2, covariance_type="diag", max_iter=5,
                 tol=0.0, reg_covar=0.5)
    np.testing.assert_allclose(np.asarray(other.params.covariances[1]),
                               np.asarray(one.params.covariances), rtol=1e-4, atol=1e-5)
    assert not np.allclose(np.asarray(other.params.covariances),
                           np.asarray(first.params.covariances))
