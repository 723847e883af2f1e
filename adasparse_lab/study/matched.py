"""Methods at matched cost, printed for any finished or running study (results/matched.py
makes the tables and verdicts):

    python -m adasparse_lab.study.matched study=rivals [studies=studies] [at=0.5,0.8]
    python -m adasparse_lab.study.matched study=compare per_method=true   # each method's best
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from adasparse_lab.config import exit_with, run_command
from adasparse_lab.results.collect import collect
from adasparse_lab.results.matched import (
    Cell,
    budgets_equal_by_design,
    collect_cells,
    format_matched,
    format_per_method,
    nearest,
    per_method,
)

__all__ = [
    "Cell",
    "budgets_equal_by_design",
    "collect_cells",
    "format_matched",
    "format_per_method",
    "main",
    "nearest",
    "per_method",
]

COMMAND = "adasparse_lab.study.matched"
KEYS = {
    "study": "study name (required)",
    "studies": "folder holding the studies (default: studies)",
    "at": "cost ratios to compare the methods at, comma-separated (default: 0.5,0.8)",
    "cost": "the cost objective (default: the study's last objective)",
    "tolerance": "how far a cell's cost may be from an anchor (default: 0.15)",
    "per_method": "true: each method's best cell instead (default: false)",
}


def _print_matched(args: dict[str, str]) -> int:
    # A missing study is a ConfigError naming the studies that exist (results.storage).
    folder = Path(args.get("studies", "studies"))
    info = collect([args["study"]], None, folder, max_structure_trials=0).studies[0]
    for warning in info.warnings:  # e.g. its MLflow store not found: the tables below are empty
        print(f"warning: {warning}", file=sys.stderr)
    cost = args.get("cost") or info.study.metric_names[-1]
    anchors = [float(x) for x in args.get("at", "0.5,0.8").split(",")]
    cells = collect_cells(info, cost)
    if args.get("per_method", "false").lower() == "true":
        print(format_per_method(cells, cost))
        return 0
    print(format_matched(cells, anchors, cost, float(args.get("tolerance", 0.15))))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(argv, COMMAND, KEYS, _print_matched)


if __name__ == "__main__":
    exit_with(main)
