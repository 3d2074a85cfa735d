"""The environment of the JAX-on-CPU subprocesses started by tests/test_distributed.py and
tests/test_multihost.py."""

import os


def jax_cpu_env(**extra: str) -> dict:
    """os.environ for a fresh CPU-only JAX process: no inherited ``XLA_FLAGS`` or device count,
    this process's persistent compilation cache (if any), then ``extra``."""
    import jax

    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    env.pop("JAX_NUM_CPU_DEVICES", None)
    cache = jax.config.jax_compilation_cache_dir
    if cache:
        env["JAX_COMPILATION_CACHE_DIR"] = cache
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = str(
            jax.config.jax_persistent_cache_min_compile_time_secs)
    env.update(extra)
    return env
