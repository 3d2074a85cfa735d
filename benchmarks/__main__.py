"""``python -m benchmarks [--quick] [--device-check] [--out DIR] ...`` (see ``--help``)."""

import importlib.util
import os
import sys

from .machine import reexec_with_fair_blas

# scikit-learn and the peers run on NumPy's BLAS: restart without the OpenBLAS kernel overrides
# (before NumPy is loaded) unless asked to keep them. Only this entry point does it.
if __name__ == "__main__" and "--keep-blas-env" not in sys.argv:
    reexec_with_fair_blas("benchmarks", sys.argv[1:])

# scikit-learn's array-API path (the torch peer column) needs SciPy's array-API mode, which must be
# chosen before SciPy is first imported. Set it only when that peer can run at all.
if ("--no-peers" not in sys.argv and importlib.util.find_spec("torch") is not None
        and "scipy" not in sys.modules):
    os.environ.setdefault("SCIPY_ARRAY_API", "1")

from .runner import main  # noqa: E402

if __name__ == "__main__":
    main()
