"""Readers of public multi-domain CTR releases, in the layout people download them.

Every reader is a data source (``data.source._target_``) with three methods:

- ``scan() -> pl.LazyFrame``: the whole raw table as one lazy query (CSV scans, joins across
  files, renames, the derived domain column), with the columns the schema names. When the
  release fixes the split by file (train/test files), the frame also has a ``source_split``
  column ("train", "val" or "test"), which the splitter reads and drops.
- ``load() -> RawData``: ``scan()`` collected and split (in memory).
- ``describe() -> dict``: every input file by path, size and modification time, the reader's
  options (domain rule, label rule, file names) and the split: the preparation cache key, so a
  changed file or option never reuses a stale cache.

File names are relative to ``root`` (``data.source.root``, by default under ``paths.data``).
A missing root or file is a DataError naming the key and the files expected there.
See docs/datasets.md for where each release comes from and how its domains are defined.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
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


def _scan_csv(path: Path, **kwargs) -> pl.LazyFrame:
    return pl.scan_csv(path, infer_schema_length=10_000, **kwargs)


def _left_join(left: pl.LazyFrame, right: pl.LazyFrame, on: str) -> pl.LazyFrame:
    """Every left row once per match, in the left file's order (a seeded random split then
    picks the same rows on every machine)."""
    return left.join(right, on=on, how="left", maintain_order="left")


def _tagged(frame: pl.LazyFrame, split: str) -> pl.LazyFrame:
    return frame.with_columns(pl.lit(split).alias(SOURCE_SPLIT))


class SplitFilesSource(FileSource):
    """A release shipped as ready train/(val/)test CSVs with a domain column (Ali-CCP as
    processed by torch-rechub, Taobao as processed by FuxiCTR, ...). Without ``val`` the
    splitter (FileSplit) carves it out of train."""

    def __init__(
        self,
        root: str,
        train: str,
        test: str,
        val: str | None = None,
        split: Split | None = None,
        separator: str = ",",
    ) -> None:
        files = {"train": train, "test": test} | ({"val": val} if val else {})
        super().__init__(root, files, split or FileSplit(val=0.0 if val else 0.1))
        self.separator = separator

    def options(self) -> dict:
        return {"separator": self.separator}

    def scan(self) -> pl.LazyFrame:
        parts = [_tagged(_scan_csv(self.path(k), separator=self.separator), k) for k in self.files]
        return pl.concat(parts, how="diagonal_relaxed")


class SingleFileSource(FileSource):
    """One CSV holding every row and its domain (Douban as processed by Scenario-Wise-Rec)."""

    def __init__(self, root: str, file: str, split: Split, separator: str = ",") -> None:
        super().__init__(root, {"file": file}, split)
        self.separator = separator

    def options(self) -> dict:
        return {"separator": self.separator}

    def scan(self) -> pl.LazyFrame:
        return _scan_csv(self.path("file"), separator=self.separator)


# --- Ali-CCP raw release -------------------------------------------------------------------

_SKELETON = ["sample_id", "click", "purchase", "common_feature_index", "n_features", "features"]
_COMMON = ["common_feature_index", "n_common", "common_features"]


def _field(features: pl.Expr, field: str, group: int) -> pl.Expr:
    """From a ``field\\x02id\\x03value`` list joined by \\x01, the last entry of ``field``
    (the greedy ``.*`` skips the earlier ones): its feature id (group 1) or value (group 2);
    null where the sample lacks the field."""
    pattern = f"(?:^|.*\x01){re.escape(field)}\x02([^\x03]*)\x03([^\x01]*)"
    return features.str.extract(pattern, group)


class AliCCPRawSource(FileSource):
    """Ali-CCP as released (Tianchi 408): sample_skeleton_{train,test}.csv joined with
    common_features_{train,test}.csv on common_feature_index. Each field becomes a column named
    by its field id holding the feature id of that field's last entry, the common features'
    before the sample's own (the rule of Scenario-Wise-Rec's preprocess_ali_ccp.py, which
    writes the processed layout); ``dense_fields`` also get ``D<field>`` with that entry's
    value. Rows with a conversion but no click are dropped (``drop_conversion_without_click``,
    as that script does). The domain is a field's feature id (``domain_field``, 301 in the
    literature: 3 scenarios)."""

    layout = "the Ali-CCP release (Tianchi 408)"

    def __init__(
        self,
        root: str,
        fields: Sequence[str],
        dense_fields: Sequence[str] = (),
        domain_field: str = "301",
        train: str = "sample_skeleton_train.csv",
        test: str = "sample_skeleton_test.csv",
        common_train: str = "common_features_train.csv",
        common_test: str = "common_features_test.csv",
        drop_conversion_without_click: bool = True,
        split: Split | None = None,
    ) -> None:
        files = {"train": train, "test": test, "common_train": common_train}
        super().__init__(root, files | {"common_test": common_test}, split or FileSplit())
        self.fields = [str(f) for f in fields]
        self.dense_fields = [str(f) for f in dense_fields]
        self.domain_field = str(domain_field)
        self.drop_inconsistent = drop_conversion_without_click
        if self.domain_field not in self.fields:
            raise ConfigError(
                f"data.source.domain_field={self.domain_field!r} is not in data.source.fields"
            )

    def options(self) -> dict:
        return {
            "fields": self.fields,
            "dense": self.dense_fields,
            "domain": self.domain_field,
            "drop_conversion_without_click": self.drop_inconsistent,
        }

    def _extract(self, features: str, suffix: str = "") -> list[pl.Expr]:
        """Every field's feature id, and the dense fields' values, from one list."""
        col = pl.col(features)
        ids = [_field(col, f, 1).alias(f + suffix) for f in self.fields]
        values = [
            _field(col, f, 2).cast(pl.Float64).alias(f"D{f}{suffix}") for f in self.dense_fields
        ]
        return ids + values

    def _split(self, split: str) -> pl.LazyFrame:
        """One split: fields taken from the common features, else from the skeleton's own
        list (extracted once per common row, then joined: the long lists never repeat)."""
        opts = {"has_header": False, "quote_char": None, "infer_schema": False}
        skeleton = pl.scan_csv(self.path(split), new_columns=_SKELETON, **opts)
        common = pl.scan_csv(self.path(f"common_{split}"), new_columns=_COMMON, **opts)
        labels = [pl.col("click").cast(pl.Int8), pl.col("purchase").cast(pl.Int8)]
        own = skeleton.select(
            "sample_id", *labels, "common_feature_index", *self._extract("features")
        )
        shared = common.select("common_feature_index", *self._extract("common_features", "__c"))
        joined = _left_join(own, shared, "common_feature_index")
        if self.drop_inconsistent:
            joined = joined.filter((pl.col("click") == 1) | (pl.col("purchase") == 0))
        names = [*self.fields, *(f"D{f}" for f in self.dense_fields)]
        return _tagged(
            joined.select(
                "sample_id",
                "click",
                "purchase",
                *(pl.coalesce(f"{n}__c", n).alias(n) for n in names),
            ),
            split,
        )

    def scan(self) -> pl.LazyFrame:
        return pl.concat([self._split("train"), self._split("test")])


# --- AliExpress --------------------------------------------------------------------------


class AliExpressSource(FileSource):
    """AliExpress (Tianchi 74690) as one folder per country, each with train and test CSVs;
    the domain is the country (``domain`` column, from the folder)."""

    layout = "one folder per country (MTReclib layout)"

    def __init__(
        self,
        root: str,
        countries: Sequence[str],
        pattern: str = "AliExpress_{country}/{split}.csv",
        split: Split | None = None,
    ) -> None:
        if not countries:
            raise ConfigError("data.source.countries is empty: name at least one country")
        self.countries, self.pattern = [str(c) for c in countries], pattern
        files = {
            f"{c}_{s}": pattern.format(country=c, split=s)
            for c in self.countries
            for s in ("train", "test")
        }
        super().__init__(root, files, split or FileSplit())

    def options(self) -> dict:
        return {"countries": self.countries, "pattern": self.pattern}

    def scan(self) -> pl.LazyFrame:
        parts = [
            _tagged(_scan_csv(self.path(f"{c}_{s}")), s).with_columns(domain=pl.lit(c))
            for c in self.countries
            for s in ("train", "test")
        ]
        return pl.concat(parts, how="diagonal_relaxed")


# The raw AliExpress columns MTReclib's data/preprocess.py keeps, in its order: user_1 is the
# search id, then 16 categorical and 63 numerical columns; item_49 is the label (0, 1 click,
# 2 click and conversion).
_AE_CATEGORICAL = [*(f"user_{i}" for i in [*range(1, 9), 32, 33])] + [
    f"item_{i}" for i in [19, 34, 35, 36, 40, 41, 42]
]
_AE_NUMERICAL = [f"user_{i}" for i in range(9, 32)] + [
    f"item_{i}" for i in range(2, 49) if f"item_{i}" not in _AE_CATEGORICAL
]


class AliExpressRawSource(AliExpressSource):
    """AliExpress as released: per country ``<cc>_user_{train,test}.csv`` (33 columns) and
    ``<cc>_item_{train,test}.csv`` (49 columns), no headers, joined on the search id
    (user_1 = item_1) and renamed to MTReclib's columns (search_id, categorical_1..16,
    numerical_1..63, click, conversion), so data=aliexpress's schema applies."""

    layout = "the AliExpress release, one unzipped folder per country"

    def __init__(
        self,
        root: str,
        countries: Sequence[str],
        pattern: str = "AliExpress_{country}/{cc}_{table}_{split}.csv",
        split: Split | None = None,
    ) -> None:
        if not countries:
            raise ConfigError("data.source.countries is empty: name at least one country")
        self.countries, self.pattern = [str(c) for c in countries], pattern
        files = {
            f"{c}_{t}_{s}": pattern.format(country=c, cc=c.lower(), table=t, split=s)
            for c in self.countries
            for t in ("user", "item")
            for s in ("train", "test")
        }
        FileSource.__init__(self, root, files, split or FileSplit())

    def _country(self, country: str, split: str) -> pl.LazyFrame:
        opts = {"has_header": False, "infer_schema_length": 10_000}
        users = pl.scan_csv(
            self.path(f"{country}_user_{split}"),
            new_columns=[f"user_{i}" for i in range(1, 34)],
            **opts,
        )
        items = pl.scan_csv(
            self.path(f"{country}_item_{split}"),
            new_columns=[f"item_{i}" for i in range(1, 50)],
            **opts,
        )
        joined = items.join(
            users, left_on="item_1", right_on="user_1", how="inner", maintain_order="left"
        )
        names = ["search_id", *(f"categorical_{i}" for i in range(1, 17))]
        return _tagged(
            joined.select(
                pl.col("item_1").alias("search_id"),
                *(pl.col(c).alias(n) for c, n in zip(_AE_CATEGORICAL[1:], names[1:])),
                *(pl.col(c).alias(f"numerical_{i}") for i, c in enumerate(_AE_NUMERICAL, 1)),
                click=(pl.col("item_49") >= 1).cast(pl.Int8),
                conversion=(pl.col("item_49") == 2).cast(pl.Int8),
                domain=pl.lit(country),
            ),
            split,
        )

    def scan(self) -> pl.LazyFrame:
        parts = [self._country(c, s) for c in self.countries for s in ("train", "test")]
        return pl.concat(parts, how="diagonal_relaxed")


# --- Taobao display ads (raw three-file release) -------------------------------------------


class TaobaoRawSource(FileSource):
    """Taobao display ads (Tianchi 56): raw_sample.csv (user, time_stamp, adgroup_id, pid,
    nonclk, clk) joined with ad_feature.csv on adgroup_id and user_profile.csv on userid
    (renamed from ``user``). Users without a profile keep null profile fields, and the
    release's ``NULL`` brand is null (both: the OOV code)."""

    layout = "the Taobao release (Tianchi 56)"

    def __init__(
        self,
        root: str,
        samples: str = "raw_sample.csv",
        ads: str = "ad_feature.csv",
        users: str = "user_profile.csv",
        split: Split | None = None,
    ) -> None:
        files = {"samples": samples, "ads": ads, "users": users}
        super().__init__(root, files, split or TimeSplit(column="time_stamp"))

    def scan(self) -> pl.LazyFrame:
        samples = _scan_csv(self.path("samples")).rename({"user": "userid"})
        profile = _scan_csv(self.path("users")).rename(
            {"new_user_class_level ": "new_user_class_level"}, strict=False
        )
        ads = _scan_csv(self.path("ads"), null_values="NULL")  # the release's missing brand
        with_ads = _left_join(samples, ads, "adgroup_id")
        return _left_join(with_ads, profile, "userid")


# --- KuaiRand ----------------------------------------------------------------------------


class KuaiRandSource(FileSource):
    """KuaiRand-Pure or -1K: the standard logs concatenated, joined with the user features on
    user_id and the basic video features on video_id; the domain is ``tab`` (the app page)."""

    layout = "the KuaiRand data/ folder"

    def __init__(
        self,
        root: str,
        logs: Sequence[str],
        users: str,
        videos: str,
        split: Split | None = None,
    ) -> None:
        self.logs = list(logs)
        if not self.logs:
            raise ConfigError("data.source.logs is empty: name the log_standard_*.csv files")
        files = {f"logs[{i}]": p for i, p in enumerate(self.logs)}
        files |= {"users": users, "videos": videos}
        super().__init__(root, files, split or TimeSplit(column="time_ms"))

    def scan(self) -> pl.LazyFrame:
        logs = pl.concat(
            [_scan_csv(self.path(f"logs[{i}]")) for i in range(len(self.logs))],
            how="diagonal_relaxed",
        )
        users = _scan_csv(self.path("users"))
        videos = _scan_csv(self.path("videos"))
        return _left_join(_left_join(logs, users, "user_id"), videos, "video_id")


# --- MovieLens-1M --------------------------------------------------------------------------

_ML_COLUMNS = {
    "ratings": ["user_id", "movie_id", "rating", "timestamp"],
    "users": ["user_id", "gender", "age", "occupation", "zip"],
    "movies": ["movie_id", "title", "genres"],
}
_ML_INTS = {"user_id", "movie_id", "rating", "timestamp", "age", "occupation"}


class MovieLens1MSource(FileSource):
    """MovieLens-1M (``::``-separated ratings.dat, users.dat, movies.dat; latin-1 titles).
    Ratings are joined with users and movies; ``label`` = rating >= ``min_positive_rating``;
    ``domain`` = the user attribute ``domain_attribute`` (gender, age or occupation);
    ``genre`` = the first listed genre."""

    layout = "the unzipped ml-1m/ folder"

    def __init__(
        self,
        root: str,
        domain_attribute: str = "gender",
        min_positive_rating: int = 4,
        ratings: str = "ratings.dat",
        users: str = "users.dat",
        movies: str = "movies.dat",
        split: Split | None = None,
    ) -> None:
        if domain_attribute not in ("gender", "age", "occupation"):
            raise ConfigError(
                f"data.source.domain_attribute={domain_attribute!r}: use gender, age or occupation"
            )
        if not 1 <= min_positive_rating <= 5:
            raise ConfigError(f"data.source.min_positive_rating={min_positive_rating}: use 1..5")
        self.domain_attribute, self.min_positive_rating = domain_attribute, min_positive_rating
        files = {"ratings": ratings, "users": users, "movies": movies}
        super().__init__(root, files, split or RandomSplit())

    def options(self) -> dict:
        return {"domain": self.domain_attribute, "min_positive": self.min_positive_rating}

    def _dat(self, key: str) -> pl.LazyFrame:
        names = _ML_COLUMNS[key]
        if key == "movies":  # latin-1 titles, which polars cannot decode; a small file
            text = self.path(key).read_bytes().decode("latin-1")
            lines = pl.LazyFrame({"line": text.splitlines()})
        else:
            lines = pl.scan_csv(
                self.path(key),
                has_header=False,
                separator="\x1f",  # never in the files: one column a line, split on '::' below
                quote_char=None,
                new_columns=["line"],
                infer_schema=False,
            )
        parts = pl.col("line").str.split_exact("::", len(names) - 1)
        fields = parts.struct.rename_fields(names)
        out = lines.select(fields.alias("f")).unnest("f")
        return out.with_columns(pl.col(c).cast(pl.Int64) for c in names if c in _ML_INTS)

    def scan(self) -> pl.LazyFrame:
        with_users = _left_join(self._dat("ratings"), self._dat("users"), "user_id")
        joined = _left_join(with_users, self._dat("movies"), "movie_id")
        return joined.with_columns(
            label=(pl.col("rating") >= self.min_positive_rating).cast(pl.Int8),
            domain=pl.col(self.domain_attribute).cast(pl.String),
            genre=pl.col("genres").str.split("|").list.first(),
        )
