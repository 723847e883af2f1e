"""Raw rows as a stream of chunks, split on the way into per-split chunk files (the spool).

    chunks (ordered, C rows each)  --split-->  spool/<split>/<k>.parquet  (k = chunk number)

A split with ``part_stream`` (RandomSplit) tags each chunk as it comes: the same per-row
uniforms as tagging the whole table at once, so the assignment equals the in-memory one. A
split with ``lazy_parts`` (TimeSplit) needs the whole order: the chunks are spooled raw and
polars' streaming engine sorts and tags them. Rows of per-split files carry their split in
``source_split``; a split with ``val_stream`` (readers.FileSplit) spools them so too, then
carves val out of the train files, chunk after chunk with the same draws as in memory, where
no row is tagged val. Any other splitter gets the table in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl

from adasparse_lab.data.sources import SOURCE_SPLIT, SPLITS
from adasparse_lab.errors import DataError

PART = "__part"


def scan_chunks(lazy: pl.LazyFrame, raw_dir: Path, chunk_rows: int) -> Iterator[pl.DataFrame]:
    """A lazy query's rows in order, ``chunk_rows`` at a time: sunk to parquet by polars'
    streaming engine, then read back by slices (row groups outside a slice are skipped)."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    path = raw_dir / "raw.parquet"
    lazy.sink_parquet(path)
    n = pl.scan_parquet(path).select(pl.len()).collect().item()
    for start in range(0, n, chunk_rows):
        yield pl.scan_parquet(path).slice(start, chunk_rows).collect()


def _write_parts(chunk: pl.DataFrame, parts: np.ndarray, spool: Path, k: int) -> None:
    for i, name in enumerate(SPLITS):
        rows = chunk.filter(pl.Series(parts == i))
        if rows.height:
            (spool / name).mkdir(parents=True, exist_ok=True)
            rows.write_parquet(spool / name / f"{k:06d}.parquet")


def _spool_by_file(chunks: Iterator[pl.DataFrame], spool: Path) -> None:
    """Rows to the split their ``source_split`` column names."""
    for k, chunk in enumerate(chunks):
        if SOURCE_SPLIT not in chunk.columns:
            raise DataError(f"FileSplit needs a {SOURCE_SPLIT!r} column (a per-split release)")
        names = chunk.get_column(SOURCE_SPLIT)
        parts = np.select([(names == s).to_numpy() for s in SPLITS], [0, 1, 2], -1)
        _write_parts(chunk.drop(SOURCE_SPLIT), parts, spool, k)


def _carve_val(split, spool: Path) -> None:
    """Where no row was tagged val: move ``split.val_stream()``'s pick of the train rows, in
    order, from each train file to the val file of the same number."""
    if split.val <= 0 or any((spool / "val").glob("*.parquet")):
        return
    to_val = split.val_stream()
    (spool / "val").mkdir(parents=True, exist_ok=True)
    for path in sorted((spool / "train").glob("*.parquet")):
        chunk = pl.read_parquet(path)
        mask = pl.Series(to_val(chunk.height))
        if mask.any():
            chunk.filter(mask).write_parquet(spool / "val" / path.name)
        kept = chunk.filter(~mask)
        if kept.height:
            kept.write_parquet(path)
        else:
            path.unlink()


def spool_chunks(chunks: Iterator[pl.DataFrame], split, spool: Path) -> None:
    """Split the chunk stream into ``spool/<split>/<k>.parquet`` files, rows in split order.
    ``split=None``: the rows carry their split in the ``source_split`` column (per-split files);
    so do they for a split with ``val_stream`` (FileSplit), which may carve val out of train."""
    if split is None or hasattr(split, "val_stream"):
        _spool_by_file(chunks, spool)
        if split is not None:
            _carve_val(split, spool)
        return
    if hasattr(split, "part_stream"):
        next_parts = split.part_stream()
        for k, chunk in enumerate(chunks):
            _write_parts(chunk, next_parts(chunk.height), spool, k)
        return
    raw = spool / "raw-chunks"
    raw.mkdir(parents=True, exist_ok=True)
    for k, chunk in enumerate(chunks):
        chunk.write_parquet(raw / f"{k:06d}.parquet")
    lazy = pl.scan_parquet(sorted(raw.glob("*.parquet")))
    if hasattr(split, "lazy_parts"):
        tagged = spool / "tagged.parquet"
        split.lazy_parts(lazy).sink_parquet(tagged)
        n = pl.scan_parquet(tagged).select(pl.len()).collect().item()
        step = 1_000_000
        for k, start in enumerate(range(0, n, step)):
            chunk = pl.scan_parquet(tagged).slice(start, step).collect()
            _write_parts(chunk.drop(PART), chunk.get_column(PART).to_numpy(), spool, k)
        return
    frames = split(lazy.collect())  # a user's splitter: in memory
    for name in SPLITS:
        (spool / name).mkdir(parents=True, exist_ok=True)
        frames[name].write_parquet(spool / name / "000000.parquet")
