"""Issue 11: a study on PostgreSQL and an MLflow server, its workers standing for separate
machines (each its own ``ADASPARSE_WORKER_HOST``, studies folder and data cache: they share
only the two services). One worker is SIGKILLed mid-trial; Optuna's heartbeat must fail its
trial (no worker can see a process on another machine), and the study must still end with
exactly its budget, nothing duplicated, and a report built from the services alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from adasparse_lab.report.build import build
from adasparse_lab.results.front import study_front
from adasparse_lab.store.study_storage import open_rdb
from tests.conftest import ROOT

pytestmark = pytest.mark.services
N_TRIALS = 4
VICTIM = 1  # worker index killed mid-trial


# A lost database is retried RETRY_S; the grace period outlasts that silence (the rule of
# study/settings.py: storage_retry_s + 2 * heartbeat_s + 8).
RETRY_S, HEARTBEAT_S = 6, 1
GRACE_S = RETRY_S + 2 * HEARTBEAT_S + 8


def worker_cmd(tmp: Path, services, name: str, index: int, *extra: str) -> list[str]:
    """The sweep command of worker ``index``; ``extra`` overrides replace those of the same key."""
    machine = tmp / f"machine-{index}"
    overrides = [
        f"study.name={name}",
        f"study.storage={services.storage}",
        f"tracking.uri={services.tracking}",
        f"study.n_trials={N_TRIALS}",
        f"study.worker_index={index}",
        "study.reference=false",
        "study.reeval.max_trials=0",
        f"study.heartbeat_s={HEARTBEAT_S}",
        f"study.storage_retry_s={RETRY_S}",
        f"study.grace_s={GRACE_S}",
        "study.poll_s=0.2",
        "latency.enabled=false",
        f"paths.studies={machine}/studies",
        f"paths.reports={machine}/reports",
        f"paths.cache={machine}/cache",
    ]
    given = {o.split("=", 1)[0] for o in extra}
    kept = [o for o in overrides if o.split("=", 1)[0] not in given]
    return [sys.executable, "-m", "adasparse_lab.sweep", "+study=quick", *kept, *extra]


def start_worker(
    tmp: Path, services, name: str, index: int, *extra: str, env: dict | None = None
) -> subprocess.Popen:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "ADASPARSE_WORKER_HOST": f"machine-{index}",
        **(env or {}),
    }
    log = open(tmp / f"worker-{index}.log", "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(
        worker_cmd(tmp, services, name, index, *extra),
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def trials(services, name: str) -> list[optuna.trial.FrozenTrial]:
    """The study's trials, through a storage whose connections are closed at once: a URL
    makes a new engine per call, and its pooled connections outlived the call, so polling
    ten times a second ran PostgreSQL out of connections ("too many clients already")."""
    storage = optuna.storages.RDBStorage(services.storage)
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials()
    except KeyError:  # not created yet
        return []
    finally:
        storage.engine.dispose()


def test_polling_a_study_leaves_no_connection_open(services):
    """The tests below poll ``trials`` ten times a second against one PostgreSQL for the whole
    session; each poll must give its connections back."""
    probe = sqlalchemy.create_engine(services.storage, poolclass=sqlalchemy.pool.NullPool)
    query = sqlalchemy.text("select count(*) from pg_stat_activity where datname is not null")

    def connections() -> int:
        with probe.connect() as connection:
            return connection.execute(query).scalar()

    before = connections()
    for _ in range(30):
        assert trials(services, f"absent-{uuid.uuid4().hex[:8]}") == []
    assert connections() - before <= 2


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def running_trial_of(services, name: str, index: int):
    """The victim's trial once it is training (its MLflow run exists)."""
    for t in trials(services, name):
        worker = t.user_attrs.get("worker", "")
        mine = worker.startswith(f"machine-{index}:")
        if mine and t.state == TrialState.RUNNING and "mlflow_run_id" in t.user_attrs:
            return t
    return None


def finish(procs: dict[int, subprocess.Popen], tmp: Path, timeout_s: float = 150) -> None:
    for i, p in procs.items():
        try:
            code = p.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            code = "timeout"
        log = (tmp / f"worker-{i}.log").read_text()
        assert code == 0, f"worker {i} ended with {code}:\n{log[-3000:]}"


@pytest.mark.slow
def test_a_worker_killed_mid_trial_on_postgres_and_the_server(tmp_path, services):
    name = f"dist-{uuid.uuid4().hex[:8]}"
    procs = {i: start_worker(tmp_path, services, name, i) for i in range(3)}
    killed = wait_for(lambda: running_trial_of(services, name, VICTIM), 90, "the victim's trial")
    os.killpg(procs[VICTIM].pid, signal.SIGKILL)  # RUNNING with its MLflow run: it trains
    procs.pop(VICTIM).wait()
    at_kill = next(t for t in trials(services, name) if t.number == killed.number)
    assert at_kill.state == TrialState.RUNNING  # killed mid-trial, not after it ended
    finish(procs, tmp_path)

    stored = trials(services, name)
    states = Counter(t.state for t in stored)
    assert states[TrialState.COMPLETE] == N_TRIALS and not states[TrialState.RUNNING]
    dead = next(t for t in stored if t.number == killed.number)
    assert dead.state == TrialState.FAIL
    assert dead.user_attrs["failure_kind"] == "stale"
    assert "no heartbeat from worker machine-1:" in dead.user_attrs["fail_reason"]
    complete = [t for t in stored if t.state == TrialState.COMPLETE]
    assert len({tuple(sorted(t.params.items())) for t in complete}) == N_TRIALS

    client = MlflowClient(services.tracking)
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], "tags.kind = 'trial'", max_results=1000)
    numbers = Counter(r.data.tags["trial_number"] for r in runs)
    assert max(numbers.values()) == 1  # one MLflow run per trial, none duplicated
    by_id = {r.info.run_id: r for r in runs}
    assert set(by_id) == {
        t.user_attrs["mlflow_run_id"] for t in stored if "mlflow_run_id" in t.user_attrs
    }
    assert by_id[dead.user_attrs["mlflow_run_id"]].info.status == "FAILED"
    for t in complete:
        run = by_id[t.user_attrs["mlflow_run_id"]]
        assert run.info.status == "FINISHED"
        assert run.data.metrics["val/mean_domain_auc"] == pytest.approx(t.values[0])
    parents = client.search_runs([exp.experiment_id], "tags.kind = 'study'")
    assert [p.info.status for p in parents] == ["FINISHED"]

    # The report from the two services alone: no studies folder, no local MLflow store.
    os.chdir(tmp_path)  # (pytest restores the directory) nothing relative is found here
    report = build([name], [services.storage], tmp_path / "fresh", studies_dir="nowhere").path
    html = report.read_text()
    assert "no heartbeat from worker machine-1:" in html
    assert all(t.user_attrs["mlflow_run_id"] in html for t in complete)


@pytest.mark.slow  # (the services take ~8 s to start)
def test_workers_creating_the_storage_schema_at_once(services):
    """Eight workers open one empty database together: each gets a working storage (Optuna's
    schema creation raced: CREATE TYPE studydirection failed on all but one)."""
    db = f"race{uuid.uuid4().hex[:8]}"
    services.postgres.createdb(db)
    url = services.postgres.url(db)
    start = threading.Barrier(8)

    def open_one(_):
        start.wait()
        return open_rdb(url, 1, 4, 10)

    with ThreadPoolExecutor(8) as pool:
        storages = list(pool.map(open_one, range(8)))
    optuna.create_study(study_name="s", storage=storages[0])
    assert [optuna.get_all_study_names(s) for s in storages] == [["s"]] * 8


@pytest.mark.slow
def test_every_storage_call_a_study_makes_rides_out_a_restart(services):
    """Optuna's study wraps the storage in a cache that calls private methods of the RDB
    storage (``_get_trials``, ``_create_new_trial``, ``_set_trial_param``): those must retry a
    lost database too. CI failed on this: a worker starting up while PostgreSQL restarted died
    in ``study.get_trials`` (its ``_get_trials`` was not retried)."""
    db = f"restart{uuid.uuid4().hex[:8]}"
    services.postgres.createdb(db)
    storage = open_rdb(services.postgres.url(db), HEARTBEAT_S, GRACE_S, 30)
    study = optuna.create_study(study_name="s", storage=storage)
    study.enqueue_trial({"x": 0.5})

    def down_for_a_while(call):
        services.postgres.stop("fast")
        back = threading.Timer(2.0, services.postgres.start)
        back.start()
        try:
            return call()
        finally:
            back.join()

    assert len(down_for_a_while(lambda: study.get_trials(deepcopy=False))) == 1
    trial = down_for_a_while(study.ask)  # _create_new_trial (and the enqueued point's claim)
    assert down_for_a_while(lambda: trial.suggest_float("x", 0, 1)) == 0.5  # _set_trial_param
    down_for_a_while(lambda: study.tell(trial, 1.0))
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE]


def check_budget_and_runs(services, name: str) -> list[optuna.trial.FrozenTrial]:
    """Exactly the budget COMPLETE, nothing RUNNING, every COMPLETE trial's metrics on the
    server; returns the trials."""
    stored = trials(services, name)
    states = Counter(t.state for t in stored)
    assert states[TrialState.COMPLETE] == N_TRIALS and not states[TrialState.RUNNING]
    client = MlflowClient(services.tracking)
    for t in stored:
        if t.state == TrialState.COMPLETE:
            run = client.get_run(t.user_attrs["mlflow_run_id"])
            assert run.info.status == "FINISHED"
            assert run.data.metrics["val/mean_domain_auc"] == pytest.approx(t.values[0])
    return stored


@pytest.mark.slow
def test_workers_ride_out_a_postgres_restart(tmp_path, services):
    name = f"pgrestart-{uuid.uuid4().hex[:8]}"
    procs = {i: start_worker(tmp_path, services, name, i) for i in range(2)}
    wait_for(lambda: running_trial_of(services, name, 0), 90, "a trial")
    services.postgres.stop("fast")  # every connection is cut
    time.sleep(3)
    services.postgres.start()
    finish(procs, tmp_path)
    stored = check_budget_and_runs(services, name)
    logs = "".join((tmp_path / f"worker-{i}.log").read_text() for i in procs)
    assert "database unreachable" in logs  # they did lose it, and retried
    # Both workers lived through it: none failed the other's trial as stale when it came back
    # (study.grace_s outlasts the silence of a retried connection).
    assert [t.number for t in stored if t.user_attrs.get("failure_kind") == "stale"] == []
    assert [t.number for t in stored if t.user_attrs.get("failure_kind") == "heartbeat"] == []


@pytest.mark.slow
def test_a_database_down_for_good_stops_workers_with_the_reason(tmp_path, services):
    name = f"pgdown-{uuid.uuid4().hex[:8]}"
    # The MLflow server loses its database too; its client would retry for minutes.
    quick_mlflow = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}
    quick_retry = ("study.storage_retry_s=4", f"study.grace_s={4 + 2 * HEARTBEAT_S + 8}")
    proc = start_worker(tmp_path, services, name, 0, *quick_retry, env=quick_mlflow)
    wait_for(lambda: running_trial_of(services, name, 0), 90, "a trial")
    services.postgres.stop("fast")
    try:
        code = proc.wait(60)
    finally:
        services.postgres.start()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    log = (tmp_path / "worker-0.log").read_text()
    assert code != 0
    assert "error: study.storage: the database 127.0.0.1:" in log
    assert "was unreachable for 4s (study.storage_retry_s)" in log
    # Nothing half-written: each trial is RUNNING (its heartbeat stopped; the next worker fails
    # it) or finished with all it needs.
    for t in trials(services, name):
        assert t.state in (TrialState.RUNNING, TrialState.COMPLETE, TrialState.FAIL)
        if t.state == TrialState.COMPLETE:
            assert t.values is not None and "mlflow_run_id" in t.user_attrs


@pytest.mark.slow
def test_metrics_survive_a_tracking_server_outage(tmp_path, services):
    """MLflow's client retries a refused connection with backoff (MLFLOW_HTTP_REQUEST_*): a
    server back within that time loses nothing."""
    name = f"mlflowdown-{uuid.uuid4().hex[:8]}"
    procs = {0: start_worker(tmp_path, services, name, 0)}
    trial = wait_for(lambda: running_trial_of(services, name, 0), 90, "a trial")
    log = tmp_path / "worker-0.log"
    services.mlflow.stop()
    try:  # down until the running trial's tracking (its epochs, metrics, run end) met it
        wait_for(lambda: "Retrying (Retry(" in log.read_text(), 60, "a retried tracking call")
    finally:
        services.mlflow.start()
    finish(procs, tmp_path)
    stored = check_budget_and_runs(services, name)  # every COMPLETE trial's metrics landed
    ended = next(t for t in stored if t.number == trial.number)
    assert ended.state == TrialState.COMPLETE  # the trial running through the outage


@pytest.mark.slow
def test_a_tracking_server_down_for_good_fails_the_trial_with_the_reason(tmp_path, services):
    name = f"mlflowgone-{uuid.uuid4().hex[:8]}"
    quick_mlflow = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}  # else retried for minutes
    proc = start_worker(tmp_path, services, name, 0, "study.max_failures=1", env=quick_mlflow)
    trial = wait_for(lambda: running_trial_of(services, name, 0), 90, "a trial")
    services.mlflow.stop()
    try:
        code = proc.wait(60)
    finally:
        services.mlflow.start()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    log = (tmp_path / "worker-0.log").read_text()
    assert code != 0 and "error: 1 trials failed (study.max_failures=1)" in log
    failed = next(t for t in trials(services, name) if t.number == trial.number)
    assert failed.state == TrialState.FAIL and failed.user_attrs["failure_kind"] == "error"
    assert "Connection refused" in failed.user_attrs["fail_reason"]


@pytest.mark.slow
def test_three_workers_ending_together_do_each_piece_of_shared_work_once(tmp_path, services):
    """Issue 22: three workers (three machines) started by hand reach the study's end together.
    Each re-evaluation run, each dense reference run and each front model's logging must
    happen exactly once, however the workers interleave (before: each worker searched MLflow
    and then created a run, and each ended the study, so models were logged up to 3 times)."""
    name = f"ends-{uuid.uuid4().hex[:8]}"
    extra = [
        "study.n_trials=6",
        "study.reference=true",
        "study.reeval.max_trials=3",
        "study.reeval.seeds=[1,2]",
        "study.log_models=front",
        "train.epochs=1",
    ]
    procs = {i: start_worker(tmp_path, services, name, i, *extra) for i in range(3)}
    finish(procs, tmp_path, timeout_s=300)

    client = MlflowClient(services.tracking)
    exp = client.get_experiment_by_name(name).experiment_id
    runs = client.search_runs([exp], "", max_results=1000)
    kinds = Counter(r.data.tags.get("kind") for r in runs)
    reevals = Counter(
        (r.data.tags["trial_number"], r.data.tags["seed"])
        for r in runs
        if r.data.tags.get("kind") == "reeval"
    )
    references = Counter(
        r.data.tags["seed"] for r in runs if r.data.tags.get("kind") == "reference"
    )
    front = {
        t.number for t in study_front(optuna.load_study(study_name=name, storage=services.storage))
    }
    expected_reevals = min(3, len(front)) * 2
    assert kinds["study"] == 1
    assert len(reevals) == expected_reevals and set(reevals.values()) == {1}, reevals
    assert references == {"0": 1, "1": 1, "2": 1}, references  # the study's seed and both
    assert all(r.info.status == "FINISHED" for r in runs if r.data.tags.get("kind") != "trial")

    logged = client.search_logged_models(experiment_ids=[exp], max_results=1000)
    per_run = Counter((m.source_run_id, m.name) for m in logged)  # the pyfunc and torch model
    trial_runs = {
        r.info.run_id: int(r.data.tags["trial_number"])
        for r in runs
        if r.data.tags.get("kind") == "trial"
    }
    assert {trial_runs[run_id] for run_id, _ in per_run} == front  # every front model, only them
    assert {name for _, name in per_run} == {"model", "torch_model"}
    assert set(per_run.values()) == {1}, per_run  # each logged once
    logs = [(tmp_path / f"worker-{i}.log").read_text() for i in procs]
    assert sum("pareto table   :" in log for log in logs) >= 1  # someone ended it
