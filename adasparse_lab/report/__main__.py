"""`python -m adasparse_lab.report study=<name>[,<name2>] [storage=<url>[,<url2>]] [out=reports]
[studies=studies] [color=method] [static=png|svg]`

Arguments are ``key=value`` pairs (adasparse_lab.config). ``study=a,b`` overlays the studies in one report under
``<out>/a+b/``. The report is rebuilt from storage, so this works on running studies too.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from adasparse_lab.config import parse_args
from adasparse_lab.errors import ConfigError
from adasparse_lab.report.build import STATIC_FORMATS, build

COMMAND = "adasparse_lab.report"
KEYS = {
    "study": "study name(s), comma-separated (required)",
    "storage": "Optuna storage per study, comma-separated (default: the file in studies/<name>/: journal.log, else optuna.db)",
    "out": "output folder (default: reports)",
    "studies": "folder holding the studies (default: studies)",
    "color": "trial column or param:<name> that colours the front (default: method)",
    "static": "also export every figure as png or svg (needs kaleido and Chromium)",
}


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv, COMMAND, KEYS)
        if args.get("static") and args["static"] not in STATIC_FORMATS:
            raise ConfigError(f"static={args['static']!r}: choose one of {list(STATIC_FORMATS)}")
        names = [n for n in args["study"].split(",") if n]
        info = build(
            names,
            args["storage"].split(",") if args.get("storage") else None,
            args.get("out", "reports"),
            studies_dir=args.get("studies", "studies"),
            color_by=args.get("color", "method"),
            static=args.get("static"),
        )
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report: {info.path}")
    print(f"size: {info.bytes / 1e6:.2f} MB, {info.figures} figures, built in {info.seconds:.1f} s")
    if info.static_files:  # a skipped or failed export was logged as a warning
        print(info.static_note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
