"""Every zoo model's training step through ``trainer.fit`` against a bare loop over the same
model (``python -m adasparse_lab.bench --only models``).

Each model is built from its conf/model/<name>.yaml (the YAML defaults, sizes from the
benchmark's synthetic data) with the pruner a study gives it; ``fit`` runs one epoch with the
regulariser and schedules of a real run, the bare loop (throughput.bare_epoch) the same
forward, BCE + penalty, backward and Adam step over the same rows. Fresh seeded weights for
every pass; after one warm-up pass each, fit and bare run interleaved ``repeats`` times.
Target: fit / bare >= 0.8 for every model.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass, field

import torch
from hydra import compose, initialize_config_dir

from adasparse_lab.bench.throughput import (
    TrainBenchConfig,
    TrainStep,
    bare_epoch,
    default_regularizer,
    fit_epoch,
)
from adasparse_lab.bench.workload import CONF, synthetic_data, with_train_rows
from adasparse_lab.models.base import MultiDomainModel
from adasparse_lab.run.build import build_components, build_model

log = logging.getLogger(__name__)

# (name, overrides): every model of the zoo; the ones whose conf/model file is missing are skipped.
MODELS = (
    ("mlp", ["model=mlp", "pruner=none"]),
    ("mlp+fusion", ["model=mlp", "pruner=fusion"]),
    ("dcnv2", ["model=dcnv2", "pruner=none"]),
    ("dcnv2+fusion", ["model=dcnv2", "pruner=fusion"]),
    ("shared_bottom", ["model=shared_bottom", "pruner=none"]),
    ("mmoe", ["model=mmoe", "pruner=none"]),
    ("ple", ["model=ple", "pruner=none"]),
    ("star", ["model=star", "pruner=none"]),
    ("pepnet", ["model=pepnet", "pruner=none"]),
    ("apg", ["model=apg", "pruner=none"]),
)


def available(only: tuple[str, ...] = ()) -> list[tuple[str, list[str]]]:
    """The models whose conf/model/<name>.yaml exists (and, if given, whose name is in ``only``)."""
    out = []
    for name, overrides in MODELS:
        model = overrides[0].split("=", 1)[1]
        if (CONF / "model" / f"{model}.yaml").exists() and (not only or name in only):
            out.append((name, overrides))
    return out


@dataclass
class ModelsBenchResult:
    config: TrainBenchConfig
    fit: dict[str, list[float]] = field(default_factory=dict)  # samples/s per repeat
    bare: dict[str, list[float]] = field(default_factory=dict)

    def ratio(self, name: str) -> float:
        """best fit / best bare."""
        return max(self.fit[name]) / max(self.bare[name])

    def paired_ratio(self, name: str) -> float:
        return statistics.median(f / b for f, b in zip(self.fit[name], self.bare[name]))

    def summary(self) -> dict[str, float]:
        return {name: self.ratio(name) for name in self.fit}


def model_factory(overrides: list[str]):
    """data -> a fresh model of these overrides (weights from torch's RNG)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["tracking=none", *overrides])
    pruner = build_components(cfg).pruner

    def make(data) -> MultiDomainModel:
        return build_model(cfg.model, data, pruner, cfg.flops_reference)

    return make


def run_models_bench(cfg: TrainBenchConfig, only: tuple[str, ...] = ()) -> ModelsBenchResult:
    data = synthetic_data(max(cfg.rows, cfg.warmup_rows), cfg.seed)
    timed, warm = with_train_rows(data, cfg.rows), with_train_rows(data, cfg.warmup_rows)
    result = ModelsBenchResult(cfg)

    def once(make, d, variant: str) -> float:
        torch.manual_seed(cfg.seed)
        model = make(d)
        if variant == "fit":
            return fit_epoch(model, d, cfg).samples_per_s
        step = TrainStep(model, default_regularizer(), cfg.lr)
        gen = torch.Generator().manual_seed(cfg.seed)
        return bare_epoch(step, d.splits["train"], cfg.batch_size, gen).samples_per_s

    models = [(name, model_factory(o)) for name, o in available(only)]
    for name, make in models:
        once(make, warm, "fit"), once(make, warm, "bare")
        result.fit[name], result.bare[name] = [], []
    for r in range(cfg.repeats):
        for name, make in models:
            result.fit[name].append(once(make, timed, "fit"))
            result.bare[name].append(once(make, timed, "bare"))
            log.info(
                "repeat %d %s: fit/bare %.2f",
                r + 1,
                name,
                result.fit[name][-1] / result.bare[name][-1],
            )
    return result


def format_models(res: ModelsBenchResult, threads: int) -> str:
    c = res.config
    lines = [
        f"[6] models  fit() vs a bare loop over the same model ({threads} torch threads); 1 epoch "
        f"of {c.rows:,} rows, batch {c.batch_size}, best of {c.repeats} interleaved passes",
        f"    {'model':<16}{'fit/s':>10}{'bare/s':>10}{'fit/bare':>10}{'paired':>8}",
    ]
    for name in res.fit:
        lines.append(
            f"    {name:<16}{max(res.fit[name]):>10,.0f}{max(res.bare[name]):>10,.0f}"
            f"{res.ratio(name):>10.2f}{res.paired_ratio(name):>8.2f}"
        )
    lines.append(
        "    fit/bare: best over best (target >= 0.8); paired: median of same-repeat ratios"
    )
    return "\n".join(lines)
