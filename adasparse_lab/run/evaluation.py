"""Evaluate a model on one split: metrics, per-domain sparsity and per-domain FLOPs."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from adasparse_lab.data.batches import iterate, split_to_device
from adasparse_lab.data.prepared import PreparedData
from adasparse_lab.metrics import FLOPS_AGGREGATES, EvalMetrics, evaluate_scores, safe_name
from adasparse_lab.models.base import MultiDomainModel, reference_flops

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SparsityReport:
    """Which neurons a split's masks zero, and the three numbers called "sparsity".

    positions: masked positions (0 = input embedding, l = hidden layer l).
    keep_prob[j]: [K, H_j] mean keep indicator per domain and neuron at position j (NaN rows
    for a domain without rows in the split). rows: [K] rows of each domain in the split.

    - ``ratio`` [K, P]: per domain and position, the fraction of zero entries of pi
      (metric ``<split>/sparsity/<domain>/l<k>``).
    - ``per_layer()`` [P]: per position, the fraction of zeros over every row of the split:
      sample-weighted, so a large domain counts more. This is r^l of the regulariser
      (sparsity.zero_fraction) with the split as one batch, the quantity the target band
      constrains (``<split>/sparsity/l<k>``).
    - ``overall()``: the fraction of zeros over every row and every masked neuron: the
      layers' ratios weighted by their widths (``<split>/sparsity/overall``);
      ``domain_overall()`` the same per domain (``<split>/sparsity/<domain>/overall``).
    """

    positions: list[int]
    keep_prob: list[np.ndarray]
    rows: np.ndarray

    @property
    def ratio(self) -> np.ndarray:
        if not self.keep_prob:
            return np.zeros((len(self.rows), 0))
        return np.stack([1.0 - kp.mean(1) for kp in self.keep_prob], 1)

    def _weighted(self, values: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
        # NaN values (a domain absent from the split) carry weight 0
        w = np.where(np.isnan(values), 0.0, weights)
        with np.errstate(invalid="ignore"):
            return np.nansum(values * w, axis=axis) / w.sum(axis=axis)

    def per_layer(self) -> np.ndarray:
        return self._weighted(self.ratio, self.rows[:, None], axis=0)

    def widths(self) -> np.ndarray:
        return np.array([kp.shape[1] for kp in self.keep_prob], dtype=np.float64)

    def overall(self) -> float:
        """0.0 without masked positions: a dense model zeroes nothing."""
        if not self.positions:
            return 0.0
        return float(self._weighted(self.per_layer(), self.widths(), axis=0))

    def domain_overall(self) -> np.ndarray:
        if not self.positions:
            return np.zeros(len(self.rows))
        return self._weighted(self.ratio, np.broadcast_to(self.widths(), self.ratio.shape), 1)

    def as_dict(self, prefix: str, names: list[str]) -> dict[str, float]:
        out = {f"{prefix}/sparsity/overall": self.overall()}
        for pos, r in zip(self.positions, self.per_layer()):
            out[f"{prefix}/sparsity/l{pos}"] = float(r)
        ratio, by_domain = self.ratio, self.domain_overall()
        for k, name in enumerate(names):
            for j, pos in enumerate(self.positions):
                out[f"{prefix}/sparsity/{name}/l{pos}"] = float(ratio[k, j])
            if self.positions:
                out[f"{prefix}/sparsity/{name}/overall"] = float(by_domain[k])
        return out


@dataclass(frozen=True)
class FlopsReport:
    dense: float  # the reference: dense MLP [H_0, *flops_reference, 1] (models/base.py)
    per_domain: np.ndarray  # [K] mean effective FLOPs per sample
    overall: float  # mean over all rows of the split
    breakdown: dict[str, np.ndarray]  # matmul / bias / pruner, [K] each

    @property
    def ratio(self) -> float:
        return self.overall / self.dense


@dataclass(frozen=True)
class Evaluation:
    metrics: EvalMetrics
    sparsity: SparsityReport
    flops: FlopsReport

    def as_dict(self, prefix: str, domain_names: list[str]) -> dict[str, float]:
        """Every number of this split, each under ``<prefix>/`` (the split's name)."""
        names = [safe_name(d) for d in domain_names]
        out = self.metrics.as_dict(prefix)
        out.update(self.sparsity.as_dict(prefix, names))
        for k, name in enumerate(names):
            if name in FLOPS_AGGREGATES:
                log.warning(
                    "domain %r: its FLOPs share the name %s/flops/%s with the split's "
                    "aggregate; reported only as %s/flops_ratio/%s",
                    name, prefix, name, prefix, name,
                )  # fmt: skip
            else:
                out[f"{prefix}/flops/{name}"] = float(self.flops.per_domain[k])
            out[f"{prefix}/flops_ratio/{name}"] = float(self.flops.per_domain[k] / self.flops.dense)
        out[f"{prefix}/flops/dense"] = self.flops.dense
        out[f"{prefix}/flops/mean"] = self.flops.overall
        out[f"{prefix}/flops/ratio"] = self.flops.ratio
        return out


def _forward_split(
    model: MultiDomainModel, data: PreparedData, split: str, batch_size: int, device: torch.device
) -> tuple[torch.Tensor, list[torch.Tensor], dict[str, torch.Tensor]]:
    """One pass over ``split`` in eval mode: the logits, per masked position the keep
    indicators summed per domain [K, H], and per row each FLOPs part (matmul, bias, pruner)."""
    tensors = split_to_device(data.splits[split], device)
    was_training = model.training
    model.eval()
    K = data.n_domains
    keep_sum = [torch.zeros(K, model.widths[p], dtype=torch.float64) for p in model.positions]
    logits, flops_parts = [], {"matmul": [], "bias": [], "pruner": []}
    for batch in iterate(tensors, batch_size, pin=device.type == "cuda"):
        batch = batch.to(device)  # a no-op unless the split is memory-mapped
        out = model(batch.cat, batch.dense)
        logits.append(out.logits.float().cpu())
        dom = batch.domain.cpu()
        kept = (
            torch.stack([k.sum(1) for k in out.keep], 1).cpu()
            if out.keep
            else torch.zeros(len(dom), 0)
        )
        fl = model.flops(kept, model.domain_code(batch.cat).cpu())
        for name in flops_parts:
            flops_parts[name].append(getattr(fl, name).expand(len(dom)))
        for acc, k in zip(keep_sum, out.keep):
            acc.index_add_(0, dom, k.double().cpu())
    model.train(was_training)
    return torch.cat(logits), keep_sum, {name: torch.cat(p) for name, p in flops_parts.items()}


def _flops_report(
    model: MultiDomainModel, domain: np.ndarray, rows: np.ndarray, parts: dict[str, torch.Tensor]
) -> FlopsReport:
    """Per domain the mean of each FLOPs part and their sum; the split's mean FLOPs a row."""
    breakdown = {}
    for name, part in parts.items():
        summed = np.bincount(domain, weights=part.numpy(), minlength=len(rows))
        breakdown[name] = summed / np.maximum(rows, 1.0)
    total_rows = sum(part.numpy() for part in parts.values())
    return FlopsReport(
        dense=reference_flops(model.embedding.output_dim(), model.reference_dims()),
        per_domain=sum(breakdown.values()),
        overall=float(np.mean(total_rows)),
        breakdown=breakdown,
    )


@torch.no_grad()
def evaluate(
    model: MultiDomainModel,
    data: PreparedData,
    split: str,
    batch_size: int = 8192,
    device: torch.device | None = None,
) -> Evaluation:
    """Metrics, sparsity and per-domain FLOPs (``model.flops``) of ``split``; the FLOPs ratio
    divides by the dense reference MLP with hidden dims ``model.flops_reference``."""
    device = device or next(model.parameters()).device
    logits, keep_sum, flops_parts = _forward_split(model, data, split, batch_size, device)
    split_data = data.splits[split]  # may live on the device (fit moves val there once)
    domain = split_data.domain.cpu().long().numpy()  # a memory-mapped store keeps int16
    rows = np.bincount(domain, minlength=data.n_domains).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):  # a domain absent from the split: NaN
        keep_prob = [acc.numpy() / rows[:, None] for acc in keep_sum]
    metrics = evaluate_scores(
        label=split_data.label.cpu().float().numpy(),  # int8 in a memory-mapped store
        logit=logits.numpy(),
        domain=domain,
        domain_names=data.domain_names,
        user=split_data.user.cpu().numpy() if split_data.user is not None else None,
        p_true=split_data.p_true.cpu().numpy() if split_data.p_true is not None else None,
        split=split,
    )
    flops = _flops_report(model, domain, rows, flops_parts)
    return Evaluation(metrics, SparsityReport(list(model.positions), keep_prob, rows), flops)
