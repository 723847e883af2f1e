"""Physically smaller per-domain networks for every static structure: the ``domain`` pruner
input and the pruning rivals (magnitude, domain_magnitude, random).

With masks that depend on the domain alone, each domain's pruned rows and columns can be
sliced away and the surviving weights pi folded into the next layer, giving a plain MLP that
predicts exactly what the masked model predicts for that domain, at the analytic FLOPs.

``model`` below is a masked MLP tower (models/adasparse.py's AdaSparseModel and the models
built on it): ``layers``, ``head``, ``widths``, ``embedding`` and ``static_pi(code)``.
"""

from __future__ import annotations

import torch
from torch import nn


class CompactTower(nn.Module):
    """forward(h0 [B, H_0]) -> logits [B]: gathers the kept inputs (only where some input is
    pruned: the gather is a copy of the batch), then a plain MLP."""

    def __init__(self, input_index: torch.Tensor | None, layers: list[nn.Linear]) -> None:
        super().__init__()
        self.register_buffer("input_index", input_index)
        self.layers = nn.ModuleList(layers)

    def forward(self, h0: torch.Tensor) -> torch.Tensor:
        x = h0 if self.input_index is None else h0.index_select(1, self.input_index)
        for layer in self.layers[:-1]:
            x = torch.relu_(layer(x))  # in place: one buffer fewer per layer
        return self.layers[-1](x).squeeze(-1)

    def widths(self) -> list[int]:
        first = self.layers[0].in_features
        return [first, *(layer.out_features for layer in self.layers)]


class CompactModel(nn.Module):
    """Serving form of one domain: the shared embedding plus that domain's CompactTower."""

    def __init__(self, embedding: nn.Module, tower: CompactTower) -> None:
        super().__init__()
        self.embedding, self.tower = embedding, tower

    def forward(self, cat: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return self.tower(self.embedding(cat, dense)[1])


def _sliced(
    layer: nn.Linear, rows: torch.Tensor, cols: torch.Tensor, col_scale: torch.Tensor
) -> nn.Linear:
    out = nn.Linear(len(cols), len(rows), device=layer.weight.device, dtype=layer.weight.dtype)
    out.weight.copy_(layer.weight[rows][:, cols] * col_scale)
    out.bias.copy_(layer.bias[rows])
    return out


@torch.no_grad()
def compact_tower(model: nn.Module, domain_code: int) -> CompactTower:
    """Slice the tower for the domain whose domain-field code is ``domain_code``."""
    pis = model.static_pi(domain_code)  # raises ConfigError for sample-dependent masks
    keep = {pos: torch.nonzero(pi != 0).flatten() for pos, pi in pis.items()}
    scale = {pos: pis[pos][keep[pos]] for pos in pis}
    device = model.head.weight.device

    def kept(pos: int) -> tuple[torch.Tensor, torch.Tensor]:
        if pos in keep:
            return keep[pos], scale[pos]
        n = model.widths[pos]
        return torch.arange(n, device=device), torch.ones(n, device=device)

    layers = []
    for pos, layer in enumerate([*model.layers, model.head], start=1):
        cols, col_scale = kept(pos - 1)
        rows = kept(pos)[0] if pos < len(model.widths) else torch.arange(1, device=device)
        layers.append(_sliced(layer, rows, cols, col_scale))
    inputs = keep.get(0)
    return CompactTower(
        None if inputs is None or len(inputs) == model.widths[0] else inputs, layers
    )


def compact_model(model: nn.Module, domain_code: int) -> CompactModel:
    return CompactModel(model.embedding, compact_tower(model, domain_code)).eval()
