"""The package is a one-way house: no import cycle among keras_nfnet/ and training/ modules.

Every ``import`` counts, at module level or inside a function. Importing ``a.b.c`` also runs the
``__init__`` of ``a.b``, so a module depends on the package ``__init__`` above what it imports
(the two root packages excepted: their ``__init__`` re-exports the public API by design; and a
module's own enclosing package, whose ``__init__`` is already running when it is imported).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("keras_nfnet", "training")


def _modules() -> dict[str, Path]:
    found = {}
    for root in ROOTS:
        for path in (REPO / root).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
    edges = set()
    for target in targets:
        if target in modules:
            edges.add(target)
            parts = target.split(".")
            for i in range(2, len(parts)):  # the subpackage __init__ files it runs
                ancestor = ".".join(parts[:i])
                if not name.startswith(ancestor + "."):  # its own package's is already running
                    edges.add(ancestor)
    edges.discard(name)
    return {e for e in edges if e in modules and e not in ROOTS} | (
        {e for e in edges if e in ROOTS and name in ROOTS}
    )


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_checker_finds_a_cycle_through_a_function_level_import(tmp_path):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from keras_nfnet.weights import fetch\n")
    assert "keras_nfnet.weights" in _imports("keras_nfnet.m", source, _modules())


def test_no_import_cycle_among_the_package_modules():
    graph = import_graph()
    assert len(graph) > 50 and "keras_nfnet.convert.checkpoint" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
