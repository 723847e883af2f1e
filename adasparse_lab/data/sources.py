"""Where rows come from: the synthetic generator or files the user brings, and how to split them.

A source returns raw (unencoded) polars frames; a splitter turns one frame into train/val/test.
Both are built from config with ``_target_``; preparation (``prepare.py``) encodes the result.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

from adasparse_lab.data.synthetic import SyntheticSpec, generate
from adasparse_lab.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
# In a source's scan(): the split a row's file belongs to, where the files fix the split.
SOURCE_SPLIT = "source_split"
_SPLIT_STREAM = 0x5EED5917
_DUPLICATED = re.compile(r"(.+)_duplicated_\d+")


@dataclass(frozen=True)
class RawData:
    """Raw frames per split, plus what a source knows about its domains (synthetic only)."""

    frames: dict[str, pl.DataFrame]
    domain_groups: dict[str, int] | None = None
    origins: dict[str, str] | None = None  # where each split came from, for error messages


def _check_fractions(val: float, test: float) -> None:
    if not (0 < val < 1 and 0 < test < 1 and val + test < 1):
        raise ConfigError(f"data.split: val={val} and test={test} must be in (0,1) with sum < 1")


class RandomSplit:
    """Seeded random split of one table into train/val/test fractions."""

    def __init__(self, val: float = 0.1, test: float = 0.1, seed: int = 0) -> None:
        _check_fractions(val, test)
        self.val, self.test, self.seed = val, test, seed

    def describe(self) -> dict:
        return {"type": "RandomSplit", "val": self.val, "test": self.test, "seed": self.seed}

    def part_stream(self) -> Callable[[int], np.ndarray]:
        """Split index (0 train, 1 val, 2 test) of the next n rows, chunk after chunk: the
        per-row uniforms are one generator's consecutive draws, so tagging a table in chunks
        gives the same assignment as tagging it at once."""
        # A stream of its own: the same integer seed in a generator must not line up with it.
        rng = np.random.default_rng([self.seed, _SPLIT_STREAM])

        def next_parts(n: int) -> np.ndarray:
            u = rng.random(n)
            return np.where(u < self.test, 2, np.where(u < self.test + self.val, 1, 0)).astype(
                np.int8
            )

        return next_parts

    def __call__(self, frame: pl.DataFrame) -> dict[str, pl.DataFrame]:
        part_s = pl.Series("__part", self.part_stream()(frame.height))
        tagged = frame.with_columns(part_s)
        return {
            name: tagged.filter(pl.col("__part") == k).drop("__part")
            for k, name in enumerate(SPLITS)
        }


class TimeSplit:
    """Split by a time column: the latest rows are test, the ones before them val."""

    def __init__(self, column: str, val: float = 0.1, test: float = 0.1) -> None:
        _check_fractions(val, test)
        self.column, self.val, self.test = column, val, test

    def describe(self) -> dict:
        return {"type": "TimeSplit", "column": self.column, "val": self.val, "test": self.test}

    def lazy_parts(self, lazy: pl.LazyFrame) -> pl.LazyFrame:
        """The rows sorted as ``__call__`` sorts them, tagged ``__part`` (0 train, 1 val,
        2 test) by position: the same split, as a query polars can stream."""
        if self.column not in lazy.collect_schema().names():
            raise DataError(
                f"data.split.column {self.column!r} is not a column: "
                f"{lazy.collect_schema().names()}"
            )
        n = lazy.select(pl.len()).collect().item()
        n_train = int(round(n * (1 - self.val - self.test)))
        n_val = int(round(n * self.val))
        pos = pl.int_range(pl.len())
        part = pl.when(pos < n_train).then(0).when(pos < n_train + n_val).then(1).otherwise(2)
        return lazy.sort(self.column, maintain_order=True).with_columns(
            part.cast(pl.Int8).alias("__part")
        )

    def __call__(self, frame: pl.DataFrame) -> dict[str, pl.DataFrame]:
        if self.column not in frame.columns:
            raise DataError(f"data.split.column {self.column!r} is not a column: {frame.columns}")
        ordered = frame.sort(self.column, maintain_order=True)
        n = ordered.height
        n_train = int(round(n * (1 - self.val - self.test)))
        n_val = int(round(n * self.val))
        return {
            "train": ordered.slice(0, n_train),
            "val": ordered.slice(n_train, n_val),
            "test": ordered.slice(n_train + n_val),
        }


def describe_split(split: object) -> dict:
    """A splitter's parameters for the cache key; a user's own splitter without ``describe``
    is described by its class and attributes."""
    if hasattr(split, "describe"):
        return split.describe()
    cls = type(split)
    return {"type": f"{cls.__module__}.{cls.__qualname__}", **vars(split)}


class SyntheticSource:
    """The built-in generator (see ``synthetic.py``)."""

    version = 1  # in describe(), so the cache key: bump when the generator's rows change

    def __init__(self, split: RandomSplit | TimeSplit, **spec: object) -> None:
        # Keyword arguments go straight into the frozen SyntheticSpec: a typo raises TypeError
        # naming the key instead of being swallowed.
        try:
            self.spec = SyntheticSpec(**spec)  # type: ignore[arg-type]
        except TypeError as err:
            raise ConfigError(f"data.source: {err}") from None
        self.split = split

    def scan(self) -> pl.LazyFrame:
        """The generated table (generated in memory: its size is the config's n_rows)."""
        return generate(self.spec).lazy()

    def load(self) -> RawData:
        frame = generate(self.spec)
        return RawData(frames=self.split(frame), domain_groups=self.spec.domain_groups())

    def describe(self) -> dict:
        """Everything that shapes the rows and their split (for the cache key)."""
        return {**asdict(self.spec), "split": describe_split(self.split), "version": self.version}


def read_table(path: str | Path, separator: str = ",") -> pl.DataFrame:
    """Read a parquet or CSV file. Whatever makes it unreadable (missing, empty, not UTF-8,
    duplicate column names, no rows) is a DataError that names the file."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"data file does not exist: {p.resolve()}")
    if p.suffix not in (".parquet", ".pq", ".csv", ".tsv", ".txt"):
        raise DataError(f"{p}: unknown file type {p.suffix!r}; use .parquet, .csv or .tsv")
    sep = "\t" if p.suffix == ".tsv" else separator
    try:
        if p.suffix in (".parquet", ".pq"):
            frame = pl.read_parquet(p)
        else:
            frame = pl.read_csv(p, separator=sep, infer_schema_length=10_000)
    except pl.exceptions.NoDataError:
        raise DataError(f"{p}: the file is empty (no header, no rows)") from None
    except pl.exceptions.PolarsError as err:
        if "utf-8" in str(err).lower():
            raise DataError(
                f"{p}: not valid UTF-8 ({err}); convert it first, e.g. iconv -f latin1 -t utf-8"
            ) from None
        raise DataError(f"{p}: cannot be read ({type(err).__name__}: {err})") from None
    # polars renames a repeated CSV header name to <name>_duplicated_<k>
    dupes = sorted(
        {m[1] for c in frame.columns if (m := _DUPLICATED.fullmatch(c)) and m[1] in frame.columns}
    )
    if dupes:
        raise DataError(f"{p}: duplicate column name(s) {dupes} in the header")
    if frame.height == 0:
        raise DataError(f"{p}: has a header but no rows")
    return frame


def scan_table(path: str | Path, separator: str = ",") -> pl.LazyFrame:
    """A parquet or CSV file as a lazy query (the checks of ``read_table`` happen on load)."""
    p = Path(path).expanduser()
    if p.suffix in (".parquet", ".pq"):
        return pl.scan_parquet(p)
    sep = "\t" if p.suffix == ".tsv" else separator
    return pl.scan_csv(p, separator=sep, infer_schema_length=10_000)


class TabularSource:
    """Files the user brings: one table split by ``split``, or separate train/val/test files."""

    version = 1  # in describe(), so the cache key: bump when the reading/parsing changes

    def __init__(
        self,
        path: str | None = None,
        train: str | None = None,
        val: str | None = None,
        test: str | None = None,
        split: RandomSplit | TimeSplit | None = None,
        separator: str = ",",
        root: str | None = None,
    ) -> None:
        # relative file names are under `root` when given (absolute ones stay as they are)
        path, train, val, test = (
            str(Path(root).expanduser() / p) if root and p else p for p in (path, train, val, test)
        )
        files = {"train": train, "val": val, "test": test}
        if path is None and not all(files.values()):
            raise ConfigError(
                "data.source: give either `path` (one file, split by data.source.split) "
                "or all of `train`, `val` and `test`"
            )
        if path is not None and split is None:
            raise ConfigError("data.source.split is required when data.source.path is one file")
        # separate train/val/test files are not split (their rows carry source_split)
        self.path, self.files, self.separator = path, files, separator
        self.split = split if path is not None else None
        for p in [path, *files.values()]:
            if p is not None and not Path(p).expanduser().exists():
                raise DataError(f"data file does not exist: {Path(p).expanduser().resolve()}")

    def scan(self) -> pl.LazyFrame:
        """The table, or the three files stacked with their split in ``source_split``."""
        if self.path is not None:
            return scan_table(self.path, self.separator)
        parts = [
            scan_table(p, self.separator).with_columns(pl.lit(k).alias(SOURCE_SPLIT))
            for k, p in self.files.items()
        ]
        return pl.concat(parts, how="diagonal_relaxed")

    def load(self) -> RawData:
        if self.path is not None:
            assert self.split is not None
            frame = read_table(self.path, self.separator)
            where = str(Path(self.path).expanduser().resolve())
            return RawData(
                frames=self.split(frame), origins={s: f"{where} ({s} split)" for s in SPLITS}
            )
        files = {k: p for k, p in self.files.items() if p}
        return RawData(
            frames={k: read_table(p, self.separator) for k, p in files.items()},
            origins={k: str(Path(p).expanduser().resolve()) for k, p in files.items()},
        )

    def describe(self) -> dict:
        """Everything that shapes the rows (for the cache key): the inputs by path, size and
        modification time, how they are read (separator) and split."""
        out: dict = {"version": self.version, "separator": self.separator}
        for key, p in [("path", self.path), *self.files.items()]:
            if p is not None:
                st = Path(p).expanduser().stat()
                out[key] = [str(Path(p).expanduser().resolve()), st.st_size, st.st_mtime_ns]
        if self.path is not None:  # separate train/val/test files are not split
            out["split"] = describe_split(self.split)
        return out
