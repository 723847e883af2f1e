"""Batches as index slices of a split's tensors: no per-row Python, no Dataset.__getitem__.

A split in RAM (``TensorSplit.block_rows is None``) is permuted once per epoch (one gather per
tensor) and cut into contiguous slices. A memory-mapped split (data.store) is never gathered
whole; its epoch order is a block shuffle: the split is cut into blocks of ``block_rows``
consecutive rows, the block order is permuted, and windows of ``WINDOW_BLOCKS`` blocks are read
(contiguous reads), concatenated and permuted row by row before being cut into batches (rows
left over after the last full batch of a window open the next window). Memory: one window
(WINDOW_BLOCKS x block_rows rows), whatever the split's size; the window's pages of the map
are released after the copy (``release``), so a reader's resident set does not grow with the
split either (the pages stay in the shared page cache). Either way every row comes once
per epoch and batches carry codes as int64, dense and label as float32, domain as int64.
"""

from __future__ import annotations

import ctypes
import itertools
import mmap
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from adasparse_lab.data.prepared import TensorSplit

# Blocks read together and shuffled row by row (block shuffle of memory-mapped splits).
WINDOW_BLOCKS = 8


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

    def pin_memory(self) -> Batch:
        return Batch(*(t.pin_memory() for t in (self.cat, self.dense, self.label, self.domain)))


def split_to_device(split: TensorSplit, device: torch.device) -> TensorSplit:
    """Move the feature tensors once (a split in RAM fits: CTR rows are ~100 bytes); a
    memory-mapped split stays on the host and is moved batch by batch (``Batch.to``)."""
    if split.cat.device == device or split.mapped:
        return split
    return TensorSplit(
        cat=split.cat.to(device),
        dense=split.dense.to(device),
        label=split.label.to(device),
        domain=split.domain.to(device),
        user=split.user,
        p_true=split.p_true,
    )


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_MADV_DONTNEED = 4
_PAGE = mmap.PAGESIZE


def release(views: list[torch.Tensor]) -> None:
    """Drop the pages of memory-mapped views from this process's resident set once they are
    copied (madvise MADV_DONTNEED; Linux only, else nothing). The store is mapped read-only
    copy-on-write and never written, so the pages stay in the shared page cache and fault back
    in from it when read again (a view still held reads the same values): a reader's RSS
    stays one window, not the whole split. Only for views of the store's maps: on anonymous
    memory MADV_DONTNEED would zero the data."""
    if _LIBC is None:
        return
    for view in views:
        start = view.data_ptr()
        end = start + view.numel() * view.element_size()
        first, last = -(-start // _PAGE) * _PAGE, end // _PAGE * _PAGE  # whole pages inside
        if last > first:
            _LIBC.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), _MADV_DONTNEED)


def _batch(cat, dense, label, domain) -> Batch:
    """Compact store dtypes to the model's (a no-op for tensors already int64/float32)."""
    return Batch(cat.long(), dense.float(), label.float(), domain.long())


def _windows(split: TensorSplit, generator: torch.Generator | None) -> Iterator[tuple]:
    """Block shuffle: windows of whole blocks in permuted block order, rows permuted inside."""
    n, block = len(split), split.block_rows
    assert block is not None
    order = torch.randperm(-(-n // block), generator=generator).tolist()
    for w in range(0, len(order), WINDOW_BLOCKS):
        starts = [b * block for b in order[w : w + WINDOW_BLOCKS]]
        parts = [
            [t[s : s + block] for s in starts]
            for t in (split.cat, split.dense, split.label, split.domain)
        ]
        window = [torch.cat(p) for p in parts]
        if split.mapped:
            for blocks in parts:
                release(blocks)
        perm = torch.randperm(len(window[0]), generator=generator)
        yield tuple(t[perm] for t in window)


def _shuffled_blocks(
    split: TensorSplit, batch_size: int, generator: torch.Generator | None
) -> Iterator[tuple]:
    carry = None
    for window in _windows(split, generator):
        if carry is not None:
            window = tuple(torch.cat([c, w]) for c, w in zip(carry, window))
        full = len(window[0]) // batch_size * batch_size
        for start in range(0, full, batch_size):
            yield tuple(t[start : start + batch_size] for t in window)
        carry = tuple(t[full:] for t in window)
    if carry is not None and len(carry[0]):
        yield carry


def iterate(
    split: TensorSplit,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    pin: bool = False,
    skip: int = 0,
) -> Iterator[Batch]:
    """Yield batches in row order, or shuffled (global permutation in RAM, block shuffle for
    memory-mapped splits). ``pin``: page-locked batches, for non-blocking copies to CUDA.
    ``skip``: leave out the first ``skip`` batches (a pass resumed part-way, in the same
    order: the generator draws as for a full pass)."""
    cat, dense, label, domain = split.cat, split.dense, split.label, split.domain
    if shuffle and split.block_rows is not None:
        parts: Iterator[tuple] = _shuffled_blocks(split, batch_size, generator)
    else:
        if shuffle:
            perm = torch.randperm(len(split), generator=generator).to(cat.device)
            cat, dense, label, domain = cat[perm], dense[perm], label[perm], domain[perm]
        parts = (
            (cat[s : s + batch_size], dense[s : s + batch_size], label[s : s + batch_size],
             domain[s : s + batch_size])
            for s in range(0, len(split), batch_size)
        )  # fmt: skip
    in_order = split.mapped and not shuffle  # views of the maps: released once consumed
    for part in itertools.islice(parts, skip, None):
        batch = _batch(*part)
        yield batch.pin_memory() if pin and batch.cat.device.type == "cpu" else batch
        if in_order:
            release(list(part))


def n_batches(split: TensorSplit, batch_size: int) -> int:
    return -(-len(split) // batch_size)
