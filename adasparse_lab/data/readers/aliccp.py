"""Ali-CCP as released (Tianchi 408): the sample skeleton joined with its common features."""

from __future__ import annotations

import re
from collections.abc import Sequence

import polars as pl

from adasparse_lab.data.readers.base import FileSource, FileSplit, Split, left_join, tagged
from adasparse_lab.errors import ConfigError

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
        joined = left_join(own, shared, "common_feature_index")
        if self.drop_inconsistent:
            joined = joined.filter((pl.col("click") == 1) | (pl.col("purchase") == 0))
        names = [*self.fields, *(f"D{f}" for f in self.dense_fields)]
        return tagged(
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
