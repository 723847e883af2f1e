"""The study driver: failures, tracking, resume after SIGKILL, several workers, bad configs."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from hydra import initialize_config_dir
from mlflow.tracking import MlflowClient
from optuna._hypervolume import compute_hypervolume
from optuna.trial import TrialState

from adasparse_lab.errors import ConfigError
from adasparse_lab.machine import usable_cpus
from adasparse_lab.results.front import hypervolume_2d, hypervolume_history, pareto_mask
from adasparse_lab.sweep import run_study
from tests.conftest import CONF, ROOT

QUICK = ["+study=quick", "study.reeval.max_trials=1", "study.poll_s=0.2"]


def study_overrides(tmp: Path, *extra: str) -> list[str]:
    return [
        *QUICK,
        f"paths.studies={tmp}/studies",
        f"paths.reports={tmp}/reports",
        f"paths.cache={tmp}/cache",
        *extra,
    ]


def run_in_process(tmp: Path, *extra: str):
    from hydra import compose

    overrides = study_overrides(tmp, *extra)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        base = compose("config", overrides=overrides)
        return run_study(base, overrides)


def sweep_cmd(tmp: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "adasparse_lab.sweep", *study_overrides(tmp, *extra)]


def test_pareto_mask_and_hypervolume_by_hand():
    points = [[0.80, 1.0], [0.70, 0.5], [0.75, 1.2], [0.60, 0.4], [0.70, 0.5]]
    assert pareto_mask(points, ["maximize", "minimize"]).tolist() == [True, True, False, True, True]
    # minimised: (-.8,1), (-.7,.5), (-.6,.4); reference (-.5, 2): .3*1 + .2*.5 + .1*.1
    assert hypervolume_2d(points, ["maximize", "minimize"], [0.5, 2.0]) == pytest.approx(0.41)


def _trial(values, over_budget=None, state=TrialState.COMPLETE):
    attrs = {} if over_budget is None else {"constraints:flops_budget": over_budget}
    return optuna.trial.create_trial(state=state, values=values, system_attrs=attrs)


def test_hypervolume_history_by_hand_skips_infeasible_trials():
    """(max AUC, min FLOPs), reference (0.5, 2.0). #0 (.7, 1.0): .2 x 1.0 = .2; #1 is over
    the FLOPs budget (its .4 x 1.5 would count); #2 failed: no step; #3 (.8, 1.5) adds
    .3 x .5 - .2 x .5 (the overlap) = .05; #4 has AUC under the reference: no area."""
    trials = [
        _trial([0.70, 1.0], over_budget=-0.5),
        _trial([0.90, 0.5], over_budget=0.2),
        _trial(None, state=TrialState.FAIL),
        _trial([0.80, 1.5]),
        _trial([0.40, 0.1]),
    ]
    for number, t in enumerate(trials):
        t.number = number
    history = hypervolume_history(trials, ["maximize", "minimize"], [0.5, 2.0])
    assert [n for n, _ in history] == [0, 1, 3, 4]
    assert [v for _, v in history] == pytest.approx([0.2, 0.2, 0.25, 0.25])
    # Optuna's own hypervolume (everything minimised) of the feasible points inside agrees.
    kept = np.array([[-0.70, 1.0], [-0.80, 1.5]])
    assert compute_hypervolume(kept, np.array([-0.5, 2.0])) == pytest.approx(0.25)


@pytest.mark.slow
def test_failures_become_fail_trials_and_the_study_completes(tmp_path, monkeypatch):
    """Trial 0 raises, trial 1 gets a NaN loss; both end FAIL with a reason, 4 trials complete."""
    import adasparse_lab.run.fit as trainer
    import adasparse_lab.study.trials as trials_mod

    real = trials_mod.train_and_evaluate
    calls = {"n": 0}

    def flaky(cfg, data, on_epoch=None, components=None, **rungs):
        if cfg.pruner.get("gate") is not None:  # count trials, not the dense reference runs
            calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected failure")
        if calls["n"] == 2:
            with monkeypatch.context() as m:
                m.setattr(
                    trainer.F,
                    "binary_cross_entropy_with_logits",
                    lambda logits, label: (logits * float("nan")).mean(),
                )
                return real(cfg, data, on_epoch, components, **rungs)
        return real(cfg, data, on_epoch, components, **rungs)

    monkeypatch.setattr(trials_mod, "train_and_evaluate", flaky)
    outcome = run_in_process(tmp_path)
    trials = outcome.study.get_trials()
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == 4 and states.count(TrialState.FAIL) == 2
    assert trials[0].user_attrs["fail_reason"] == "RuntimeError: injected failure"
    assert "non-finite training loss" in trials[1].user_attrs["fail_reason"]

    client = MlflowClient(outcome.tracker.uri)
    exp = client.get_experiment_by_name("quick")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    kinds = [r.data.tags.get("kind") for r in runs]
    assert kinds.count("study") == 1 and kinds.count("trial") == 6
    assert kinds.count("reference") == 2  # the study's seed 0 and the re-evaluation seed 1
    assert kinds.count("reeval") == 1  # max_trials=1 x seeds [1]
    parent = next(r for r in runs if r.data.tags["kind"] == "study")
    assert parent.info.status == "FINISHED"
    assert "pareto.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert client.get_metric_history(parent.info.run_id, "study/hypervolume")[-1].value > 0
    by_trial = {r.data.tags["trial_number"]: r for r in runs if r.data.tags.get("kind") == "trial"}
    failed = by_trial["0"]
    assert (
        failed.info.status == "FAILED"
        and failed.data.tags["fail_reason"] == "RuntimeError: injected failure"
    )
    for t in trials:
        run = by_trial[str(t.number)]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert t.user_attrs["mlflow_run_id"] == run.info.run_id
        if t.state == TrialState.COMPLETE:
            assert run.data.metrics["val/mean_domain_auc"] == pytest.approx(t.values[0])
            history = client.get_metric_history(run.info.run_id, "epoch/val/auc/d11")
            assert [m.step for m in history] == [1, 2]  # per-domain metrics by epoch
            assert {p for p in run.data.params} >= {"lambda_end", "band.centre", "lr"}


@pytest.mark.parametrize(
    "extra,match",
    [
        (
            ["+study.space.depth={path:model.depth,type:int,low:1,high:3}"],
            r"study.space.depth: unknown parameter path 'model.depth'",
        ),
        (
            ["study.space.lr.low=0.1", "study.space.lr.high=0.01"],
            r"study.space.lr: low=0.1 > high=0.01",
        ),
        (
            ["+study.space.form={path:pruner,type:group,choices:[fusion,magic]}"],
            r"study.space.form: choice 'magic'",
        ),
        (
            ["+study.space.eps={path:pruner.gate.eps,type:float,low:0.1,high:2.5}"],
            r"study.space.eps: value 2.5 is rejected",  # fusion: eps in (0, beta=2)
        ),
        (
            ["study.objectives=[{metric:val/mean_domain_auc,direction:up}]"],
            r"study.objectives\[0\].direction='up'",
        ),
        (["+study.space.x={type:normal}"], r"study.space.x.type='normal'"),
        (
            [
                "~study.space",
                "+study.space={seed:{path:seed,type:categorical,choices:[0,1]}}",
                "study.grid=true",
                "study.n_trials=3",
            ],
            r"study.n_trials=3 exceeds the grid's 2 points",
        ),
    ],
)
def test_bad_study_config_fails_before_the_first_trial(tmp_path, extra, match):
    with pytest.raises(ConfigError, match=match):
        run_in_process(tmp_path, *extra)
    assert not (tmp_path / "studies" / "quick" / "optuna.db").exists()


@pytest.mark.slow
def test_cli_bad_study_config_names_the_key(tmp_path):
    proc = subprocess.run(
        sweep_cmd(tmp_path, "study.space.lr.low=0.1", "study.space.lr.high=0.01"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "study.space.lr: low=0.1 > high=0.01" in proc.stderr


def _trials(tmp: Path, storage: str = "sqlite") -> list[optuna.trial.FrozenTrial]:
    folder = tmp / "studies" / "quick"
    url = (
        optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(folder / "journal.log"))
        )
        if storage == "journal"
        else f"sqlite:///{folder / 'optuna.db'}"
    )
    return optuna.load_study(study_name="quick", storage=url).get_trials()


def _running_tracked_trials(db: Path) -> list[int]:
    """Numbers of RUNNING trials that already have their MLflow run, read without a lock.

    A read-only query takes milliseconds, so a poll every 0.1 s cannot miss a trial of a few
    seconds (``optuna.load_study`` per poll took long enough on a loaded CI machine to).
    """
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.05) as con:
            rows = con.execute(
                "SELECT t.number FROM trials t JOIN trial_user_attributes a"
                " ON a.trial_id = t.trial_id"
                " WHERE t.state = 'RUNNING' AND a.key = 'mlflow_run_id'"
            ).fetchall()
    except sqlite3.Error:  # tables not created yet, or a writer holds the lock
        return []
    return [number for (number,) in rows]


@pytest.mark.slow
def test_sigkill_mid_trial_then_resume(tmp_path):
    # Trials of ~4 s each, so that the kill lands inside one.
    extra = [
        "study.n_trials=3",
        "study.reference=false",
        "train.epochs=6",
        "data.source.n_rows=200000",
    ]
    log = tmp_path / "first-run.log"
    with log.open("w") as out:
        proc = subprocess.Popen(sweep_cmd(tmp_path, *extra), cwd=ROOT, stdout=out, stderr=out)
    db = tmp_path / "studies" / "quick" / "optuna.db"
    deadline = time.time() + 300
    try:
        while not any(n >= 1 for n in _running_tracked_trials(db)):
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(
                    f"the sweep never reached its second trial (exit {proc.poll()}):\n"
                    + log.read_text()[-3000:]
                )
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed = [t.number for t in _trials(tmp_path) if t.state == TrialState.RUNNING]
    assert len(killed) == 1
    resumed = subprocess.run(
        sweep_cmd(tmp_path, *extra), cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = _trials(tmp_path)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    assert trials[killed[0]].state == TrialState.FAIL
    assert "died" in trials[killed[0]].user_attrs["fail_reason"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'studies' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("quick")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    killed_run = [
        r
        for r in runs
        if r.data.tags.get("trial_number") == str(killed[0]) and r.data.tags.get("kind") == "trial"
    ]
    assert [r.info.status for r in killed_run] == ["FAILED"]


@pytest.mark.slow
def test_two_workers_share_one_journal_study(tmp_path):
    extra = [
        "study.n_trials=6",
        "study.storage=journal",
        "study.reference=false",
        "study.reeval.max_trials=0",
        "data.source.n_rows=100000",  # trials of ~2 s: both workers get some
    ]
    procs = [
        subprocess.Popen(
            sweep_cmd(tmp_path, *extra),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    errors = [p.communicate(timeout=400)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors[0][-2000:] + errors[1][-2000:]
    trials = _trials(tmp_path, "journal")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6
    assert len({t.number for t in trials}) == len(trials)
    workers = {t.user_attrs["worker"] for t in complete}
    assert len(workers) == 2  # both did work
    client = MlflowClient(f"sqlite:///{tmp_path / 'studies' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("quick")
    trial_runs = client.search_runs([exp.experiment_id], "tags.kind = 'trial'", max_results=100)
    assert sorted(int(r.data.tags["trial_number"]) for r in trial_runs) == sorted(
        t.number for t in trials if "mlflow_run_id" in t.user_attrs
    )
    assert len(client.search_runs([exp.experiment_id], "tags.kind = 'study'")) == 1


@pytest.mark.slow
def test_workers_of_one_command_end_the_study_once(tmp_path):
    """``study.workers=2``: the extra process trains trials but leaves the study's end (front,
    report, exported models) to the process that started it, which waits for it: one summary,
    one report, not one per worker racing on the same files."""
    extra = ["study.n_trials=4", "study.reference=false", "study.reeval.max_trials=0"]
    done = subprocess.run(
        sweep_cmd(tmp_path, *extra, "study.workers=2"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert done.stdout.count("trials complete") == 1, done.stdout[-3000:]
    assert done.stdout.count("Pareto front (selected on validation") == 1
    assert "worker 1: its trials are done" in done.stdout
    assert (tmp_path / "reports" / "quick" / "report.html").stat().st_size > 1_000_000
    complete = [t for t in _trials(tmp_path, "journal") if t.state == TrialState.COMPLETE]
    assert len(complete) == 4
    # The usable CPUs shared out (study.threads=auto): not torch's default (every CPU) in each.
    threads = max(1, usable_cpus() // 2)
    assert f"2 worker processes x {threads} torch thread" in done.stdout, done.stdout[:2000]
    client = MlflowClient(f"sqlite:///{tmp_path / 'studies' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("quick")
    runs = client.search_runs([exp.experiment_id], "tags.kind = 'trial'", max_results=100)
    by_worker = {(r.data.tags["worker"], r.data.tags["torch_threads"]) for r in runs}
    assert {t for _, t in by_worker} == {str(threads)} and len(by_worker) == 2, by_worker


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", sorted(p.stem for p in (CONF / "study").glob("*.yaml") if p.stem != "base")
)
def test_every_shipped_study_validates(tmp_path, name):
    from hydra import compose

    from adasparse_lab.study.driver import StudyRunner

    overrides = [f"+study={name}", f"paths.studies={tmp_path}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        base = compose("config", overrides=overrides)
        runner = StudyRunner(base, lambda extra: compose("config", overrides=[*overrides, *extra]))
        runner.validate()  # paths exist, choices compose, range ends accepted by the config
    assert runner.settings.name == name and runner.params
    assert runner.settings.metrics == ["val/mean_domain_auc", "val/flops/ratio"]
    if runner.settings.trials_per_method:  # the comparison: its budget is its methods' points
        points = runner.session.method_points()
        methods = {p["method"] for p in points}
        assert (
            len(points)
            == runner.settings.n_trials
            == runner.settings.trials_per_method * len(methods)
        )
    if runner.settings.grid:  # a grid study's budget is its grid
        from adasparse_lab.study.space import grid

        sizes = [len(v) for v in grid(runner.params).values()]
        assert runner.settings.n_trials == int(np.prod(sizes))
