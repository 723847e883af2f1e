"""The prepared store: one directory of memory-mappable ``.npy`` columns per prepared dataset.

Layout of ``cache_dir/<key>/`` (N rows of a split, F categorical fields, Dn dense features)::

    meta.json            vocab sizes, domain names and groups, rows per split, the description,
                         the encoder's dense mean/std (``encoder``)
    encoder/<i>.parquet  categorical column i's vocabulary: its values and codes 1..V (the
                         encoder the codes were made with: data.prepare.store_encoder)
    <split>.cat.npy      [N, F]  int32 codes, 0 = OOV (row-major: a batch is one slice)
    <split>.dense.npy    [N, Dn] float32, standardised
    <split>.label.npy    [N]     int8 in {0, 1}
    <split>.domain.npy   [N]     int16 (int32 above 32767 domains) domain index 0..K-1
    <split>.user.npy     [N]     int64 hashed user key (only if the schema has a user column)
    <split>.p_true.npy   [N]     float64 true click probability (synthetic only)

Writing: columns are filled chunk by chunk (file writes at the chunk's row offset) in a
temporary sibling directory that is renamed into place only when complete, so a killed
preparation never leaves a store that a reader takes for whole (its temporary directory is
removed by the next preparer of the same key). Concurrent preparers of one key serialise on
an ``fcntl`` lock file next to the store: the first prepares, the others wait and then read
its store. Readers of a finished store take no lock (the store is read-only).

Reading: ``memory`` loads every column into RAM with today's dtypes (codes int64, label
float32); ``mmap`` maps the files copy-on-write (``mmap_mode="c"``: pages come from the shared
page cache, so several study workers on one store hold one copy) and keeps the compact dtypes;
batches cast them (``data.batches``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from adasparse_lab.errors import ConfigError

STORAGES = ("auto", "memory", "mmap")
# auto: a split set whose in-memory tensors (int64 codes) would exceed this is memory-mapped.
AUTO_MEMORY_BYTES = 2 * 2**30
# Rows per shuffle block of a memory-mapped split (data.batches: block shuffle).
BLOCK_ROWS = 65_536


def check_storage(storage: str, cache_dir: object) -> None:
    """data.storage must be one of STORAGES; mmap needs a cache directory to map files from."""
    if storage not in STORAGES:
        raise ConfigError(f"data.storage={storage!r}; choose one of {list(STORAGES)}")
    if storage == "mmap" and cache_dir is None:
        raise ConfigError(
            "data.storage='mmap' needs a cache directory (paths.cache) to write the store to"
        )


def in_memory_bytes(rows: int, n_cat: int, n_dense: int, user: bool, p_true: bool) -> int:
    """Bytes of one row set as in-memory tensors (int64 codes and domain, float32 the rest)."""
    return rows * (8 * n_cat + 4 * n_dense + 4 + 8 + 8 * user + 8 * p_true)


def resolve_storage(storage: str, meta: dict) -> str:
    """The storage a store is read with: auto picks mmap when the tensors would be large."""
    if storage != "auto":
        return storage
    rows = sum(meta["rows"].values())
    cols = meta["columns"]
    size = in_memory_bytes(
        rows, len(meta["vocab_sizes"]), meta["n_dense"], "user" in cols, "p_true" in cols
    )
    return "mmap" if size > AUTO_MEMORY_BYTES else "memory"


def domain_dtype(n_domains: int) -> np.dtype:
    return np.dtype(np.int16 if n_domains <= np.iinfo(np.int16).max else np.int32)


class StoreWriter:
    """Preallocated columns of every split in a temporary directory; ``commit`` renames it.

    Chunks are written with plain file writes at their row offset, not through a writable
    memory map: dirty pages of a shared mapping would count in the preparer's resident set,
    page-cache writes do not (the kernel flushes them)."""

    def __init__(self, path: Path, rows: dict[str, int], dtypes: dict[str, tuple]) -> None:
        """rows: split -> N; dtypes: column -> (dtype, trailing shape)."""
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
        self.files = {}
        for split, n in rows.items():
            for col, (dt, shape) in dtypes.items():
                file = self.tmp / f"{split}.{col}.npy"
                header = np.lib.format.open_memmap(file, mode="w+", dtype=dt, shape=(n, *shape))
                offset, dtype = header.offset, header.dtype
                del header  # only the .npy header and the file's size were needed
                self.files[(split, col)] = (open(file, "r+b"), offset, dtype)  # noqa: SIM115

    def write(self, split: str, start: int, values: dict[str, np.ndarray]) -> None:
        for col, array in values.items():
            handle, offset, dtype = self.files[(split, col)]
            array = np.ascontiguousarray(array, dtype=dtype)
            row_bytes = array[:1].nbytes if len(array) else 0
            handle.seek(offset + start * row_bytes)
            handle.write(array.tobytes())

    def _close(self) -> None:
        for handle, _, _ in self.files.values():
            handle.close()
        self.files.clear()

    def commit(self, meta: dict) -> None:
        self._close()
        (self.tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
        self.tmp.rename(self.path)  # atomic: readers see no store or a whole one

    def abort(self) -> None:
        self._close()
        shutil.rmtree(self.tmp, ignore_errors=True)


@contextlib.contextmanager
def preparation_lock(path: Path) -> Iterator[None]:
    """Hold the lock of one store key (blocking). Inside it, temporary directories of the same
    key are leftovers of killed preparers (the living one holds the lock) and are removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            for stale in path.parent.glob(f".{path.name}-*"):
                shutil.rmtree(stale, ignore_errors=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_meta(path: Path) -> dict | None:
    meta_file = path / "meta.json"
    return json.loads(meta_file.read_text()) if meta_file.exists() else None


def load_column(path: Path, split: str, col: str, mmap: bool) -> torch.Tensor:
    """One column as a tensor: memory-mapped copy-on-write (compact dtype) or in RAM."""
    array = np.load(path / f"{split}.{col}.npy", mmap_mode="c" if mmap else None)
    if not mmap:
        if col in ("cat", "domain"):
            array = array.astype(np.int64)
        elif col == "label":
            array = array.astype(np.float32)
    return torch.from_numpy(array)
