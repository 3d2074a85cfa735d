"""Smoke test of the benchmark harness on a micro case (seconds; no timing asserts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import Case, Run, Settings, Skip, harness, run_case
from benchmarks import cases_core, machine, peers, runner
from benchmarks.machine import PeakRSS, TracedPeak, matmul_rate

N, D, K, IT = 240, 2, 2, 3


@pytest.fixture
def settings(monkeypatch):
    s = Settings(repeats=2, min_time=0.0, memory=True, xla_memory=False, matmul_gflops=10.0,
                 platform="cpu", max_case_s=None)
    monkeypatch.setattr(harness, "SETTINGS", s)
    return s


@pytest.mark.parametrize("cov", ["full", "diag"])
def test_em_case_identical_work(settings, cov):
    """gmmjax and sklearn start from the same parameters and run the same iterations: their
    final lower bounds agree (this is what makes the speed ratio meaningful)."""
    case = cases_core.em_case(N, D, K, cov, IT, peers=False)
    rec = run_case(case, settings)
    assert rec["status"] == "ok"
    jx, sk = rec["impls"]["gmmjax"], rec["impls"]["sklearn"]
    for r in (jx, sk):
        assert r["status"] == "ok", r
        assert r["time_s"] > 0 and r["repeats"] >= 1
        assert r["per_iter_s"] == pytest.approx(r["time_s"] / IT)
        assert r["gflops"] > 0 and r["frac_of_matmul"] == pytest.approx(r["gflops"] / 10.0)
        assert r["metrics"]["n_iter_run"] == IT
    assert jx["compile_s"] is not None and sk["compile_s"] is None
    assert "tracemalloc_peak_mb" in sk and sk["tracemalloc_peak_mb"] > 0
    assert rec["speedup"] == pytest.approx(sk["time_s"] / jx["time_s"])
    assert rec["loglik_abs_diff"] < 1e-3 * max(1.0, abs(sk["metrics"]["loglik"]))


def test_init_is_shared_and_valid():
    x = peers.make_data(N, 3, K, 0)
    assert x.dtype == np.float32 and x.shape == (N, 3)
    for cov in cases_core.COV_TYPES:
        init = peers.make_init(x, K, cov, 1)
        p = init.mixture_params()
        np.testing.assert_allclose(np.asarray(p.covariances), init.covariances, rtol=2e-3,
                                   atol=1e-5)
        assert np.isclose(init.weights.sum(), 1.0, atol=1e-6)


def test_batch_case_extrapolates_sklearn(settings):
    case = cases_core.batch_case(6, 50, 2, 2, "full", IT, sklearn_subset=3)
    rec = run_case(case, settings)
    sk = rec["impls"]["sklearn"]
    assert sk["status"] == "ok" and sk["scale"] == 2.0
    assert sk["time_s"] == pytest.approx(2.0 * min(sk["samples_s"]))
    assert "extrapolated" in sk["note"]
    assert rec["impls"]["gmmjax"]["throughput"] > 0


def test_skip_and_error_are_recorded(settings):
    def skipper(_):
        raise Skip("not here")

    def broken(_):
        raise RuntimeError("boom")

    case = Case("micro", "test", {"N": 1}, setup=lambda: None,
                impls={"gmmjax": lambda _: Run(lambda: np.zeros(3), jax=False),
                       "sklearn": skipper, "other": broken})
    rec = run_case(case, settings)
    assert rec["impls"]["gmmjax"]["status"] == "ok"
    assert rec["impls"]["sklearn"] == {"status": "skipped", "note": "not here"}
    assert rec["impls"]["other"]["status"] == "error" and "boom" in rec["impls"]["other"]["note"]
    assert "speedup" not in rec

    def bad_setup():
        raise ValueError("no data")

    rec = run_case(Case("micro2", "test", {}, setup=bad_setup, impls={}), settings)
    assert rec["status"] == "error" and "no data" in rec["note"]


def test_discover_skips_broken_plugins(tmp_path):
    (tmp_path / "cases_good.py").write_text(
        "from benchmarks import Case, Run\n"
        "def cases(quick):\n"
        "    return [Case('g1', 'g', {}, setup=lambda: 0, impls={})]\n")
    (tmp_path / "cases_bad.py").write_text("import no_such_module_xyz\n")
    (tmp_path / "cases_wrong.py").write_text("def cases(quick):\n    return [1]\n")
    (tmp_path / "cases_dup.py").write_text(
        "from benchmarks import Case\n"
        "def cases(quick):\n"
        "    return [Case('g1', 'g', {}, setup=lambda: 0, impls={})]\n")
    cases, notes = runner.discover(True, tmp_path, package="benchmarks_tmp_plugins")
    assert [c.name for c in cases] == ["g1"]
    text = "\n".join(notes)
    assert "cases_bad.py skipped" in text and "ModuleNotFoundError" in text
    assert "cases_wrong.py skipped" in text
    assert "duplicate case name 'g1'" in text


def test_select_patterns():
    cs = [Case(n, g, {}, setup=lambda: 0, impls={}) for n, g in
          [("em-full-N1-D2-K3", "em"), ("em-diag-N1-D2-K3", "em"), ("score-full-N1", "score")]]
    assert [c.name for c in runner.select(cs, ["em-full-*"])] == ["em-full-N1-D2-K3"]
    assert len(runner.select(cs, ["em"])) == 2
    assert len(runner.select(cs, ["full"])) == 2
    assert runner.select(cs, None) == cs


def test_memory_probes():
    with TracedPeak() as t:
        a = np.ones((256, 1024))  # 2 MiB
        del a
    assert t.peak_mb >= 1.9
    with PeakRSS() as r:
        pass
    assert r.peak_mb is None or r.peak_mb >= 0
    import jax
    import jax.numpy as jnp
    m = peers._xla_memory(jax.jit(lambda a: a * 2.0).lower(jnp.ones(1000, jnp.float32)).compile())
    assert m["argument_size_in_bytes"] == 4000 and m["peak_estimate_mb"] > 0


def test_matmul_rate_small():
    mm = matmul_rate(64, repeats=1)
    assert mm["reference_gflops"] == max(mm["jax_highest_gflops"], mm["numpy_gflops"]) > 0


def test_main_writes_json_table_and_plots(tmp_path, monkeypatch, capsys):
    """End to end with the micro grid: the CLI prints the table and writes JSON, markdown, PNG."""
    micro = [cases_core.em_case(N, D, K, "full", IT, peers=False, target=1e-6),
             cases_core.score_case(N, D, K, "full")]
    monkeypatch.setattr(runner, "discover", lambda quick: (micro, ["a note"]))
    from gmmjax import compile_cache
    folder, n_events = compile_cache.cache_dir(), len(compile_cache.events())
    res = runner.main(["--quick", "--out", str(tmp_path), "--matmul-n", "64", "--repeats", "1",
                       "--min-time", "0", "--xla-memory", "none", "--no-workflows"])
    out = capsys.readouterr().out
    assert "em-full-N240-D2-K2" in out and "speedup" in out and "a note" in out
    files = sorted(p.name for p in tmp_path.iterdir())
    assert any(f.endswith("-quick.json") for f in files)
    assert any(f.endswith("-speedup.png") for f in files)
    assert any(f.endswith("-time_vs_n.png") for f in files)
    data = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert data["meta"]["matmul"]["reference_gflops"] > 0
    assert [c["name"] for c in data["cases"]] == [c.name for c in micro]
    assert data["cases"][0]["target_met"] is True
    assert data["cases"][1]["impls"]["gmmjax"]["throughput"] > 0
    assert res["cases"][1]["loglik_abs_diff"] < 1e-3
    # the cases built their programs in a fresh cache folder (nothing loaded from an earlier
    # run: compile_s is a compile), and the process's own folder is back afterwards
    assert all(e.kind != "load" for e in compile_cache.events()[n_events:])
    assert compile_cache.cache_dir() == folder


# ----------------------------------------------------------------------------- fair BLAS baseline

def test_fair_blas_environ_drops_only_the_overrides():
    env = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "512", "PATH": "/bin"}
    clean, removed = machine.fair_blas_environ(env)
    assert clean == {"PATH": "/bin"} and removed == ["OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"]
    assert env["OPENBLAS_CORETYPE"] == "Haswell"                    # the input is not touched
    assert machine.fair_blas_environ({"PATH": "/bin"}) == ({"PATH": "/bin"}, [])


def test_reexec_only_when_an_override_is_set(monkeypatch):
    calls = []
    fake = lambda exe, args, env: calls.append((exe, args, env))  # noqa: E731
    for k in machine.BLAS_OVERRIDES:
        monkeypatch.delenv(k, raising=False)
    machine.reexec_with_fair_blas("benchmarks", ["--quick"], execve=fake)
    assert calls == []
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    machine.reexec_with_fair_blas("benchmarks", ["--quick"], execve=fake)
    (exe, args, env), = calls
    assert exe == sys.executable and args == [sys.executable, "-m", "benchmarks", "--quick"]
    assert "OPENBLAS_CORETYPE" not in env
    assert env[machine.REMOVED_MARK] == "OPENBLAS_CORETYPE=Haswell"
    assert os.environ["OPENBLAS_CORETYPE"] == "Haswell"    # this (test) process keeps its env


def test_benchmark_entry_point_runs_without_the_overrides():
    """A real restart: ``python -m benchmarks.machine`` started with the overrides reports them
    removed, and its NumPy BLAS runs on the kernel OpenBLAS picks itself."""
    env = dict(os.environ, OPENBLAS_CORETYPE="Haswell", OPENBLAS_L2_SIZE="512",
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run([sys.executable, "-m", "benchmarks.machine"], env=env, check=True,
                         capture_output=True, text=True, timeout=120).stdout
    info = json.loads(out)
    assert info["overrides_set"] == {}
    assert info["overrides_removed"] == "OPENBLAS_CORETYPE=Haswell OPENBLAS_L2_SIZE=512"
    assert all(lib["architecture"] for lib in info.get("libraries", []))


def test_benchmark_package_import_is_light():
    """Importing ``benchmarks`` must not load NumPy (the restart has to come first)."""
    code = "import sys, benchmarks; print('numpy' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                         text=True, timeout=60).stdout
    assert out.strip() == "False"


def test_device_check_tiny_writes_its_report(tmp_path):
    """``python -m benchmarks --device-check --tiny``: every key case runs (on CPU, tiny sizes),
    the precision is stated, the same-FLOP matmul comparison and precision study are written."""
    res = runner.main(["--device-check", "--tiny", "--out", str(tmp_path)])
    names = [c["name"] for c in res["cases"]]
    assert [n.split("-")[0] for n in names] == ["em", "chunked", "estep", "batch8", "n_init3"]
    for c in res["cases"]:
        assert c["status"] == "ok" and c["impls"]["gmmjax"]["status"] == "ok", c
    em = res["cases"][0]
    assert em["impls"]["sklearn"]["status"] == "ok" and em["loglik_abs_diff"] is not None
    assert res["extra"]["same_flop_matmul"]["matmul_over_gmmjax"] > 0
    prec = res["extra"]["precision"]
    assert set(prec) == {"highest", "high", "default"}
    assert prec["highest"]["rel_diff_vs_highest"] == 0.0 and np.isfinite(prec["high"]["loglik"])
    md = next(tmp_path.glob("*-device-check.md")).read_text()
    assert "Precision.HIGHEST" in md and "1e-4" in md and "same-FLOP matmuls" in md
    data = json.loads(next(tmp_path.glob("*-device-check.json")).read_text())
    assert data["meta"]["tiny"] is True and len(data["cases"]) == 5
    assert next(tmp_path.glob("*-device-check.png")).stat().st_size > 0


def test_compile_cost_reports_one_fit_program(tmp_path):
    """``python -m benchmarks.compile_cost`` builds the estimators' fit program in a fresh
    process and reports its kernels (a positive count), build phases and warm time."""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root), JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-m", "benchmarks.compile_cost", "300", "2", "2",
                          "diag", "2"], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip().splitlines()[-1]
    assert line.startswith("fit program N=300 D=2 K=2 diag n_init=2: ")
    assert int(line.split(": ")[1].split(" kernels")[0]) > 0
    assert "XLA" in line and line.endswith(" ms")


def test_profile_em_parts_and_kernels():
    """``benchmarks.profile_em``: the parts of one EM iteration are measured, and
    ``--kernels`` lists the fit program's XLA kernels (HLO names, not host events or
    containers) with positive time and about one run per chunk per EM iteration."""
    import re

    from benchmarks import profile_em
    parts = profile_em.profile(600, 2, 2, "full")
    assert np.isfinite(parts["fit/iter"])      # a slope of two timings: may be ~0 at this size
    for key in ("em_step", "mahalanobis", "logsumexp+exp", "scatter", "m_step params"):
        assert np.isfinite(parts[key]) and parts[key] > 0, key
    rows = profile_em.kernel_profile(600, 2, 2, "full", n_iter=4, top=50)
    assert rows and all(t > 0 and c > 0 for _, t, c in rows)
    names = [name for name, _, _ in rows]
    assert all(re.fullmatch(r"[a-z][\w.\-]*", n) for n in names), names
    assert not any(n.split(".")[0] in ("while", "cond", "shard_args") for n in names), names
    assert any("fusion" in n for n in names)
    # the statistics pass of a one-chunk fit: its kernels run once per EM iteration (plus the
    # start's pass), never more than a few times
    assert max(c for _, _, c in rows) <= 3
