"""APG (Yan et al., NeurIPS 2022): an MLP whose hidden layers' weights are generated from a
condition z with the low-rank decomposition W(z) = U S(z) V.

Shapes: B batch, V codes of the domain field, K the rank (``rank``), d_z the condition width,
dims = [H_0, H_1, ..., H_L] the generated layers, then a shared head H_L -> 1.

    layer l: U_l [H_{l-1}, K], V_l [K, H_l], b_l [H_l] shared; S_l(z) [K, K] = reshape(G_l z + c_l)
             x_l = relu(((x_{l-1} U_l) S_l(z)) V_l + b_l)
    condition=domain: z = the embedding of the row's domain-field code (d_z = D): one S_l per domain
    condition=sample: z = h^0, the sample's whole embedding (d_z = H_0): one S_l per row

FLOPs (``flops``), ReLU and lookups not counted:
- condition=domain, as served (``served(code)``): S_l(z_d) is generated once per domain when the
  served network is built and folded into V_l (S_l V_l [K, H_l]); that one-off cost
  (2 D K^2 + K^2 per layer and domain) is amortised over all requests and counted as 0 per
  sample. Per sample: matmul 2 K (H_{l-1} + H_l) per layer + 2 H_L (head); bias H_l per
  layer + 1.
- condition=sample: the generator runs per row and counts under ``pruner``:
  2 d_z K^2 + K^2 per layer; matmul 2 (H_{l-1} K + K^2 + K H_l) per layer + 2 H_L; bias as above.
"""

from __future__ import annotations

import torch
from torch import nn

from adasparse_lab.errors import ConfigError
from adasparse_lab.models.base import ModelOutput, MultiDomainModel, constant_flops, reject_pruner
from adasparse_lab.models.blocks import check_choice, check_dims
from adasparse_lab.models.embedding import FieldEmbedding, Fields
from adasparse_lab.models.flops import Flops

CONDITIONS = ("domain", "sample")


class APGLinear(nn.Module):
    """forward(x [B, a], z [N, d_z], index [B] | None) -> [B, b]. Row i uses S(z[index[i]])
    (``index`` None: N = B, row i uses z[i])."""

    def __init__(self, a: int, b: int, rank: int, d_z: int) -> None:
        super().__init__()
        self.rank = rank
        self.u = nn.Parameter(torch.randn(a, rank) / a**0.5)
        self.v = nn.Parameter(torch.randn(rank, b) / rank**0.5)
        self.bias = nn.Parameter(torch.zeros(b))
        # S(z) starts near the identity, so W starts as the shared U V.
        self.generator = nn.Linear(d_z, rank * rank)
        self.generator.keeps_init = True  # models/init.py leaves it near the identity
        nn.init.normal_(self.generator.weight, std=0.01)
        with torch.no_grad():
            self.generator.bias.copy_(torch.eye(rank).flatten())

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """S [N, K, K] from z [N, d_z]."""
        return self.generator(z).view(-1, self.rank, self.rank)

    def forward(self, x: torch.Tensor, z: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        s = self.generate(z)
        if index is not None:
            s = s.index_select(0, index)
        t = torch.bmm((x @ self.u).unsqueeze(1), s).squeeze(1)  # [B, K]
        return torch.addmm(self.bias, t, self.v)


class ServedAPG(nn.Module):
    """Domain-conditioned APG serving one domain: forward(cat, dense) -> logits [B]."""

    def __init__(self, embedding: FieldEmbedding, layers: nn.Sequential) -> None:
        super().__init__()
        self.embedding, self.layers = embedding, layers

    def forward(self, cat: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return self.layers(self.embedding(cat, dense)[1]).squeeze(-1)


class APGModel(MultiDomainModel):
    """Generated low-rank MLP + shared head (module doc)."""

    def __init__(
        self,
        fields: Fields,
        embedding_dim: int = 16,
        hidden_dims: tuple[int, ...] = (256, 128, 64),
        rank: int = 16,
        condition: str = "domain",
        pruner=None,
    ) -> None:
        super().__init__()
        reject_pruner("apg", pruner)
        hidden_dims = check_dims("model.hidden_dims", hidden_dims)
        if rank < 1 or embedding_dim < 1:
            raise ConfigError(
                f"model.rank={rank} and model.embedding_dim={embedding_dim} must be >= 1"
            )
        self.condition = check_choice("model.condition", condition, CONDITIONS)
        self.rank = rank
        self.dims = [self._embed(fields, embedding_dim), *hidden_dims]
        self.d_z = embedding_dim if condition == "domain" else self.dims[0]
        self.layers = nn.ModuleList(
            APGLinear(a, b, rank, self.d_z) for a, b in zip(self.dims[:-1], self.dims[1:])
        )
        self.head = nn.Linear(self.dims[-1], 1)

    def forward(self, cat: torch.Tensor, dense: torch.Tensor) -> ModelOutput:
        _, h = self.embedding(cat, dense)
        if self.condition == "domain":  # S once per code, gathered per row
            z, index = self.code_embeddings(), self.domain_code(cat)
        else:
            z, index = h, None
        for layer in self.layers:
            h = torch.relu(layer(h, z, index))
        return ModelOutput(logits=self.head(h).squeeze(-1), keep=[], pi=[])

    def flops(self, kept: torch.Tensor, code: torch.Tensor) -> Flops:
        k, pairs = self.rank, list(zip(self.dims[:-1], self.dims[1:]))
        per_row = self.condition == "sample"
        matmul = sum(2 * k * (a + b) + (2 * k * k if per_row else 0) for a, b in pairs)
        matmul += 2 * self.dims[-1]
        bias = sum(b for _, b in pairs) + 1
        generator = len(pairs) * (2 * self.d_z * k * k + k * k) if per_row else 0
        return constant_flops(code, matmul, bias, generator)

    @torch.no_grad()
    def served(self, code: int) -> nn.Module:
        """condition=domain: U_l, then S_l(z_code) V_l with b_l (generated once); sample: the
        model itself (the generator runs per row)."""
        if self.condition == "sample":
            return super().served(code)
        z = self.code_embeddings()[code : code + 1]
        modules: list[nn.Module] = []
        for layer in self.layers:
            first = nn.Linear(layer.u.shape[0], self.rank, bias=False)
            second = nn.Linear(self.rank, layer.v.shape[1])
            first.weight.copy_(layer.u.T)
            second.weight.copy_((layer.generate(z)[0] @ layer.v).T)
            second.bias.copy_(layer.bias)
            modules += [first, second, nn.ReLU()]
        return ServedAPG(self.embedding, nn.Sequential(*modules, self.head))
