"""Training throughput: our ``fit`` loop against a bare PyTorch loop and a per-item DataLoader.

Four variants train the benchmark architecture on the same in-memory rows, batch B=1024:
- ``fit_adasparse``: ``trainer.fit`` (one epoch) with the paper-form fusion pruner, the sparsity
  regulariser and the alpha / lambda_hat / band schedules, exactly as a real run;
  its time is ``FitResult.history[0].samples_per_s`` (the train epoch, not the val pass).
- ``fit_dense``: ``trainer.fit`` with ``pruner=None``.
- ``bare_adasparse``: the baseline. Per epoch one permutation, then contiguous slices, forward,
  BCE + the same regulariser penalty, backward, Adam step: nothing else.
- ``loader_adasparse``: the same step fed by a per-item ``Dataset`` (``__getitem__`` returns one
  row) through ``DataLoader(batch_size=B, shuffle=True)`` with default collate, the way the
  published CTR code feeds its models.
Every measurement starts from a fresh model with the same seeded weights. After one warm-up
pass per variant, the variants run interleaved ``repeats`` times, so that noise from the machine
falls on all of them alike; the table reports the best and median samples/s and ratios.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from adasparse_lab.bench.workload import build_model, head, synthetic_data, with_train_rows
from adasparse_lab.data.prepared import PreparedData, TensorSplit
from adasparse_lab.models import AdaSparseModel, PrunerSpec
from adasparse_lab.models.gates import FusionGate
from adasparse_lab.run.fit import TrainSettings, fit
from adasparse_lab.sparsity import LinearBand, SparsityRegularizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainBenchConfig:
    rows: int = 262_144  # rows per timed pass of the fit and bare variants
    loader_rows: int = 65_536  # rows per timed pass of the (slower) per-item loader
    warmup_rows: int = 32_768
    repeats: int = 5
    batch_size: int = 1024
    lr: float = 1e-3
    seed: int = 0


@dataclass(frozen=True)
class Timing:
    rows: int
    seconds: float

    @property
    def samples_per_s(self) -> float:
        return self.rows / self.seconds


@dataclass
class TrainBenchResult:
    config: TrainBenchConfig
    timings: dict[str, list[Timing]] = field(default_factory=dict)  # variant -> one per repeat

    def best(self, variant: str) -> float:
        return max(t.samples_per_s for t in self.timings[variant])

    def median(self, variant: str) -> float:
        return statistics.median(t.samples_per_s for t in self.timings[variant])

    def ratio(self, num: str, den: str) -> float:
        """best(num) / best(den)."""
        return self.best(num) / self.best(den)

    def paired_ratio(self, num: str, den: str) -> float:
        """Median over repeats of num / den measured in the same repeat."""
        pairs = zip(self.timings[num], self.timings[den])
        return statistics.median(a.samples_per_s / b.samples_per_s for a, b in pairs)

    def table(self, labels: dict[str, str], width: int) -> list[str]:
        """The lines of the timings table: how it was run, a header, one line per variant
        (``labels[variant]`` in a column ``width`` wide)."""
        c = self.config
        lines = [
            f"    {c.repeats} interleaved repeats after one warm-up pass each; fresh seeded model per pass",
            f"    {'variant':<{width}}{'rows/pass':>10}{'best/s':>11}{'median/s':>11}",
        ]
        for v, timings in self.timings.items():
            lines.append(
                f"    {labels[v]:<{width}}{timings[0].rows:>10,}{self.best(v):>11,.0f}{self.median(v):>11,.0f}"
            )
        return lines


def paper_pruner() -> PrunerSpec:
    """Fusion on [h^l ; e_d] with the defaults of conf/pruner/fusion.yaml."""
    return PrunerSpec(gate=FusionGate(beta=2.0, eps=0.25), inputs="hidden+domain")


def default_regularizer() -> SparsityRegularizer:
    """As conf/config.yaml."""
    return SparsityRegularizer(lambda_start=0.01, lambda_end=10.0, growth=0.4)


def default_schedule() -> LinearBand:
    """As conf/schedule/linear.yaml."""
    return LinearBand(r_min=0.15, r_max=0.25, initial=0.0, begin=0.0, end=0.4)


class TrainStep:
    """Forward, BCE + sparsity penalty, backward, Adam step: the work the bare and loader
    variants share. alpha, the band and lambda_hat are fixed (mid-training values)."""

    def __init__(self, model: AdaSparseModel, regularizer: SparsityRegularizer, lr: float) -> None:
        self.model = model.train()
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=True)  # as trainer.fit
        self.regularizer = regularizer
        self.band = default_schedule().band(1.0)
        self.lambda_hat = regularizer.lambda_at(0.5)
        if model.spec is not None:
            model.set_alpha(model.spec.alpha_at(0.5))

    def __call__(self, cat: torch.Tensor, dense: torch.Tensor, label: torch.Tensor) -> None:
        out = self.model(cat, dense)
        loss = F.binary_cross_entropy_with_logits(out.logits, label)
        loss = loss + self.regularizer.penalty(out.keep, self.band, self.lambda_hat)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def bare_epoch(
    step: TrainStep, split: TensorSplit, batch_size: int, gen: torch.Generator
) -> Timing:
    """One epoch of the bare loop over ``split``."""
    t0 = time.perf_counter()
    n = len(split)
    perm = torch.randperm(n, generator=gen)
    cat, dense, label = split.cat[perm], split.dense[perm], split.label[perm]
    for start in range(0, n, batch_size):
        end = start + batch_size
        step(cat[start:end], dense[start:end], label[start:end])
    return Timing(n, time.perf_counter() - t0)


class RowDataset(Dataset):
    """The conventional per-item dataset: ``__getitem__`` returns one row as tensors."""

    def __init__(self, split: TensorSplit) -> None:
        self.cat, self.dense, self.label = split.cat, split.dense, split.label

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.cat[i], self.dense[i], self.label[i]


def loader_epoch(
    step: TrainStep, split: TensorSplit, batch_size: int, gen: torch.Generator
) -> Timing:
    """One epoch fed by ``DataLoader(RowDataset, shuffle=True)``, default collate, no workers."""
    loader = DataLoader(RowDataset(split), batch_size=batch_size, shuffle=True, generator=gen)
    t0 = time.perf_counter()
    rows = 0
    for cat, dense, label in loader:
        step(cat, dense, label)
        rows += int(label.shape[0])
    return Timing(rows, time.perf_counter() - t0)


def fit_epoch(
    model: AdaSparseModel, data: PreparedData, cfg: TrainBenchConfig, compile: bool = False
) -> Timing:
    """One epoch of ``trainer.fit`` with the regulariser and schedules of a real run
    (``compile``: train.compile, the training forward through torch.compile)."""
    settings = TrainSettings(
        epochs=1, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, device="cpu",
        progress=False, compile=compile,
    )  # fmt: skip
    result = fit(model, data, settings, default_regularizer(), default_schedule())
    rows = len(data.splits["train"])
    return Timing(rows, rows / result.history[0].samples_per_s)


ModelFactory = Callable[[PreparedData, PrunerSpec | None], AdaSparseModel]


def variant_runners(
    cfg: TrainBenchConfig, make_model: ModelFactory = build_model
) -> dict[str, Callable[[PreparedData], Timing]]:
    """variant name -> run one timed pass over a dataset's train split, from a fresh model."""

    def fresh(data: PreparedData, pruner: PrunerSpec | None) -> AdaSparseModel:
        torch.manual_seed(cfg.seed)
        return make_model(data, pruner)

    def stepper(data: PreparedData) -> tuple[TrainStep, torch.Generator]:
        step = TrainStep(fresh(data, paper_pruner()), default_regularizer(), cfg.lr)
        return step, torch.Generator().manual_seed(cfg.seed)

    def bare(data: PreparedData) -> Timing:
        step, gen = stepper(data)
        return bare_epoch(step, data.splits["train"], cfg.batch_size, gen)

    def loader(data: PreparedData) -> Timing:
        step, gen = stepper(data)
        return loader_epoch(step, head(data.splits["train"], cfg.loader_rows), cfg.batch_size, gen)

    return {
        "fit_adasparse": lambda d: fit_epoch(fresh(d, paper_pruner()), d, cfg),
        "fit_dense": lambda d: fit_epoch(fresh(d, None), d, cfg),
        "bare_adasparse": bare,
        "loader_adasparse": loader,
    }


def run_train_bench(
    cfg: TrainBenchConfig, make_model: ModelFactory = build_model
) -> TrainBenchResult:
    """Warm up every variant once, then run them interleaved ``cfg.repeats`` times."""
    data = synthetic_data(max(cfg.rows, cfg.loader_rows, cfg.warmup_rows), cfg.seed)
    timed = with_train_rows(data, cfg.rows)
    warm = with_train_rows(data, cfg.warmup_rows)
    return run_interleaved(cfg, variant_runners(cfg, make_model), warm, timed, "samples")


def run_interleaved(
    cfg: TrainBenchConfig,
    runners: dict[str, Callable[[PreparedData], Timing]],
    warm: PreparedData,
    timed: PreparedData,
    unit: str,
) -> TrainBenchResult:
    """Each runner warmed up once on ``warm``, then ``cfg.repeats`` passes over ``timed``, the
    runners interleaved within a pass (a busy machine slows them all alike)."""
    for name, run in runners.items():
        log.info("warm-up %s", name)
        run(warm)
    result = TrainBenchResult(cfg, {name: [] for name in runners})
    for r in range(cfg.repeats):
        for name, run in runners.items():
            timing = run(timed)
            result.timings[name].append(timing)
            log.info("repeat %d %s: %.0f %s/s", r + 1, name, timing.samples_per_s, unit)
    return result
