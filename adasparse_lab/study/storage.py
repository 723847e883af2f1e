"""Where a study lives, who runs its trials, and recovery of trials left by dead workers.

Storage (``study.storage``):
- ``auto`` (default): an existing journal or SQLite file of the study, else SQLite for one
  worker and a journal file for several.
- ``sqlite`` -> ``studies/<name>/optuna.db`` (one process at a time);
- ``journal`` -> ``studies/<name>/journal.log`` (several processes on one machine or a shared
  file system);
- any RDB URL (``postgresql://...``) for workers on several machines; heartbeats are enabled
  there, so trials of a worker that died on another machine are failed after a grace period.

A worker is identified by host, pid and the process start time (so a reused pid is not taken
for a live worker). A RUNNING trial whose worker on this host is gone is marked FAIL; so is
its MLflow run, found by its ``trial_number`` tag. A trial whose worker was killed between
``ask()`` and naming itself on the trial (a few milliseconds) is failed once ``ORPHAN_S`` old.

Journal files are locked with ``flock``, which the kernel releases when its holder dies:
Optuna's default symlink lock, left behind by a killed worker, stalled every other worker for
its 30 s grace period (and after it broke the lock by age, which a slow live holder may still
hold).
"""

from __future__ import annotations

import datetime
import fcntl
import logging
import os
import socket
from pathlib import Path

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from adasparse_lab.errors import ConfigError

log = logging.getLogger(__name__)
HEARTBEAT_S, GRACE_S = 30, 120
ORPHAN_S = 30  # a live worker names itself on its new trial within milliseconds of asking


class FlockLock:
    """A journal lock held with ``flock`` on ``<journal>.flock`` (Optuna's lock interface:
    acquire and release); several workers on one host or on a file system with working locks."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        self._fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock
            self._fd = None


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def worker_id() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or 0}"


def worker_alive(ident: str) -> bool | None:
    """True/False for a worker on this host; None when it runs elsewhere (unknown)."""
    try:
        host, pid_s, start = ident.rsplit(":", 2)
        pid = int(pid_s)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    current = _start_time(pid)
    if current is not None:
        return start in ("0", current)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return start == "0"


def open_storage(
    kind: str, name: str, studies_dir: Path, workers: int
) -> tuple[optuna.storages.BaseStorage, str]:
    """Return the storage and a printable description of where it is."""
    folder = studies_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    sqlite, journal = folder / "optuna.db", folder / "journal.log"
    if kind == "auto":
        kind = (
            "journal"
            if journal.exists()
            else "sqlite"
            if sqlite.exists()
            else ("journal" if workers > 1 else "sqlite")
        )
    if kind == "sqlite":
        if workers > 1:
            raise ConfigError(
                "study.workers>1 needs study.storage=journal or an RDB URL (SQLite is for one process)"
            )
        url = f"sqlite:///{sqlite}"
        return RDBStorage(url), url
    if kind == "journal":
        backend = JournalFileBackend(str(journal), lock_obj=FlockLock(f"{journal}.flock"))
        return JournalStorage(backend), str(journal)
    if "://" not in kind:
        raise ConfigError(f"study.storage={kind!r}; use auto, sqlite, journal or a database URL")
    storage = RDBStorage(kind, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
    return storage, kind


def recover_stale(study: optuna.Study, on_failed=None) -> list[int]:
    """Fail RUNNING trials whose worker is dead; return their numbers."""
    storage = study._storage
    if isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None:
        optuna.storages.fail_stale_trials(study)
    failed = []
    now = datetime.datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        ident = t.user_attrs.get("worker")
        if ident is None:  # killed between ask() and recording its worker: judge by age
            started = t.datetime_start or now
            if (now - started).total_seconds() < ORPHAN_S:
                continue
        elif worker_alive(ident) is not False:
            continue
        storage.set_trial_user_attr(
            t._trial_id, "fail_reason", f"worker {ident} died while running the trial"
        )
        storage.set_trial_user_attr(t._trial_id, "failure_kind", "stale")
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        failed.append(t.number)
        if on_failed is not None:
            on_failed(t.number)
    if failed:
        log.warning("marked trial(s) %s FAIL: their worker died", failed)
    return failed
