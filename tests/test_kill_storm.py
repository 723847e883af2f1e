"""Issue 8's kill storm: a 4-worker study SIGKILLed again and again, at seeded random moments
from start-up on (imports, MLflow schema creation, the reference runs, trials, re-evaluation,
the report), then run once more without interruption. It must end as if nothing had happened:
exactly the budget of COMPLETE trials, nothing left RUNNING in Optuna or MLflow, no parameter
set trained twice, one parent run, and each enqueued point run to its end once (issue 22)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.conftest import ROOT
from tests.test_sweep import _trials, sweep_cmd

N_TRIALS = 8
EXTRA = [
    "study.storage=journal",
    "study.workers=4",
    f"study.n_trials={N_TRIALS}",
    "study.reference=false",
    "study.reeval.max_trials=1",
    "train.epochs=1",
    "latency.enabled=false",
    "+study.enqueue=[{lr: 0.001, band.centre: 0.2}, {lr: 0.004, band.centre: 0.3}]",
]
ENQUEUED = [{"lr": 0.001, "band.centre": 0.2}, {"lr": 0.004, "band.centre": 0.3}]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # 4 workers on a few cores: no oversubscription
# The stage each kill waits for, in the order a study passes them (the schema is made once,
# so its kills come first); then a random delay from a seeded RNG. Kills past the budget land
# in re-evaluation, the report or the final summary.
PLAN = ["start"] * 6 + ["schema"] * 3 + ["trial"] * 12 + ["finish"] * 9  # 30 kills, as issue 8 asks
DELAY_S = {"start": (0.1, 4.0), "schema": (0.0, 1.0), "trial": (0.0, 2.0), "finish": (0.0, 6.0)}


STAGES = ("start", "schema", "setup", "trial", "finish")  # setup: between schema and trials


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stage(tmp: Path) -> str:
    """Where the study stands now (one of STAGES)."""
    studies = tmp / "studies"
    creating = [f for f in studies.glob("mlflow.db.init-*") if _alive(int(f.name.split("-")[1]))]
    if creating:  # (a killed creation's file stays until the next creation removes it)
        return "schema"
    journal = studies / "quick" / "journal.log"
    if not (studies / "mlflow.db").exists() or not journal.exists():
        return "start"
    try:
        trials = _trials(tmp, "journal")
    except Exception:  # a journal line being written
        return "setup"
    if sum(t.state == TrialState.COMPLETE for t in trials) >= N_TRIALS:
        return "finish"
    running = [
        t for t in trials if t.state == TrialState.RUNNING and "mlflow_run_id" in t.user_attrs
    ]
    return "trial" if running else "setup"


EARLY_STOP = [
    "study.early_stop.kind=moasha",
    "study.early_stop.eta=2",
    "study.early_stop.min_fraction=0.5",
]


def kill_at(
    target: str,
    delay: float,
    tmp: Path,
    extra: list[str],
    cmd: list[str] | None = None,
    where=None,
) -> str:
    """Start the study (``cmd``; default: the journal study in ``tmp``), wait for ``target``
    or a later stage (``where()``: one of STAGES; at most 60 s), wait ``delay``, SIGKILL its
    process group; return the stage it was in when killed."""
    where = where or (lambda: stage(tmp))
    proc = subprocess.Popen(
        cmd or sweep_cmd(tmp, *EXTRA, *extra),
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # one process group: the study and its 3 extra workers
    )
    deadline = time.monotonic() + 60
    while target != "start" and time.monotonic() < deadline and proc.poll() is None:
        if STAGES.index(where()) >= STAGES.index(target):
            break
        time.sleep(0.05)
    time.sleep(delay)
    killed_in = where() if proc.poll() is None else "ended"
    with contextlib.suppress(ProcessLookupError):  # extra workers may outlive an ended leader
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return killed_in


@pytest.mark.slow
@pytest.mark.parametrize("early", [[], EARLY_STOP], ids=["plain", "early-stop"])
def test_a_kill_storm_leaves_a_study_that_resumes_to_exactly_its_budget(tmp_path, early):
    rng = random.Random(8)
    stages = Counter(kill_at(t, rng.uniform(*DELAY_S[t]), tmp_path, early) for t in PLAN)
    print(f"killed in: {dict(stages)}")
    final = subprocess.run(
        sweep_cmd(tmp_path, *EXTRA, *early),
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert final.returncode == 0, final.stderr[-3000:]
    trials = _trials(tmp_path, "journal")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == N_TRIALS
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    params = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(params)) == len(params)
    ended = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    for point in ENQUEUED:  # killed or not, each enqueued point ran to its end, once
        runs = [t for t in ended if point.items() <= t.params.items()]
        assert len(runs) == 1, (point, [t.number for t in runs])
    requeued = Counter(t.user_attrs.get("requeue_of") for t in trials)
    print(f"trials: {len(trials)}, requeued: {dict(requeued)}")
    client = MlflowClient(f"sqlite:///{tmp_path / 'studies' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("quick")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert not [
        (r.data.tags.get("kind"), r.info.run_name) for r in runs if r.info.status == "RUNNING"
    ]
    parents = [r for r in runs if r.data.tags.get("kind") == "study"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    if early:  # each stopped trial: one decision to stop, at the rung it names, with a record
        pruned = [t for t in trials if t.state == TrialState.PRUNED]
        assert pruned, "no trial was stopped early: the storm did not test early stopping"
        for t in pruned:
            at = t.user_attrs["pruned_at"]
            assert t.user_attrs[f"rung@{at}/decision"]["go_on"] is False
            assert len(t.user_attrs[f"rung@{at}"]["values"]) == 2
        status = {r.info.run_id: r.info.status for r in runs}
        assert all(status[t.user_attrs["mlflow_run_id"]] == "KILLED" for t in pruned)
        print(f"early stopping: {len(pruned)} trials stopped at a rung")
