"""Trials per hour with 1, 2 and 4 workers, on PostgreSQL + an MLflow server (the several-
machines setup, adasparse_lab/services.py) and on a journal file + SQLite (one machine), and
the per-trial overhead each storage adds; projected to many workers.

Each point runs ``python -m adasparse_lab.sweep +study=<study> study.workers=W`` (the workers
of one machine) in a temporary folder, without reference runs or re-evaluation. Trials per
hour = COMPLETE trials / (last completion - first start) * 3600: start-up is excluded. The
overhead is the driver's ``duration_s - fit_s`` per trial (compose, sampling, Optuna storage,
MLflow runs and metrics, outputs; study/driver.py).

Projection: a database serves one trial's storage and tracking calls in at most ``overhead``
seconds of its time, so N workers run about ``N * 3600 / trial_s`` trials per hour until
``N * overhead / trial_s`` reaches 1 (the database busy all the time): an upper bound on the
overhead (part of it is the worker's own work), hence a conservative saturation point.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ScalePoint:
    backend: str  # "postgres+server" | "journal+sqlite"
    workers: int
    trials: int
    trials_per_hour: float
    mean_trial_s: float
    mean_overhead_s: float


def _run(
    backend: str, workers: int, n_trials: int, study: str, urls: dict, threads: int = 1
) -> ScalePoint:
    name = f"scale-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        where = (
            [f"study.storage={urls['storage']}", f"tracking.uri={urls['tracking']}"]
            if urls
            else ["study.storage=journal"]
        )
        cmd = [
            *(sys.executable, "-m", "adasparse_lab.sweep", f"+study={study}"),
            *(f"study.name={name}", f"study.workers={workers}", f"study.n_trials={n_trials}"),
            f"study.threads={threads}",  # each worker's torch threads
            *("study.reference=false", "study.reeval.max_trials=0", "latency.enabled=false"),
            "study.early_stop.kind=none",  # trials per hour of trials run to their end
            *(f"paths.studies={tmp}/studies", f"paths.reports={tmp}/reports"),
            f"paths.cache={tmp}/cache",
            *where,
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
        storage = urls.get("storage") or optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(f"{tmp}/studies/{name}/journal.log")
        )
        done = [
            t
            for t in optuna.load_study(study_name=name, storage=storage).get_trials()
            if t.state == TrialState.COMPLETE
        ]
    span = max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)
    trial_s = sum(t.user_attrs["duration_s"] for t in done) / len(done)
    fit_s = sum(t.user_attrs["fit_s"] for t in done) / len(done)
    return ScalePoint(
        backend,
        workers,
        len(done),
        3600 * len(done) / span.total_seconds(),
        trial_s,
        trial_s - fit_s,
    )


def run_scale_bench(
    study: str = "quick", n_trials: int = 8, workers: tuple[int, ...] = (1, 2, 4), services=None
) -> list[ScalePoint]:
    """Every (backend, workers) point; PostgreSQL and the MLflow server are started for the
    run unless ``services`` (adasparse_lab.services.Services) are given."""
    from adasparse_lab.services import running

    points = [_run("journal+sqlite", w, n_trials, study, {}) for w in workers]
    with contextlib.nullcontext(services) if services else running() as started:
        urls = {"storage": started.storage, "tracking": started.tracking}
        points += [_run("postgres+server", w, n_trials, study, urls) for w in workers]
    return points


def run_layout_bench(study: str = "sparsity", n_trials: int = 8, cores: int = 2, rounds: int = 2):
    """Trials per hour on ``cores`` cores: 1 worker with ``cores`` threads against ``cores``
    workers with 1 thread each (journal storage), interleaved ``rounds`` times; a list of
    (layout, ScalePoint)."""
    layouts = {f"1 worker x {cores} threads": (1, cores), f"{cores} workers x 1 thread": (cores, 1)}
    return [
        (name, _run("journal+sqlite", w, n_trials, study, {}, threads=t))
        for _ in range(rounds)
        for name, (w, t) in layouts.items()
    ]


def format_layout(points) -> str:
    lines = ["[12] layout  trials per hour on this machine's cores: threads or worker processes"]
    rates: dict[str, list[float]] = {}
    for name, p in points:
        rates.setdefault(name, []).append(p.trials_per_hour)
        lines.append(
            f"    {name:<22} {p.trials} trials: {p.trials_per_hour:.0f} trials/h"
            f" (trial {p.mean_trial_s:.2f} s, overhead {p.mean_overhead_s:.3f} s)"
        )
    (a, ra), (b, rb) = ((k, max(v)) for k, v in rates.items())
    lines.append(f"    best of each: {b} / {a} = {rb / ra:.2f}x trials per hour")
    return "\n".join(lines)


def projection(point: ScalePoint, workers: int = 100) -> tuple[float, float]:
    """(trials per hour with ``workers`` workers on as many cores, workers at which the
    database would be busy all the time) from one measured point."""
    saturation = point.mean_trial_s / max(point.mean_overhead_s, 1e-9)
    per_worker = 3600 / point.mean_trial_s
    return per_worker * min(workers, saturation), saturation


def format_scale(points: list[ScalePoint]) -> str:
    lines = [
        "[6] scale  trials per hour by workers (this machine's cores are shared by all workers)",
        f"    {'backend':<16} {'workers':>7} {'trials':>6} {'trials/h':>9} {'trial s':>8} {'overhead s':>10}",
    ]
    for p in points:
        lines.append(
            f"    {p.backend:<16} {p.workers:>7} {p.trials:>6} {p.trials_per_hour:>9.0f}"
            f" {p.mean_trial_s:>8.2f} {p.mean_overhead_s:>10.3f}"
        )
    for backend in dict.fromkeys(p.backend for p in points):
        one = next(
            p
            for p in points
            if p.backend == backend and p.workers == min(q.workers for q in points)
        )
        rate, saturation = projection(one)
        lines.append(
            f"    {backend}: 100 workers (one core each) -> ~{rate:.0f} trials/h; the storage"
            f" saturates at ~{saturation:.0f} workers (overhead {one.mean_overhead_s:.3f} s"
            f" of a {one.mean_trial_s:.2f} s trial)"
        )
    return "\n".join(lines)
