"""AdaSparse (Yang et al., CIKM 2022) over an MLP backbone; with ``pruner=None`` the dense
shared model that every comparison uses as its reference row.

Shapes: B batch, F fields, D embedding dim, H_l width of hidden layer l, d_e = |e_d|.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from adasparse_lab.errors import ConfigError
from adasparse_lab.models.embedding import FieldEmbedding
from adasparse_lab.models.flops import TowerShape
from adasparse_lab.models.gates import BinarizationGate, FusionGate, ScalingGate

PRUNER_INPUTS = ("hidden+domain", "domain")


@dataclass
class PrunerSpec:
    """A pruner variant. ``inputs``: 'hidden+domain' is the paper's [h^l ; e_d] (masks depend on
    the sample); 'domain' feeds e_d only, so each domain has one fixed sub-network that can be
    compacted. alpha rises linearly from alpha_start to alpha_end over the first
    ``alpha_anneal`` fraction of training, then stays."""

    gate: BinarizationGate | ScalingGate | FusionGate
    inputs: str = "hidden+domain"
    mask_input: bool = False
    stop_gradient: bool = False
    alpha_start: float = 0.1
    alpha_end: float = 5.0
    alpha_anneal: float = 0.8

    def __post_init__(self) -> None:
        if self.inputs not in PRUNER_INPUTS:
            raise ConfigError(f"pruner.inputs={self.inputs!r}; choose one of {list(PRUNER_INPUTS)}")
        if not 0 < self.alpha_start <= self.alpha_end:
            raise ConfigError(
                f"pruner.alpha_start={self.alpha_start} and alpha_end={self.alpha_end} "
                "must satisfy 0 < alpha_start <= alpha_end"
            )
        if not 0 < self.alpha_anneal <= 1:
            raise ConfigError(f"pruner.alpha_anneal={self.alpha_anneal} must be in (0, 1]")

    def alpha_at(self, progress: float) -> float:
        """alpha as a pure function of training progress in [0, 1]."""
        t = min(max(progress / self.alpha_anneal, 0.0), 1.0)
        return self.alpha_start + t * (self.alpha_end - self.alpha_start)


@dataclass
class ModelOutput:
    logits: torch.Tensor  # [B]
    keep: list[torch.Tensor]  # per masked position: [B, H_l], 0/1 forward, STE backward
    pi: list[torch.Tensor]  # per masked position: [B, H_l], the applied weights


class AdaSparseModel(nn.Module):
    """Embedding -> MLP with a pruner after each hidden layer (and optionally on h^0) -> logit."""

    def __init__(
        self,
        vocab_sizes: list[int],
        n_dense: int,
        domain_fields: list[int],
        embedding_dim: int = 16,
        hidden_dims: tuple[int, ...] = (256, 128, 64),
        dropout: float = 0.0,
        pruner: PrunerSpec | None = None,
    ) -> None:
        super().__init__()
        hidden_dims = tuple(hidden_dims)
        if not hidden_dims or min(hidden_dims) < 1:
            raise ConfigError(
                f"model.hidden_dims={list(hidden_dims)} must be non-empty and positive"
            )
        if not 0 <= dropout < 1:
            raise ConfigError(f"model.dropout={dropout} must be in [0, 1)")
        self.embedding = FieldEmbedding(vocab_sizes, n_dense, list(domain_fields), embedding_dim)
        widths = [self.embedding.output_dim(), *hidden_dims]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.head = nn.Linear(widths[-1], 1)
        self.dropout = nn.Dropout(dropout)
        self.spec = pruner
        self.widths = widths
        d_e = self.embedding.domain_dim
        # Masked positions: 0 is h^0 (the input embedding), l >= 1 the output of hidden layer l.
        if pruner is None:
            self.positions: list[int] = []
        else:
            self.positions = ([0] if pruner.mask_input else []) + list(range(1, len(widths)))
        paper_form = pruner is not None and pruner.inputs == "hidden+domain"
        self.pruners = nn.ModuleDict(
            {
                str(p): nn.Linear(widths[p] + d_e if paper_form else d_e, widths[p])
                for p in self.positions
            }
        )
        # alpha is state: saved in the state dict, set only by the trainer's schedule.
        self.register_buffer("alpha", torch.tensor(pruner.alpha_start if pruner else 1.0))

    def set_alpha(self, value: float) -> None:
        self.alpha.fill_(value)

    def tower_shape(self) -> TowerShape:
        spec = self.spec
        return TowerShape(
            widths=list(self.widths),
            masked=list(self.positions),
            pruner_in_domain_dim=self.embedding.domain_dim,
            sample_dependent=spec is not None and spec.inputs == "hidden+domain",
            zeros=spec is not None and spec.gate.has_zeros,
        )

    def _mask(self, pos: int, h: torch.Tensor, e_d: torch.Tensor, out: ModelOutput) -> torch.Tensor:
        assert self.spec is not None
        x = torch.cat([h, e_d], dim=1) if self.spec.inputs == "hidden+domain" else e_d
        gated = self.spec.gate(self.pruners[str(pos)](x), self.alpha)
        out.keep.append(gated.keep)
        out.pi.append(gated.pi)
        return h * gated.pi

    def forward(self, cat: torch.Tensor, dense: torch.Tensor) -> ModelOutput:
        e_d, h = self.embedding(cat, dense)  # e_d [B, d_e], h [B, H_0]
        if self.spec is not None and self.spec.stop_gradient:
            e_d = e_d.detach()
        out = ModelOutput(logits=h.new_empty(0), keep=[], pi=[])
        if 0 in self.positions:
            h = self._mask(0, h, e_d, out)
        for pos, layer in enumerate(self.layers, start=1):
            h = self.dropout(torch.relu(layer(h)))
            if pos in self.positions:
                h = self._mask(pos, h, e_d, out)
        out.logits = self.head(h).squeeze(-1)
        return out
