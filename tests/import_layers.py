"""The package's import graph, its layers, and the arrows it must never have.

    python -m tests.import_layers     # prints "part -> parts it imports"; exits 1 on a violation

A part is a subpackage (``models``, ``data``, ``report``, ...) or a top-level module
(``errors``, ``train``, ...). Only absolute ``adasparse_lab.*`` imports exist in the package,
so reading each file's ``import`` statements with ``ast`` gives the whole graph, imports inside
functions (lazy ones) included. Two rules:

- every arrow between parts points down the layers below (a part imports only lower layers);
- no cycle between modules, even inside one part (two modules that need each other are one
  idea in two files, or share a type that belongs below both).

A subpackage's ``__main__`` is a command: commands sit above every layer.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "adasparse_lab"

# Lowest first. Building blocks, then one run, then storage and what reads it back, then what
# orchestrates, serves or measures runs, then the commands.
LAYERS: list[set[str]] = [
    {"errors", "metrics", "machine", "methods"},
    {"config", "sparsity"},
    {"data", "models"},
    {"run", "store"},
    {"results"},
    {"report", "export"},
    {"study", "services"},
    {"bench", "train", "sweep", "__init__"},
]
COMMAND = len(LAYERS)


def rank(part: str) -> int:
    if part.endswith(".__main__"):
        return COMMAND
    for level, parts in enumerate(LAYERS):
        if part in parts:
            return level
    raise KeyError(f"part {part!r} is in no layer: add it to LAYERS in {__file__}")


def _part(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) == 2 and parts[1] == "__main__" else parts[0]


def module_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """{module (dotted, below the package): the package's modules it imports}."""
    modules = {
        ".".join(p.relative_to(package).with_suffix("").parts): p
        for p in sorted(package.rglob("*.py"))
    }
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        graph[name]  # a module that imports nothing still appears
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                head, _, rest = target.partition(".")
                if head != package.name or not rest:
                    continue
                for candidate in (rest, f"{rest}.__init__"):
                    if candidate in modules and candidate != name:
                        graph[name].add(candidate)
    return dict(graph)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """{part: the other parts it imports}."""
    graph: dict[str, set[str]] = defaultdict(set)
    for module, targets in module_graph(package).items():
        part = _part(module)
        graph[part]
        graph[part] |= {_part(t) for t in targets if _part(t).split(".")[0] != part.split(".")[0]}
    return dict(graph)


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Arrows that do not point down the layers."""
    return [
        f"{part} -> {target}"
        for part, targets in sorted(graph.items())
        for target in sorted(targets)
        if rank(target) >= rank(part)
    ]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The module cycles (each once, as the strongly connected components of the graph that
    hold more than one module), by Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def main() -> int:
    graph = import_graph()
    for part, targets in sorted(graph.items(), key=lambda item: (rank(item[0]), item[0])):
        print(f"{rank(part)} {part:<15} -> {', '.join(sorted(targets)) or '(nothing)'}")
    bad = violations(graph)
    for arrow in bad:
        print(f"arrow up the layers: {arrow}", file=sys.stderr)
    loops = cycles(module_graph())
    for loop in loops:
        print(f"import cycle: {' <-> '.join(loop)}", file=sys.stderr)
    return 1 if bad or loops else 0


if __name__ == "__main__":
    raise SystemExit(main())
