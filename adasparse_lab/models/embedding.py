"""The data's fields as a model sees them, and their embeddings.

Shapes: B batch, F categorical fields, Dn dense features, D embedding dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Fields:
    """What every model is built for, read from the prepared data (run.build.data_fields):
    ``vocab_sizes`` [F] (codes per categorical field, OOV included), ``n_dense`` (Dn) and
    ``domain_fields``, the positions of the domain-aware categorical fields (the first one is
    the domain field whose code routes a row)."""

    vocab_sizes: tuple[int, ...]
    n_dense: int
    domain_fields: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "vocab_sizes", tuple(int(v) for v in self.vocab_sizes))
        object.__setattr__(self, "n_dense", int(self.n_dense))
        object.__setattr__(self, "domain_fields", tuple(int(i) for i in self.domain_fields))

    @property
    def n_codes(self) -> int:
        """V: codes of the domain field (OOV code 0 included)."""
        return self.vocab_sizes[self.domain_fields[0]]

    @property
    def domain_rows_start(self) -> int:
        """The domain field's first row in the shared embedding table."""
        return sum(self.vocab_sizes[: self.domain_fields[0]])


class FieldEmbedding(nn.Module):
    """One table for all categorical fields (offsets keep their rows apart) and a learned
    vector per dense feature scaled by its value (x_j * w_j + b_j), so that every field,
    dense or categorical, becomes one D-vector and no feature is silently dropped.

    forward(cat [B, F], dense [B, Dn]) -> (e_d [B, Fd*D], e_all [B, (F+Dn)*D])
    where e_d holds the domain-aware fields and e_all = [e_d ; e_a] is h^0.
    """

    def __init__(self, fields: Fields, embedding_dim: int) -> None:
        super().__init__()
        vocab_sizes, n_dense, domain_fields = (
            fields.vocab_sizes,
            fields.n_dense,
            fields.domain_fields,
        )
        if not domain_fields:
            raise ValueError("at least one domain-aware field is needed")
        if embedding_dim < 1:
            raise ValueError(f"model.embedding_dim={embedding_dim} must be >= 1")
        n_fields = len(vocab_sizes)
        bad = [i for i in domain_fields if not 0 <= i < n_fields]
        if bad:
            raise ValueError(f"domain field positions {bad} outside 0..{n_fields - 1}")
        self.embedding_dim = embedding_dim
        offsets = torch.tensor([0, *vocab_sizes[:-1]]).cumsum(0)
        self.register_buffer("offsets", offsets, persistent=False)
        self.table = nn.Embedding(sum(vocab_sizes), embedding_dim)
        nn.init.normal_(self.table.weight, std=0.05)
        agnostic = [i for i in range(n_fields) if i not in domain_fields]
        # Domain-aware fields first: h^0 = [e_d ; e_a].
        self.register_buffer("order", torch.tensor([*domain_fields, *agnostic]), persistent=False)
        self.n_domain_fields = len(domain_fields)
        self.dense_weight = nn.Parameter(torch.randn(n_dense, embedding_dim) * 0.05)
        self.dense_bias = nn.Parameter(torch.zeros(n_dense, embedding_dim))

    @property
    def domain_dim(self) -> int:
        return self.n_domain_fields * self.embedding_dim

    def output_dim(self) -> int:
        return (len(self.order) + self.dense_weight.shape[0]) * self.embedding_dim

    def forward(self, cat: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.table(cat[:, self.order] + self.offsets[self.order])  # [B, F, D]
        parts = [emb.flatten(1)]
        if self.dense_weight.shape[0]:
            parts.append((dense.unsqueeze(-1) * self.dense_weight + self.dense_bias).flatten(1))
        e_all = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        return e_all[:, : self.domain_dim], e_all
