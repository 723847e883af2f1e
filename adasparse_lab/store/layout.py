"""Where a study lives on disk, for every part that opens one (the study, the report, export).

``<studies>/<name>/`` holds ``journal.log`` (several workers, or ``study.storage=journal``) or
``optuna.db`` (one worker, SQLite). When a folder holds both, the journal is the study's
storage: a resumed study continues it, and the report and export read that same file.
"""

from __future__ import annotations

from pathlib import Path

JOURNAL, SQLITE = "journal.log", "optuna.db"
STORAGE_FILES = (JOURNAL, SQLITE)  # in the order they are chosen


def stored_file(folder: Path) -> Path | None:
    """The storage file of the study in ``folder`` (see the module's rule), or None."""
    return next((folder / f for f in STORAGE_FILES if (folder / f).is_file()), None)


def storage_string(path: Path) -> str:
    """A storage file -> the string Optuna's loaders take (a SQLite URL or a journal path)."""
    return f"sqlite:///{path}" if path.name == SQLITE else str(path)
