"""The MLflow SQLite store survives a kill inside its own creation, and a half-made one is
repaired (no runs in it) or refused with a message that names the file (runs in it)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from adasparse_lab.errors import StoreError
from adasparse_lab.store.tracking import Tracker
from tests.conftest import ROOT
from tests.test_sweep import _trials, study_overrides, sweep_cmd

# Run in a subprocess before its real work: SIGKILL this process in the middle of MLflow's
# schema migration (after a batch migration made its _alembic_tmp_ copy of a table), where a
# kill of a worker at first start once left studies/mlflow.db half-made for good.
KILL_IN_SCHEMA = """
import os, signal, sqlalchemy
from sqlalchemy import event

@event.listens_for(sqlalchemy.engine.Engine, "before_cursor_execute")
def _kill(conn, cursor, statement, *args):
    if statement.lstrip().startswith("INSERT INTO _alembic_tmp_experiments"):
        os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_in_schema(code: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", KILL_IN_SCHEMA + code], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == -9, proc.stderr[-2000:]


def usable(db: Path) -> None:
    """A run can be created, logged to and read back through a fresh Tracker."""
    tracker = Tracker(f"sqlite:///{db}", str(db.parent / "art"), "exp")
    run = tracker.start_run("r")
    tracker.log_metrics(run, {"val/auc": 0.75})
    tracker.end_run(run)
    assert tracker.client.get_run(run).data.metrics == {"val/auc": 0.75}


@pytest.mark.slow  # ~10 s: MLflow's own schema creation takes 3-4 s, twice
def test_a_kill_inside_schema_creation_leaves_a_usable_store(tmp_path):
    db = tmp_path / "mlflow.db"
    killed_in_schema(
        f"from adasparse_lab.store.tracking import Tracker; Tracker('sqlite:///{db}', None, 'e')"
    )
    usable(db)
    assert not list(tmp_path.glob("mlflow.db.init-*"))  # the killed creation's file is gone


@pytest.mark.slow
def test_a_half_made_store_without_runs_is_rebuilt(tmp_path):
    db = tmp_path / "mlflow.db"  # half-made the old way: MLflow creating it in place
    killed_in_schema(
        f"from mlflow import MlflowClient; MlflowClient('sqlite:///{db}').search_experiments()"
    )
    usable(db)
    assert len(list(tmp_path.glob("mlflow.db.broken-*"))) == 1  # kept aside, not deleted


def test_a_half_made_store_with_runs_is_refused(tmp_path):
    db = tmp_path / "mlflow.db"
    usable(db)
    with sqlite3.connect(db) as con:  # what a kill inside a later schema upgrade leaves
        con.execute("CREATE TABLE _alembic_tmp_experiments (x INTEGER)")
    with pytest.raises(StoreError) as err:
        Tracker(f"sqlite:///{db}", None, "exp")
    message = str(err.value)
    assert str(db) in message and "_alembic_tmp_experiments" in message
    assert "1 run" in message and "mlflow db upgrade" in message
    assert not list(tmp_path.glob("mlflow.db.broken-*"))  # left where it is


@pytest.mark.slow
def test_a_study_killed_inside_schema_creation_resumes_and_completes(tmp_path):
    extra = ["study.n_trials=2", "study.reference=false", "study.reeval.max_trials=0"]
    extra += ["train.epochs=1"]
    args = study_overrides(tmp_path, *extra)
    killed_in_schema(
        f"import runpy, sys; sys.argv = ['sweep', *{args!r}]; "
        "runpy.run_module('adasparse_lab.sweep', run_name='__main__')"
    )
    resumed = subprocess.run(
        sweep_cmd(tmp_path, *extra), cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [t.state.name for t in _trials(tmp_path)] == ["COMPLETE", "COMPLETE"]
    usable(tmp_path / "studies" / "mlflow.db")
