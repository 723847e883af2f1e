"""Shared-bottom multi-domain model (Caruana 1997; domains play the role of tasks): one shared
MLP over the embedding, then one tower per domain.

Shapes: B batch, H_0 embedding output width, V codes of the domain field (one tower each).
forward(cat [B, F], dense [B, Dn]) -> ModelOutput(logits [B]): h^0 [B, H_0] -> bottom
[B, bottom_dims[-1]] -> the row's domain tower -> [B].
"""

from __future__ import annotations

import torch
from torch import nn

from adasparse_lab.models.base import ModelOutput
from adasparse_lab.models.blocks import MLP, mlp_flops, per_domain
from adasparse_lab.models.embedding import Fields
from adasparse_lab.models.towers import DomainTowersModel


class SharedBottomModel(DomainTowersModel):
    name = "shared_bottom"

    def __init__(
        self,
        fields: Fields,
        embedding_dim: int = 16,
        bottom_dims: tuple[int, ...] = (256, 128),
        tower_dims: tuple[int, ...] = (64,),
        dropout: float = 0.0,
        pruner=None,
    ) -> None:
        super().__init__()
        shared = ("bottom_dims", bottom_dims)
        bottom = self._setup(fields, embedding_dim, pruner, shared, tower_dims)
        h0 = self.embedding.output_dim()
        self.bottom = MLP([h0, *bottom], dropout=dropout)
        self._towers(bottom[-1], dropout)
        self.dims = (h0, bottom, self.tower_dims)

    def forward(self, cat: torch.Tensor, dense: torch.Tensor) -> ModelOutput:
        h = self.bottom(self.embedding(cat, dense)[1])
        logits = per_domain(h, self.domain_code(cat), self.n_codes, lambda c, x: self.towers[c](x))
        return ModelOutput(logits=logits, keep=[], pi=[])

    def domain_net(self, code: int) -> nn.Module:
        return nn.Sequential(self.bottom, self.towers[code])

    def net_flops(self) -> tuple[float, float]:
        h0, bottom, tower = self.dims
        mb, bb = mlp_flops([h0, *bottom])
        mt, bt = mlp_flops([bottom[-1], *tower, 1])
        return mb + mt, bb + bt
