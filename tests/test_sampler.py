"""The opt-in sampler (study/sampler.py): TPE whose good set is sized by the COMPLETE trials."""

from __future__ import annotations

import statistics

import optuna
import pytest
from optuna.trial import TrialState

from adasparse_lab.errors import ConfigError
from adasparse_lab.study.sampler import EarlyStopTPESampler

optuna.logging.set_verbosity(optuna.logging.WARNING)
PRUNED, COMPLETE = TrialState.PRUNED, TrialState.COMPLETE


def _proposals(sampler_cls, directions, stop_every: int = 0, n: int = 40) -> list[dict]:
    """A study asked ``n`` times, a sampler seeded per ask as the study driver does; every
    ``stop_every``-th trial but the first of each cycle told PRUNED (0: none)."""
    study = optuna.create_study(directions=directions)
    for i in range(n):
        study.sampler = sampler_cls(n_startup_trials=5, seed=i)
        trial = study.ask()
        x, y = trial.suggest_float("x", 0, 1), trial.suggest_float("y", 0, 1)
        kind = trial.suggest_categorical("kind", ["a", "b"])
        if stop_every and i % stop_every:
            study.tell(trial, state=PRUNED)
            continue
        auc = x * (1 - y) + (0.1 if kind == "a" else 0.0)
        study.tell(trial, [auc, y] if len(directions) == 2 else auc)
    return [t.params for t in study.trials]


@pytest.mark.parametrize("directions", [["maximize", "minimize"], ["maximize"]])
def test_without_stopped_trials_it_proposes_what_optunas_tpe_proposes(directions):
    ours = _proposals(EarlyStopTPESampler, directions)
    theirs = _proposals(optuna.samplers.TPESampler, directions)
    assert ours == theirs
    assert len({p["x"] for p in ours}) == 40  # 40 asks, 35 of them TPE's: no degenerate run


def test_with_stopped_trials_its_proposals_differ_from_optunas():
    ours = _proposals(EarlyStopTPESampler, ["maximize", "minimize"], stop_every=3)
    theirs = _proposals(optuna.samplers.TPESampler, ["maximize", "minimize"], stop_every=3)
    assert ours[:5] == theirs[:5]  # the random start-up is the same
    assert sum(a != b for a, b in zip(ours, theirs)) >= 25


def _study_with_many_stopped(best_at: float = 0.8) -> optuna.Study:
    """20 COMPLETE trials spread over x in [0, 1] with AUC highest at ``best_at`` and one cost
    for all (so the ranking is by AUC alone), and 100 stopped trials spread over the same x."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for i in range(20):
        x = (i + 0.5) / 20
        study.add_trial(
            optuna.trial.create_trial(
                params={"x": x}, distributions=dist, values=[-((x - best_at) ** 2), 1.0]
            )
        )
    for i in range(100):
        study.add_trial(
            optuna.trial.create_trial(
                params={"x": (i + 0.5) / 100}, distributions=dist, state=PRUNED
            )
        )
    return study


def _distances(sampler_cls, study: optuna.Study, best_at: float = 0.8) -> list[float]:
    out = []
    for seed in range(30):
        study.sampler = sampler_cls(n_startup_trials=5, seed=seed)
        trial = study.ask()
        out.append(abs(trial.suggest_float("x", 0, 1) - best_at))
        study.tell(trial, state=TrialState.FAIL)  # not seen by the next ask
    return out


def test_many_stopped_trials_do_not_blunt_its_focus_on_the_best_complete_ones():
    """120 finished trials: Optuna's good set is the top 12 of the 20 COMPLETE ones (x from
    0.225 to 0.775 past the best, 0.8), ours the top 2 (x 0.775 and 0.825)."""
    study = _study_with_many_stopped()
    ours = statistics.median(_distances(EarlyStopTPESampler, study))
    theirs = statistics.median(_distances(optuna.samplers.TPESampler, study))
    assert ours < 0.06  # within the two best complete trials' neighbourhood
    assert ours < theirs / 2


def test_its_good_set_is_the_top_tenth_of_the_complete_trials():
    study = _study_with_many_stopped()
    sampler = EarlyStopTPESampler(n_startup_trials=5, seed=0)
    study.sampler = sampler
    trial = study.ask()
    trial.suggest_float("x", 0, 1)  # counts the study's trials
    assert sampler._gamma(120) == 2  # ceil(0.1 x 20 COMPLETE), not ceil(0.1 x 120)
    assert sampler._gamma(1) == 1  # never more than the trials it splits


def test_a_gamma_of_ones_own_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match="study.sampler.gamma"):
        EarlyStopTPESampler(gamma=lambda n: 3)


def test_a_study_config_selects_it_and_the_driver_seeds_it_per_ask(tmp_path):
    """``study.sampler._target_`` names it; the study's per-ask sampler (StudySession.sampler)
    is an EarlyStopTPESampler with the config's settings, seeded as TPE would be."""
    from hydra import compose, initialize_config_dir

    from adasparse_lab.study.driver import StudyRunner
    from tests.conftest import CONF

    def runner(target: str) -> StudyRunner:
        overrides = [
            "+study=sparsity", f"study.sampler._target_={target}", "tracking=none",
            f"paths.studies={tmp_path}/studies", f"paths.reports={tmp_path}/reports",
        ]  # fmt: skip
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            base = compose("config", overrides=overrides)
            return StudyRunner(base, lambda more: compose("config", overrides=[*overrides, *more]))

    ours = runner("adasparse_lab.study.sampler.EarlyStopTPESampler").session.sampler(12)
    theirs = runner("optuna.samplers.TPESampler").session.sampler(12)
    assert type(ours) is EarlyStopTPESampler and type(theirs) is optuna.samplers.TPESampler
    assert ours._n_startup_trials == theirs._n_startup_trials == 8
    assert ours._rng.rng.random() == theirs._rng.rng.random()  # the same per-ask seed
