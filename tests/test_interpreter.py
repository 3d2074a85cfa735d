"""gmmjax.interpreter: the cyclic collector paused during heavy imports, and the exit freeze
(a full collection first, so unreachable cycles are still finalised; off with
GMMJAX_FAST_EXIT=0)."""

import gc
import subprocess
import sys
import textwrap

import pytest

from gmmjax import interpreter

from _subprocess_env import jax_cpu_env


@pytest.mark.parametrize("enabled", [True, False])
def test_collector_paused_restores_the_previous_state(enabled):
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        with interpreter.collector_paused():
            assert not gc.isenabled()
        assert gc.isenabled() == enabled
        with pytest.raises(RuntimeError):          # restored on an error too
            with interpreter.collector_paused():
                raise RuntimeError("boom")
        assert gc.isenabled() == enabled
    finally:
        (gc.enable if was else gc.disable)()


@pytest.mark.parametrize("imports", [True, False])
def test_collector_paused_moves_an_imports_objects_to_the_oldest_generation(imports):
    """When the body imports a module, its objects leave the young generations (the next young
    collection does not walk them), nothing stays frozen, and a cycle made in the body that
    becomes garbage is still freed by a full collection; a body that imports nothing leaves
    the generations alone (a young collection frees the cycle)."""
    import types
    import weakref

    class Node:
        pass

    frozen = gc.get_freeze_count()
    try:
        with interpreter.collector_paused():
            if imports:
                sys.modules["_gmmjax_collector_probe"] = types.ModuleType("probe")
            a, b = Node(), Node()
            a.other, b.other = b, a                # a reference cycle
            probe = weakref.ref(a)
    finally:
        sys.modules.pop("_gmmjax_collector_probe", None)
    assert gc.get_freeze_count() == frozen
    del a, b
    gc.collect(1)
    assert (probe() is not None) == imports        # oldest generation: young passes skip it
    gc.collect()
    assert probe() is None                         # a full collection frees the cycle


@pytest.mark.parametrize("value, expected", [(None, True), ("1", True), ("0", False),
                                             ("false", False), ("OFF", False)])
def test_fast_exit_switch(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv(interpreter.FAST_EXIT_ENV, raising=False)
    else:
        monkeypatch.setenv(interpreter.FAST_EXIT_ENV, value)
    assert interpreter.fast_exit_enabled() is expected


SCRIPT = textwrap.dedent("""
    import gc, sys
    import gmmjax
    from gmmjax import interpreter

    class Cycle:
        def __init__(self, path):
            self.path, self.me = path, self      # a reference cycle: only gc frees it
        def __del__(self):
            with open(self.path, "w") as f:
                f.write("finalised")

    gc.disable()                                 # nothing collects it before exit
    Cycle(sys.argv[1])
    print(interpreter._installed)
""")


@pytest.mark.parametrize("fast_exit", ["1", "0"])
def test_cycles_unreachable_at_exit_are_still_finalised(tmp_path, fast_exit):
    marker = tmp_path / "marker.txt"
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(marker)], capture_output=True,
                         text=True, timeout=300, env=jax_cpu_env(GMMJAX_FAST_EXIT=fast_exit))
    assert out.returncode == 0, out.stderr
    installed = out.stdout.strip()
    assert installed == ("True" if fast_exit == "1" else "False")
    if fast_exit == "1":     # collected at exit while the interpreter is intact (Python's own
        assert marker.read_text() == "finalised"   # shutdown, collector off, may skip it)


def test_release_freed_heap_returns_a_threads_freed_arena_pages():
    """Memory freed in a worker thread's malloc arena (as XLA's compile threads leave it) stays
    resident until release_freed_heap asks glibc to return it; what is still in use stays."""
    if interpreter._malloc_trim() is None:
        assert interpreter.release_freed_heap() is False
        pytest.skip("no glibc malloc_trim here")
    import threading

    import numpy as np

    def resident_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    kept = []

    def allocate():
        # 64 kB blocks (below glibc's mmap threshold: from this thread's arena); every other
        # one kept alive, so the freed ones are holes no free() can give back on its own
        blocks = [np.ones(8192) for _ in range(6000)]      # ~390 MB touched
        kept.extend(blocks[::2])
        del blocks
    worker = threading.Thread(target=allocate)
    worker.start()
    worker.join()
    before = resident_mb()
    assert interpreter.release_freed_heap() is True
    after = resident_mb()
    assert before - after > 100, (before, after)            # ~195 MB of holes returned
    assert all(float(b[0]) == 1.0 and float(b[-1]) == 1.0 for b in kept)   # in use: intact
