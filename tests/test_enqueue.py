"""study.enqueue: warm-start points that a new study tries first, validated against the space."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from optuna.trial import TrialState

from adasparse_lab.errors import ConfigError
from adasparse_lab.study.enqueued import MAX_REQUEUES, requeue_lost
from adasparse_lab.study.proposals import duplicate_of
from adasparse_lab.study.space import check_enqueue, parse_space
from adasparse_lab.sweep import run_study
from tests.conftest import CONF, TINY_RUN

SPACE = parse_space(
    {
        "lr": {"path": "train.lr", "type": "float", "low": 0.001, "high": 0.01},
        "inputs": {"path": "pruner.inputs", "type": "categorical", "choices": ["domain"]},
        "band": {"type": "band", "centre": [0.1, 0.5], "width": [0.05, 0.1]},
    }
)


@pytest.mark.parametrize(
    "point, match",
    [
        ({"learning_rate": 0.002}, r"enqueue\[0\]\.learning_rate: not a parameter"),
        ({"lr": 0.5}, r"enqueue\[0\]\.lr=0.5 is outside \[0.001, 0.01\]"),
        ({"inputs": "hidden"}, r"enqueue\[0\]\.inputs='hidden': not one of \['domain'\]"),
        ({"band.centre": 0.9}, r"enqueue\[0\]\.band.centre=0.9 is outside"),
        ({"band": 0.2}, r"enqueue\[0\]\.band: not a parameter"),
    ],
)
def test_bad_enqueue_points_name_the_key(point, match):
    with pytest.raises(ConfigError, match=match):
        check_enqueue(SPACE, (point,))


def test_good_enqueue_point_passes():
    check_enqueue(SPACE, ({"lr": 0.002, "inputs": "domain", "band.centre": 0.3},))


def test_every_shipped_enqueue_point_is_valid():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["+study=sparsity"])
    assert len(cfg.study.enqueue) == 3
    check_enqueue(parse_space(cfg.study.space), tuple(cfg.study.enqueue))


def _one_point_study(tmp_path: Path) -> list[str]:
    """A one-trial study whose one enqueued point leaves band.width to the sampler."""
    return [
        "+study=quick",
        "study.n_trials=1",
        "study.reference=false",
        "study.reeval.max_trials=0",
        "+study.enqueue=[{lr: 0.0042, band.centre: 0.2}]",
        f"paths.studies={tmp_path}/studies",
        f"paths.reports={tmp_path}/reports",
        f"paths.cache={tmp_path}/cache",
    ]


@pytest.mark.slow
def test_a_new_study_tries_the_enqueued_point_first(tmp_path):
    overrides = _one_point_study(tmp_path)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        outcome = run_study(compose("config", overrides=overrides), overrides)
    first = outcome.study.trials[0]
    assert first.params["lr"] == 0.0042 and first.params["band.centre"] == 0.2
    assert "band.width" in first.params  # the sampler filled in what the point left open


def _running_enqueued(db: Path) -> bool:
    """Whether the study in SQLite file ``db`` has an enqueued trial RUNNING in a worker."""
    if not db.is_file():
        return False
    with contextlib.suppress(Exception):  # being created by the worker
        study = optuna.load_study(study_name="quick", storage=f"sqlite:///{db}")
        return any(
            t.state == TrialState.RUNNING
            and "fixed_params" in t.system_attrs
            and "worker" in t.user_attrs
            for t in study.get_trials(deepcopy=False)
        )
    return False


@pytest.mark.slow
def test_an_enqueued_point_killed_mid_run_is_run_again_once(tmp_path):
    """Issue 22: a worker SIGKILLed while it runs the enqueued point; the resumed study fails
    that trial (its worker died), queues the point again once, and ends with it COMPLETE.
    Before, the point's only trial stayed FAIL and the resume sampled other points instead."""
    point = {"lr": 0.0042, "band.centre": 0.2, "band.width": 0.1}
    overrides = [
        "+study=quick",
        *TINY_RUN,
        "train.epochs=4",  # a trial of a few seconds, to be killed in
        "synthetic.n_rows=6000",
        "study.n_trials=2",
        "study.reference=false",
        "study.reeval.max_trials=0",
        "study.poll_s=0.1",
        "+study.enqueue=[{lr: 0.0042, band.centre: 0.2, band.width: 0.1}]",
        f"paths.studies={tmp_path}/studies",
        f"paths.reports={tmp_path}/reports",
        f"paths.cache={tmp_path}/cache",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "adasparse_lab.sweep", *overrides],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    db = tmp_path / "studies" / "quick" / "optuna.db"
    try:
        deadline = time.monotonic() + 180
        while not _running_enqueued(db):
            assert worker.poll() is None, worker.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "the enqueued trial never started"
            time.sleep(0.1)
    finally:
        worker.kill()  # SIGKILL: no handler runs, the trial stays RUNNING
        worker.wait()  # reaped: a zombie's /proc entry would pass for a live worker
    killed = optuna.load_study(study_name="quick", storage=f"sqlite:///{db}").trials
    assert [t.state for t in killed] == [TrialState.RUNNING]

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        outcome = run_study(compose("config", overrides=overrides), overrides)
    trials = outcome.study.get_trials(deepcopy=False)
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs["failure_kind"] == "stale"
    copies = [t for t in trials if t.user_attrs.get("requeue_of") == 0]
    assert len(copies) == 1  # queued again once
    assert copies[0].state == TrialState.COMPLETE
    assert _point(copies[0]) == point  # the sampler filled in what the point left open
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2
    assert [_point(t) == point for t in trials if t.state == TrialState.COMPLETE].count(True) == 1


def _point(trial: optuna.trial.FrozenTrial) -> dict:
    return {k: v for k, v in trial.params.items() if k in ("lr", "band.centre", "band.width")}


def _killed(study: optuna.Study, kind: str | None = "stale") -> optuna.trial.FrozenTrial:
    """Pop the next queued trial and fail it as ``recover_stale`` (or another cause) does."""
    trial = study.ask()
    if kind is not None:
        trial.set_user_attr("failure_kind", kind)
    study.tell(trial, state=TrialState.FAIL)
    return study.trials[trial.number]


def test_a_lost_point_is_queued_again_once():
    study = optuna.create_study()
    study.enqueue_trial({"x": 1.0}, user_attrs={"enqueued": 0})
    study.enqueue_trial({"x": 1.0}, user_attrs={"enqueued": 1})  # the same values: a point too
    study.tell(study.ask(), 0.0)  # point 0 COMPLETE
    killed = _killed(study)  # point 1 killed
    assert requeue_lost(study, [killed.number]) == [1]
    assert requeue_lost(study, [killed.number]) == []  # a second worker: already queued
    assert requeue_lost(study) == []  # a worker starting: nothing lost
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [(t.user_attrs, t.system_attrs["fixed_params"]) for t in waiting] == [
        ({"requeue_of": 1, "enqueued": 1}, {"x": 1.0})
    ]
    again = _killed(study)  # killed again: queued again, naming the latest trial
    assert again.user_attrs["requeue_of"] == 1
    assert requeue_lost(study, [again.number]) == [again.number]


@pytest.mark.parametrize(
    ("kind", "requeued"),
    [("stale", True), ("heartbeat", True), (None, True), ("error", False), ("surplus", False)],
)
def test_only_a_point_failed_for_no_reason_of_its_own_is_queued_again(kind, requeued):
    study = optuna.create_study()
    study.enqueue_trial({"x": 1.0})
    _killed(study, kind)
    assert requeue_lost(study) == ([0] if requeued else [])


def test_a_point_killed_too_often_is_left_failed():
    study = optuna.create_study()
    study.enqueue_trial({"x": 1.0})
    for _ in range(MAX_REQUEUES + 1):
        _killed(study)
        requeue_lost(study)
    assert len(study.trials) == MAX_REQUEUES + 1
    assert not study.get_trials(states=(TrialState.WAITING,))


def test_two_copies_of_a_point_started_together_run_once():
    """Workers starting together may both queue a lost point: the later copy is a repeat."""
    study = optuna.create_study()
    for _ in range(2):
        study.enqueue_trial({"x": 1.0}, user_attrs={"enqueued": 0})
    study.ask(), study.ask()  # both copies RUNNING, in two workers
    frozen = study.get_trials(deepcopy=False)
    first, second = (optuna.trial.Trial(study, t._trial_id) for t in frozen)
    assert duplicate_of(first, frozen) is None  # the first copy runs
    assert duplicate_of(second, frozen).number == 0  # the second is skipped


def test_a_point_stopped_early_is_not_lost():
    """Early stopping ends a trial PRUNED on its own results: its point is not queued again,
    and a second copy (queued by a worker starting meanwhile) is a repeat."""
    study = optuna.create_study()
    for _ in range(2):
        study.enqueue_trial({"x": 1.0}, user_attrs={"enqueued": 0})
    study.tell(study.ask(), state=TrialState.PRUNED)
    assert requeue_lost(study) == []
    second = study.ask()
    assert duplicate_of(second, study.get_trials(deepcopy=False)).number == 0


@pytest.mark.slow
def test_a_study_whose_creator_was_killed_before_its_points_gets_them_on_resume(tmp_path):
    """The creator makes the Optuna study, then enqueues its points: a kill in between (the
    CI kill storm hit it) left a study without them, and every later worker sampled instead.
    The next worker finishes the creation: the points are enqueued once, and run first."""
    overrides = _one_point_study(tmp_path)
    db = tmp_path / "studies" / "quick" / "optuna.db"
    db.parent.mkdir(parents=True)
    optuna.create_study(  # what a creator killed right after create_study leaves
        storage=f"sqlite:///{db}", study_name="quick", directions=["maximize", "minimize"]
    )
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        outcome = run_study(compose("config", overrides=overrides), overrides)
    first = outcome.study.trials[0]
    assert first.params["lr"] == 0.0042 and first.params["band.centre"] == 0.2
    assert first.state == TrialState.COMPLETE and first.user_attrs["enqueued"] == 0
    assert outcome.study.metric_names == ["val/mean_domain_auc", "val/flops/ratio"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):  # resumed again
        again = run_study(compose("config", overrides=overrides), overrides)
    assert [t.user_attrs.get("enqueued") for t in again.study.trials] == [0]  # not twice
