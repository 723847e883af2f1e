"""`python -m adasparse_lab.sweep +study=sparsity [overrides]`: an Optuna study over the
composed config; every trial an MLflow run; ends with the Pareto table and the HTML report.

Run the same command again to resume (completed trials are kept, trials of dead workers are
marked FAIL); run it N times at once, or pass ``study.workers=N``, to add workers.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import hydra
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from adasparse_lab.config import exit_with_error
from adasparse_lab.errors import ConfigError, DataError, StoreError
from adasparse_lab.machine import usable_cpus
from adasparse_lab.study.driver import StudyFailedError, StudyRunner
from adasparse_lab.study.finish import StudyOutcome, finish
from adasparse_lab.study.progress import quiet_console
from adasparse_lab.study.settings import StudySettings

log = logging.getLogger("adasparse_lab.sweep")


# Set in the extra workers of ``study.workers=N``: they train trials and leave the study's end
# (front, report, exported models) to the process that started them, which ends it once after
# they exit. Workers started by hand each end the study (a resumed study's end is idempotent).
SPAWNED_BY = "ADASPARSE_SPAWNED_BY"


def spawn_workers(
    n: int, argv: list[str], threads: int | None, first: int = 0
) -> list[subprocess.Popen]:
    """Start n extra worker processes running the same study (``study.workers=1`` each, with
    this one's ``threads``), with indices ``first`` + 1..n, where ``first`` is this process's
    ``study.worker_index``: each seeds its sampler differently, on this machine and on
    machines given their own ranges of indices (docs/cluster.md)."""
    own = ("study.workers=", "study.worker_index=", "study.threads=")
    args = [a for a in argv if not a.startswith(own)] + ["study.workers=1"]
    args += [f"study.threads={threads}"] if threads else []
    env = {**os.environ, SPAWNED_BY: str(os.getpid())}
    return [
        subprocess.Popen(
            [sys.executable, "-m", "adasparse_lab.sweep", *args, f"study.worker_index={first + i}"],
            env=env,
        )
        for i in range(1, n + 1)
    ]


def set_threads(settings: StudySettings, asked: object) -> None:
    """This process's torch threads (``study.threads``), and the layout printed when the study
    runs several workers or ``study.workers=auto`` (``asked``) chose it."""
    import torch

    if settings.threads:
        torch.set_num_threads(settings.threads)
    if settings.workers > 1 or asked == "auto":
        workers, threads, cpus = settings.workers, torch.get_num_threads(), usable_cpus()
        print(
            f"study.workers={asked}: {workers} worker process{'es' * (workers > 1)} x "
            f"{threads} torch thread{'s' * (threads > 1)} each on {cpus} usable "
            f"CPU{'s' * (cpus > 1)}",
            flush=True,
        )


def run_study(
    base: DictConfig, overrides: list[str], argv: list[str] | None = None
) -> StudyOutcome:
    """The sweep without @hydra.main: ``overrides`` are the command line's (``+study=...``)."""
    if "study" not in base:
        raise ConfigError("no study selected: add +study=<name> (see conf/study/)")

    def compose_trial(extra: list[str]) -> DictConfig:
        return compose("config", overrides=[*overrides, *extra])

    runner = StudyRunner(base, compose_trial)
    runner.validate()
    set_threads(runner.settings, base.study.get("workers", 1))
    extra_workers = (
        spawn_workers(
            runner.settings.workers - 1,
            argv or overrides,
            runner.settings.threads,
            runner.settings.worker_index,
        )
        if runner.settings.workers > 1
        else []
    )
    try:
        outcome = runner.run()
    finally:
        for p in extra_workers:
            p.wait()
    if os.environ.get(SPAWNED_BY):
        print(
            f"worker {runner.settings.worker_index}: its trials are done; the study's end "
            f"(front, report) is left to the process that started it (pid {os.environ[SPAWNED_BY]})"
        )
        return outcome
    finish(outcome, runner.base)
    return outcome


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    overrides = list(HydraConfig.get().overrides.task)
    if not cfg.get("study", {}).get("verbose", False):
        quiet_console()  # one line per trial; every epoch stays in the log file
    try:
        run_study(cfg, overrides, sys.argv[1:])
    except (ConfigError, DataError, StoreError, StudyFailedError) as err:
        exit_with_error(log, err)
    except Exception as err:  # not to Hydra, which prints the overrides, passwords included
        exit_with_error(log, err, unexpected=True)


if __name__ == "__main__":
    main()
