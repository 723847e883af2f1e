"""Issue 22's kill storm on the services a study spans machines with: PostgreSQL for Optuna and
an MLflow tracking server. Four workers are SIGKILLed 60 times at seeded random moments of
every stage (start-up and the storage schema's creation, trials, re-evaluation, the study's
end), then the study is run once more without interruption. It must end as if nothing had
happened: exactly the budget of COMPLETE trials, nothing RUNNING in Optuna or MLflow, no
parameter set trained twice, each re-evaluation run once, one parent run, and each enqueued
point run to its end once."""

from __future__ import annotations

import random
import subprocess
import sys
import uuid
from collections import Counter

import optuna
import pytest
import sqlalchemy
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from adasparse_lab.results.front import study_front
from tests.conftest import ROOT
from tests.test_kill_storm import ENQUEUED, ENV, STAGES, kill_at

pytestmark = pytest.mark.services
N_TRIALS = 8
REEVAL_SEEDS = [1, 2]
# 60 kills: the schema is made once, so its kills come first; a kill past the budget lands in
# re-evaluation, the report or the end.
# (stage aimed at, delay range in s): the first kills land in start-up (imports) before any
# worker reached the storage; the next straddle the moment one creates Optuna's schema in the
# study's fresh database (3-8 s after it starts) and the study in it.
PLAN = (
    [("start", (0.1, 2.5))] * 4
    + [("start", (2.5, 8.0))] * 8
    + [("trial", (0.0, 2.0))] * 26
    + [("finish", (0.0, 8.0))] * 22
)


def fresh_database(url: str, name: str) -> str:
    """A new, empty database beside ``url``'s (same server and user): its URL. The study's
    storage schema is then created during the storm, whatever ran before on the server."""
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return url.rsplit("/", 1)[0] + f"/{name}"


def storm_cmd(tmp, storage: str, tracking: str, name: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "adasparse_lab.sweep",
        "+study=quick",
        f"study.name={name}",
        f"study.storage={storage}",
        f"tracking.uri={tracking}",
        "study.workers=4",
        f"study.n_trials={N_TRIALS}",
        "study.reference=false",
        "study.reeval.max_trials=2",
        f"study.reeval.seeds=[{','.join(map(str, REEVAL_SEEDS))}]",
        "study.poll_s=0.2",
        "train.epochs=1",
        "latency.enabled=false",
        "+study.enqueue=[{lr: 0.001, band.centre: 0.2}, {lr: 0.004, band.centre: 0.3}]",
        f"paths.studies={tmp}/studies",
        f"paths.reports={tmp}/reports",
        f"paths.cache={tmp}/cache",
    ]


class Stage:
    """Where the study stands (one of STAGES), read from PostgreSQL on one open connection (a
    poll every 50 ms must not open a connection each time)."""

    def __init__(self, url: str, name: str) -> None:
        self.engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        self.conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        self.name = name

    def __call__(self) -> str:
        q = sqlalchemy.text
        if not self.conn.execute(q("select to_regclass('public.trials')")).scalar():
            return "start"
        study = self.conn.execute(
            q("select study_id from studies where study_name = :n"), {"n": self.name}
        ).scalar()
        if study is None:
            return "schema"
        states = dict(
            self.conn.execute(
                q("select state, count(*) from trials where study_id = :s group by state"),
                {"s": study},
            ).all()
        )
        if states.get("COMPLETE", 0) >= N_TRIALS:
            return "finish"
        training = self.conn.execute(
            q(
                "select count(*) from trials t join trial_user_attributes a using (trial_id) "
                "where t.study_id = :s and t.state = 'RUNNING' and a.key = 'mlflow_run_id'"
            ),
            {"s": study},
        ).scalar()
        return "trial" if training else "setup"

    def close(self) -> None:
        self.conn.close()
        self.engine.dispose()


@pytest.mark.slow
def test_a_kill_storm_on_postgres_and_the_tracking_server(tmp_path, services):
    assert list(STAGES) == ["start", "schema", "setup", "trial", "finish"]
    name = f"storm-{uuid.uuid4().hex[:8]}"
    storage = fresh_database(services.storage, name.replace("-", "_"))
    cmd = storm_cmd(tmp_path, storage, services.tracking, name)
    where = Stage(storage, name)
    rng = random.Random(22)
    try:
        stages = Counter(
            kill_at(target, rng.uniform(*delay), tmp_path, [], cmd, where) for target, delay in PLAN
        )
    finally:
        where.close()
    print(f"{len(PLAN)} kills, killed in: {dict(stages)}")
    final = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-3000:]

    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == N_TRIALS
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    params = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(params)) == len(params)
    for point in ENQUEUED:  # killed or not, each enqueued point ran to its end, once
        runs = [t for t in complete if point.items() <= t.params.items()]
        assert len(runs) == 1, (point, [t.number for t in runs])

    client = MlflowClient(services.tracking)
    exp = client.get_experiment_by_name(name).experiment_id
    runs = client.search_runs([exp], max_results=1000)
    assert not [
        (r.data.tags.get("kind"), r.info.run_name) for r in runs if r.info.status == "RUNNING"
    ]
    parents = [r for r in runs if r.data.tags.get("kind") == "study"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    finished = Counter(
        (r.data.tags["trial_number"], r.data.tags["seed"])
        for r in runs
        if r.data.tags.get("kind") == "reeval" and r.info.status == "FINISHED"
    )
    front = sorted(study_front(study), key=lambda t: t.values[-1])
    assert set(finished.values()) == {1}, finished  # each re-evaluation once
    targets = {n for n, _ in finished}
    assert len(targets) >= min(2, len(front))  # the front's spread picks (and a method's best)
    assert set(finished) == {(n, str(s)) for n in targets for s in REEVAL_SEEDS}
    by_trial = Counter(
        r.data.tags["trial_number"] for r in runs if r.data.tags.get("kind") == "trial"
    )
    assert max(by_trial.values()) == 1  # one MLflow run per trial
    requeued = Counter(t.user_attrs.get("requeue_of") for t in trials)
    print(
        f"trials: {len(trials)} ({Counter(t.state.name for t in trials)}), requeued: "
        f"{sum(v for k, v in requeued.items() if k is not None)}, reeval runs: "
        f"{Counter(r.info.status for r in runs if r.data.tags.get('kind') == 'reeval')}"
    )
