"""``python -m benchmarks [--quick] [--out DIR] [--cases PATTERN ...]`` (see ``--help``)."""

import importlib.util
import os
import sys

# scikit-learn's array-API path (the torch peer column) needs SciPy's array-API mode, which must be
# chosen before SciPy is first imported. Set it only when that peer can run at all.
if ("--no-peers" not in sys.argv and importlib.util.find_spec("torch") is not None
        and "scipy" not in sys.modules):
    os.environ.setdefault("SCIPY_ARRAY_API", "1")

from .runner import main  # noqa: E402

if __name__ == "__main__":
    main()
