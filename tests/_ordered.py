"""Ordered batches (shared by tests/test_sgd.py and tests/test_online.py)."""

import numpy as np


def ordered_stream():
    """Two separated clusters stored one after the other (300 then 200 rows, float32), and a
    callable returning a fresh iterator over batches of 50 rows, in that order, per epoch."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(300, 2)),
                        rng.normal(size=(200, 2)) * 0.7 + 6.0]).astype(np.float32)
    return x, lambda: (x[i:i + 50] for i in range(0, len(x), 50))
