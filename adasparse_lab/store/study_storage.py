"""Where a study lives, who runs its trials, and recovery of trials left by dead workers.

Storage (``study.storage``):
- ``auto`` (default): an existing journal or SQLite file of the study, else SQLite for one
  worker and a journal file for several.
- ``sqlite`` -> ``studies/<name>/optuna.db`` (one process at a time);
- ``journal`` -> ``studies/<name>/journal.log`` (several processes on one machine or a shared
  file system);
- any RDB URL (``postgresql://...``) for workers on several machines; heartbeats are enabled
  there (``study.heartbeat_s``), so trials of a worker that died on another machine are failed
  after ``study.grace_s`` without one. Every storage call retries a lost database connection
  (a restarted server) with backoff for ``study.storage_retry_s``, then stops the worker with a
  message naming the URL. A write is one transaction: a trial is never half-written.

A worker is identified by host (``ADASPARSE_WORKER_HOST`` names it where hostnames repeat,
e.g. containers), pid and the process start time (so a reused pid is not taken
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
import threading
import time
import warnings
from pathlib import Path

import optuna
from optuna.exceptions import StorageInternalError
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    OperationalError,
    PendingRollbackError,
    ProgrammingError,
)

from adasparse_lab.errors import ConfigError, StoreError
from adasparse_lab.store.layout import JOURNAL, SQLITE, stored_file

MAX_BACKOFF_S = 8  # the longest wait between two tries of a lost database

log = logging.getLogger(__name__)
HEARTBEAT_S, GRACE_S, RETRY_S = 30, 200, 120  # conf/study/base.yaml
GRACE_HINT = "longer than study.grace_s"
SCHEMA_RACE_TRIES = 5
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


def this_host() -> str:
    return os.environ.get("ADASPARSE_WORKER_HOST") or socket.gethostname()


def worker_id() -> str:
    pid = os.getpid()
    return f"{this_host()}:{pid}:{_start_time(pid) or 0}"


def worker_alive(ident: str) -> bool | None:
    """True/False for a worker on this host; None when it runs elsewhere (unknown)."""
    try:
        host, pid_s, start = ident.rsplit(":", 2)
        pid = int(pid_s)
    except ValueError:
        return None
    if host != this_host():
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


def transient(err: BaseException) -> bool:
    """Whether ``err`` is a lost or refused database connection (worth retrying), as opposed
    to a statement the database rejected. A session whose connection broke inside a
    transaction refuses every statement until it is reset (PendingRollbackError): lost too."""
    cause = err.__cause__ if isinstance(err, StorageInternalError) else err
    return isinstance(cause, OperationalError | PendingRollbackError) or (
        isinstance(cause, DBAPIError) and cause.connection_invalidated
    )


def with_retry(call, what: str, retry_s: float, reset=None):
    """``call()``, retried with exponential backoff (0.5 s doubling to 8 s) while the database
    is unreachable, ``reset()`` before each retry; after ``retry_s`` a StoreError naming
    ``what`` and the cause."""
    deadline, wait = time.monotonic() + retry_s, 0.5
    while True:
        try:
            return call()
        except (StorageInternalError, DBAPIError) as err:
            if not transient(err):
                raise
            cause = err.__cause__ or err
            if time.monotonic() + wait > deadline:
                raise StoreError(
                    f"study.storage: the database {what} was unreachable for "
                    f"{retry_s:.0f}s (study.storage_retry_s): {str(cause).strip()[:300]}"
                ) from err
            log.warning("database unreachable (%s); retrying in %.1fs", type(cause).__name__, wait)
            time.sleep(wait)
            if reset is not None:
                reset()
            wait = min(2 * wait, float(MAX_BACKOFF_S))


class RetryingRDBStorage(RDBStorage):
    """Optuna's RDBStorage whose every call survives a database restart (``with_retry``). Each
    of Optuna's calls is one transaction, rolled back on error, so a retry never duplicates a
    half-done write; a write that committed before its connection broke is seen by the retry
    (``tell`` then finds the trial finished: study/tell.py)."""

    retry_s: float = RETRY_S
    display_url: str = ""


def _retrying(name: str):
    method = getattr(RDBStorage, name)

    def call(self, *args, **kwargs):
        return with_retry(
            lambda: method(self, *args, **kwargs),
            self.display_url,
            self.retry_s,
            reset=self.scoped_session.remove,  # this thread's next call gets a fresh session
        )

    call.__name__ = call.__qualname__ = name
    call.__doc__ = method.__doc__
    return call


# Every call that reaches the database: the public API, the heartbeat's, and the private
# methods Optuna's study cache (optuna/storages/_cached_storage.py) calls on its backend
# instead of their public twins (tests/test_heartbeat.py checks the list against it).
CACHE_BACKEND_CALLS = ("_get_trials", "_create_new_trial", "_set_trial_param", "_get_best_trial_id")
for _name in [
    *(n for n, v in vars(optuna.storages.BaseStorage).items() if callable(v) and n[0] != "_"),
    "record_heartbeat",
    "_get_stale_trial_ids",
    *CACHE_BACKEND_CALLS,
]:
    setattr(RetryingRDBStorage, _name, _retrying(_name))


class Heartbeat:
    """Optuna's heartbeat of a RUNNING trial (RDB storage; nothing elsewhere), which does not
    die silently: when ``record_heartbeat`` fails (a database unreachable for
    ``study.storage_retry_s``) it stops and ``lost`` holds the reason, so that the worker stops
    its trial (the others fail it as stale once ``study.grace_s`` passes) instead of training
    it on. ``start()`` and ``join()`` as Optuna's ``get_heartbeat_thread``."""

    def __init__(self, trial_id: int, storage: optuna.storages.BaseStorage) -> None:
        self.trial_id, self.storage = trial_id, storage
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if optuna.storages._heartbeat.is_heartbeat_enabled(storage):
            self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def start(self) -> None:
        if self._thread is not None:
            self._thread.start()

    def join(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join()

    def _beat(self) -> None:
        interval = self.storage.get_heartbeat_interval()
        while True:
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception as err:  # StoreError after the retries, or a rejected statement
                self.lost = f"{type(err).__name__}: {err}"[:2000]
                log.error("heartbeat of trial id %d stopped: %s", self.trial_id, self.lost)
                return
            if self._stop.wait(interval):
                return


def past_schema_race(make):
    """``make()`` (an RDB storage), made again when another process created Optuna's schema
    at the same moment: workers starting together on an empty database all create it, and
    PostgreSQL refuses the second CREATE TYPE/TABLE while SQLite says "table ... already
    exists" (a reader opening the file meanwhile creates it too). Again, it is found made."""
    for attempt in range(1, SCHEMA_RACE_TRIES + 1):
        try:
            return make()
        except (IntegrityError, ProgrammingError, OperationalError) as err:
            raced = not isinstance(err, OperationalError) or "already exists" in str(err)
            if attempt == SCHEMA_RACE_TRIES or not raced:
                raise
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


def open_rdb(url: str, heartbeat_s: int, grace_s: int, retry_s: float) -> RetryingRDBStorage:
    """An RDB storage with heartbeats; connecting retries too (the server may be starting)."""

    def make() -> RetryingRDBStorage:
        with warnings.catch_warnings():  # heartbeats: "experimental" since optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RetryingRDBStorage(
                url,
                engine_kwargs={"pool_pre_ping": True},  # a connection a restart broke
                heartbeat_interval=heartbeat_s,
                grace_period=grace_s,
            )

    def connect() -> RetryingRDBStorage:
        return past_schema_race(make)

    display = url.split("@")[-1]  # no credentials in messages
    storage = with_retry(connect, display, retry_s)
    storage.retry_s, storage.display_url = retry_s, display
    return storage


def open_storage(
    kind: str,
    name: str,
    studies_dir: Path,
    workers: int,
    heartbeat_s: int = HEARTBEAT_S,
    grace_s: int = GRACE_S,
    retry_s: float = RETRY_S,
) -> tuple[optuna.storages.BaseStorage, str]:
    """Return the storage and a printable description of where it is."""
    folder = studies_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    sqlite, journal = folder / SQLITE, folder / JOURNAL
    if kind == "auto":  # the file already there (one rule with the report), else by workers
        found = stored_file(folder)
        kind = (
            ("sqlite" if found == sqlite else "journal")
            if found
            else ("journal" if workers > 1 else "sqlite")
        )
    if kind == "sqlite":
        if workers > 1:
            raise ConfigError(
                "study.workers>1 needs study.storage=journal or an RDB URL (SQLite is for one process)"
            )
        url = f"sqlite:///{sqlite}"
        return past_schema_race(lambda: RDBStorage(url)), url
    if kind == "journal":
        backend = JournalFileBackend(str(journal), lock_obj=FlockLock(f"{journal}.flock"))
        return JournalStorage(backend), str(journal)
    if "://" not in kind:
        raise ConfigError(f"study.storage={kind!r}; use auto, sqlite, journal or a database URL")
    return open_rdb(kind, heartbeat_s, grace_s, retry_s), kind


def _fail_silent(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Optuna's heartbeat check (what ``optuna.storages.fail_stale_trials`` does, with the
    reason stored first: a finished trial takes no attributes): RUNNING trials without a
    heartbeat for the grace period become FAIL. Without heartbeats (journal, SQLite): none."""
    storage = study._storage
    if not optuna.storages._heartbeat.is_heartbeat_enabled(storage):
        return []
    failed = []
    for trial_id in storage._get_stale_trial_ids(study._study_id):
        trial = storage.get_trial(trial_id)
        reason = f"no heartbeat from worker {trial.user_attrs.get('worker')} for {GRACE_HINT}"
        try:
            storage.set_trial_user_attr(trial_id, "fail_reason", reason)
            storage.set_trial_user_attr(trial_id, "failure_kind", "stale")
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker failed it first
        failed.append(storage.get_trial(trial_id))
    if failed:
        log.warning("marked trial(s) %s FAIL: no heartbeat", [t.number for t in failed])
    return failed


def recover_stale(study: optuna.Study, on_failed=None) -> list[int]:
    """Fail RUNNING trials whose worker is dead (this host) or silent (heartbeats); return
    the numbers of those this worker failed (the move to FAIL is atomic: of workers racing to
    fail a trial, one wins it). ``on_failed(frozen_trial)`` is called for each."""
    storage = study._storage
    silent = _fail_silent(study)
    for t in silent:
        if on_failed is not None:
            on_failed(t)
    failed = [t.number for t in silent]
    now = datetime.datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        ident = t.user_attrs.get("worker")
        if ident is None:  # killed between ask() and recording its worker: judge by age
            started = t.datetime_start or now
            if (now - started).total_seconds() < ORPHAN_S:
                continue
        elif worker_alive(ident) is not False:
            continue
        try:
            storage.set_trial_user_attr(
                t._trial_id, "fail_reason", f"worker {ident} died while running the trial"
            )
            storage.set_trial_user_attr(t._trial_id, "failure_kind", "stale")
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker on this host failed it first: theirs to follow up
        failed.append(t.number)
        if on_failed is not None:
            on_failed(t)
    if failed:
        log.warning("marked trial(s) %s FAIL: their worker died", failed)
    return failed
