"""The package's import graph between its parts, and the arrows it must never have.

    python -m adasparse_lab.layers     # prints "part -> parts it imports", exits 1 on a violation

A part is a subpackage (``models``, ``data``, ``report``, ...) or a top-level module
(``trainer``, ``tracking``, ...). Only absolute ``adasparse_lab.*`` imports exist in the package,
so reading each file's ``import`` statements with ``ast`` gives the whole graph.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent

# Building blocks never reach up into the layers that orchestrate, track or report them, and the
# report reads storage only: it never imports training code.
FORBIDDEN: dict[str, set[str]] = {
    part: {"study", "tracking", "tracking_store", "results", "report"}
    | {"experiment", "sweep", "train", "bench"}
    for part in ("models", "data", "sparsity", "metrics", "errors", "studies_layout")
}
FORBIDDEN["report"] = {"models", "data", "trainer", "experiment", "evaluation", "study", "sweep"}
# Reading a stored study back (results: shared by the report, the study's summary and export)
# reads storage only: nothing that trains, tracks, orchestrates, exports or draws.
FORBIDDEN["results"] = {"models", "data", "trainer", "evaluation", "experiment", "train"} | {
    "tracking",
    "tracking_store",
    "study",
    "sweep",
    "bench",
    "export",
    "report",
}
# Orchestration runs benchmarks never: what both need (the machine) sits below them.
FORBIDDEN["study"] = {"bench"}


def _part(path: Path, package: Path) -> str:
    """A subpackage or top-level module; a subpackage's ``__main__`` is a command of its own
    (``data.__main__``): commands sit above every layer, so they may import any of them."""
    parts = path.relative_to(package).with_suffix("").parts
    return ".".join(parts) if len(parts) == 2 and parts[1] == "__main__" else parts[0]


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """{part: the other parts it imports}."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in sorted(package.rglob("*.py")):
        part = _part(path, package)
        graph[part]  # a part that imports nothing still appears
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                head, _, rest = name.partition(".")
                if head == package.name and rest and rest.split(".")[0] != part.split(".")[0]:
                    graph[part].add(rest.split(".")[0])
    return dict(graph)


def violations(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{part} -> {target}"
        for part, targets in sorted(graph.items())
        for target in sorted(targets & FORBIDDEN.get(part, set()))
    ]


def main() -> int:
    graph = import_graph()
    for part, targets in sorted(graph.items()):
        print(f"{part:<15} -> {', '.join(sorted(targets)) or '(nothing)'}")
    bad = violations(graph)
    for arrow in bad:
        print(f"forbidden arrow: {arrow}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
