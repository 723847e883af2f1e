"""What the models with one tower per domain share (shared-bottom, MMoE, PLE): their checks,
the embedding, the towers, and the parameters each domain owns.

Shapes: B batch, H_0 embedding output width, V codes of the domain field (one tower each),
H_s the width a tower reads (the last width of the shared part or of the experts).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from adasparse_lab.models.base import (
    MultiDomainModel,
    PrivateParams,
    constant_flops,
    reject_pruner,
)
from adasparse_lab.models.blocks import Route, Tower, check_dims
from adasparse_lab.models.embedding import Fields
from adasparse_lab.models.flops import Flops


class DomainTowersModel(MultiDomainModel):
    """A shared part over h^0 [B, H_0], then tower_k [B, H_s] -> logits [B] for domain k.

    A subclass builds, in this order (the order in which modules are built decides the seeded
    initial weights): ``_setup`` (checks, then the embedding), its own modules, ``_towers``;
    it gives ``domain_net`` and ``net_flops``, from which ``served`` and ``flops`` follow.
    """

    name: str  # the model=<name> choice, for the error of a pruner it cannot take

    def _setup(
        self,
        fields: Fields,
        embedding_dim: int,
        pruner,
        shared: tuple[str, Sequence[int]],
        tower_dims: Sequence[int],
    ) -> tuple[int, ...]:
        """Check that there is no pruner and the dims (``shared``: the key under model. and
        the widths of the shared part), then build the embedding; returns the checked widths."""
        reject_pruner(self.name, pruner)
        key, dims = shared
        dims = check_dims(f"model.{key}", dims)
        self.tower_dims = check_dims("model.tower_dims", tower_dims, allow_empty=True)
        self._embed(fields, embedding_dim)
        return dims

    def _towers(self, in_dim: int, dropout: float) -> None:
        """``towers``: one Tower [H_s, *tower_dims, 1] per code of the domain field."""
        self.towers = nn.ModuleList(
            Tower(in_dim, self.tower_dims, dropout) for _ in range(self.n_codes)
        )

    def domain_net(self, code: int) -> nn.Module:
        """Domain ``code``'s network on h^0 [B, H_0] -> logits [B]: the shared part and its
        tower, holding only what that domain reads."""
        raise NotImplementedError

    def net_flops(self) -> tuple[float, float]:
        """(matmul, bias) FLOPs per sample of ``domain_net``, the same for every domain."""
        raise NotImplementedError

    def flops(self, kept: torch.Tensor, code: torch.Tensor) -> Flops:
        return constant_flops(code, *self.net_flops())

    def served(self, code: int) -> nn.Module:
        return Route(self.embedding, self.domain_net(code))

    def own_modules(self, code: int) -> list[nn.Module]:
        """The modules only domain ``code`` reads, in the order they were built."""
        return [self.towers[code]]

    def private_parameters(self, code: int) -> PrivateParams:
        mine = [p for m in self.own_modules(code) for p in m.parameters()]
        return [*super().private_parameters(code), *((p, None) for p in mine)]
