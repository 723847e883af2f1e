"""What preparation gives every downstream module: the encoded splits as tensors
(``TensorSplit``) and the sizes models derive from (``PreparedData``), with the per-domain
counts and rates read off them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from adasparse_lab.data.schema import Schema
from adasparse_lab.metrics import domain_auc


@dataclass
class TensorSplit:
    """One split as in-memory tensors. N rows, F categorical fields, Dn dense features."""

    cat: torch.Tensor  # [N, F] int64 codes, 0 = OOV
    dense: torch.Tensor  # [N, Dn] float32, standardised
    label: torch.Tensor  # [N] float32 in {0, 1}
    domain: torch.Tensor  # [N] int64 domain index 0..K-1
    user: torch.Tensor | None = None  # [N] int64 user key (GAUC), if the schema has one
    p_true: torch.Tensor | None = None  # [N] float64 true click probability (synthetic)
    # Memory-mapped store (data.store): compact dtypes (int32 codes, int8 label, int16 domain)
    # and shuffled by blocks of this many rows (data.batches); None: in RAM, global shuffle.
    block_rows: int | None = None
    mapped: bool = False  # the tensors are views of the store's memory maps

    def __len__(self) -> int:
        return int(self.label.shape[0])


@dataclass
class PreparedData:
    """What every downstream module needs: tensors per split and the sizes models derive from."""

    schema: Schema
    splits: dict[str, TensorSplit]
    vocab_sizes: list[int]  # per categorical field, including the OOV row
    domain_names: list[str]
    domain_groups: dict[str, int] | None
    cache_path: Path | None = None
    key: str | None = None  # the store's key (config_hash): which data a model was trained on

    @property
    def n_domains(self) -> int:
        return len(self.domain_names)

    def domain_feature_index(self) -> list[int]:
        """Positions of the domain-aware fields among the categorical fields."""
        return [self.schema.categorical.index(c) for c in self.schema.domain_features]

    def rows_per_domain(self, split: str = "train") -> np.ndarray:
        return np.bincount(self.splits[split].domain.numpy(), minlength=self.n_domains)

    def pos_rate_per_domain(self, split: str = "train") -> np.ndarray:
        """[K] positive rate of each domain's rows in ``split`` (NaN for a domain without any)."""
        part = self.splits[split]
        rows = self.rows_per_domain(split)
        pos = np.bincount(part.domain.numpy(), weights=part.label.numpy(), minlength=self.n_domains)
        return np.divide(pos, rows, out=np.full(self.n_domains, np.nan), where=rows > 0)

    def oracle_auc_per_domain(self, split: str = "test") -> list[float | None]:
        """[K] AUC of the true click probability on each domain's rows in ``split`` (synthetic
        data); None without ``p_true``, for a domain without rows or with a single class."""
        part = self.splits[split]
        if part.p_true is None:
            return [None] * self.n_domains
        found = domain_auc(part.label.numpy(), part.p_true.numpy(), part.domain.numpy())
        return [found.get(k) for k in range(self.n_domains)]
