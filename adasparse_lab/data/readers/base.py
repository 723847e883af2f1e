"""What every release reader shares: the release's own split (``FileSplit``), the base class
(``FileSource``: named files under one root, checked, described for the cache key) and the
lazy CSV helpers the readers build their ``scan()`` from."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from adasparse_lab.data.sources import (
    SOURCE_SPLIT,
    SPLITS,
    RandomSplit,
    RawData,
    TimeSplit,
    describe_split,
)
from adasparse_lab.errors import ConfigError, DataError

_VAL_STREAM = 0x5EED0FA1


class FileSplit:
    """The release's own split (the ``source_split`` column); ``val`` is a seeded random
    fraction carved out of the train rows where the release has no validation file."""

    def __init__(self, val: float = 0.1, seed: int = 0) -> None:
        if not 0 <= val < 1:
            raise ConfigError(f"data.source.split.val={val} must be in [0, 1)")
        self.val, self.seed = val, seed

    def describe(self) -> dict:
        return {"type": "FileSplit", "val": self.val, "seed": self.seed}

    def val_stream(self) -> Callable[[int], np.ndarray]:
        """Which of the next n train rows go to val (a bool mask), chunk after chunk: one
        generator's consecutive draws, so carving the train rows in chunks (data.stream, for
        data.storage=mmap) picks the rows carving them at once picks."""
        rng = np.random.default_rng([self.seed, _VAL_STREAM])
        return lambda n: rng.random(n) < self.val

    def __call__(self, frame: pl.DataFrame) -> dict[str, pl.DataFrame]:
        if SOURCE_SPLIT not in frame.columns:
            raise DataError(f"FileSplit needs a {SOURCE_SPLIT!r} column (a per-split release)")
        parts = {s: frame.filter(pl.col(SOURCE_SPLIT) == s).drop(SOURCE_SPLIT) for s in SPLITS}
        if parts["val"].height == 0 and self.val > 0:
            train = parts["train"]
            to_val = pl.Series(self.val_stream()(train.height))
            parts["val"] = train.filter(to_val)
            parts["train"] = train.filter(~to_val)
        return parts


Split = RandomSplit | TimeSplit | FileSplit


class FileSource:
    """Base of the release readers: named files under one root, one splitter."""

    layout = ""  # one line on the release, for error messages
    # Part of describe() and so of the cache key: bump when the reader's parsing changes (a
    # subclass overrides it), so stores prepared by the old parsing are not reused.
    version = 1

    def __init__(self, root: str, files: dict[str, str], split: Split) -> None:
        self.root = Path(root).expanduser()
        self.files = dict(files)
        self.split = split
        if not self.root.is_dir():
            raise DataError(
                f"data.source.root={root!r} is not a directory ({self.root.resolve()}); it "
                f"should hold {self._expected()}"
            )
        for key, name in self.files.items():
            if not (self.root / name).is_file():
                raise DataError(
                    f"data.source.{key}: {(self.root / name).resolve()} does not exist; "
                    f"data.source.root should hold {self._expected()}"
                )

    def _expected(self) -> str:
        names = ", ".join(sorted(set(self.files.values())))
        return f"{self.layout}: {names}" if self.layout else names

    def path(self, key: str) -> Path:
        return self.root / self.files[key]

    def options(self) -> dict:
        """Reader options that shape the rows (domain rule, label rule, ...)."""
        return {}

    def scan(self) -> pl.LazyFrame:
        raise NotImplementedError

    def load(self) -> RawData:
        try:
            frame = self.scan().collect()
        except pl.exceptions.PolarsError as err:
            raise DataError(f"{self.root.resolve()}: cannot be read ({err})") from None
        where = str(self.root.resolve())
        return RawData(
            frames=self.split(frame), origins={s: f"{where} ({s} split)" for s in SPLITS}
        )

    def describe(self) -> dict:
        files = {}
        for key in self.files:
            p = self.path(key).resolve()
            st = p.stat()
            files[key] = [str(p), st.st_size, st.st_mtime_ns]
        return {
            "version": self.version,
            "files": files,
            "options": self.options(),
            "split": describe_split(self.split),
        }


def scan_csv(path: Path, **kwargs) -> pl.LazyFrame:
    return pl.scan_csv(path, infer_schema_length=10_000, **kwargs)


def left_join(left: pl.LazyFrame, right: pl.LazyFrame, on: str) -> pl.LazyFrame:
    """Every left row once per match, in the left file's order (a seeded random split then
    picks the same rows on every machine)."""
    return left.join(right, on=on, how="left", maintain_order="left")


def tagged(frame: pl.LazyFrame, split: str) -> pl.LazyFrame:
    return frame.with_columns(pl.lit(split).alias(SOURCE_SPLIT))
