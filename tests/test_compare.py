"""The equal-budget comparison (issue 20, ``study.trials_per_method``): every method of the
space's ``method`` entry gets the same number of trials, each over its own knobs. Read back
from a small real study (3 methods x 2 trials on tiny data) that the driver really ran, and
resumed; bad settings fail before any training, naming the key."""

from __future__ import annotations

import io
from collections import Counter
from contextlib import redirect_stdout

import pytest
from hydra import compose, initialize_config_dir
from optuna.trial import TrialState

from adasparse_lab.errors import ConfigError
from adasparse_lab.results.budgets import Budget, method_budgets
from adasparse_lab.results.collect import collect
from adasparse_lab.study.matched import (
    budgets_equal_by_design,
    collect_cells,
    format_per_method,
    main,
)
from adasparse_lab.sweep import run_study
from tests.conftest import CONF, SIX_DOMAINS, TINY_RUN

pytestmark = pytest.mark.slow

METHODS = ["dense", "fusion", "random"]
SMALL = [
    "study.name=cmp",
    f"study.space.method.choices=[{','.join(METHODS)}]",
    "~study.space.n_experts",  # the zoo models' knobs: their paths exist for no method here
    "~study.space.apg_rank",
    "study.trials_per_method=2",
    "study.n_trials=6",
    "study.reeval.seeds=[1,2]",
    "study.poll_s=0.1",
    "study.space.lr.low=0.005",  # 19 steps of a tiny tower: a rate that learns something
    "study.space.lr.high=0.02",
    *SIX_DOMAINS,
    *TINY_RUN,
]


def _run(tmp, *extra: str):
    overrides = [
        "+study=compare",
        *SMALL,
        *extra,
        f"paths.studies={tmp}/studies",
        f"paths.reports={tmp}/reports",
        f"paths.cache={tmp}/cache",
    ]
    with (
        initialize_config_dir(config_dir=str(CONF), version_base="1.3"),
        redirect_stdout(io.StringIO()),
    ):
        return run_study(compose("config", overrides=overrides), overrides)


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    return tmp, _run(tmp)


def test_every_method_gets_the_same_trials_round_robin(compared):
    _, outcome = compared
    trials = outcome.study.get_trials()
    assert [t.params["method"] for t in trials] == METHODS * 2  # enqueued round-robin
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert Counter(t.params["method"] for t in trials) == dict.fromkeys(METHODS, 2)
    # each a partial point: the method asked for by name, nothing else
    assert [t.system_attrs["fixed_params"] for t in trials] == [{"method": m} for m in METHODS * 2]
    budgets = method_budgets(trials)
    assert set(budgets.values()) == {Budget(asked=2, complete=2)}


def test_each_method_searches_its_own_knobs(compared):
    _, outcome = compared
    by_method: dict[str, list[dict]] = {}
    for t in outcome.study.get_trials():
        by_method.setdefault(t.params["method"], []).append(t.params)
    for method, (first, second) in by_method.items():
        rest = [{k: v for k, v in p.items() if k != "method"} for p in (first, second)]
        assert rest[0] and rest[0] != rest[1], method  # sampled, not fixed
        assert rest[0].keys() == rest[1].keys()
    # the conditional space: the gate's knobs where the gate has them (the config's keys), the
    # regulariser for AdaSparse and the target band for the pruned methods (their ``when``)
    band = {"band.centre", "band.width"}
    assert by_method["fusion"][0].keys() == {
        "method", "lambda_end", "eps", "beta", "alpha_end", "lr", *band
    }  # fmt: skip
    assert by_method["random"][0].keys() == {"method", "lr", *band}
    assert by_method["dense"][0].keys() == {"method", "lr"}


def test_a_resume_enqueues_nothing_again(compared):
    tmp, outcome = compared
    before = [(t.number, t.state) for t in outcome.study.get_trials()]
    again = _run(tmp)
    assert [(t.number, t.state) for t in again.study.get_trials()] == before
    assert again.done


def test_budgets_are_equal_by_design_and_verdicts_pair_every_method(compared, capsys):
    tmp, outcome = compared
    info = collect(["cmp"], [outcome.storage_desc]).studies[0]
    assert budgets_equal_by_design(info)
    cells = collect_cells(info, "val/flops/ratio")
    assert not any(c.flag for c in cells)
    table = format_per_method(cells, "val/flops/ratio")
    for method in ("adasparse-fusion", "random"):
        assert f"{method} vs dense: " in table, table
    assert "(2 paired seeds)" in table and "budget" not in table
    assert main(["study=cmp", f"studies={tmp}/studies", "per_method=true"]) == 0
    assert "vs dense: " in capsys.readouterr().out


def test_two_workers_share_the_points_and_run_each_once(tmp_path):
    """``study.workers=2`` on one journal: each point is popped by one worker, every method
    still gets exactly its 2 trials, and nothing is sampled beyond them."""
    outcome = _run(tmp_path, "study.workers=2", "study.reeval.seeds=[]")
    trials = outcome.study.get_trials()
    assert all(t.state == TrialState.COMPLETE for t in trials), [t.state for t in trials]
    assert Counter(t.params["method"] for t in trials) == dict.fromkeys(METHODS, 2)
    assert all("fixed_params" in t.system_attrs for t in trials)


def test_a_failed_point_is_flagged_not_replaced_by_a_sampled_trial(tmp_path, monkeypatch):
    """random's first trial raises: the study ends once every point has run (5 of its 6
    trials COMPLETE) instead of sampling a seventh, and random is flagged, not compared."""
    import adasparse_lab.study.trials as trials_mod

    real, failed = trials_mod.train_and_evaluate, []

    def failing(cfg, data, *args, **kwargs):
        if cfg.pruner.get("method") == "random" and not failed:
            failed.append(True)
            raise RuntimeError("injected failure")
        return real(cfg, data, *args, **kwargs)

    monkeypatch.setattr(trials_mod, "train_and_evaluate", failing)
    outcome = _run(tmp_path, "study.reeval.seeds=[]")
    trials = outcome.study.get_trials()
    assert [t.params["method"] for t in trials] == METHODS * 2  # nothing sampled beyond them
    assert [t.state.name for t in trials].count("FAIL") == 1 and outcome.done
    assert method_budgets(trials)["random"] == Budget(asked=2, complete=1)
    info = collect(["cmp"], [outcome.storage_desc]).studies[0]
    flags = {c.method: c.flag for c in collect_cells(info, "val/flops/ratio")}
    assert flags["random"] == "budget 1/2 complete (others 2)" and not flags["dense"]


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["study.trials_per_method=0"], r"study.trials_per_method=0 is out of range"),
        (["study.n_trials=5"], r"study.n_trials=5 must be study.trials_per_method \(2\) x the 3"),
        (["study.grid=true"], r"study.trials_per_method=2 does not combine with study.grid"),
        (
            ["study.early_stop.kind=moasha"],
            r"study.trials_per_method=2 does not combine with study.early_stop.kind=moasha",
        ),
        (
            ["+study.enqueue=[{lr:0.01}]"],
            r"study.enqueue\[0\].method: with study.trials_per_method",
        ),
        (
            ["+study.enqueue=[{method:dense},{method:dense},{method:dense}]"],
            r"more than study.trials_per_method=2 points for method\(s\) \['dense'\]",
        ),
        (
            ["+study.space.lr.when={method:[fusion,fusoin]}"],
            r"study.space.lr.when.method: \['fusoin'\] not among its choices",
        ),
        (
            ["+study.space.lr.when={lambda_end:[1.0]}"],
            r"study.space.lr.when.lambda_end: not a compose-time entry",
        ),
        (
            ["~study.space.method", "~study.space.lambda_end.when", "~study.space.band.when"],
            r"study.trials_per_method=2 needs a categorical study.space.method entry",
        ),
    ],
)
def test_bad_settings_fail_before_training_naming_the_key(tmp_path, extra, match):
    with pytest.raises(ConfigError, match=match):
        _run(tmp_path, *extra)
    assert not (tmp_path / "studies" / "cmp").exists()
