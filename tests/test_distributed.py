"""Sharded fits on 4 CPU devices: shard_map + psum statistics equal the single-device fit.

JAX fixes its device count when it starts, so all checks run in ONE subprocess started with
JAX_NUM_CPU_DEVICES=4 (the pytest process itself is untouched); each test asserts on its part of
the JSON the subprocess prints.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from _subprocess_env import jax_cpu_env

WORKER = textwrap.dedent(r'''
    import json, sys
    import jax
    jax.config.update("jax_num_cpu_devices", 4)
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    import gmmjax as gj
    from gmmjax.distributed import data_mesh, shard_rows, statistics
    from gmmjax.stats import sufficient_statistics

    out = {"n_devices": jax.device_count()}
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(90, 2)) + 4, rng.normal(size=(71, 2)) - 3,
                        0.5 * rng.normal(size=(40, 2))]).astype(np.float32)     # 201 rows
    W = rng.uniform(0.2, 2.0, size=X.shape[0]).astype(np.float32)
    key = jax.random.key(3)
    mesh = data_mesh()

    def summary(r):
        return {"lb": float(r.lower_bound), "n_iter": int(r.n_iter), "status": int(r.status),
                "means": np.asarray(r.params.means).tolist(),
                "cov": np.asarray(r.params.covariances).tolist(),
                "weights": np.asarray(r.params.weights).tolist(),
                "restart_lbs": np.asarray(r.restart_lower_bounds).tolist(),
                "replicated": bool(getattr(r.params.means, "sharding", None) is None
                                   or r.params.means.sharding.is_fully_replicated)}

    import time
    clock = [time.process_time()]
    fitted = {}

    def tick(name):
        now = time.process_time()
        out.setdefault("cpu_s", {})[name] = round(now - clock[0], 2)
        clock[0] = now

    def pair(name, **kw):
        fitted[name] = gj.fit(key, X, 3, **kw)
        out[name] = {"single": summary(fitted[name]),
                     "sharded": summary(gj.fit(key, X, 3, mesh=mesh, **kw))}
        tick(name)

    pair("full_kmeans", covariance_type="full")
    pair("diag_rfd_weighted", covariance_type="diag", init="random_from_data", sample_weight=W)

    # a pre-sharded global jax.Array is detected without mesh= (201 rows, padded per device)
    xs, ws, n = shard_rows(X, mesh, sample_weight=None)
    out["presharded_rows"] = [int(xs.shape[0]), n, len(xs.sharding.device_set)]
    import gmmjax.distributed as gd
    before = gd._sharded_program._cache_size()
    out["presharded"] = summary(gj.fit(key, xs, 3, sample_weight=ws))
    out["presharded_new_compiles"] = gd._sharded_program._cache_size() - before
    tick("presharded")

    # restarts over a second mesh axis (2 groups x 2 data devices)
    mesh2 = data_mesh(restart_groups=2)
    kw = dict(n_init=4, covariance_type="tied", init="k-means++")
    out["restarts"] = {"single": summary(gj.fit(key, X, 3, **kw)),
                       "sharded": summary(gj.fit(key, X, 3, mesh=mesh2, restart_axis="restarts",
                                                 **kw))}
    try:
        gj.fit(key, X, 3, n_init=3, mesh=mesh2, restart_axis="restarts")
        out["restart_error"] = None
    except ValueError as e:
        out["restart_error"] = str(e)
    try:
        gj.fit(key, X, 3, mesh=mesh, data_axis="rows")
        out["axis_error"] = None
    except ValueError as e:
        out["axis_error"] = str(e)
    tick("restarts+errors")
    try:
        gj.fit(key, np.where(np.arange(201)[:, None] == 5, np.nan, X), 3, mesh=mesh)
        out["nan_error"] = None
    except ValueError as e:
        out["nan_error"] = str(e)

    # the statistics building block equals the single-device statistics
    params = fitted["full_kmeans"].params
    xs, ws, _ = shard_rows(X, mesh, sample_weight=W)
    shift = jnp.asarray(X.mean(0))
    a = statistics(params, xs, ws, mesh=mesh, shift=shift)
    b = sufficient_statistics(params, jnp.asarray(X), jnp.asarray(W), shift)
    out["stats_close"] = all(bool(np.allclose(u, v, rtol=1e-5, atol=1e-4))
                             for u, v in zip(a, b))
    tick("statistics")

    # the compiled EM program holds no all-gather of row-sized arrays
    import gmmjax.distributed as gd
    hlo = gd._sharded_program.lower(
        key, xs, ws, None, np.float32(1e-3), np.float32(1e-6), None, mesh=mesh,
        data_axis="data", restart_axis=None, n_components=3, covariance_type="full",
        init="kmeans", n_init=1, max_iter=100, chunk_size=None).compile().as_text()
    out["hlo_all_gather"] = [l.strip()[:300] for l in hlo.splitlines()
                             if "all-gather(" in l or "all_gather(" in l]
    tick("hlo")

    # fit_stream with every chunk sharded over the mesh
    chunks = gj.array_chunks(X, 50)
    out["stream"] = summary(gj.fit_stream(key, chunks, 3, mesh=mesh))
    tick("stream")

    # float64 (scoped x64), spherical, random responsibilities
    with jax.enable_x64(True):
        X64 = X.astype(np.float64)
        kw = dict(covariance_type="spherical", init="random", tol=1e-8)
        sharded = gj.fit(key, X64, 3, mesh=mesh, **kw)
        out["f64"] = {"single": summary(gj.fit(key, X64, 3, **kw)), "sharded": summary(sharded),
                      "dtype": str(sharded.params.means.dtype)}
    tick("f64")
    print("RESULT" + json.dumps(out))
''')


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    script = tmp_path_factory.mktemp("dist") / "worker.py"
    script.write_text(WORKER)
    env = jax_cpu_env(JAX_NUM_CPU_DEVICES="4")
    try:
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                              timeout=540, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail("the 4-device subprocess did not finish within 540 s")
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
    assert proc.returncode == 0 and lines, (proc.stdout[-3000:], proc.stderr[-5000:])
    return json.loads(lines[-1][len("RESULT"):])


def _assert_same(pair, rtol=1e-5, atol=1e-4):
    a, b = pair["single"], pair["sharded"]
    assert abs(a["lb"] - b["lb"]) <= rtol * abs(a["lb"])
    assert a["n_iter"] == b["n_iter"] and a["status"] == b["status"]
    for field in ("means", "cov", "weights"):
        np.testing.assert_allclose(b[field], a[field], rtol=rtol * 100, atol=atol)
    assert b["replicated"]


def test_four_devices_in_subprocess_only(results):
    import jax
    assert results["n_devices"] == 4
    assert jax.device_count() == 1 or "JAX_NUM_CPU_DEVICES" in os.environ


def test_sharded_fit_equals_single_device_full_kmeans(results):
    _assert_same(results["full_kmeans"])


def test_sharded_fit_equals_single_device_weighted_random_from_data(results):
    _assert_same(results["diag_rfd_weighted"])


def test_presharded_array_is_detected_and_padded(results):
    n_pad, n, n_dev = results["presharded_rows"]
    assert n == 201 and n_pad % 4 == 0 and n_pad >= 201 and n_dev == 4
    assert results["presharded_new_compiles"] == 0      # same shapes: the program is reused
    _assert_same({"single": results["full_kmeans"]["single"], "sharded": results["presharded"]})


def test_restarts_on_second_mesh_axis(results):
    pair = results["restarts"]
    np.testing.assert_allclose(pair["sharded"]["restart_lbs"], pair["single"]["restart_lbs"],
                               rtol=1e-5)
    assert abs(pair["single"]["lb"] - pair["sharded"]["lb"]) <= 1e-5 * abs(pair["single"]["lb"])


def test_bad_inputs_raise(results):
    assert "multiple" in results["restart_error"]
    assert "data_axis" in results["axis_error"]
    assert "NaN" in results["nan_error"]


def test_statistics_helper_matches_single_device(results):
    assert results["stats_close"]


def test_no_row_sized_all_gather(results):
    # The compiled (partitioned) program gathers only per-device scalars (k-means++ totals):
    # nothing with the row dimension (rows per device, or all padded rows).
    import re
    n_pad = results["presharded_rows"][0]
    rows = f"({n_pad // 4}|{n_pad})"
    assert results["hlo_all_gather"], "expected the k-means++ scalar all-gathers"
    for line in results["hlo_all_gather"]:
        assert not re.search(r"[\[,]" + rows + r"[\],]", line), line


def test_stream_over_mesh_equals_fit(results):
    _assert_same({"single": results["full_kmeans"]["single"], "sharded": results["stream"]})


def test_float64_spherical_random_init(results):
    _assert_same(results["f64"], rtol=1e-7, atol=1e-8)
    assert results["f64"]["dtype"] == "float64"


def test_host_level_errors_in_main_process():
    # run in the (single-device) pytest process: these fail before anything is compiled
    import jax
    import gmmjax as gj
    from gmmjax.distributed import data_mesh

    mesh = data_mesh()
    x = np.ones((10, 2), np.float32)
    with pytest.raises(ValueError, match="host-level"):
        jax.jit(lambda a: gj.fit(jax.random.key(0), a, 2, mesh=mesh).lower_bound)(x)
    with pytest.raises(ValueError, match="n_devices"):
        data_mesh(jax.device_count() + 1)
    with pytest.raises(ValueError, match="restart_groups"):
        data_mesh(restart_groups=jax.device_count() + 1)
    with pytest.raises(ValueError, match="data_axis"):
        gj.fit(jax.random.key(0), x, 2, mesh=mesh, data_axis="rows")
    with pytest.raises(ValueError, match="n_components"):
        gj.fit(jax.random.key(0), x[:1], 2, mesh=mesh)
