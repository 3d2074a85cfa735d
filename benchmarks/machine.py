"""What the suite runs on: device description, the same-run matmul rate, and peak-memory probes."""

from __future__ import annotations

import datetime
import os
import platform
import re
import sys
import threading
import time
import tracemalloc

# Set on some machines for old OpenBLAS builds; they pin NumPy's (so scikit-learn's) OpenBLAS to an
# older, slower GEMM kernel. XLA does not use OpenBLAS. The suite's own processes run without them.
BLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
REMOVED_MARK = "GMMJAX_BENCH_REMOVED_BLAS_ENV"   # what the restart removed, for the report


def fair_blas_environ(environ) -> tuple[dict, list[str]]:
    """A copy of ``environ`` without :data:`BLAS_OVERRIDES`, and the names it removed."""
    removed = [k for k in BLAS_OVERRIDES if k in environ]
    return {k: v for k, v in environ.items() if k not in BLAS_OVERRIDES}, removed


def reexec_with_fair_blas(module: str, argv: list[str], execve=os.execve) -> None:
    """Restart this process as ``python -m module *argv`` without the OpenBLAS overrides when any
    is set (OpenBLAS reads them once, when NumPy loads it, so call this before importing NumPy).
    Does nothing when none is set. Only the benchmark entry points call it, never the tests."""
    env, removed = fair_blas_environ(os.environ)
    if not removed:
        return
    env[REMOVED_MARK] = " ".join(f"{k}={os.environ[k]}" for k in removed)
    sys.stdout.flush()
    sys.stderr.flush()
    execve(sys.executable, [sys.executable, "-m", module, *argv], env)


def blas_info() -> dict:
    """The BLAS NumPy (and so scikit-learn) uses, as threadpoolctl sees it (kernel architecture,
    threads), whether the OpenBLAS overrides are set now, and what a restart removed."""
    out: dict = {"overrides_set": {k: os.environ[k] for k in BLAS_OVERRIDES if k in os.environ},
                 "overrides_removed": os.environ.get(REMOVED_MARK, "")}
    try:
        import numpy  # noqa: F401 - load NumPy's BLAS so threadpoolctl can see it
        from threadpoolctl import threadpool_info
    except ImportError as e:
        out["error"] = str(e)
        return out
    libs = [{k: lib.get(k) for k in ("internal_api", "version", "architecture", "num_threads",
                                      "threading_layer", "filepath")}
            for lib in threadpool_info() if lib.get("user_api") == "blas"]
    out["libraries"] = libs
    if libs:
        out["summary"] = ", ".join(f"{lib['internal_api']} {lib['version']} "
                                   f"{lib['architecture']} kernel, {lib['num_threads']} threads"
                                   for lib in libs)
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict:
    import importlib.metadata as md
    out = {"python": platform.python_version()}
    for name in ("gmmjax", "jax", "jaxlib", "numpy", "scipy", "scikit-learn", "gmmx", "torch"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def blas_line(info: dict) -> str:
    """One line for reports: the BLAS kernel and the state of the overrides."""
    blas = info.get("blas") or {}
    line = blas.get("summary", blas.get("error", "unknown"))
    if blas.get("overrides_set"):
        line += " (overrides kept: " + " ".join(f"{k}={v}" for k, v in
                                                 blas["overrides_set"].items()) + ")"
    elif blas.get("overrides_removed"):
        line += f" (restarted without {blas['overrides_removed']})"
    return line


def device_info() -> dict:
    """The accelerator JAX uses (or the CPU), the host, and library versions."""
    import jax
    dev = jax.devices()[0]
    info = {
        "platform": dev.platform,
        "device_kind": dev.device_kind,
        "n_devices": jax.device_count(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "affinity_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "system": f"{platform.system()} {platform.release()}",
        "versions": _versions(),
        "blas": blas_info(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    try:
        with open("/proc/loadavg") as f:
            info["loadavg_at_start"] = [float(v) for v in f.read().split()[:3]]
    except OSError:
        pass
    return info


def device_slug(info: dict) -> str:
    """Short file-name-safe device name: ``cpu-2core`` or e.g. ``gpu-nvidia-h100-80gb-hbm3``."""
    if info["platform"] == "cpu":
        cores = info.get("affinity_cores") or info.get("cpu_count") or 0
        return f"cpu-{cores}core"
    kind = re.sub(r"[^a-z0-9]+", "-", str(info["device_kind"]).lower()).strip("-")
    return f"{info['platform']}-{kind}"


def _best_time(fn, repeats: int, min_time: float = 0.0) -> float:
    best = float("inf")
    start = time.perf_counter()
    done = 0
    while done < repeats or (time.perf_counter() - start) < min_time and done < 10 * repeats:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        done += 1
    return best


def matmul_rate(n: int = 2048, repeats: int = 5, dtype="float32", precisions=None) -> dict:
    """Square n×n GEMM rate (GFLOP/s, 2·n³ flops) measured now, by JAX/XLA and by NumPy's BLAS.

    JAX at ``Precision.HIGHEST`` (what gmmjax's statistics use) and, on GPU/TPU, also at DEFAULT
    (TF32/bf16 passes), or at each of ``precisions`` ({label: Precision}). NumPy's GEMM runs on
    its BLAS as loaded (the suite's entry points restart without the OpenBLAS overrides).
    ``reference_gflops`` is the best of the full-precision rates (XLA HIGHEST, NumPy): each
    fit's achieved FLOP rate is reported as a fraction of it.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    flops = 2.0 * n ** 3
    out: dict = {"n": n, "dtype": np.dtype(dtype).name, "flops": flops}

    ja, jb = jnp.asarray(a), jnp.asarray(b)
    if precisions is None:
        precisions = {"highest": jax.lax.Precision.HIGHEST}
        if jax.devices()[0].platform != "cpu":
            precisions["default"] = jax.lax.Precision.DEFAULT
    for label, prec in precisions.items():
        f = jax.jit(lambda x, y, p=prec: jnp.matmul(x, y, precision=p))
        jax.block_until_ready(f(ja, jb))
        t = _best_time(lambda: jax.block_until_ready(f(ja, jb)), repeats, 0.2)
        out[f"jax_{label}_gflops"] = flops / t / 1e9
    t = _best_time(lambda: a @ b, repeats, 0.2)
    out["numpy_gflops"] = flops / t / 1e9
    out["reference_gflops"] = max(out["jax_highest_gflops"], out["numpy_gflops"])
    return out


class PeakRSS:
    """Peak resident-set growth of this process while the block runs, sampled by a thread.

    ``peak_mb`` = (max RSS seen − RSS at entry) / 2^20. Sampling every ``interval`` seconds via
    psutil (or /proc/self/statm); allocations that live shorter than the interval or reuse memory
    the allocator already holds are not seen, so this is a lower bound on the true peak.
    """

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.peak_mb: float | None = None
        self._read = _rss_reader()

    def __enter__(self):
        if self._read is None:
            return self
        self._stop = threading.Event()
        self._start = self._read()
        self._max = self._start

        def sample():
            while not self._stop.is_set():
                self._max = max(self._max, self._read())
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._read is None:
            return False
        self._stop.set()
        self._thread.join()
        self._max = max(self._max, self._read())
        self.peak_mb = (self._max - self._start) / 2 ** 20
        return False


def _rss_reader():
    try:
        import psutil
        proc = psutil.Process()
        return lambda: proc.memory_info().rss
    except ImportError:
        pass
    if os.path.exists("/proc/self/statm"):
        page = os.sysconf("SC_PAGE_SIZE")

        def read():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * page
        return read
    return None


class TracedPeak:
    """Peak of Python-tracked allocations (NumPy registers its array buffers with tracemalloc)."""

    def __enter__(self):
        self.peak_mb = None
        self._was = tracemalloc.is_tracing()
        if not self._was:
            tracemalloc.start()
        tracemalloc.reset_peak()
        self._base = tracemalloc.get_traced_memory()[0]
        return self

    def __exit__(self, *exc):
        _, peak = tracemalloc.get_traced_memory()
        if not self._was:
            tracemalloc.stop()
        self.peak_mb = (peak - self._base) / 2 ** 20
        return False


if __name__ == "__main__":     # python -m benchmarks.machine: the BLAS the suite's processes see
    import json
    reexec_with_fair_blas("benchmarks.machine", sys.argv[1:])
    print(json.dumps(blas_info(), indent=1))
