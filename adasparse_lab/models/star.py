"""STAR (Sheng et al., CIKM 2021): one star-topology network serves every domain.

Shapes: B batch, V codes of the domain field (OOV code 0 included), d a row's domain code,
H_0 the embedding output width, H_l hidden widths, A_l auxiliary widths.

    h^0 [B, H_0] = [e_d ; e_a]
    z [B, H_0]   = partitioned norm: (gamma * gamma_d) (h^0 - mu_d) / sqrt(var_d + eps) + (beta + beta_d)
                   training: each domain's batch statistics (running ones for a domain with < 2
                   rows in the batch); eval: each domain's running statistics
    star FCN     : layer l of a row of domain d uses W_l * W_{d,l} (element-wise) and b_l + b_{d,l};
                   [H_0, H_1, ..., H_L, 1], ReLU between layers
    auxiliary    : MLP [H_0, *A, 1] on h^0 (which starts with the domain indicator's embedding)
    logit [B]    = star logit + auxiliary logit

Serving domain d (``served``): eval-mode partitioned norm is an affine map per domain and
W_l * W_{d,l} one matrix, so both fold into plain Linears: domain d costs one MLP
[H_0, *H, 1] plus the auxiliary MLP. FLOPs (``flops``): matmul 2ab per Linear a -> b of both
MLPs; bias: b per Linear plus 1 for adding the two logits; the folded norm costs nothing;
ReLU and lookups are not counted.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from adasparse_lab.errors import ConfigError
from adasparse_lab.models.base import (
    ModelOutput,
    MultiDomainModel,
    PrivateParams,
    constant_flops,
    reject_pruner,
)
from adasparse_lab.models.blocks import check_dims
from adasparse_lab.models.embedding import FieldEmbedding, Fields
from adasparse_lab.models.flops import Flops


class PartitionedNorm(nn.Module):
    """forward(x [B, H], code [B]) -> [B, H]; shared gamma, beta [H] and per-domain gamma_d,
    beta_d [V, H] (initialised to 1 and 0), per-domain running mean and variance [V, H]."""

    def __init__(self, width: int, n_codes: int, momentum: float, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))
        self.domain_weight = nn.Parameter(torch.ones(n_codes, width))
        self.domain_bias = nn.Parameter(torch.zeros(n_codes, width))
        self.register_buffer("running_mean", torch.zeros(n_codes, width))
        self.register_buffer("running_var", torch.ones(n_codes, width))
        self.momentum, self.eps = momentum, eps

    def affine(self, mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per code (scale [V, H], shift [V, H]) so that norm(x) = x * scale + shift."""
        scale = self.weight * self.domain_weight / torch.sqrt(var + self.eps)
        return scale, self.bias + self.domain_bias - mean * scale

    def _batch_stats(self, x: torch.Tensor, code: torch.Tensor):
        n_codes, width = self.running_mean.shape
        n = torch.bincount(code, minlength=n_codes).to(x.dtype)[:, None]  # [V, 1]
        mean = x.new_zeros(n_codes, width).index_add(0, code, x) / n.clamp(min=1)
        sq = x.new_zeros(n_codes, width).index_add(0, code, (x - mean[code]) ** 2)
        var = sq / n.clamp(min=1)
        seen = n[:, 0] >= 2
        with torch.no_grad():
            m = self.momentum
            unbiased = sq / (n - 1).clamp(min=1)
            self.running_mean[seen] = (1 - m) * self.running_mean[seen] + m * mean[seen]
            self.running_var[seen] = (1 - m) * self.running_var[seen] + m * unbiased[seen]
        keep = seen[:, None]
        return torch.where(keep, mean, self.running_mean), torch.where(keep, var, self.running_var)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        if self.training:
            mean, var = self._batch_stats(x, code)
        else:
            mean, var = self.running_mean, self.running_var
        scale, shift = self.affine(mean, var)
        return x * scale[code] + shift[code]


class StarLinear(nn.Module):
    """forward(x [B, a], code [B]) -> [B, b]: a row of domain d computes x (W * W_d)^T + b + b_d
    with shared W [b, a], b [b] and per-domain W_d [V, b, a] (initialised to 1), b_d [V, b]."""

    def __init__(self, a: int, b: int, n_codes: int) -> None:
        super().__init__()
        self.shared = nn.Linear(a, b)
        self.domain_weight = nn.Parameter(torch.ones(n_codes, b, a))
        self.domain_bias = nn.Parameter(torch.zeros(n_codes, b))

    def folded(self, code: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Domain ``code``'s weight [b, a] and bias [b]."""
        return (
            self.shared.weight * self.domain_weight[code],
            self.shared.bias + self.domain_bias[code],
        )

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(x.shape[0], self.shared.out_features)
        for d in torch.unique(code).tolist():  # one matmul per domain present in the batch
            rows = torch.nonzero(code == d).squeeze(1)
            out = out.index_copy(0, rows, F.linear(x[rows], *self.folded(d)))
        return out


def _mlp(dims: list[int]) -> nn.Sequential:
    """Linears dims[0] -> ... -> dims[-1] with ReLU between them."""
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class ServedStar(nn.Module):
    """The network serving one domain: forward(cat [B, F], dense [B, Dn]) -> logits [B]."""

    def __init__(self, embedding: FieldEmbedding, main: nn.Sequential, aux: nn.Sequential):
        super().__init__()
        self.embedding, self.main, self.aux = embedding, main, aux

    def forward(self, cat: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        _, h = self.embedding(cat, dense)
        return (self.main(h) + self.aux(h)).squeeze(-1)


class StarModel(MultiDomainModel):
    """STAR: partitioned norm -> star-topology FCN, plus an auxiliary network (module doc)."""

    def __init__(
        self,
        fields: Fields,
        embedding_dim: int = 16,
        hidden_dims: tuple[int, ...] = (256, 128, 64),
        aux_hidden_dims: tuple[int, ...] = (64,),
        norm_momentum: float = 0.1,
        norm_eps: float = 1e-5,
        pruner=None,
    ) -> None:
        super().__init__()
        reject_pruner("star", pruner)
        hidden_dims = check_dims("model.hidden_dims", hidden_dims)
        aux_hidden_dims = check_dims("model.aux_hidden_dims", aux_hidden_dims, allow_empty=True)
        if embedding_dim < 1:
            raise ConfigError(f"model.embedding_dim={embedding_dim} must be >= 1")
        if not 0 < norm_momentum <= 1 or norm_eps <= 0:
            raise ConfigError(
                f"model.norm_momentum={norm_momentum} must be in (0, 1] and "
                f"model.norm_eps={norm_eps} positive"
            )
        h0 = self._embed(fields, embedding_dim)
        n_codes = self.n_codes
        self.main_dims = [h0, *hidden_dims, 1]
        self.aux_dims = [h0, *aux_hidden_dims, 1]
        self.norm = PartitionedNorm(h0, n_codes, norm_momentum, norm_eps)
        self.layers = nn.ModuleList(
            StarLinear(a, b, n_codes) for a, b in zip(self.main_dims[:-1], self.main_dims[1:])
        )
        self.aux = _mlp(self.aux_dims)

    def forward(self, cat: torch.Tensor, dense: torch.Tensor) -> ModelOutput:
        _, h0 = self.embedding(cat, dense)
        code = self.domain_code(cat)
        h = self.norm(h0, code)
        for i, layer in enumerate(self.layers):
            h = layer(h, code)
            if i < len(self.layers) - 1:
                h = torch.relu(h)
        return ModelOutput(logits=(h + self.aux(h0)).squeeze(-1), keep=[], pi=[])

    def flops(self, kept: torch.Tensor, code: torch.Tensor) -> Flops:
        pairs = [*zip(self.main_dims[:-1], self.main_dims[1:])]
        pairs += zip(self.aux_dims[:-1], self.aux_dims[1:])
        matmul = sum(2 * a * b for a, b in pairs)
        return constant_flops(code, matmul, sum(b for _, b in pairs) + 1)

    @torch.no_grad()
    def served(self, code: int) -> nn.Module:
        """Domain ``code``'s eval-mode network with W * W_d, b + b_d and the partitioned norm
        folded into plain Linears (norm(x) = x * s + t, so W (x * s + t) + b =
        (W * s) x + (W t + b))."""
        scale, shift = self.norm.affine(self.norm.running_mean, self.norm.running_var)
        main = _mlp(self.main_dims)
        linears = [m for m in main if isinstance(m, nn.Linear)]
        for i, (linear, star) in enumerate(zip(linears, self.layers)):
            weight, bias = star.folded(code)
            if i == 0:
                weight, bias = weight * scale[code], bias + weight @ shift[code]
            linear.weight.copy_(weight)
            linear.bias.copy_(bias)
        return ServedStar(self.embedding, main, self.aux)

    def private_parameters(self, code: int) -> PrivateParams:
        own = [(self.norm.domain_weight, code), (self.norm.domain_bias, code)]
        for layer in self.layers:
            own += [(layer.domain_weight, code), (layer.domain_bias, code)]
        return [*super().private_parameters(code), *own]
