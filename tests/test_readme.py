"""Every ```python block of README.md runs as written.

The blocks of one ``##`` section run in order in one namespace (they continue each other, as the
text reads); each section runs in its own fresh Python process, so nothing imported by another
section leaks in (``gmmjax.io`` must be imported where it is used) and a section may configure JAX
before it starts (the many-devices example simulates 4 CPU devices itself). The processes run in
an empty temporary directory with matplotlib's Agg backend; the Plots section is also checked for
what it draws.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TIMEOUT_S = 600

# Runs one section's blocks (stdin: JSON list of [first line, source]) and prints, as its last
# line, a JSON summary of the matplotlib figures left open.
RUNNER = textwrap.dedent(r'''
    import json, sys, time
    blocks = json.loads(sys.stdin.read())
    namespace = {"__name__": "__main__"}
    for line, src in blocks:
        t0, c0 = time.perf_counter(), time.process_time()
        exec(compile(src, f"README.md, block at line {line}", "exec"), namespace)
        print(f"README block at line {line}: {time.perf_counter() - t0:.1f} s wall, "
              f"{time.process_time() - c0:.1f} s CPU", file=sys.stderr)
    figures = []
    if "matplotlib.pyplot" in sys.modules:
        import matplotlib.pyplot as plt
        from matplotlib.contour import ContourSet
        for num in plt.get_fignums():
            fig = plt.figure(num)
            figures.append([{"lines": len(ax.lines), "patches": len(ax.patches),
                             "contours": sum(isinstance(c, ContourSet) for c in ax.get_children()),
                             "collections": len(ax.collections), "title": ax.get_title(),
                             "xlabel": ax.get_xlabel()}
                            for ax in fig.axes])
    print("FIGURES " + json.dumps(figures))
''')


def readme_sections() -> dict[str, list[tuple[int, str]]]:
    """{section title: [(line number, source) of each ```python block]}, in README order."""
    sections: dict[str, list[tuple[int, str]]] = {}
    title, block, start = "(top)", None, 0
    for number, line in enumerate(README.read_text(encoding="utf-8").splitlines(), 1):
        if block is not None:
            if line.strip() == "```":
                sections.setdefault(title, []).append((start, "\n".join(block) + "\n"))
                block = None
            else:
                block.append(line)
        elif line.startswith("## "):
            title = line[3:].strip()
        elif line.strip() == "```python":
            block, start = [], number + 1
    assert block is None, "README.md has an unclosed ```python block"
    return sections


SECTIONS = readme_sections()


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:30]


def test_readme_has_python_blocks():
    assert sum(len(b) for b in SECTIONS.values()) >= 10
    # a block that no section header precedes would run without its context
    assert "(top)" not in SECTIONS


def run_section(title: str, tmp_path: Path) -> list:
    env = dict(os.environ, MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                          if p))
    env.pop("JAX_NUM_CPU_DEVICES", None)       # a section that needs devices makes them itself
    # Small examples: XLA's optimisation passes cost more than they save (as in test_notebooks).
    flags = env.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in flags:
        env["XLA_FLAGS"] = (flags + " --xla_backend_optimization_level=0").strip()
    proc = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(SECTIONS[title]),
                          capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=TIMEOUT_S)
    assert proc.returncode == 0, (f"README section {title!r} failed:\n{proc.stderr[-6000:]}")
    print(proc.stdout, proc.stderr)     # output and per-block times (shown with -rP)
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("FIGURES "), proc.stdout[-2000:]
    return json.loads(last[len("FIGURES "):])


@pytest.mark.parametrize("title", list(SECTIONS), ids=[_slug(t) for t in SECTIONS])
def test_readme_section_runs(title, tmp_path):
    figures = run_section(title, tmp_path)
    if title == "Plots":
        # one figure, two panels: criterion curves on the left, density + ellipses on the right
        assert len(figures) == 1, f"the Plots example opened {len(figures)} figures"
        left, right = figures[0][:2]            # (a colour bar may add a third axes)
        assert left["contours"] == 0 and left["patches"] == 0, left   # no density on the curves
        assert left["lines"] >= 4 and left["xlabel"].startswith("number of components"), left
        assert right["contours"] >= 1 and right["patches"] >= 2, right  # contours + ellipses
        assert (tmp_path / "gmm.png").stat().st_size > 0
