"""Where a study's new parameter sets come from, so that workers and restarts never repeat
one another.

Seeding: a sampler seeded once per process with the study's seed proposes the same sequence
in every process: parallel workers ran identical trials, and each restart after a kill
re-proposed the killed trial's parameters. So the sampler is re-seeded before every ask from
(the study's seed, the worker's index, the number of trials already in storage). The number
grows with every ask of every worker, so a restart continues where the storage stands; the
index separates workers that ask at the same moment. A single worker stays reproducible: the
same study run again proposes the same sequence. Optuna's samplers read their history from
storage, so a fresh instance per ask loses nothing.

Duplicates: the seeding makes a repeat unlikely, not impossible (two workers started by hand
share index 0; a sampler may return a point it already tried). Optuna has no check of its own,
so the driver compares a trial's sampled parameters with every COMPLETE or RUNNING trial before
training it, and a repeat is told FAIL (``failure_kind=duplicate``) and asked again. An
enqueued trial (``study.enqueue``) is compared with the other trials of its point only
(study/enqueued.py: a killed point is queued again, and two copies must not both run): a
point asked for by name is run once, as asked, even where a sampled trial has its values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import optuna
from optuna.trial import TrialState

from adasparse_lab.study.enqueued import earlier_copy, point_of

MAX_DUPLICATES = 20  # repeats in a row: the space is exhausted (a small categorical space)


def proposal_seed(study_seed: int, worker_index: int, n_trials: int) -> int:
    """A 32-bit seed, a fixed function of its arguments (``hash()`` is salted per process)."""
    text = f"{study_seed}/{worker_index}/{n_trials}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:4], "big")


def duplicate_of(
    trial: optuna.Trial, trials: Iterable[optuna.trial.FrozenTrial]
) -> optuna.trial.FrozenTrial | None:
    """A COMPLETE or RUNNING trial (not ``trial``) with exactly ``trial``'s parameters; for an
    enqueued ``trial`` (Optuna marks it with the ``fixed_params`` system attribute), an earlier
    trial of the same point (enqueued.earlier_copy)."""
    trials = list(trials)
    own = next(t for t in trials if t.number == trial.number)
    if point_of(own) is not None:
        return earlier_copy(own, trials)
    live = (TrialState.COMPLETE, TrialState.RUNNING)
    for other in trials:
        if other.number != trial.number and other.state in live and other.params == trial.params:
            return other
    return None
