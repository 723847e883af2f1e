"""Raw rows as a stream of chunks, split on the way into per-split chunk files (the spool).

    chunks (ordered, C rows each)  --split-->  spool/<split>/<k>.parquet  (k = chunk number)

A split with ``part_stream`` (RandomSplit) tags each chunk as it comes: the same per-row
uniforms as tagging the whole table at once, so the assignment equals the in-memory one. A
split with ``lazy_parts`` (TimeSplit) needs the whole order: the chunks are spooled raw and
polars' streaming engine sorts and tags them. Rows of per-split files carry their split in
``source_split``. Any other splitter (e.g. readers.FileSplit) gets the table in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl

from adasparse_lab.data.sources import SOURCE_SPLIT, SPLITS

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


def spool_chunks(chunks: Iterator[pl.DataFrame], split, spool: Path) -> None:
    """Split the chunk stream into ``spool/<split>/<k>.parquet`` files, rows in split order.
    ``split=None``: the rows carry their split in the ``source_split`` column (per-split files)."""
    if split is None:
        for k, chunk in enumerate(chunks):
            names = chunk.get_column(SOURCE_SPLIT)
            parts = np.select([(names == s).to_numpy() for s in SPLITS], [0, 1, 2], -1)
            _write_parts(chunk.drop(SOURCE_SPLIT), parts, spool, k)
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
