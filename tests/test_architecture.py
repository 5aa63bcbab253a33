"""The package's import graph: no cycles, and inference never reaches training.

Every `import` and `from ... import` in src/ecgvit is read with ast, including imports inside
functions (a lazy import is still a dependency), so this fails on a cycle that only works
because an import was moved into a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "ecgvit"


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def import_graph() -> dict[str, set[str]]:
    """module -> the ecgvit modules it imports (a `from pkg import name` that names a submodule
    counts as importing that submodule; `if TYPE_CHECKING:` imports are not run and not counted)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        type_only: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                type_only.update(id(n) for stmt in node.body for n in ast.walk(stmt))
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(tree):
            if id(node) in type_only:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in node.names]
            for t in targets:
                if t == "ecgvit" or t.startswith("ecgvit."):
                    # "import ecgvit.a.b" depends on ecgvit.a.b (the deepest module that exists)
                    while t not in mods and "." in t:
                        t = t.rsplit(".", 1)[0]
                    if t != name:
                        graph[name].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        v = todo.pop()
        for w in graph.get(v, ()):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def test_graph_sees_lazy_imports_and_submodules():
    g = import_graph()
    # A lazy import inside a function is an edge: ecgvit.__init__ imports the predictor on demand.
    assert "ecgvit.runtime.predictor" in g["ecgvit"]
    assert "ecgvit.runtime.gate" in g["ecgvit.runtime.inputs"]


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, f"import cycles: {found}"


@pytest.mark.parametrize("leaf", ["ecgvit.config", "ecgvit.metrics", "ecgvit.run", "ecgvit.data.io"])
def test_lower_layers_never_import_runtime_engine_serve_or_cli(leaf):
    up = {
        m
        for m in reachable(import_graph(), leaf)
        if m.split(".")[1:2] and m.split(".")[1] in ("runtime", "engine", "serve", "cli", "export")
    }
    assert not up, f"{leaf} reaches {sorted(up)}"


def test_runtime_never_reaches_engine():
    g = import_graph()
    runtime = [m for m in g if m == "ecgvit.runtime" or m.startswith("ecgvit.runtime.")]
    assert runtime, "no ecgvit.runtime modules found"
    for m in runtime:
        bad = sorted(x for x in reachable(g, m) if x == "ecgvit.engine" or x.startswith("ecgvit.engine."))
        assert not bad, f"{m} reaches {bad}"
