"""The package's import graph has no cycle, counting imports inside functions too (a lazy import
only hides a cycle from the interpreter, not from the reader)."""
import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "gmmjax"


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the gmmjax modules it imports (relative or absolute, at any depth)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                names = [stem] if node.module else [f"{stem}.{a.name}" for a in node.names]
                targets.update(n for n in names if n in files)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name in files)
        # the package's own __init__ only re-exports lazily; importing it is not a dependency
        graph[mod] = targets - {mod, "gmmjax"}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_graph_sees_lazy_imports():
    graph = import_graph()
    assert "gmmjax.distributed" in graph["gmmjax.fit"]        # imported inside fit()
    assert "gmmjax.core" in graph["gmmjax.fit"]


def test_no_import_cycle_in_gmmjax():
    assert cycles(import_graph()) == []
