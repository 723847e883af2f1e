"""Batches as index slices of in-memory tensors: no per-row Python, no Dataset.__getitem__."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from adasparse_lab.data.prepare import TensorSplit


@dataclass
class Batch:
    """B rows: categorical codes [B, F], dense [B, Dn], label [B], domain index [B]."""

    cat: torch.Tensor
    dense: torch.Tensor
    label: torch.Tensor
    domain: torch.Tensor

    def to(self, device: torch.device) -> Batch:
        """The batch on ``device``. Host to CUDA goes through pinned memory, so the copy is
        asynchronous (a pageable ``non_blocking`` copy silently waits)."""
        if self.cat.device == device:
            return self
        pin = device.type == "cuda" and self.cat.device.type == "cpu"
        return Batch(
            *(
                (t.pin_memory() if pin and not t.is_pinned() else t).to(device, non_blocking=True)
                for t in (self.cat, self.dense, self.label, self.domain)
            )
        )


def split_to_device(split: TensorSplit, device: torch.device) -> TensorSplit:
    """Move the feature tensors once (the whole split fits: CTR rows are ~100 bytes)."""
    if split.cat.device == device:
        return split
    return TensorSplit(
        cat=split.cat.to(device),
        dense=split.dense.to(device),
        label=split.label.to(device),
        domain=split.domain.to(device),
        user=split.user,
        p_true=split.p_true,
    )


def iterate(
    split: TensorSplit,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[Batch]:
    """Yield batches. With shuffle, the split is permuted once per epoch (one gather per
    tensor) and then cut into contiguous slices, which is cheaper than a gather per batch."""
    cat, dense, label, domain = split.cat, split.dense, split.label, split.domain
    if shuffle:
        perm = torch.randperm(len(split), generator=generator).to(cat.device)
        cat, dense, label, domain = cat[perm], dense[perm], label[perm], domain[perm]
    for start in range(0, len(split), batch_size):
        end = start + batch_size
        yield Batch(cat[start:end], dense[start:end], label[start:end], domain[start:end])


def n_batches(split: TensorSplit, batch_size: int) -> int:
    return -(-len(split) // batch_size)
