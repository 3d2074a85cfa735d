"""Shared fixtures: small data sets with few distinct shapes (each new shape costs an XLA compile)."""

import os

# Tests run tiny problems, so XLA's backend optimisation buys nothing and costs ~2.5x in compile
# time (measured: tests/test_degenerate.py 53 s -> 21 s CPU). Set before JAX creates its backend;
# subprocesses started by tests inherit it.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
                               " --xla_llvm_disable_expensive_passes=true").strip()

# gmmjax's own compile cache: a private test folder, never the user's (~/.cache/gmmjax). It
# persists across runs like JAX's test cache below (entries are keyed by gmmjax's source hash).
os.environ["GMMJAX_CACHE_DIR"] = os.environ.get(
    "GMMJAX_TEST_CACHE_DIR", "/tmp/gmmjax-test-jax-cache") + f"-gmmjax-{os.getuid()}"
os.environ.pop("GMMJAX_CACHE", None)     # the default (on), in the test folder above

import jax  # noqa: E402
import numpy as np
import pytest

from gmmjax.covariance import COVARIANCE_TYPES


@pytest.fixture(scope="session")
def blobs():
    """(120, 3) float64: two offset, differently shaped clusters."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 3)) @ np.array([[1.0, 0.3, 0.0], [0.0, 0.8, 0.2], [0.0, 0.0, 0.5]])
    b = rng.normal(size=(70, 3)) * np.array([0.5, 1.5, 1.0]) + np.array([4.0, -2.0, 1.0])
    return np.concatenate([a, b])


def initial_precisions(covariance_type, n_components=2, n_features=3):
    """Deterministic, non-trivial precisions_init for each covariance type."""
    full = np.stack([np.eye(n_features) * (1.0 + 0.5 * k) for k in range(n_components)])
    full[:, 0, 1] = full[:, 1, 0] = 0.1
    return {"full": full, "tied": full[0], "diag": np.stack([np.diag(f) for f in full]),
            "spherical": np.array([1.0 + 0.5 * k for k in range(n_components)])}[covariance_type]


def initial_state(covariance_type):
    weights = np.array([0.45, 0.55])
    means = np.array([[0.5, 0.0, 0.0], [3.0, -1.0, 1.0]])
    return weights, means, initial_precisions(covariance_type)


@pytest.fixture(params=COVARIANCE_TYPES)
def covariance_type(request):
    return request.param


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


# JAX's own persistent cache is opt-in for the tests (GMMJAX_TEST_JAX_CACHE=1): with jax 0.10.2 its
# cache writer aborted pytest workers ("Fatal Python error: Aborted" in put_executable_and_time)
# twice in one run of the suite next to gmmjax's cache of deserialized executables. gmmjax's own
# cache (above) keeps the package's programs across runs.
if os.environ.get("GMMJAX_TEST_JAX_CACHE") == "1":
    jax.config.update("jax_compilation_cache_dir",
                      os.environ.get("GMMJAX_TEST_CACHE_DIR", "/tmp/gmmjax-test-jax-cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


# Every compiled CPU program holds its own memory mappings (~80 for a fit program); a worker that
# runs hundreds of tests reaches Linux's vm.max_map_count (65,530) and XLA's compiler segfaults
# ("node down" in CI). Past half the limit, drop every compiled program (JAX's and gmmjax's).
@pytest.fixture(autouse=True)
def _release_compiled_programs():
    yield
    from gmmjax import compile_cache
    if compile_cache.near_map_limit():
        jax.clear_caches()                      # JAX's programs (gmmjax's plain-jit ones too)
        compile_cache.clear_memory()            # gmmjax's cached programs
        import gc
        gc.collect()
