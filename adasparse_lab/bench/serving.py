"""Serving latency: the masked model against the physically compacted per-domain network.

The model uses ``PrunerSpec(gate=FusionGate(), inputs='domain')``, so each domain's masks are
fixed. It is not trained: its weights are the seeded initialisation with alpha at its final
value, and the pruner biases are shifted so that, for the benchmarked domain, exactly
``prune_fraction`` of every hidden layer's neurons fall below the gate's threshold (the lowest
pre-activations are pruned). Latency does not depend on the weight values, only on the kept
widths, so this stands in for a trained model at that sparsity.

For each batch size, rows of that one domain go through (a) the masked model's forward and
(b) ``compact_model``'s forward, both in eval mode under ``no_grad``, alternating call by call;
the table reports the median latency of each, the speed-up, and the analytic FLOPs ratio.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch

from adasparse_lab.bench.workload import build_model, synthetic_data
from adasparse_lab.data.prepared import PreparedData
from adasparse_lab.models import AdaSparseModel, PrunerSpec
from adasparse_lab.models.base import reference_flops
from adasparse_lab.models.compact import CompactModel, compact_model
from adasparse_lab.models.flops import tower_flops
from adasparse_lab.models.gates import FusionGate


@dataclass(frozen=True)
class ServeBenchConfig:
    batch_sizes: tuple[int, ...] = (1, 256, 4096)
    prune_fraction: float = 0.35  # of every hidden layer, for the benchmarked domain
    domain: int = 0  # domain index (its domain-field code is domain + 1)
    seconds: float = 2.0  # time budget per batch size (both models together)
    min_repeats: int = 20
    max_repeats: int = 5_000
    data_rows: int = 20_000
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.prune_fraction < 1.0:
            raise ValueError(f"prune_fraction={self.prune_fraction} must be in [0, 1)")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError(f"batch_sizes={self.batch_sizes} must be positive")


@dataclass(frozen=True)
class Latency:
    batch_size: int
    masked_ms: float  # median per batch
    compact_ms: float
    repeats: int
    max_abs_diff: float  # max |masked logit - compact logit| on the benchmarked rows

    @property
    def speedup(self) -> float:
        return self.masked_ms / self.compact_ms


@dataclass(frozen=True)
class ServeBenchResult:
    config: ServeBenchConfig
    domain_name: str
    widths_dense: list[int]  # [H_0, H_1, ..., H_L]
    widths_compact: list[int]  # kept widths of the compacted tower
    flops_ratio: float  # analytic FLOPs of the compacted domain / the reference MLP
    latencies: list[Latency] = field(default_factory=list)


def domain_pruner() -> PrunerSpec:
    return PrunerSpec(gate=FusionGate(beta=2.0, eps=0.25), inputs="domain")


@torch.no_grad()
def sparsify_for_domain(model: AdaSparseModel, domain_code: int, fraction: float) -> None:
    """Shift each pruner's bias so that the lowest ``fraction`` of the domain's pre-activations
    fall below the fusion gate's zero threshold: v < logit(eps / beta) / alpha."""
    spec = model.spec
    if spec is None or spec.inputs != "domain" or not isinstance(spec.gate, FusionGate):
        raise ValueError("sparsify_for_domain needs a fusion pruner with inputs='domain'")
    model.set_alpha(spec.alpha_end)
    q = spec.gate.eps / spec.gate.beta
    threshold = math.log(q / (1 - q)) / spec.alpha_end
    emb = model.embedding
    e_d = emb.table.weight[emb.offsets[int(emb.order[0])] + domain_code].unsqueeze(0)  # [1, D]
    for pos in model.positions:
        pruner = model.pruners[str(pos)]
        v = pruner(e_d)[0].sort().values  # [H_l] ascending
        k = round(fraction * v.numel())
        if k == 0:
            cut = v[0] - 1.0
        elif k == v.numel():
            cut = v[-1] + 1.0
        else:
            cut = (v[k - 1] + v[k]) / 2
        pruner.bias += threshold - cut


def domain_rows(data: PreparedData, domain: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` rows of one domain (cycled when the split holds fewer): cat [n, F], dense [n, Dn]."""
    split = data.splits["train"]
    idx = torch.nonzero(split.domain == domain).flatten()
    if idx.numel() == 0:
        raise ValueError(f"domain index {domain} has no training rows")
    idx = idx[torch.arange(n) % idx.numel()]
    return split.cat[idx], split.dense[idx]


def median_ms(
    fns: dict[str, Callable[[], object]], cfg: ServeBenchConfig
) -> tuple[dict[str, float], int]:
    """Median milliseconds per call of each function, called alternately after a warm-up."""
    for fn in fns.values():
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    start, repeats = time.perf_counter(), 0
    while repeats < cfg.max_repeats and (
        repeats < cfg.min_repeats or time.perf_counter() - start < cfg.seconds
    ):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        repeats += 1
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}, repeats


def analytic_flops_ratio(model: AdaSparseModel, compact: CompactModel) -> float:
    """Tower FLOPs of the compacted domain (``models.flops``) over the FLOPs ratio's reference,
    the dense MLP [H_0, *reference_dims, 1] (models/base.py): the denominator of
    ``val/flops/ratio``, the model's own dense tower unless ``flops_reference`` says otherwise."""
    kept = compact.tower.widths()
    counts = torch.tensor([[float(kept[pos]) for pos in model.positions]])
    reference = reference_flops(model.embedding.output_dim(), model.reference_dims())
    return float(tower_flops(model.tower_shape(), counts).total[0]) / reference


def synchronised(fn: Callable[[], object], device: torch.device) -> Callable[[], object]:
    """``fn`` followed by a wait for the device (CUDA runs asynchronously: without the wait
    the timer would measure the kernel launches only)."""
    if device.type != "cuda":
        return fn

    def call() -> object:
        out = fn()
        torch.cuda.synchronize(device)
        return out

    return call


@torch.no_grad()
def run_serve_bench(cfg: ServeBenchConfig, device: str = "cpu") -> ServeBenchResult:
    """Masked vs compacted latency of one domain, both nets and their rows on ``device``."""
    dev = torch.device(device)
    data = synthetic_data(cfg.data_rows, cfg.seed)
    torch.manual_seed(cfg.seed)
    model = build_model(data, domain_pruner()).eval()
    code = cfg.domain + 1
    sparsify_for_domain(model, code, cfg.prune_fraction)
    model.to(dev)
    compact = compact_model(model, code)  # sliced on the model's device
    result = ServeBenchResult(
        config=cfg,
        domain_name=data.domain_names[cfg.domain],
        widths_dense=list(model.widths),
        widths_compact=compact.tower.widths()[:-1],
        flops_ratio=analytic_flops_ratio(model, compact),
    )
    for b in cfg.batch_sizes:
        cat, dense = (t.to(dev) for t in domain_rows(data, cfg.domain, b))
        diff = (model(cat, dense).logits - compact(cat, dense)).abs().max().item()
        nets = {"masked": partial(model, cat, dense), "compact": partial(compact, cat, dense)}
        ms, repeats = median_ms({k: synchronised(fn, dev) for k, fn in nets.items()}, cfg)
        result.latencies.append(Latency(b, ms["masked"], ms["compact"], repeats, diff))
    return result
