"""The streaming benchmark's peak RSS is the child's own, not the parent's inherited high-water
mark (ru_maxrss survives fork + exec on Linux)."""

import re
import sys

import numpy as np
import pytest

from benchmarks import cases_streaming

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _own_peak_mb():
    status = open("/proc/self/status").read()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M).group(1)) / 1024


def test_child_reports_its_own_peak_rss(tmp_path, monkeypatch):
    monkeypatch.setattr(cases_streaming.tempfile, "tempdir", str(tmp_path))
    n = 4096
    path = cases_streaming._make_memmap(n, cases_streaming.D, cases_streaming.K)
    ballast = np.ones((96, 1 << 20))            # 768 MB touched: the parent's high-water mark
    parent = _own_peak_mb()
    res = cases_streaming._run_child(path, n, chunk=1024, passes=1)
    del ballast
    assert parent > 800
    # The child imports JAX and fits a 256 kB file: a few hundred MB, far below the parent.
    assert 0 < res["rss_after_import_mb"] <= res["peak_rss_mb"] < parent - 500
    assert res["fit_stream_peak_growth_mb"] < cases_streaming.TARGET_RSS_MB
    # the second call (programs compiled, high-water mark reset) is measured on its own
    assert 0 <= res["warm_peak_growth_mb"] < cases_streaming.TARGET_RSS_MB
    assert np.isfinite(res["loglik"]) and res["n_iter"] == 1
