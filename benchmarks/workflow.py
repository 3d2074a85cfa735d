"""Time to first result: whole scripts a user writes, run with either import, in fresh processes.

``python -m benchmarks.workflow --lib sklearn|gmmjax --workflow NAME`` runs ONE workflow in this
process (the estimator loop a user writes: ``from <lib> import GaussianMixture``) and prints one
JSON line: import time, phase times and, for gmmjax, the programs it compiled or loaded.
:func:`run_workflows` (called by ``python -m benchmarks``) starts those processes: scikit-learn
twice (best of two; OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset in its process only), gmmjax with a
fresh HOME and cache folder (the first run ever), then again with the same HOME (second run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------------- data (NumPy only)


def three_gaussians_1d(n: int, seed: int = 0) -> np.ndarray:
    """(n, 1): 3 Gaussians, proportions 0.25/0.45/0.30, means −4/0/5, sd 1/0.5/1.5."""
    rng = np.random.default_rng(seed)
    sizes = [n // 4, n * 45 // 100]
    sizes.append(n - sum(sizes))
    parts = [rng.normal(m, s, k) for m, s, k in zip((-4.0, 0.0, 5.0), (1.0, 0.5, 1.5), sizes)]
    return np.concatenate(parts)[:, None]


def two_moons(n: int, noise: float = 0.05, seed: int = 0) -> np.ndarray:
    """(n, 2): scikit-learn's two-moons shape, drawn with NumPy."""
    rng = np.random.default_rng(seed)
    n_out = n // 2
    t_out, t_in = np.linspace(0, np.pi, n_out), np.linspace(0, np.pi, n - n_out)
    x = np.concatenate([np.c_[np.cos(t_out), np.sin(t_out)],
                        np.c_[1 - np.cos(t_in), 1 - np.sin(t_in) - 0.5]])
    return x + rng.normal(0.0, noise, x.shape)


def blobs(n: int, d: int, centers: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mu = rng.uniform(-8, 8, (centers, d))
    labels = rng.integers(0, centers, n)
    return mu[labels] + rng.normal(0.0, 1.0, (n, d)) * rng.uniform(0.5, 1.5, (centers, d))[labels]


# ---------------------------------------------------------------------- workflows


def classic(GaussianMixture, sizes: dict) -> dict:
    """BIC sweep over K with n_init=3 on 1-D data, refit the best K, flag rows of log-density
    < −9; then each covariance type on two moons: 4th-percentile anomalies, predict,
    predict_proba, sample."""
    t = {}
    x = three_gaussians_1d(sizes["n_1d"])
    start = time.perf_counter()
    bics = [GaussianMixture(k, n_init=3, random_state=0).fit(x).bic(x)
            for k in range(1, sizes["k_max"] + 1)]
    best = int(np.argmin(bics)) + 1
    gm = GaussianMixture(best, n_init=3, random_state=1).fit(x)
    flagged = int(np.sum(gm.score_samples(x) < -9))
    t["bic_sweep_s"] = time.perf_counter() - start
    moons = two_moons(sizes["n_moons"])
    start = time.perf_counter()
    anomalies = {}
    for cov in sizes["covariance_types"]:
        g = GaussianMixture(3, covariance_type=cov, n_init=sizes["n_init_moons"],
                            random_state=0).fit(moons)
        s = g.score_samples(moons)
        anomalies[cov] = int(np.sum(s < np.percentile(s, 4)))
        g.predict(moons)
        g.predict_proba(moons)
        g.sample(200)
    t["moons_s"] = time.perf_counter() - start
    return {"phases": t, "best_k": best, "flagged": flagged, "anomalies": anomalies}


def grid(GaussianMixture, sizes: dict) -> dict:
    """GridSearchCV over K and covariance type of a scaler + mixture Pipeline (3-fold, scored
    by mean log-likelihood) on D-dimensional blobs; then predict with the best pipeline."""
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    x = blobs(sizes["n"], sizes["d"], sizes["centers"])
    start = time.perf_counter()
    pipe = Pipeline([("scale", StandardScaler()), ("gmm", GaussianMixture(random_state=0))])
    search = GridSearchCV(pipe, {"gmm__n_components": list(range(1, sizes["k_max"] + 1)),
                                 "gmm__covariance_type": sizes["covariance_types"]}, cv=3)
    search.fit(x)
    labels = search.best_estimator_.predict(x)
    return {"phases": {"grid_search_s": time.perf_counter() - start},
            "best": {k.split("__")[1]: v for k, v in search.best_params_.items()},
            "n_labels": int(len(np.unique(labels)))}


def bic_wide(GaussianMixture, sizes: dict) -> dict:
    """BIC sweep over K and two covariance types on wider data (other N, D, K range)."""
    x = blobs(sizes["n"], sizes["d"], sizes["centers"], seed=1)
    start = time.perf_counter()
    scores = {(cov, k): GaussianMixture(k, covariance_type=cov, n_init=2, random_state=0)
              .fit(x).bic(x)
              for cov in sizes["covariance_types"] for k in range(2, sizes["k_max"] + 1)}
    best = min(scores, key=scores.get)
    return {"phases": {"bic_sweep_s": time.perf_counter() - start}, "best": list(best)}


FOUR = ["full", "tied", "diag", "spherical"]
WORKFLOWS = {
    # name: (function, sizes of the full benchmark, sizes of the tiny test version)
    "classic": (classic,
                {"n_1d": 4600, "k_max": 10, "n_moons": 1000, "n_init_moons": 10,
                 "covariance_types": FOUR},
                {"n_1d": 300, "k_max": 2, "n_moons": 200, "n_init_moons": 3,
                 "covariance_types": ["diag"]}),
    "grid": (grid, {"n": 3000, "d": 3, "centers": 4, "k_max": 6,
                    "covariance_types": ["full", "diag"]},
             {"n": 300, "d": 2, "centers": 2, "k_max": 2, "covariance_types": ["full"]}),
    "bic-wide": (bic_wide, {"n": 20000, "d": 6, "centers": 5, "k_max": 8,
                            "covariance_types": ["full", "diag"]},
                 {"n": 400, "d": 3, "centers": 2, "k_max": 3, "covariance_types": ["diag"]}),
}


# ---------------------------------------------------------------------- one process


def _program_log():
    """Start recording XLA compiles (count, seconds); returns a function giving the summary."""
    import jax
    backend = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, secs, **_: backend.append(secs)
        if event == "/jax/core/compile/backend_compile_duration" else None)

    def summary() -> dict:
        from gmmjax import compile_cache
        per = {}
        for e in compile_cache.events():
            name = e.function.rsplit(".", 1)[-1]
            row = per.setdefault(name, {"compile": 0, "load": 0, "uncached": 0, "prefetched": 0,
                                        "seconds": 0.0})
            row[e.kind] += 1
            row["prefetched"] += e.prefetched
            row["seconds"] += e.seconds
        return {"programs": per,
                "n_programs": sum(r["compile"] + r["load"] + r["uncached"] for r in per.values()),
                "xla_compiles": len(backend), "xla_compile_s": float(sum(backend))}
    return summary


def run_one(lib: str, workflow: str, tiny: bool = False) -> dict:
    """Run one workflow in this process; -> its JSON record."""
    fun, full, small = WORKFLOWS[workflow]
    start = time.perf_counter()
    if lib == "sklearn":
        from sklearn.mixture import GaussianMixture
    else:
        from gmmjax import GaussianMixture
    import_s = time.perf_counter() - start
    summary = _program_log() if lib == "gmmjax" else None
    out = fun(GaussianMixture, small if tiny else full)
    out.update(lib=lib, workflow=workflow, import_s=import_s,
               script_s=time.perf_counter() - start)
    if summary is not None:
        out.update(summary())
    return out


# ---------------------------------------------------------------------- fresh processes


def sklearn_env() -> dict:
    """The environment of a scikit-learn run: as ours, without the forced OpenBLAS kernel."""
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    return env


def gmmjax_env(home: str) -> dict:
    """A new user: this HOME and nothing configured by hand (gmmjax's cache is on by default,
    in its default folder under HOME)."""
    env = dict(os.environ, HOME=home)
    for name in ("XDG_CACHE_HOME", "GMMJAX_CACHE", "GMMJAX_CACHE_DIR", "GMMJAX_CACHE_MAX_MB",
                 "JAX_COMPILATION_CACHE_DIR"):
        env.pop(name, None)
    return env


def _root() -> str:
    return str(Path(__file__).resolve().parents[1])


def run_process(lib: str, workflow: str, env: dict, tiny: bool = False,
                timeout: float = 900) -> dict:
    """One fresh Python process; -> its record plus ``wall_s`` (whole process, start to exit)."""
    env = dict(env, PYTHONPATH=os.pathsep.join(filter(None, [_root(), env.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "benchmarks.workflow", "--lib", lib, "--workflow", workflow]
    start = time.perf_counter()
    proc = subprocess.run(cmd + (["--tiny"] if tiny else []), env=env, cwd=_root(),
                          capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    record["wall_s"] = wall
    return record


def import_times(repeats: int = 3) -> dict:
    """Best-of-``repeats`` whole-process seconds of ``python -c 'import X'`` (fresh processes)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [_root(), os.environ.get("PYTHONPATH")])))
    out = {}
    for name, stmt in [("python", "pass"), ("jax", "import jax"), ("gmmjax", "import gmmjax"),
                       ("sklearn.mixture", "import sklearn.mixture"),
                       ("gmmjax.GaussianMixture", "from gmmjax import GaussianMixture")]:
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", stmt], env=env, check=True)
            best = min(best, time.perf_counter() - start)
        out[name] = best
    out["gmmjax_over_jax"] = out["gmmjax"] - out["jax"]
    return out


def byte_compile_gmmjax() -> bool:
    """Byte-compile gmmjax's modules, as pip does at install for scikit-learn's (and for a
    gmmjax wheel). An editable checkout is compiled on import instead, and never stored where
    PYTHONDONTWRITEBYTECODE is set (these machines set it): ~40-80 ms of every gmmjax process
    that scikit-learn's side does not pay. -> whether every module compiled."""
    import compileall
    return bool(compileall.compile_dir(str(Path(_root()) / "gmmjax"), quiet=1))


def run_workflows(names: list[str], tiny: bool = False, sklearn_runs: int = 2,
                  progress=None) -> dict:
    """Each workflow: sklearn (best of ``sklearn_runs``), gmmjax first run (fresh HOME) and
    second run (same HOME), side by side, gmmjax byte-compiled first (:func:`byte_compile_gmmjax`).
    -> {"workflows": {name: {...}}, "imports": {...}}."""
    byte_compile_gmmjax()
    result = {}
    for name in names:
        if progress:
            progress(f"workflow {name}")
        sk = [run_process("sklearn", name, sklearn_env(), tiny) for _ in range(sklearn_runs)]
        with tempfile.TemporaryDirectory(prefix="gmmjax-home-") as home:
            first = run_process("gmmjax", name, gmmjax_env(home), tiny)
            second = run_process("gmmjax", name, gmmjax_env(home), tiny)
        best_sk = min(r["wall_s"] for r in sk)
        result[name] = {"sklearn": min(sk, key=lambda r: r["wall_s"]), "gmmjax_first": first,
                        "gmmjax_second": second, "sklearn_wall_s": [r["wall_s"] for r in sk],
                        "first_ratio": first["wall_s"] / best_sk,
                        "second_ratio": second["wall_s"] / best_sk}
    return result


def render(workflows: dict, imports: dict | None = None) -> str:
    lines = ["time to first result (whole process, fresh processes; sklearn best of 2):",
             f"{'workflow':10s} {'sklearn':>8s} {'gmmjax 1st':>11s} {'ratio':>6s} "
             f"{'gmmjax 2nd':>11s} {'ratio':>6s} {'programs':>8s} {'compile s':>9s} "
             f"{'2nd loads':>9s} {'(prefetched)':>12s} {'2nd compiles':>12s}"]
    for name, w in workflows.items():
        first, second = w["gmmjax_first"], w["gmmjax_second"]
        loads = sum(r["load"] for r in second["programs"].values())
        prefetched = sum(r["prefetched"] for r in second["programs"].values())
        builds = sum(r["compile"] + r["uncached"] for r in second["programs"].values())
        lines.append(f"{name:10s} {w['sklearn']['wall_s']:8.2f} {first['wall_s']:11.2f} "
                     f"{w['first_ratio']:6.2f} {second['wall_s']:11.2f} {w['second_ratio']:6.2f} "
                     f"{first['n_programs']:8d} {first['xla_compile_s']:9.2f} {loads:9d} "
                     f"{prefetched:12d} {builds:12d}")
    for name, w in workflows.items():
        per = ", ".join(f"{fn} {r['compile'] + r['uncached']}×{r['seconds'] / max(1, r['compile'] + r['uncached'] + r['load']):.2f}s"
                        for fn, r in w["gmmjax_first"]["programs"].items())
        lines.append(f"  {name} first run, programs (count×mean s): {per}; all XLA compiles "
                     f"{w['gmmjax_first']['xla_compiles']}")
    if imports:
        lines.append("imports (best of 3, whole process s): " + ", ".join(
            f"{k} {v:.2f}" for k, v in imports.items()))
    return "\n".join(lines)


def warm_overhead(repeats: int = 3, calls: int = 20) -> dict:
    """Warm per-call time with the compile cache on vs off (same process, interleaved; median
    of ``repeats`` blocks of ``calls``), for the calls of the classic workflow. -> seconds."""
    import jax
    from gmmjax import GaussianMixture, compile_cache, fit, log_prob
    x1, moons = three_gaussians_1d(4600), two_moons(1000)
    gm = GaussianMixture(3, n_init=3, random_state=0).fit(x1)
    key = jax.random.PRNGKey(0)
    ops = {"GaussianMixture.fit (K=3, n_init=3, N=4600)":
           lambda: GaussianMixture(3, n_init=3, random_state=0).fit(x1),
           "score_samples (N=4600)": lambda: gm.score_samples(x1),
           "predict_proba (N=1000)": lambda: gm.predict_proba(moons[:, :1]),
           "gmmjax.fit (K=3, N=1000, D=2)":
           lambda: jax.block_until_ready(fit(key, moons, 3, n_init=2)),
           "log_prob (N=1000, D=2)": lambda: jax.block_until_ready(log_prob(gm.params_, x1[:1000]))}
    out = {}
    try:
        for name, op in ops.items():
            times = {True: [], False: []}
            for on in (True, False):
                compile_cache.configure(enabled=on)
                op()                                    # compile / load outside the timing
            for _ in range(repeats):
                for on in (True, False):
                    compile_cache.configure(enabled=on)
                    start = time.perf_counter()
                    for _ in range(calls):
                        op()
                    times[on].append((time.perf_counter() - start) / calls)
            on, off = float(np.median(times[True])), float(np.median(times[False]))
            out[name] = {"cache_on_s": on, "cache_off_s": off, "ratio": on / off}
    finally:
        compile_cache.configure()
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.workflow")
    ap.add_argument("--lib", choices=["sklearn", "gmmjax"],
                    help="run one workflow in this process and print its JSON record")
    ap.add_argument("--workflow", choices=sorted(WORKFLOWS), default="classic")
    ap.add_argument("--tiny", action="store_true", help="the small test version")
    ap.add_argument("--all", action="store_true",
                    help="run every workflow side by side in fresh processes and print a table")
    ap.add_argument("--warm-overhead", action="store_true",
                    help="warm per-call time with the compile cache on vs off, then exit")
    args = ap.parse_args(argv)
    if args.warm_overhead:
        for name, r in warm_overhead().items():
            print(f"{name:45s} on {r['cache_on_s'] * 1e3:8.3f} ms  off {r['cache_off_s'] * 1e3:8.3f}"
                  f" ms  ratio {r['ratio']:.3f}")
        return
    if args.lib:
        print(json.dumps(run_one(args.lib, args.workflow, args.tiny)))
        return
    names = sorted(WORKFLOWS) if args.all else [args.workflow]
    workflows = run_workflows(names, tiny=args.tiny)
    print(render(workflows, import_times()))


if __name__ == "__main__":
    main()
