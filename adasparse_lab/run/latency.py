"""Measured serving cost per domain against the dense model timed in the same process
(ADASPARSE.md, "Cheap pruners"). A domain is served by its compacted net where the structure
is static (``static_network``), by the masked model otherwise; on its real validation rows (tiled up
to a batch), under inference_mode, all nets timed in every round, median over timed rounds.
Metrics (ms per 1k samples, each b of ``latency.batch_sizes``): ``val/latency/b<b>/<domain>``,
``val/latency/dense_b<b>`` (the FLOPs ratio's dense reference MLP, untrained:
run.pipeline.reference_model), ``val/latency/ratio_b<b>`` = sum_k n_k t_k / (t_dense sum_k n_k), n_k = validation rows of domain k (the sample-weighted mean of
t_k / t_dense), ``val/latency/ratio`` (at the largest b, 4096 by default), ``val/latency/measure_s``.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from adasparse_lab.data.prepared import PreparedData
from adasparse_lab.errors import ConfigError
from adasparse_lab.metrics import safe_name
from adasparse_lab.models.base import Logits

log = logging.getLogger(__name__)
Inputs = list[tuple[torch.Tensor, torch.Tensor]]  # batches of (cat [B, F], dense [B, Dn])


@dataclass(frozen=True)
class LatencySettings:
    """The ``latency:`` block of conf/config.yaml."""

    enabled: bool = True
    batch_sizes: tuple[int, ...] = (4096, 1)
    repeats: int = 3  # timed rounds (median over them)
    warmup: int = 1  # untimed rounds first
    min_rows: int = 16  # rows per timing: batch 1 is timed over 16 calls of one row each
    budget_s: float = 1.0  # per batch size: no further timed round once spent (busy machine)

    @classmethod
    def from_config(cls, node) -> LatencySettings:
        """From the ``latency:`` config block (a mapping); a config without one: disabled."""
        if node is None:
            return cls(enabled=False)
        try:
            return cls(**dict(node))
        except TypeError as err:
            raise ConfigError(f"latency: {err}") from None

    def __post_init__(self) -> None:
        object.__setattr__(self, "batch_sizes", tuple(int(b) for b in self.batch_sizes))
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ConfigError(f"latency.batch_sizes={list(self.batch_sizes)} must be positive")
        for key, low in (("repeats", 1), ("min_rows", 1), ("warmup", 0), ("budget_s", 0)):
            if getattr(self, key) < low:
                raise ConfigError(f"latency.{key}={getattr(self, key)} must be >= {low}")


@dataclass
class LatencyResult:
    """ms per 1k samples ``domains[b][name]``, ``dense[b]``; ``served[name]``: 'compact' or
    'masked', the network timed for the domain; ``weights[name]``: its validation rows n_k."""

    domains: dict[int, dict[str, float]] = field(default_factory=dict)
    dense: dict[int, float] = field(default_factory=dict)
    served: dict[str, str] = field(default_factory=dict)
    weights: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def ratio(self, b: int) -> float:
        """Sample-weighted serving time over the dense model's, at batch size ``b``."""
        weighted = sum(self.weights[d] * t for d, t in self.domains[b].items())
        return weighted / sum(self.weights.values()) / self.dense[b]

    def as_dict(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for b, per_domain in self.domains.items():
            out |= {f"val/latency/b{b}/{safe_name(d)}": t for d, t in per_domain.items()}
            out[f"val/latency/dense_b{b}"] = self.dense[b]
            out[f"val/latency/ratio_b{b}"] = self.ratio(b)
        out["val/latency/ratio"] = self.ratio(max(self.domains))
        out["val/latency/measure_s"] = self.seconds
        return out


def static_network(model: nn.Module, k: int) -> nn.Module | None:
    """The net that serves domain index k (its domain-field code is k + 1: data.prepare), when
    it differs from the whole model (a compacted or folded net, one domain's route); else None."""
    net = model.served(k + 1)
    return None if isinstance(net, Logits) else net


def _batches(rows: torch.Tensor, data: PreparedData, b: int, min_rows: int, device) -> Inputs:
    """ceil(min_rows / b) batches of ``b`` validation rows taken (cyclically) from ``rows`` [N]."""
    idx, split = rows[torch.arange(-(-min_rows // b) * b) % rows.numel()], data.splits["val"]
    cat = split.cat[idx].long()  # a memory-mapped store keeps int32 codes
    return list(zip(cat.to(device).split(b), split.dense[idx].to(device).split(b)))


def time_rounds(
    nets: dict[str, nn.Module], inputs: dict[str, Inputs], s: LatencySettings, device
) -> dict[str, float]:
    """Median ms per 1k samples of each net over its inputs, all nets timed in every round;
    at least one timed round, further ones only while ``s.budget_s`` is not spent."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {name: [] for name in nets}
    rows, start = {n: sum(len(c) for c, _ in inp) for n, inp in inputs.items()}, time.perf_counter()
    for r in range(s.warmup + s.repeats):
        if r > s.warmup and time.perf_counter() - start > s.budget_s:
            break
        for name, net in nets.items():
            sync()
            t0 = time.perf_counter()
            for cat, dense in inputs[name]:
                net(cat, dense)
            sync()
            if r >= s.warmup:
                times[name].append((time.perf_counter() - t0) * 1e6 / rows[name])
    return {name: statistics.median(t) for name, t in times.items()}


@torch.inference_mode()
def measure_latency(
    model: nn.Module, dense_factory: Callable[[], nn.Module], data: PreparedData, s: LatencySettings
) -> LatencyResult:
    """Time every domain's serving network and the dense model (built by ``dense_factory``,
    torch's RNG state left untouched) at each batch size of ``s``."""
    t0, device, was_training = time.perf_counter(), next(model.parameters()).device, model.training
    with torch.random.fork_rng(devices=[]):
        nets = {"dense": dense_factory().to(device).eval()}
    rows_domain = data.splits["val"].domain
    rows = {n: torch.nonzero(rows_domain == k).flatten() for k, n in enumerate(data.domain_names)}
    if len(rows := {n: r for n, r in rows.items() if r.numel()}) < data.n_domains:
        log.warning("latency: domains without validation rows are not measured")
    result = LatencyResult(weights={n: int(r.numel()) for n, r in rows.items()})
    try:
        model.eval()
        for name in rows:
            compact = static_network(model, data.domain_names.index(name))
            nets[name] = compact if compact is not None else model
            result.served[name] = "compact" if compact is not None else "masked"
        rows["dense"] = torch.arange(len(rows_domain))
        for b in s.batch_sizes:
            inputs = {n: _batches(rows[n], data, b, s.min_rows, device) for n in nets}
            result.domains[b] = time_rounds(nets, inputs, s, device)
            result.dense[b] = result.domains[b].pop("dense")
    finally:
        model.train(was_training)
    result.seconds = time.perf_counter() - t0
    return result
