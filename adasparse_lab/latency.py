"""Measured serving cost of a trained model, per domain, against the dense model timed in the
same process (ADASPARSE.md, "Cheap pruners": analytic FLOPs are an ideal kernel's cost, this is
what this machine does).

Each domain is served by the network that would serve it in production: the physically
compacted per-domain net where the structure is static (``static_network``), the masked model
otherwise (paper-form masks depend on the sample, so a dense kernel computes every neuron).
Inputs are real test rows of that domain, tiled when the domain has fewer rows than a batch.
All networks are timed under ``torch.inference_mode`` in eval mode, round by round (every
domain's net and the dense model in each round), after warm-up rounds; a value is the median
over the timed rounds.

Metrics (times in milliseconds per 1k samples; ``<b>`` is each of ``latency.batch_sizes``):
  latency/b<b>/<domain>  the network serving ``<domain>`` (metrics.safe_name), batch b
  latency/dense_b<b>     the dense model (pruner=None, same embedding and hidden dims; its
                         weights are untrained: time does not depend on their values)
  latency/ratio_b<b>     sum_k n_k t_k(b) / (t_dense(b) sum_k n_k), n_k = test rows of domain k:
                         the time to serve the test traffic relative to the dense model serving
                         it, i.e. the sample-weighted mean of the per-domain ratios t_k / t_dense
  latency/ratio          latency/ratio_b<b> at the largest batch size (4096 by default)
  latency/measure_s      wall seconds this measurement took
Shapes: B batch, F categorical fields, Dn dense features, K domains.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from adasparse_lab.data.prepare import PreparedData
from adasparse_lab.errors import ConfigError
from adasparse_lab.metrics import safe_name
from adasparse_lab.models.compact import serving_model

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

    @classmethod
    def from_config(cls, node) -> LatencySettings:
        """From the ``latency:`` config block (a mapping); a config without one: disabled."""
        if node is None:
            return cls(enabled=False)
        try:
            return cls(**{k: v for k, v in dict(node).items()})
        except TypeError as err:
            raise ConfigError(f"latency: {err}") from None

    def __post_init__(self) -> None:
        object.__setattr__(self, "batch_sizes", tuple(int(b) for b in self.batch_sizes))
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ConfigError(f"latency.batch_sizes={list(self.batch_sizes)} must be positive")
        for key in ("repeats", "min_rows"):
            if getattr(self, key) < 1:
                raise ConfigError(f"latency.{key}={getattr(self, key)} must be >= 1")
        if self.warmup < 0:
            raise ConfigError(f"latency.warmup={self.warmup} must be >= 0")


@dataclass
class LatencyResult:
    """ms per 1k samples: ``domains[b][name]``, ``dense[b]``; ``served[name]`` says which
    network served the domain ('compact' or 'masked'); ``weights[name]`` = test rows n_k."""

    domains: dict[int, dict[str, float]] = field(default_factory=dict)
    dense: dict[int, float] = field(default_factory=dict)
    served: dict[str, str] = field(default_factory=dict)
    weights: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def ratio(self, b: int) -> float:
        """Sample-weighted serving time over the dense model's, at batch size ``b``."""
        total = sum(self.weights.values())
        mean = sum(self.weights[d] * t for d, t in self.domains[b].items()) / total
        return mean / self.dense[b]

    def as_dict(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for b, per_domain in self.domains.items():
            out |= {f"latency/b{b}/{safe_name(d)}": t for d, t in per_domain.items()}
            out[f"latency/dense_b{b}"] = self.dense[b]
            out[f"latency/ratio_b{b}"] = self.ratio(b)
        out["latency/ratio"] = self.ratio(max(self.domains))
        out["latency/measure_s"] = self.seconds
        return out


def static_network(model: nn.Module, k: int) -> nn.Module | None:
    """The compacted network serving domain index ``k`` (domain-field code k + 1, see
    data.prepare), or None when the structure depends on the sample."""
    return serving_model(model, k + 1)


def _batches(rows: torch.Tensor, data: PreparedData, b: int, min_rows: int, device) -> Inputs:
    """ceil(min_rows / b) batches of ``b`` test rows taken (cyclically) from ``rows`` [N]."""
    split = data.splits["test"]
    calls = -(-min_rows // b)
    idx = rows[torch.arange(calls * b) % rows.numel()]
    cat, dense = split.cat[idx].to(device), split.dense[idx].to(device)
    return [(cat[i * b : (i + 1) * b], dense[i * b : (i + 1) * b]) for i in range(calls)]


def ms_per_1k(net: nn.Module, inputs: Inputs, device: torch.device) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for cat, dense in inputs:
        net(cat, dense)
    sync()
    return (time.perf_counter() - t0) * 1e6 / sum(len(c) for c, _ in inputs)


def time_rounds(
    nets: dict[str, nn.Module], inputs: dict[str, Inputs], s: LatencySettings, device
) -> dict[str, float]:
    """Median ms per 1k samples of each net on its inputs, all nets timed in every round."""
    times: dict[str, list[float]] = {name: [] for name in nets}
    for r in range(s.warmup + s.repeats):
        for name, net in nets.items():
            t = ms_per_1k(net, inputs[name], device)
            if r >= s.warmup:
                times[name].append(t)
    return {name: statistics.median(t) for name, t in times.items()}


@torch.inference_mode()
def measure_latency(
    model: nn.Module,
    dense_factory: Callable[[], nn.Module],
    data: PreparedData,
    settings: LatencySettings,
) -> LatencyResult:
    """Time every domain's serving network and the dense model (built by ``dense_factory``
    with torch's RNG state left untouched) at each batch size of ``settings``."""
    t0 = time.perf_counter()
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[]):
        dense = dense_factory().to(device).eval()
    was_training = model.training
    model.eval()
    result, nets = LatencyResult(), {"dense": dense}
    test_domain = data.splits["test"].domain
    rows = {}
    for k, name in enumerate(data.domain_names):
        rows[name] = torch.nonzero(test_domain == k).flatten()
        if rows[name].numel() == 0:
            log.warning("latency: domain %r has no test rows; not measured", name)
            continue
        compact = static_network(model, k)
        nets[name] = compact if compact is not None else model
        result.served[name] = "compact" if compact is not None else "masked"
        result.weights[name] = int(rows[name].numel())
    if not result.served:
        raise ConfigError("latency: no domain has test rows to time")
    rows["dense"] = torch.arange(len(test_domain))
    for b in settings.batch_sizes:
        inputs = {n: _batches(rows[n], data, b, settings.min_rows, device) for n in nets}
        ms = time_rounds(nets, inputs, settings, device)
        result.dense[b] = ms.pop("dense")
        result.domains[b] = ms
    model.train(was_training)
    result.seconds = time.perf_counter() - t0
    return result
