"""Several workers and restarts of one study: distinct proposals, no mixed configurations.

The runners here share one journal storage in one process; each stands for a worker process
(its own ``worker`` identity and ``study.worker_index``). Training is replaced by a stub, so
the tests exercise asking, seeding and resuming, not fitting.
"""

from __future__ import annotations

import datetime
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from hydra import compose, initialize_config_dir
from optuna.trial import TrialState

from adasparse_lab.errors import ConfigError
from adasparse_lab.store import study_storage as storage_mod
from adasparse_lab.store.study_storage import ORPHAN_S, open_storage, recover_stale
from adasparse_lab.store.tracking import Tracker
from adasparse_lab.study import session as session_mod
from adasparse_lab.study import trials as trials_mod
from adasparse_lab.study.driver import StudyFailedError, StudyRunner
from tests.conftest import CONF

BASE = ["+study=quick", "study.storage=journal", "study.reference=false", "tracking=none"]


@pytest.fixture
def hydra_ctx():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield


def make_runner(tmp: Path, *extra: str, worker: str = "host:1:1") -> StudyRunner:
    overrides = [*BASE, f"paths.studies={tmp}/studies", *extra]
    runner = StudyRunner(
        compose("config", overrides=overrides),
        lambda more: compose("config", overrides=[*overrides, *more]),
    )
    runner.worker = worker  # a distinct process (dead ones are found by this identity)
    return runner


def _journal(tmp: Path) -> optuna.storages.JournalStorage:
    path = tmp / "studies" / "quick" / "journal.log"
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


def propose(runner: StudyRunner) -> dict:
    study, _ = runner.open()
    trial = runner.ask(study)
    runner.trial_config(trial)  # samples the parameters
    return trial.params


def test_parallel_workers_propose_different_parameters(tmp_path, hydra_ctx):
    """Four workers of ``study.workers=4`` ask at once (each before any trial is done)."""
    proposed = [
        propose(make_runner(tmp_path, f"study.worker_index={i}", worker=f"host:{i}:1"))
        for i in range(4)
    ]
    assert {frozenset(p) for p in proposed} == {
        frozenset({"lambda_end", "band.centre", "band.width", "lr"})
    }
    assert len({tuple(sorted(p.items())) for p in proposed}) == 4


def test_a_restarted_worker_does_not_repeat_the_killed_trial(tmp_path, hydra_ctx):
    killed = propose(make_runner(tmp_path, worker=f"{socket.gethostname()}:999999:1"))
    resumed = make_runner(tmp_path)
    study, _ = resumed.open()
    recover_stale(study)  # the killed worker's trial is FAIL now
    trial = resumed.ask(study)
    resumed.trial_config(trial)
    assert trial.params != killed


def test_proposals_are_reproducible(tmp_path, hydra_ctx):
    one = propose(make_runner(tmp_path / "a", "study.worker_index=1"))
    two = propose(make_runner(tmp_path / "b", "study.worker_index=1"))
    assert one == two


class StubTracker:
    """Stands in for MLflow: these tests are about the Optuna side."""

    def start_run(self, *args, **kwargs) -> str:
        return "run"

    def log_params(self, *args) -> None: ...

    def set_tags(self, *args) -> None: ...

    def end_run(self, *args) -> None: ...


@pytest.fixture
def stub_training(monkeypatch):
    metrics = {"val/mean_domain_auc": 0.7, "val/flops/ratio": 0.5}
    result = SimpleNamespace(metrics=metrics, data=SimpleNamespace(key="stub-data-key"))
    monkeypatch.setattr(trials_mod.TrialRunner, "train_run", lambda self, *a: result)


def optimise(runner: StudyRunner) -> list[optuna.trial.FrozenTrial]:
    study, _ = runner.open()
    runner.optimise(study, StubTracker(), "parent")
    return study.get_trials()


def test_a_repeated_proposal_is_skipped(tmp_path, hydra_ctx, stub_training, monkeypatch):
    monkeypatch.setattr(session_mod, "proposal_seed", lambda *args: 7)  # every ask alike
    monkeypatch.setattr(trials_mod, "MAX_DUPLICATES", 4)
    with pytest.raises(StudyFailedError, match="already tried"):
        optimise(make_runner(tmp_path, "study.n_trials=2"))
    trials = optuna.load_study(study_name="quick", storage=_journal(tmp_path)).get_trials()
    assert trials[0].state == TrialState.COMPLETE
    repeats = trials[1:]
    assert len(repeats) == 4
    assert all(t.params == trials[0].params for t in repeats)
    assert {t.user_attrs["failure_kind"] for t in repeats} == {"duplicate"}
    assert repeats[0].user_attrs["fail_reason"] == "same parameters as trial 0 (COMPLETE)"


def test_enqueued_points_run_even_when_alike(tmp_path, hydra_ctx, stub_training):
    point = "{lambda_end: 10.0, band.centre: 0.2, band.width: 0.1, lr: 0.001}"
    runner = make_runner(tmp_path, "study.n_trials=3", f"+study.enqueue=[{point},{point}]")
    trials = optimise(runner)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert trials[0].params == trials[1].params != trials[2].params


def test_a_changed_configuration_stops_the_resume(tmp_path, hydra_ctx):
    make_runner(tmp_path, "study.name=qc", "study.n_trials=3").open()
    changed = ["study.name=qc", "synthetic.n_rows=40000", "study.space.lr.high=0.01"]
    with pytest.raises(ConfigError) as err:
        make_runner(tmp_path, *changed).open()
    message = str(err.value)
    assert "synthetic.n_rows: 20000 -> 40000" in message
    assert "data.source.n_rows: 20000 -> 40000" in message
    assert "study.space.lr.high: 0.005 -> 0.01" in message
    assert "study.name" in message and "study.allow_changed_config=true" in message
    assert "n_trials" not in message
    study, _ = make_runner(tmp_path, *changed, "study.allow_changed_config=true").open()
    assert study.user_attrs["fingerprint"]["synthetic.n_rows"] == "40000"  # the new baseline
    make_runner(tmp_path, *changed).open()  # so the next resume with it needs no override


def test_settings_of_a_run_may_change_on_resume(tmp_path, hydra_ctx):
    make_runner(tmp_path, "study.n_trials=3").open()
    study, _ = make_runner(
        tmp_path,
        "study.n_trials=9",
        "study.workers=3",
        "study.threads=1",
        "study.worker_index=2",
        "study.timeout_s=60",
        "study.poll_s=5",
        "study.max_failures=2",
        "study.reeval.seeds=[4,5]",
        "study.reeval.max_trials=1",
        "train.progress=true",
        f"paths.cache={tmp_path}/elsewhere",
        f"paths.reports={tmp_path}/reports2",
        f"tracking.uri=sqlite:///{tmp_path}/other.db",
        "latency.repeats=9",
        "latency.budget_s=3",
    ).open()
    assert study.user_attrs["fingerprint"]["train.lr"] == "0.001"
    assert not any(k.startswith(("paths.", "tracking.")) for k in study.user_attrs["fingerprint"])


def test_a_lock_left_by_a_killed_worker_does_not_stall_the_journal(tmp_path):
    folder = tmp_path / "studies" / "s"
    folder.mkdir(parents=True)
    (folder / "journal.log.lock").symlink_to(folder / "journal.log")  # its holder was killed
    storage, _ = open_storage("journal", "s", tmp_path / "studies", 2)
    t0 = time.monotonic()
    optuna.create_study(study_name="s", storage=storage).ask()
    assert time.monotonic() - t0 < 20  # Optuna's own symlink lock waited 30 s for a dead holder


def test_a_trial_killed_before_naming_its_worker_is_failed_soon(tmp_path, monkeypatch):
    storage, _ = open_storage("journal", "s", tmp_path / "studies", 2)
    study = optuna.create_study(study_name="s", storage=storage)
    study.ask()  # killed right after: no "worker" attribute
    assert recover_stale(study) == []  # a live worker may be about to name itself
    later = datetime.datetime.now() + datetime.timedelta(seconds=ORPHAN_S + 1)
    monkeypatch.setattr(
        storage_mod, "datetime", SimpleNamespace(datetime=SimpleNamespace(now=lambda: later))
    )
    assert recover_stale(study) == [0]


@pytest.mark.slow  # MLflow creates its schema (~4 s)
def test_a_parent_run_left_by_a_killed_creator_is_adopted(tmp_path, hydra_ctx):
    overrides = ["+study=quick", "study.storage=journal", f"paths.studies={tmp_path}/studies"]
    base = compose("config", overrides=overrides)
    dead = f"{socket.gethostname()}:999999:1"
    first = StudyRunner(base, lambda more: compose("config", overrides=[*overrides, *more]))
    first.worker = dead
    study, _ = first.open()  # creator: the dead worker, killed right after starting the parent
    tracker = Tracker(base.tracking.uri, base.tracking.artifact_root, "quick")
    orphan = tracker.start_run("study-quick", tags={"kind": "study", "worker": dead})
    again = StudyRunner(base, lambda more: compose("config", overrides=[*overrides, *more]))
    study, _ = again.open()
    _, parent = again.session.tracker_and_parent(study)
    parents = tracker.client.search_runs([tracker.experiment_id], "tags.kind = 'study'")
    assert parent == orphan and [r.info.run_id for r in parents] == [orphan]
    assert study.user_attrs["parent_run_id"] == orphan


@pytest.mark.slow  # MLflow creates its schema (~4 s)
def test_a_creator_on_another_machine_silent_past_the_grace_period_is_taken_over(
    tmp_path, hydra_ctx
):
    """Its process cannot be seen from here: after study.grace_s the parent run is made by
    the next worker (before, it waited for ever)."""
    overrides = [
        "+study=quick",
        "study.storage=journal",
        "study.heartbeat_s=1",
        "study.grace_s=2",
        f"paths.studies={tmp_path}/studies",
    ]
    base = compose("config", overrides=overrides)
    first = StudyRunner(base, lambda more: compose("config", overrides=[*overrides, *more]))
    first.worker = "elsewhere:4242:1"  # created the study, then its machine was lost
    first.open()
    again = StudyRunner(base, lambda more: compose("config", overrides=[*overrides, *more]))
    study, _ = again.open()
    t0 = time.monotonic()
    _, parent = again.session.tracker_and_parent(study)
    assert 2 <= time.monotonic() - t0 < 30
    assert study.user_attrs["parent_run_id"] == parent
    assert study.user_attrs["creator"] == again.worker


def test_report_and_resume_open_the_same_file_of_a_study_folder(tmp_path):
    """A folder holding both files (an earlier one-worker run in optuna.db, a later run with
    study.storage=journal): the study resumes one of them and the report must read that same
    one, not the other's trials."""
    from adasparse_lab.store.reader import default_storage, load_study

    studies = tmp_path / "studies"
    folder = studies / "quick"
    folder.mkdir(parents=True)
    sqlite = optuna.create_study(study_name="quick", storage=f"sqlite:///{folder / 'optuna.db'}")
    sqlite.enqueue_trial({"x": 0.0})
    sqlite.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    journal = optuna.create_study(study_name="quick", storage=_journal(tmp_path))
    journal.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)

    resumed, where = open_storage("auto", "quick", studies, workers=1)
    resumed_trials = optuna.load_study(study_name="quick", storage=resumed).trials
    reported, _ = load_study("quick", default_storage("quick", studies), studies)
    assert where == str(folder / "journal.log")
    assert len(resumed_trials) == 3
    assert len(reported.trials) == len(resumed_trials)
