"""One owner for each piece of a study's shared work, through the study's own Optuna storage.

A study's workers share more than trials: each re-evaluation run, each dense reference run,
each front model's logging and the study's end are to happen once, whatever the number of
workers or machines. Searching MLflow for a run and then creating one is not atomic (two
workers can both find none), so ownership is taken where every worker already agrees: the
study's Optuna storage. A claim is a study named ``<study> [claim] <key> #<generation>``;
creating a study whose name exists fails in every Optuna storage (a unique index in an RDB,
the journal's lock, the in-memory storage's), so of the workers that try, exactly one wins.

A claim records its holder (user attr ``worker``) and how it ended (``state``: ``done`` or
``failed``). A claim whose holder is known to be dead (on this host: study.store.study_storage.
worker_alive), that failed, or that never named its holder within ``UNNAMED_S`` (its creator
was killed between the two calls) is *lost*: the next generation may be claimed, again by
exactly one worker; of two claims on one piece (a slow creator named itself after all) the
newer yields, and the older yields when it finds a newer one (``Claims._superseded``).
A holder on another machine is taken as alive, as Optuna's trials are until their heartbeat
goes silent. Claim studies hold no trials; ``is_claim`` tells them apart from real studies.
"""

from __future__ import annotations

import itertools
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass

import optuna
from optuna.exceptions import DuplicatedStudyError
from optuna.storages import BaseStorage
from optuna.study import StudyDirection

from adasparse_lab.store.study_storage import worker_alive

MARK = " [claim] "
WORKER, STATE = "worker", "state"
DONE, FAILED = "done", "failed"
UNNAMED_S = 30  # a claim made but not named this long: its creator was killed in between


@contextmanager
def _quiet_optuna():
    logger = logging.getLogger("optuna")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def claim_name(study: str, key: str, generation: int) -> str:
    return f"{study}{MARK}{key} #{generation}"


def is_claim(name: str) -> bool:
    """Whether a study name is a claim (not a study of trials)."""
    return MARK in name


@dataclass
class Claim:
    """A piece of work this worker owns: ``finish`` records how it ended."""

    storage: BaseStorage
    study_id: int

    def finish(self, ok: bool = True) -> None:
        self.storage.set_study_user_attr(self.study_id, STATE, DONE if ok else FAILED)


@dataclass
class Claims:
    """Claims on the shared work of study ``study`` in ``storage``, taken by ``worker``."""

    storage: BaseStorage
    study: str
    worker: str

    @classmethod
    def of(cls, study: optuna.Study, worker: str) -> Claims:
        return cls(study._storage, study.study_name, worker)

    def take(self, key: str, again_when_done: bool = False) -> Claim | None:
        """Own the work ``key``, or None: it is done, or another live worker owns it. With
        ``again_when_done`` a done claim may be taken again unless its holder is known to be
        alive: work redone by each later run of the study's command, one worker at a time."""
        unnamed = False
        for generation in itertools.count():
            name = claim_name(self.study, key, generation)
            try:
                with _quiet_optuna():  # not "A new study created" for each claim
                    study_id = self.storage.create_new_study([StudyDirection.MINIMIZE], name)
            except DuplicatedStudyError:
                verdict = self._lost(name, again_when_done)
                if verdict == "no":
                    return None
                unnamed = verdict == "unnamed"
                continue
            self.storage.set_study_user_attr(study_id, WORKER, self.worker)
            claim = Claim(self.storage, study_id)
            if self._superseded(key, generation, unnamed):
                claim.finish(ok=False)
                return None
            return claim
        raise AssertionError("unreachable")

    def _superseded(self, key: str, generation: int, after_unnamed: bool) -> bool:
        """A claim taken over from an unnamed one yields when that one has named its holder
        since (a slow creator, not a dead one); that creator yields in turn when a later
        generation exists. Both may yield (both fail): the next ``take`` runs the work."""
        later = self._attrs(claim_name(self.study, key, generation + 1))
        if later is not None:
            return True
        if after_unnamed:
            earlier = self._attrs(claim_name(self.study, key, generation - 1)) or {}
            return earlier.get(WORKER) is not None and worker_alive(earlier[WORKER]) is not False
        return False

    def state(self, key: str) -> str | None:
        """How the latest claim on ``key`` stands: done, failed, held, or None (never taken)."""
        latest = None
        for generation in itertools.count():
            attrs = self._attrs(claim_name(self.study, key, generation))
            if attrs is None:
                break
            latest = attrs.get(STATE, "held")
        return latest

    def _attrs(self, name: str) -> dict | None:
        try:
            study_id = self.storage.get_study_id_from_name(name)
        except KeyError:
            return None
        return self.storage.get_study_user_attrs(study_id)

    def _lost(self, name: str, again_when_done: bool) -> str:
        """Whether the existing claim ``name`` may be taken over (module docstring): "no",
        "lost" (failed, or its holder died), "unnamed" (its creator never named itself: killed
        in between) or "again" (done, and ``again_when_done``)."""
        deadline = time.monotonic() + UNNAMED_S
        while True:
            attrs = self._attrs(name) or {}
            holder = attrs.get(WORKER)
            if attrs.get(STATE) == DONE:
                again = again_when_done and worker_alive(holder or "") is not True
                return "again" if again else "no"
            if attrs.get(STATE) == FAILED:
                return "lost"
            if holder is not None:
                return "lost" if worker_alive(holder) is False else "no"
            if time.monotonic() > deadline:
                return "unnamed"
            time.sleep(0.2)
