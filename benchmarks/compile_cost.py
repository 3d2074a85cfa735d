"""What one estimator-style fit program costs to build: kernels, trace, lowering, XLA compile.

``python -m benchmarks.compile_cost [N D K covariance_type n_init]`` (default: the classic
workflow's 1-D program, 4,600 rows, K=3 padded to 16, n_init=3) builds the program
``gmmjax.fit(init=resp)`` runs (as the estimators do) in this fresh process, with the on-disk
cache pointed at a new temporary folder, and prints the kernel count of the compiled program
(each kernel is compiled through its own MLIR/LLVM pipeline on CPU: ~15 ms apiece), the
``jax.monitoring`` durations of tracing, lowering and XLA compilation, and the warm fit time
(median of 7). Run it in fresh processes to compare two versions of the code.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import tempfile
import time


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    n, d, k, cov, n_init = (argv + [None] * 5)[:5] if argv else (4600, 1, 3, "full", 3)
    n, d, k, n_init = int(n), int(d), int(k), int(n_init)
    os.environ["GMMJAX_CACHE_DIR"] = tempfile.mkdtemp(prefix="gmmjax-compile-cost-")
    import jax
    import jax.monitoring
    import numpy as np
    jax.config.update("jax_enable_x64", True)
    durations: dict[str, float] = {}
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, secs, **_: durations.__setitem__(event, durations.get(event, 0.0) + secs))
    import gmmjax
    fit_module = importlib.import_module("gmmjax.fit")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)) + rng.integers(0, k, n)[:, None] * 2.0
    labels = (np.argsort(np.argsort(x[:, 0])) * k // n + (rng.random(n) < 0.2)) % k
    resp = np.zeros((n_init, n, k))
    resp[:, np.arange(n), labels] = 1.0

    def run():
        start = time.perf_counter()
        r = gmmjax.fit(jax.random.PRNGKey(0), x, k, covariance_type=cov, n_init=n_init,
                       init=resp)
        jax.block_until_ready(r.params.means)
        return time.perf_counter() - start

    first = run()
    (compiled,) = fit_module._fit_program._memory.values()
    kernels = len(re.findall(r"^\s*\S+ = \S+ fusion\(", compiled.as_text(), re.M))
    warm = sorted(run() for _ in range(7))[3]

    def seconds(word):
        return sum(v for e, v in durations.items() if word in e)

    print(f"fit program N={n} D={d} K={k} {cov} n_init={n_init}: {kernels} kernels; first call "
          f"{first:.2f} s (trace {seconds('trace'):.2f}, lower {seconds('to_mlir'):.2f}, "
          f"XLA {seconds('backend_compile'):.2f}); warm {warm * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
