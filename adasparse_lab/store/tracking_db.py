"""The SQLite file behind MLflow tracking (``studies/mlflow.db``), made so that a kill can never
leave it half-made.

MLflow creates its schema in place: the tables, then some sixty migrations, several of which
copy a table into ``_alembic_tmp_<table>`` and rename it back; SQLite commits each DDL step on
its own. A worker killed in there left a store every later run of every study sharing it failed
on (``table _alembic_tmp_experiments already exists``). So:

- a missing store is created in a temporary file beside it and moved into place with
  ``os.replace`` only when complete (a rename within one directory is atomic), under a file lock
  so that parallel workers create it once; files of killed creations are removed;
- an existing store is checked first: left-over ``_alembic_tmp_`` tables, or a schema version
  other than this MLflow's head, mean it is half-made. Holding no runs, it is set aside
  (``mlflow.db.broken-<time>``) and created anew: nothing of any study is lost. Holding runs,
  it is refused with a message naming the file and what to do: other studies' runs are in it,
  and guessing at a repair could lose them.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import time
import uuid
from contextlib import closing
from pathlib import Path

from adasparse_lab.errors import StoreError

log = logging.getLogger(__name__)


def prepare_sqlite_store(db: Path) -> None:
    """Make sure ``db`` holds a complete MLflow schema before any client opens it."""
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released by the kernel if this process dies
        for leftover in db.parent.glob(db.name + ".init-*"):  # killed creations: none is live
            leftover.unlink(missing_ok=True)
        if db.exists():
            problem = half_made(db)
            if problem is None:
                return
            _set_aside(db, problem)
        _create(db)


def half_made(db: Path) -> str | None:
    """What is wrong with the store's schema, or None when it is complete and current."""
    with closing(sqlite3.connect(db)) as con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        leftovers = sorted(t for t in tables if t.startswith("_alembic_tmp_"))
        if leftovers:
            return f"left-over migration tables {leftovers}"
        if "alembic_version" not in tables:
            return "no schema version (table alembic_version is missing)"
        row = con.execute("SELECT version_num FROM alembic_version").fetchone()
    head = _head_revision()
    found = row[0] if row else None
    return None if found == head else f"schema version {found}, expected {head}"


def _head_revision() -> str:
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _get_latest_schema_revision()


def _count_runs(db: Path) -> int:
    with closing(sqlite3.connect(db)) as con:
        try:
            return int(con.execute("SELECT count(*) FROM runs").fetchone()[0])
        except sqlite3.OperationalError:  # no runs table yet
            return 0


def _set_aside(db: Path, problem: str) -> None:
    runs = _count_runs(db)
    if runs:
        raise StoreError(
            f"tracking.uri: the MLflow store {db} is half-made ({problem}) and holds {runs} "
            "run(s), so it is not rebuilt. Stop every study using it and back it up; then drop "
            f"the _alembic_tmp_* tables and run `mlflow db upgrade sqlite:///{db}`, or move "
            "the file away to start a new store (the runs stay in the moved file)."
        )
    aside = db.with_name(f"{db.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
    db.rename(aside)
    log.warning("%s was half-made (%s) and held no runs: moved to %s", db, problem, aside)


def _create(db: Path) -> None:
    """Create the schema in a temporary file beside ``db``, then move it into place."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    tmp = db.with_name(f"{db.name}.init-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    store = SqlAlchemyStore(f"sqlite:///{tmp}", str(db.parent / "mlartifacts"))
    store.engine.dispose()
    os.replace(tmp, db)
