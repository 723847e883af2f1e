"""The study driver's parts alone (study/session.py, study/finish.py, study/reevaluation.py):
which worker makes the parent run, which trials form the front and which of them are
re-evaluated. No training, no MLflow: an in-memory Optuna study and hand-made trials."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from adasparse_lab.store.study_storage import this_host, worker_id
from adasparse_lab.study.finish import StudyClosing
from adasparse_lab.study.reevaluation import reeval_targets
from adasparse_lab.study.session import StudyContext, StudySession
from adasparse_lab.study.settings import parse_settings

OBJECTIVES = [
    {"metric": "val/mean_domain_auc", "direction": "maximize"},
    {"metric": "val/flops/ratio", "direction": "minimize"},
]


def context(worker: str = "here:1:1", **study) -> StudyContext:
    node = OmegaConf.create({"name": "s", "n_trials": 4, "objectives": OBJECTIVES, **study})
    return StudyContext(None, None, parse_settings(node), [], Path("unused"), worker)


def trial(number: int, auc: float, cost: float, method: str = "m", flops_excess: float = 0.0):
    t = create_trial(
        values=[auc, cost],
        params={"x": float(number)},
        distributions={"x": FloatDistribution(0.0, 100.0)},
        user_attrs={"method": method},
        constraints={"flops_budget": flops_excess},
    )
    t.number = number
    return t


# -- the parent run's election (StudySession.wait_for_parent) -------------------------------
def _study(**attrs) -> optuna.Study:
    study = optuna.create_study()
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    return study


def test_a_recorded_parent_run_is_used():
    session = StudySession(context())
    assert session.wait_for_parent(_study(creator="x:2:2", parent_run_id="abc")) == "abc"


@pytest.mark.parametrize(
    "creator", [None, "here:1:1", f"{this_host()}:999999:1"], ids=["none", "self", "dead"]
)
def test_this_worker_makes_the_parent_run_for_itself_or_a_dead_creator(creator):
    attrs = {} if creator is None else {"creator": creator}
    assert StudySession(context()).wait_for_parent(_study(**attrs)) is None


def test_a_live_creator_is_waited_for():
    """The creator (this very process: alive) records its parent run a moment later."""
    study = _study(creator=worker_id())
    timer = threading.Timer(0.2, study.set_user_attr, ("parent_run_id", "late"))
    timer.start()
    try:
        assert StudySession(context(worker="other:1:1")).wait_for_parent(study) == "late"
    finally:
        timer.join()


# -- the front and re-evaluation targets (study/finish.py, study/reevaluation.py) -----------
def test_the_front_keeps_feasible_non_dominated_trials_by_cost():
    study = optuna.create_study(directions=["maximize", "minimize"])
    for t in [
        trial(0, 0.70, 0.9),
        trial(1, 0.72, 0.5),  # dominates 0
        trial(2, 0.65, 0.2),
        trial(3, 0.80, 0.1, flops_excess=0.3),  # best on both, but over the FLOPs budget
        trial(4, 0.60, 0.6),  # dominated by 1 and 2
    ]:
        study.add_trial(t)
    study.add_trial(create_trial(state=TrialState.FAIL))
    front = StudyClosing(context(), trials=None).pareto(study)
    assert [t.number for t in front] == [2, 1]


def test_reeval_targets_spread_along_the_front_then_each_methods_best():
    settings = context().settings
    front = [trial(n, 0.6 + 0.01 * n, 0.1 * n) for n in range(5)]
    assert [t.number for t in reeval_targets(front, 3, [], settings)] == [0, 2, 4]
    assert [t.number for t in reeval_targets(front, 1, [], settings)] == [0]
    assert reeval_targets(front, 0, [], settings) == []
    done = [
        *front,
        trial(10, 0.50, 0.05, method="rival"),
        trial(11, 0.55, 0.30, method="rival"),  # the rival's best on the first objective
        trial(12, 0.90, 0.02, method="over", flops_excess=1.0),  # infeasible: never chosen
    ]
    chosen = reeval_targets(front, 2, done, settings)
    # front ends 0 and 4; the best "m" (4) is already chosen; the rival's best, by cost
    assert [t.number for t in chosen] == [0, 4, 11]


def test_reeval_targets_of_the_study_follow_its_settings():
    study = optuna.create_study(directions=["maximize", "minimize"])
    for t in [trial(0, 0.7, 0.5), trial(1, 0.6, 0.2), trial(2, 0.65, 0.9, method="rival")]:
        study.add_trial(t)
    per_method = context(reeval={"seeds": [1], "max_trials": 1, "select": "per_method"})
    front = StudyClosing(per_method, None).pareto(study)
    assert [t.number for t in front] == [1, 0]
    targets = StudyClosing(per_method, None).reeval_targets(front, study)
    assert [t.number for t in targets] == [1, 0, 2]  # the cheapest front trial, each best
    no_seeds = context(reeval={"seeds": [], "max_trials": 5})
    assert StudyClosing(no_seeds, None).reeval_targets(front, study) == []


def test_a_studys_compose_reads_the_yaml_once_per_overrides_and_hands_out_copies():
    """Hydra re-reads every YAML file on each compose (0.2-0.6 s, the largest fixed cost of a
    trial stopped at its first rung): the study composes each set of overrides once, and each
    caller gets its own copy to write its sampled values into."""
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF

    calls: list[list[str]] = []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        base = compose("config", overrides=["+study=quick"])

        def hydra_compose(extra: list[str]):
            calls.append(list(extra))
            return compose("config", overrides=["+study=quick", *extra])

        ctx = StudyContext.from_config(base, hydra_compose)
        first = ctx.compose([])
        first.train.lr = 0.5  # a trial's sampled value
        again = ctx.compose([])
        dense = ctx.compose(["pruner=none"])
        dense_again = ctx.compose(["pruner=none"])
        fresh = compose("config", overrides=["+study=quick"])
    assert calls == [[], ["pruner=none"]]
    assert again.train.lr == base.train.lr != 0.5  # not the first caller's copy
    assert again == fresh  # the same config a fresh compose gives
    assert dense.pruner == dense_again.pruner != first.pruner
    assert dense is not dense_again


# -- workers and threads (study.workers, study.threads) ---------------------------------------
@pytest.mark.parametrize(
    ("cpus", "study", "workers", "threads"),
    [
        (2, {}, 1, None),  # one worker: torch's own default, the shipped studies' numbers
        (2, {"workers": "auto"}, 2, 1),  # one worker a usable CPU, one thread each
        (1, {"workers": "auto"}, 1, None),
        (8, {"workers": 2}, 2, 4),  # the CPUs shared out, none oversubscribed
        (2, {"workers": 4}, 4, 1),  # more workers than CPUs: one thread each at least
        (8, {"workers": 2, "threads": 1}, 2, 1),  # said outright
        (8, {"threads": 3}, 1, 3),
    ],
)
def test_workers_and_their_torch_threads_follow_the_usable_cpus(
    monkeypatch, cpus, study, workers, threads
):
    """``study.workers=N`` started N processes at torch's default threads each (every CPU), so
    2 workers on 2 CPUs ran 4 threads: ``study.threads=auto`` shares the usable CPUs out, and
    ``study.workers=auto`` is one worker a CPU (the faster layout, docs/benchmarks.md)."""
    from adasparse_lab import machine

    monkeypatch.setattr(machine, "usable_cpus", lambda: cpus)
    s = context(**study).settings
    assert (s.workers, s.threads) == (workers, threads)


@pytest.mark.parametrize(
    ("study", "key"),
    [
        ({"workers": 0}, "study.workers=0"),
        ({"workers": "many"}, "study.workers='many'"),
        ({"workers": True}, "study.workers=True"),
        ({"threads": 0}, "study.threads=0"),
        ({"threads": "all"}, "study.threads='all'"),
    ],
)
def test_bad_workers_or_threads_name_their_key(study, key):
    from adasparse_lab.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(key)):
        context(**study)


@pytest.mark.parametrize("first", [0, 8])
def test_the_workers_a_command_starts_get_its_threads_and_their_own_index(monkeypatch, first):
    """The extra processes of ``study.workers=N`` run ``study.workers=1`` with the thread count
    the first one chose (not torch's default) and the indices after the first one's: on the
    machine given ``study.worker_index=8`` (docs/cluster.md: one range a machine) 9 and 10,
    not the 1 and 2 of machine 0's workers, which seed the same proposals."""
    from adasparse_lab import sweep

    started = []
    monkeypatch.setattr(sweep.subprocess, "Popen", lambda cmd, env: started.append(cmd))
    argv = ["+study=quick", "study.workers=auto", "study.threads=auto"]
    sweep.spawn_workers(2, [*argv, f"study.worker_index={first}"], 1, first)
    tails = [cmd[cmd.index("+study=quick") :] for cmd in started]
    assert tails == [
        ["+study=quick", "study.workers=1", "study.threads=1", f"study.worker_index={first + i}"]
        for i in (1, 2)
    ]
