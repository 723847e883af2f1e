"""Evaluate a model on one split: metrics, per-domain sparsity and per-domain FLOPs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from adasparse_lab.data.batches import iterate, split_to_device
from adasparse_lab.data.prepare import PreparedData
from adasparse_lab.metrics import EvalMetrics, evaluate_scores, safe_name
from adasparse_lab.models.adasparse import AdaSparseModel
from adasparse_lab.models.flops import dense_flops, tower_flops


@dataclass
class SparsityReport:
    """positions: masked positions (0 = input embedding, l = hidden layer l).
    keep_prob[j]: [K, H] mean keep indicator per domain and neuron at position j.
    ratio: [K, P] fraction of zero entries per domain and position."""

    positions: list[int]
    keep_prob: list[np.ndarray]
    ratio: np.ndarray


@dataclass
class FlopsReport:
    dense: float  # the same tower without pruners
    per_domain: np.ndarray  # [K] mean effective FLOPs per sample
    overall: float  # mean over all rows of the split
    breakdown: dict[str, np.ndarray]  # matmul / bias / pruner, [K] each

    @property
    def ratio(self) -> float:
        return self.overall / self.dense


@dataclass
class Evaluation:
    metrics: EvalMetrics
    sparsity: SparsityReport
    flops: FlopsReport

    def as_dict(self, prefix: str, domain_names: list[str]) -> dict[str, float]:
        out = self.metrics.as_dict(prefix)
        for k, name in enumerate(map(safe_name, domain_names)):
            for j, pos in enumerate(self.sparsity.positions):
                out[f"sparsity/{name}/l{pos}"] = float(self.sparsity.ratio[k, j])
            out[f"flops/{name}"] = float(self.flops.per_domain[k])
            out[f"flops_ratio/{name}"] = float(self.flops.per_domain[k] / self.flops.dense)
        if self.sparsity.positions:
            out["sparsity/mean"] = float(np.nanmean(self.sparsity.ratio))
            for j, pos in enumerate(self.sparsity.positions):
                out[f"sparsity/l{pos}"] = float(np.nanmean(self.sparsity.ratio[:, j]))
        out["flops/dense"] = self.flops.dense
        out["flops/mean"] = self.flops.overall
        out["flops/ratio"] = self.flops.ratio
        return out


@torch.no_grad()
def evaluate(
    model: AdaSparseModel,
    data: PreparedData,
    split: str,
    batch_size: int = 8192,
    device: torch.device | None = None,
) -> Evaluation:
    device = device or next(model.parameters()).device
    tensors = split_to_device(data.splits[split], device)
    was_training = model.training
    model.eval()
    K = data.n_domains
    shape = model.tower_shape()
    keep_sum = [torch.zeros(K, model.widths[p], dtype=torch.float64) for p in model.positions]
    logits, flops_parts = [], {"matmul": [], "bias": [], "pruner": []}
    for batch in iterate(tensors, batch_size):
        out = model(batch.cat, batch.dense)
        logits.append(out.logits.float().cpu())
        dom = batch.domain.cpu()
        kept = (
            torch.stack([k.sum(1) for k in out.keep], 1).cpu()
            if out.keep
            else torch.zeros(len(dom), 0)
        )
        fl = tower_flops(shape, kept)
        for name in flops_parts:
            flops_parts[name].append(getattr(fl, name).expand(len(dom)))
        for acc, k in zip(keep_sum, out.keep):
            acc.index_add_(0, dom, k.double().cpu())
    model.train(was_training)

    split_data = data.splits[split]
    domain = split_data.domain.numpy()
    rows = np.bincount(domain, minlength=K).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):  # a domain absent from the split: NaN
        keep_prob = [acc.numpy() / rows[:, None] for acc in keep_sum]
    ratio = np.stack([1.0 - kp.mean(1) for kp in keep_prob], 1) if keep_prob else np.zeros((K, 0))
    breakdown = {}
    for name, parts in flops_parts.items():
        per_row = torch.cat(parts).numpy()
        breakdown[name] = np.bincount(domain, weights=per_row, minlength=K) / np.maximum(rows, 1.0)
    total_rows = sum(torch.cat(p).numpy() for p in flops_parts.values())
    metrics = evaluate_scores(
        label=split_data.label.numpy(),
        logit=torch.cat(logits).numpy(),
        domain=domain,
        domain_names=data.domain_names,
        user=split_data.user.numpy() if split_data.user is not None else None,
        p_true=split_data.p_true.numpy() if split_data.p_true is not None else None,
        split=split,
    )
    flops = FlopsReport(
        dense=dense_flops(model.widths),
        per_domain=sum(breakdown.values()),
        overall=float(np.mean(total_rows)),
        breakdown=breakdown,
    )
    return Evaluation(metrics, SparsityReport(list(model.positions), keep_prob, ratio), flops)
