"""The cost of JAX in a short Python process: the cyclic garbage collector, and the C heap.

Importing JAX (and scikit-learn behind the estimators) creates ~150,000 long-lived objects that
Python's cyclic collector then walks again and again: during the import itself (~0.2 s on a
2-core CPU), at every full collection, and three or four more times while the interpreter shuts
down (a script that only imports JAX and scikit-learn spends ~0.5 s exiting, ~0.03 s without
them). Two measures, both only about *when* the collector runs, never about what is freed:

- :func:`collector_paused`: gmmjax's heavy imports run with the collector paused (restored
  afterwards, and only if it was on), and, when the body imported anything, their objects
  then move to the oldest generation
  (``gc.freeze(); gc.unfreeze()``, a list splice), so neither the import nor the young
  collections after it walk them: they are examined at the next full collection, which still
  frees any cycle among them (``from gmmjax import GaussianMixture`` plus a grid search's fits,
  second run: ~0.15 s less than re-enabling the collector with ~150,000 young objects);
- :func:`install_exit_freeze`: at interpreter exit, after a full collection (every unreachable
  cycle is freed and its finalisers run while the interpreter is intact), the surviving
  objects are frozen (``gc.freeze``), so the shutdown's own collections skip them. Objects that
  only become unreachable during module teardown are then left to the operating system, which
  Python permits (``__del__`` is not guaranteed for objects alive at exit).
  ``GMMJAX_FAST_EXIT=0`` turns this off.

And one about memory: :func:`release_freed_heap` hands the pages an XLA compile freed back to
the operating system. XLA:CPU compiles kernels on a thread pool, each thread allocating from its
own glibc malloc arena, and glibc returns freed memory of such arenas only when asked
(``malloc_trim``): every compiled program left ~50-150 MB of free heap in the process's
resident memory (a ``fit_stream`` call that compiles its programs: +320 MB resident, ~215 MB of
it free heap). gmmjax asks after each program it compiles (a few milliseconds).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import gc
import os
import sys

FAST_EXIT_ENV = "GMMJAX_FAST_EXIT"
_installed = False


@contextlib.contextmanager
def collector_paused():
    """Pause the cyclic collector for the body (e.g. a large import); restore its state after.
    If the body imported a module, every object then tracked moves to the oldest generation
    (not frozen)."""
    was_enabled = gc.isenabled()
    modules = len(sys.modules)
    gc.disable()
    try:
        yield
    finally:
        # when the body imported something, its objects (modules, functions, types: long-lived)
        # go straight to the oldest generation, so the young collections after it do not walk
        # them; any cycle among them is still freed by the next full collection
        if len(sys.modules) > modules:
            gc.freeze()
            gc.unfreeze()
        if was_enabled:
            gc.enable()


def fast_exit_enabled() -> bool:
    """Whether the exit freeze is wanted (``GMMJAX_FAST_EXIT`` unset or not 0/false/no/off)."""
    return os.environ.get(FAST_EXIT_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _collect_and_freeze() -> None:
    gc.collect()
    gc.freeze()


def install_exit_freeze() -> bool:
    """Register the exit freeze once per process (unless turned off). -> whether registered."""
    global _installed
    if _installed or not fast_exit_enabled():
        return _installed
    atexit.register(_collect_and_freeze)
    _installed = True
    return True


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim`` from the process's C library, or None (another C library or OS)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_freed_heap() -> bool:
    """Return the free pages of every malloc arena to the operating system (glibc's
    ``malloc_trim(0)``; nothing is freed that is still in use). -> whether it could ask."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
