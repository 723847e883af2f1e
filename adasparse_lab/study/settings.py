"""The ``study`` config node as a typed, validated object (see conf/study/*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from adasparse_lab import machine
from adasparse_lab.errors import ConfigError
from adasparse_lab.results.claims import study_plan
from adasparse_lab.store.study_storage import MAX_BACKOFF_S
from adasparse_lab.study.early_stop import EarlyStop, parse_early_stop

DIRECTIONS = ("maximize", "minimize")
# Objectives select, so they are validation numbers (every number is under its split: val/...,
# test/...; evaluation.Evaluation.as_dict); test numbers are for claims only.
OBJECTIVE_PREFIXES = ("val/",)
REEVAL_SELECT = ("front", "per_method")  # which trials a study re-trains on test over seeds
LOG_MODELS = ("front", "none")  # at the study's end: export + log each front trial, or nothing


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str


@dataclass(frozen=True)
class StudySettings:
    name: str
    storage: str
    workers: int
    n_trials: int
    timeout_s: float | None
    max_failures: int
    objectives: tuple[Objective, ...]
    flops_budget: float | None
    reeval_seeds: tuple[int, ...]
    reeval_max_trials: int
    reference: bool
    grid: bool
    hypervolume_reference: tuple[float, ...] | None
    poll_s: float
    enqueue: tuple[dict, ...] = ()  # warm-start points, tried first by a new study
    allow_changed_config: bool = False  # resume although the fixed settings changed
    worker_index: int = 0  # which of the processes of ``study.workers=N`` this is (seeding)
    heartbeat_s: int = 30  # RDB storage: a worker's heartbeat interval while it runs a trial
    grace_s: int = 200  # RDB storage: a trial without a heartbeat this long becomes FAIL
    storage_retry_s: float = 120.0  # how long a lost database connection is retried
    log_models: str = "none"  # LOG_MODELS
    reeval_select: str = "front"  # REEVAL_SELECT: the spread front, or also each method's best
    verbose: bool = False  # every epoch's line on the console too (always in the log file)
    threads: int | None = None  # torch threads of each worker process (None: torch's default)
    early_stop: EarlyStop = EarlyStop()  # stop trials part-way (study/early_stop.py)
    # the equal-budget comparison: k trials per choice of the space's ``method`` (enqueued
    # round-robin as partial points when the study is created; study/session.py), or None
    trials_per_method: int | None = None

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def metrics(self) -> list[str]:
        return [o.metric for o in self.objectives]


def _check_grace(raw: dict) -> None:
    """On a database URL a worker's heartbeats stop while it retries a lost connection (up to
    ``storage_retry_s``, then one more backoff of up to ``MAX_BACKOFF_S``, around a missed
    beat on each side): a shorter grace period lets the first worker back fail the trials of
    the others, alive and training, as stale."""
    if "://" not in str(raw.get("storage", "auto")):
        return  # journal and SQLite files: no heartbeats, no retries
    heartbeat, retry = raw.get("heartbeat_s", 30), raw.get("storage_retry_s", 120)
    need = retry + 2 * heartbeat + MAX_BACKOFF_S
    if raw.get("grace_s", 200) < need:
        raise ConfigError(
            f"study.grace_s={raw.get('grace_s', 120)} is shorter than a database outage a worker "
            f"rides out: study.storage_retry_s ({retry}) + 2 * study.heartbeat_s ({heartbeat}) + "
            f"{MAX_BACKOFF_S} s of backoff = {need}; raise study.grace_s to {need} or more"
        )


KNOWN_KEYS = frozenset(
    {
        "name",
        "storage",
        "workers",
        "threads",
        "worker_index",
        "n_trials",
        "timeout_s",
        "max_failures",
        "allow_changed_config",
        "objectives",
        "flops_budget",
        "reeval",
        "reference",
        "grid",
        "hypervolume_reference",
        "poll_s",
        "space",
        "sampler",
        "enqueue",
        "heartbeat_s",
        "grace_s",
        "storage_retry_s",
        "log_models",
        "verbose",
        "claims",
        "early_stop",
        "trials_per_method",
    }
)


def _objectives(raw: dict) -> tuple[Objective, ...]:
    """``study.objectives``: at least one {metric: val/..., direction: maximize|minimize}."""
    objectives = []
    for i, o in enumerate(raw.get("objectives") or []):
        if set(o) != {"metric", "direction"}:
            raise ConfigError(
                f"study.objectives[{i}] needs exactly 'metric' and 'direction', got {sorted(o)}"
            )
        if o["direction"] not in DIRECTIONS:
            raise ConfigError(
                f"study.objectives[{i}].direction={o['direction']!r}; choose one of {list(DIRECTIONS)}"
            )
        if not str(o["metric"]).startswith(OBJECTIVE_PREFIXES):
            raise ConfigError(
                f"study.objectives[{i}].metric={o['metric']!r} must start with one of "
                f"{list(OBJECTIVE_PREFIXES)} (numbers carry their split: 'val/{o['metric']}'?)"
            )
        objectives.append(Objective(o["metric"], o["direction"]))
    if not objectives:
        raise ConfigError("study.objectives: give at least one objective")
    return tuple(objectives)


def _check_ranges(raw: dict) -> None:
    """Counts and durations: budgets at least one, a grace period longer than a heartbeat."""
    checks = {
        "n_trials": raw.get("n_trials", 0) >= 1,
        "worker_index": raw.get("worker_index", 0) >= 0,
        "max_failures": raw.get("max_failures", 1) >= 1,
        "heartbeat_s": raw.get("heartbeat_s", 30) >= 1,
        "grace_s": raw.get("grace_s", 200) > raw.get("heartbeat_s", 30),
        "storage_retry_s": raw.get("storage_retry_s", 120) >= 0,
        "trials_per_method": raw.get("trials_per_method") is None
        or (
            isinstance(raw["trials_per_method"], int)
            and not isinstance(raw["trials_per_method"], bool)
            and raw["trials_per_method"] >= 1
        ),
    }
    for key, ok in checks.items():
        if not ok:
            raise ConfigError(f"study.{key}={raw.get(key)!r} is out of range")


def _count(raw: dict, key: str, default) -> int | str:
    """``study.<key>``: an integer >= 1 or ``auto`` (returned as it is)."""
    value = raw.get(key, default)
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ConfigError(f"study.{key}={value!r}: give a count >= 1 or auto")


def workers_and_threads(raw: dict) -> tuple[int, int | None]:
    """``study.workers`` and ``study.threads`` resolved on this machine. ``workers=auto``: one
    worker process a usable CPU (2 workers x 1 thread ran 1.33-1.35x the trials per hour of
    1 x 2 on 2 cores: docs/benchmarks.md, layout). ``threads=auto``: torch's default (every CPU) for
    one worker, the usable CPUs shared out between several, at least one each, so that N
    workers do not run N x CPUs threads. None: torch's default, left as it is."""
    cpus = max(1, machine.usable_cpus())
    workers = _count(raw, "workers", 1)
    workers = cpus if workers == "auto" else workers
    threads = _count(raw, "threads", "auto")
    if threads == "auto":
        threads = None if workers == 1 else max(1, cpus // workers)
    return workers, threads


def _check_choices(raw: dict, n_objectives: int) -> None:
    """``study.log_models``, ``study.reeval.select`` and the hypervolume reference point."""
    if raw.get("log_models", "none") not in LOG_MODELS:
        raise ConfigError(
            f"study.log_models={raw.get('log_models')!r}; choose one of {list(LOG_MODELS)}"
        )
    reeval = raw.get("reeval") or {}
    if reeval.get("select", "front") not in REEVAL_SELECT:
        raise ConfigError(
            f"study.reeval.select={reeval.get('select')!r}; choose one of {list(REEVAL_SELECT)}"
        )
    hv_ref = raw.get("hypervolume_reference")
    if hv_ref is not None and len(hv_ref) != n_objectives:
        raise ConfigError(f"study.hypervolume_reference needs {n_objectives} values, got {hv_ref}")


def parse_settings(node: DictConfig) -> StudySettings:
    """Validate ``cfg.study``; every error names its key."""
    raw = OmegaConf.to_container(node, resolve=True)
    assert isinstance(raw, dict)
    unknown = sorted(set(raw) - KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"study: unknown key(s) {unknown}; known: {sorted(KNOWN_KEYS)}")
    objectives = _objectives(raw)
    _check_ranges(raw)
    _check_grace(raw)
    _check_choices(raw, len(objectives))
    study_plan(raw)  # study.claims names arms of the space (what the report measures)
    reeval, hv_ref = raw.get("reeval") or {}, raw.get("hypervolume_reference")
    workers, threads = workers_and_threads(raw)
    return StudySettings(
        name=str(raw["name"]),
        storage=str(raw.get("storage", "auto")),
        workers=workers,
        threads=threads,
        n_trials=int(raw["n_trials"]),
        timeout_s=raw.get("timeout_s"),
        max_failures=int(raw.get("max_failures", 5)),
        objectives=objectives,
        flops_budget=raw.get("flops_budget"),
        reeval_seeds=tuple(int(s) for s in reeval.get("seeds", [1, 2, 3])),
        reeval_max_trials=int(reeval.get("max_trials", 5)),
        reeval_select=str(reeval.get("select", "front")),
        reference=bool(raw.get("reference", True)),
        grid=bool(raw.get("grid", False)),
        hypervolume_reference=tuple(hv_ref) if hv_ref is not None else None,
        poll_s=float(raw.get("poll_s", 2.0)),
        enqueue=tuple(dict(p) for p in raw.get("enqueue") or ()),
        worker_index=int(raw.get("worker_index", 0)),
        allow_changed_config=bool(raw.get("allow_changed_config", False)),
        heartbeat_s=int(raw.get("heartbeat_s", 30)),
        grace_s=int(raw.get("grace_s", 200)),
        storage_retry_s=float(raw.get("storage_retry_s", 120)),
        log_models=str(raw.get("log_models", "none")),
        verbose=bool(raw.get("verbose", False)),
        early_stop=parse_early_stop(raw.get("early_stop")),
        trials_per_method=raw.get("trials_per_method"),
    )
