"""PEPNet (Chang et al., KDD 2023), single task: EPNet personalises the embedding per domain,
PPNet personalises every DNN layer from user/item/domain context.

Shapes: B batch, D embedding dim, H_0 the embedding output width, d_e = |e_d| (domain-aware
fields), d_c = |e_ctx| (context fields: the domain-aware fields plus ``context_fields``),
G gate hidden width, dims = [H_0, H_1, ..., H_L, 1] the DNN, sg = stop-gradient.

    Gate NU(x)   = gamma * sigmoid(W_2 relu(W_1 x + b_1) + b_2),  gamma = 2 (values in (0, 2))
    EPNet        : O_ep [B, H_0] = Gate NU([e_d ; sg(h^0)]) * h^0
    PPNet        : prior [B, d_c + H_0] = [e_ctx ; sg(O_ep)];
                   x_0 = O_ep, x_{l+1} = relu(W_l (Gate NU_l(prior) * x_l) + b_l): a gate on the
                   input of every Linear of the DNN (the last one gives the logit, no ReLU)

``context_fields`` are positions among the categorical fields (the model sees no names); the
default [1, 2] is (user id, item id) in the synthetic, douban and taobao schemas.

FLOPs (``flops``, served = the model itself: every gate runs per sample): matmul 2ab per
Linear a -> b (the DNN and both Linears of every gate); bias: b per Linear plus one product
per gated value (Gate NU(.) * x: H_0 for EPNet, dims[l] for PPNet gate l); sigmoid, ReLU and
the constant gamma (foldable into the next weights) are not counted, nor lookups.
"""

from __future__ import annotations

import torch
from torch import nn

from adasparse_lab.errors import ConfigError
from adasparse_lab.models.base import ModelOutput, MultiDomainModel, constant_flops, reject_pruner
from adasparse_lab.models.blocks import check_dims
from adasparse_lab.models.embedding import Fields
from adasparse_lab.models.flops import Flops


class GateNU(nn.Module):
    """forward(x [B, a]) -> [B, b] in (0, gamma): gamma * sigmoid(W_2 relu(W_1 x + b_1) + b_2)."""

    def __init__(self, a: int, hidden: int, b: int, gamma: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(a, hidden), nn.ReLU(), nn.Linear(hidden, b))
        self.gamma = gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gamma * torch.sigmoid(self.net(x))


class PEPNetModel(MultiDomainModel):
    """EPNet on the embedding, PPNet gates on a DNN (module doc)."""

    def __init__(
        self,
        fields: Fields,
        embedding_dim: int = 16,
        hidden_dims: tuple[int, ...] = (256, 128, 64),
        gate_hidden: int = 64,
        gate_scale: float = 2.0,
        context_fields: tuple[int, ...] = (1, 2),
        pruner=None,
    ) -> None:
        super().__init__()
        reject_pruner("pepnet", pruner)
        hidden_dims = check_dims("model.hidden_dims", hidden_dims)
        context_fields = list(context_fields)
        if gate_hidden < 1 or gate_scale <= 0 or embedding_dim < 1:
            raise ConfigError(
                f"model.gate_hidden={gate_hidden}, model.gate_scale={gate_scale} and "
                f"model.embedding_dim={embedding_dim} must be positive"
            )
        n_fields = len(fields.vocab_sizes)
        bad = [i for i in context_fields if not 0 <= i < n_fields]
        if bad:
            raise ConfigError(
                f"model.context_fields={context_fields}: {bad} outside the categorical field "
                f"positions 0..{n_fields - 1}"
            )
        h0 = self._embed(fields, embedding_dim)
        order = self.embedding.order.tolist()
        ctx = list(dict.fromkeys([*fields.domain_fields, *context_fields]))
        slots = [order.index(i) * embedding_dim + j for i in ctx for j in range(embedding_dim)]
        self.register_buffer("ctx_index", torch.tensor(slots), persistent=False)
        d_e, d_c = self.embedding.domain_dim, len(slots)
        self.dims = [h0, *hidden_dims, 1]
        self.gate_hidden = gate_hidden
        self.epnet = GateNU(d_e + h0, gate_hidden, h0, gate_scale)
        self.ppnet = nn.ModuleList(
            GateNU(d_c + h0, gate_hidden, a, gate_scale) for a in self.dims[:-1]
        )
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(self.dims[:-1], self.dims[1:]))
        self.gate_shapes = [(d_e + h0, h0)] + [(d_c + h0, a) for a in self.dims[:-1]]

    def forward(self, cat: torch.Tensor, dense: torch.Tensor) -> ModelOutput:
        e_d, h0 = self.embedding(cat, dense)
        o_ep = self.epnet(torch.cat([e_d, h0.detach()], 1)) * h0
        prior = torch.cat([h0[:, self.ctx_index], o_ep.detach()], 1)
        x = o_ep
        for i, (gate, layer) in enumerate(zip(self.ppnet, self.layers)):
            x = layer(gate(prior) * x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return ModelOutput(logits=x.squeeze(-1), keep=[], pi=[])

    def flops(self, kept: torch.Tensor, code: torch.Tensor) -> Flops:
        g = self.gate_hidden
        dnn = list(zip(self.dims[:-1], self.dims[1:]))
        matmul = sum(2 * a * b for a, b in dnn)
        matmul += sum(2 * a * g + 2 * g * b for a, b in self.gate_shapes)
        bias = sum(b for _, b in dnn) + sum(g + 2 * b for _, b in self.gate_shapes)
        return constant_flops(code, matmul, bias)
