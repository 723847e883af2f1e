"""The GPU check (``--only gpu``): one prepared command, a few minutes on one GPU.

Three comparisons, each against a baseline measured in the same run on the same data:
- training throughput: one epoch of ``fit`` (AdaSparse paper-form fusion, the regulariser and
  schedules of a real run) on the CPU and on CUDA, same seeded model, same rows and batch
  size; the best samples/s of ``repeats`` passes each (after one warm-up pass) and their ratio;
- bf16 against fp32: the same seeded model trained ``auc_epochs`` epochs on CUDA with
  ``train.autocast=null`` and ``train.autocast=bf16``; test AUC and mean per-domain AUC of each
  (evaluation in fp32, as a study does) and their differences;
- serving: the masked model against the compacted per-domain net on the GPU (``bench.serving``
  with its rows and models on the device, each call waited for).

Without CUDA the command says so and exits non-zero before any data is prepared
(``require_cuda``, called by ``__main__`` first of all).
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from adasparse_lab.bench.serving import ServeBenchConfig, ServeBenchResult, run_serve_bench
from adasparse_lab.bench.throughput import (
    Timing,
    default_regularizer,
    default_schedule,
    paper_pruner,
)
from adasparse_lab.bench.workload import build_model, synthetic_data, with_train_rows
from adasparse_lab.data.prepared import PreparedData
from adasparse_lab.run.evaluation import evaluate
from adasparse_lab.run.fit import TrainSettings, fit

log = logging.getLogger(__name__)


class NoCudaError(RuntimeError):
    """``--only gpu`` on a machine where torch sees no CUDA device."""


def require_cuda() -> str:
    """The CUDA device's name; NoCudaError (with what torch reports) where there is none."""
    if not torch.cuda.is_available():
        raise NoCudaError(
            f"no CUDA device: torch {torch.__version__} (CUDA build: {torch.version.cuda}) sees "
            "none; the gpu section needs one (run it on a GPU machine; every other section "
            "runs on the CPU)"
        )
    return torch.cuda.get_device_name(0)


@dataclass(frozen=True)
class GpuBenchConfig:
    rows: int = 262_144  # training rows of every pass (throughput and AUC runs)
    warmup_rows: int = 32_768
    repeats: int = 3  # timed throughput passes per device
    batch_size: int = 1024  # conf/train/default.yaml
    auc_epochs: int = 3
    lr: float = 1e-3
    seed: int = 0
    serve: ServeBenchConfig = field(default_factory=ServeBenchConfig)


@dataclass
class AucRun:
    autocast: str  # "fp32" | "bf16"
    test_auc: float
    test_mean_domain_auc: float
    best_epoch: int
    seconds: float  # the whole fit (epochs and their validation)


@dataclass
class GpuBenchResult:
    config: GpuBenchConfig
    device_name: str
    samples_per_s: dict[str, list[float]] = field(default_factory=dict)  # device -> per pass
    auc: dict[str, AucRun] = field(default_factory=dict)  # "fp32" / "bf16"
    bf16_note: str = ""  # why bf16 was not run, where it was not
    serve: ServeBenchResult | None = None
    errors: dict[str, str] = field(default_factory=dict)  # part -> "Type: message"

    def best(self, device: str) -> float:
        return max(self.samples_per_s[device])

    def summary(self) -> dict[str, float]:
        """The headline ratios and differences."""
        out = {}
        if {"cpu", "cuda"} <= set(self.samples_per_s):
            out["cuda_over_cpu_train"] = self.best("cuda") / self.best("cpu")
        if {"fp32", "bf16"} <= set(self.auc):
            fp32, bf16 = self.auc["fp32"], self.auc["bf16"]
            out["bf16_minus_fp32_test_auc"] = bf16.test_auc - fp32.test_auc
            out["bf16_minus_fp32_test_mean_domain_auc"] = (
                bf16.test_mean_domain_auc - fp32.test_mean_domain_auc
            )
        if self.serve is not None:
            for lat in self.serve.latencies:
                out[f"gpu_compact_speedup_b{lat.batch_size}"] = lat.speedup
        return out


def settings(cfg: GpuBenchConfig, device: str, epochs: int, autocast: str | None) -> TrainSettings:
    return TrainSettings(
        epochs=epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, device=device,
        autocast=autocast, progress=False,
    )  # fmt: skip


def fresh_model(data: PreparedData, seed: int):
    """The benchmark's AdaSparse model with the same seeded weights every call."""
    torch.manual_seed(seed)
    return build_model(data, paper_pruner())


def train_pass(cfg: GpuBenchConfig, data: PreparedData, device: str) -> Timing:
    """One ``fit`` epoch over ``data``'s train split on ``device`` from a fresh seeded model;
    its time is the train epoch's (``EpochRecord.samples_per_s``, waited for the device)."""
    model = fresh_model(data, cfg.seed)
    result = fit(
        model, data, settings(cfg, device, 1, None), default_regularizer(), default_schedule()
    )
    rows = len(data.splits["train"])
    return Timing(rows, rows / result.history[0].samples_per_s)


def throughput(
    cfg: GpuBenchConfig, warm: PreparedData, timed: PreparedData, devices: tuple[str, ...]
) -> dict[str, list[float]]:
    """samples/s of each timed pass per device, the devices interleaved after a warm-up each."""
    for device in devices:
        train_pass(cfg, warm, device)
    out: dict[str, list[float]] = {d: [] for d in devices}
    for r in range(cfg.repeats):
        for device in devices:
            out[device].append(train_pass(cfg, timed, device).samples_per_s)
            log.info("repeat %d %s: %.0f samples/s", r + 1, device, out[device][-1])
    return out


def auc_run(cfg: GpuBenchConfig, data: PreparedData, device: str, autocast: str | None) -> AucRun:
    """Train ``cfg.auc_epochs`` epochs on ``device`` (autocast ``None`` = fp32 or ``"bf16"``)
    from the same seeded model; evaluate the selected state on test in fp32."""
    model = fresh_model(data, cfg.seed)
    t0 = time.perf_counter()
    s = settings(cfg, device, cfg.auc_epochs, autocast)
    result = fit(model, data, s, default_regularizer(), default_schedule())
    seconds = time.perf_counter() - t0
    test = evaluate(model, data, "test", s.eval_batch_size, torch.device(device)).metrics
    return AucRun(autocast or "fp32", test.auc, test.mean_domain_auc, result.best_epoch, seconds)


def bf16_unsupported(device: str) -> str:
    """Why bf16 autocast cannot run on ``device`` ('' where it can)."""
    if device == "cuda" and not torch.cuda.is_bf16_supported():
        return f"{torch.cuda.get_device_name(0)} does not support bfloat16"
    return ""


def guarded(result: GpuBenchResult, part: str, fn: Callable[[], object]) -> object | None:
    """``fn()``; where it raises, the error is recorded under ``part`` (its traceback on
    stderr) and None returned, so that one failing part leaves the others measured (a GPU
    machine is lent for minutes). Prints one progress line per part."""
    t0 = time.perf_counter()
    try:
        out = fn()
    except Exception as err:  # reported, and the command exits non-zero
        traceback.print_exc()
        result.errors[part] = f"{type(err).__name__}: {err}"
        print(f"gpu: {part} FAILED after {time.perf_counter() - t0:.1f} s", flush=True)
        return None
    print(f"gpu: {part} done in {time.perf_counter() - t0:.1f} s", flush=True)
    return out


def run_gpu_bench(
    cfg: GpuBenchConfig, device: str = "cuda", baseline: str = "cpu"
) -> GpuBenchResult:
    """Every part of the GPU check on ``device`` against ``baseline`` (the tests run it with
    device='cpu' on a few rows: the same code path without a GPU)."""
    name = torch.cuda.get_device_name(0) if device == "cuda" else device
    data = synthetic_data(max(cfg.rows, cfg.warmup_rows), cfg.seed)
    timed = with_train_rows(data, cfg.rows)
    warm = with_train_rows(data, cfg.warmup_rows)
    result = GpuBenchResult(cfg, name)
    devices = (baseline, device) if baseline != device else (device,)
    rates = guarded(result, "throughput", lambda: throughput(cfg, warm, timed, devices))
    result.samples_per_s = rates or {}
    runs = {"fp32": None, "bf16": "bf16"}
    result.bf16_note = bf16_unsupported(device)
    if result.bf16_note:
        del runs["bf16"]
    for label, autocast in runs.items():
        run = guarded(result, label, lambda a=autocast: auc_run(cfg, timed, device, a))
        if run is not None:
            result.auc[label] = run
    result.serve = guarded(result, "serving", lambda: run_serve_bench(cfg.serve, device))
    return result


def format_gpu(r: GpuBenchResult) -> str:
    c = r.config
    lines = [
        f"[gpu] {r.device_name}  AdaSparse fusion [h;e_d] + reg. through fit(), batch "
        f"{c.batch_size}, {c.rows:,} training rows, Adam; torch {torch.__version__}, "
        f"CUDA {torch.version.cuda}",
        f"    training throughput (best of {c.repeats} interleaved passes after a warm-up each)",
    ]
    for device, rates in r.samples_per_s.items():
        lines.append(f"    {device:<8}{max(rates):>14,.0f} samples/s")
    s = r.summary()
    if "cuda_over_cpu_train" in s:
        lines.append(f"    cuda / cpu {s['cuda_over_cpu_train']:.2f}x")
    lines.append(f"    test AUC after {c.auc_epochs} epochs, same seed (evaluation in fp32)")
    for run in r.auc.values():
        lines.append(
            f"    {run.autocast:<8} AUC {run.test_auc:.4f}  mean domain AUC "
            f"{run.test_mean_domain_auc:.4f}  best epoch {run.best_epoch}  {run.seconds:.1f} s"
        )
    if "bf16_minus_fp32_test_auc" in s:
        lines.append(
            f"    bf16 - fp32: AUC {s['bf16_minus_fp32_test_auc']:+.4f}, mean domain AUC "
            f"{s['bf16_minus_fp32_test_mean_domain_auc']:+.4f}"
        )
    if r.bf16_note:
        lines.append(f"    bf16 not run: {r.bf16_note}")
    lines += [f"    FAILED {part}: {reason}" for part, reason in r.errors.items()]
    if r.serve is not None:
        lines.append(f"    serving on {r.device_name}: masked vs compacted per-domain net")
        lines += [
            f"    batch {lat.batch_size:>5}: masked {lat.masked_ms:.3f} ms, compact "
            f"{lat.compact_ms:.3f} ms, {lat.speedup:.2f}x (max |diff| {lat.max_abs_diff:.1e})"
            for lat in r.serve.latencies
        ]
    return "\n".join(lines)
