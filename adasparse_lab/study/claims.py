"""The paper's claims against a stored study, as Markdown tables (the README quotes them):

    python -m adasparse_lab.study.claims study=paper [studies=studies]

The same numbers as the report's section "The paper's claims against this run"
(results/claims.py measures them from storage: Optuna trials, their MLflow runs and artifacts).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from adasparse_lab.errors import ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    from adasparse_lab.report.claims_section import claims_text
    from adasparse_lab.results.collect import collect

    args = dict(a.partition("=")[::2] for a in (sys.argv[1:] if argv is None else argv))
    if set(args) - {"study", "studies"} or not args.get("study"):
        print(
            "usage: python -m adasparse_lab.study.claims study=<name> [studies=studies]",
            file=sys.stderr,
        )
        return 2
    data = collect([args["study"]], None, Path(args.get("studies", "studies")))
    print(claims_text(data))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ConfigError as err:
        sys.exit(f"error: {err}")
