"""The paper study (conf/study/paper.yaml) and its claims (results/claims.py): the claims of a
small paper study the driver really ran, recomputed independently from Optuna and MLflow
(run metrics, artifacts), and the verdict rule on its edge cases."""

from __future__ import annotations

import io
import math
from contextlib import redirect_stdout
from itertools import combinations

import numpy as np
import optuna
import polars as pl
import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import open_dict

from adasparse_lab.errors import ConfigError
from adasparse_lab.metrics import safe_name
from adasparse_lab.report.sections import claims_section
from adasparse_lab.results.claims import (
    HELD,
    INCONCLUSIVE,
    NOT_HELD,
    NOT_MEASURED,
    ClaimPlan,
    ClaimSpec,
    group_contrast,
    measure,
    paired,
    parse_claims,
    size_halves,
    study_claims,
    verdict,
)
from adasparse_lab.results.collect import collect
from adasparse_lab.study import space as space_mod
from adasparse_lab.study.claims import main as claims_main
from adasparse_lab.study.driver import StudyRunner
from tests.conftest import CONF, FIXTURES, REAL_OVERRIDES

# ---------------------------------------------------------------- the verdict and its parts


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], NOT_MEASURED),
        ([math.nan], NOT_MEASURED),
        ([0.01], INCONCLUSIVE),  # one seed: no spread to judge by
        ([0.010, 0.012, 0.011], HELD),
        ([-0.010, -0.012, -0.011], NOT_HELD),
        ([0.010, -0.004], INCONCLUSIVE),  # the spread straddles 0
        ([0.0, 0.0], INCONCLUSIVE),  # mean - sd = 0 is not above 0
        ([0.02, math.nan, 0.021], HELD),  # a seed without a value is left out
    ],
)
def test_verdict(values, expected):
    assert verdict(np.array(values)) == expected


def test_verdict_boundary_is_mean_minus_sd():
    values = np.array([0.001, 0.003])  # mean 0.002, sd 0.00141: mean - sd > 0
    assert verdict(values) == HELD
    assert verdict(np.array([0.0, 0.004, -0.001])) == INCONCLUSIVE  # mean 0.001 < sd


def test_paired_uses_common_seeds_only():
    assert paired({0: 0.7, 1: 0.8, 2: 0.6}, {1: 0.75, 2: 0.65, 3: 0.9}) == pytest.approx(
        {1: 0.05, 2: -0.05}
    )


def test_the_runner_up_is_chosen_on_validation_over_the_seeds_shared_with_the_arm():
    """Selecting the rival by its test AUC would tune the claim on test; a rival's seeds the arm
    lacks say nothing about the paired comparison."""
    rows = [  # arm, seed, val_auc, test_auc
        *(("a", s, 0.78, 0.74 + s / 100) for s in (0, 1, 2)),
        *(("b", s, 0.80, 0.70) for s in (0, 1, 2)),  # best on validation
        *(("c", s, 0.75, 0.73 + s / 100) for s in (0, 1, 2)),  # best on test
        ("c", 9, 0.76, 0.99),
        ("d", 0, 0.70, 0.71),  # best on validation, but only on seed 5 that "a" did not run
        ("d", 5, 0.99, 0.71),
    ]
    arms = pl.DataFrame(rows, schema=["arm", "seed", "val_auc", "test_auc"], orient="row")
    arms = arms.with_columns(number=pl.int_range(pl.len()), study=pl.lit("s"))
    plan = ClaimPlan("arm", "seed", (ClaimSpec("better", "a", ("b", "c", "d"), "a > rest", ""),))
    (result,) = measure(plan, arms, pl.DataFrame(), pl.DataFrame(), {})
    assert result.note == "runner-up: b"
    assert result.per_seed == pytest.approx({s: 0.74 + s / 100 - 0.70 for s in (0, 1, 2)})


def test_size_halves_leave_the_middle_domain_out():
    domains = pl.DataFrame(
        {"domain": ["a", "b", "c", "d", "e"], "train_rows": [50, 10, 30, None, 20]}
    )
    assert size_halves(domains) == (["b", "e"], ["c", "a"])  # d: size unknown


def test_group_contrast_on_a_known_structure():
    kept = np.array(
        [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 1, 1, 1]], dtype=bool
    )  # groups 0, 0, 1, 1
    # same group: J(0,1) = 1, J(2,3) = 2/3; other pairs: 0, 1/4, 0, 1/4
    expected = np.mean([1.0, 2 / 3]) - np.mean([0.0, 0.25, 0.0, 0.25])
    assert group_contrast(kept, [0, 0, 1, 1]) == pytest.approx(expected)
    assert math.isnan(group_contrast(kept, [0, 0, 0, 0]))  # no pair across groups


@pytest.mark.parametrize(
    ("claim", "key"),
    [
        ({"kind": "worse", "arm": "a", "versus": ["b"]}, r"list\[0\]\.kind"),
        ({"kind": "better", "arm": "zzz", "versus": ["b"]}, r"list\[0\]\.arm='zzz'"),
        ({"kind": "better", "arm": "a", "versus": ["zzz"]}, r"list\[0\]\.versus='zzz'"),
        ({"kind": "better", "arm": "a"}, r"list\[0\]\.versus"),
        ({"kind": "small_domains", "arm": "a", "versus": ["b", "c"]}, r"list\[0\]\.versus"),
        ({"kind": "groups", "arm": "a", "colour": 1}, r"list\[0\]: unknown field"),
    ],
)
def test_bad_claims_name_their_key(claim, key):
    with pytest.raises(ConfigError, match=key):
        parse_claims({"arm": "arm", "seed": "seed", "list": [claim]}, {"a", "b", "c"})


# ---------------------------------------------------------------- the config on every data


def _compose_paper(data: str, *extra: str):
    overrides = ["+study=paper", f"data={data}", f"paths.data={FIXTURES}", *extra]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        base = compose("config", overrides=overrides)

    def more(o):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("config", overrides=[*overrides, *o])

    return base, more


@pytest.mark.parametrize("data", ["synthetic", "douban", "taobao"])
def test_paper_study_composes_on_every_data(data):
    base, more = _compose_paper(data)
    runner = StudyRunner(base, more)  # parses study.* including study.claims
    grid = space_mod.grid(runner.params)
    assert math.prod(len(v) for v in grid.values()) == runner.settings.n_trials == 45
    assert base.data.name == data
    arm = more(["pruner=fusion", "pruner.stop_gradient=true"])  # one arm's overrides compose
    assert arm.pruner.stop_gradient is True


@pytest.mark.slow
@pytest.mark.parametrize("data", ["synthetic", "douban", "taobao"])
def test_every_paper_arm_builds_on_every_data(data):
    base, more = _compose_paper(data)
    StudyRunner(base, more).validate()  # every arm composed and its components built


def test_claims_naming_a_missing_parameter_fail_before_training():
    with pytest.raises(ConfigError, match=r"study\.claims\.seed='rep'"):
        _compose_and_parse("study.claims.seed=rep")
    with pytest.raises(ConfigError, match=r"study\.claims\.list\[2\]\.versus='nope'"):
        _compose_and_parse("study.claims.list.2.versus=[nope]")


def _compose_and_parse(override: str) -> None:
    base, more = _compose_paper("synthetic", override)
    StudyRunner(base, more)


# ---------------------------------------------------------------- a real paper study

ARMS = ["dense", "fusion", "binarization"]
SEEDS = [0, 1]


@pytest.fixture(scope="module")
def paper_study(tmp_path_factory):
    """A paper study the driver runs: 3 arms x 2 seeds on tiny synthetic data (6 domains in 2
    true groups), plus a structure claim on binarization (it prunes within one epoch)."""
    from adasparse_lab.sweep import run_study

    root = tmp_path_factory.mktemp("paper-study")
    dropped = {"study.poll_s", "study.flops_budget", "study.n_trials", "study.name", "+study"}
    shrink = [o for o in REAL_OVERRIDES if o.split("=")[0] not in dropped and "reeval" not in o]
    overrides = [
        "+study=paper",
        *shrink,
        f"study.space.arm.choices=[{','.join(ARMS)}]",
        f"study.space.seed.choices=[{','.join(map(str, SEEDS))}]",
        f"study.n_trials={len(ARMS) * len(SEEDS)}",
        "study.poll_s=0.1",
        f"paths.studies={root}/studies",
        f"paths.reports={root}/reports",
        f"paths.cache={root}/cache",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        base = compose("config", overrides=overrides)
        with open_dict(base):
            base.study.claims.list.append(
                {"kind": "groups", "arm": "binarization", "text": "binarization", "source": "t"}
            )
        with redirect_stdout(io.StringIO()) as printed:
            outcome = run_study(base, overrides)
    return outcome, root, printed.getvalue()


def _independent(outcome):
    """(arm, seed) -> MLflow run of its trial, read from Optuna and MLflow directly."""
    client = MlflowClient(outcome.tracker.uri)
    study = optuna.load_study(study_name="paper", storage=outcome.storage_desc)
    runs = {
        (t.params["arm"], t.params["seed"]): client.get_run(t.user_attrs["mlflow_run_id"])
        for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    }
    return client, study, runs


def _by_text(results):
    return {(r.spec.kind, r.spec.arm, r.spec.versus): r for r in results}


@pytest.mark.slow
def test_claims_equal_what_the_trials_measured(paper_study):
    outcome, root, _ = paper_study
    client, study, runs = _independent(outcome)
    assert sorted(runs) == sorted((a, s) for a in ARMS for s in SEEDS)
    data = collect(["paper"], [outcome.storage_desc])
    results, summary = study_claims(data, data.studies[0])
    found = _by_text(results)
    auc = {k: r.data.metrics["test/mean_domain_auc"] for k, r in runs.items()}
    for arm, rival in [("fusion", "binarization"), ("fusion", "dense")]:
        r = found[("better", arm, (rival,))]
        assert r.per_seed == pytest.approx({s: auc[arm, s] - auc[rival, s] for s in SEEDS})
        assert r.verdict == verdict(np.array([auc[arm, s] - auc[rival, s] for s in SEEDS]))
    for r in results:  # arms this grid did not run: named, not measured
        if {r.spec.arm, *r.spec.versus} - set(ARMS):
            assert (r.per_seed, r.verdict) == ({}, NOT_MEASURED)
    means = dict(zip(summary["arm"], summary["test_auc"]))
    assert means == pytest.approx({a: np.mean([auc[a, s] for s in SEEDS]) for a in ARMS})

    # gain by domain size, from the per-domain metrics and the stored domain sizes
    sizes = sorted((d["train_rows"], d["domain"]) for d in study.user_attrs["domains"])
    small, large = [d for _, d in sizes[:3]], [d for _, d in sizes[3:]]

    def gain(d, s):
        m = [runs[a, s].data.metrics[f"test/auc/{safe_name(d)}"] for a in ("fusion", "dense")]
        return m[0] - m[1]

    expected = {
        s: np.mean([gain(d, s) for d in small]) - np.mean([gain(d, s) for d in large])
        for s in SEEDS
    }
    assert found[("small_domains", "fusion", ("dense",))].per_seed == pytest.approx(expected)


@pytest.mark.slow
def test_structure_claim_from_the_stored_keep_probabilities(paper_study, tmp_path):
    outcome, _, _ = paper_study
    client, study, runs = _independent(outcome)
    groups = {d["domain"]: d["group"] for d in study.user_attrs["domains"]}
    expected, pruned = {}, 0
    for seed in SEEDS:
        run_id = runs["binarization", seed].info.run_id
        keep = pl.read_parquet(
            client.download_artifacts(run_id, "keep_prob.parquet", str(tmp_path))
        )
        kept = {
            d: set(part.filter(pl.col("keep_prob") > 0.5).select("position", "neuron").iter_rows())
            for (d,), part in keep.group_by("domain")
        }
        pruned += sum(len(k) < keep.filter(pl.col("domain") == d).height for d, k in kept.items())
        same, other = [], []
        for a, b in combinations(sorted(kept), 2):
            union = kept[a] | kept[b]
            j = len(kept[a] & kept[b]) / len(union) if union else 1.0
            (same if groups[a] == groups[b] else other).append(j)
        expected[seed] = np.mean(same) - np.mean(other)
    assert pruned  # some domain dropped neurons: the overlaps are not trivially 1
    data = collect(["paper"], [outcome.storage_desc])
    results, _ = study_claims(data, data.studies[0])
    assert _by_text(results)[("groups", "binarization", ())].per_seed == pytest.approx(expected)


@pytest.mark.slow
def test_section_command_and_study_end_show_the_same_numbers(paper_study):
    outcome, root, printed = paper_study
    data = collect(["paper"], [outcome.storage_desc])
    results, _ = study_claims(data, data.studies[0])
    section = claims_section(data)
    page = "".join(b.html for b in section.blocks)
    with redirect_stdout(io.StringIO()) as out:
        assert claims_main(["study=paper", f"studies={root}/studies"]) == 0
    report = (root / "reports" / "paper" / "report.html").read_text()
    for r in results:
        if r.per_seed:
            assert f"{r.mean:+.4f}" in page and f"{r.mean:+.4f}" in report
            assert f"{r.mean:+.4f} ± {r.sd:.4f} (n={len(r.per_seed)})" in out.getvalue()
            assert f"{r.mean:+.4f} ± {r.sd:.4f} (n={len(r.per_seed)})" in printed
        assert f"| {r.verdict} |" in out.getvalue()
    assert sum(r.verdict == NOT_MEASURED for r in results) == 5  # arms the grid left out
