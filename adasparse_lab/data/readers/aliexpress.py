"""AliExpress (Tianchi 74690): MTReclib's per-country CSVs, or the release's own user and item
tables."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from adasparse_lab.data.readers.base import FileSource, FileSplit, Split, scan_csv, tagged
from adasparse_lab.errors import ConfigError


class AliExpressSource(FileSource):
    """AliExpress (Tianchi 74690) as one folder per country, each with train and test CSVs;
    the domain is the country (``domain`` column, from the folder)."""

    layout = "one folder per country (MTReclib layout)"
    # file names under root (data.source.pattern), by country (cc: its lower case) and split
    default_pattern = "AliExpress_{country}/{split}.csv"

    def __init__(
        self,
        root: str,
        countries: Sequence[str],
        pattern: str | None = None,
        split: Split | None = None,
    ) -> None:
        if not countries:
            raise ConfigError("data.source.countries is empty: name at least one country")
        self.countries = [str(c) for c in countries]
        self.pattern = self.default_pattern if pattern is None else pattern
        super().__init__(root, self._files(), split or FileSplit())

    def _files(self) -> dict[str, str]:
        """{file key: name under root} of every country's train and test file."""
        return {
            f"{c}_{s}": self.pattern.format(country=c, split=s)
            for c in self.countries
            for s in ("train", "test")
        }

    def options(self) -> dict:
        return {"countries": self.countries, "pattern": self.pattern}

    def scan(self) -> pl.LazyFrame:
        parts = [
            tagged(scan_csv(self.path(f"{c}_{s}")), s).with_columns(domain=pl.lit(c))
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
    default_pattern = "AliExpress_{country}/{cc}_{table}_{split}.csv"

    def _files(self) -> dict[str, str]:
        """{file key: name under root} of every country's user and item tables, train and test."""
        return {
            f"{c}_{t}_{s}": self.pattern.format(country=c, cc=c.lower(), table=t, split=s)
            for c in self.countries
            for t in ("user", "item")
            for s in ("train", "test")
        }

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
        return tagged(
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
