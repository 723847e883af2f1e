"""Telling Optuna a trial's result exactly once.

``study.tell`` stores the trial's state first and only then calls the sampler's ``after_trial``.
GridSampler calls ``study.stop()`` there once its grid is exhausted, which raises RuntimeError
outside ``optimize()``: the trial is already COMPLETE in storage. Such an error must never
become a second tell (``UpdateFinishedTrialError``), so it is logged and the study goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import optuna

log = logging.getLogger(__name__)


def is_finished(study: optuna.Study, number: int) -> bool:
    """Whether trial ``number`` is finished (COMPLETE, FAIL, PRUNED) in storage."""
    trials = study.get_trials(deepcopy=False)
    return any(t.number == number and t.state.is_finished() for t in trials)


def tell_complete(study: optuna.Study, trial: optuna.Trial, values: Sequence[float]) -> None:
    """Tell ``values`` once; an error raised after the state was stored is logged, not retold."""
    tell_once(study, trial, values=list(values))


def tell_fail(study: optuna.Study, trial: optuna.Trial) -> None:
    """Tell FAIL once (a failed or skipped trial can end a grid as well as a complete one)."""
    tell_once(study, trial, state=optuna.trial.TrialState.FAIL)


def tell_once(study: optuna.Study, trial: optuna.Trial, **tell) -> None:
    try:
        study.tell(trial, **tell)
    except Exception as err:
        if not is_finished(study, trial.number):
            raise
        log.info("trial %d stored; the sampler's after_trial said: %s", trial.number, err)
