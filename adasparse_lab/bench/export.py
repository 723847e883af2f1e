"""Serving latency of an exported bundle, per domain, against the in-process model.

The model is the serving section's (``PrunerSpec(gate=FusionGate(), inputs='domain')``, seeded,
untrained, pruner biases shifted so that the first domain prunes ``prune_fraction`` of every
hidden layer; the other domains keep what those biases give them). It is written as a bundle
(``export.bundle.write_bundle``: per-domain compacted ``torch.export`` programs) and loaded back.
For each domain, ``batch_size`` rows of that domain go through, alternating call by call:
(a) the in-process masked model on encoded tensors, (b) the bundle's program for that domain on
the same tensors, and (c) ``Bundle.predict`` on the raw rows (encoding and routing included).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import polars as pl
import torch

from adasparse_lab.bench.serving import domain_pruner, median_ms, sparsify_for_domain
from adasparse_lab.bench.workload import build_model
from adasparse_lab.data.prepare import prepare, source_encoder
from adasparse_lab.data.sources import RandomSplit, SyntheticSource
from adasparse_lab.data.synthetic import SCHEMA
from adasparse_lab.export.bundle import Bundle, write_bundle


@dataclass(frozen=True)
class ExportBenchConfig:
    batch_size: int = 256
    prune_fraction: float = 0.35
    seconds: float = 0.5  # time budget per domain (the three variants together)
    min_repeats: int = 10
    max_repeats: int = 2_000
    rows: int = 20_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be positive")


@dataclass
class DomainLatency:
    domain: str
    kept: list[int]  # kept widths of the domain's compacted tower [H_0, H_1, ...]
    model_ms: float  # in-process masked model, encoded tensors
    bundle_ms: float  # the bundle's program for the domain, same tensors
    predict_ms: float  # Bundle.predict on raw rows (encode + route + score)
    repeats: int
    max_abs_diff: float  # max |bundle logit - model logit| on the rows


@dataclass
class ExportBenchResult:
    config: ExportBenchConfig
    threads: int
    widths_dense: list[int]
    domains: list[DomainLatency] = field(default_factory=list)


def _raw_and_model(cfg: ExportBenchConfig):
    n_rows = max(math.ceil(cfg.rows / 0.9), 2_000)
    source = SyntheticSource(split=RandomSplit(0.05, 0.05, cfg.seed), n_rows=n_rows, seed=cfg.seed)
    data = prepare(source, SCHEMA, cache_dir=None)
    encoder, raw = source_encoder(source, SCHEMA)
    torch.manual_seed(cfg.seed)
    model = build_model(data, domain_pruner()).eval()
    sparsify_for_domain(model, 1, cfg.prune_fraction)
    return data, encoder, raw.frames["train"], model


@torch.no_grad()
def run_export_bench(cfg: ExportBenchConfig) -> ExportBenchResult:
    data, encoder, raw, model = _raw_and_model(cfg)
    result = ExportBenchResult(cfg, torch.get_num_threads(), list(model.widths))
    train = data.splits["train"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "bundle"
        example = (train.cat[:64], train.dense[:64])
        write_bundle(folder, model, SCHEMA, encoder, data.domain_names, example, {})
        bundle = Bundle(folder)
        for k, name in enumerate(data.domain_names):
            rows = raw.filter(pl.col(SCHEMA.domain).cast(pl.String) == name)
            rows = rows.sample(cfg.batch_size, with_replacement=True, seed=cfg.seed)
            enc = bundle.encode(rows)
            net = bundle.nets.get(k, bundle.model)
            diff = (net(enc.cat, enc.dense) - model(enc.cat, enc.dense).logits).abs().max()
            fns = {
                "model": partial(model, enc.cat, enc.dense),
                "bundle": partial(net, enc.cat, enc.dense),
                "predict": partial(bundle.predict, rows),
            }
            ms, repeats = median_ms(fns, cfg)
            kept = [int((pi != 0).sum()) for pi in model.static_pi(k + 1).values()]
            result.domains.append(
                DomainLatency(
                    name, kept, ms["model"], ms["bundle"], ms["predict"], repeats, float(diff)
                )
            )
    return result


def format_export(r: ExportBenchResult) -> str:
    c = r.config
    worst = max(d.max_abs_diff for d in r.domains)
    lines = [
        f"[6] exported bundle, per domain  batch {c.batch_size} rows of one domain, "
        f"{r.threads} torch thread(s), eval, no_grad",
        f"    torch.export programs of the compacted per-domain nets vs the in-process masked "
        f"model (tower {r.widths_dense}); first domain pruned {c.prune_fraction:.0%} per layer",
        f"    max |bundle - model| logit = {worst:.1e}; median ms of alternating calls; predict = "
        "encode raw rows + route + score",
        f"    {'domain':<10}{'kept hidden':<22}{'model ms':>10}{'bundle ms':>11}{'ratio':>8}"
        f"{'predict ms':>12}{'ratio':>8}{'repeats':>9}",
    ]
    for d in r.domains:
        lines.append(
            f"    {d.domain[:9]:<10}{str(d.kept):<22}{d.model_ms:>10.3f}{d.bundle_ms:>11.3f}"
            f"{d.bundle_ms / d.model_ms:>7.2f}x{d.predict_ms:>12.3f}"
            f"{d.predict_ms / d.model_ms:>7.2f}x{d.repeats:>9}"
        )
    return "\n".join(lines)
