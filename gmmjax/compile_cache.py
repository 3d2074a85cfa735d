"""A persistent, per-user cache of gmmjax's compiled programs: :func:`cached_jit`.

``cached_jit(fun, static_argnames=...)`` is a drop-in for ``jax.jit``. On a call with concrete
arguments it looks the program up BEFORE tracing: first in memory, then on disk (an executable
stored with ``jax.experimental.serialize_executable``), and only on a miss traces, lowers and
compiles, then stores the executable. A second process on the same machine so skips tracing,
lowering and compiling (measured ~0.1 s to load vs ~1-5 s to build a fit program on a 2-core CPU).
Tracer arguments (a call inside the user's ``jit``/``vmap``/``grad``), sharded or non-default-device
arrays, ``jax.disable_jit()`` and static arguments that are not plain values all take the plain
``jax.jit`` path, unchanged. JAX's own persistent cache (``jax_compilation_cache_dir``) is never
touched, so the user's programs are cached exactly as they configured.

Where: ``$GMMJAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/gmmjax``, else ``~/.cache/gmmjax``; inside,
one folder per machine key (backend, device kind, platform version, CPU features, jax/jaxlib/Python
versions, XLA_FLAGS, and a hash of gmmjax's own source, so any code change starts afresh).
It is on by default; ``GMMJAX_CACHE=0`` turns it off; ``GMMJAX_CACHE_MAX_MB`` bounds its size
(default 512; the oldest used entries are evicted). A compiled program is code: folders are created 0700, and a folder or
file not owned by the user or writable by group/others is never read (a warning, once). A failed
load (corrupt file, other CPU, other version) recompiles silently; a folder that cannot be written
warns once and the package works without the cache. Each process records which entries it used;
the next run of the same command loads them in a background thread ("prefetch" below).
"""

from __future__ import annotations

import atexit
import functools
import gc
import hashlib
import inspect
import io
import json
import os
import pickle
import platform
import stat
import sys
import tempfile
import threading
import time
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import jax

from .interpreter import release_freed_heap

__all__ = ["CacheEvent", "cache_dir", "cached_jit", "clear", "clear_memory", "configure", "events",
           "quick_compile", "quick_compile_options", "repeated_caller"]

DEFAULT_MAX_MB = 512
# On unless GMMJAX_CACHE=0. (A segfault once blamed on serialize_executable was the process
# running out of memory mappings after ~800 compiled programs: see MAP_PRESSURE.)
DEFAULT_ENABLED = "1"
_MAGIC = b"GMMJAXC1"
_SUFFIX = ".gmmx"
_OFF_VALUES = {"0", "false", "no", "off"}
_PLAIN = (type(None), bool, int, float, str)


@dataclass
class CacheEvent:
    """One program obtained by a :func:`cached_jit` function: ``kind`` is "compile" (traced,
    lowered and compiled: a miss), "load" (read from disk) or "uncached" (compiled, not storable).
    ``seconds`` is the time it took; ``prefetched``: a load the background thread had done (or
    was doing) for this call (see "prefetch" below)."""

    function: str
    kind: str
    seconds: float
    prefetched: bool = False


@dataclass
class _State:
    configured: bool = False
    root: Path | None = None          # None: disabled
    max_bytes: int = DEFAULT_MAX_MB << 20
    machine_dir: Path | None = None   # resolved lazily at the first store/load
    warned: bool = False
    events: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


_state = _State()


def _default_root() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "gmmjax"


def configure(directory: str | os.PathLike | None = None, *, enabled: bool | None = None,
              max_mb: float | None = None) -> None:
    """Set the cache folder, switch it on or off, or bound its size (MB), overriding the
    environment (``GMMJAX_CACHE_DIR``, ``GMMJAX_CACHE``, ``GMMJAX_CACHE_MAX_MB``). Programs already
    in memory stay; later lookups use the new setting. ``configure()`` re-reads the environment."""
    with _state.lock:
        env_on = os.environ.get("GMMJAX_CACHE", DEFAULT_ENABLED).strip().lower() not in _OFF_VALUES
        on = env_on if enabled is None else bool(enabled)
        if directory is None:
            directory = os.environ.get("GMMJAX_CACHE_DIR") or _default_root()
        if max_mb is None:
            try:
                max_mb = float(os.environ.get("GMMJAX_CACHE_MAX_MB", DEFAULT_MAX_MB))
            except ValueError:
                max_mb = DEFAULT_MAX_MB
        _state.root = Path(directory).expanduser() if on else None
        _state.max_bytes = int(max_mb * (1 << 20))
        _state.machine_dir = None
        _state.warned = False
        _state.configured = True
    _drop_prefetched()
    _prefetch.used = []


def _ensure_configured() -> None:
    if not _state.configured:
        configure()


def cache_dir() -> Path | None:
    """The folder entries of this machine go to (None when the cache is off or unusable)."""
    _ensure_configured()
    return _machine_dir()


def events() -> list[CacheEvent]:
    """Programs built or loaded so far in this process (a copy), for benchmarks and tests."""
    return list(_state.events)


def clear() -> None:
    """Delete every stored entry under the cache root (all machines). Memory copies stay."""
    _ensure_configured()
    root = _state.root
    if root is None or not root.is_dir():
        return
    _drop_prefetched()
    for sub in [root, *(p for p in root.iterdir() if p.is_dir())]:
        for f in [*sub.glob("*" + _SUFFIX), sub / _SESSIONS]:
            f.unlink(missing_ok=True)


def _warn_once(message: str) -> None:
    if not _state.warned:
        _state.warned = True
        warnings.warn(f"gmmjax compile cache: {message}; running without it (programs are "
                      "compiled in each process). Set GMMJAX_CACHE_DIR to a private folder, or "
                      "GMMJAX_CACHE=0 to silence this.", RuntimeWarning, stacklevel=4)


# ---------------------------------------------------------------------- machine key

@functools.lru_cache(maxsize=1)
def _source_hash() -> str:
    """sha256 of gmmjax's own .py files (so any code change invalidates the cache)."""
    h = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        h.update(str(path.relative_to(package)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _cpu_features() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _machine_key() -> str:
    import jaxlib
    device = jax.devices()[0]
    parts = [jax.__version__, jaxlib.__version__, sys.version, platform.machine(),
             jax.default_backend(), device.platform, device.device_kind,
             getattr(device.client, "platform_version", ""), _cpu_features(),
             os.environ.get("XLA_FLAGS", ""), _source_hash()]
    return hashlib.sha256("\n".join(map(str, parts)).encode()).hexdigest()[:24]


# ---------------------------------------------------------------------- permissions

def _private(st: os.stat_result) -> bool:
    return st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _make_private_dir(path: Path) -> str | None:
    """Create ``path`` 0700 if missing; None if usable, else why not."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.stat()
    except OSError as e:
        return f"cannot create {path} ({e.strerror or e})"
    if not hasattr(os, "getuid"):   # pragma: no cover - Windows: rely on the user profile's ACLs
        return None
    if not _private(st):
        return (f"refusing {path}: not owned by this user or writable by group/others (a "
                "compiled program is code)")
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{path} is not writable"
    return None


def _machine_dir() -> Path | None:
    if _state.root is None:
        return None
    if _state.machine_dir is None:
        root = _state.root
        why = _make_private_dir(root) or _make_private_dir(root / _machine_key())
        if why is not None:
            _state.root = None
            _warn_once(why)
            return None
        _state.machine_dir = root / _machine_key()
    return _state.machine_dir


# ---------------------------------------------------------------------- entries on disk

class _NoImportUnpickler(pickle.Unpickler):
    """Resolves classes only from modules already imported: the prefetch thread never imports
    (an import there could wait on, or race with, the main thread's imports)."""

    def find_class(self, module, name):
        mod = sys.modules.get(module)
        if mod is None or getattr(getattr(mod, "__spec__", None), "_initializing", False):
            raise pickle.UnpicklingError(f"{module} is not imported")
        value = mod
        for part in name.split("."):
            value = getattr(value, part)
        return value


def _read_private(path: Path, warn: bool = True):
    """(stat, bytes) of a file owned by this user and not writable by others, else None
    (absent, a link, or foreign: a warning, once, when ``warn``)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if hasattr(os, "getuid") and not _private(st):
                if warn:
                    _warn_once(f"refusing {path}: not owned by this user or writable by "
                               "group/others")
                return None
            return st, f.read()
    except OSError:
        return None


def _read_file(path: Path, warn: bool = True, imports: bool = True):
    """(signature, stored key, in_tree, out_tree, payload) of a stored entry, or None (absent,
    foreign or corrupt; with ``imports=False`` also one naming a type of a module not imported
    yet). The signature (inode, size, mtime) tells a later reader whether the file it names is
    still the one read."""
    read = _read_private(path, warn)
    if read is None:
        return None
    st, data = read
    if not data.startswith(_MAGIC):
        return None
    try:
        n = int.from_bytes(data[len(_MAGIC):len(_MAGIC) + 8], "little")
        head = len(_MAGIC) + 8
        header = data[head:head + n]
        stored_key, in_tree, out_tree = (
            pickle.loads(header) if imports else _NoImportUnpickler(io.BytesIO(header)).load())
    except Exception:
        return None
    return _signature(st), stored_key, in_tree, out_tree, data[head + n:]


def _signature(st: os.stat_result) -> tuple:
    return st.st_ino, st.st_size, st.st_mtime_ns


def _read_entry(path: Path, key: str):
    """(in_tree, out_tree, payload) of a stored entry, or None (absent, foreign, corrupt or
    stored under another key)."""
    entry = _read_file(path)
    if entry is None or entry[1] != key:
        return None
    return entry[2:]


def _write_entry(directory: Path, path: Path, key: str, in_tree, out_tree, payload: bytes) -> None:
    head = pickle.dumps((key, in_tree, out_tree), protocol=pickle.HIGHEST_PROTOCOL)
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(_MAGIC + len(head).to_bytes(8, "little") + head + payload)
        os.replace(tmp, path)
    except OSError as e:
        _state.root = _state.machine_dir = None
        _warn_once(f"cannot write to {directory} ({e.strerror or e})")
        return
    _evict(directory.parent)


@functools.lru_cache(maxsize=1)
def _prepare_runtime() -> None:
    """What lowering would have set up before a program runs: on CPU, the LAPACK kernels behind
    the custom calls of cholesky/triangular solves are bound lazily at lowering time, and a
    loaded program calling them unbound crashes (jax 0.10)."""
    try:
        from jax._src.lax.linalg import initialize_lapack
        initialize_lapack()
    except Exception:  # pragma: no cover - moved in another jax: lowering will bind them
        pass


def _discard(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _evict(root: Path) -> None:
    """Delete the least recently used entries (all machines) until the total is under the bound."""
    entries = []
    try:
        for sub in os.scandir(root):
            if sub.is_dir(follow_symlinks=False):
                for e in os.scandir(sub.path):
                    if e.name.endswith((_SUFFIX, ".tmp")):
                        st = e.stat(follow_symlinks=False)
                        entries.append((st.st_mtime, st.st_size, e.path))
    except OSError:
        return
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries):
        if total <= _state.max_bytes:
            break
        try:
            os.unlink(path)
            total -= size
        except OSError:
            pass


# ---------------------------------------------------------------------- prefetch

# A run of a command mostly needs the programs its previous run needed. Each process records, in
# its machine folder's sessions file, the entries it used (first use first, at most
# PREFETCH_PROGRAMS) under its command line and under its script alone. The next process with
# that command line (else that script) loads them in a background thread, started when the
# estimators are imported (before scikit-learn's import) or at the first cached call, while the
# main thread goes on: deserializing an executable releases the GIL (a fit program takes
# ~40-70 ms to load on a 2-core CPU, most of it rebuilding its HLO module). A program is taken
# from the thread only if its file is still the one read and its stored key is the one asked
# for; one not loaded yet is loaded by the caller itself; one never asked for is dropped with
# the process.
PREFETCH_PROGRAMS = 16
_SESSIONS = "sessions.json"
_SESSIONS_KEPT = 64


class _Slot:
    """One entry the prefetch thread loads: state "pending" -> "loading" -> "done", or
    "claimed" (the caller loads it itself)."""

    def __init__(self):
        self.state = "pending"
        self.done = threading.Event()
        self.result = None          # (signature, stored key, executable) or None


@dataclass
class _Prefetch:
    started: bool = False
    directory: Path | None = None
    slots: dict = field(default_factory=dict)        # entry file name -> _Slot
    used: list = field(default_factory=list)         # entry file names this process used
    stop: bool = False
    thread: threading.Thread | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


_prefetch = _Prefetch()


def _after_fork_in_child() -> None:
    """A forked child has no prefetch thread (only the forking one survives): start empty, with
    a fresh lock (the thread may have held the parent's), and prefetch nothing more."""
    global _prefetch
    _prefetch = _Prefetch(started=True)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _command_keys() -> tuple[str, str]:
    """(this command line, its script alone), as the keys of the sessions file."""
    argv = list(sys.argv) or [""]
    script = argv[0]
    if script and os.path.isfile(script):
        script = os.path.realpath(script)
    return repr((script, argv[1:])), repr((script,))


def _read_sessions(directory: Path) -> dict:
    """The sessions file of a machine folder ({command key: [entry names]}), {} if absent,
    foreign or corrupt."""
    read = _read_private(directory / _SESSIONS, warn=False)
    try:
        sessions = json.loads(read[1]) if read is not None else {}
    except ValueError:
        return {}
    if not isinstance(sessions, dict):
        return {}
    return {k: v for k, v in sessions.items() if isinstance(k, str) and isinstance(v, list)
            and all(isinstance(n, str) and n.endswith(_SUFFIX) and os.sep not in n for n in v)}


def _record_use(path: Path) -> None:
    """Add an entry this process used to its sessions (the first PREFETCH_PROGRAMS only)."""
    used = _prefetch.used
    if path.name in used or len(used) >= PREFETCH_PROGRAMS:
        return
    used.append(path.name)
    sessions = _read_sessions(path.parent)
    for key in _command_keys():
        sessions.pop(key, None)
        sessions[key] = list(used)           # most recent last
    sessions = dict(list(sessions.items())[-_SESSIONS_KEPT:])
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
        with os.fdopen(fd, "w") as f:
            json.dump(sessions, f)
        os.replace(tmp, path.parent / _SESSIONS)
    except OSError:
        pass


def start_prefetch() -> None:
    """Start loading, in a background thread, the programs the previous run of this command
    used (once per process; nothing when the cache is off or nothing is recorded)."""
    if _prefetch.started:
        return
    _prefetch.started = True
    _ensure_configured()
    try:
        directory = _machine_dir()      # starts the backend (a failure shows at the first call)
    except Exception:
        return
    if directory is None:
        return
    sessions = _read_sessions(directory)
    exact, script = _command_keys()
    names = sessions.get(exact) or sessions.get(script) or []
    names = list(dict.fromkeys(names))[:PREFETCH_PROGRAMS]
    if not names:
        return
    _prepare_runtime()
    from jax.experimental import serialize_executable   # imported here: never in the thread
    state, slots = _prefetch, {name: _Slot() for name in names}
    with state.lock:
        state.directory, state.slots = directory, slots
    state.thread = threading.Thread(target=_prefetch_loop, name="gmmjax-prefetch", daemon=True,
                                    args=(state, directory, slots, serialize_executable))
    state.thread.start()
    atexit.register(_stop_prefetch, state)


def _prefetch_loop(state: _Prefetch, directory: Path, slots: dict, se) -> None:
    for name, slot in list(slots.items()):
        if state.stop:
            break
        with state.lock:
            if slot.state != "pending":
                continue
            slot.state = "loading"
        try:
            entry = _read_file(directory / name, warn=False, imports=False)
            if entry is not None:
                signature, key, in_tree, out_tree, payload = entry
                slot.result = signature, key, se.deserialize_and_load(payload, in_tree, out_tree)
        except Exception:
            slot.result = None
        finally:
            slot.state = "done"
            slot.done.set()


def _stop_prefetch(state: _Prefetch | None = None) -> None:
    """Stop a prefetch thread (this process's by default) after its current entry; wait."""
    state = _prefetch if state is None else state
    state.stop = True
    if state.thread is not None:
        state.thread.join(timeout=10)


def _take_prefetched(path: Path, key: str):
    """The executable the prefetch thread loaded for ``path`` under ``key`` (waiting for it if
    it is loading), or None: not prefetched, claimed now by the caller, or changed since."""
    with _prefetch.lock:
        if path.parent != _prefetch.directory:
            return None
        slot = _prefetch.slots.pop(path.name, None)
        if slot is None:
            return None
        if slot.state == "pending":
            slot.state = "claimed"
            return None
    slot.done.wait()
    if slot.result is None:
        return None
    signature, stored_key, compiled = slot.result
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    if stored_key != key or _signature(st) != signature or (
            hasattr(os, "getuid") and not _private(st)):
        return None
    return compiled


def _drop_prefetched() -> None:
    with _prefetch.lock:
        for slot in _prefetch.slots.values():
            if slot.state == "pending":
                slot.state = "claimed"
        _prefetch.slots = {}


# ---------------------------------------------------------------------- lookup keys

_thread = threading.local()     # .jax_cache_hit: JAX's own persistent cache served a compile


def _on_jax_event(event: str, **_) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _thread.jax_cache_hit = True


@functools.lru_cache(maxsize=1)
def _listen_to_jax_cache() -> None:
    jax.monitoring.register_event_listener(_on_jax_event)


try:
    from jax._src.config import trace_context as _trace_context
except ImportError:  # pragma: no cover - the private API moved: keep the essential flag
    def _trace_context():
        return (jax.config.jax_enable_x64,)


def _config_text(items: tuple) -> str:
    """The JAX settings that change what a trace produces (x64, matmul precision, PRNG, ...), as
    text stable across processes (objects without a plain value are named by their type)."""
    return repr(tuple(v if isinstance(v, (*_PLAIN, Enum, tuple)) else type(v).__name__
                      for v in items))


try:    # the concrete array class: an exact type check is the fast path of every call
    from jax._src.array import ArrayImpl as _array_type
except ImportError:  # pragma: no cover
    _array_type = None


@functools.lru_cache(maxsize=1)
def _default_devices() -> frozenset:
    return frozenset({jax.devices()[0]})


def _leaf_key(leaf):
    """Hashable abstract value of one argument leaf, or None when the plain jit must run."""
    if isinstance(leaf, jax.core.Tracer):
        return None
    if isinstance(leaf, jax.Array):
        if leaf.sharding.device_set != _default_devices():
            return None
        return (leaf.shape, leaf.dtype, getattr(leaf, "weak_type", False))
    if hasattr(leaf, "__array__") and hasattr(leaf, "dtype") and hasattr(leaf, "shape"):
        return (tuple(leaf.shape), leaf.dtype, False)
    if isinstance(leaf, (bool, int, float, complex)):
        return type(leaf).__name__
    return None


def _static_ok(value) -> bool:
    if isinstance(value, tuple):
        return all(_static_ok(v) for v in value)
    return type(value) in _PLAIN     # exact types: their repr is their value


# ---------------------------------------------------------------------- programs in memory

# Programs one cached function keeps in memory (least recently used dropped first).
MEMORY_PROGRAMS = 256
# XLA:CPU's classic loop emitters instead of its MLIR fusion emitters: fewer, larger kernels
# (a 2,000×3 fit program: 98 -> 64), so a program compiles 30-60% faster, but EM passes over
# large inputs run up to 2× slower. For programs whose run time is negligible next to their
# compile (the tiny fits and evaluations of a notebook); see :func:`quick_compile_options`.
QUICK_COMPILE_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


def quick_compile(elements: int, limit: int) -> bool:
    """Whether a concrete program of ``elements`` (rows·K·D) compiles with
    QUICK_COMPILE_OPTIONS: on CPU, at most ``limit`` elements."""
    return elements <= limit and jax.default_backend() == "cpu"


def quick_compile_options(statics: dict) -> dict:
    """``compiler_options`` for :func:`cached_jit`: QUICK_COMPILE_OPTIONS when the static
    argument ``quick_compile`` is true (callers set it on CPU only), else none."""
    return dict(QUICK_COMPILE_OPTIONS) if statics.get("quick_compile") else {}


# Each compiled CPU program maps its code in separate memory mappings (~80 for a fit program,
# measured with jax 0.10.2); past Linux's vm.max_map_count (65,530 by default) XLA's compiler
# segfaults. Above this fraction of the limit gmmjax drops the programs it holds in memory.
MAP_PRESSURE = 0.5
_instances: "weakref.WeakSet[_CachedJit]" = weakref.WeakSet()


def clear_memory() -> None:
    """Forget every gmmjax program held in memory in this process (disk entries are kept)."""
    _drop_prefetched()
    for fun in list(_instances):
        fun.clear_cache()


@functools.lru_cache(maxsize=1)
def _map_limit() -> int | None:
    try:
        with open("/proc/sys/vm/max_map_count", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def map_count() -> int | None:
    """Memory mappings of this process (Linux), or None where that cannot be read."""
    try:
        with open("/proc/self/maps", "rb") as f:
            return f.read().count(b"\n")
    except OSError:
        return None


def near_map_limit() -> bool:
    """Whether this process holds more than MAP_PRESSURE of the kernel's memory mappings."""
    limit = _map_limit()
    count = None if limit is None else map_count()
    return count is not None and count > MAP_PRESSURE * limit


def relieve_map_pressure() -> bool:
    """After a new program: if the process is near the kernel's limit on memory mappings, drop
    gmmjax's programs held in memory (they are recompiled or reloaded when needed). -> dropped."""
    if not near_map_limit():
        return False
    clear_memory()
    gc.collect()
    return True


class _CachedJit:
    """The callable :func:`cached_jit` returns (wraps a ``jax.jit``; see the module docstring)."""

    def __init__(self, fun: Callable, static_argnames: Sequence[str], compiler_options):
        self._jitted = jax.jit(fun, static_argnames=tuple(static_argnames))
        self._name = f"{fun.__module__}.{fun.__qualname__}"
        self._compiler_options = (compiler_options if callable(compiler_options)
                                  else dict(compiler_options or {}))
        params = list(inspect.signature(fun).parameters.values())
        positional = [p.name for p in params
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        self._static = tuple(
            (name, positional.index(name) if name in positional else None,
             next(p.default for p in params if p.name == name))
            for name in static_argnames)
        self._static_pos = {pos for _, pos, _ in self._static if pos is not None}
        self._static_names = frozenset(static_argnames)
        self._memory: OrderedDict = OrderedDict()      # least recently used first
        functools.update_wrapper(self, fun)
        _instances.add(self)

    def _cache_size(self) -> int:
        """Programs held in this process (cached path + plain-jit path), like jax.jit's."""
        return len(self._memory) + self._jitted._cache_size()

    def clear_cache(self) -> None:
        """Forget the programs held in memory (the disk cache is kept)."""
        self._memory.clear()
        self._jitted.clear_cache()

    def __getattr__(self, name):    # lower, trace, eval_shape, ... of the plain jit
        if name.startswith("__") or name == "_jitted":
            raise AttributeError(name)
        return getattr(self._jitted, name)

    def __call__(self, *args, **kwargs):
        return self.call_and_program(*args, **kwargs)[0]

    def call_and_program(self, *args, **kwargs):
        """(the call's result, the program that computed it or None). The program takes the
        dynamic arguments alone (static ones left out) of the same structure, shapes and dtypes
        and runs with JAX's compiled-call dispatch, skipping this wrapper's lookup (~50 µs for
        a state of many leaves): for loops calling one program many times. None when the call
        took the plain ``jax.jit`` path (call the function itself again)."""
        _ensure_configured()
        if ((_state.machine_dir is None and _machine_dir() is None)
                or jax.config.jax_disable_jit):
            return self._plain(*args, **kwargs), None
        statics = []
        for name, pos, default in self._static:
            if name in kwargs:
                value = kwargs[name]
            elif pos is not None and pos < len(args):
                value = args[pos]
            else:
                value = default
            if not _static_ok(value):
                return self._plain(*args, **kwargs), None
            statics.append(value)
        dyn_args = tuple(a for i, a in enumerate(args) if i not in self._static_pos)
        dyn_kwargs = {k: v for k, v in kwargs.items() if k not in self._static_names}
        leaves, tree = jax.tree_util.tree_flatten((dyn_args, dyn_kwargs))
        avals = []
        for leaf in leaves:
            if type(leaf) is _array_type and leaf.sharding.device_set == _default_devices():
                avals.append((leaf.shape, leaf.dtype, leaf.weak_type))
                continue
            aval = _leaf_key(leaf)
            if aval is None:
                return self._plain(*args, **kwargs), None
            avals.append(aval)
        key = (tuple(statics), tree, tuple(avals), _trace_context())
        compiled = self._memory.get(key)
        if compiled is not None:
            self._memory.move_to_end(key)
            return compiled(*dyn_args, **dyn_kwargs), compiled
        start = time.perf_counter()
        if not _prefetch.started:
            start_prefetch()
        path, text = self._entry_path(key)
        compiled, prefetched = self._load(path, text)
        if compiled is not None:
            try:    # a program that loads but cannot run here is a miss, like a failed load
                out = jax.block_until_ready(compiled(*dyn_args, **dyn_kwargs))
                self._done(key, compiled, "load", start, path, prefetched)
                return out, compiled
            except Exception:
                _discard(path)
                start = time.perf_counter()
        compiled, kind = self._build(path, text, args, kwargs, self._options(key[0]))
        self._done(key, compiled, kind, start, path)
        return compiled(*dyn_args, **dyn_kwargs), compiled

    def _plain(self, *args, **kwargs):
        """The plain ``jax.jit`` call; a call that compiled a program checks the map count and
        returns the compile's freed heap."""
        size = self._jitted._cache_size()
        out = self._jitted(*args, **kwargs)
        if self._jitted._cache_size() != size:
            release_freed_heap()
            relieve_map_pressure()
        return out

    def _done(self, key, compiled, kind: str, start: float, path: Path | None,
              prefetched: bool = False) -> None:
        self._memory[key] = compiled
        if len(self._memory) > MEMORY_PROGRAMS:
            self._memory.popitem(last=False)
        _state.events.append(CacheEvent(self._name, kind, time.perf_counter() - start,
                                        prefetched))
        if kind != "uncached" and path is not None:
            _record_use(path)
        relieve_map_pressure()

    def _options(self, statics: tuple) -> dict:
        """XLA options of the program with these static values (see :func:`cached_jit`)."""
        options = self._compiler_options
        if callable(options):
            options = options(dict(zip((name for name, _, _ in self._static), statics)))
        return dict(options or {})

    def _entry_path(self, key) -> tuple[Path | None, str]:
        statics, tree, avals, config = key
        text = repr((self._name, statics, str(tree), avals, _config_text(config),
                     self._options(statics)))
        directory = _machine_dir()
        if directory is None:
            return None, text
        return directory / (hashlib.sha256(text.encode()).hexdigest()[:40] + _SUFFIX), text

    @staticmethod
    def _load(path: Path | None, text: str):
        """(the stored program or None: absent, foreign, corrupt, other CPU or version;
        whether the prefetch thread loaded it)."""
        if path is None:
            return None, False
        compiled = _take_prefetched(path, text)
        prefetched = compiled is not None
        if compiled is None:
            entry = _read_entry(path, text)
            if entry is None:
                return None, False
            try:
                _prepare_runtime()
                from jax.experimental import serialize_executable as se
                compiled = se.deserialize_and_load(entry[2], entry[0], entry[1])
            except Exception:
                return None, False
        try:
            os.utime(path)      # least recently used entries are evicted first
        except OSError:
            pass
        return compiled, prefetched

    def _build(self, path: Path | None, text: str, args, kwargs, options: dict):
        """Trace, lower and compile; store the executable. -> (compiled, event kind)."""
        _listen_to_jax_cache()
        _thread.jax_cache_hit = False
        collecting = gc.isenabled()
        gc.disable()    # tracing makes many short-lived objects: collections cost ~6% of a build
        try:
            lowered = self._jitted.lower(*args, **kwargs)
            try:
                compiled = lowered.compile(options or None)
            except Exception:
                if not options:
                    raise
                # an option this XLA does not know (another jax version): its default program
                compiled = lowered.compile()
        finally:
            if collecting:
                gc.enable()
        release_freed_heap()    # the compile's freed scratch back to the OS (gmmjax.interpreter)
        # An executable from JAX's own persistent cache (if the user set one) was deserialized;
        # serialized again it loses code on CPU (jax 0.10), so it is not stored: JAX's cache
        # serves it next time.
        if path is None or _machine_dir() is None or _thread.jax_cache_hit:
            return compiled, "uncached"
        try:
            from jax.experimental import serialize_executable as se
            payload, in_tree, out_tree = se.serialize(compiled)
        except Exception:   # e.g. closed-over constants: keep it in memory only
            return compiled, "uncached"
        _write_entry(path.parent, path, text, in_tree, out_tree, payload)
        return compiled, "compile"


def cached_jit(fun: Callable | None = None, *, static_argnames: Sequence[str] = (),
               compiler_options: dict | Callable[[dict], dict] | None = None):
    """``jax.jit(fun, static_argnames=...)`` whose compiled programs persist across processes.

    Usable as ``@cached_jit`` or ``@functools.partial(cached_jit, static_argnames=(...))``.
    ``compiler_options`` are XLA options for programs built on the cached path: a dict, or a
    function of the static arguments (a dict of their values) returning one. Options are part
    of the on-disk key; an option the installed XLA rejects is dropped (the default program).
    """
    if fun is None:
        return functools.partial(cached_jit, static_argnames=static_argnames,
                                 compiler_options=compiler_options)
    if isinstance(static_argnames, str):
        static_argnames = (static_argnames,)
    return _CachedJit(fun, static_argnames, compiler_options)


def repeated_caller(fun: _CachedJit, **statics) -> Callable:
    """``step(*args)`` = ``fun(*args, **statics)`` for a loop calling one :func:`cached_jit`
    function many times (a per-batch step): the first call, and any whose arguments differ in
    structure, shape or dtype from the program's (JAX raises TypeError before running), go
    through ``fun``'s lookup (memory, disk, compile); the others call the program directly. A
    400-batch online-EM stream: 167 µs per step through the lookup, 115 µs directly, 144 µs
    with plain ``jax.jit``."""
    program = None

    def step(*args):
        nonlocal program
        if program is not None:
            try:
                return program(*args)
            except TypeError:
                pass
        out, program = fun.call_and_program(*args, **statics)
        return out

    return step
