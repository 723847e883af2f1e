"""MMoE (Ma et al., KDD 2018) with domains as tasks, and PLE (Tang et al., RecSys 2020) in its
one-level form (CGC): experts over the embedding, mixed by a per-domain softmax gate, then
the domain's tower. Every expert a domain's gate reads is computed and counted.

Shapes: B batch, H_0 embedding output width, E experts a domain uses, d = expert_dims[-1].
h^0 [B, H_0] -> experts [B, E, d]; gate softmax(W_k h^0) [B, E]; mixture [B, d] (a batched
matmul [B, 1, E] x [B, E, d]); tower_k -> logits [B]. V codes of the domain field.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adasparse_lab.models.base import ModelOutput
from adasparse_lab.models.blocks import MLP, Tower, check_count, mlp_flops, per_domain
from adasparse_lab.models.embedding import Fields
from adasparse_lab.models.towers import DomainTowersModel


class GatedExperts(nn.Module):
    """One domain's network on h^0 [B, H_0]: its experts (shared ones first), gate and tower."""

    def __init__(self, experts: list[nn.Module], gate: nn.Linear, tower: Tower) -> None:
        super().__init__()
        self.experts, self.gate, self.tower = nn.ModuleList(experts), gate, tower

    def forward(self, h0: torch.Tensor) -> torch.Tensor:
        return self.mix(self.gate(h0), torch.stack([e(h0) for e in self.experts], 1))

    def mix(self, gate: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """logits [B] from the gate's logits [B, E] and the experts' outputs ``out`` [B, E, d]."""
        g = torch.softmax(gate, dim=-1).unsqueeze(1)  # [B, 1, E]
        return self.tower(torch.bmm(g, out).squeeze(1))


def gated_flops(h0: int, n_experts: int, expert: tuple[int, ...], tower: tuple[int, ...]):
    """(matmul, bias) per sample of GatedExperts: experts, gate, mixture, tower."""
    me, be = mlp_flops([h0, *expert])
    mt, bt = mlp_flops([expert[-1], *tower, 1])
    matmul = n_experts * me + 2 * h0 * n_experts + 2 * n_experts * expert[-1] + mt
    return matmul, n_experts * be + n_experts + bt


class _ExpertModel(DomainTowersModel):
    """Common part: gates and towers, per-code routing, FLOPs and the served form. A subclass
    calls this ``__init__`` (checks and the embedding), builds its experts, then
    ``_gates_and_towers``."""

    name = "mmoe"

    def __init__(
        self,
        fields: Fields,
        embedding_dim: int,
        expert_dims: tuple[int, ...],
        tower_dims: tuple[int, ...],
        pruner,
    ) -> None:
        super().__init__()
        shared = ("expert_dims", expert_dims)
        self.expert_dims = self._setup(fields, embedding_dim, pruner, shared, tower_dims)

    def _expert(self, dropout: float) -> MLP:
        return MLP([self.embedding.output_dim(), *self.expert_dims], dropout=dropout)

    def _gates_and_towers(self, dropout: float) -> None:
        """Per code: a gate over the experts it uses, then a tower (built last)."""
        h0, n = self.embedding.output_dim(), self.experts_used()
        self.gates = nn.ModuleList(nn.Linear(h0, n) for _ in range(self.n_codes))
        self._towers(self.expert_dims[-1], dropout)

    def shared_experts(self) -> list[nn.Module]:
        raise NotImplementedError

    def specific_experts(self, code: int) -> list[nn.Module]:
        """Domain ``code``'s own experts (none in MMoE)."""
        return []

    def experts_used(self) -> int:
        raise NotImplementedError

    def domain_net(self, code: int) -> GatedExperts:
        experts = [*self.shared_experts(), *self.specific_experts(code)]
        return GatedExperts(experts, self.gates[code], self.towers[code])

    def own_modules(self, code: int) -> list[nn.Module]:
        return [*self.specific_experts(code), self.gates[code], self.towers[code]]

    def forward(self, cat: torch.Tensor, dense: torch.Tensor) -> ModelOutput:
        """Each row through its domain's network (``domain_net``, what is served), with the
        shared experts run once on the whole batch instead of once per domain's rows and every
        domain's gate in one matmul: the same values, a few large matmuls instead of many
        small ones (training pays V x the gates' few FLOPs; ``flops`` and the served network
        count a domain's own). x [B, H_0 + E + S*d]: h^0, the row's gate logits and the S
        shared experts' outputs of width d, routed together."""
        h0 = self.embedding(cat, dense)[1]
        code = self.domain_code(cat)
        shared = [e(h0) for e in self.shared_experts()]  # S x [B, d]
        # Every gate in one matmul, each row keeping its own domain's: [B, V*E] -> [B, E]
        n, width = self.experts_used(), h0.shape[1]
        weight = torch.cat([g.weight for g in self.gates])  # [V*E, H_0]
        bias = torch.cat([g.bias for g in self.gates])
        gates = F.linear(h0, weight, bias).view(len(h0), -1, n)
        gate = gates.gather(1, code.view(-1, 1, 1).expand(-1, 1, n)).squeeze(1)

        def one(c: int, x: torch.Tensor) -> torch.Tensor:
            h, g = x[:, :width], x[:, width : width + n]
            done = x[:, width + n :].unflatten(1, (len(shared), -1))  # [b, S, d]
            own = [e(h).unsqueeze(1) for e in self.specific_experts(c)]
            return self.domain_net(c).mix(g, torch.cat([done, *own], 1))

        x = torch.cat([h0, gate, *shared], dim=1)
        logits = per_domain(x, code, self.n_codes, one)
        return ModelOutput(logits=logits, keep=[], pi=[])

    def net_flops(self) -> tuple[float, float]:
        h0 = self.embedding.output_dim()
        return gated_flops(h0, self.experts_used(), self.expert_dims, self.tower_dims)


class MMoEModel(_ExpertModel):
    """``n_experts`` shared experts; each domain has its own gate and tower."""

    name = "mmoe"

    def __init__(
        self,
        fields: Fields,
        embedding_dim: int = 16,
        n_experts: int = 4,
        expert_dims: tuple[int, ...] = (256, 128),
        tower_dims: tuple[int, ...] = (64,),
        dropout: float = 0.0,
        pruner=None,
    ) -> None:
        super().__init__(fields, embedding_dim, expert_dims, tower_dims, pruner)
        self.n_experts = check_count("model.n_experts", n_experts)
        self.experts = nn.ModuleList(self._expert(dropout) for _ in range(self.n_experts))
        self._gates_and_towers(dropout)

    def shared_experts(self) -> list[nn.Module]:
        return list(self.experts)

    def experts_used(self) -> int:
        return self.n_experts


class PLEModel(_ExpertModel):
    """PLE with one extraction level (CGC): ``n_shared`` shared experts and ``n_specific``
    experts per domain; a domain's gate mixes its own and the shared experts."""

    name = "ple"

    def __init__(
        self,
        fields: Fields,
        embedding_dim: int = 16,
        n_shared: int = 2,
        n_specific: int = 1,
        expert_dims: tuple[int, ...] = (256, 128),
        tower_dims: tuple[int, ...] = (64,),
        dropout: float = 0.0,
        pruner=None,
    ) -> None:
        super().__init__(fields, embedding_dim, expert_dims, tower_dims, pruner)
        self.n_shared = check_count("model.n_shared", n_shared)
        self.n_specific = check_count("model.n_specific", n_specific)
        self.shared = nn.ModuleList(self._expert(dropout) for _ in range(self.n_shared))
        self.specific = nn.ModuleList(
            nn.ModuleList(self._expert(dropout) for _ in range(self.n_specific))
            for _ in range(self.n_codes)
        )
        self._gates_and_towers(dropout)

    def shared_experts(self) -> list[nn.Module]:
        return list(self.shared)

    def specific_experts(self, code: int) -> list[nn.Module]:
        return list(self.specific[code])

    def experts_used(self) -> int:
        return self.n_shared + self.n_specific
