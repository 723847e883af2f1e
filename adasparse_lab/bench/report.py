"""The benchmark's printed table and JSON: machine description, one block per section."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import torch

from adasparse_lab import machine
from adasparse_lab.bench.preparation import PrepBenchResult
from adasparse_lab.bench.serving import ServeBenchResult
from adasparse_lab.bench.throughput import TrainBenchResult
from adasparse_lab.bench.workload import EMBEDDING_DIM, HIDDEN_DIMS

FIT_OVER_BARE_TARGET = 0.8
GB = 1024**3


@dataclass(frozen=True)
class Machine:
    cpu: str
    logical_cpus: int
    usable_cpus: int  # this process's CPU affinity
    platform: str
    python: str
    torch: str
    torch_threads: int


def describe_machine() -> Machine:
    m = machine.describe()
    return Machine(
        cpu=m["cpu"],
        logical_cpus=os.cpu_count() or 0,
        usable_cpus=machine.usable_cpus(),
        platform=m["platform"],
        python=m["python"],
        torch=torch.__version__,
        torch_threads=torch.get_num_threads(),
    )


def ratios(train: TrainBenchResult | None, serve: ServeBenchResult | None) -> dict[str, float]:
    """The headline numbers: every one is a ratio of two measurements taken in the same run."""
    out: dict[str, float] = {}
    if train is not None:
        out["fit_over_bare"] = train.ratio("fit_adasparse", "bare_adasparse")
        out["fit_over_bare_paired_median"] = train.paired_ratio("fit_adasparse", "bare_adasparse")
        out["fit_over_loader"] = train.ratio("fit_adasparse", "loader_adasparse")
        out["fit_over_loader_paired_median"] = train.paired_ratio(
            "fit_adasparse", "loader_adasparse"
        )
        out["dense_over_adasparse_fit"] = train.ratio("fit_dense", "fit_adasparse")
    if serve is not None:
        for lat in serve.latencies:
            out[f"compact_speedup_b{lat.batch_size}"] = lat.speedup
        out["compact_flops_ratio"] = serve.flops_ratio
    return out


def to_json(machine: Machine, train, serve, prep) -> dict:
    payload: dict = {"machine": asdict(machine), "ratios": ratios(train, serve)}
    if train is not None:
        payload["train"] = {
            "config": asdict(train.config),
            "samples_per_s": {v: [t.samples_per_s for t in ts] for v, ts in train.timings.items()},
            "rows": {v: ts[0].rows for v, ts in train.timings.items()},
            "best_samples_per_s": {v: train.best(v) for v in train.timings},
        }
    if serve is not None:
        payload["serve"] = asdict(serve) | {"speedups": [lat.speedup for lat in serve.latencies]}
    if prep is not None:
        payload["prep"] = asdict(prep) | {"rows_per_s": prep.rows_per_s}
    return payload


def load_average() -> float:
    """The 1-minute load average (NaN where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return math.nan


def format_load(start: float, end: float, m: Machine) -> str:
    """Load before and after the run; a warning when other processes competed for the CPUs
    (our own run adds about ``torch_threads`` to the end value)."""
    line = (
        f"load average (1 min): {start:.2f} at start, {end:.2f} at end, {m.usable_cpus} usable CPUs"
    )
    if start > 0.5 * m.usable_cpus or end > m.torch_threads + 0.5 * m.usable_cpus:
        line += (
            "\nWARNING: other processes competed for the CPUs during this run: absolute numbers"
            " are unreliable; trust the best-of columns and ratios, or rerun on an idle machine"
        )
    return line


def format_machine(m: Machine) -> str:
    return (
        f"machine: {m.cpu} | {m.logical_cpus} logical CPUs ({m.usable_cpus} usable) | {m.platform}\n"
        f"python {m.python} | torch {m.torch} | torch.get_num_threads() = {m.torch_threads}"
    )


LABELS = {
    "fit_adasparse": "fit()  AdaSparse fusion [h;e_d] + reg.",
    "fit_dense": "fit()  dense (pruner=None)",
    "bare_adasparse": "bare loop  AdaSparse fusion + reg.",
    "loader_adasparse": "per-item Dataset+DataLoader  AdaSparse",
}


def format_train(t: TrainBenchResult) -> str:
    c = t.config
    lines = [
        f"[1] training throughput  8 categorical fields (incl. domain) + 2 dense, D={EMBEDDING_DIM}, "
        f"MLP {list(HIDDEN_DIMS)}, batch {c.batch_size}, Adam",
        *t.table(LABELS, 40),
    ]
    r = ratios(t, None)
    verdict = "ok" if r["fit_over_bare"] >= FIT_OVER_BARE_TARGET else "BELOW TARGET"
    lines += [
        "    ratios: best/best  [median of same-repeat pairs]",
        f"    fit / bare loop           {r['fit_over_bare']:6.2f}   [{r['fit_over_bare_paired_median']:.2f}]"
        f"   target >= {FIT_OVER_BARE_TARGET}: {verdict}",
        f"    fit / per-item DataLoader {r['fit_over_loader']:6.2f}x  [{r['fit_over_loader_paired_median']:.2f}x]",
        f"    dense fit / AdaSparse fit {r['dense_over_adasparse_fit']:6.2f}x",
    ]
    return "\n".join(lines)


def format_serve(s: ServeBenchResult) -> str:
    c = s.config
    worst = max(lat.max_abs_diff for lat in s.latencies)
    lines = [
        "[2] serving latency  pruner inputs='domain' (static per-domain masks), eval, no_grad",
        f"    domain {s.domain_name}: untrained seeded model, alpha at its end value, pruner biases "
        f"shifted to prune {c.prune_fraction:.0%} of each hidden layer",
        f"    tower widths {s.widths_dense} -> compacted {s.widths_compact}; "
        f"analytic FLOPs compact/dense = {s.flops_ratio:.3f}",
        f"    max |masked - compact| logit = {worst:.1e}; median of alternating calls",
        f"    {'batch':>7}{'masked ms':>12}{'compact ms':>12}{'speed-up':>10}{'repeats':>9}",
    ]
    for lat in s.latencies:
        lines.append(
            f"    {lat.batch_size:>7}{lat.masked_ms:>12.3f}{lat.compact_ms:>12.3f}"
            f"{lat.speedup:>9.2f}x{lat.repeats:>9}"
        )
    return "\n".join(lines)


def format_prep(p: PrepBenchResult) -> str:
    lines = [
        f"[3] data preparation  prepare() of {p.rows:,} synthetic rows (chunked generator) into "
        "a memory-mapped store, fresh process",
        f"    cold: {p.seconds:.1f} s ({p.rows_per_s:,.0f} rows/s), peak RSS {p.peak_rss_bytes / GB:.2f} GB "
        f"(of which {p.import_rss_bytes / GB:.2f} GB after imports); targets at 85M rows: "
        "< 300 s, < 8 GB",
        f"    cached reload: {p.reload_seconds:.1f} s; store on disk {p.cache_bytes / 1024**2:.0f} MB; "
        f"train rows {p.train_rows:,}",
    ]
    if p.train:
        t = p.train
        best = {k: max(v) for k, v in t["samples_per_s"].items()}
        lines.append(
            f"    training on {t['train_rows']:,} rows, batch {t['batch_size']}: in RAM "
            f"{best['memory']:,.0f} samples/s, memory-mapped {best['mmap']:,.0f} samples/s, "
            f"mmap / memory = {t['mmap_over_memory']:.3f} (target >= 0.90)"
        )
    if p.workers:
        w = p.workers
        lines.append(
            f"    {w['workers']} workers reading the store at once: {w['seconds']:.1f} s, "
            f"total peak RSS {w['total_peak_rss_bytes'] / GB:.2f} GB (shared pages counted per "
            f"worker), total PSS {w['total_pss_bytes'] / GB:.2f} GB (target < 16 GB at 85M rows)"
        )
    return "\n".join(lines)
