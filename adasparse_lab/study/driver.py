"""The ask-and-tell study driver: ask -> compose -> fit/evaluate -> tell, resumable and
shareable by several workers. Selection on validation, claims on test: once the budget is
spent, the Pareto trials are re-trained with several seeds and evaluated on test.

``StudyRunner`` composes three parts, each usable alone:
- ``StudySession`` (study/session.py): checks, storage, resume, the parent-run election;
- ``TrialRunner`` (study/trials.py): the trials and the loop until the budget is spent;
- ``StudyClosing`` (study/finish.py): reference runs, the front, re-evaluation, hypervolume.

The driver needs two callables from its caller, so it stays usable without ``@hydra.main``:
``compose(overrides) -> DictConfig`` (the study's base overrides plus ``overrides``) and the
base config itself.
"""

from __future__ import annotations

import optuna
from omegaconf import DictConfig
from optuna.trial import FixedTrial

from adasparse_lab.store.study_storage import recover_stale
from adasparse_lab.store.tracking import Tracker
from adasparse_lab.study.enqueued import requeue_lost
from adasparse_lab.study.finish import StudyClosing, StudyOutcome
from adasparse_lab.study.reevaluation import reeval_targets
from adasparse_lab.study.session import (
    Compose,
    StudyContext,
    StudySession,
    domain_summary,
    fail_trial_run,
    machine_info,
)
from adasparse_lab.study.trials import HeartbeatLostError, StudyFailedError, TrialRunner

__all__ = [
    "HeartbeatLostError",
    "StudyFailedError",
    "StudyOutcome",
    "StudyRunner",
    "machine_info",
    "reeval_targets",
]


class StudyRunner:
    """One worker of the study ``base.study``: its parts share one ``StudyContext``."""

    def __init__(self, base: DictConfig, compose: Compose) -> None:
        self.ctx = StudyContext.from_config(base, compose)
        self.session = StudySession(self.ctx)
        self.trials = TrialRunner(self.ctx, self.session.sampler)
        self.closing = StudyClosing(self.ctx, self.trials)

    base = property(lambda self: self.ctx.base)
    compose = property(lambda self: self.ctx.compose)
    settings = property(lambda self: self.ctx.settings)
    params = property(lambda self: self.ctx.params)
    folder = property(lambda self: self.ctx.folder)

    @property
    def worker(self) -> str:
        return self.ctx.worker

    @worker.setter
    def worker(self, value: str) -> None:  # tests stand for several processes in one
        self.ctx.worker = value

    def validate(self) -> None:
        self.session.validate()

    def open(self) -> tuple[optuna.Study, str]:
        return self.session.open()

    def ask(self, study: optuna.Study) -> optuna.Trial:
        return self.trials.ask(study)

    def trial_config(self, trial: optuna.Trial | FixedTrial) -> tuple[DictConfig, list[str]]:
        return self.trials.trial_config(trial)

    def optimise(self, study: optuna.Study, tracker: Tracker, parent: str) -> bool:
        return self.trials.optimise(study, tracker, parent)

    def run(self) -> StudyOutcome:
        self.validate()
        study, desc = self.open()
        tracker, parent = self.session.tracker_and_parent(study)
        recover_stale(study, lambda t: fail_trial_run(tracker, t))
        requeue_lost(study, None, self.trials.resumable)  # also one a kill interrupted
        self.session.fail_stale_runs(tracker, parent)
        base_data = self.trials.data_for(self.compose([]))  # bad data fails before any trial
        if "domains" not in study.user_attrs:
            study.set_user_attr("domains", domain_summary(base_data))
        if self.settings.reference:
            self.closing.reference(tracker, parent, study)
        done = self.optimise(study, tracker, parent)
        front = self.closing.close(study, tracker, parent, done)
        return StudyOutcome(
            study, self.settings, front, self.folder, desc, tracker, parent, done, self.worker
        )
