"""DCN-V2 (Wang et al., WWW 2021) as an AdaSparse backbone: a full-rank cross network and the
MLP tower of ``AdaSparseModel``, whose masks (``pruner=``) prune the deep part exactly as on
model=mlp (compacted per domain where the structure is static).

Shapes: B batch, H_0 embedding output width, L_c cross layers.
cross: x_0 = h^0 [B, H_0]; x_{l+1} = x_0 * (W_l x_l + b_l) + x_l, W_l [H_0, H_0].
stacked:  logits = deep(x_{L_c})                       (deep tower reads the cross output)
parallel: logits = deep(h^0) + w_c . x_{L_c}           (a linear head on [deep ; cross])
FLOPs per cross layer: 2 H_0^2 (matmul) + H_0 (bias) + 2 H_0 (the product and the sum).
"""

from __future__ import annotations

import torch
from torch import nn

from adasparse_lab.errors import ConfigError
from adasparse_lab.models.adasparse import AdaSparseModel
from adasparse_lab.models.base import Logits, ModelOutput
from adasparse_lab.models.blocks import check_choice
from adasparse_lab.models.compact import compact_tower
from adasparse_lab.models.embedding import Fields
from adasparse_lab.models.flops import Flops

STRUCTURES = ("stacked", "parallel")


class CrossNet(nn.Module):
    """x_0 [B, H_0] -> x_{L_c} [B, H_0]."""

    def __init__(self, width: int, n_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(n_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


class DCNv2Served(nn.Module):
    """One domain's served DCN-V2: cross network and the (compacted) deep tower."""

    def __init__(self, embedding, cross: CrossNet, tower: nn.Module, cross_head) -> None:
        super().__init__()
        self.embedding, self.cross, self.tower, self.cross_head = (
            embedding,
            cross,
            tower,
            cross_head,
        )

    def forward(self, cat: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        h0 = self.embedding(cat, dense)[1]
        x = self.cross(h0)
        if self.cross_head is None:
            return self.tower(x)
        return self.tower(h0) + self.cross_head(x).squeeze(-1)


class DCNv2Model(AdaSparseModel):
    """The AdaSparse MLP tower with a cross network before it (stacked) or beside it."""

    def __init__(
        self,
        fields: Fields,
        embedding_dim: int = 16,
        hidden_dims: tuple[int, ...] = (256, 128, 64),
        cross_layers: int = 3,
        structure: str = "stacked",
        dropout: float = 0.0,
        pruner=None,
        kernel: str = "fast",
    ) -> None:
        super().__init__(fields, embedding_dim, hidden_dims, dropout, pruner, kernel)
        self.structure = check_choice("model.structure", structure, STRUCTURES)
        if cross_layers < 1:
            raise ConfigError(f"model.cross_layers={cross_layers} must be >= 1")
        h0 = self.widths[0]
        self.cross = CrossNet(h0, cross_layers)
        self.cross_head = nn.Linear(h0, 1, bias=False) if structure == "parallel" else None

    def forward(self, cat: torch.Tensor, dense: torch.Tensor) -> ModelOutput:
        e_d, h0 = self.embedding(cat, dense)
        x = self.cross(h0)
        out = self._tower(cat, e_d, x if self.cross_head is None else h0)
        if self.cross_head is not None:
            out.logits = out.logits + self.cross_head(x).squeeze(-1)
        return out

    def cross_flops(self) -> tuple[float, float]:
        """(matmul, bias and elementwise) FLOPs per sample of the cross network and its head."""
        h0, n = self.widths[0], len(self.cross.layers)
        matmul, other = n * 2 * h0 * h0, n * 3 * h0
        if self.cross_head is not None:
            matmul, other = matmul + 2 * h0, other + 1  # the head and the sum of the two logits
        return float(matmul), float(other)

    def flops(self, kept: torch.Tensor, code: torch.Tensor) -> Flops:
        deep = super().flops(kept, code)
        matmul, other = self.cross_flops()
        return Flops(deep.matmul + matmul, deep.bias + other, deep.pruner)

    def served(self, code: int) -> nn.Module:
        """Cross network plus the compacted deep tower where the structure is static."""
        if not self.static_structure:
            return Logits(self)  # masks vary per sample: the masked model serves
        return DCNv2Served(
            self.embedding, self.cross, compact_tower(self, code), self.cross_head
        ).eval()
