"""gmmjax.compile_cache: the persistent per-user cache of compiled programs (cached_jit)."""

import json
import os
import stat
import subprocess
import sys
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gmmjax import compile_cache
from gmmjax.compile_cache import cached_jit


# A constant new in each test session makes these programs new to JAX's own persistent cache
# (conftest points it at a fixed test folder), so it cannot serve them instead of ours.
_SESSION = int(np.random.default_rng().integers(1, 1 << 30))


def _affine(x, y, scale=2.0, *, power):
    return scale * x ** power + y + 0 * jnp.float32(_SESSION)


def _fresh():
    """A new cached function with the same name (what a second process sees: nothing in memory)."""
    return cached_jit(_affine, static_argnames=("power", "scale"))


@pytest.fixture(autouse=True)
def _no_jax_cache_writes():
    """Nothing these tests compile goes to JAX's own (shared) test cache."""
    before = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1e9)
    yield
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before)


@pytest.fixture
def cache(tmp_path):
    compile_cache.configure(tmp_path / "cache", enabled=True)
    yield tmp_path / "cache"
    compile_cache.configure()       # back to the environment's (the test folder of conftest)


def _new_events(before):
    return [e.kind for e in compile_cache.events()[before:]]


def _entries(root):
    return sorted(p for p in root.rglob("*.gmmx"))


def test_miss_then_hit_from_disk(cache):
    x, y = jnp.arange(4.0), jnp.ones(4)
    n = len(compile_cache.events())
    first = _fresh()(x, y, power=2)
    assert _new_events(n) == ["compile"]
    (entry,) = _entries(cache)
    assert stat.S_IMODE(entry.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert not stat.S_IMODE(entry.stat().st_mode) & 0o077
    n = len(compile_cache.events())
    again = _fresh()(x, y, power=2)                 # empty memory: read from disk
    assert _new_events(n) == ["load"]
    np.testing.assert_array_equal(again, first)
    np.testing.assert_array_equal(first, _affine(x, y, power=2))
    f = _fresh()
    f(x, y, power=2)
    n = len(compile_cache.events())
    f(x, y, power=2)                                # memory hit: no event
    f(x, y, 2.0, power=2)                           # the default given explicitly: same program
    assert _new_events(n) == []
    f(x, y, power=3)                                # other static value: other program
    f(x.astype(jnp.int32), y, power=2)              # other dtype: other program
    assert _new_events(n) == ["compile", "compile"]
    assert len(_entries(cache)) == 3 and f._cache_size() == 3
    f.clear_cache()
    assert f._cache_size() == 0


def test_disabled_stores_nothing(cache):
    compile_cache.configure(cache, enabled=False)
    n = len(compile_cache.events())
    out = _fresh()(jnp.arange(3.0), 1.0, power=2)
    np.testing.assert_allclose(out, [1.0, 3.0, 9.0])
    assert _new_events(n) == [] and not cache.exists()
    assert compile_cache.cache_dir() is None


def test_environment_turns_it_off_or_moves_it(tmp_path, monkeypatch):
    try:
        monkeypatch.setenv("GMMJAX_CACHE", "0")
        compile_cache.configure()
        assert compile_cache.cache_dir() is None
        monkeypatch.setenv("GMMJAX_CACHE", "1")
        monkeypatch.setenv("GMMJAX_CACHE_DIR", str(tmp_path / "moved"))
        compile_cache.configure()
        assert compile_cache.cache_dir().parent == tmp_path / "moved"
        monkeypatch.delenv("GMMJAX_CACHE_DIR")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        compile_cache.configure()
        assert compile_cache.cache_dir().parent == tmp_path / "xdg" / "gmmjax"
    finally:
        monkeypatch.undo()
        compile_cache.configure()


@pytest.mark.parametrize("damage", ["garbage", "payload", "empty"])
def test_corrupt_entry_recompiles_silently(cache, damage):
    x, y = jnp.arange(4.0), jnp.ones(4)
    expected = _fresh()(x, y, power=2)
    (entry,) = _entries(cache)
    data = entry.read_bytes()
    entry.write_bytes({"garbage": b"not a program", "empty": b"",
                       "payload": data[:-200] + bytes(200)}[damage])
    n = len(compile_cache.events())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = _fresh()(x, y, power=2)
    np.testing.assert_array_equal(out, expected)
    assert _new_events(n) == ["compile"]
    n = len(compile_cache.events())
    _fresh()(x, y, power=2)                          # the rewritten entry loads
    assert _new_events(n) == ["load"]


def test_unwritable_directory_works_and_warns_once(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    compile_cache.configure(blocker / "cache", enabled=True)   # cannot be created (a file is in the way)
    try:
        f = _fresh()
        with pytest.warns(RuntimeWarning, match="running without it") as record:
            a = f(jnp.arange(3.0), 1.0, power=2)
            b = f(jnp.arange(5.0), 1.0, power=2)
            c = _fresh()(jnp.arange(3.0), 1.0, power=3)
        assert len([w for w in record if "compile cache" in str(w.message)]) == 1
        np.testing.assert_allclose(a, [1.0, 3.0, 9.0])
        assert b.shape == (5,) and c[2] == 17.0
        assert compile_cache.cache_dir() is None
    finally:
        compile_cache.configure()


def test_refuses_a_folder_others_can_write(cache):
    cache.mkdir(mode=0o700)
    os.chmod(cache, 0o777)
    n = len(compile_cache.events())
    with pytest.warns(RuntimeWarning, match="refusing"):
        out = _fresh()(jnp.arange(3.0), 1.0, power=2)
    np.testing.assert_allclose(out, [1.0, 3.0, 9.0])
    assert _entries(cache) == [] and _new_events(n) == []


def test_refuses_an_entry_others_can_write(cache):
    x = jnp.arange(3.0)
    _fresh()(x, 1.0, power=2)
    (entry,) = _entries(cache)
    os.chmod(entry, 0o666)
    n = len(compile_cache.events())
    with pytest.warns(RuntimeWarning, match="refusing"):
        _fresh()(x, 1.0, power=2)
    assert _new_events(n) != ["load"]


def test_size_bound_evicts_oldest(cache):
    f = _fresh()
    f(jnp.arange(1.0), 1.0, power=2)
    (first,) = _entries(cache)
    size = first.stat().st_size
    compile_cache.configure(cache, enabled=True, max_mb=2.5 * size / (1 << 20))
    f = _fresh()
    for n in range(2, 6):
        f(jnp.arange(float(n)), 1.0, power=2)
    entries = _entries(cache)
    assert sum(p.stat().st_size for p in entries) <= 2.5 * size
    assert 1 <= len(entries) <= 2 and first not in entries


def test_tracers_and_non_plain_statics_take_the_plain_jit(cache):
    f = _fresh()
    n = len(compile_cache.events())
    x = jnp.arange(3.0)
    np.testing.assert_allclose(jax.jit(lambda v: f(v, 1.0, power=2))(x), [1.0, 3.0, 9.0])
    np.testing.assert_allclose(jax.vmap(lambda v: f(v, 1.0, power=2))(x), [1.0, 3.0, 9.0])
    np.testing.assert_allclose(jax.grad(lambda v: f(v, 1.0, power=2))(3.0), 12.0)
    np.testing.assert_allclose(f(x, 1.0, scale=np.float64(3.0), power=1), [1.0, 4.0, 7.0])
    with jax.disable_jit():
        np.testing.assert_allclose(f(x, 1.0, power=2), [1.0, 3.0, 9.0])
    assert _new_events(n) == [] and _entries(cache) == []


def test_loaded_program_equals_plain_jit(cache):
    """A real gmmjax program (the evaluation) read back from disk gives the plain jit's result."""
    from gmmjax.density import evaluate
    from gmmjax.params import from_covariances
    params = from_covariances(jnp.array([0.4, 0.6]), jnp.array([[0.0, 1.0], [2.0, -1.0]]),
                              jnp.array([[[1.0, 0.2], [0.2, 0.5]], [[0.7, 0.0], [0.0, 2.0]]]))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(128, 2)), jnp.float32)
    # A constant new in each run makes the HLO new, so JAX's own persistent cache (which
    # conftest points at a test folder) cannot serve the compile; nothing is written to it.
    salt = int(np.random.default_rng().integers(1, 1 << 30))

    def program(params, x, chunk_size=None):
        return evaluate.__wrapped__(params, x, chunk_size), jnp.int32(salt)

    n = len(compile_cache.events())
    first = cached_jit(program, static_argnames=("chunk_size",))(params, x)
    second = cached_jit(program, static_argnames=("chunk_size",))(params, x)
    assert _new_events(n) == ["compile", "load"]
    plain = jax.jit(program, static_argnames=("chunk_size",))(params, x)
    assert first[1] == second[1] == plain[1] == salt
    for a, b, c in zip(first[0], second[0], plain[0]):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(b, c)


def test_import_is_light_and_lazy():
    code = ("import sys, gmmjax; heavy = [m for m in ('sklearn', 'matplotlib', 'optax', 'scipy')"
            " if m in sys.modules]; assert not heavy, heavy; "
            "assert set(gmmjax.__all__) <= set(dir(gmmjax)); "
            "from gmmjax import GaussianMixture, fit, distributed; "
            "assert callable(fit) and 'sklearn' in sys.modules; "
            "assert all(getattr(gmmjax, n) is not None for n in gmmjax.__all__)")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})


def _own_function():
    """A cached function of its own (jax.jit's in-memory cache is shared per Python function)."""
    def cube_plus(x, y, scale=2.0, *, power):
        return scale * x ** power + y + 0 * jnp.float32(_SESSION)
    return cached_jit(cube_plus, static_argnames=("power", "scale"))


def test_memory_keeps_the_most_recently_used_programs(cache, monkeypatch):
    monkeypatch.setattr(compile_cache, "MEMORY_PROGRAMS", 2)
    f = _own_function()
    xs = [jnp.arange(float(n)) for n in (2, 3, 4)]
    for x in xs:
        f(x, 1.0, power=2)
    f(xs[1], 1.0, power=2)                          # used again: the most recent
    assert f._cache_size() == 2
    n = len(compile_cache.events())
    f(xs[1], 1.0, power=2)                          # still in memory: no event
    f(xs[0], 1.0, power=2)                          # dropped: read back from disk
    assert _new_events(n) == ["load"]


@pytest.mark.parametrize("cached", [True, False])
def test_programs_are_dropped_near_the_mapping_limit(tmp_path, monkeypatch, cached):
    """Near vm.max_map_count (each compiled CPU program holds memory mappings, and XLA's compiler
    crashes past the limit), a call that built a program drops every gmmjax program in memory;
    results stay right and the next call rebuilds or reloads."""
    if compile_cache.map_count() is None or compile_cache._map_limit() is None:
        pytest.skip("no /proc: the mapping count cannot be read")
    compile_cache.configure(tmp_path / "cache", enabled=cached)
    try:
        f, g = _own_function(), _own_function()
        x = jnp.arange(3.0)
        g(x, 1.0, power=3)
        assert g._cache_size() == 1
        monkeypatch.setattr(compile_cache, "MAP_PRESSURE", 0.0)     # always "near the limit"
        np.testing.assert_allclose(f(x, 1.0, power=2), [1.0, 3.0, 9.0])
        assert f._cache_size() == g._cache_size() == 0
        monkeypatch.setattr(compile_cache, "MAP_PRESSURE", 1.0)
        np.testing.assert_allclose(f(x, 1.0, power=2), [1.0, 3.0, 9.0])
        assert f._cache_size() == 1
    finally:
        compile_cache.configure()


def test_compiler_options_chosen_by_static_values(cache, monkeypatch):
    """``compiler_options`` as a function of the static values: each program is built with its
    own options (recorded here), they are part of the disk key (two entries), and an option the
    installed XLA rejects falls back to the default program, which still computes."""
    seen = []

    def options(statics):
        seen.append(dict(statics))
        return {"xla_cpu_use_fusion_emitters": False} if statics["power"] == 3 else {}

    quick = cached_jit(_affine, static_argnames=("power", "scale"), compiler_options=options)
    x, y = jnp.arange(4.0), jnp.ones(4)
    compile_options = []
    real_compile = jax.stages.Lowered.compile

    def recording_compile(self, compiler_options=None):
        compile_options.append(compiler_options)
        return real_compile(self, compiler_options)

    monkeypatch.setattr(jax.stages.Lowered, "compile", recording_compile)
    np.testing.assert_allclose(quick(x, y, power=3), _affine(x, y, power=3))
    np.testing.assert_allclose(quick(x, y, power=2), _affine(x, y, power=2))
    assert {"power": 3, "scale": 2.0} in seen
    assert compile_options == [{"xla_cpu_use_fusion_emitters": False}, None]
    assert len(_entries(cache)) == 2
    compile_options.clear()
    bad = cached_jit(_affine, static_argnames=("power", "scale"),
                     compiler_options={"xla_no_such_option_anywhere": True})
    np.testing.assert_allclose(bad(x, y, power=4), _affine(x, y, power=4))
    assert compile_options == [{"xla_no_such_option_anywhere": True}, None]


@pytest.mark.parametrize("cached", [True, False])
def test_a_compile_returns_its_freed_heap(tmp_path, monkeypatch, cached):
    """Every program gmmjax builds (cached or plain jit) is followed by one
    interpreter.release_freed_heap call: XLA's compile threads free their scratch into malloc
    arenas that glibc keeps resident unless asked. Loads and memory hits do not ask."""
    calls = []
    monkeypatch.setattr(compile_cache, "release_freed_heap", lambda: calls.append(1) or True)
    compile_cache.configure(tmp_path / "cache", enabled=cached)
    try:
        x = jnp.arange(3.0)
        f = _own_function()
        np.testing.assert_allclose(f(x, 1.0, power=2), [1.0, 3.0, 9.0])
        assert len(calls) == 1
        f(x, 1.0, power=2)                                  # in memory
        assert len(calls) == 1
        if cached:
            f.clear_cache()
            np.testing.assert_allclose(f(x, 1.0, power=2), [1.0, 3.0, 9.0])   # from disk
            assert [e.kind for e in compile_cache.events()[-1:]] == ["load"]
            assert len(calls) == 1
        f(x, 1.0, power=3)                                  # a new program
        assert len(calls) == 2
    finally:
        compile_cache.configure()


def _kinds(before):
    return {(e.function.rsplit(".", 1)[-1], e.kind) for e in compile_cache.events()[before:]}


@pytest.mark.parametrize("what", ["kde", "kde_sample", "missing", "online", "online_step", "sgd",
                                  "sgd_batches", "sgd_step"])
def test_public_programs_are_stored_and_loaded(cache, what):
    """The KDE, missing-value evaluation and online-EM programs are cached_jit programs: a
    first call stores them, a process with nothing in memory loads them (no compile), with
    equal results. The default online schedule and the default SGD optimizer are tuples of
    numbers, so they key the cache (a lambda or an optax transformation could not)."""
    import gmmjax as gj
    from gmmjax.online import stepwise_schedule
    rng = np.random.default_rng(3)
    x = rng.normal(size=(150, 2)).astype(np.float32)
    holes = x.copy()
    holes[rng.random(x.shape) < 0.2] = np.nan
    params = gj.fit(jax.random.key(0), x, 2, covariance_type="diag", max_iter=5).params
    calls = {
        "kde": ("_kde_program", lambda: gj.kde_log_prob(x[:40], x, bandwidth=0.5)),
        "kde_sample": ("_kde_sample", lambda: gj.KernelDensity(bandwidth=0.5).fit(x)
                       .sample(7, random_state=1)),
        "missing": ("_evaluate", lambda: gj.impute(params, holes)),
        "online": ("_fit_online_array", lambda: gj.fit_online(
            jax.random.key(1), x, 2, n_epochs=1, batch_size=50).params.means),
        "sgd": ("_fit_sgd_array", lambda: gj.fit_sgd(       # the default optimizer (adam)
            jax.random.key(2), x, 2, n_epochs=2, batch_size=50).params.means),
        "sgd_batches": ("_sgd_setup", lambda: gj.fit_sgd(
            jax.random.key(2), lambda: iter([x[:75], x[75:]]), 2, n_epochs=2).params.means),
        # the per-batch steps over an iterable of batches (compile_cache.repeated_caller)
        "online_step": ("_online_step_jit", lambda: gj.fit_online(
            jax.random.key(1), lambda: iter([x[:75], x[75:]]), 2, n_epochs=2).params.means),
        "sgd_step": ("_frame_step", lambda: gj.fit_sgd(
            jax.random.key(2), lambda: iter([x[:75], x[75:]]), 2, n_epochs=2).params.means),
    }
    name, call = calls[what]
    compile_cache.clear_memory()        # not held from another test: built into this folder
    n = len(compile_cache.events())
    first = np.asarray(call())
    assert (name, "compile") in _kinds(n), _kinds(n)
    compile_cache.clear_memory()
    n = len(compile_cache.events())
    again = np.asarray(call())
    assert (name, "load") in _kinds(n) and (name, "compile") not in _kinds(n), _kinds(n)
    np.testing.assert_array_equal(again, first)
    assert stepwise_schedule() == stepwise_schedule(2.0, 0.6)
    assert hash(stepwise_schedule(kappa=1.0)) == hash(stepwise_schedule(kappa=1))


def test_repeated_caller_calls_the_program_directly_and_follows_new_shapes(cache, monkeypatch):
    f = _own_function()
    step = compile_cache.repeated_caller(f, power=2)
    lookups = []
    real = f.call_and_program
    monkeypatch.setattr(f, "call_and_program",
                        lambda *a, **k: (lookups.append(a[0].shape), real(*a, **k))[1])
    n = len(compile_cache.events())
    x, y = jnp.arange(4.0) / 4, jnp.ones(4)
    expected = np.asarray(x)
    for _ in range(4):                  # the first call looks the program up, the rest run it
        x = step(x, y)
        expected = 2.0 * expected ** 2 + 1.0
    np.testing.assert_allclose(x, expected, rtol=1e-6)
    assert lookups == [(4,)] and _new_events(n) == ["compile"]
    z = step(jnp.arange(6.0), jnp.ones(6))          # other shapes: looked up again
    np.testing.assert_allclose(z, 2.0 * np.arange(6.0) ** 2 + 1.0)
    assert lookups == [(4,), (6,)] and _new_events(n) == ["compile", "compile"]
    assert step(x, y).shape == (4,) and lookups[-1] == (4,)    # back: a memory hit, no event
    assert _new_events(n) == ["compile", "compile"]
    assert real(x, y, power=2)[1] is not None
    with jax.disable_jit():                          # the plain path: no program to reuse
        assert real(x, y, power=2)[1] is None


# ---------------------------------------------------------------------- prefetch

@pytest.fixture
def new_process(monkeypatch):
    """Make this process look new to the prefetch machinery; -> a function doing it again."""
    def renew():
        compile_cache._stop_prefetch()
        monkeypatch.setattr(compile_cache, "_prefetch", compile_cache._Prefetch())
        return compile_cache._prefetch
    renew()
    yield renew
    compile_cache._stop_prefetch()


def _events_since(n):
    return [(e.kind, e.prefetched) for e in compile_cache.events()[n:]]


def _prefetch_now():
    compile_cache.start_prefetch()
    if compile_cache._prefetch.thread is not None:
        compile_cache._prefetch.thread.join()
    return compile_cache._prefetch


def test_next_run_of_the_command_prefetches_the_programs_this_run_used(cache, new_process,
                                                                          monkeypatch):
    x, y = jnp.arange(4.0), jnp.ones(4)
    f = _fresh()
    first = [f(x, y, power=p) for p in (2, 3)]
    sessions = json.loads((compile_cache.cache_dir() / "sessions.json").read_text())
    exact, script = compile_cache._command_keys()
    assert sorted(sessions[exact]) == sorted(p.name for p in _entries(cache))
    assert sessions[script] == sessions[exact]
    state = new_process()                    # the next run: the thread loads both programs ...
    _prefetch_now()
    assert [s.state for s in state.slots.values()] == ["done", "done"]
    monkeypatch.setattr(compile_cache, "_read_entry", lambda *a: pytest.fail("read again"))
    n = len(compile_cache.events())
    g = _fresh()                             # ... and its calls take them, not reading again
    again = [g(x, y, power=p) for p in (2, 3)]
    assert _events_since(n) == [("load", True), ("load", True)]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert state.slots == {}


@pytest.mark.parametrize("change", ["replaced", "corrupt"])
def test_a_prefetched_program_whose_file_changed_is_not_used(cache, new_process, change):
    x, y = jnp.arange(4.0), jnp.ones(4)
    expected = _fresh()(x, y, power=2)
    (entry,) = _entries(cache)
    new_process()
    (slot,) = _prefetch_now().slots.values()
    assert slot.result is not None           # loaded before the file changed
    data = entry.read_bytes()
    entry.unlink()
    entry.write_bytes(data if change == "replaced" else data[: len(data) // 2])
    entry.chmod(0o600)
    n = len(compile_cache.events())
    np.testing.assert_array_equal(_fresh()(x, y, power=2), expected)
    assert _events_since(n) == [("load" if change == "replaced" else "compile", False)]


def test_the_caller_loads_what_the_thread_has_not_reached(cache, new_process):
    x, y = jnp.arange(4.0), jnp.ones(4)
    _fresh()(x, y, power=2)
    (entry,) = _entries(cache)
    state = new_process()
    state.started, state.directory = True, entry.parent      # a thread that never got to it
    state.slots = {entry.name: compile_cache._Slot()}
    n = len(compile_cache.events())
    _fresh()(x, y, power=2)
    assert _events_since(n) == [("load", False)] and state.slots == {}


def test_prefetch_ignores_a_foreign_sessions_file_and_clearing_drops_it(cache, new_process):
    x, y = jnp.arange(4.0), jnp.ones(4)
    _fresh()(x, y, power=2)
    sessions = compile_cache.cache_dir() / "sessions.json"
    sessions.chmod(0o666)                    # writable by others: never followed
    new_process()
    assert _prefetch_now().thread is None and compile_cache._prefetch.slots == {}
    sessions.chmod(0o600)
    new_process()
    assert len(_prefetch_now().slots) == 1
    compile_cache.clear_memory()             # programs held in memory go, prefetched ones too
    assert compile_cache._prefetch.slots == {}
    compile_cache.clear()
    assert not sessions.exists() and _entries(cache) == []


class _Pair(NamedTuple):
    a: jax.Array
    b: jax.Array


def test_the_prefetch_thread_never_imports(cache, monkeypatch):
    f = cached_jit(lambda pair: pair.a * pair.b + 0 * jnp.float32(_SESSION))
    f(_Pair(jnp.ones(3), jnp.arange(3.0)))          # an entry whose tree names _Pair
    (entry,) = _entries(cache)
    assert compile_cache._read_file(entry, imports=False) is not None
    monkeypatch.delitem(sys.modules, _Pair.__module__)   # as if its module were not imported
    assert compile_cache._read_file(entry, imports=False) is None     # skipped, not imported
    assert _Pair.__module__ not in sys.modules


def test_a_forked_child_starts_without_the_parents_prefetch(new_process, monkeypatch):
    parent = new_process()
    parent.slots = {"x.gmmx": compile_cache._Slot()}
    parent.lock.acquire()                    # the parent's thread held the lock when it forked
    try:
        compile_cache._after_fork_in_child()
        child = compile_cache._prefetch
        assert child is not parent and child.started and child.slots == {}
        assert child.lock.acquire(blocking=False)
        child.lock.release()
        compile_cache.start_prefetch()       # prefetches nothing more
        assert child.thread is None
    finally:
        parent.lock.release()
