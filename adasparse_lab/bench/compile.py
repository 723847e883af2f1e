"""``train.compile``: the paper-form AdaSparse training step through ``torch.compile`` against
eager PyTorch, both through ``fit`` (the regulariser and schedules of a real run).

A study trial is one ``fit`` on a fresh model in a worker process, so three numbers decide:
- **the first pass** in the process, timed whole, with an empty Inductor cache (a fresh
  machine): for the compiled side it holds the compile (Dynamo tracing, Inductor's C++ build);
- **the steady state**: later passes, each from a fresh seeded model of the same structure,
  interleaved with the eager ones (a busy machine slows both alike);
- **a new structure**: one pass of the low-rank pruner (rank 16) after those: the main study
  samples the pruner's input, rank and input masking (16 structures over 20 trials), and a
  structure the process has not compiled is compiled again.
The table prints both sides in one run and the choice for a main-study trial that brings a new
structure: its compile plus its rows at the compiled rate, against its rows at the eager rate.

``python -m adasparse_lab.bench --only compile --threads 1``
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from unittest.mock import patch

import torch

from adasparse_lab.bench.step import StepBenchConfig
from adasparse_lab.bench.throughput import (
    Timing,
    TrainBenchResult,
    fit_epoch,
    paper_pruner,
    run_interleaved,
)
from adasparse_lab.bench.workload import CONF, build_model, synthetic_data, with_train_rows
from adasparse_lab.data.prepared import PreparedData
from adasparse_lab.run.fit import TrainSettings

VARIANTS = {"eager": False, "compiled": True}
LABELS = {"eager": "eager (train.compile=false)", "compiled": "torch.compile (train.compile=true)"}


def main_study_trial_rows() -> int:
    """Rows one trial of the main study trains (epochs x the synthetic table's train split, as
    conf/study/sparsity.yaml composes them): what a compile must pay itself back on."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["+study=sparsity"])
    split = cfg.data.source.split
    return round(cfg.train.epochs * cfg.synthetic.n_rows * (1 - split.val - split.test))


@dataclass
class CompileBenchResult:
    timings: TrainBenchResult
    first_pass_s: dict[str, float] = field(default_factory=dict)  # the process's first fit
    new_structure_s: dict[str, float] = field(default_factory=dict)  # a rank-16 pruner's fit
    first_pass_rows: int = 0
    trial_rows: int = 640_000  # one main-study trial (main_study_trial_rows)

    @property
    def steady_ratio(self) -> float:
        """compiled / eager rows/s, best of each, after the first pass."""
        return self.timings.ratio("compiled", "eager")

    @staticmethod
    def _extra(passes: dict[str, float]) -> float:
        return max(0.0, passes["compiled"] - passes["eager"])

    @property
    def compile_s(self) -> float:
        """What the first compiled pass cost beyond an eager pass of the same rows."""
        return self._extra(self.first_pass_s)

    @property
    def recompile_s(self) -> float:
        """What a new structure's compiled pass cost beyond its eager pass."""
        return self._extra(self.new_structure_s)

    def trial_seconds(self, variant: str) -> float:
        """One main-study trial with a structure new to its worker: the recompile, then its
        rows at the variant's best steady rate."""
        extra = self.recompile_s if variant == "compiled" else 0.0
        return extra + self.trial_rows / self.timings.best(variant)

    @property
    def choice(self) -> bool:
        """train.compile's default by this run: the faster side for a main-study trial."""
        return self.trial_seconds("compiled") < self.trial_seconds("eager")

    def as_json(self) -> dict:
        rows = {v: [t.samples_per_s for t in ts] for v, ts in self.timings.timings.items()}
        return {
            "rows_per_s": rows, "first_pass_s": self.first_pass_s,
            "new_structure_s": self.new_structure_s, "compile_s": self.compile_s,
            "recompile_s": self.recompile_s, "steady_ratio": self.steady_ratio,
            "choice": self.choice,
        }  # fmt: skip


def compile_runners(
    cfg: StepBenchConfig, rank: int | None = None
) -> dict[str, Callable[[PreparedData], Timing]]:
    train_cfg = cfg.as_train()

    def runner(compiled: bool) -> Callable[[PreparedData], Timing]:
        def run(data: PreparedData) -> Timing:
            torch.manual_seed(cfg.seed)
            pruner = replace(paper_pruner(), rank=rank)
            return fit_epoch(build_model(data, pruner), data, train_cfg, compiled)

        return run

    return {name: runner(compiled) for name, compiled in VARIANTS.items()}


def timed_passes(runners: dict[str, Callable[[PreparedData], Timing]], data) -> dict[str, float]:
    out = {}
    for name, run in runners.items():
        t0 = time.perf_counter()
        run(data)
        out[name] = time.perf_counter() - t0
    return out


def run_compile_bench(cfg: StepBenchConfig) -> CompileBenchResult:
    """First passes (empty Inductor cache), interleaved steady-state passes, a new structure."""
    data = synthetic_data(max(cfg.rows, cfg.warmup_rows), cfg.seed)
    timed, warm = with_train_rows(data, cfg.rows), with_train_rows(data, cfg.warmup_rows)
    runners = compile_runners(cfg)
    with (
        tempfile.TemporaryDirectory() as cache,
        patch.dict(os.environ, {"TORCHINDUCTOR_CACHE_DIR": cache}),
    ):
        first = timed_passes(runners, warm)
        result = run_interleaved(cfg.as_train(), runners, warm, timed, "rows")  # warm once more
        new = timed_passes(compile_runners(cfg, rank=16), warm)
    return CompileBenchResult(result, first, new, cfg.warmup_rows, main_study_trial_rows())


def format_compile(r: CompileBenchResult, threads: int) -> str:
    lines = [
        f"[compile] paper-form AdaSparse step through fit(): torch.compile vs eager, torch "
        f"threads {threads}",
        *r.timings.table(LABELS, 40),
        f"    first pass in a fresh process ({r.first_pass_rows:,} rows): eager "
        f"{r.first_pass_s['eager']:.1f} s, compiled {r.first_pass_s['compiled']:.1f} s "
        f"(compile ~{r.compile_s:.1f} s)",
        f"    a new structure (rank-16 pruner) in the same process: eager "
        f"{r.new_structure_s['eager']:.1f} s, compiled {r.new_structure_s['compiled']:.1f} s "
        f"(recompile ~{r.recompile_s:.1f} s)",
        f"    steady state compiled / eager: {r.steady_ratio:.2f}x (best/best), "
        f"{r.timings.paired_ratio('compiled', 'eager'):.2f}x (median of same-repeat pairs)",
        f"    a main-study trial with a new structure ({r.trial_rows:,} rows): eager "
        f"{r.trial_seconds('eager'):.1f} s, compiled {r.trial_seconds('compiled'):.1f} s",
        f"    choice: train.compile={'true' if r.choice else 'false'} "
        f"({'compiled' if r.choice else 'eager'} is faster here; the shipped default is "
        f"{str(TrainSettings().compile).lower()})",
    ]
    return "\n".join(lines)
