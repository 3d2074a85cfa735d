"""The time-to-first-result benchmark (benchmarks/workflow.py), tiny version: fresh processes,
a first run that compiles into a fresh HOME's cache and a second run that only loads."""

from benchmarks import workflow


def test_tiny_classic_workflow_second_run_loads_every_program():
    res = workflow.run_workflows(["classic"], tiny=True, sklearn_runs=1)["classic"]
    first, second, sk = res["gmmjax_first"], res["gmmjax_second"], res["sklearn"]
    # Every fit runs the JAX EM: 2 sweep fits + 1 moons fit (at most 3 fit programs), one
    # evaluation program per (K, D) at most (K = 1, 2 in 1-D; 3 in 2-D); the estimators' sample
    # draws with NumPy (no program). Each built once in the first run and read back, not built,
    # in the second.
    built = {name: r["compile"] for name, r in first["programs"].items()}
    assert 1 <= built["_fit_program"] <= 3 and 1 <= built["evaluate"] <= 3
    assert set(built) == {"_fit_program", "evaluate"}
    assert all(r["load"] == 0 and r["uncached"] == 0 for r in first["programs"].values())
    assert first["n_programs"] == sum(built.values())
    assert {name: r["load"] for name, r in second["programs"].items()} == built
    assert all(r["compile"] == 0 and r["uncached"] == 0 for r in second["programs"].values())
    # The second run has the first run's command line: its programs were loaded by the
    # prefetch thread while scikit-learn imported (the thread may lag on a busy machine, so
    # at least one, not all) -- none in the first run, which had nothing to prefetch.
    assert sum(r["prefetched"] for r in second["programs"].values()) >= 1
    assert all(r["prefetched"] == 0 for r in first["programs"].values())
    # ... and XLA compiles nothing else either: no eager jax.numpy op on the host path (a scalar
    # conversion or a padding concatenate compiles ~0.1 s in every new process)
    assert second["xla_compiles"] == 0, second
    for key in ("best_k", "flagged", "anomalies"):
        assert second[key] == first[key]
    assert sk["best_k"] == first["best_k"] == 2
    assert res["first_ratio"] == first["wall_s"] / sk["wall_s"] > 0
    assert workflow.byte_compile_gmmjax()       # done by run_workflows; every module compiles
    table = workflow.render({"classic": res})
    assert "classic" in table and "2nd loads" in table
