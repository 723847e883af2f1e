"""What a study holds fixed, stored with the study, so that a resume cannot mix configurations.

A study's trials are comparable only if everything but the sampled values was the same: the
data (and the synthetic data's size), the model, the pruner's fixed settings, the fixed
training settings, the search space, the objectives and the sampler. The fingerprint is the
resolved config flattened to dotted keys, minus what may change between the runs of one study
(``RESUMABLE``): the budget, the number of workers and their index, timing, progress bars,
where things are stored, the tracking server, Hydra's own settings, latency timing details and
the re-evaluation settings (the re-evaluation reruns trials with their own stored parameters).

Paths are replaced by their names before resolving (``<paths.data>/douban/x.csv``), so moving
the data root or the studies folder does not count, but pointing a data config at another file
does. The fingerprint is kept in the Optuna study's user attributes (``fingerprint``).
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf, open_dict

from adasparse_lab.store.tracking import flatten

RESUMABLE = (
    "study.n_trials",
    "study.workers",
    "study.threads",  # how trials run, like study.workers (1 and 2 threads: other floats)
    "study.worker_index",
    "study.timeout_s",
    "study.max_failures",
    "study.poll_s",
    "study.storage",
    "study.heartbeat_s",
    "study.grace_s",
    "study.storage_retry_s",
    "study.reeval.",
    "study.reference",
    "study.hypervolume_reference",
    "study.enqueue",  # read only when the study is created
    "study.allow_changed_config",
    "study.log_models",
    "study.verbose",
    "study.claims",  # what the report measures, not how trials run
    "study.early_stop",  # rung records are keyed by their fraction: any mix compares like with like
    "train.progress",
    "train.checkpoint_every_s",  # how often a fit saves, not what it computes
    "train.compile",  # how the step runs: the same values within float tolerance
    "paths.",
    "tracking.",
    "hydra.",
    "latency.repeats",
    "latency.warmup",
    "latency.min_rows",
    "latency.budget_s",
    "experiment",  # single runs' MLflow experiment and run name: a study uses its own
    "run_name",
)


def _resumable(key: str) -> bool:
    return any(key == r or key.startswith(r if r.endswith(".") else r + ".") for r in RESUMABLE)


def fingerprint(cfg: DictConfig) -> dict[str, str]:
    """{dotted key: value} of everything in ``cfg`` a study holds fixed."""
    named = cfg.copy()
    with open_dict(named):
        for key in named.get("paths", {}):
            named.paths[key] = f"<paths.{key}>"
        named.pop("hydra", None)
    flat = flatten(OmegaConf.to_container(named, resolve=True))
    return {k: v for k, v in sorted(flat.items()) if not _resumable(k)}


def changes(stored: dict[str, str], current: dict[str, str]) -> list[str]:
    """``key: old -> new`` for each key that differs (``(absent)`` where one side lacks it)."""
    keys = sorted(set(stored) | set(current))
    return [
        f"{k}: {stored.get(k, '(absent)')} -> {current.get(k, '(absent)')}"
        for k in keys
        if stored.get(k) != current.get(k)
    ]
