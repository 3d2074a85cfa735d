"""Two processes on 127.0.0.1 (2 CPU devices each) after ``jax.distributed.initialize``: the
distributed fits agree with the single-process fit.

Each process passes its own rows (``process_local=True``, ragged: 120 and 81 rows) and also
streams its own rows with ``fit_stream(mesh=...)``. Hard timeouts everywhere: the coordinator's
initialisation / heartbeat / shutdown timeouts (generous: on a loaded 2-core machine one
process may reach the shutdown barrier long before the other), and a wall-clock limit after
which both processes are killed. If the local coordinator cannot start, the test is skipped with
a reason.
"""

import json
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from _subprocess_env import jax_cpu_env

WORKER = textwrap.dedent(r'''
    import json, sys
    pid, port = int(sys.argv[1]), int(sys.argv[2])
    import jax
    jax.config.update("jax_num_cpu_devices", 2)
    try:
        jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid,
                                   initialization_timeout=60, heartbeat_timeout_seconds=60,
                                   shutdown_timeout_seconds=120)
    except Exception as e:  # noqa: BLE001
        print("INIT_FAILED " + repr(e)[:500], flush=True)
        sys.exit(3)
    import numpy as np
    import gmmjax as gj
    from gmmjax.distributed import data_mesh

    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(90, 2)) + 4, rng.normal(size=(71, 2)) - 3,
                        0.5 * rng.normal(size=(40, 2))]).astype(np.float32)
    rng.shuffle(X)
    mine = X[:120] if pid == 0 else X[120:]          # ragged halves: 120 and 81 rows
    key = jax.random.key(11)
    mesh = data_mesh()                               # 4 devices, 2 per process

    def summary(r):
        return {"lb": float(r.lower_bound), "n_iter": int(r.n_iter),
                "means": np.asarray(r.params.means).tolist(),
                "cov": np.asarray(r.params.covariances).tolist()}

    out = {"pid": pid, "n_devices": jax.device_count(), "n_local": jax.local_device_count()}
    out["local"] = summary(gj.fit(key, mine, 3, mesh=mesh, process_local=True))
    chunks = gj.array_chunks(mine, 50)
    out["stream"] = summary(gj.fit_stream(key, chunks, 3, mesh=mesh, sample_size=4096))
    with jax.default_device(jax.local_devices()[0]):
        out["reference"] = summary(gj.fit(key, X, 3))
    print("RESULT" + json.dumps(out), flush=True)
    jax.distributed.shutdown()
''')

WALL_LIMIT = 300


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    script = tmp_path_factory.mktemp("multihost") / "worker.py"
    script.write_text(WORKER)
    env = jax_cpu_env()
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, str(script), str(i), str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in range(2)]
    deadline = time.monotonic() + WALL_LIMIT
    outputs = [None, None]
    try:
        for i, p in enumerate(procs):
            outputs[i] = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        for p in procs:
            p.communicate()
        pytest.fail(f"2-process run did not finish within {WALL_LIMIT} s; both processes killed")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, outputs):
        if "INIT_FAILED" in out:
            pytest.skip("the local JAX coordinator could not start: "
                        + out.split("INIT_FAILED", 1)[1].strip()[:300])
    res = []
    for p, (out, err) in zip(procs, outputs):
        lines = [l for l in out.splitlines() if l.startswith("RESULT")]
        if p.returncode != 0 or not lines:    # pytest.fail keeps the whole text (assert truncates)
            pytest.fail(f"worker exited {p.returncode}\n--- stdout\n{out[-2000:]}\n"
                        f"--- stderr\n{err[-6000:]}")
        res.append(json.loads(lines[-1][len("RESULT"):]))
    return res


def _same(a, b, rtol=1e-5):
    assert abs(a["lb"] - b["lb"]) <= rtol * abs(b["lb"])
    assert a["n_iter"] == b["n_iter"]
    np.testing.assert_allclose(a["means"], b["means"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a["cov"], b["cov"], rtol=1e-3, atol=1e-4)


def test_two_processes_two_devices_each(results):
    assert [r["pid"] for r in results] == [0, 1]
    assert all(r["n_devices"] == 4 and r["n_local"] == 2 for r in results)


def test_process_local_fit_equals_single_process_fit(results):
    for r in results:
        _same(r["local"], r["reference"])
    _same(results[0]["local"], results[1]["local"], rtol=0)   # replicated: identical


def test_stream_each_process_its_rows_equals_fit(results):
    for r in results:
        _same(r["stream"], r["reference"])
    _same(results[0]["stream"], results[1]["stream"], rtol=0)
