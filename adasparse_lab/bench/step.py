"""The AdaSparse training step: ``model.kernel=fast`` against ``model.kernel=reference``.

Five variants, each one epoch of ``trainer.fit`` (regulariser and schedules as a real run) on
the same in-memory rows from a fresh model with the same seeded weights, batch B=1024:
- ``paper_reference`` / ``paper_fast``: fusion on [h^l ; e_d] (the paper form);
- ``domain_reference`` / ``domain_fast``: fusion on e_d alone (per-code pruners);
- ``dense``: pruner=None, for context.
After one warm-up pass per variant they run interleaved ``repeats`` times (machine noise falls
on all alike); the table gives best and median rows/s, and fast / reference both as best/best
and as the median of same-repeat pairs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from adasparse_lab.bench.throughput import (
    Timing,
    TrainBenchConfig,
    TrainBenchResult,
    fit_epoch,
    paper_pruner,
    run_interleaved,
)
from adasparse_lab.bench.workload import build_model, synthetic_data, with_train_rows
from adasparse_lab.data.prepared import PreparedData
from adasparse_lab.models.gates import FusionGate
from adasparse_lab.models.pruner_spec import PrunerSpec

STEP_TARGET = 1.3  # paper form: fast / reference rows/s through fit
LABELS = {
    "paper_reference": "AdaSparse fusion [h;e_d]  kernel=reference",
    "paper_fast": "AdaSparse fusion [h;e_d]  kernel=fast",
    "domain_reference": "AdaSparse fusion e_d      kernel=reference",
    "domain_fast": "AdaSparse fusion e_d      kernel=fast",
    "dense": "dense (pruner=None)",
}


@dataclass(frozen=True)
class StepBenchConfig:
    rows: int = 65_536  # rows per timed pass
    warmup_rows: int = 16_384
    repeats: int = 5
    batch_size: int = 1024
    lr: float = 1e-3
    seed: int = 0

    def as_train(self) -> TrainBenchConfig:
        return TrainBenchConfig(
            rows=self.rows, loader_rows=self.rows, warmup_rows=self.warmup_rows,
            repeats=self.repeats, batch_size=self.batch_size, lr=self.lr, seed=self.seed,
        )  # fmt: skip


def domain_pruner() -> PrunerSpec:
    """Fusion on e_d alone, otherwise as ``paper_pruner``."""
    return PrunerSpec(gate=FusionGate(beta=2.0, eps=0.25), inputs="domain")


def step_runners(cfg: StepBenchConfig) -> dict[str, Callable[[PreparedData], Timing]]:
    """variant name -> one timed ``fit`` epoch over a dataset's train split, fresh model."""
    train_cfg = cfg.as_train()

    def runner(pruner: Callable[[], PrunerSpec] | None, kernel: str):
        def run(data: PreparedData) -> Timing:
            torch.manual_seed(cfg.seed)
            model = build_model(data, None if pruner is None else pruner())
            model.kernel = kernel
            return fit_epoch(model, data, train_cfg)

        return run

    return {
        "paper_reference": runner(paper_pruner, "reference"),
        "paper_fast": runner(paper_pruner, "fast"),
        "domain_reference": runner(domain_pruner, "reference"),
        "domain_fast": runner(domain_pruner, "fast"),
        "dense": runner(None, "fast"),
    }


def run_step_bench(cfg: StepBenchConfig) -> TrainBenchResult:
    """Warm up every variant once, then run them interleaved ``cfg.repeats`` times."""
    data = synthetic_data(max(cfg.rows, cfg.warmup_rows), cfg.seed)
    timed, warm = with_train_rows(data, cfg.rows), with_train_rows(data, cfg.warmup_rows)
    return run_interleaved(cfg.as_train(), step_runners(cfg), warm, timed, "rows")


def step_ratios(t: TrainBenchResult) -> dict[str, float]:
    """fast / reference per pruner input (best/best and median of same-repeat pairs)."""
    out = {}
    for form in ("paper", "domain"):
        out[f"{form}_fast_over_reference"] = t.ratio(f"{form}_fast", f"{form}_reference")
        out[f"{form}_fast_over_reference_paired_median"] = t.paired_ratio(
            f"{form}_fast", f"{form}_reference"
        )
    out["dense_over_paper_fast"] = t.ratio("dense", "paper_fast")
    return out


def format_step(t: TrainBenchResult, threads: int) -> str:
    lines = [
        f"[step] AdaSparse training step through fit()  batch {t.config.batch_size}, Adam, "
        f"torch threads {threads}",
        *t.table(LABELS, 44),
    ]
    r = step_ratios(t)
    verdict = "ok" if r["paper_fast_over_reference"] >= STEP_TARGET else "BELOW TARGET"
    lines += [
        "    ratios: best/best  [median of same-repeat pairs]",
        f"    paper form  fast / reference  {r['paper_fast_over_reference']:5.2f}x"
        f"  [{r['paper_fast_over_reference_paired_median']:.2f}x]"
        f"   target >= {STEP_TARGET}: {verdict}",
        f"    domain form fast / reference  {r['domain_fast_over_reference']:5.2f}x"
        f"  [{r['domain_fast_over_reference_paired_median']:.2f}x]",
        f"    dense / paper fast            {r['dense_over_paper_fast']:5.2f}x",
    ]
    return "\n".join(lines)
