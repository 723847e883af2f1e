"""What both sides of the peer benchmark (bench/peer.py) share: the prepared rows, handed to
FuxiCTR as its batch dicts, the scoring of test predictions, and one run's numbers.

FuxiCTR's models read a batch as ``{feature name: [B] tensor, label name: [B] tensor}`` and
embed each feature from its ``FeatureMap`` spec (``fuxictr.features``). ``feature_specs`` writes
that spec from the prepared data (one categorical spec per categorical field with the field's
vocabulary size, one numeric spec per dense feature) and ``DictBatches`` cuts the prepared
tensors into such dicts: FuxiCTR sees exactly the integer codes and standardised dense values
our models see, from the same train / val / test split. Nothing here imports FuxiCTR.

Shapes: B batch, N rows of a split, F categorical fields, Dn dense features.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from adasparse_lab.data.prepared import PreparedData, TensorSplit
from adasparse_lab.metrics import auc, domain_auc

FUXICTR_LOADERS = ("npz", "memory")


@dataclass(frozen=True)
class PeerProtocol:
    """The training protocol both sides follow (the architecture comes from conf/model)."""

    epochs: int = 5
    batch_size: int = 1024
    lr: float = 1e-3
    eval_batch_size: int = 8192
    # How FuxiCTR is fed: "npz", its own NpzDataLoader over .npz files of the same rows (what
    # its users run: a per-row Dataset, default_collate, one worker process), or "memory", our
    # tensors cut into its batch dicts (its training step alone, no loader).
    fuxictr_loader: str = "npz"

    def __post_init__(self) -> None:
        if self.fuxictr_loader not in FUXICTR_LOADERS:
            raise ValueError(
                f"--peer-fuxictr-loader {self.fuxictr_loader!r}; choose one of {FUXICTR_LOADERS}"
            )


@dataclass
class SideRun:
    """One fit of one model by one side: held-out numbers and training cost."""

    model: str
    side: str  # "ours" | "fuxictr"
    seed: int
    test_auc: float
    test_mean_domain_auc: float  # unweighted mean over the domains with both classes
    best_epoch: int  # the epoch whose weights were kept (selected on val)
    epochs_run: int  # fewer than the protocol's when early stopping ended the fit
    samples_per_s: float  # training rows / seconds in training epochs (validation excluded)
    fit_seconds: float  # the whole fit: training, validation, keeping the best state
    params: int  # trained parameters, embedding tables included


def field_names(data: PreparedData) -> tuple[list[str], list[str]]:
    """(categorical, dense) feature names as FuxiCTR keys: the schema's column names, with
    '.' (not allowed in a torch ModuleDict key) replaced by '_'."""
    clean = [str(c).replace(".", "_") for c in (*data.schema.categorical, *data.schema.dense)]
    n_cat = len(data.schema.categorical)
    return clean[:n_cat], clean[n_cat:]


def label_name(data: PreparedData) -> str:
    names = set(sum(field_names(data), []))
    label = str(data.schema.label).replace(".", "_")
    return label if label not in names else f"{label}_label"


def feature_specs(data: PreparedData) -> dict[str, dict]:
    """FuxiCTR feature specs of the prepared fields, in the schema's order. A categorical
    field's vocabulary is ours, OOV code 0 included, and no ``padding_idx``: code 0 is a
    trained row as in our embedding (FuxiCTR's own tokenizer reserves 0 for padding and trains
    a separate OOV row; here there is no padding)."""
    cat, dense = field_names(data)
    specs = {
        name: {"source": "", "type": "categorical", "vocab_size": int(v)}
        for name, v in zip(cat, data.vocab_sizes)
    }
    return specs | {name: {"source": "", "type": "numeric"} for name in dense}


def dict_batch(
    split: TensorSplit, rows: torch.Tensor | slice, names: tuple[list[str], list[str]], label: str
) -> dict[str, torch.Tensor]:
    """Rows ``rows`` of ``split`` as a FuxiCTR batch: one [B] column per feature and the label."""
    cat, dense = split.cat[rows].long(), split.dense[rows].float()
    out = {name: cat[:, j] for j, name in enumerate(names[0])}
    out |= {name: dense[:, j] for j, name in enumerate(names[1])}
    out[label] = split.label[rows].float()
    return out


def write_npz(data: PreparedData, split: str, path: str) -> str:
    """The rows of ``split`` as FuxiCTR's npz input (one array per feature and the label, by
    name: what its NpzDataset stacks in FeatureMap order); returns the path."""
    rows = data.splits[split]
    cat, dense = field_names(data)
    arrays = {name: rows.cat[:, j].numpy() for j, name in enumerate(cat)}
    arrays |= {name: rows.dense[:, j].numpy() for j, name in enumerate(dense)}
    arrays[label_name(data)] = rows.label.float().numpy()
    np.savez(path, **arrays)
    return path


class DictBatches:
    """A split as FuxiCTR's training loop iterates it (``len()`` batches of dicts), from the
    prepared tensors in RAM. ``shuffle``: a fresh permutation of all rows each epoch, drawn
    from torch's global RNG (as ``torch.utils.data.DataLoader(shuffle=True)``, which
    FuxiCTR's NpzDataLoader is, draws its order)."""

    def __init__(
        self, data: PreparedData, split: str, batch_size: int, shuffle: bool = False
    ) -> None:
        self.split, self.batch_size, self.shuffle = data.splits[split], batch_size, shuffle
        self.names, self.label = field_names(data), label_name(data)

    def __len__(self) -> int:
        return -(-len(self.split) // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        n = len(self.split)
        order = torch.randperm(n) if self.shuffle else None
        for start in range(0, n, self.batch_size):
            rows = slice(start, start + self.batch_size)
            yield dict_batch(
                self.split, rows if order is None else order[rows], self.names, self.label
            )


def score_split(split: TensorSplit, scores: np.ndarray) -> tuple[float, float]:
    """(AUC, mean per-domain AUC) of ``scores`` [N] on ``split``'s rows, with the project's
    metric functions (adasparse_lab.metrics): the same numbers for logits or probabilities
    up to ties."""
    label = split.label.float().numpy()
    per_domain = domain_auc(label, scores, split.domain.long().numpy())
    mean = float(np.mean(list(per_domain.values()))) if per_domain else math.nan
    return auc(label, scores), mean
