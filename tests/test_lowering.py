"""Every public compiled program lowers for CUDA and TPU without a device.

``jax.export`` with ``platforms=("cuda", "tpu")`` traces and lowers to StableHLO only (no XLA
compile), so this runs on any CPU machine. It catches what would only fail on an accelerator: an
operation with a CPU-only lowering (LAPACK) or a host callback in a compiled program. Shapes are
tiny and shared; each program is lowered once for both platforms.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gmmjax as gj
from gmmjax import distributed, selection, streaming
from gmmjax.covariance import COVARIANCE_TYPES

PLATFORMS = ("cuda", "tpu")
N, D, K = 64, 3, 2
KEY = jax.random.key(0)
X = jnp.asarray(np.random.default_rng(0).normal(size=(N, D)), jnp.float32)
W = jnp.ones((N,), jnp.float32)
# custom-call targets that run on the host or exist only for the CPU backend
HOST_ONLY = re.compile(r"callback|lapack|cpu", re.IGNORECASE)


def lower(fn, *args, platforms=PLATFORMS):
    """Export ``fn`` (jitted) for ``platforms``; return the custom-call targets it uses."""
    exported = jax.export.export(jax.jit(fn), platforms=platforms)(*args)
    assert set(exported.platforms) == set(platforms)
    targets = set(re.findall(r"custom_call\s*@([\w.]+)", exported.mlir_module()))
    host = sorted(t for t in targets if HOST_ONLY.search(t))
    assert not host, f"host-only custom calls in a compiled program: {host}"
    return targets


def _initial_params(cov):
    rng = np.random.default_rng(1)
    prec = {"full": np.stack([np.eye(D)] * K), "tied": np.eye(D), "diag": np.ones((K, D)),
            "spherical": np.ones(K)}[cov]
    return gj.from_precisions(np.full(K, 1.0 / K), rng.normal(size=(K, D)), prec, cov).astype(
        jnp.float32)


_PARAMS = {cov: _initial_params(cov) for cov in COVARIANCE_TYPES}


# every covariance type and every init, each pair once (a lowering costs ~1 s of tracing)
FIT_CASES = [("full", "kmeans"), ("tied", "random"), ("diag", "random_from_data"),
             ("spherical", "k-means++"), ("full", "params")]


def test_fit_cases_cover_every_type_and_init():
    assert {c for c, _ in FIT_CASES} == set(COVARIANCE_TYPES)
    assert {i for _, i in FIT_CASES} == set(gj.INIT_METHODS) | {"params"}


@pytest.mark.parametrize("cov, init", FIT_CASES)
def test_fit_lowers(cov, init):
    start = _PARAMS[cov] if init == "params" else init
    lower(lambda key, x: gj.fit(key, x, K, covariance_type=cov, init=start, n_init=2,
                                max_iter=3), KEY, X)


def test_fit_many_lowers():
    """fit_many is ``vmap`` of fit over padded datasets: lower that program."""
    xs, ws = jnp.stack([X, X]), jnp.stack([W, W])
    keys = jax.random.split(KEY, 2)
    lower(jax.vmap(lambda k, x, w: gj.fit(k, x, K, sample_weight=w, covariance_type="diag",
                                          max_iter=3)), keys, xs, ws)


@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_scoring_and_sampling_lower(cov):
    p = _PARAMS[cov]
    lower(lambda x: (gj.log_prob(p, x), gj.predict(p, x), gj.predict_proba(p, x)), X)
    lower(lambda x: gj.log_prob(p, x, chunk_size=16), X)          # the chunked (lax.map) path
    lower(lambda key: gj.sample(key, p, 10), KEY)


@pytest.mark.parametrize("cov", ["full", "diag"])
def test_fit_bayesian_lowers(cov):
    lower(lambda key, x: gj.fit_bayesian(key, x, K, covariance_type=cov, max_iter=3), KEY, X)


@pytest.mark.parametrize("cov", ["full", "diag"])
def test_select_model_sweep_lowers(cov):
    ks = jnp.asarray([1, 2], jnp.int32)
    lower(lambda key, x, w: selection._sweep_program(
        key, x, w, ks, 1e-3, 1e-6, k_max=2, n_init=1, covariance_type=cov, init="kmeans",
        max_iter=3, chunk_size=None), KEY, X, W)


def test_kde_lowers():
    lower(lambda t, x: gj.kde_log_prob(t, x, 0.5, query_chunk=16, train_chunk=32), X, X)
    lower(lambda key, t: gj.kde_sample(key, t, 0.5, 10), KEY, X)


def test_streaming_step_lowers():
    """fit_stream's two device programs: accumulate one chunk's statistics, then the M-step."""
    p = jax.tree_util.tree_map(lambda a: a[None], _PARAMS["full"])          # one restart
    shift = jnp.zeros((D,), jnp.float32)
    acc = streaming._zero_stats(p, D, jnp.float32, "full")
    lower(lambda a, pp, x, w: streaming._accumulate(a, pp, x, w, shift, inner=None), acc, p, X, W)
    bound = jnp.full((1,), -jnp.inf, jnp.float32)
    hist = jnp.zeros((1, 4), jnp.float32)
    zero = jnp.zeros((1,), jnp.int32)
    lower(lambda a, pp: streaming._em_update(a, pp, bound, hist, zero, zero, 1e-3, 1e-6, shift,
                                             covariance_type="full"), acc, p)


def test_sharded_statistics_lower():
    mesh = distributed.data_mesh(1)
    p = _PARAMS["full"]
    lower(lambda x, w: distributed.statistics(p, x, w, mesh=mesh), X, W)


def test_the_check_catches_a_host_callback():
    """The guard itself: a host callback fails the lowering; CPU-only custom calls are named."""
    def with_callback(x):
        return jax.pure_callback(np.sin, jax.ShapeDtypeStruct(x.shape, x.dtype), x)

    with pytest.raises(NotImplementedError, match="callback"):
        lower(with_callback, X)
    assert HOST_ONLY.search("lapack_spotrf_ffi") and HOST_ONLY.search("xla_python_cpu_callback")
    assert not HOST_ONLY.search("cusolver_potrf_ffi")
    assert "cusolver_potrf_ffi" in lower(jnp.linalg.cholesky, jnp.eye(D), platforms=("cuda",))
