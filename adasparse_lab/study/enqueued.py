"""Enqueued points (``study.enqueue``: the paper's setting, cheap forms) survive kills.

A point asked for by name used to have one trial: killed mid-run it became FAIL (its worker
dead, study.store.study_storage.recover_stale) and a resume sampled other points, so after
one unlucky kill the main study no longer held the paper's setting. Now a point whose every
trial failed for a reason not its own (a dead or silent worker, a lost heartbeat, Ctrl-C) is
enqueued again, the new trial naming the one it replaces (user attr ``requeue_of``).

A point is known by its place in ``study.enqueue`` (user attr ``enqueued``, on each of its
trials: the same values enqueued twice are two points, each run) and the parameters Optuna
stores on each of its trials (the ``fixed_params`` system attribute); for a study made before
this rule, by the parameters alone. Exactly once:
- the worker that moved a trial RUNNING -> FAIL requeues its point (the move is atomic in every
  storage: only one worker wins it);
- a worker starting also requeues any lost point (one killed between those two steps, or
  stopped by Ctrl-C); workers starting together may both do so, and the second copy is then
  skipped when it is run (``earlier_copy``, study/proposals.py), never trained twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable

import optuna
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger(__name__)
ENQUEUED, REQUEUE_OF = "enqueued", "requeue_of"
MAX_REQUEUES = 5  # a point that kills its worker itself (out of memory) must not loop forever
NOT_ITS_OWN = {"stale", "heartbeat", "duplicate", None}  # failure_kind: None is Ctrl-C


def point_of(trial: FrozenTrial) -> str | None:
    """The enqueued point ``trial`` runs, as a key (None: a sampled trial)."""
    fixed = trial.system_attrs.get("fixed_params")
    if fixed is None:
        return None
    return json.dumps([trial.user_attrs.get(ENQUEUED), fixed], sort_keys=True)


def earlier_copy(trial: FrozenTrial, trials: Iterable[FrozenTrial]) -> FrozenTrial | None:
    """Another trial of ``trial``'s enqueued point that makes running it a repeat: ended on
    its own (COMPLETE, or PRUNED by early stopping), or RUNNING with a lower number (of two
    copies started at once, the first runs)."""
    key = point_of(trial)
    for other in trials:
        if other.number == trial.number or point_of(other) != key:
            continue
        if other.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
            other.state == TrialState.RUNNING and other.number < trial.number
        ):
            return other
    return None


def _lost(copies: list[FrozenTrial]) -> bool:
    """Whether a point's trials all failed for reasons not the point's own."""
    if any(t.state != TrialState.FAIL for t in copies):
        return False  # waiting, running, complete, or stopped early by its results (PRUNED)
    if any(t.user_attrs.get("failure_kind") not in NOT_ITS_OWN for t in copies):
        return False  # it failed by itself (an error), or the budget was reached (surplus)
    if sum(REQUEUE_OF in t.user_attrs for t in copies) >= MAX_REQUEUES:
        log.warning("enqueued point %s killed %d times: not queued again", copies[0].params,
                    MAX_REQUEUES)  # fmt: skip
        return False
    return True


def requeue_lost(
    study: optuna.Study,
    failed: Iterable[int] | None = None,
    resumable: Callable[[FrozenTrial], bool] | None = None,
) -> list[int]:
    """Enqueue again each lost point among the trials numbered ``failed`` (all points when
    None), and each lost sampled trial that is ``resumable`` (it left a checkpoint: its copy
    goes on from it, study/trials.py); returns the numbers of the trials requeued."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    requeued = _requeue_points(study, trials, failed)
    if resumable is not None:
        requeued += _requeue_resumable(study, trials, failed, resumable)
    if requeued:
        log.warning("trial(s) %s queued again (same parameters): their worker died", requeued)
    return requeued


def _requeue_resumable(
    study: optuna.Study,
    trials: dict[int, FrozenTrial],
    failed: Iterable[int] | None,
    resumable: Callable[[FrozenTrial], bool],
) -> list[int]:
    """A sampled trial (not an enqueued point: those are requeued above) lost with a
    checkpoint becomes an enqueued point with its parameters, once; kills of that copy are
    then a point's (``_lost``)."""
    retried = {t.user_attrs.get(REQUEUE_OF) for t in trials.values()}
    numbers = trials if failed is None else failed
    requeued = []
    for number in numbers:
        t = trials[number]
        if (
            point_of(t) is None
            and t.state == TrialState.FAIL
            and t.user_attrs.get("failure_kind") in NOT_ITS_OWN - {"duplicate"}
            and number not in retried
            and resumable(t)
        ):
            study.enqueue_trial(t.params, user_attrs={REQUEUE_OF: number})
            requeued.append(number)
    return requeued


def _requeue_points(
    study: optuna.Study, trials: dict[int, FrozenTrial], failed: Iterable[int] | None
) -> list[int]:
    by_point: dict[str, list[FrozenTrial]] = {}
    for t in trials.values():
        if (key := point_of(t)) is not None:
            by_point.setdefault(key, []).append(t)
    wanted = None if failed is None else {point_of(trials[n]) for n in failed}
    requeued = []
    for key, copies in by_point.items():
        if (wanted is None or key in wanted) and _lost(copies):
            last = copies[-1]
            index, params = json.loads(key)
            attrs = {REQUEUE_OF: last.number, **({} if index is None else {ENQUEUED: index})}
            study.enqueue_trial(params, user_attrs=attrs)
            requeued.append(last.number)
    return requeued
