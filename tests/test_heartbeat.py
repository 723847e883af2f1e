"""Heartbeats through a database outage (RDB storage): the grace period outlasts the retry
of a lost connection, and a heartbeat that gives up stops its worker's trial instead of dying
silently while the trial trains on (to be failed as stale by the other workers)."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from optuna.trial import TrialState

from adasparse_lab.errors import ConfigError, StoreError
from adasparse_lab.store import study_storage as storage_mod
from adasparse_lab.study.driver import StudyRunner
from adasparse_lab.study.settings import parse_settings
from tests.conftest import CONF


def settings(make_cfg, *overrides: str):
    return parse_settings(make_cfg("+study=quick", *overrides).study)


def test_the_grace_period_must_outlast_a_database_outage(make_cfg):
    url = "study.storage=postgresql://db/optuna"
    # 120 + 2 * 30 + 8 = 188 > 120: a worker back from the outage would be failed as stale
    with pytest.raises(ConfigError, match=r"study\.grace_s=120.*study\.storage_retry_s"):
        settings(make_cfg, url, "study.grace_s=120")
    with pytest.raises(ConfigError, match=r"study\.grace_s=19 .*heartbeat_s"):
        settings(
            make_cfg, url, "study.heartbeat_s=1", "study.storage_retry_s=10", "study.grace_s=19"
        )
    ok = settings(
        make_cfg, url, "study.heartbeat_s=1", "study.storage_retry_s=10", "study.grace_s=20"
    )
    assert (ok.grace_s, ok.storage_retry_s, ok.heartbeat_s) == (20, 10.0, 1)
    assert settings(make_cfg, url).grace_s >= 120 + 2 * 30 + 8  # the shipped defaults pass


def _rdb(tmp_path: Path):
    return storage_mod.open_rdb(f"sqlite:///{tmp_path}/optuna.db", 1, 20, 0.0)


def _unreachable(self, trial_id):
    raise StoreError("study.storage: the database x was unreachable for 10s")


def test_a_heartbeat_that_gives_up_says_so(tmp_path, monkeypatch):
    storage = _rdb(tmp_path)
    trial = optuna.create_study(storage=storage).ask()
    monkeypatch.setattr(storage_mod.RetryingRDBStorage, "record_heartbeat", _unreachable)
    beat = storage_mod.Heartbeat(trial._trial_id, storage)
    beat.start()
    deadline = time.monotonic() + 5
    while beat.lost is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert beat.lost is not None and "unreachable for 10s" in beat.lost
    beat.join()  # ended, not hanging
    assert storage_mod.Heartbeat(0, optuna.storages.InMemoryStorage()).lost is None


@pytest.mark.slow  # MLflow creates its schema (~4 s), then one tiny trial
def test_a_worker_whose_heartbeat_gave_up_fails_its_trial_and_stops(tmp_path, monkeypatch):
    overrides = [
        "+study=quick",
        f"study.storage=sqlite:///{tmp_path}/optuna.db",  # an RDB URL: heartbeats on
        "study.heartbeat_s=1",
        "study.storage_retry_s=1",
        "study.grace_s=11",
        "study.reference=false",
        "study.n_trials=1",
        f"paths.studies={tmp_path}/studies",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        runner = StudyRunner(
            compose("config", overrides=overrides),
            lambda more: compose("config", overrides=[*overrides, *more]),
        )
        monkeypatch.setattr(storage_mod.RetryingRDBStorage, "record_heartbeat", _unreachable)
        with pytest.raises(StoreError, match="heartbeat.*unreachable for 10s"):
            runner.run()
    (trial,) = optuna.load_study(
        study_name="quick", storage=f"sqlite:///{tmp_path}/optuna.db"
    ).get_trials()
    assert trial.state == TrialState.FAIL  # not trained on to COMPLETE, not left RUNNING
    assert trial.user_attrs["failure_kind"] == "heartbeat"
    assert "unreachable for 10s" in trial.user_attrs["fail_reason"]


def test_a_session_left_invalid_by_a_restart_is_retried_on_a_fresh_one(tmp_path, monkeypatch):
    """A connection that broke inside a transaction leaves the thread's session refusing every
    statement (SQLAlchemy's PendingRollbackError, wrapped by Optuna) until it is reset. That is
    a lost database, not a rejected statement: the call is retried on a fresh session. (Found
    by test_distributed.py::test_workers_ride_out_a_postgres_restart: a worker died in
    get_trials right after PostgreSQL came back.)"""
    from sqlalchemy.exc import PendingRollbackError

    storage = storage_mod.open_rdb(f"sqlite:///{tmp_path}/s.db", 60, 300, retry_s=10)
    study_id = storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "s")
    monkeypatch.setattr(storage_mod.time, "sleep", lambda s: None)
    real = storage._get_trials
    sessions = []

    def broken_until_reset(*args, **kwargs):
        sessions.append(storage.scoped_session())
        if len(sessions) == 1:
            raise optuna.exceptions.StorageInternalError("commit failed") from (
                PendingRollbackError("Can't reconnect until invalid transaction is rolled back")
            )
        return real(*args, **kwargs)

    monkeypatch.setattr(storage, "_get_trials", broken_until_reset)
    assert storage.get_all_trials(study_id) == []
    assert len(sessions) == 2
    assert sessions[1] is not sessions[0]  # the invalid session was discarded, not reused


def test_every_call_the_study_cache_makes_on_its_backend_is_retried():
    """Optuna's study cache calls private methods of its RDB storage; each must be one of the
    retried calls, or a database restart kills the worker there (tests/test_distributed.py
    restarts PostgreSQL under each of them)."""
    import inspect
    import re

    from optuna.storages import _cached_storage

    called = set(re.findall(r"self\._backend\.(\w+)\(", inspect.getsource(_cached_storage)))
    assert {"_get_trials", "_create_new_trial", "get_trial"} <= called  # the pattern still reads
    database = {n for n in called if n not in ("get_heartbeat_interval",)}
    database -= {"get_heartbeat_stale_trial_callback"}  # settings, no database
    unretried = sorted(
        n
        for n in database
        if getattr(storage_mod.RetryingRDBStorage, n) is getattr(optuna.storages.RDBStorage, n)
    )
    assert unretried == []
