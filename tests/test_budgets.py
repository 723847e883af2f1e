"""Fair means equal budget (issue 20): a method whose study gave it fewer trials, or whose trials
failed, is flagged in the matched-cost table and its comparisons get no verdict. Read back from
a small real study whose trials really ended so: one method's search cut short (the study
reached its budget before the method's third seed), another's every trial failing (a learning
rate its config refuses, found only when the trial builds its run)."""

from __future__ import annotations

import dataclasses
import re

import optuna
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from adasparse_lab.results.budgets import Budget, method_budgets
from adasparse_lab.results.collect import collect
from adasparse_lab.results.verdicts import BETTER, SAME, WORSE
from adasparse_lab.study.matched import collect_cells, format_matched, format_per_method, main
from adasparse_lab.sweep import run_study
from tests.conftest import CONF, SIX_DOMAINS, TINY_RUN

pytestmark = pytest.mark.slow

# broken's trials fail when they build their run (train.lr must be > 0); random runs two seeds
# only: the study reaches its 5 COMPLETE trials (dense 3, random 2) before random's third.
ORDER = [
    ("broken", 0), ("dense", 0), ("random", 0), ("broken", 1), ("dense", 1), ("random", 1),
    ("broken", 2), ("dense", 2), ("random", 2),
]  # fmt: skip
NOT_EQUAL = "not an equal-budget comparison"


@pytest.fixture(scope="module")
def unequal_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("budgets")
    overrides = [
        "+study=rivals",
        "study.name=budgets",
        "study.grid=false",
        "study.space.method.choices=[dense,random,broken]",
        '+study.space.method.overrides.broken=["pruner=none","+pruner.label=broken","train.lr=-1"]',
        "study.space.target.choices=[t40]",
        "study.n_trials=5",
        "study.poll_s=0.1",
        *SIX_DOMAINS,
        *TINY_RUN,
        f"paths.studies={tmp}/studies",
        f"paths.reports={tmp}/reports",
        f"paths.cache={tmp}/cache",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        base = compose("config", overrides=overrides)
        with open_dict(base):
            base.study.enqueue = [{"method": m, "target": "t40", "seed": s} for m, s in ORDER]
        outcome = run_study(base, overrides)
    return tmp, outcome


def test_budgets_count_every_ended_trial_and_the_complete_ones(unequal_study):
    _, outcome = unequal_study
    states = [(t.user_attrs.get("method"), t.state.name) for t in outcome.study.get_trials()]
    assert states.count(("broken", "FAIL")) == 3  # really failed, each after naming its method
    budgets = method_budgets(outcome.study.get_trials())
    assert budgets == {
        "dense": Budget(asked=3, complete=3),
        "random": Budget(asked=2, complete=2),
        "broken": Budget(asked=3, complete=0),
    }


def test_a_method_short_of_budget_is_flagged_and_not_compared(unequal_study):
    _, outcome = unequal_study
    info = collect(["budgets"], [outcome.storage_desc]).studies[0]
    cells = collect_cells(info, "val/flops/ratio")
    flags = {c.method: c.flag for c in cells}
    assert flags == {
        "dense": "",
        "random": "budget 2/2 complete (others 3)",
        "broken": "budget 0/3 complete (others 3)",
    }
    text = format_matched(cells, (0.5,), "val/flops/ratio")
    (row,) = [line for line in text.splitlines() if re.match(r"\s+1\. random", line)]
    assert row.endswith("[budget 2/2 complete (others 3)]")
    # random against dense over their 2 shared seeds: numbers, but no verdict
    (line,) = [line for line in text.splitlines() if "random vs dense:" in line]
    assert "(2 paired seeds)" in line and NOT_EQUAL in line
    assert not any(word in line for word in (BETTER, WORSE, SAME, "Holm"))
    # broken ran nothing to compare: said so, not left out
    assert "broken: no trial completed [budget 0/3 complete (others 3)]" in text
    table = format_per_method(cells, "val/flops/ratio")
    assert "| random [budget 2/2 complete (others 3)] |" in table
    assert "broken: no trial completed [budget 0/3 complete (others 3)]" in table


def test_the_matched_command_prints_the_flags(unequal_study, capsys):
    tmp, _ = unequal_study
    assert main(["study=budgets", f"studies={tmp}/studies", "at=0.5"]) == 0
    out = capsys.readouterr().out
    assert "[budget 2/2 complete (others 3)]" in out and NOT_EQUAL in out


def test_a_sampled_study_says_its_budgets_differ_by_design_instead_of_flagging(unequal_study):
    """The same study read as if a sampler had shared its trials out (TPE gives the promising
    methods more): no method is flagged, and one line names each method's trials."""
    _, outcome = unequal_study
    info = collect(["budgets"], [outcome.storage_desc]).studies[0]
    copy = optuna.create_study(directions=info.study.directions)
    for i, t in enumerate(info.study.get_trials()):
        attrs = {k: v for k, v in t.system_attrs.items() if i or k != "fixed_params"}
        copy.add_trial(  # the first trial as if the sampler had proposed it
            optuna.trial.create_trial(
                state=t.state, values=t.values, params=t.params, distributions=t.distributions,
                user_attrs=t.user_attrs, system_attrs=attrs,
            )
        )  # fmt: skip
    sampled = dataclasses.replace(
        info, study=copy, attrs={**info.attrs, "config": "study: {grid: false}"}
    )
    cells = collect_cells(sampled, "val/flops/ratio")
    assert not any(c.flag for c in cells)
    text = format_matched(cells, [0.5], "val/flops/ratio")
    assert "trials per method (sampled by the search, unequal by design): " in text
    assert "dense 3, random 2, broken 0/3 complete" in text
    assert NOT_EQUAL not in text


def test_a_trial_killed_and_queued_again_counts_once():
    """A trial whose worker died is FAIL and queued again (study/enqueued.py: its copy names
    it, ``requeue_of``): the copy is the method's trial, the killed one counts for nothing, so
    one kill does not flag its method. A failure of its own still counts."""

    def trial(number, method, state, **attrs):
        t = optuna.trial.create_trial(
            state=state,
            values=[0.7, 0.5] if state == optuna.trial.TrialState.COMPLETE else None,
            user_attrs={"method": method, **attrs},
        )
        t.number = number
        return t

    done, fail = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL
    trials = [
        trial(0, "dense", done),
        trial(1, "random", fail, failure_kind="stale"),  # killed, then queued again as #3
        trial(2, "dense", done),
        trial(3, "random", done, requeue_of=1),
        trial(4, "random", fail, failure_kind="error"),  # failed by itself: counted
    ]
    assert method_budgets(trials[:4]) == {"dense": Budget(2, 2), "random": Budget(1, 1)}
    assert method_budgets(trials)["random"] == Budget(asked=2, complete=1)
