"""Open a stored study in optuna-dashboard, Optuna's own web UI (trials, history, Pareto front,
parameter importances), on the study's own storage::

    python -m adasparse_lab.store.dashboard study=sparsity [studies=studies]
        [storage=<URL or journal path>] [host=127.0.0.1] [port=8080]

``make dashboard STUDY=<name>`` runs it. The storage is the one the study was run on: the
study folder's journal or SQLite file (store/layout.py), or the URL given (PostgreSQL). The
dashboard reads and writes that storage directly, as Optuna's workers do, so it may stay open
while a study runs.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from adasparse_lab.config import parse_args, redact_url
from adasparse_lab.errors import ConfigError
from adasparse_lab.store.reader import load_study

COMMAND = "adasparse_lab.store.dashboard"
KEYS = {
    "study": "the study's name (required)",
    "studies": "folder holding the studies (default: studies)",
    "storage": "the study's storage URL or journal path (default: in its folder)",
    "host": "address to serve on (default: 127.0.0.1)",
    "port": "port to serve on (default: 8080)",
}


def dashboard_target(args: dict[str, str]) -> tuple[str, str, int]:
    """(storage, host, port) for ``args``; the study must exist in that storage."""
    studies = Path(args.get("studies", "studies"))
    _, storage = load_study(args["study"], args.get("storage"), studies)
    try:
        port = int(args.get("port", "8080"))
    except ValueError:
        raise ConfigError(f"port={args['port']!r} is not a port number") from None
    return storage, args.get("host", "127.0.0.1"), port


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv, COMMAND, KEYS)
        storage, host, port = dashboard_target(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from optuna_dashboard import run_server

    print(
        f"study {args['study']!r} ({redact_url(storage)}) in optuna-dashboard: "
        f"http://{host}:{port}/dashboard"
    )
    print("Ctrl-C stops the dashboard.", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        run_server(storage, host=host, port=port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
