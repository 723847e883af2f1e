"""The paper's claims against a stored study, as Markdown tables (the README quotes them):

    python -m adasparse_lab.study.claims study=paper [studies=studies]

The same numbers as the report's section "The paper's claims against this run"
(results/claims.py measures them from storage: Optuna trials, their MLflow runs and artifacts;
report/markdown.py writes the tables).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from adasparse_lab.config import exit_with, run_command
from adasparse_lab.report.markdown import claims_text
from adasparse_lab.results.collect import collect

COMMAND = "adasparse_lab.study.claims"
KEYS = {
    "study": "study name (required)",
    "studies": "folder holding the studies (default: studies)",
}


def _print_claims(args: dict[str, str]) -> int:
    print(claims_text(collect([args["study"]], None, Path(args.get("studies", "studies")))))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(argv, COMMAND, KEYS, _print_claims)


if __name__ == "__main__":
    exit_with(main)
